//! Bounded SPSC ring; hand-written, not rtrb, as part of the pool's memory discipline, loom-checked like it.
//!
//! The ring is a power-of-two array of slots with two free-running indices: `tail`, the next slot the
//! producer fills (written only by the producer), and `head`, the next slot the consumer empties
//! (written only by the consumer). Each side publishes its index with a Release store after touching
//! a slot, and reads the other side's index with an Acquire load before touching one, so a value is
//! fully written before the consumer reads it and fully moved out before the producer overwrites it.
//!
//! The two indices sit on separate cache lines, and each side keeps a private copy of the other
//! side's index: the shared line is read only when that copy says "full" (producer) or "empty"
//! (consumer), so a ring that is neither exchanges cache lines about once per lap, not once per item.

use std::fmt;
use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, Ordering};

// `crate::sync` has the atomics the pool needs; the ring also needs these, swapped the same way.
#[cfg(all(test, loom))]
use loom::{cell::UnsafeCell, sync::Arc, sync::atomic::AtomicBool};
#[cfg(not(all(test, loom)))]
use std::sync::{Arc, atomic::AtomicBool};

/// `std`'s `UnsafeCell` behind loom's closure API, so that the ring's code is the same with and
/// without `cfg(loom)` (as in tokio-rs/bytes' `src/loom.rs`).
#[cfg(not(all(test, loom)))]
struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(all(test, loom)))]
impl<T> UnsafeCell<T> {
    fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Creates a ring holding up to `capacity` values, rounded up to a power of two and to at least 2,
/// and returns its two ends.
///
/// The ring is allocated once, here; [`Producer::push`] and [`Consumer::pop`] never allocate, block
/// or spin. Either end may be sent to another thread. Values still in the ring when both ends are
/// dropped are dropped then, exactly once.
///
/// # Panics
///
/// If the rounded capacity overflows `usize`, or if the slot array cannot be allocated.
///
/// # Examples
///
/// ```
/// let (mut producer, mut consumer) = gamewire_pool::spsc::<u32>(3);
/// assert_eq!(producer.capacity(), 4);
/// for value in 0..4 {
///     producer.push(value).unwrap();
/// }
/// assert_eq!(producer.push(4), Err(4), "full: the value comes back");
/// assert_eq!(consumer.pop(), Some(0));
/// producer.push(4).unwrap();
/// let rest: Vec<u32> = std::iter::from_fn(|| consumer.pop()).collect();
/// assert_eq!(rest, [1, 2, 3, 4]);
/// ```
pub fn spsc<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(2).checked_next_power_of_two().expect("ring capacity overflows usize");
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        abandoned: AtomicBool::new(false),
        mask: capacity - 1,
        slots: (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(),
    });
    let producer = Producer { shared: Arc::clone(&shared), tail: 0, cached_head: 0 };
    let consumer = Consumer { shared, head: 0, cached_tail: 0 };
    (producer, consumer)
}

/// The state both ends share.
///
/// Indices run freely, wrapping at 2^64 (a multiple of the capacity, so `index & mask` stays
/// continuous); `tail - head` is the number of values in the ring, at most the
/// capacity. Slot `i & mask` holds an initialized value exactly when `head <= i < tail`.
struct Shared<T> {
    /// Next slot the consumer empties. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer fills. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Set by the first end to be dropped; read rarely, so it shares a line with the read-only fields.
    abandoned: AtomicBool,
    /// Capacity minus one; the capacity is a power of two.
    mask: usize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: values of `T` move from the producer's thread to the consumer's, so `T: Send` is required
// and enough. `&Shared` gives access to the slots only through the two ends: each slot is touched by
// one end at a time, handed over by the Release/Acquire pairs on `head` and `tail` (see `push` and
// `pop`); everything else is atomics or immutable after construction.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as for `Send`; no `&T` is ever shared between the ends, so `T: Sync` is not needed.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn capacity(&self) -> usize {
        self.mask + 1
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both ends are gone, and the `Arc` drop that got us here synchronized with both of their
        // last index stores, so Relaxed loads see the final values.
        let mut head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        while head != tail {
            self.slots[head & self.mask].with_mut(|slot| {
                // SAFETY: `head <= i < tail`, so the slot holds an initialized value that nobody
                // consumed; `&mut self` means no end can touch it, and each slot is visited once.
                unsafe { (*slot).assume_init_drop() };
            });
            head = head.wrapping_add(1);
        }
    }
}

/// The sending end of an [`spsc`] ring.
///
/// It is `Send`, not `Clone`: exactly one thread pushes at a time.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own index: always equal to `shared.tail`, kept here to avoid loading it.
    tail: usize,
    /// The consumer's `head` as last loaded. Never ahead of the real one, so it can only make the
    /// ring look fuller than it is.
    cached_head: usize,
}

impl<T> Producer<T> {
    /// Appends `value`, or gives it back in `Err` when the ring is full.
    ///
    /// A full ring is backpressure, not a failure to hide: the value is neither dropped nor waited
    /// for. O(1), no allocation, never blocks. Loads the consumer's index (one possibly contended
    /// cache line) only when the cached copy says the ring is full.
    ///
    /// # Errors
    ///
    /// `Err(value)` when the ring already holds [`Producer::capacity`] values.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let capacity = self.shared.capacity();
        if self.tail.wrapping_sub(self.cached_head) == capacity {
            // Acquire pairs with the consumer's Release store in `pop`: its move out of the slot we
            // are about to overwrite happens-before our write.
            self.cached_head = self.shared.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) == capacity {
                return Err(value);
            }
        }
        self.shared.slots[self.tail & self.shared.mask].with_mut(|slot| {
            // SAFETY: `tail - head < capacity`, so slot `tail` is outside `head..tail`: it holds no
            // value (nothing leaks by overwriting it) and the consumer does not touch it until the
            // store below publishes it. The Acquire above ordered the consumer's last read of it
            // before this write.
            unsafe { (*slot).write(value) };
        });
        self.tail = self.tail.wrapping_add(1);
        // Release: the value written above happens-before the consumer's Acquire load that sees it.
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Number of values in the ring. May overcount by the values the consumer is popping
    /// concurrently, never undercounts. O(1): one atomic load.
    pub fn len(&self) -> usize {
        self.tail.wrapping_sub(self.shared.head.load(Ordering::Relaxed))
    }

    /// Whether the ring is empty (see [`Producer::len`] for its exactness).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most values the ring holds: a power of two, at least 2.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Whether the [`Consumer`] has been dropped: nothing pushed from now on will be popped.
    pub fn is_abandoned(&self) -> bool {
        self.shared.abandoned.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: a consumer that sees the flag with Acquire also sees our every push.
        self.shared.abandoned.store(true, Ordering::Release);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}

/// The receiving end of an [`spsc`] ring.
///
/// It is `Send`, not `Clone`: exactly one thread pops at a time.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our own index: always equal to `shared.head`, kept here to avoid loading it.
    head: usize,
    /// The producer's `tail` as last loaded. Never ahead of the real one, so it can only make the
    /// ring look emptier than it is.
    cached_tail: usize,
}

impl<T> Consumer<T> {
    /// Takes the oldest value, or returns `None` when the ring is empty.
    ///
    /// O(1), no allocation, never blocks. Loads the producer's index (one possibly contended cache
    /// line) only when the cached copy says the ring is empty.
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            // Acquire pairs with the producer's Release store in `push`: the value it wrote into the
            // slot happens-before our read.
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        let value = self.shared.slots[self.head & self.shared.mask].with(|slot| {
            // SAFETY: `head < tail`, so the slot holds an initialized value, whose write the Acquire
            // above made visible; the producer does not touch the slot until the store below hands
            // it back, and advancing `head` means this value is read (moved out) exactly once.
            unsafe { (*slot).assume_init_read() }
        });
        self.head = self.head.wrapping_add(1);
        // Release: our move out of the slot happens-before the producer's next write to it.
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Number of values in the ring. May undercount by the values the producer is pushing
    /// concurrently, never overcounts. O(1): one atomic load.
    pub fn len(&self) -> usize {
        self.shared.tail.load(Ordering::Relaxed).wrapping_sub(self.head)
    }

    /// Whether the ring is empty (see [`Consumer::len`] for its exactness).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most values the ring holds: a power of two, at least 2.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// Whether the [`Producer`] has been dropped: once this returns `true`, the values [`Consumer::pop`]
    /// still returns are the last ones.
    pub fn is_abandoned(&self) -> bool {
        // Acquire pairs with the Release in the producer's drop, so every push it made is visible to
        // the pops that follow.
        self.shared.abandoned.load(Ordering::Acquire)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.abandoned.store(true, Ordering::Release);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    /// Counts its drops in a shared counter.
    struct Counted(Arc<StdAtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_of_at_least_two() {
        for (requested, expected) in
            [(0, 2), (1, 2), (2, 2), (3, 4), (4, 4), (5, 8), (1000, 1024), (1024, 1024)]
        {
            let (producer, consumer) = spsc::<u8>(requested);
            assert_eq!((producer.capacity(), consumer.capacity()), (expected, expected), "{requested}");
        }
    }

    #[test]
    #[should_panic(expected = "ring capacity overflows usize")]
    fn capacity_overflow_panics() {
        let _ = spsc::<u8>(usize::MAX);
    }

    #[test]
    fn full_ring_gives_the_value_back() {
        let (mut producer, mut consumer) = spsc::<String>(4);
        for i in 0..4 {
            producer.push(i.to_string()).unwrap();
            assert_eq!((producer.len(), consumer.len()), (i + 1, i + 1));
        }
        assert_eq!(producer.push("late".to_string()), Err("late".to_string()));
        assert_eq!(producer.push("again".to_string()), Err("again".to_string()), "still full");
        assert_eq!(producer.len(), 4);
        assert_eq!(consumer.pop().as_deref(), Some("0"));
        producer.push("4".to_string()).unwrap();
        let drained: Vec<String> = std::iter::from_fn(|| consumer.pop()).collect();
        assert_eq!(drained, ["1", "2", "3", "4"]);
        assert_eq!(consumer.pop(), None);
        assert!(producer.is_empty() && consumer.is_empty());
    }

    #[test]
    fn wraps_around_over_many_laps() {
        let (mut producer, mut consumer) = spsc::<u64>(8);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        // Vary the fill level so the indices wrap at every offset of the slot array.
        for round in 0..1_000u64 {
            let burst = round % 9;
            for _ in 0..burst {
                match producer.push(next_in) {
                    Ok(()) => next_in += 1,
                    Err(value) => {
                        assert_eq!(value, next_in);
                        assert_eq!(producer.len(), 8);
                        break;
                    }
                }
            }
            for _ in 0..(round * 7) % 9 {
                match consumer.pop() {
                    Some(value) => {
                        assert_eq!(value, next_out);
                        next_out += 1;
                    }
                    None => break,
                }
            }
            assert_eq!(consumer.len() as u64, next_in - next_out);
        }
        while let Some(value) = consumer.pop() {
            assert_eq!(value, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
        assert!(next_in > 100 * 8, "many laps: {next_in}");
    }

    #[test]
    fn indices_wrap_at_usize_max() {
        let (mut producer, mut consumer) = spsc::<usize>(4);
        // Start both ends just below the wrap point, as if 2^64 - 3 values had gone through.
        let start = usize::MAX - 2;
        producer.tail = start;
        producer.cached_head = start;
        producer.shared.head.store(start, Ordering::Relaxed);
        producer.shared.tail.store(start, Ordering::Relaxed);
        consumer.head = start;
        consumer.cached_tail = start;
        for round in 0..3 {
            for i in 0..4 {
                producer.push(round * 4 + i).unwrap();
            }
            assert_eq!(producer.push(99), Err(99));
            assert_eq!(consumer.len(), 4);
            for i in 0..4 {
                assert_eq!(consumer.pop(), Some(round * 4 + i));
            }
            assert_eq!(consumer.pop(), None);
        }
    }

    #[test]
    fn unconsumed_values_are_dropped_exactly_once() {
        let drops = Arc::new(StdAtomicUsize::new(0));
        let (mut producer, mut consumer) = spsc(8);
        // Wrap once so the remaining values straddle the end of the slot array.
        for _ in 0..6 {
            producer.push(Counted(drops.clone())).map_err(|_| ()).unwrap();
        }
        for _ in 0..6 {
            drop(consumer.pop().unwrap());
        }
        assert_eq!(drops.load(Ordering::Relaxed), 6);
        for _ in 0..5 {
            producer.push(Counted(drops.clone())).map_err(|_| ()).unwrap();
        }
        drop(consumer.pop().unwrap());
        assert_eq!(drops.load(Ordering::Relaxed), 7);
        drop(consumer);
        assert!(producer.is_abandoned());
        assert_eq!(drops.load(Ordering::Relaxed), 7, "the producer still owns the ring");
        drop(producer);
        assert_eq!(drops.load(Ordering::Relaxed), 11);
        assert_eq!(Arc::strong_count(&drops), 1, "every clone was dropped");
    }

    #[test]
    fn rejected_value_is_not_dropped_by_the_ring() {
        let drops = Arc::new(StdAtomicUsize::new(0));
        let (mut producer, consumer) = spsc(2);
        for _ in 0..2 {
            producer.push(Counted(drops.clone())).map_err(|_| ()).unwrap();
        }
        let rejected = producer.push(Counted(drops.clone())).expect_err("full");
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop((producer, consumer));
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        drop(rejected);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn abandonment_is_seen_from_both_ends() {
        let (producer, consumer) = spsc::<u8>(2);
        assert!(!producer.is_abandoned() && !consumer.is_abandoned());
        drop(producer);
        assert!(consumer.is_abandoned());
        let (producer, consumer) = spsc::<u8>(2);
        drop(consumer);
        assert!(producer.is_abandoned());
    }

    #[test]
    fn zero_sized_values() {
        let (mut producer, mut consumer) = spsc::<()>(2);
        producer.push(()).unwrap();
        producer.push(()).unwrap();
        assert_eq!(producer.push(()), Err(()));
        assert_eq!(consumer.pop(), Some(()));
        assert_eq!(consumer.len(), 1);
    }

    #[test]
    fn ends_are_send_and_debug() {
        fn assert_send<T: Send>() {}
        assert_send::<Producer<Box<u8>>>();
        assert_send::<Consumer<Box<u8>>>();
        let (mut producer, consumer) = spsc::<u8>(2);
        producer.push(1).unwrap();
        assert_eq!(format!("{producer:?}"), "Producer { len: 1, capacity: 2 }");
        assert_eq!(format!("{consumer:?}"), "Consumer { len: 1, capacity: 2 }");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// A value whose drops are counted, so that a value lost, duplicated or dropped twice shows up.
    struct Counted {
        value: u32,
        drops: Arc<AtomicUsize>,
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    const ITEMS: u32 = 3;

    /// Pushes `0..ITEMS` from a second thread into a ring of 2 while this thread pops: every value
    /// arrives once, in order, and loom checks that no slot is read and written concurrently (a
    /// missing Release/Acquire edge, or a slot reused too early, is a causality violation).
    #[test]
    fn values_arrive_once_in_order() {
        loom::model(|| {
            let (mut producer, mut consumer) = spsc::<Counted>(2);
            let drops = Arc::new(AtomicUsize::new(0));
            let producer_thread = {
                let drops = drops.clone();
                thread::spawn(move || {
                    for value in 0..ITEMS {
                        let mut item = Counted { value, drops: drops.clone() };
                        loop {
                            match producer.push(item) {
                                Ok(()) => break,
                                Err(back) => {
                                    item = back;
                                    thread::yield_now();
                                }
                            }
                        }
                    }
                })
            };
            let mut expected = 0;
            while expected < ITEMS {
                match consumer.pop() {
                    Some(item) => {
                        assert_eq!(item.value, expected);
                        expected += 1;
                    }
                    None => thread::yield_now(),
                }
            }
            producer_thread.join().unwrap();
            assert_eq!(consumer.pop().map(|item| item.value), None);
            assert_eq!(drops.load(Ordering::Relaxed), ITEMS as usize);
        });
    }

    /// The consumer pops once and goes away while the producer is still pushing: whatever is left in
    /// the ring is dropped exactly once, by whichever end is dropped last.
    #[test]
    fn leftovers_are_dropped_once_by_the_last_end() {
        loom::model(|| {
            let (mut producer, mut consumer) = spsc::<Counted>(2);
            let drops = Arc::new(AtomicUsize::new(0));
            let producer_thread = {
                let drops = drops.clone();
                thread::spawn(move || {
                    let mut pushed = 0;
                    for value in 0..ITEMS {
                        if producer.push(Counted { value, drops: drops.clone() }).is_ok() {
                            pushed += 1;
                        }
                    }
                    pushed
                })
            };
            let popped = consumer.pop().map(|item| item.value);
            drop(consumer);
            let pushed = producer_thread.join().unwrap();
            assert!(matches!(popped, None | Some(0)), "{popped:?}");
            // Every value was dropped once: those rejected by a full ring at once, the popped one,
            // and the rest with the ring.
            assert_eq!(drops.load(Ordering::Relaxed), ITEMS as usize, "pushed {pushed}");
        });
    }
}
