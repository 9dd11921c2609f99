//! At steady state a pair of endpoints allocates nothing: queue, send, lose, reorder, resend, ack, deliver.

use std::time::{Duration, Instant};

use gamewire_pool::alloc_counter::{self, CountingAllocator, allocations};
use gamewire_udp::reliable::{Config, Datagram, Endpoint};
use gamewire_udp::seq::Seq;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const MAX_ITEMS: usize = 32;

/// A datagram on a fixed-size wire, so that the test itself allocates nothing.
#[derive(Clone, Copy)]
struct Wire {
    seq: Seq,
    ack: Seq,
    ack_bits: u32,
    items: [(Seq, u32); MAX_ITEMS],
    count: usize,
}

impl Wire {
    fn of(datagram: Datagram<'_, u32>) -> Wire {
        let mut wire = Wire {
            seq: datagram.seq(),
            ack: datagram.ack(),
            ack_bits: datagram.ack_bits(),
            items: [(Seq(0), 0); MAX_ITEMS],
            count: 0,
        };
        for (id, &message) in datagram.messages() {
            wire.items[wire.count] = (id, message);
            wire.count += 1;
        }
        wire
    }
}

/// One side: its endpoint, the next message to queue and the next one expected from the peer.
struct Side {
    endpoint: Endpoint<u32>,
    next_to_queue: u32,
    next_expected: u32,
    /// A datagram held back to arrive after the next one (reordering).
    held: Option<Wire>,
    /// The link's seeded choices for this side's datagrams (splitmix64 state).
    link_state: u64,
}

impl Side {
    fn receive(&mut self, wire: &Wire, now: Instant) {
        if self.endpoint.on_datagram(wire.seq, wire.ack, wire.ack_bits, now).accepts_reliable() {
            for &(id, message) in &wire.items[..wire.count] {
                for delivered in self.endpoint.on_reliable(id, message) {
                    assert_eq!(delivered, self.next_expected);
                    self.next_expected += 1;
                }
            }
        }
    }
}

/// The link's next choice, uniform in `0..n` (splitmix64: seeded, no allocation).
fn link_draw(state: &mut u64, n: u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % n
}

/// Sends what `from` owes, through a link that loses one datagram in 5 (all of them while `blackout`)
/// and swaps one in 7 with the next, at seeded random. Not every 5th and every 7th: the sides send one datagram per round, so a
/// periodic loss lines up with resend timeouts that are a multiple of its period (the 50 ms floor
/// is 10 rounds, the 1 s cap 200) and loses every copy of a message for ever.
fn transmit(from: &mut Side, to: &mut Side, now: Instant, stream: bool, blackout: bool) {
    for _ in 0..2 {
        if from.endpoint.queue(from.next_to_queue, 24).is_err() {
            break;
        }
        from.next_to_queue += 1;
    }
    let mut wires = [None; 8];
    let mut count = 0;
    if stream {
        wires[count] = Some(Wire::of(from.endpoint.next_datagram(now, 1100)));
        count += 1;
    }
    while let Some(datagram) = from.endpoint.poll_datagram(now, 1100) {
        wires[count] = Some(Wire::of(datagram));
        count += 1;
    }
    for wire in wires.into_iter().flatten() {
        if link_draw(&mut from.link_state, 5) == 0 || blackout {
            continue;
        }
        if link_draw(&mut from.link_state, 7) == 0 {
            if let Some(held) = from.held.replace(wire) {
                to.receive(&held, now);
            }
            continue;
        }
        to.receive(&wire, now);
        if let Some(held) = from.held.take() {
            to.receive(&held, now);
        }
    }
}

#[test]
fn steady_state_traffic_allocates_nothing() {
    // Everything this thread does is counted: the test itself allocates nothing (fixed-size wire).
    alloc_counter::count_this_thread();
    let start = Instant::now();
    let side = |seed| Side {
        endpoint: Endpoint::new(Config::default(), start),
        next_to_queue: 0,
        next_expected: 0,
        held: None,
        link_state: seed,
    };
    let (mut a, mut b) = (side(1), side(2));
    // Two seconds of warm-up in which the link carries nothing: the send queues fill to the message
    // limit and the logs of sent datagrams to theirs, so every ring reaches a high-water mark that
    // the lossy traffic afterwards stays below (rings keep their capacity; they only grow past it).
    let blackout = 2_000..2_400;
    let round = |i: u64, a: &mut Side, b: &mut Side| {
        let now = start + Duration::from_millis(5 * i);
        let blackout = blackout.contains(&i);
        transmit(a, b, now, true, blackout);
        transmit(b, a, now, i.is_multiple_of(4), blackout);
    };
    for i in 0..10_000 {
        round(i, &mut a, &mut b);
    }
    let before = allocations();
    for i in 10_000..30_000 {
        round(i, &mut a, &mut b);
    }
    assert_eq!(allocations() - before, 0);
    // The link did deliver, lose and reorder meanwhile.
    assert!(b.next_expected > 20_000 && a.next_expected > 20_000, "{} {}", a.next_expected, b.next_expected);
    assert!(a.endpoint.rtt().samples() > 0);
}
