//! A counting global allocator, for tests that prove a hot path makes no heap allocation.
//!
//! Install it with `#[global_allocator]` in a test binary, call [`count_this_thread`] on the thread
//! under test (a server's event loop, say), and compare [`allocations`] before and after the steady
//! state. Threads that did not opt in (the test's own clients) are not counted. For threads the code
//! under test spawns itself (a server's workers), [`count_all_threads`] counts every thread but those
//! that called [`exclude_this_thread`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Forwards to the system allocator and counts allocations of opted-in threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static COUNT_ALL: AtomicBool = AtomicBool::new(false);

thread_local! {
    // const-initialized and without Drop: reading it never allocates, even inside the allocator.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    static EXCLUDED: Cell<bool> = const { Cell::new(false) };
}

/// Counts every later allocation of every thread, but those that call [`exclude_this_thread`].
pub fn count_all_threads() {
    COUNT_ALL.store(true, Ordering::Relaxed);
}

/// Never counts the calling thread (a test's clients, under [`count_all_threads`]).
pub fn exclude_this_thread() {
    EXCLUDED.with(|excluded| excluded.set(true));
}

/// Counts every later allocation (and reallocation) made by the calling thread.
pub fn count_this_thread() {
    COUNTED.with(|counted| counted.set(true));
}

/// Allocations counted so far, across all opted-in threads.
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
