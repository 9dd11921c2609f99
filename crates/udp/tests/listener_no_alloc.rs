//! At steady state the listener allocates nothing: receiving, delivering (in order and after gaps),
//! sending reliable and unreliable frames, transmitting, acknowledging, resending, timers.

mod listener_util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use gamewire_udp::listener::ListenerConfig;
use listener_util::{LinkParams, Sim, Traffic};

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

/// Eight clients exchanging reliable and unreliable frames both ways through 5% loss, 1%
/// duplication and reordering. The warm-up includes two seconds in which the link carries nothing,
/// so that every queue reaches a high-water mark the lossy traffic afterwards stays below (queues
/// keep their capacity and only grow past it). Only the listener's calls are counted (and the walk
/// over its inbox): the test's clients and link allocate as they please.
#[test]
fn steady_state_traffic_allocates_nothing_in_the_listener() {
    let link = LinkParams {
        loss: 0.05,
        duplicate: 0.01,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(15),
    };
    let traffic = Traffic { reliable_chance: 0.3, unreliable_chance: 0.5, max_padding: 100 };
    let mut sim = Sim::new(11, 8, link, traffic, ListenerConfig::default());
    sim.counter = allocations;
    let run = |sim: &mut Sim, duration: Duration| {
        let end = sim.now + duration;
        while sim.now < end {
            sim.step();
        }
    };
    run(&mut sim, Duration::from_secs(4));
    sim.blackout = true;
    run(&mut sim, Duration::from_secs(2));
    sim.blackout = false;
    run(&mut sim, Duration::from_secs(8));
    assert_eq!(sim.listener.session_count(), 8);

    sim.listener_allocations = 0;
    let before = sim.listener.stats().clone();
    run(&mut sim, Duration::from_secs(20));
    assert_eq!(sim.listener_allocations, 0);
    // The listener did work meanwhile: received, delivered and sent thousands of datagrams.
    let after = sim.listener.stats();
    assert!(after.datagrams_received - before.datagrams_received > 10_000, "{after:?}");
    assert!(after.datagrams_sent - before.datagrams_sent > 10_000, "{after:?}");
    assert!(sim.closed.is_empty(), "{:?}", sim.closed);
}
