//! A minimal UDP server written from docs/protocol.md §10 for the client's tests, an impaired
//! in-memory link, and frame makers that allocate nothing.
//!
//! The server is not gamewire's: it is what an outside implementer would write from the spec, and
//! small on purpose. It answers CONNECT with a cookie from `cookie.rs` and remembers nothing, checks
//! the RESPONSE's cookie, keeps one session with a `reliable::Endpoint`, echoes the nonce until the
//! client's first DATA, and echoes every frame back on the channel it came on (the HELLO's echo is
//! its message 0, where gamewire sends WELCOME).

// Shared by several test binaries, each of which uses a part.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gamewire_proto::{Move, Packet, RawFrame, encode_frame};
use gamewire_udp::cookie::{CookieKey, Cookies};
use gamewire_udp::datagram::{
    Challenge, DATA_HEADER_LEN, DataHeader, DataView, DataWriter, Datagram, MAX_DATAGRAM, NONCE_ECHO_LEN,
    RELIABLE_PREFIX_LEN, ResponseView, SessionToken,
};
use gamewire_udp::reliable::{Config, DatagramVerdict, Endpoint};
use gamewire_udp::seq::Seq;

/// splitmix64: small, seeded, good enough to pick losses and delays.
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

    /// Uniform in `0..=max`.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        self.next_u64() % (max + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// What the link does to datagrams, the same both ways.
#[derive(Clone, Debug)]
pub(crate) enum Impairment {
    /// Independent draws per datagram: lost with `loss`, sent twice with `duplicate`, each copy
    /// delayed by `delay` plus up to `jitter` (so datagrams overtake each other).
    Random { loss: f64, duplicate: f64, delay: Duration, jitter: Duration },
    /// A fixed pattern, so that the worst case comes round early and often: every `lose_every`-th
    /// datagram lost, every `duplicate_every`-th sent twice, every `late_every`-th delayed by `late`
    /// more than `delay`.
    Periodic { lose_every: u64, duplicate_every: u64, late_every: u64, delay: Duration, late: Duration },
    /// The datagrams numbered in `lost` (from 1, both ways counted together) are lost, the others
    /// delayed by `delay`.
    Script { lost: Vec<u64>, delay: Duration },
}

/// A datagram in flight.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Vec<u8>,
}

/// Datagrams in flight both ways, by arrival time (ties in sending order).
pub(crate) struct Link {
    impairment: Impairment,
    rng: Rng,
    arrivals: BinaryHeap<Reverse<(Instant, u64)>>,
    datagrams: HashMap<u64, InFlight>,
    sent: u64,
    numbered: u64,
}

impl Link {
    pub(crate) fn new(impairment: Impairment, seed: u64) -> Link {
        Link {
            impairment,
            rng: Rng::new(seed),
            arrivals: BinaryHeap::new(),
            datagrams: HashMap::new(),
            sent: 0,
            numbered: 0,
        }
    }

    pub(crate) fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        assert!(bytes.len() <= MAX_DATAGRAM, "a datagram of {} bytes", bytes.len());
        self.sent += 1;
        let n = self.sent;
        let delays: Vec<Duration> = match self.impairment {
            Impairment::Random { loss, duplicate, delay, jitter } => {
                if self.rng.chance(loss) {
                    return;
                }
                let copies = if self.rng.chance(duplicate) { 2 } else { 1 };
                (0..copies)
                    .map(|_| delay + Duration::from_nanos(self.rng.up_to(jitter.as_nanos() as u64)))
                    .collect()
            }
            Impairment::Periodic { lose_every, duplicate_every, late_every, delay, late } => {
                if n.is_multiple_of(lose_every) {
                    return;
                }
                let delay = if n.is_multiple_of(late_every) { delay + late } else { delay };
                if n.is_multiple_of(duplicate_every) { vec![delay, delay] } else { vec![delay] }
            }
            Impairment::Script { ref lost, delay } => {
                if lost.contains(&n) {
                    return;
                }
                vec![delay]
            }
        };
        for delay in delays {
            self.numbered += 1;
            self.arrivals.push(Reverse((now + delay, self.numbered)));
            self.datagrams.insert(self.numbered, InFlight { from, to, bytes: bytes.to_vec() });
        }
    }

    /// The next datagram due by `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        let &Reverse((at, n)) = self.arrivals.peek()?;
        if at > now {
            return None;
        }
        self.arrivals.pop();
        self.datagrams.remove(&n)
    }
}

/// The session of the one client the server admits.
struct Session {
    client: SocketAddr,
    nonce: u64,
    token: SessionToken,
    endpoint: Endpoint<Vec<u8>>,
    /// Whether a DATA from the client came, proving it has the token: the nonce echo stops.
    heard_data: bool,
    /// A resent RESPONSE asks for a DATA at once.
    data_owed: bool,
    /// Echoes waiting for room in the endpoint's queue.
    backlog: VecDeque<Vec<u8>>,
    unreliable: VecDeque<Vec<u8>>,
}

/// The minimal server; see the module docs.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    cookies: Cookies,
    epoch: Instant,
    session: Option<Session>,
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Reliable frames the "game" got, in order (the HELLO first).
    pub(crate) reliable_in: Vec<Vec<u8>>,
    /// Unreliable frames the "game" got.
    pub(crate) unreliable_in: Vec<Vec<u8>>,
    pub(crate) sessions_created: u32,
    pub(crate) left: bool,
    pub(crate) dropped: u64,
}

const MAX_PAYLOAD: u32 = 1024;

impl TestServer {
    pub(crate) fn new(addr: SocketAddr, epoch: Instant) -> TestServer {
        TestServer {
            addr,
            cookies: Cookies::new(CookieKey::from_bytes([0x5a; 16])),
            epoch,
            session: None,
            replies: VecDeque::new(),
            reliable_in: Vec::new(),
            unreliable_in: Vec::new(),
            sessions_created: 0,
            left: false,
            dropped: 0,
        }
    }

    pub(crate) fn token(&self) -> Option<SessionToken> {
        self.session.as_ref().map(|session| session.token)
    }

    /// Reliable frames queued for the client and not acknowledged yet.
    pub(crate) fn unacked(&self) -> usize {
        self.session.as_ref().map_or(0, |session| session.endpoint.unacked_messages() + session.backlog.len())
    }

    pub(crate) fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let used = match Datagram::parse(bytes, MAX_PAYLOAD) {
            Ok(Datagram::Connect(connect)) => {
                let cookie = self.cookies.issue(now - self.epoch, from, connect.client_nonce);
                let mut buf = [0; MAX_DATAGRAM];
                let len =
                    Challenge { client_nonce: connect.client_nonce, cookie }.write_to(&mut buf).unwrap();
                self.replies.push_back((from, buf[..len].to_vec()));
                true
            }
            Ok(Datagram::Response(response)) => self.on_response(now, from, response),
            Ok(Datagram::Data(data)) => self.on_data(now, from, data),
            Ok(Datagram::Disconnect(disconnect)) => {
                let ours =
                    self.session.as_ref().is_some_and(|s| s.client == from && s.token.0 == disconnect.token);
                if ours {
                    assert_eq!(disconnect.code, 0, "a client leaves with code 0");
                    self.session = None;
                    self.left = true;
                }
                ours
            }
            Ok(Datagram::Challenge(_)) | Err(_) => false,
        };
        if !used {
            self.dropped += 1;
        }
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, response: ResponseView<'_>) -> bool {
        let nonce = response.client_nonce();
        if self.cookies.verify(now - self.epoch, from, nonce, response.cookie()).is_err() {
            return false;
        }
        if response.reliable().next().is_none_or(|first| first.id != Seq(0)) {
            return false;
        }
        if let Some(session) = &mut self.session
            && session.client == from
            && session.nonce == nonce
        {
            session.data_owed = true;
            return true;
        }
        let token = SessionToken::random().unwrap();
        let mut session = Session {
            client: from,
            nonce,
            token,
            endpoint: Endpoint::new(Config::default(), now),
            heard_data: false,
            data_owed: true,
            backlog: VecDeque::new(),
            unreliable: VecDeque::new(),
        };
        for item in response.reliable() {
            let frame = [item.frame.header_bytes(), item.frame.payload()].concat();
            for delivered in session.endpoint.on_reliable(item.id, frame).collect::<Vec<_>>() {
                self.reliable_in.push(delivered.clone());
                session.backlog.push_back(delivered);
            }
        }
        self.session = Some(session);
        self.sessions_created += 1;
        true
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, data: DataView<'_>) -> bool {
        let Some(session) = &mut self.session else { return false };
        if session.client != from || session.token != data.token() {
            return false;
        }
        assert_eq!(data.nonce_echo(), None, "a client never sets NONCE_ECHO");
        session.heard_data = true;
        let verdict = session.endpoint.on_datagram(data.seq(), data.ack(), data.ack_bits(), now);
        if verdict == DatagramVerdict::Duplicate {
            return true;
        }
        for item in data.reliable() {
            let frame = [item.frame.header_bytes(), item.frame.payload()].concat();
            for delivered in session.endpoint.on_reliable(item.id, frame).collect::<Vec<_>>() {
                self.reliable_in.push(delivered.clone());
                session.backlog.push_back(delivered);
            }
        }
        if verdict.accepts_unreliable() {
            for frame in data.unreliable() {
                let frame = [frame.header_bytes(), frame.payload()].concat();
                self.unreliable_in.push(frame.clone());
                session.unreliable.push_back(frame);
            }
        }
        true
    }

    /// The next datagram to send, and where.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if let Some(reply) = self.replies.pop_front() {
            return Some(reply);
        }
        let session = self.session.as_mut()?;
        while let Some(frame) = session.backlog.pop_front() {
            let size = RELIABLE_PREFIX_LEN + frame.len();
            if let Err(refused) = session.endpoint.queue(frame, size) {
                session.backlog.push_front(refused.into_message());
                break;
            }
        }
        let nonce_echo = (!session.heard_data).then_some(session.nonce);
        let room = MAX_DATAGRAM - DATA_HEADER_LEN - if nonce_echo.is_some() { NONCE_ECHO_LEN } else { 0 };
        let datagram = if session.data_owed || !session.unreliable.is_empty() {
            session.data_owed = false;
            session.endpoint.next_datagram(now, room)
        } else {
            session.endpoint.poll_datagram(now, room)?
        };
        let header = DataHeader {
            token: session.token,
            seq: datagram.seq(),
            ack: datagram.ack(),
            ack_bits: datagram.ack_bits(),
            nonce_echo,
        };
        let mut buf = [0; MAX_DATAGRAM];
        let mut writer = DataWriter::new(&mut buf, &header).unwrap();
        for (id, frame) in datagram.messages() {
            writer.push_reliable(id, RawFrame::split_from(frame).unwrap().0).unwrap();
        }
        while let Some(frame) = session.unreliable.front() {
            if writer.push_unreliable(RawFrame::split_from(frame).unwrap().0).is_err() {
                break;
            }
            session.unreliable.pop_front();
        }
        let len = writer.finish();
        Some((session.client, buf[..len].to_vec()))
    }

    /// Ends the session as for a fatal error: DISCONNECT with the token and `code` (§10.4).
    pub(crate) fn end_session(&mut self, code: u32) -> Option<(SocketAddr, Vec<u8>)> {
        let session = self.session.take()?;
        let mut buf = [0; MAX_DATAGRAM];
        let len =
            gamewire_udp::datagram::Disconnect { token: session.token.0, code }.write_to(&mut buf).unwrap();
        Some((session.client, buf[..len].to_vec()))
    }
}

/// Largest PING frame: header and 64 payload bytes.
pub(crate) const PING_FRAME_MAX: usize = 12 + 64;

/// A PING whose payload is `n` (8 bytes) and `pad` more bytes (at most 56), written into `buf`.
pub(crate) fn ping(n: u64, pad: usize, buf: &mut [u8; PING_FRAME_MAX]) -> &[u8] {
    let mut payload = [0u8; 64];
    payload[..8].copy_from_slice(&n.to_le_bytes());
    let payload = &payload[..8 + pad.min(56)];
    let len = encode_frame(0, &Packet::Ping { payload }, buf);
    &buf[..len]
}

/// The `n` a [`ping`] frame carries.
pub(crate) fn ping_number(frame: RawFrame<'_>) -> Option<u64> {
    Some(u64::from_le_bytes(frame.payload().get(..8)?.try_into().ok()?))
}

/// A MOVE whose `client_time` is `time`, written into `buf`.
pub(crate) fn step(time: u32, buf: &mut [u8; 32]) -> &[u8] {
    let len = encode_frame(0, &Packet::Move(&Move::new(1.0, 0.0, 2.0, 3.0, time)), buf);
    &buf[..len]
}

/// The `client_time` of a [`step`] frame.
pub(crate) fn step_time(frame: RawFrame<'_>) -> Option<u32> {
    match frame.packet() {
        Ok(Packet::Move(moved)) => Some(moved.client_time.get()),
        _ => None,
    }
}
