//! A counting global allocator, for tests that prove a hot path makes no heap allocation.
//!
//! Install it with `#[global_allocator]` in a test binary, call [`count_this_thread`] on the thread
//! under test (a server's event loop, say), and compare [`allocations`] before and after the steady
//! state. Threads that did not opt in (the test's own clients) are not counted. For threads the code
//! under test spawns itself (a server's workers), [`count_all_threads`] counts every thread but those
//! that called [`exclude_this_thread`].
//!
//! Only with the `alloc-counter` feature, as a dev-dependency:
//! `gamewire-pool = { version = "0.1", features = ["alloc-counter"] }`.
//!
//! # Examples
//!
//! Proving that a pool's hot path (allocate a chunk, fill it, freeze a frame, share it) makes no heap
//! allocation, while the heap fallback does:
//!
//! ```standalone_crate
//! use gamewire_pool::alloc_counter::{self, CountingAllocator};
//! use gamewire_pool::{Pool, PoolBytes, PoolConfig};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator;
//!
//! fn main() {
//!     let pool = Pool::new(PoolConfig { chunk_size: 1024, chunk_count: 8 }).unwrap();
//!     alloc_counter::count_this_thread();
//!     let before = alloc_counter::allocations();
//!     for _ in 0..100 {
//!         let mut chunk = pool.try_alloc().expect("a free chunk");
//!         chunk.spare_mut()[..4].copy_from_slice(b"ping");
//!         chunk.advance(4);
//!         let frame = chunk.freeze();
//!         let for_bob = frame.clone();
//!         assert_eq!(&for_bob[..], b"ping");
//!     }
//!     assert_eq!(alloc_counter::allocations(), before, "the pooled path allocates nothing");
//!
//!     let fallback = std::hint::black_box(PoolBytes::from_vec(b"pong".to_vec()));
//!     assert!(alloc_counter::allocations() > before, "the heap fallback does");
//!     assert!(!fallback.is_pooled());
//! }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Forwards to the system allocator and counts allocations of opted-in threads: install it with
/// `#[global_allocator]` in a test binary (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static COUNT_ALL: AtomicBool = AtomicBool::new(false);

thread_local! {
    // const-initialized and without Drop: reading it never allocates, even inside the allocator.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    static EXCLUDED: Cell<bool> = const { Cell::new(false) };
}

/// Counts every later allocation of every thread, but those that call [`exclude_this_thread`]: for
/// code under test that spawns threads of its own (a server's workers).
///
/// # Examples
///
/// ```standalone_crate
/// use gamewire_pool::alloc_counter::{self, CountingAllocator};
///
/// #[global_allocator]
/// static ALLOCATOR: CountingAllocator = CountingAllocator;
///
/// fn main() {
///     // The test's own thread (its clients, its assertions) is not what is measured.
///     alloc_counter::exclude_this_thread();
///     alloc_counter::count_all_threads();
///     let before = alloc_counter::allocations();
///     let mine = std::hint::black_box(vec![0u8; 16]);
///     assert_eq!(alloc_counter::allocations(), before, "an excluded thread is not counted");
///
///     std::thread::spawn(|| drop(std::hint::black_box(vec![0u8; 16]))).join().unwrap();
///     assert!(alloc_counter::allocations() > before, "a thread that did not opt out is");
///     drop(mine);
/// }
/// ```
pub fn count_all_threads() {
    COUNT_ALL.store(true, Ordering::Relaxed);
}

/// Never counts the calling thread (a test's clients, under [`count_all_threads`]); see there for an
/// example.
pub fn exclude_this_thread() {
    EXCLUDED.with(|excluded| excluded.set(true));
}

/// Counts every later allocation (and reallocation) made by the calling thread: the one that runs the
/// code under test. See the module documentation for an example.
pub fn count_this_thread() {
    COUNTED.with(|counted| counted.set(true));
}

/// Allocations counted so far, across all opted-in threads: compare two readings around the code under
/// test.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

fn record() {
    // `try_with`: during thread teardown the slot may be gone, and teardown is not a hot path.
    let counted = if COUNT_ALL.load(Ordering::Relaxed) {
        !EXCLUDED.try_with(Cell::get).unwrap_or(true)
    } else {
        COUNTED.try_with(Cell::get).unwrap_or(false)
    };
    if counted {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged; the
// counting touches only an atomic and a const thread-local, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: forwarded with the caller's layout, under the same contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: `ptr` came from this allocator, hence from `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}
