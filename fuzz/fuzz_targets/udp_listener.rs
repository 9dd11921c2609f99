//! The UDP server's handshake and session handling: a `Listener<Vec<u8>>` driven by a script.
//!
//! Each step is one of: a datagram from one of a few addresses (three ports on one IPv4 address, one on
//! another, an IPv6 one, and the first one's IPv4-mapped form), either raw bytes or built with the
//! crate's writers from fuzzed fields — a CONNECT, a RESPONSE echoing the latest CHALLENGE an address
//! got (or altered: another nonce, a byte flipped, sent from elsewhere), a DATA with the latest token
//! an address got (or any) — ; a step of the clock; `handle_timeout`; the game sending a frame to a
//! session or ending one. After every step the listener's transmits are drained, and the CHALLENGEs
//! and DATA tokens they carry feed later steps.
//!
//! Invariants:
//! - no panic;
//! - an address that never completed a handshake (no `Event::Opened` for it) is never sent more bytes
//!   than it sent (the anti-amplification rule of docs/protocol.md §10.3);
//! - every transmit is at most 1200 bytes, and what the listener sends parses as a server datagram.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use gamewire_proto::{ErrorCode, HEADER_LEN, RawFrame};
use gamewire_udp::cookie::{COOKIE_LEN, Cookie, CookieKey, Cookies, KEY_LEN};
use gamewire_udp::datagram::{
    Connect, DataHeader, DataWriter, Datagram, Disconnect, MAX_DATAGRAM, ReliableItem, SessionToken,
    write_response,
};
use gamewire_udp::listener::{Event, Inbox, Listener, ListenerConfig, SessionId, Transmit};
use gamewire_udp::seq::Seq;
use libfuzzer_sys::fuzz_target;

const ADDRESSES: usize = 6;

fn address(index: u8) -> SocketAddr {
    let shared = Ipv4Addr::new(192, 0, 2, 1);
    match usize::from(index) % ADDRESSES {
        0 => SocketAddr::new(IpAddr::V4(shared), 5000),
        1 => SocketAddr::new(IpAddr::V4(shared), 5001),
        2 => SocketAddr::new(IpAddr::V4(shared), 5002),
        3 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 6000),
        4 => SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)), 7000),
        _ => SocketAddr::new(IpAddr::V6(shared.to_ipv6_mapped()), 5000),
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    key: [u8; KEY_LEN],
    /// Small limits make the caps and the send limits reachable.
    max_sessions: u8,
    max_sessions_per_ip: u8,
    send_hard_limit: u16,
    idle_timeout_ms: u16,
    max_payload: u16,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
struct FrameInput {
    packet_id: u8,
    player_id: u32,
    payload_len: u16,
    fill: u8,
}

impl FrameInput {
    fn bytes(&self) -> Vec<u8> {
        let len = usize::from(self.payload_len) % 1400;
        let mut bytes = Vec::with_capacity(HEADER_LEN + len);
        bytes.extend_from_slice(&u32::from(self.packet_id % 16).to_le_bytes());
        bytes.extend_from_slice(&self.player_id.to_le_bytes());
        bytes.extend_from_slice(&(len as u32).to_le_bytes());
        bytes.resize(HEADER_LEN + len, self.fill);
        bytes
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    Raw {
        from: u8,
        bytes: Vec<u8>,
    },
    Connect {
        from: u8,
        nonce: u64,
    },
    /// A RESPONSE to the latest CHALLENGE `of` got, sent from `from` (or `of`), with another nonce or
    /// a byte of the cookie flipped, carrying reliable items (the HELLO, say).
    Respond {
        of: u8,
        from: Option<u8>,
        nonce: Option<u64>,
        flip: Option<(u8, u8)>,
        items: Vec<(u16, FrameInput)>,
    },
    /// A RESPONSE with a made-up cookie.
    Forge {
        from: u8,
        nonce: u64,
        cookie: [u8; COOKIE_LEN],
    },
    /// A DATA with the token `of` last got from the server (or `token`).
    Data {
        from: u8,
        of: Option<u8>,
        token: u64,
        seq: u16,
        ack: u16,
        ack_bits: u32,
        nonce_echo: Option<u64>,
        reliable: Vec<(u16, FrameInput)>,
        unreliable: Vec<FrameInput>,
    },
    Disconnect {
        from: u8,
        of: Option<u8>,
        token: u64,
        code: u32,
    },
    Advance {
        ms: u16,
    },
    Timeout,
    Send {
        session: u8,
        frame: FrameInput,
        reliable: bool,
    },
    End {
        session: u8,
        code: u8,
    },
}

#[derive(Default)]
struct Peer {
    received: u64,
    sent: u64,
    opened: bool,
    challenge: Option<(u64, Cookie)>,
    token: Option<u64>,
}

struct Harness {
    listener: Listener<Vec<u8>>,
    inbox: Inbox,
    transmit: Transmit<Vec<u8>>,
    now: Instant,
    peers: HashMap<SocketAddr, Peer>,
    sessions: Vec<SessionId>,
}

impl Harness {
    fn receive(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.peers.entry(from).or_default().received += bytes.len() as u64;
        self.listener.receive(self.now, from, bytes, &mut self.inbox);
        self.events(bytes);
    }

    fn events(&mut self, datagram: &[u8]) {
        for event in self.inbox.events(datagram) {
            match event {
                Event::Opened { session, peer } => {
                    self.peers.entry(peer).or_default().opened = true;
                    self.sessions.push(session);
                }
                Event::Frame { frame, .. } => {
                    assert_eq!(frame.header().data_length.get() as usize, frame.payload().len())
                }
                Event::Closed { session, .. } => self.sessions.retain(|&s| s != session),
            }
        }
    }

    fn drain(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut count = 0;
        while self.listener.poll_transmit(self.now, &mut self.transmit) {
            count += 1;
            assert!(count < 100_000, "poll_transmit never runs dry");
            let len = self.transmit.len();
            assert!(len <= MAX_DATAGRAM, "a transmit of {len} bytes");
            assert_eq!(self.transmit.copy_to(&mut buf), len);
            let to = self.transmit.destination();
            let peer = self.peers.entry(to).or_default();
            peer.sent += len as u64;
            assert!(
                peer.opened || peer.sent <= peer.received,
                "{to} never completed a handshake but was sent {} bytes for {} received",
                peer.sent,
                peer.received
            );
            let parsed = Datagram::parse(&buf[..len], u32::MAX);
            let Ok(parsed) = parsed else { panic!("the listener sent what does not parse: {parsed:?}") };
            assert!(parsed.kind().is_server_sendable(), "the listener sent a {:?}", parsed.kind());
            match parsed {
                Datagram::Challenge(challenge) => {
                    peer.challenge = Some((challenge.client_nonce, challenge.cookie))
                }
                Datagram::Data(data) => peer.token = Some(data.token().0),
                _ => {}
            }
        }
    }

    fn token(&self, of: Option<u8>, token: u64) -> u64 {
        of.and_then(|of| self.peers.get(&address(of))?.token).unwrap_or(token)
    }
}

fn data(header: &DataHeader, reliable: &[(u16, FrameInput)], unreliable: &[FrameInput]) -> Vec<u8> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut writer = DataWriter::new(&mut buf, header).expect("a DATA header fits");
    for (id, frame) in reliable {
        let bytes = frame.bytes();
        let _ = writer.push_reliable(Seq(*id), RawFrame::split_from(&bytes).unwrap().0);
    }
    for frame in unreliable {
        let bytes = frame.bytes();
        let _ = writer.push_unreliable(RawFrame::split_from(&bytes).unwrap().0);
    }
    let len = writer.finish();
    buf[..len].to_vec()
}

fuzz_target!(|input: Input| {
    let mut config = ListenerConfig::default();
    config
        .max_sessions(usize::from(input.max_sessions % 8) + 1)
        .max_sessions_per_ip(usize::from(input.max_sessions_per_ip % 4) + 1)
        .send_hard_limit(usize::from(input.send_hard_limit).max(2048))
        .idle_timeout(Duration::from_millis(u64::from(input.idle_timeout_ms).max(100)))
        .max_payload(u32::from(input.max_payload));
    let start = Instant::now();
    let mut h = Harness {
        listener: Listener::with_cookies(config, Cookies::new(CookieKey::from_bytes(input.key)), start),
        inbox: Inbox::new(),
        transmit: Transmit::new(),
        now: start,
        peers: HashMap::new(),
        sessions: Vec::new(),
    };
    let mut buf = [0u8; MAX_DATAGRAM];

    for step in &input.steps {
        match step {
            Step::Raw { from, bytes } => h.receive(address(*from), bytes),
            Step::Connect { from, nonce } => {
                let len = Connect { client_nonce: *nonce }.write_to(&mut buf).unwrap();
                let bytes = buf[..len].to_vec();
                h.receive(address(*from), &bytes);
            }
            Step::Respond { of, from, nonce, flip, items } => {
                let Some((issued_nonce, cookie)) = h.peers.get(&address(*of)).and_then(|p| p.challenge)
                else {
                    continue;
                };
                let mut cookie_bytes = cookie.to_bytes();
                if let Some((at, xor)) = flip {
                    cookie_bytes[usize::from(*at) % COOKIE_LEN] ^= xor;
                }
                let frames: Vec<(Seq, Vec<u8>)> = items.iter().map(|(id, f)| (Seq(*id), f.bytes())).collect();
                let items: Vec<ReliableItem<'_>> = frames
                    .iter()
                    .map(|(id, bytes)| ReliableItem {
                        id: *id,
                        frame: RawFrame::split_from(bytes).unwrap().0,
                    })
                    .collect();
                let nonce = nonce.unwrap_or(issued_nonce);
                let Ok(len) = write_response(&mut buf, nonce, &Cookie::from_bytes(cookie_bytes), &items)
                else {
                    continue;
                };
                let bytes = buf[..len].to_vec();
                h.receive(address(from.unwrap_or(*of)), &bytes);
            }
            Step::Forge { from, nonce, cookie } => {
                let len = write_response(&mut buf, *nonce, &Cookie::from_bytes(*cookie), &[]).unwrap();
                let bytes = buf[..len].to_vec();
                h.receive(address(*from), &bytes);
            }
            Step::Data { from, of, token, seq, ack, ack_bits, nonce_echo, reliable, unreliable } => {
                let header = DataHeader {
                    token: SessionToken(h.token(*of, *token)),
                    seq: Seq(*seq),
                    ack: Seq(*ack),
                    ack_bits: *ack_bits,
                    nonce_echo: *nonce_echo,
                };
                let bytes = data(&header, reliable, unreliable);
                h.receive(address(*from), &bytes);
            }
            Step::Disconnect { from, of, token, code } => {
                let token = h.token(*of, *token);
                let len = Disconnect { token, code: *code }.write_to(&mut buf).unwrap();
                let bytes = buf[..len].to_vec();
                h.receive(address(*from), &bytes);
            }
            Step::Advance { ms } => h.now += Duration::from_millis(u64::from(*ms)),
            Step::Timeout => {
                if h.listener.poll_timeout().is_some_and(|at| at <= h.now) {
                    h.listener.handle_timeout(h.now, &mut h.inbox);
                    h.events(&[]);
                }
            }
            Step::Send { session, frame, reliable } => {
                if let Some(&id) = h.sessions.get(usize::from(*session) % h.sessions.len().max(1)) {
                    let _ = h.listener.send(id, frame.bytes(), *reliable);
                }
            }
            Step::End { session, code } => {
                if let Some(&id) = h.sessions.get(usize::from(*session) % h.sessions.len().max(1)) {
                    let code = ErrorCode::from_u32(u32::from(*code % 12)).unwrap_or(ErrorCode::Malformed);
                    h.listener.end(id, code).expect("a session the harness saw open and not closed");
                    // No `Closed` event follows an `end`: the caller knows.
                    h.sessions.retain(|&s| s != id);
                }
            }
        }
        h.drain();
    }
});
