//! The pool handle, its configuration, and the shared state every chunk points back to.

use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::MmapMut;

use crate::chunk::ChunkMut;
use crate::free_list::{FreeList, NIL};
use crate::sync::{AtomicU32, Ordering, fence};

/// Chunk sizes must be multiples of this, so that every chunk starts on its own cache line.
pub const CHUNK_ALIGN: usize = 64;

/// The largest `chunk_count`: chunk indices are `u32`, with `u32::MAX` kept as the free list's
/// end marker.
pub const MAX_CHUNKS: usize = u32::MAX as usize;

/// Per-chunk reference counts above this abort the process, like `Arc`'s: a count that high can only
/// come from leaked clones, and wrapping to zero would free a chunk that is still in use.
const MAX_REFS: u32 = i32::MAX as u32;

/// Stride for [`Pool::prefault`]. Touching every 4 KiB also covers any larger page size.
const PREFAULT_STRIDE: usize = 4096;

/// Size and number of the chunks of a [`Pool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes per chunk: a non-zero multiple of [`CHUNK_ALIGN`] (64).
    pub chunk_size: usize,
    /// Number of chunks, at most [`MAX_CHUNKS`]. The region is `chunk_size * chunk_count` bytes.
    pub chunk_count: usize,
}

/// Why [`Pool::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The chunk size is zero or not a multiple of 64.
    #[error("chunk size {0} is not a non-zero multiple of 64")]
    InvalidChunkSize(usize),
    /// The chunk count is zero.
    #[error("chunk count is zero")]
    ZeroChunks,
    /// More chunks than [`MAX_CHUNKS`], or a region larger than `isize::MAX` bytes.
    #[error("pool of {chunk_count} chunks of {chunk_size} bytes is too large")]
    TooLarge {
        /// The requested chunk size.
        chunk_size: usize,
        /// The requested chunk count.
        chunk_count: usize,
    },
    /// The operating system refused the anonymous mapping.
    #[error("mapping the pool region failed")]
    Mmap(#[from] io::Error),
}

/// A snapshot of a pool's occupancy, from [`Pool::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes per chunk.
    pub chunk_size: usize,
    /// Total number of chunks.
    pub chunk_count: usize,
    /// Chunks on the free list (exact when no allocation or free is in flight).
    pub free_chunks: usize,
}

/// State shared by the [`Pool`] handles and, through a raw strong count per allocated chunk, by every
/// [`ChunkMut`] and `PoolBytes`.
pub(crate) struct Shared {
    /// Start of the mapping; page aligned.
    base: NonNull<u8>,
    chunk_size: usize,
    chunk_count: usize,
    free_list: FreeList,
    /// References to each allocated chunk: its `ChunkMut` (if still alive) plus its `PoolBytes`.
    /// Zero while the chunk is free.
    refs: Box<[AtomicU32]>,
    /// Owns the mapping `base` points into; dropped (unmapped) last, when no chunk is allocated.
    _region: MmapMut,
}

// SAFETY: `base` points into `_region`, which `Shared` owns. The chunk bytes behind it are only touched
// by whoever owns the chunk under the allocation protocol (a free-list pop makes the popper the sole
// owner; shared `PoolBytes` only read frozen bytes nobody writes). Everything else is atomics or
// immutable after construction.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`: `&Shared` only exposes atomics and immutable fields.
unsafe impl Sync for Shared {}

impl Shared {
    pub(crate) fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Start of chunk `index`.
    pub(crate) fn chunk_ptr(&self, index: u32) -> NonNull<u8> {
        assert!((index as usize) < self.chunk_count);
        // SAFETY: `index < chunk_count`, so the offset is inside the `chunk_size * chunk_count` bytes
        // mapped at `base`, and that product was checked to fit `isize` in `Pool::new`.
        unsafe { self.base.add(index as usize * self.chunk_size) }
    }

    /// Adds a reference to allocated chunk `index`, whose caller already holds one.
    pub(crate) fn acquire_ref(&self, index: u32) {
        // Relaxed, as in `Arc::clone`: the caller's existing reference keeps the chunk allocated, and
        // the new reference reaches another thread only through something that synchronizes.
        let old = self.refs[index as usize].fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
    }

    /// Whether the caller's reference to chunk `index` is the only one.
    ///
    /// Acquire pairs with the Release decrements of references dropped on other threads: their last
    /// reads of the chunk happen-before whatever the caller writes next.
    pub(crate) fn is_unique(&self, index: u32) -> bool {
        self.refs[index as usize].load(Ordering::Acquire) == 1
    }

    /// Drops one reference to chunk `index`; the last one puts the chunk back on the free list and
    /// gives up the strong count the chunk held on `Shared`.
    ///
    /// # Safety
    ///
    /// `shared` must come from `Arc::into_raw` of the `Arc<Shared>` that allocated chunk `index` (as
    /// stored by [`Pool::try_alloc`]), and the caller must own one reference to the chunk, which it
    /// gives up here: it must not touch the chunk or `shared` afterwards.
    pub(crate) unsafe fn release(shared: NonNull<Shared>, index: u32) {
        {
            // SAFETY: the caller's reference keeps the chunk allocated, and an allocated chunk holds
            // a strong count, so `Shared` is alive for this block.
            let this = unsafe { shared.as_ref() };
            // Release, as in `Arc`'s drop: our reads and writes of the chunk happen-before the final
            // decrement, and so before the chunk is reused.
            if this.refs[index as usize].fetch_sub(1, Ordering::Release) != 1 {
                return;
            }
            // Acquire: synchronizes with every earlier Release decrement, so all other holders' uses
            // of the chunk happen-before it goes back on the free list (whose push Release then
            // carries that to the next owner).
            fence(Ordering::Acquire);
            this.free_list.push(index);
        }
        // SAFETY: per the contract, this is the strong count taken for this chunk in `try_alloc`; the
        // last reference is gone and `this` is no longer used, so `Shared` may be dropped here.
        unsafe { Arc::decrement_strong_count(shared.as_ptr()) };
    }
}

/// A pool of fixed-size, 64-byte-aligned chunks carved from one anonymous memory mapping.
///
/// Cloning is cheap (one `Arc` increment); all clones allocate from the same chunks. Chunks and the
/// `PoolBytes` frozen from them keep the mapping alive on their own, so the last `Pool` handle may be
/// dropped while they are still in use.
///
/// # Examples
///
/// ```
/// use gamewire_pool::{Pool, PoolConfig};
///
/// let pool = Pool::new(PoolConfig { chunk_size: 256, chunk_count: 4 })?;
/// let mut chunk = pool.try_alloc().expect("fresh pool");
/// chunk.spare_mut()[..5].copy_from_slice(b"hello");
/// chunk.advance(5);
/// let frame = chunk.freeze();
/// assert_eq!(&frame[..], b"hello");
/// assert_eq!(pool.free_chunks(), 3);
/// drop((chunk, frame));
/// assert_eq!(pool.free_chunks(), 4);
/// # Ok::<(), gamewire_pool::PoolError>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Maps `chunk_size * chunk_count` bytes of anonymous memory and puts every chunk on the free list.
    ///
    /// The pages are not touched; see [`Pool::prefault`].
    ///
    /// # Errors
    ///
    /// [`PoolError::InvalidChunkSize`] if `chunk_size` is zero or not a multiple of 64,
    /// [`PoolError::ZeroChunks`] if `chunk_count` is zero, [`PoolError::TooLarge`] if `chunk_count`
    /// exceeds [`MAX_CHUNKS`] or the region would exceed `isize::MAX` bytes, and [`PoolError::Mmap`]
    /// if the mapping fails.
    pub fn new(config: PoolConfig) -> Result<Pool, PoolError> {
        let PoolConfig { chunk_size, chunk_count } = config;
        if chunk_size == 0 || chunk_size % CHUNK_ALIGN != 0 {
            return Err(PoolError::InvalidChunkSize(chunk_size));
        }
        if chunk_count == 0 {
            return Err(PoolError::ZeroChunks);
        }
        let too_large = PoolError::TooLarge { chunk_size, chunk_count };
        let Ok(count) = u32::try_from(chunk_count) else {
            return Err(too_large);
        };
        let total = match chunk_size.checked_mul(chunk_count) {
            Some(total) if total <= isize::MAX as usize => total,
            _ => return Err(too_large),
        };
        let mut region = MmapMut::map_anon(total)?;
        let base = NonNull::new(region.as_mut_ptr())
            .ok_or_else(|| PoolError::Mmap(io::Error::other("anonymous mapping returned a null pointer")))?;
        debug_assert_eq!(base.as_ptr() as usize % CHUNK_ALIGN, 0, "mmap is page aligned");
        debug_assert!(count as usize <= MAX_CHUNKS && NIL == u32::MAX);
        let shared = Shared {
            base,
            chunk_size,
            chunk_count,
            free_list: FreeList::new(count),
            refs: (0..chunk_count).map(|_| AtomicU32::new(0)).collect(),
            _region: region,
        };
        Ok(Pool { shared: Arc::new(shared) })
    }

    /// Bytes per chunk.
    pub fn chunk_size(&self) -> usize {
        self.shared.chunk_size
    }

    /// Total number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.shared.chunk_count
    }

    /// Number of free chunks. O(1): one relaxed atomic load.
    ///
    /// Exact when no allocation or free is in flight on another thread; during one it may count a
    /// chunk that is just being taken or returned, but never exceeds [`Pool::chunk_count`].
    pub fn free_chunks(&self) -> usize {
        self.shared.free_list.len()
    }

    /// Size, count and free chunks in one snapshot (see [`Pool::free_chunks`] for its exactness).
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            chunk_size: self.chunk_size(),
            chunk_count: self.chunk_count(),
            free_chunks: self.free_chunks(),
        }
    }

    /// Takes a free chunk, or returns `None` when every chunk is in use.
    ///
    /// O(1) and lock-free: one CAS on the free list (retried only under contention), two atomic
    /// increments, no heap allocation, never blocks. `None` is the backpressure signal: the caller
    /// should stop reading from (or pause) the sources that fill chunks until some are freed, or, for
    /// an outgoing frame that must not be lost, fall back to [`PoolBytes::from_vec`].
    ///
    /// [`PoolBytes::from_vec`]: crate::PoolBytes::from_vec
    #[must_use = "dropping the chunk returns it to the pool at once"]
    pub fn try_alloc(&self) -> Option<ChunkMut> {
        let index = self.shared.free_list.pop()?;
        // Relaxed: the pop made us the chunk's only owner; the count reaches other threads only along
        // with a reference, through something that synchronizes.
        self.shared.refs[index as usize].store(1, Ordering::Relaxed);
        let data = self.shared.chunk_ptr(index);
        // The allocated chunk holds a strong count on `Shared`, given back by `Shared::release` when
        // its last reference goes. `Arc::clone` does not allocate.
        let shared = Arc::into_raw(Arc::clone(&self.shared));
        // SAFETY: `Arc::into_raw` never returns null.
        let shared = unsafe { NonNull::new_unchecked(shared.cast_mut()) };
        // SAFETY: we own chunk `index` with its single reference and its strong count, and `shared`
        // comes from `Arc::into_raw` of the Arc that allocated it.
        Some(unsafe { ChunkMut::from_raw_parts(shared, data, index) })
    }

    /// Faults in every free chunk's pages from the calling thread by writing one byte per page.
    ///
    /// Linux places an anonymous page on the NUMA node of the thread that first touches it, so a
    /// worker that calls this right after pinning itself to a core gets its pool in local memory, and
    /// the first packets do not pay for page faults. Call it once at startup, before the pool is used.
    ///
    /// Only chunks that are free are touched (their contents are arbitrary anyway); allocated chunks
    /// are skipped, since writing into them would race with their owners. While it runs, the free
    /// chunks are taken off the free list, so a concurrent [`Pool::try_alloc`] may see the pool as
    /// exhausted. O(number of chunks + number of pages).
    pub fn prefault(&self) {
        let shared = &*self.shared;
        let mut chain: Option<(u32, u32)> = None;
        let mut count = 0;
        while let Some(index) = shared.free_list.pop() {
            let start = shared.chunk_ptr(index).as_ptr();
            let mut offset = 0;
            while offset < shared.chunk_size {
                // SAFETY: `offset < chunk_size`, so the byte is inside chunk `index`, which we own
                // since the pop: nobody else reads or writes it. Volatile so that the write, whose
                // only purpose is the page fault, is not optimized away.
                unsafe { start.add(offset).write_volatile(0) };
                // Next page boundary (or the next stride if the chunk start is not page aligned).
                let address = start as usize + offset;
                offset += PREFAULT_STRIDE - address % PREFAULT_STRIDE;
            }
            chain = Some(match chain {
                None => (index, index),
                Some((first, last)) => {
                    shared.free_list.link(last, index);
                    (first, index)
                }
            });
            count += 1;
        }
        if let Some((first, last)) = chain {
            shared.free_list.push_chain(first, last, count);
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("chunk_size", &self.chunk_size())
            .field("chunk_count", &self.chunk_count())
            .field("free_chunks", &self.free_chunks())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pool(chunk_size: usize, chunk_count: usize) -> Pool {
        Pool::new(PoolConfig { chunk_size, chunk_count }).unwrap()
    }

    #[test]
    fn rejects_bad_configs() {
        for chunk_size in [0, 1, 63, 65, 100] {
            let result = Pool::new(PoolConfig { chunk_size, chunk_count: 1 });
            assert!(
                matches!(result, Err(PoolError::InvalidChunkSize(size)) if size == chunk_size),
                "{chunk_size}: {result:?}"
            );
        }
        let result = Pool::new(PoolConfig { chunk_size: 64, chunk_count: 0 });
        assert!(matches!(result, Err(PoolError::ZeroChunks)), "{result:?}");
        let result = Pool::new(PoolConfig { chunk_size: 64, chunk_count: MAX_CHUNKS + 1 });
        assert!(matches!(result, Err(PoolError::TooLarge { .. })), "{result:?}");
        let result = Pool::new(PoolConfig { chunk_size: usize::MAX - 63, chunk_count: 2 });
        assert!(matches!(result, Err(PoolError::TooLarge { .. })), "{result:?}");
        let result = Pool::new(PoolConfig { chunk_size: 1 << 62, chunk_count: 2 });
        assert!(matches!(result, Err(PoolError::TooLarge { .. })), "{result:?}");
        assert_eq!(
            PoolError::InvalidChunkSize(3).to_string(),
            "chunk size 3 is not a non-zero multiple of 64"
        );
    }

    #[test]
    fn exhaustion_returns_none_and_recovers() {
        let pool = pool(128, 8);
        assert_eq!(pool.free_chunks(), 8);
        let mut chunks: Vec<ChunkMut> = (0..8).map(|_| pool.try_alloc().unwrap()).collect();
        assert_eq!(pool.free_chunks(), 0);
        assert!(pool.try_alloc().is_none());
        assert!(pool.try_alloc().is_none(), "still none, no panic");
        chunks.pop();
        assert_eq!(pool.free_chunks(), 1);
        chunks.push(pool.try_alloc().expect("a freed chunk is reusable"));
        assert_eq!(pool.free_chunks(), 0);
        drop(chunks);
        assert_eq!(pool.free_chunks(), 8);
        assert_eq!(pool.stats(), PoolStats { chunk_size: 128, chunk_count: 8, free_chunks: 8 });
    }

    #[test]
    fn chunks_are_aligned_distinct_and_inside_the_region() {
        let pool = pool(192, 64);
        let mut chunks: Vec<ChunkMut> = (0..64).map(|_| pool.try_alloc().unwrap()).collect();
        let region = pool.shared.base.as_ptr() as usize..pool.shared.base.as_ptr() as usize + 192 * 64;
        let mut starts: Vec<usize> = chunks
            .iter_mut()
            .map(|chunk| {
                assert_eq!(chunk.capacity(), 192);
                chunk.spare_mut().as_mut_ptr() as usize
            })
            .collect();
        for &start in &starts {
            assert_eq!(start % 64, 0, "64-byte aligned");
            assert!(region.contains(&start) && start + 192 <= region.end);
        }
        starts.sort_unstable();
        for pair in starts.windows(2) {
            assert!(pair[0] + 192 <= pair[1], "chunks overlap: {pair:?}");
        }
        // Writing every byte of every live chunk must not disturb any other.
        for (i, chunk) in chunks.iter_mut().enumerate() {
            chunk.spare_mut().fill(i as u8);
            chunk.advance(192);
        }
        for (i, chunk) in chunks.iter().enumerate() {
            assert!(chunk.filled().iter().all(|&b| b == i as u8));
        }
    }

    #[test]
    fn prefault_keeps_free_chunks_and_order() {
        let pool = pool(64 * 100, 16);
        let held = pool.try_alloc().unwrap();
        pool.prefault();
        assert_eq!(pool.free_chunks(), 15);
        // Allocation order is unchanged: lowest index next.
        let next = pool.try_alloc().unwrap();
        assert_eq!(next.index(), 1);
        drop((held, next));
        assert_eq!(pool.free_chunks(), 16);
    }

    #[test]
    fn debug_shows_stats() {
        let pool = pool(64, 2);
        assert_eq!(format!("{pool:?}"), "Pool { chunk_size: 64, chunk_count: 2, free_chunks: 2 }");
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Pool>();
    }
}
