//! A listener, minimal clients written from docs/protocol.md §10, and a seeded lossy link between them.
//!
//! The client is a test double, not the real one: it does the handshake (CONNECT until a CHALLENGE
//! with its nonce, RESPONSE with its HELLO as message 0 until a DATA echoing its nonce), takes its
//! token from that DATA, then runs a `reliable::Endpoint` (its HELLO queued as message 0, so that
//! its next message is 1). It retries the handshake for as long as the test runs instead of giving
//! up after 5 s, so that a lossy seed cannot fail the test for a reason the listener has no part in.

#![allow(dead_code)] // each test file uses part of it

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamewire_proto::{HEADER_LEN, Packet, RawFrame, encode_frame_to_vec};
use gamewire_udp::cookie::Cookie;
use gamewire_udp::datagram::{
    CONNECT_LEN, Connect, DATA_HEADER_LEN, DataHeader, DataWriter, Datagram, MAX_DATAGRAM, MAX_FRAME_PAYLOAD,
    RELIABLE_PREFIX_LEN, ReliableItem, SessionToken, write_response,
};
use gamewire_udp::listener::{Event, Inbox, Listener, ListenerConfig, SessionId, Transmit};
use gamewire_udp::reliable::{Config, Endpoint};
use gamewire_udp::seq::Seq;

/// Packet ids of the test's frames: a numbered reliable frame and a numbered unreliable one.
pub(crate) const RELIABLE_PACKET: u32 = 5;
pub(crate) const UNRELIABLE_PACKET: u32 = 3;

/// splitmix64: small, seeded, allocation-free.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        self.next_u64() % (max + 1)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A frame of the test: `packet_id`, player 0, an 8-byte counter, and `padding` bytes.
pub(crate) fn numbered(packet_id: u32, counter: u64, padding: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + 8 + padding);
    frame.extend_from_slice(&packet_id.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&(8 + padding as u32).to_le_bytes());
    frame.extend_from_slice(&counter.to_le_bytes());
    frame.resize(HEADER_LEN + 8 + padding, 0xab);
    frame
}

/// The counter of a [`numbered`] frame.
pub(crate) fn counter_of(frame: RawFrame<'_>) -> u64 {
    u64::from_le_bytes(frame.payload()[..8].try_into().unwrap())
}

/// How the link treats each datagram, both ways.
#[derive(Clone, Debug)]
pub(crate) struct LinkParams {
    pub(crate) loss: f64,
    pub(crate) duplicate: f64,
    pub(crate) delay: Duration,
    /// Extra delay per copy, uniform in `0..=jitter`: datagrams overtake each other.
    pub(crate) jitter: Duration,
}

/// Datagrams in flight, by arrival time (ties in sending order).
#[derive(Default)]
pub(crate) struct Link {
    in_transit: BinaryHeap<Reverse<(Instant, u64)>>,
    datagrams: HashMap<u64, (SocketAddr, SocketAddr, Vec<u8>)>,
    sent: u64,
}

impl Link {
    pub(crate) fn send(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
        params: &LinkParams,
        rng: &mut Rng,
    ) {
        if rng.chance(params.loss) {
            return;
        }
        let copies = if rng.chance(params.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = Duration::from_nanos(rng.up_to(params.jitter.as_nanos() as u64));
            self.sent += 1;
            self.in_transit.push(Reverse((now + params.delay + jitter, self.sent)));
            self.datagrams.insert(self.sent, (from, to, bytes.clone()));
        }
    }

    pub(crate) fn arrived(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let &Reverse((at, key)) = self.in_transit.peek()?;
        if at > now {
            return None;
        }
        self.in_transit.pop();
        self.datagrams.remove(&key)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.in_transit.is_empty()
    }
}

enum Phase {
    Connecting,
    Responding { cookie: Cookie },
    Connected { token: SessionToken },
    Closed { code: u32 },
}

/// The test's client, from the spec (module docs).
pub(crate) struct TestClient {
    pub(crate) addr: SocketAddr,
    pub(crate) nonce: u64,
    phase: Phase,
    hello: Vec<u8>,
    endpoint: Endpoint<Vec<u8>>,
    /// Reliable frames the endpoint's window had no room for yet.
    backlog: VecDeque<Vec<u8>>,
    unreliable: VecDeque<Vec<u8>>,
    resend_at: Instant,
    wait: Duration,
    /// Counters of the numbered reliable frames received, in delivery order.
    pub(crate) reliable_received: Vec<u64>,
    pub(crate) last_unreliable: Option<u64>,
    pub(crate) unreliable_received: u64,
    pub(crate) reliable_sent: u64,
    pub(crate) unreliable_sent: u64,
    /// Bytes the client sent, and datagrams, for the record.
    pub(crate) datagrams_sent: u64,
}

impl TestClient {
    pub(crate) fn new(addr: SocketAddr, nonce: u64, name: &str, now: Instant) -> TestClient {
        let hello = encode_frame_to_vec(0, &Packet::Hello { name });
        let mut config = Config::default();
        config.max_message_size(MAX_DATAGRAM - DATA_HEADER_LEN).idle_timeout(Duration::from_secs(3600));
        let mut endpoint = Endpoint::new(config, now);
        // The HELLO is message 0 (in the RESPONSE); the endpoint's next one is 1.
        let size = RELIABLE_PREFIX_LEN + hello.len();
        assert_eq!(endpoint.queue(hello.clone(), size).ok(), Some(Seq(0)));
        TestClient {
            addr,
            nonce,
            phase: Phase::Connecting,
            hello,
            endpoint,
            backlog: VecDeque::new(),
            unreliable: VecDeque::new(),
            resend_at: now,
            wait: Duration::from_millis(250),
            reliable_received: Vec::new(),
            last_unreliable: None,
            unreliable_received: 0,
            reliable_sent: 0,
            unreliable_sent: 0,
            datagrams_sent: 0,
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected { .. })
    }

    pub(crate) fn closed_with(&self) -> Option<u32> {
        match self.phase {
            Phase::Closed { code } => Some(code),
            _ => None,
        }
    }

    /// Queues the next numbered frame of a channel.
    pub(crate) fn send(&mut self, reliable: bool, padding: usize) {
        if reliable {
            self.backlog.push_back(numbered(RELIABLE_PACKET, self.reliable_sent, padding));
            self.reliable_sent += 1;
        } else {
            self.unreliable.push_back(numbered(UNRELIABLE_PACKET, self.unreliable_sent, padding));
            self.unreliable_sent += 1;
        }
    }

    pub(crate) fn receive(&mut self, now: Instant, bytes: &[u8]) {
        let Ok(datagram) = Datagram::parse(bytes, MAX_FRAME_PAYLOAD as u32) else {
            panic!("the listener sent a datagram that does not parse: {bytes:?}");
        };
        match datagram {
            Datagram::Challenge(challenge) => {
                if matches!(self.phase, Phase::Connecting) && challenge.client_nonce == self.nonce {
                    self.phase = Phase::Responding { cookie: challenge.cookie };
                    self.resend_at = now;
                    self.wait = Duration::from_millis(250);
                }
            }
            Datagram::Data(data) => {
                let token = match self.phase {
                    Phase::Connecting | Phase::Responding { .. } if data.nonce_echo() == Some(self.nonce) => {
                        self.phase = Phase::Connected { token: data.token() };
                        data.token()
                    }
                    Phase::Connected { token } => token,
                    _ => return,
                };
                if data.token() != token {
                    return;
                }
                let verdict = self.endpoint.on_datagram(data.seq(), data.ack(), data.ack_bits(), now);
                if !verdict.accepts_reliable() {
                    return;
                }
                for item in data.reliable() {
                    let bytes = [item.frame.header_bytes(), item.frame.payload()].concat();
                    for frame in self.endpoint.on_reliable(item.id, bytes) {
                        let (frame, _) = RawFrame::split_from(&frame).unwrap();
                        assert_eq!(frame.packet_id(), RELIABLE_PACKET);
                        let counter = counter_of(frame);
                        assert_eq!(
                            counter,
                            self.reliable_received.len() as u64,
                            "server frames out of order or twice"
                        );
                        self.reliable_received.push(counter);
                    }
                }
                if verdict.accepts_unreliable() {
                    for frame in data.unreliable() {
                        let counter = counter_of(frame);
                        assert!(
                            self.last_unreliable.is_none_or(|last| counter > last),
                            "unreliable went back"
                        );
                        self.last_unreliable = Some(counter);
                        self.unreliable_received += 1;
                    }
                }
            }
            Datagram::Disconnect(bye) => {
                let ours = match self.phase {
                    Phase::Connected { token } => bye.token == token.0,
                    Phase::Connecting | Phase::Responding { .. } => bye.token == self.nonce,
                    Phase::Closed { .. } => false,
                };
                if ours {
                    self.phase = Phase::Closed { code: bye.code };
                }
            }
            Datagram::Connect(_) | Datagram::Response(_) => panic!("the listener sent a client datagram"),
        }
    }

    /// The next datagram the client sends now, if any.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.phase {
            Phase::Connecting | Phase::Responding { .. } => {
                if now < self.resend_at {
                    return None;
                }
                self.resend_at = now + self.wait;
                self.wait = (self.wait * 2).min(Duration::from_secs(1));
                let mut buf = vec![0; MAX_DATAGRAM];
                match &self.phase {
                    Phase::Responding { cookie } => {
                        let (hello, _) = RawFrame::split_from(&self.hello).unwrap();
                        write_response(
                            &mut buf,
                            self.nonce,
                            cookie,
                            &[ReliableItem { id: Seq(0), frame: hello }],
                        )
                        .unwrap();
                    }
                    _ => {
                        Connect { client_nonce: self.nonce }.write_to(&mut buf).unwrap();
                        assert_eq!(buf.len(), CONNECT_LEN);
                    }
                }
                self.datagrams_sent += 1;
                Some(buf)
            }
            Phase::Connected { token } => {
                while let Some(frame) = self.backlog.pop_front() {
                    let size = RELIABLE_PREFIX_LEN + frame.len();
                    if let Err(refused) = self.endpoint.queue(frame, size) {
                        self.backlog.push_front(refused.into_message());
                        break;
                    }
                }
                let budget = MAX_DATAGRAM - DATA_HEADER_LEN;
                let datagram = if self.unreliable.is_empty() {
                    self.endpoint.poll_datagram(now, budget)?
                } else {
                    self.endpoint.next_datagram(now, budget)
                };
                let header = DataHeader {
                    token,
                    seq: datagram.seq(),
                    ack: datagram.ack(),
                    ack_bits: datagram.ack_bits(),
                    nonce_echo: None,
                };
                let mut buf = vec![0; MAX_DATAGRAM];
                let mut writer = DataWriter::new(&mut buf, &header).unwrap();
                for (id, frame) in datagram.messages() {
                    let (frame, _) = RawFrame::split_from(frame).unwrap();
                    writer.push_reliable(id, frame).unwrap();
                }
                while let Some(frame) = self.unreliable.front() {
                    let (raw, _) = RawFrame::split_from(frame).unwrap();
                    if writer.push_unreliable(raw).is_err() {
                        break;
                    }
                    self.unreliable.pop_front();
                }
                let len = writer.finish();
                buf.truncate(len);
                self.datagrams_sent += 1;
                Some(buf)
            }
            Phase::Closed { .. } => None,
        }
    }

    /// Whether everything it queued is acknowledged and sent.
    pub(crate) fn is_idle(&self) -> bool {
        self.backlog.is_empty() && self.unreliable.is_empty() && self.endpoint.unacked_messages() == 0
    }
}

/// What the test's game knows of a session.
#[derive(Debug, Default)]
pub(crate) struct ServerSide {
    pub(crate) client: usize,
    pub(crate) reliable_received: u64,
    pub(crate) last_unreliable: Option<u64>,
    pub(crate) unreliable_received: u64,
    pub(crate) reliable_sent: u64,
    pub(crate) unreliable_sent: u64,
}

/// What the traffic looks like, per tick and per side.
#[derive(Clone, Debug)]
pub(crate) struct Traffic {
    pub(crate) reliable_chance: f64,
    pub(crate) unreliable_chance: f64,
    pub(crate) max_padding: usize,
}

/// A listener, its clients and the link, driven tick by tick on a simulated clock.
pub(crate) struct Sim {
    pub(crate) start: Instant,
    pub(crate) now: Instant,
    pub(crate) tick: Duration,
    pub(crate) listener: Listener<Arc<[u8]>>,
    pub(crate) server_addr: SocketAddr,
    inbox: Inbox,
    transmits: Vec<Transmit<Arc<[u8]>>>,
    pub(crate) link: Link,
    pub(crate) params: LinkParams,
    pub(crate) traffic: Traffic,
    pub(crate) rng: Rng,
    pub(crate) clients: Vec<TestClient>,
    pub(crate) sessions: HashMap<SessionId, ServerSide>,
    /// Sessions of each client, in the order they opened (one, unless it started over).
    pub(crate) session_of: HashMap<usize, SessionId>,
    pub(crate) closed: Vec<(SessionId, String)>,
    /// Sessions whose HELLO just came, for `session_of`.
    hellos: Vec<(usize, SessionId)>,
    /// Whether the link carries nothing at all.
    pub(crate) blackout: bool,
    /// Whether the sides produce traffic.
    pub(crate) producing: bool,
    /// Allocations made inside listener calls, counted with `counter`.
    pub(crate) counter: fn() -> u64,
    pub(crate) listener_allocations: u64,
}

impl Sim {
    pub(crate) fn new(
        seed: u64,
        clients: usize,
        params: LinkParams,
        traffic: Traffic,
        config: ListenerConfig,
    ) -> Sim {
        let start = Instant::now();
        let mut rng = Rng::new(seed);
        let server_addr: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let clients = (0..clients)
            .map(|i| {
                let addr = format!("10.0.1.{}:{}", 1 + i, 5000 + i).parse().unwrap();
                TestClient::new(addr, rng.next_u64(), &format!("c{i}"), start)
            })
            .collect();
        Sim {
            start,
            now: start,
            tick: Duration::from_millis(5),
            listener: Listener::new(config, start).unwrap(),
            server_addr,
            inbox: Inbox::new(),
            transmits: (0..64).map(|_| Transmit::new()).collect(),
            link: Link::default(),
            params,
            traffic,
            rng,
            clients,
            sessions: HashMap::new(),
            session_of: HashMap::new(),
            closed: Vec::new(),
            hellos: Vec::with_capacity(64),
            blackout: false,
            producing: true,
            counter: || 0,
            listener_allocations: 0,
        }
    }

    /// Runs the listener call `f`, counting its allocations.
    fn measured<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let before = (self.counter)();
        let result = f(self);
        self.listener_allocations += (self.counter)() - before;
        result
    }

    /// The game's handling of what the inbox holds for `datagram`, checking every rule on the way.
    fn handle_events(&mut self, datagram: &[u8]) {
        let before = (self.counter)();
        // Walked without allocating: the events are turned into at most a few state changes.
        for event in self.inbox.events(datagram) {
            match event {
                Event::Opened { session, .. } => {
                    assert!(self.sessions.insert(session, ServerSide::default()).is_none());
                }
                Event::Frame { session, frame, reliable } => {
                    let side = self.sessions.get_mut(&session).expect("a frame of an open session");
                    if reliable && frame.packet_id() == 1 {
                        assert_eq!(side.reliable_received, 0, "the HELLO comes first, once");
                        let Ok(Packet::Hello { name }) = frame.packet() else { panic!("a bad HELLO") };
                        side.client = name[1..].parse().unwrap();
                        side.reliable_received = 1;
                        // Pre-sized: no allocation in the measured part.
                        assert!(self.hellos.len() < self.hellos.capacity());
                        self.hellos.push((side.client, session));
                        continue;
                    }
                    assert!(side.reliable_received > 0 || !reliable, "a reliable frame before the HELLO");
                    if reliable {
                        assert_eq!(frame.packet_id(), RELIABLE_PACKET);
                        assert_eq!(
                            counter_of(frame),
                            side.reliable_received - 1,
                            "client frames out of order or twice"
                        );
                        side.reliable_received += 1;
                    } else {
                        let counter = counter_of(frame);
                        assert!(
                            side.last_unreliable.is_none_or(|last| counter > last),
                            "unreliable went back"
                        );
                        side.last_unreliable = Some(counter);
                        side.unreliable_received += 1;
                    }
                }
                Event::Closed { session, reason } => self.closed.push((session, reason.to_string())),
            }
        }
        self.listener_allocations += (self.counter)() - before;
        // Bookkeeping that allocates, on a new session only: outside the measured part.
        for (client, session) in self.hellos.drain(..) {
            self.session_of.insert(client, session);
        }
    }

    /// One tick: arrivals, timers, traffic, transmissions.
    pub(crate) fn step(&mut self) {
        let now = self.now;
        while let Some((from, to, bytes)) = self.link.arrived(now) {
            if to == self.server_addr {
                self.measured(|sim| sim.listener.receive(now, from, &bytes, &mut sim.inbox));
                self.handle_events(&bytes);
            } else if let Some(client) = self.clients.iter_mut().find(|client| client.addr == to) {
                client.receive(now, &bytes);
            }
        }
        if self.listener.poll_timeout().is_some_and(|at| at <= now) {
            self.measured(|sim| sim.listener.handle_timeout(now, &mut sim.inbox));
            self.handle_events(&[]);
        }
        if self.producing {
            self.produce_server();
            for i in 0..self.clients.len() {
                if self.clients[i].closed_with().is_none() {
                    self.produce_client(i);
                }
            }
        }
        for i in 0..self.clients.len() {
            while let Some(bytes) = self.clients[i].poll_transmit(now) {
                let (from, to) = (self.clients[i].addr, self.server_addr);
                self.wire(from, to, bytes);
            }
        }
        loop {
            let filled = self.measured(|sim| sim.listener.poll_transmits(now, &mut sim.transmits));
            for i in 0..filled {
                let transmit = &self.transmits[i];
                assert!(transmit.len() <= MAX_DATAGRAM);
                let mut bytes = vec![0; transmit.len()];
                transmit.copy_to(&mut bytes);
                let to = transmit.destination();
                self.wire(self.server_addr, to, bytes);
            }
            if filled < self.transmits.len() {
                break;
            }
        }
        self.now += self.tick;
    }

    fn wire(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if !self.blackout {
            self.link.send(self.now, from, to, bytes, &self.params, &mut self.rng);
        }
    }

    fn produce_server(&mut self) {
        let mut ids: Vec<SessionId> = self.session_of.values().copied().collect();
        ids.sort();
        for session in ids {
            let traffic = self.traffic.clone();
            for reliable in [true, false] {
                let chance = if reliable { traffic.reliable_chance } else { traffic.unreliable_chance };
                if !self.rng.chance(chance) {
                    continue;
                }
                let padding = self.rng.up_to(traffic.max_padding as u64) as usize;
                let Some(side) = self.sessions.get_mut(&session) else { continue };
                let counter = if reliable { side.reliable_sent } else { side.unreliable_sent };
                let packet = if reliable { RELIABLE_PACKET } else { UNRELIABLE_PACKET };
                let frame: Arc<[u8]> = numbered(packet, counter, padding).into();
                let sent = self.measured(|sim| sim.listener.send(session, frame, reliable));
                if let Err(error) = sent {
                    panic!("send to {session}: {error}");
                }
                let side = self.sessions.get_mut(&session).unwrap();
                if reliable {
                    side.reliable_sent += 1;
                } else {
                    side.unreliable_sent += 1;
                }
            }
        }
    }

    fn produce_client(&mut self, i: usize) {
        let traffic = self.traffic.clone();
        for reliable in [true, false] {
            let chance = if reliable { traffic.reliable_chance } else { traffic.unreliable_chance };
            if self.rng.chance(chance) {
                let padding = self.rng.up_to(traffic.max_padding as u64) as usize;
                self.clients[i].send(reliable, padding);
            }
        }
    }

    /// Runs `duration` of traffic, then up to `drain` more without new traffic until every
    /// reliable frame both ways has arrived. Returns whether it all arrived.
    pub(crate) fn run(&mut self, traffic: Duration, drain: Duration) -> bool {
        let end = self.now + traffic;
        while self.now < end {
            self.step();
        }
        self.producing = false;
        let end = self.now + drain;
        while self.now < end {
            self.step();
            if self.all_delivered() {
                return true;
            }
        }
        false
    }

    /// Every reliable frame produced on each side has arrived on the other.
    pub(crate) fn all_delivered(&self) -> bool {
        self.clients.iter().enumerate().all(|(i, client)| {
            let Some(session) = self.session_of.get(&i) else { return false };
            let side = &self.sessions[session];
            client.reliable_received.len() as u64 == side.reliable_sent
                && side.reliable_received == client.reliable_sent + 1
        })
    }
}
