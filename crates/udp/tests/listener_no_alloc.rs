//! At steady state the listener allocates nothing: receiving, delivering (in order and after gaps),
//! sending reliable and unreliable frames, transmitting, acknowledging, resending, timers.

mod listener_util;

use std::time::Duration;

use gamewire_pool::alloc_counter::{self, CountingAllocator, allocations};
use gamewire_udp::listener::ListenerConfig;
use listener_util::{LinkParams, Sim, Traffic};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Eight clients exchanging reliable and unreliable frames both ways through 5% loss, 1%
/// duplication and reordering. The warm-up includes two seconds in which the link carries nothing,
/// so that every queue reaches a high-water mark the lossy traffic afterwards stays below (queues
/// keep their capacity and only grow past it). Only the listener's calls are counted (and the walk
/// over its inbox): the test's clients and link allocate as they please.
#[test]
fn steady_state_traffic_allocates_nothing_in_the_listener() {
    // Counted on this thread, but summed only around the listener's calls (`Sim::measured`).
    alloc_counter::count_this_thread();
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
