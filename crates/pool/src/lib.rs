//! Pooled, reference-counted buffers for gamewire's zero-copy I/O path.
//!
//! A [`Pool`] is one anonymous memory mapping split into fixed-size chunks, each starting on a
//! 64-byte boundary (the chunk size is a multiple of 64 and the mapping is page aligned), so no two
//! chunks share a cache line. A [`ChunkMut`] is an allocated chunk being written: bytes are received
//! or encoded into its spare tail, then [`ChunkMut::freeze`] splits them off as a [`PoolBytes`], an
//! immutable view that clones with one atomic increment. One chunk can carry many frames, and one
//! broadcast frame is shared, not copied, by every recipient's send queue.
//!
//! # Design
//!
//! - **A free list, not a scan.** Allocation pops a chunk index off a lock-free Treiber stack and
//!   freeing pushes it back: O(1) whatever the occupancy, where a linear scan for a free slot costs
//!   O(chunks) exactly when the pool is nearly full, i.e. under load. Frees may happen on any thread
//!   and in any order (a frame is dropped when its slowest recipient has sent it), which also rules
//!   out ring-style "free by bumping the head".
//! - **Tagged head.** The stack head packs a 32-bit tag beside the 32-bit index, and every update
//!   bumps the tag, so a pop that raced with a pop and re-push of the same chunk (ABA) fails its CAS
//!   instead of corrupting the list. The `next` links live in a side array, not in the chunks, so a
//!   stale read never touches user bytes.
//! - **Per-chunk reference counts.** Each chunk has its own `AtomicU32` count in a side array: the
//!   `ChunkMut` holds one reference and every `PoolBytes` another. Clone and drop touch only that
//!   counter, with no heap allocation; the last reference returns the chunk to the free list. The
//!   mapping itself is kept alive by one `Arc` strong count per *allocated chunk* (not per
//!   reference), so frames may outlive every [`Pool`] handle without clones contending on one
//!   shared counter.
//! - **Exhaustion is a value.** [`Pool::try_alloc`] returns `None` when every chunk is in use; it
//!   never blocks, panics or grows. The caller applies backpressure: stop reading from the
//!   connections that fill chunks (and disconnect a peer whose queue stays full) until chunks come
//!   back. An outgoing frame that must not be lost may fall back to [`PoolBytes::from_vec`], which
//!   allocates but behaves the same.
//! - **First touch.** [`Pool::prefault`] lets the worker that owns a pool fault its pages in after
//!   pinning itself, so they are allocated on its NUMA node.
//!
//! Memory orderings follow `Arc`: increments are `Relaxed`, decrements `Release` with an `Acquire`
//! fence before the chunk is freed; the free list's CAS is `AcqRel`, so everything the last holder
//! did with a chunk happens-before its next owner gets it.
//!
//! # Examples
//!
//! ```
//! use gamewire_pool::{Pool, PoolBytes, PoolConfig};
//!
//! let pool = Pool::new(PoolConfig { chunk_size: 1024, chunk_count: 64 })?;
//! pool.prefault();
//!
//! let frame = match pool.try_alloc() {
//!     Some(mut chunk) => {
//!         let payload = b"MOVE 10 20";
//!         chunk.spare_mut()[..payload.len()].copy_from_slice(payload);
//!         chunk.advance(payload.len());
//!         chunk.freeze()
//!     }
//!     // Exhausted: apply backpressure, or (for a frame that must go out) use the heap.
//!     None => PoolBytes::from_vec(b"MOVE 10 20".to_vec()),
//! };
//! let for_alice = frame.clone();
//! let for_bob = frame.clone();
//! assert_eq!(for_alice.as_ptr(), for_bob.as_ptr(), "shared, not copied");
//! # Ok::<(), gamewire_pool::PoolError>(())
//! ```

#![warn(missing_docs)]

#[cfg(feature = "alloc-counter")]
pub mod alloc_counter;
mod bytes;
mod chunk;
mod free_list;
mod pool;
mod ring;
mod sync;

pub use crate::bytes::PoolBytes;
pub use crate::chunk::ChunkMut;
pub use crate::pool::{CHUNK_ALIGN, MAX_CHUNKS, Pool, PoolConfig, PoolError, PoolStats};
pub use crate::ring::{Consumer, Producer, spsc};
