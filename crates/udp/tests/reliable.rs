//! Properties of the reliability layer over simulated lossy links and under arbitrary peer input.

mod reliable_link;

use std::time::{Duration, Instant};

use gamewire_udp::reliable::{Config, Endpoint};
use gamewire_udp::seq::Seq;
use proptest::prelude::*;
use reliable_link::{Limits, LinkParams, Pair, Sim, Traffic};

const TICK: Duration = Duration::from_millis(5);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

prop_compose! {
    fn bad_link()(
        loss in 0.0..=0.3,
        duplicate in 0.0..=0.1,
        delay in 0u64..=100,
        jitter in 0u64..=50,
    ) -> LinkParams {
        LinkParams { loss, duplicate, delay: ms(delay), jitter: ms(jitter) }
    }
}

prop_compose! {
    fn traffic()(
        message_chance in 0.0..=0.5,
        burst in 1u64..=4,
        max_payload in 8usize..=200,
        stream_chance in 0.0..=1.0,
        extra_budget in 0usize..=1000,
    ) -> Traffic {
        Traffic { message_chance, burst, max_payload, stream_chance, max_budget: max_payload + extra_budget }
    }
}

prop_compose! {
    /// Limits loose enough that at least 16 of the largest messages fit.
    fn limits(max_payload: usize)(
        max_unacked_messages in 16usize..=256,
        messages_of_bytes in 16usize..=512,
        max_messages_per_datagram in 1usize..=32,
    ) -> Limits {
        Limits { max_unacked_messages, max_unacked_bytes: messages_of_bytes * max_payload, max_messages_per_datagram }
    }
}

fn sim() -> impl Strategy<Value = Sim> {
    (bad_link(), traffic())
        .prop_flat_map(|(link, traffic)| {
            let limits = limits(traffic.max_payload);
            (Just(link), Just(traffic), limits)
        })
        .prop_map(|(link, traffic, limits)| Sim { link, traffic, limits })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Up to 30% loss, 10% duplication, reordering by jitter: every reliable message arrives exactly
    /// once and in order on the other side, within a bounded simulated time; accepted unreliable
    /// frames never go backwards; no datagram exceeds its budget or message count; the in-flight
    /// limits hold after every tick; no message is ever sent beyond the receive window; neither side
    /// thinks the other gone. (The checks run inside the simulation, each tick.)
    #[test]
    fn every_reliable_message_arrives_once_and_in_order_over_a_bad_link(seed: u64, sim in sim()) {
        let mut pair = Pair::new(seed, sim, TICK);
        pair.run(Duration::from_secs(1), Duration::from_secs(120));
    }

    /// On a link with a fixed one-way delay `d` and datagrams going both ways every tick, the
    /// smoothed RTT settles between `2d` and `2d` plus the simulation's two ticks of granularity.
    #[test]
    fn the_rtt_estimate_converges_to_the_links_round_trip(seed: u64, delay in 5u64..=100, loss in 0.0..=0.1) {
        let sim = Sim {
            link: LinkParams { loss, duplicate: 0.0, delay: ms(delay), jitter: Duration::ZERO },
            traffic: Traffic { message_chance: 0.5, burst: 2, max_payload: 64, stream_chance: 1.0, max_budget: 1100 },
            limits: Limits { max_unacked_messages: 256, max_unacked_bytes: 64 * 1024, max_messages_per_datagram: 32 },
        };
        let mut pair = Pair::new(seed, sim, TICK);
        pair.run(Duration::from_secs(5), Duration::from_secs(30));
        for side in [&pair.a, &pair.b] {
            let rtt = side.endpoint.rtt();
            prop_assert!(rtt.samples() >= 20, "{} samples", rtt.samples());
            let (low, high) = (ms(2 * delay), ms(2 * delay) + 2 * TICK);
            prop_assert!((low..=high).contains(&rtt.smoothed()), "srtt {:?} for a {delay} ms delay", rtt.smoothed());
        }
    }
}

#[test]
fn a_link_with_jitter_gives_an_estimate_within_its_delays() {
    let sim = Sim {
        link: LinkParams { loss: 0.05, duplicate: 0.0, delay: ms(30), jitter: ms(20) },
        traffic: Traffic {
            message_chance: 0.5,
            burst: 2,
            max_payload: 64,
            stream_chance: 1.0,
            max_budget: 1100,
        },
        limits: Limits {
            max_unacked_messages: 256,
            max_unacked_bytes: 64 * 1024,
            max_messages_per_datagram: 32,
        },
    };
    let mut pair = Pair::new(7, sim, TICK);
    pair.run(Duration::from_secs(5), Duration::from_secs(30));
    let rtt = pair.a.endpoint.rtt();
    assert!((ms(60)..=ms(100) + 2 * TICK).contains(&rtt.smoothed()), "{rtt:?}");
    assert!(rtt.variance() > Duration::ZERO);
}

/// 70 simulated seconds at one datagram per millisecond each way: datagram numbers and message ids
/// both go past 65535 and start again at 0, through loss, duplication and reordering.
#[test]
fn datagram_numbers_and_message_ids_wrap_without_a_message_lost() {
    let sim = Sim {
        link: LinkParams { loss: 0.1, duplicate: 0.02, delay: ms(10), jitter: ms(5) },
        traffic: Traffic {
            message_chance: 1.0,
            burst: 1,
            max_payload: 16,
            stream_chance: 1.0,
            max_budget: 1100,
        },
        limits: Limits {
            max_unacked_messages: 256,
            max_unacked_bytes: 64 * 1024,
            max_messages_per_datagram: 32,
        },
    };
    let mut pair = Pair::new(65536, sim, ms(1));
    pair.run(Duration::from_secs(70), Duration::from_secs(30));
    for side in [&pair.a, &pair.b] {
        assert!(side.datagrams_sent > 70_000, "{} datagrams", side.datagrams_sent);
        assert!(side.queued.len() > 68_000, "{} messages", side.queued.len());
    }
}

/// One thing a peer (or the application) can do, in the fuzz test below.
#[derive(Clone, Debug)]
enum Op {
    /// A datagram with any header and reliable items with any ids.
    Arbitrary {
        seq: u16,
        ack: u16,
        ack_bits: u32,
        ids: Vec<u16>,
    },
    /// A datagram whose numbers are near the real ones: its seq near the peer's last, its ack near
    /// the last datagram sent, its ids near the next expected one.
    Plausible {
        seq_step: i8,
        ack_back: u8,
        ack_bits: u32,
        id_offsets: Vec<i16>,
    },
    Queue {
        size: u16,
    },
    Send {
        budget: u16,
        poll: bool,
    },
    Advance {
        millis: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<u16>(), any::<u16>(), any::<u32>(), prop::collection::vec(any::<u16>(), 0..4))
            .prop_map(|(seq, ack, ack_bits, ids)| Op::Arbitrary { seq, ack, ack_bits, ids }),
        3 => (-3i8..=3, 0u8..=40, any::<u32>(), prop::collection::vec(-300i16..=300, 0..6))
            .prop_map(|(seq_step, ack_back, ack_bits, id_offsets)| Op::Plausible { seq_step, ack_back, ack_bits, id_offsets }),
        2 => (0u16..=300).prop_map(|size| Op::Queue { size }),
        2 => (0u16..=1200, any::<bool>()).prop_map(|(budget, poll)| Op::Send { budget, poll }),
        1 => (0u16..=2000).prop_map(|millis| Op::Advance { millis }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the peer sends (acks for datagrams never sent, wrapped or repeated numbers, ids far
    /// out of the window) and however the application calls: nothing panics, the limits hold,
    /// `poll_datagram` runs dry, and delivered messages still come in id order, each once.
    #[test]
    fn arbitrary_peer_input_never_panics_or_breaks_the_order(
        ops in prop::collection::vec(op(), 1..200),
        max_unacked_messages in 1usize..=256,
        max_unacked_bytes in 0usize..=4096,
        max_messages_per_datagram in 1usize..=64,
    ) {
        let mut config = Config::default();
        config
            .max_unacked_messages(max_unacked_messages)
            .max_unacked_bytes(max_unacked_bytes)
            .max_messages_per_datagram(max_messages_per_datagram)
            .max_message_size(200);
        let mut now = Instant::now();
        // The payload of a message is its id, so that a delivery can be checked against the order.
        let mut endpoint = Endpoint::<u16>::new(config, now);
        let mut peer_seq = Seq(u16::MAX);
        let mut last_sent: Option<Seq> = None;
        let mut expected = Seq(0);
        let mut receive = |endpoint: &mut Endpoint<u16>, seq: Seq, ack: Seq, ack_bits: u32, ids: &[Seq], now| {
            if endpoint.on_datagram(seq, ack, ack_bits, now).accepts_reliable() {
                for &id in ids {
                    for message in endpoint.on_reliable(id, id.0) {
                        assert_eq!(message, expected.0, "delivered out of order or twice");
                        expected = expected.next();
                    }
                }
            }
        };
        for op in ops {
            match op {
                Op::Arbitrary { seq, ack, ack_bits, ids } => {
                    let ids: Vec<_> = ids.into_iter().map(Seq).collect();
                    receive(&mut endpoint, Seq(seq), Seq(ack), ack_bits, &ids, now);
                }
                Op::Plausible { seq_step, ack_back, ack_bits, id_offsets } => {
                    let seq = Seq(peer_seq.0.wrapping_add_signed(i16::from(seq_step)));
                    if seq.is_newer_than(peer_seq) {
                        peer_seq = seq;
                    }
                    let ack = Seq(last_sent.unwrap_or(Seq(u16::MAX)).0.wrapping_sub(u16::from(ack_back)));
                    let next = endpoint.next_expected_id();
                    let ids: Vec<_> = id_offsets.into_iter().map(|offset| Seq(next.0.wrapping_add_signed(offset))).collect();
                    receive(&mut endpoint, seq, ack, ack_bits, &ids, now);
                }
                Op::Queue { size } => {
                    let id = endpoint.next_message_id();
                    if let Ok(queued) = endpoint.queue(id.0, usize::from(size)) {
                        prop_assert_eq!(queued, id);
                    }
                }
                Op::Send { budget, poll } => {
                    let budget = usize::from(budget);
                    if !poll {
                        last_sent = Some(endpoint.next_datagram(now, budget).seq());
                    }
                    let mut polled = 0;
                    while let Some(datagram) = endpoint.poll_datagram(now, budget) {
                        prop_assert!(datagram.message_count() <= max_messages_per_datagram);
                        last_sent = Some(datagram.seq());
                        polled += 1;
                        prop_assert!(polled <= 300, "poll_datagram never runs dry");
                    }
                }
                Op::Advance { millis } => now += ms(u64::from(millis)),
            }
            prop_assert!(endpoint.unacked_messages() <= max_unacked_messages);
            prop_assert!(endpoint.unacked_bytes() <= max_unacked_bytes);
            prop_assert!(endpoint.poll_timeout() > now - Duration::from_secs(3600));
            let _ = endpoint.peer_gone(now);
        }
    }
}
