//! Two-thread stress for the SPSC ring: a producer and a consumer thread move millions of values
//! through a small ring, checking order, count and (with boxed values) that every value is freed once.

use std::thread;

use gamewire_pool::{Consumer, Producer, spsc};

const CAPACITY: usize = 1024;
const COUNT: u64 = 2_000_000;

/// Waits for the other thread without burning a shared core: a few spins, then yield. On a
/// two-core machine running both test functions at once, pure spinning would starve the peer.
fn back_off(misses: &mut u32) {
    *misses += 1;
    if *misses < 64 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

/// Pushes `make(0..count)` in order, retrying each value the full ring gives back.
fn produce<T: Send>(mut producer: Producer<T>, count: u64, make: impl Fn(u64) -> T) {
    for i in 0..count {
        let mut value = make(i);
        let mut misses = 0;
        loop {
            match producer.push(value) {
                Ok(()) => break,
                Err(back) => {
                    value = back;
                    back_off(&mut misses);
                }
            }
        }
    }
}

/// Pops until the producer is gone and the ring is drained, checking every value is the next one.
fn consume<T>(mut consumer: Consumer<T>, read: impl Fn(T) -> u64) -> u64 {
    let mut expected = 0u64;
    let mut misses = 0;
    loop {
        match consumer.pop() {
            Some(value) => {
                assert_eq!(read(value), expected, "out of order");
                expected += 1;
                misses = 0;
            }
            // Abandoned is checked before the final pop, so values pushed just before the producer
            // was dropped are not missed.
            None if consumer.is_abandoned() => match consumer.pop() {
                Some(value) => {
                    assert_eq!(read(value), expected, "out of order");
                    expected += 1;
                }
                None => return expected,
            },
            None => back_off(&mut misses),
        }
    }
}

fn run<T: Send + 'static>(count: u64, make: fn(u64) -> T, read: fn(T) -> u64) {
    let (producer, consumer) = spsc::<T>(CAPACITY);
    assert_eq!(producer.capacity(), CAPACITY);
    let producer_thread = thread::spawn(move || produce(producer, count, make));
    let consumer_thread = thread::spawn(move || consume(consumer, read));
    producer_thread.join().expect("producer panicked");
    let received = consumer_thread.join().expect("consumer panicked");
    assert_eq!(received, count, "values lost or duplicated");
}

#[test]
fn integers_arrive_in_order() {
    run(COUNT, |i| i, |value| value);
}

#[test]
fn boxed_values_arrive_in_order_and_are_freed() {
    run(COUNT, Box::new, |value| *value);
}

/// Values left in the ring when both ends are gone are freed with it (checked for leaks and double
/// frees by Miri or a sanitizer; here it must at least not crash).
#[test]
fn boxed_leftovers_are_freed_with_the_ring() {
    let (producer, consumer) = spsc::<Box<u64>>(CAPACITY);
    let producer_thread = thread::spawn(move || produce(producer, CAPACITY as u64, Box::new));
    let consumer_thread = thread::spawn(move || {
        let mut consumer = consumer;
        // Take a few, then go away with the rest still queued.
        let (mut taken, mut misses) = (0, 0);
        while taken < 10 {
            match consumer.pop() {
                Some(_) => taken += 1,
                None => back_off(&mut misses),
            }
        }
        consumer
    });
    producer_thread.join().unwrap();
    let consumer = consumer_thread.join().unwrap();
    assert!(consumer.is_abandoned());
    assert_eq!(consumer.len(), CAPACITY - 10);
    drop(consumer);
}
