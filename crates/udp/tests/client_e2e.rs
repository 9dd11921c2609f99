//! The client against a minimal server written from the spec, over seeded lossy, duplicating and
//! reordering links: the handshake completes, every reliable frame arrives once and in order both
//! ways, unreliable frames never go backwards, and strangers' datagrams change nothing.

mod client_sim;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client_sim::{Impairment, Link, PING_FRAME_MAX, Rng, TestServer, ping_number, step, step_time};
use gamewire_proto::{ErrorCode, Packet, RawFrame, encode_frame_to_vec};
use gamewire_udp::client::{Channel, Client, Close, Config, Event, SendError, State};
use gamewire_udp::datagram::MAX_DATAGRAM;

const TICK: Duration = Duration::from_millis(5);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn server_addr() -> SocketAddr {
    "10.0.0.1:7777".parse().unwrap()
}

fn client_addr() -> SocketAddr {
    "10.0.0.2:50000".parse().unwrap()
}

/// An address that is neither: whatever it sends the client must drop.
fn stranger() -> SocketAddr {
    "10.0.0.1:7778".parse().unwrap()
}

/// What the client's application saw.
#[derive(Default)]
struct Seen {
    connected: u32,
    reliable: Vec<Vec<u8>>,
    unreliable_times: Vec<u32>,
    closed: Option<Close>,
}

/// Client, server and link under one clock.
struct World {
    now: Instant,
    client: Client,
    server: TestServer,
    link: Link,
    rng: Rng,
    seen: Seen,
    /// Reliable frames the client sent, in order, the HELLO first.
    sent_reliable: Vec<Vec<u8>>,
    next_ping: u64,
    next_step: u32,
    /// Copies of server datagrams re-sent to the client from a stranger, or with a forged token.
    injected: u64,
    /// Reliable frames refused because too many waited for an acknowledgement.
    stalls: u64,
}

impl World {
    fn new(seed: u64, impairment: Impairment) -> World {
        let now = Instant::now();
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "bot" });
        World {
            now,
            client: Client::new(server_addr(), &hello, Config::default(), now).unwrap(),
            server: TestServer::new(server_addr(), now),
            link: Link::new(impairment, seed),
            rng: Rng::new(seed ^ 0xc1_1e47),
            seen: Seen::default(),
            sent_reliable: vec![hello],
            next_ping: 0,
            next_step: 0,
            injected: 0,
            stalls: 0,
        }
    }

    /// Sends a reliable frame; when the client's queue is full (the server has not acknowledged
    /// enough yet), the frame is not sent, as a bot would count a stall.
    fn send_reliable(&mut self, frame: &[u8]) {
        match self.client.send(frame, Channel::Reliable) {
            Ok(()) => self.sent_reliable.push(frame.to_vec()),
            Err(SendError::ReliableFull) => self.stalls += 1,
            Err(other) => panic!("{other}"),
        }
    }

    fn send_ping(&mut self) {
        let mut buf = [0; PING_FRAME_MAX];
        let pad = self.rng.up_to(56) as usize;
        let frame = client_sim::ping(self.next_ping, pad, &mut buf).to_vec();
        let before = self.sent_reliable.len();
        self.send_reliable(&frame);
        if self.sent_reliable.len() > before {
            self.next_ping += 1;
        }
    }

    fn send_step(&mut self) {
        let mut buf = [0; 32];
        self.next_step += 1;
        self.client.send(step(self.next_step, &mut buf), Channel::Unreliable).unwrap();
    }

    /// One tick: timers, what both sides owe, and every datagram due.
    fn tick(&mut self) {
        self.now += TICK;
        let now = self.now;
        if self.client.poll_timeout().is_some_and(|at| at <= now)
            && let Some(close) = self.client.handle_timeout(now)
        {
            self.seen.closed = Some(close);
        }
        let mut buf = [0; MAX_DATAGRAM];
        while let Some(len) = self.client.poll_transmit(now, &mut buf) {
            self.link.send(now, client_addr(), self.client.server(), &buf[..len]);
        }
        while let Some((to, bytes)) = self.server.poll_transmit(now) {
            self.link.send(now, server_addr(), to, &bytes);
        }
        while let Some(datagram) = self.link.pop_due(now) {
            if datagram.to == server_addr() {
                self.server.receive(now, datagram.from, &datagram.bytes);
                continue;
            }
            assert_eq!(datagram.to, client_addr());
            self.deliver_to_client(datagram.from, &datagram.bytes);
            // Now and then the same bytes from a stranger, or with another token: dropped.
            if self.rng.chance(0.05) {
                self.injected += 1;
                self.deliver_to_client(stranger(), &datagram.bytes);
            }
            // (Only in the session: before it, a forger who knows the nonce could hand out a token;
            // the nonce is what keeps off-path attackers from doing so, §10.6.)
            if datagram.bytes[1] == 4 && self.client.state().is_connected() && self.rng.chance(0.05) {
                let mut forged = datagram.bytes.clone();
                forged[4] ^= 0x80; // the token's low byte
                self.injected += 1;
                self.deliver_to_client(server_addr(), &forged);
            }
        }
    }

    fn deliver_to_client(&mut self, from: SocketAddr, bytes: &[u8]) {
        let seen = &mut self.seen;
        self.client.receive(self.now, from, bytes, |event| match event {
            Event::Connected(_) => seen.connected += 1,
            Event::Frame { frame, channel: Channel::Reliable } => {
                seen.reliable.push([frame.header_bytes(), frame.payload()].concat())
            }
            Event::Frame { frame, channel: Channel::Unreliable } => {
                seen.unreliable_times.push(step_time(frame).expect("only MOVEs go unreliably"))
            }
            Event::Closed(close) => seen.closed = Some(close),
            _ => {}
        });
    }

    fn run_for(&mut self, duration: Duration, mut each_tick: impl FnMut(&mut World)) {
        let end = self.now + duration;
        while self.now < end {
            each_tick(self);
            self.tick();
        }
    }

    /// Ticks until both sides have every reliable frame, within `limit`.
    fn settle(&mut self, limit: Duration) {
        let end = self.now + limit;
        while self.server.reliable_in.len() < self.sent_reliable.len()
            || self.seen.reliable.len() < self.sent_reliable.len()
        {
            assert!(self.now < end, "not settled within {limit:?}: {}", self.summary());
            self.tick();
        }
    }

    fn summary(&self) -> String {
        format!(
            "sent {} reliable ({} refused); server got {}, client got {} echoes; state {:?}; {:?}",
            self.sent_reliable.len(),
            self.stalls,
            self.server.reliable_in.len(),
            self.seen.reliable.len(),
            self.client.state(),
            self.client.stats()
        )
    }
}

fn strictly_increasing(values: &[u32]) -> bool {
    values.windows(2).all(|pair| pair[0] < pair[1])
}

/// Seeds and links: from clean to 20% loss, with duplication and reordering by jitter.
fn links() -> Vec<(u64, Impairment)> {
    (0..12u64)
        .map(|seed| {
            let mut rng = Rng::new(seed);
            let loss = [0.0, 0.05, 0.1, 0.2][seed as usize % 4];
            let impairment = Impairment::Random {
                loss,
                duplicate: rng.up_to(10) as f64 / 100.0,
                delay: ms(1 + rng.up_to(60)),
                jitter: ms(rng.up_to(40)),
            };
            (seed, impairment)
        })
        .collect()
}

#[test]
fn every_reliable_frame_arrives_once_and_in_order_both_ways_over_bad_links() {
    for (seed, impairment) in links() {
        let mut world = World::new(seed, impairment.clone());
        let context = format!("seed {seed}, {impairment:?}");
        // Frames before the session: the RESPONSE takes what fits after the HELLO, the first DATAs
        // the rest (5 CHATs of 200 bytes fit).
        for i in 0..8 {
            let text = format!("{i:0>200}");
            world.send_reliable(&encode_frame_to_vec(0, &Packet::Chat { text: &text }));
        }
        world.run_for(Duration::from_secs(20), |world| {
            if world.client.state().is_connected() {
                if world.rng.chance(0.3) {
                    world.send_ping();
                }
                world.send_step();
            }
        });
        world.settle(Duration::from_secs(30));
        assert_eq!(world.seen.connected, 1, "{context}");
        assert_eq!(world.server.sessions_created, 1, "{context}: a resent RESPONSE makes no second session");
        assert_eq!(world.server.reliable_in, world.sent_reliable, "{context}: client to server");
        assert_eq!(world.seen.reliable, world.sent_reliable, "{context}: server to client (the echoes)");
        assert!(world.next_ping > 500, "{context}: {}", world.summary());

        let times: Vec<u32> = world
            .server
            .unreliable_in
            .iter()
            .filter_map(|frame| step_time(RawFrame::split_from(frame)?.0))
            .collect();
        assert!(strictly_increasing(&times), "{context}: unreliable frames went backwards at the server");
        assert!(strictly_increasing(&world.seen.unreliable_times), "{context}: and at the client");
        // Loss takes some, and jitter far above the 5 ms between datagrams makes many stale.
        let sent = world.next_step as usize;
        assert!(times.len() > sent / 10, "{context}: {} of {sent} MOVEs arrived", times.len());

        let stats = world.client.stats();
        assert!(stats.dropped >= world.injected, "{context}: {stats:?}, {} injected", world.injected);
        assert_eq!(world.seen.closed, None, "{context}");
        if let Impairment::Random { loss, .. } = impairment
            && loss >= 0.1
        {
            assert!(stats.reliable_resends > 0, "{context}: {stats:?}");
        }

        // Leaving: three DISCONNECTs; the server hears at least one of them.
        world.client.disconnect();
        world.run_for(Duration::from_secs(1), |_| {});
        assert_eq!(world.client.state(), State::Closed(Close::Left), "{context}");
        assert!(world.server.left, "{context}");
    }
}

#[test]
fn the_pings_numbers_arrive_in_sequence() {
    // The same property read from inside the frames, on one bad link: the server's game sees PINGs
    // 0, 1, 2, ... and nothing twice.
    let mut world =
        World::new(7, Impairment::Random { loss: 0.15, duplicate: 0.1, delay: ms(30), jitter: ms(50) });
    world.run_for(Duration::from_secs(10), |world| {
        if world.client.state().is_connected() {
            world.send_ping();
        }
    });
    world.settle(Duration::from_secs(30));
    let numbers: Vec<u64> = world.server.reliable_in[1..]
        .iter()
        .map(|frame| ping_number(RawFrame::split_from(frame).unwrap().0).unwrap())
        .collect();
    assert_eq!(numbers, (0..world.next_ping).collect::<Vec<_>>());
}

#[test]
fn the_handshake_survives_losing_each_of_its_datagrams_once() {
    // Lost: the CONNECT (1), the CHALLENGE to its resend (3), the RESPONSE (6) and the server's first
    // DATA (8); the resends of each get through.
    let mut world = World::new(1, Impairment::Script { lost: vec![1, 3, 6, 8], delay: ms(20) });
    world.run_for(Duration::from_secs(5), |_| {});
    assert!(world.client.state().is_connected(), "{}", world.summary());
    assert!(world.client.stats().handshake_resends >= 3, "{:?}", world.client.stats());
    assert_eq!(world.server.sessions_created, 1);
    assert_eq!(world.seen.reliable, world.sent_reliable, "the HELLO's echo");
}

#[test]
fn a_server_that_never_answers_is_given_up_after_5_s() {
    let impairment = Impairment::Periodic {
        lose_every: 1,
        duplicate_every: u64::MAX,
        late_every: u64::MAX,
        delay: ms(1),
        late: ms(0),
    };
    let mut world = World::new(1, impairment);
    world.run_for(Duration::from_secs(6), |_| {});
    assert_eq!(world.seen.closed, Some(Close::HandshakeTimeout));
    assert_eq!(world.client.stats().datagrams_sent, 5, "CONNECT at 0, 0.25, 0.75, 1.75 and 3.75 s");
}

#[test]
fn the_server_ending_the_session_closes_the_client_with_the_code() {
    let mut world =
        World::new(3, Impairment::Random { loss: 0.0, duplicate: 0.0, delay: ms(10), jitter: ms(0) });
    world.run_for(Duration::from_secs(1), |_| {});
    assert!(world.client.state().is_connected());
    let (to, bytes) = world.server.end_session(ErrorCode::ShuttingDown.code()).unwrap();
    world.link.send(world.now, server_addr(), to, &bytes);
    world.run_for(Duration::from_secs(1), |_| {});
    let closed = Close::Disconnected { code: ErrorCode::ShuttingDown.code() };
    assert_eq!((world.seen.closed, world.client.state()), (Some(closed), State::Closed(closed)));
}

#[test]
fn a_silent_server_is_noticed_after_the_idle_timeout() {
    let mut world =
        World::new(4, Impairment::Random { loss: 0.0, duplicate: 0.0, delay: ms(10), jitter: ms(0) });
    world.run_for(Duration::from_secs(1), |_| {});
    assert!(world.client.state().is_connected());
    // The server vanishes without a word: its session is simply forgotten.
    let _ = world.server.end_session(0);
    world.run_for(Duration::from_secs(31), |_| {});
    assert!(matches!(world.seen.closed, Some(Close::ServerGone(_))), "{:?}", world.seen.closed);
}
