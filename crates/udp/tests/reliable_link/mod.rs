//! Two reliability endpoints over a simulated link with seeded loss, duplication, delay and jitter.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use gamewire_udp::reliable::{Config, Datagram, DatagramVerdict, Endpoint, QueueError, ReliableVerdict};
use gamewire_udp::seq::Seq;

/// splitmix64: small, seeded, good enough to pick losses and delays.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        self.next_u64() % (max + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// How the link treats each datagram, the same both ways.
#[derive(Clone, Debug)]
pub(crate) struct LinkParams {
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) delay: Duration,
    /// Extra delay, uniform in `0..=jitter`, drawn per copy: datagrams overtake each other.
    pub(crate) jitter: Duration,
}

/// What the application on each side does per tick.
#[derive(Clone, Debug)]
pub(crate) struct Traffic {
    /// Chance per tick that the application produces reliable messages (1 to `burst` of them).
    pub(crate) message_chance: f64,
    pub(crate) burst: u64,
    /// Largest payload, at least 8 bytes (the payload starts with its index).
    pub(crate) max_payload: usize,
    /// Chance per tick that a datagram with an unreliable frame goes out (`next_datagram`).
    pub(crate) stream_chance: f64,
    /// Largest datagram room for reliable messages; each datagram gets a room in
    /// `max_payload..=max_budget`.
    pub(crate) max_budget: usize,
}

/// The endpoint limits under test (both sides alike).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_unacked_messages: usize,
    pub(crate) max_unacked_bytes: usize,
    pub(crate) max_messages_per_datagram: usize,
}

impl Limits {
    /// The endpoint config with these limits; messages up to `max_payload` bytes.
    fn config(&self, max_payload: usize) -> Config {
        let mut config = Config::default();
        config
            .max_unacked_messages(self.max_unacked_messages)
            .max_unacked_bytes(self.max_unacked_bytes)
            .max_messages_per_datagram(self.max_messages_per_datagram)
            .max_message_size(max_payload);
        config
    }
}

/// Everything a simulation is made of but the seed and the clock.
#[derive(Clone, Debug)]
pub(crate) struct Sim {
    pub(crate) link: LinkParams,
    pub(crate) traffic: Traffic,
    pub(crate) limits: Limits,
}

/// A datagram on the wire, decoded.
#[derive(Clone, Debug)]
struct Wire {
    seq: Seq,
    ack: Seq,
    ack_bits: u32,
    reliable: Vec<(Seq, Vec<u8>)>,
    unreliable: Option<u64>,
}

/// One direction of the link: datagrams ordered by arrival time (ties in sending order).
#[derive(Default)]
struct Link {
    in_transit: BinaryHeap<Reverse<(Instant, u64)>>,
    datagrams: std::collections::HashMap<u64, Wire>,
    sent: u64,
}

impl Link {
    fn send(&mut self, now: Instant, wire: Wire, params: &LinkParams, rng: &mut Rng) {
        if rng.chance(params.loss) {
            return;
        }
        let copies = if rng.chance(params.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = Duration::from_nanos(rng.up_to(params.jitter.as_nanos() as u64));
            self.sent += 1;
            self.in_transit.push(Reverse((now + params.delay + jitter, self.sent)));
            self.datagrams.insert(self.sent, wire.clone());
        }
    }

    fn arrived(&mut self, now: Instant) -> Option<Wire> {
        let &Reverse((at, key)) = self.in_transit.peek()?;
        if at > now {
            return None;
        }
        self.in_transit.pop();
        self.datagrams.remove(&key)
    }
}

/// One side: its endpoint and what its application sent and received.
pub(crate) struct Side {
    pub(crate) endpoint: Endpoint<Vec<u8>>,
    /// Produced by the application, refused by `queue` so far (the peer is slow): tried again later.
    backlog: VecDeque<Vec<u8>>,
    produced: u64,
    /// Accepted by `queue`, in message id order.
    pub(crate) queued: Vec<Vec<u8>>,
    pub(crate) delivered: Vec<Vec<u8>>,
    unreliable_sent: u64,
    pub(crate) last_unreliable: Option<u64>,
    pub(crate) datagrams_sent: u64,
}

impl Side {
    fn new(config: Config, now: Instant) -> Self {
        Side {
            endpoint: Endpoint::new(config, now),
            backlog: VecDeque::new(),
            produced: 0,
            queued: Vec::new(),
            delivered: Vec::new(),
            unreliable_sent: 0,
            last_unreliable: None,
            datagrams_sent: 0,
        }
    }

    /// Receives one datagram, checking that reliable messages come once each, in order, and that
    /// accepted unreliable frames never go backwards.
    fn receive(&mut self, wire: Wire, now: Instant) {
        let verdict = self.endpoint.on_datagram(wire.seq, wire.ack, wire.ack_bits, now);
        if verdict == DatagramVerdict::Duplicate {
            return;
        }
        for (id, message) in wire.reliable {
            let delivery = self.endpoint.on_reliable(id, message);
            assert_ne!(
                delivery.verdict(),
                ReliableVerdict::BeyondWindow,
                "message {id} sent beyond the window"
            );
            for message in delivery {
                let index = u64::from_le_bytes(message[..8].try_into().unwrap());
                assert_eq!(index, self.delivered.len() as u64, "delivered out of order or twice");
                self.delivered.push(message);
            }
        }
        if let (true, Some(frame)) = (verdict.accepts_unreliable(), wire.unreliable) {
            assert!(
                self.last_unreliable.is_none_or(|last| frame > last),
                "unreliable {frame} after {:?}",
                self.last_unreliable
            );
            self.last_unreliable = Some(frame);
        }
    }

    /// The application's turn: produce, queue what the limits allow, send what is owed.
    fn send(&mut self, now: Instant, produce: bool, sim: &Sim, link: &mut Link, rng: &mut Rng) {
        let (traffic, limits) = (&sim.traffic, &sim.limits);
        if produce && rng.chance(traffic.message_chance) {
            for _ in 0..=rng.up_to(traffic.burst - 1) {
                let len = 8 + rng.up_to(traffic.max_payload as u64 - 8) as usize;
                let mut message = vec![0xa5; len];
                message[..8].copy_from_slice(&self.produced.to_le_bytes());
                self.produced += 1;
                self.backlog.push_back(message);
            }
        }
        while let Some(message) = self.backlog.pop_front() {
            let size = message.len();
            let copy = message.clone();
            match self.endpoint.queue(message, size) {
                Ok(id) => {
                    assert_eq!(id, Seq(self.queued.len() as u16), "ids are handed out in order");
                    self.queued.push(copy);
                }
                Err(error @ (QueueError::MessagesFull(_) | QueueError::BytesFull(_))) => {
                    self.backlog.push_front(error.into_message());
                    break;
                }
                Err(error) => panic!("{error}"),
            }
        }
        assert!(self.endpoint.unacked_messages() <= limits.max_unacked_messages);
        assert!(self.endpoint.unacked_bytes() <= limits.max_unacked_bytes);

        let budget =
            traffic.max_payload + rng.up_to((traffic.max_budget - traffic.max_payload) as u64) as usize;
        if rng.chance(traffic.stream_chance) {
            self.unreliable_sent += 1;
            let frame = Some(self.unreliable_sent);
            let wire = wire_of(self.endpoint.next_datagram(now, budget), frame, budget, limits);
            self.datagrams_sent += 1;
            link.send(now, wire, &sim.link, rng);
        }
        let mut polled = 0;
        while let Some(datagram) = self.endpoint.poll_datagram(now, budget) {
            let wire = wire_of(datagram, None, budget, limits);
            self.datagrams_sent += 1;
            link.send(now, wire, &sim.link, rng);
            polled += 1;
            assert!(polled < 10_000, "poll_datagram never says None");
        }
        assert_eq!(self.endpoint.peer_gone(now), None, "the link delivers, the peer must not look gone");
    }
}

fn wire_of(datagram: Datagram<'_, Vec<u8>>, unreliable: Option<u64>, budget: usize, limits: &Limits) -> Wire {
    let reliable: Vec<_> = datagram.messages().map(|(id, message)| (id, message.clone())).collect();
    assert_eq!(reliable.len(), datagram.message_count());
    assert!(reliable.len() <= limits.max_messages_per_datagram);
    assert!(reliable.iter().map(|(_, message)| message.len()).sum::<usize>() <= budget, "over the budget");
    Wire { seq: datagram.seq(), ack: datagram.ack(), ack_bits: datagram.ack_bits(), reliable, unreliable }
}

/// Two sides and the link between them, on a simulated clock.
pub(crate) struct Pair {
    pub(crate) a: Side,
    pub(crate) b: Side,
    a_to_b: Link,
    b_to_a: Link,
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) tick: Duration,
    sim: Sim,
    rng: Rng,
}

impl Pair {
    pub(crate) fn new(seed: u64, sim: Sim, tick: Duration) -> Self {
        let start = Instant::now();
        let config = sim.limits.config(sim.traffic.max_payload);
        Pair {
            a: Side::new(config.clone(), start),
            b: Side::new(config, start),
            a_to_b: Link::default(),
            b_to_a: Link::default(),
            start,
            now: start,
            tick,
            sim,
            rng: Rng::new(seed),
        }
    }

    /// One tick: datagrams due arrive, then each application produces (if `produce`) and sends.
    pub(crate) fn step(&mut self, produce: bool) {
        self.now += self.tick;
        while let Some(wire) = self.a_to_b.arrived(self.now) {
            self.b.receive(wire, self.now);
        }
        while let Some(wire) = self.b_to_a.arrived(self.now) {
            self.a.receive(wire, self.now);
        }
        self.a.send(self.now, produce, &self.sim, &mut self.a_to_b, &mut self.rng);
        self.b.send(self.now, produce, &self.sim, &mut self.b_to_a, &mut self.rng);
    }

    /// Whether every message produced on each side was delivered on the other.
    pub(crate) fn all_delivered(&self) -> bool {
        let done =
            |from: &Side, to: &Side| from.backlog.is_empty() && to.delivered.len() == from.queued.len();
        done(&self.a, &self.b) && done(&self.b, &self.a)
    }

    /// Produces for `producing`, then runs until everything is delivered; panics if that takes more
    /// than `deadline` after producing stopped. Returns how long the draining took.
    pub(crate) fn run(&mut self, producing: Duration, deadline: Duration) -> Duration {
        while self.now < self.start + producing {
            self.step(true);
        }
        let stopped = self.now;
        while !self.all_delivered() {
            assert!(self.now - stopped < deadline, "not all delivered {deadline:?} after the last message");
            self.step(false);
        }
        for (from, to) in [(&self.a, &self.b), (&self.b, &self.a)] {
            assert_eq!(from.queued.len() as u64, from.produced);
            assert!(to.delivered == from.queued, "every message delivered, intact");
        }
        self.now - stopped
    }
}
