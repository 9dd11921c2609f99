//! Amplification: whatever an attacker sends with an unproved address as its source, the listener
//! sends that address no more bytes than it received from it (docs/protocol.md §10.3, §10.6).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gamewire_proto::{Packet, RawFrame, encode_frame_to_vec};
use gamewire_udp::cookie::{COOKIE_LEN, Cookie};
use gamewire_udp::datagram::{
    CONNECT_LEN, Connect, DataHeader, DataWriter, Datagram, Disconnect, MAX_DATAGRAM, ReliableItem,
    SessionToken, write_response,
};
use gamewire_udp::listener::{Event, Inbox, Listener, ListenerConfig, Transmit};
use gamewire_udp::seq::Seq;
use proptest::prelude::*;

/// Addresses the attacker puts as the source of its datagrams, and never receives at.
fn victims() -> [SocketAddr; 3] {
    ["192.0.2.10:1000", "192.0.2.10:1001", "[2001:db8::10]:1000"].map(|text| text.parse().unwrap())
}

/// The attacker's own address: it completes a handshake there, so it knows a valid cookie (for
/// that address) and a session token.
fn own() -> SocketAddr {
    "198.51.100.99:4000".parse().unwrap()
}

/// Where a forged datagram's token or cookie comes from.
#[derive(Clone, Copy, Debug)]
enum Secret {
    /// What the attacker legitimately holds for its own address.
    Own,
    /// Made up.
    Random(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Connect {
        victim: usize,
        nonce: u64,
    },
    /// A RESPONSE from a victim, with the attacker's own cookie (and nonce) or a made-up one.
    Response {
        victim: usize,
        cookie: Secret,
        nonce: u64,
        first_id: u16,
    },
    Data {
        victim: usize,
        token: Secret,
        seq: u16,
        items: u8,
        unreliable: u8,
        echo: bool,
    },
    Disconnect {
        victim: usize,
        token: Secret,
        code: u32,
    },
    Garbage {
        victim: usize,
        bytes: Vec<u8>,
    },
    /// The attacker's own session sends something, and the listener answers it (that address is
    /// proved: it may get more than it sent).
    OwnData {
        seq: u16,
        items: u8,
    },
    Wait {
        millis: u16,
    },
}

fn secret() -> impl Strategy<Value = Secret> {
    prop_oneof![Just(Secret::Own), any::<u64>().prop_map(Secret::Random)]
}

fn op() -> impl Strategy<Value = Op> {
    let victim = 0usize..3;
    prop_oneof![
        (victim.clone(), any::<u64>()).prop_map(|(victim, nonce)| Op::Connect { victim, nonce }),
        (victim.clone(), secret(), any::<u64>(), 0u16..3)
            .prop_map(|(victim, cookie, nonce, first_id)| Op::Response { victim, cookie, nonce, first_id }),
        (victim.clone(), secret(), any::<u16>(), 0u8..4, 0u8..4, any::<bool>()).prop_map(
            |(victim, token, seq, items, unreliable, echo)| Op::Data {
                victim,
                token,
                seq,
                items,
                unreliable,
                echo
            }
        ),
        (victim.clone(), secret(), 0u32..12).prop_map(|(victim, token, code)| Op::Disconnect {
            victim,
            token,
            code
        }),
        (victim, prop::collection::vec(any::<u8>(), 0..1300)).prop_map(|(victim, mut bytes)| {
            // Mostly well-formed preambles, so the kinds' own checks are reached.
            if bytes.len() >= 2 && bytes[0] % 4 != 0 {
                bytes[0] = 1;
                bytes[1] = 1 + bytes[1] % 5;
            }
            Op::Garbage { victim, bytes }
        }),
        (any::<u16>(), 0u8..4).prop_map(|(seq, items)| Op::OwnData { seq, items }),
        (0u16..3000).prop_map(|millis| Op::Wait { millis }),
    ]
}

struct Attack {
    listener: Listener<Vec<u8>>,
    inbox: Inbox,
    transmit: Transmit<Vec<u8>>,
    now: Instant,
    received: HashMap<SocketAddr, usize>,
    sent: HashMap<SocketAddr, usize>,
    own_nonce: u64,
    own_cookie: Cookie,
    own_token: SessionToken,
}

impl Attack {
    /// A listener, and the attacker's own session on it.
    fn new() -> Attack {
        let now = Instant::now();
        let mut attack = Attack {
            listener: Listener::new(ListenerConfig::default(), now).unwrap(),
            inbox: Inbox::new(),
            transmit: Transmit::new(),
            now,
            received: HashMap::new(),
            sent: HashMap::new(),
            own_nonce: 0x0bad,
            own_cookie: Cookie::from_bytes([0; COOKIE_LEN]),
            own_token: SessionToken(0),
        };
        let mut buf = vec![0; CONNECT_LEN];
        Connect { client_nonce: attack.own_nonce }.write_to(&mut buf).unwrap();
        let replies = attack.receive(own(), &buf);
        let Ok(Datagram::Challenge(challenge)) = Datagram::parse(&replies[0], 1024) else { panic!() };
        attack.own_cookie = challenge.cookie;
        // The game answers the HELLO at once: the DATA carrying it tells the token.
        let replies = attack.receive(own(), &response(attack.own_nonce, &challenge.cookie, 0));
        assert_eq!(attack.listener.session_count(), 1);
        let Ok(Datagram::Data(data)) = Datagram::parse(&replies[0], 1024) else { panic!() };
        attack.own_token = data.token();
        attack
    }

    /// Delivers a datagram and returns what the listener sent to anyone in answer.
    fn receive(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
        *self.received.entry(from).or_default() += bytes.len();
        self.listener.receive(self.now, from, bytes, &mut self.inbox);
        // The game answers its own session's frames, as a real one would.
        let frames: Vec<_> = self
            .inbox
            .events(bytes)
            .filter_map(|event| match event {
                Event::Frame { session, .. } => Some(session),
                _ => None,
            })
            .collect();
        for session in frames {
            let _ = self.listener.send(session, encode_frame_to_vec(1, &Packet::Chat { text: "ok" }), true);
        }
        self.transmits()
    }

    fn transmits(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while self.listener.poll_transmit(self.now, &mut self.transmit) {
            let mut bytes = vec![0; self.transmit.len()];
            self.transmit.copy_to(&mut bytes);
            *self.sent.entry(self.transmit.destination()).or_default() += bytes.len();
            out.push(bytes);
        }
        out
    }

    fn secret_token(&self, secret: Secret) -> u64 {
        match secret {
            Secret::Own => self.own_token.0,
            Secret::Random(token) => token,
        }
    }

    fn run(&mut self, op: &Op) {
        let victims = victims();
        match *op {
            Op::Connect { victim, nonce } => {
                let mut buf = vec![0; CONNECT_LEN];
                Connect { client_nonce: nonce }.write_to(&mut buf).unwrap();
                self.receive(victims[victim], &buf);
            }
            Op::Response { victim, cookie, nonce, first_id } => {
                let (cookie, nonce) = match cookie {
                    Secret::Own => (self.own_cookie, self.own_nonce),
                    Secret::Random(bits) => {
                        let mut bytes = [0; COOKIE_LEN];
                        bytes[..8].copy_from_slice(&bits.to_le_bytes());
                        (Cookie::from_bytes(bytes), nonce)
                    }
                };
                self.receive(victims[victim], &response(nonce, &cookie, first_id));
            }
            Op::Data { victim, token, seq, items, unreliable, echo } => {
                let token = SessionToken(self.secret_token(token));
                let nonce_echo = echo.then_some(self.own_nonce);
                let header = DataHeader { token, seq: Seq(seq), ack: Seq(0), ack_bits: u32::MAX, nonce_echo };
                self.receive(victims[victim], &data(header, items, unreliable));
            }
            Op::Disconnect { victim, token, code } => {
                let mut buf = [0; 14];
                Disconnect { token: self.secret_token(token), code }.write_to(&mut buf).unwrap();
                self.receive(victims[victim], &buf);
            }
            Op::Garbage { victim, ref bytes } => {
                self.receive(victims[victim], bytes);
            }
            Op::OwnData { seq, items } => {
                let header = DataHeader {
                    token: self.own_token,
                    seq: Seq(seq),
                    ack: Seq(0),
                    ack_bits: 0,
                    nonce_echo: None,
                };
                self.receive(own(), &data(header, items, 0));
            }
            Op::Wait { millis } => {
                self.now += Duration::from_millis(u64::from(millis));
                self.listener.handle_timeout(self.now, &mut self.inbox);
                self.transmits();
            }
        }
    }
}

fn chat() -> Vec<u8> {
    encode_frame_to_vec(0, &Packet::Chat { text: "hi" })
}

fn response(nonce: u64, cookie: &Cookie, first_id: u16) -> Vec<u8> {
    let hello = encode_frame_to_vec(0, &Packet::Hello { name: "mallory" });
    let (frame, _) = RawFrame::split_from(&hello).unwrap();
    let mut buf = vec![0; MAX_DATAGRAM];
    write_response(&mut buf, nonce, cookie, &[ReliableItem { id: Seq(first_id), frame }]).unwrap();
    buf
}

fn data(header: DataHeader, items: u8, unreliable: u8) -> Vec<u8> {
    let frame = chat();
    let (frame, _) = RawFrame::split_from(&frame).unwrap();
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut writer = DataWriter::new(&mut buf, &header).unwrap();
    for id in 0..items {
        writer.push_reliable(Seq(u16::from(id) * 7), frame).unwrap();
    }
    for _ in 0..unreliable {
        writer.push_unreliable(frame).unwrap();
    }
    let len = writer.finish();
    buf.truncate(len);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any sequence of datagrams from addresses that never proved themselves (spoofed sources),
    /// mixed with the attacker's own proved session and with time passing: after every step, the
    /// bytes sent to each such address are at most the bytes received from it.
    #[test]
    fn an_unproved_address_never_gets_more_bytes_than_it_sent(ops in prop::collection::vec(op(), 1..60)) {
        let mut attack = Attack::new();
        for op in &ops {
            attack.run(op);
            for victim in victims() {
                let (sent, received) = (attack.sent.get(&victim).copied().unwrap_or(0), attack.received.get(&victim).copied().unwrap_or(0));
                prop_assert!(sent <= received, "{victim}: sent {sent} for {received} received, after {op:?}");
            }
        }
        // No victim ever got a session.
        prop_assert!(attack.listener.sessions().all(|session| attack.listener.peer(session) == Some(own())));
    }
}
