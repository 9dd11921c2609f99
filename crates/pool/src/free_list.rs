//! Lock-free Treiber stack of chunk indices: the pool's O(1) allocator.
//!
//! The head is one `AtomicU64` holding `(tag << 32) | index`. Every successful CAS bumps the tag, so a
//! thread that read head `A`, stalled while `A` was popped, other chunks were popped and `A` was pushed
//! back, sees a different word and retries instead of installing a stale `next` (the ABA problem). A
//! false match needs exactly 2^32 successful operations during one stall.
//!
//! The `next` links live in a side array indexed by chunk, never inside the chunk memory: a popper may
//! read the link of a chunk that another thread has meanwhile allocated and is writing into, and that
//! read must be an atomic load of memory the allocator owns, not a racy read of user bytes.

use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Index value meaning "no chunk": the end of the list, or an empty head.
pub(crate) const NIL: u32 = u32::MAX;

/// Keeps a hot atomic on its own cache lines. 128 bytes because x86's adjacent-line prefetcher pulls
/// 64-byte lines in pairs (the same choice as crossbeam-utils' `CachePadded`).
#[repr(align(128))]
struct CachePadded<T>(T);

/// A lock-free LIFO of chunk indices `0..count`.
pub(crate) struct FreeList {
    /// `(tag << 32) | index of the top chunk` (or [`NIL`]).
    head: CachePadded<AtomicU64>,
    /// Number of chunks on the list. Never below the true length while operations are in flight
    /// (push counts before its CAS, pop after its CAS), so it cannot underflow; exact when quiescent.
    len: CachePadded<AtomicUsize>,
    /// `next[i]`: the chunk below `i` on the stack; meaningful only while `i` is on the stack.
    next: Box<[AtomicU32]>,
}

fn pack(tag: u32, index: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

fn index_of(word: u64) -> u32 {
    word as u32
}

fn tag_of(word: u64) -> u32 {
    (word >> 32) as u32
}

impl FreeList {
    /// A list holding every index in `0..count`, lowest on top. Indices stay below [`NIL`] even for
    /// `count == u32::MAX`.
    pub(crate) fn new(count: u32) -> FreeList {
        let next = (0..count).map(|i| AtomicU32::new(if i + 1 < count { i + 1 } else { NIL })).collect();
        let top = if count == 0 { NIL } else { 0 };
        FreeList {
            head: CachePadded(AtomicU64::new(pack(0, top))),
            len: CachePadded(AtomicUsize::new(count as usize)),
            next,
        }
    }

    /// Number of free chunks; exact when no push or pop is in flight. O(1).
    pub(crate) fn len(&self) -> usize {
        self.len.0.load(Ordering::Relaxed)
    }

    /// Takes the top chunk, or `None` when the list is empty. O(1), lock-free.
    pub(crate) fn pop(&self) -> Option<u32> {
        // Acquire pairs with the Release half of the push CAS that installed this head, so the `next`
        // link written before that push is visible here, and so is everything the freeing thread did to
        // the chunk (its last reads happen-before our writes).
        let mut current = self.head.0.load(Ordering::Acquire);
        loop {
            let index = index_of(current);
            if index == NIL {
                return None;
            }
            // This link may be stale if `index` was popped and pushed again since we read `current`;
            // then the tag has moved on and the CAS below fails.
            let next = self.next[index as usize].load(Ordering::Relaxed);
            let new = pack(tag_of(current).wrapping_add(1), next);
            // AcqRel: Acquire (as above) is what hands us the chunk; Release keeps the release sequence
            // of earlier pushes intact for the next popper (every head update is an RMW, so it is
            // continued anyway; AcqRel is the conservative, textbook choice and costs nothing on x86).
            match self.head.0.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // Relaxed: a statistic, ordered by nothing else.
                    self.len.0.fetch_sub(1, Ordering::Relaxed);
                    return Some(index);
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Returns one chunk to the list. O(1), lock-free.
    ///
    /// The caller must own `index` (it is not on the list and nobody else will push it).
    pub(crate) fn push(&self, index: u32) {
        self.push_chain(index, index, 1);
    }

    /// Links `below` under `above`, both owned by the caller, to build a chain for [`push_chain`].
    ///
    /// [`push_chain`]: FreeList::push_chain
    pub(crate) fn link(&self, above: u32, below: u32) {
        // Relaxed: published by the Release CAS in `push_chain`.
        self.next[above as usize].store(below, Ordering::Relaxed);
    }

    /// Pushes a chain `first -> ... -> last` of `count` owned chunks (linked with [`link`]) in one CAS,
    /// keeping its order: `first` ends on top.
    ///
    /// [`link`]: FreeList::link
    pub(crate) fn push_chain(&self, first: u32, last: u32, count: usize) {
        // Count first, so `len` never drops below the real length (see the field's doc).
        self.len.0.fetch_add(count, Ordering::Relaxed);
        // Relaxed: we only copy the index into our link; nothing is read through it.
        let mut current = self.head.0.load(Ordering::Relaxed);
        loop {
            self.next[last as usize].store(index_of(current), Ordering::Relaxed);
            let new = pack(tag_of(current).wrapping_add(1), first);
            // Release publishes the links stored above and the caller's last use of the chunks to the
            // thread that pops them (which loads with Acquire).
            match self.head.0.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_then_empty() {
        let list = FreeList::new(3);
        assert_eq!(list.len(), 3);
        assert_eq!(list.pop(), Some(0));
        assert_eq!(list.pop(), Some(1));
        assert_eq!(list.pop(), Some(2));
        assert_eq!(list.pop(), None);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn push_is_lifo_and_bumps_tag() {
        let list = FreeList::new(2);
        let before = list.head.0.load(Ordering::Relaxed);
        let a = list.pop().unwrap();
        list.push(a);
        let after = list.head.0.load(Ordering::Relaxed);
        assert_eq!(index_of(before), index_of(after));
        assert_ne!(before, after, "same top chunk, different tag");
        assert_eq!(list.pop(), Some(a));
    }

    #[test]
    fn chain_keeps_order() {
        let list = FreeList::new(4);
        let taken: Vec<u32> = std::iter::from_fn(|| list.pop()).collect();
        assert_eq!(taken, [0, 1, 2, 3]);
        list.link(0, 1);
        list.link(1, 2);
        list.push_chain(0, 2, 3);
        list.push(3);
        assert_eq!(list.len(), 4);
        let again: Vec<u32> = std::iter::from_fn(|| list.pop()).collect();
        assert_eq!(again, [3, 0, 1, 2]);
    }

    #[test]
    fn empty_list() {
        let list = FreeList::new(0);
        assert_eq!(list.pop(), None);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// A free list plus chunk "memory" whose accesses loom checks for races: if the orderings did not
    /// hand a chunk from its freeing thread to its next owner, or a chunk went to two owners at once,
    /// loom would report a causality violation.
    struct Model {
        list: FreeList,
        chunks: [UnsafeCell<u32>; 2],
    }

    fn use_one(model: &Model, value: u32) {
        if let Some(index) = model.list.pop() {
            model.chunks[index as usize].with_mut(|chunk| {
                // SAFETY: the pop made this thread the chunk's only owner (which loom verifies).
                unsafe { *chunk = value };
            });
            model.list.push(index);
        }
    }

    fn new_model() -> Arc<Model> {
        Arc::new(Model { list: FreeList::new(2), chunks: [UnsafeCell::new(0), UnsafeCell::new(0)] })
    }

    fn assert_intact(model: &Model) {
        assert_eq!(model.list.len(), 2);
        let mut seen: Vec<u32> = std::iter::from_fn(|| model.list.pop()).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1]);
    }

    /// Runs `f` under loom with the number of preemptions bounded: CAS retry loops make the full
    /// search explode, and bugs of this kind show up within a few preemptions.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    #[test]
    fn chunks_have_one_owner_at_a_time() {
        model(|| {
            let model = new_model();
            let other = {
                let model = model.clone();
                thread::spawn(move || {
                    use_one(&model, 1);
                    use_one(&model, 2);
                })
            };
            use_one(&model, 3);
            use_one(&model, 4);
            other.join().unwrap();
            assert_intact(&model);
        });
    }

    #[test]
    fn three_threads() {
        model(|| {
            let model = new_model();
            let handles: Vec<_> = (1..=2)
                .map(|value| {
                    let model = model.clone();
                    thread::spawn(move || use_one(&model, value))
                })
                .collect();
            use_one(&model, 3);
            for handle in handles {
                handle.join().unwrap();
            }
            assert_intact(&model);
        });
    }

    /// Pop two, push them back in the other order while another thread pops and pushes: the tags
    /// keep a stale `next` from being installed (the list never loses or duplicates a chunk).
    #[test]
    fn reordering_pushes_keep_the_list_intact() {
        model(|| {
            let model = new_model();
            let other = {
                let model = model.clone();
                thread::spawn(move || use_one(&model, 1))
            };
            let first = model.list.pop();
            let second = model.list.pop();
            if let Some(index) = first {
                model.list.push(index);
            }
            if let Some(index) = second {
                model.list.push(index);
            }
            other.join().unwrap();
            assert_intact(&model);
        });
    }
}
