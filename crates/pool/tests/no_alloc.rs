//! The hot path (alloc, write, freeze, clone, slice, clear, drop) performs no heap allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use gamewire_pool::{Pool, PoolBytes, PoolConfig};

/// Counts allocations made by the current thread (other test threads do not interfere).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is a const-initialized thread-local
// `Cell`, which does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn hot_path_does_not_allocate() {
    let pool = Pool::new(PoolConfig { chunk_size: 256, chunk_count: 4 }).unwrap();
    pool.prefault();
    let mut frames: [Option<PoolBytes>; 16] = Default::default();

    let before = allocations();
    for round in 0..1_000usize {
        let mut chunk = pool.try_alloc().expect("frames are dropped every round");
        for (i, slot) in frames.iter_mut().enumerate() {
            let len = 1 + (round + i) % 12;
            chunk.spare_mut()[..len].fill(i as u8);
            chunk.advance(len);
            let frame = chunk.freeze();
            let clone = frame.clone().slice(..len - 1);
            *slot = Some(frame);
            drop(clone);
        }
        chunk.clear();
        let handle = pool.clone();
        drop(chunk);
        for slot in &mut frames {
            *slot = None;
        }
        assert_eq!(handle.free_chunks(), 4);
        let _ = PoolBytes::from_static(b"static").clone();
    }
    let after = allocations();
    assert_eq!(after - before, 0, "hot path allocated");

    // Sanity check that the counter works: the fallback allocates.
    let heap = PoolBytes::from_vec(vec![1, 2, 3]);
    assert!(allocations() > after);
    let before_clone = allocations();
    let clone = heap.clone();
    drop((heap, clone));
    assert_eq!(allocations(), before_clone, "heap clone/drop do not allocate either");
}
