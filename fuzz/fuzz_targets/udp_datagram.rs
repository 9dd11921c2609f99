//! The UDP transport's datagram parser and writers, and its handshake cookies.
//!
//! Three kinds of input:
//! - raw bytes, as a socket would deliver them, with any `max_payload`;
//! - a datagram of any kind built from arbitrary fields with the writers, then optionally corrupted at
//!   arbitrary bytes;
//! - a handshake script: cookies issued to arbitrary addresses and nonces, carried through CHALLENGE and
//!   RESPONSE datagrams, checked (as echoed, or altered) while the clock moves and keys rotate.
//!
//! Invariants:
//! - `Datagram::parse` never panics, and what it accepts is canonical: writing the parsed datagram back
//!   gives exactly the input bytes, at most 1200 of them; each item and frame is whole, within
//!   `max_payload`, and the iterators account for every byte;
//! - parse(write(x)) == x for every datagram the writers accept (and the writers refuse only what does
//!   not fit in 1200 bytes or holds more than 255 reliable items);
//! - a cookie verifies exactly when the address (IPv4 and its IPv4-mapped IPv6 form count as one),
//!   port, nonce and cookie bytes are the ones it was issued for, it has not expired, and the key that
//!   made it is the current or the previous one.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use arbitrary::Arbitrary;
use gamewire_proto::{HEADER_LEN, RawFrame};
use gamewire_udp::cookie::{COOKIE_LEN, Cookie, CookieError, CookieKey, Cookies, KEY_LEN};
use gamewire_udp::datagram::{
    Challenge, Connect, DataHeader, DataWriter, Datagram, Disconnect, Kind, MAX_DATAGRAM,
    RELIABLE_PREFIX_LEN, RESPONSE_HEADER_LEN, ReliableItem, SessionToken, WriteError, write_response,
};
use gamewire_udp::seq::Seq;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw { bytes: Vec<u8>, max_payload: MaxPayload },
    Built { datagram: Built, corruption: Vec<(u16, u8)>, max_payload: MaxPayload },
    Handshake { start_secs: u64, lifetime_secs: u8, key: [u8; KEY_LEN], steps: Vec<Step> },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum MaxPayload {
    /// The protocol's default.
    Default,
    /// Small limits, where frames of the input are likely over it.
    Small(u8),
    Any(u32),
}

impl MaxPayload {
    fn get(self) -> u32 {
        match self {
            MaxPayload::Default => 1024,
            MaxPayload::Small(limit) => u32::from(limit),
            MaxPayload::Any(limit) => limit,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct FrameInput {
    packet_id: u32,
    player_id: u32,
    payload: Vec<u8>,
}

impl FrameInput {
    fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.payload.len());
        bytes.extend_from_slice(&self.packet_id.to_le_bytes());
        bytes.extend_from_slice(&self.player_id.to_le_bytes());
        bytes.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&self.payload);
        bytes
    }
}

#[derive(Arbitrary, Debug)]
enum Built {
    Connect {
        client_nonce: u64,
    },
    Challenge {
        client_nonce: u64,
        cookie: [u8; COOKIE_LEN],
    },
    Response {
        client_nonce: u64,
        cookie: [u8; COOKIE_LEN],
        items: Vec<(u16, FrameInput)>,
    },
    Data {
        token: u64,
        seq: u16,
        ack: u16,
        ack_bits: u32,
        nonce_echo: Option<u64>,
        reliable: Vec<(u16, FrameInput)>,
        unreliable: Vec<FrameInput>,
    },
    Disconnect {
        token: u64,
        code: u32,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
    /// An IPv4 address as a dual-stack socket shows it (`::ffff:a.b.c.d`).
    Mapped([u8; 4], u16),
}

impl Addr {
    fn get(self) -> SocketAddr {
        match self {
            Addr::V4(ip, port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port),
            Addr::V6(ip, port) => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port),
            Addr::Mapped(ip, port) => SocketAddr::new(IpAddr::V6(Ipv4Addr::from(ip).to_ipv6_mapped()), port),
        }
    }
}

/// The client as the cookie sees it: the IP as 16 bytes (IPv4 mapped), and the port.
fn identity(addr: SocketAddr) -> ([u8; 16], u16) {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    (ip, addr.port())
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// A CONNECT from `client`: the server answers with a CHALLENGE, the client echoes it in a RESPONSE.
    Connect {
        client: Addr,
        nonce: u64,
    },
    /// The RESPONSE to an earlier CHALLENGE arrives, maybe from elsewhere, with another nonce, or with
    /// a cookie altered at one byte.
    Respond {
        which: u16,
        from: Option<Addr>,
        nonce: Option<u64>,
        flip: Option<(u8, u8)>,
    },
    /// A RESPONSE with a cookie made up by the sender.
    Forge {
        from: Addr,
        nonce: u64,
        cookie: [u8; COOKIE_LEN],
    },
    Advance {
        secs: u16,
    },
    Rotate {
        key: [u8; KEY_LEN],
    },
}

/// A cookie the server issued, and what the model knows about it.
struct Issued {
    client: SocketAddr,
    nonce: u64,
    cookie: Cookie,
    at_secs: u64,
    key: [u8; KEY_LEN],
}

fn check_parsed(bytes: &[u8], max_payload: u32) {
    let Ok(datagram) = Datagram::parse(bytes, max_payload) else { return };
    assert!(bytes.len() <= MAX_DATAGRAM);
    assert_eq!(datagram.kind().code(), bytes[1]);
    let mut again = [0u8; MAX_DATAGRAM];
    let len = datagram.write_to(&mut again).expect("a parsed datagram fits 1200 bytes");
    assert_eq!(&again[..len], bytes, "parsed {datagram:?} writes back differently");

    let check_frame = |frame: RawFrame<'_>| {
        assert_eq!(frame.header().data_length.get() as usize, frame.payload().len());
        assert!(frame.payload().len() <= max_payload as usize, "payload over max_payload");
        HEADER_LEN + frame.payload().len()
    };
    match datagram {
        Datagram::Data(data) => {
            let mut total = data.header().encoded_len();
            let mut count = 0;
            for item in data.reliable() {
                total += RELIABLE_PREFIX_LEN + check_frame(item.frame);
                count += 1;
            }
            assert_eq!(count, data.reliable_count(), "reliable items yielded vs declared");
            assert_eq!(data.reliable().len(), count);
            for frame in data.unreliable() {
                total += check_frame(frame);
            }
            assert_eq!(total, bytes.len(), "items and frames account for every byte");
            assert_eq!(data.is_empty(), total == data.header().encoded_len());
        }
        Datagram::Response(response) => {
            assert_eq!(bytes.len(), MAX_DATAGRAM);
            let (mut total, mut count) = (RESPONSE_HEADER_LEN, 0);
            for item in response.reliable() {
                total += RELIABLE_PREFIX_LEN + check_frame(item.frame);
                count += 1;
            }
            assert_eq!(count, response.reliable_count());
            assert!(bytes[total..].iter().all(|&b| b == 0), "only zero padding after the items");
        }
        Datagram::Connect(_) => assert_eq!(bytes.len(), MAX_DATAGRAM),
        Datagram::Challenge(_) | Datagram::Disconnect(_) => {}
    }
}

fn raw(bytes: &[u8]) -> RawFrame<'_> {
    RawFrame::split_from(bytes).expect("a whole frame").0
}

/// Writes `built`; returns the bytes, or `None` when the writers refuse it (checked to be right).
fn build(built: &Built) -> Option<Vec<u8>> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let len = match built {
        Built::Connect { client_nonce } => {
            let connect = Connect { client_nonce: *client_nonce };
            let len = connect.write_to(&mut buf).unwrap();
            assert_eq!(Datagram::parse(&buf[..len], 0), Ok(Datagram::Connect(connect)));
            len
        }
        Built::Challenge { client_nonce, cookie } => {
            let challenge = Challenge { client_nonce: *client_nonce, cookie: Cookie::from_bytes(*cookie) };
            let len = challenge.write_to(&mut buf).unwrap();
            assert_eq!(Datagram::parse(&buf[..len], 0), Ok(Datagram::Challenge(challenge)));
            len
        }
        Built::Disconnect { token, code } => {
            let disconnect = Disconnect { token: *token, code: *code };
            let len = disconnect.write_to(&mut buf).unwrap();
            assert_eq!(Datagram::parse(&buf[..len], 0), Ok(Datagram::Disconnect(disconnect)));
            len
        }
        Built::Response { client_nonce, cookie, items } => {
            let cookie = Cookie::from_bytes(*cookie);
            let frames: Vec<Vec<u8>> = items.iter().map(|(_, frame)| frame.bytes()).collect();
            let items: Vec<ReliableItem<'_>> = items
                .iter()
                .zip(&frames)
                .map(|((id, _), bytes)| ReliableItem { id: Seq(*id), frame: raw(bytes) })
                .collect();
            let needed: usize =
                RESPONSE_HEADER_LEN + frames.iter().map(|f| RELIABLE_PREFIX_LEN + f.len()).sum::<usize>();
            match write_response(&mut buf, *client_nonce, &cookie, &items) {
                Ok(len) => {
                    assert!(needed <= MAX_DATAGRAM && items.len() <= 255);
                    let Ok(Datagram::Response(response)) = Datagram::parse(&buf[..len], u32::MAX) else {
                        panic!("a written RESPONSE does not parse")
                    };
                    assert_eq!((response.client_nonce(), response.cookie()), (*client_nonce, &cookie));
                    assert!(response.reliable().eq(items.iter().copied()), "RESPONSE items");
                    len
                }
                Err(WriteError::TooManyReliable) => {
                    assert!(items.len() > 255);
                    return None;
                }
                Err(WriteError::NoRoom { .. }) => {
                    assert!(needed > MAX_DATAGRAM, "refused {needed} bytes");
                    return None;
                }
                Err(other) => panic!("{other}"),
            }
        }
        Built::Data { token, seq, ack, ack_bits, nonce_echo, reliable, unreliable } => {
            let header = DataHeader {
                token: SessionToken(*token),
                seq: Seq(*seq),
                ack: Seq(*ack),
                ack_bits: *ack_bits,
                nonce_echo: *nonce_echo,
            };
            let reliable: Vec<(Seq, Vec<u8>)> =
                reliable.iter().map(|(id, frame)| (Seq(*id), frame.bytes())).collect();
            let unreliable: Vec<Vec<u8>> = unreliable.iter().map(FrameInput::bytes).collect();
            let mut writer = DataWriter::new(&mut buf, &header).unwrap();
            let mut sent_reliable = Vec::new();
            for (id, frame) in &reliable {
                let fits = writer.remaining() >= RELIABLE_PREFIX_LEN + frame.len();
                match writer.push_reliable(*id, raw(frame)) {
                    Ok(()) => sent_reliable.push((*id, frame.as_slice())),
                    Err(WriteError::NoRoom { .. }) => assert!(!fits),
                    Err(WriteError::TooManyReliable) => assert_eq!(sent_reliable.len(), 255),
                    Err(other) => panic!("{other}"),
                }
            }
            let mut sent_unreliable = Vec::new();
            for frame in &unreliable {
                let fits = writer.remaining() >= frame.len();
                match writer.push_unreliable(raw(frame)) {
                    Ok(()) => sent_unreliable.push(frame.as_slice()),
                    Err(WriteError::NoRoom { .. }) => assert!(!fits),
                    Err(other) => panic!("{other}"),
                }
            }
            let len = writer.finish();
            let Ok(Datagram::Data(data)) = Datagram::parse(&buf[..len], u32::MAX) else {
                panic!("a written DATA does not parse")
            };
            assert_eq!(data.header(), header);
            let got: Vec<(Seq, Vec<u8>)> = data
                .reliable()
                .map(|item| (item.id, [item.frame.header_bytes(), item.frame.payload()].concat()))
                .collect();
            let sent: Vec<(Seq, Vec<u8>)> = sent_reliable.iter().map(|(id, f)| (*id, f.to_vec())).collect();
            assert_eq!(got, sent, "reliable items");
            let got: Vec<Vec<u8>> =
                data.unreliable().map(|frame| [frame.header_bytes(), frame.payload()].concat()).collect();
            let sent: Vec<Vec<u8>> = sent_unreliable.iter().map(|f| f.to_vec()).collect();
            assert_eq!(got, sent, "unreliable frames");
            len
        }
    };
    Some(buf[..len].to_vec())
}

fn handshake(start_secs: u64, lifetime_secs: u8, key: [u8; KEY_LEN], steps: &[Step]) {
    let lifetime = u64::from(lifetime_secs % 60) + 1;
    let mut cookies = Cookies::new(CookieKey::from_bytes(key)).with_lifetime(Duration::from_secs(lifetime));
    let (mut current, mut previous) = (key, None::<[u8; KEY_LEN]>);
    // Anywhere in 2^40 s, so the 32-bit expiry wraps in some runs.
    let start = start_secs % (1 << 40);
    let mut now_secs = start;
    let mut issued: Vec<Issued> = Vec::new();
    let mut buf = [0u8; MAX_DATAGRAM];

    for step in steps {
        let now = Duration::from_secs(now_secs);
        match *step {
            Step::Connect { client, nonce } => {
                let client = client.get();
                let mut connect = [0u8; MAX_DATAGRAM];
                let len = Connect { client_nonce: nonce }.write_to(&mut connect).unwrap();
                let Ok(Datagram::Connect(connect)) = Datagram::parse(&connect[..len], 1024) else { panic!() };
                let cookie = cookies.issue(now, client, connect.client_nonce);
                // Server → client, then the client echoes it.
                let len = Challenge { client_nonce: nonce, cookie }.write_to(&mut buf).unwrap();
                assert!(len < MAX_DATAGRAM, "CHALLENGE is smaller than the CONNECT it answers");
                let Ok(Datagram::Challenge(challenge)) = Datagram::parse(&buf[..len], 1024) else { panic!() };
                assert_eq!(challenge.cookie, cookie);
                assert_eq!(cookies.verify(now, client, nonce, &challenge.cookie), Ok(()), "fresh cookie");
                issued.push(Issued { client, nonce, cookie, at_secs: now_secs, key: current });
            }
            Step::Respond { which, from, nonce, flip } => {
                if issued.is_empty() {
                    continue;
                }
                let original = &issued[usize::from(which) % issued.len()];
                let from = from.map_or(original.client, Addr::get);
                let nonce = nonce.unwrap_or(original.nonce);
                let mut cookie_bytes = original.cookie.to_bytes();
                if let Some((at, xor)) = flip {
                    cookie_bytes[usize::from(at) % COOKIE_LEN] ^= xor;
                }
                let len = write_response(&mut buf, nonce, &Cookie::from_bytes(cookie_bytes), &[]).unwrap();
                let Ok(Datagram::Response(response)) = Datagram::parse(&buf[..len], 1024) else { panic!() };
                let result = cookies.verify(now, from, response.client_nonce(), response.cookie());

                let same_client = identity(from) == identity(original.client);
                let same =
                    same_client && nonce == original.nonce && cookie_bytes == original.cookie.to_bytes();
                let fresh = now_secs - original.at_secs <= lifetime;
                let key_kept = original.key == current || previous == Some(original.key);
                if same && fresh && key_kept {
                    assert_eq!(result, Ok(()), "a valid cookie was refused");
                } else if same && !fresh {
                    assert_eq!(result, Err(CookieError::Expired));
                } else {
                    assert!(result.is_err(), "accepted: same {same}, fresh {fresh}, key kept {key_kept}");
                }
            }
            Step::Forge { from, nonce, cookie } => {
                let from = from.get();
                let forged = Cookie::from_bytes(cookie);
                let genuine = issued.iter().any(|i| {
                    i.cookie == forged
                        && i.nonce == nonce
                        && identity(i.client) == identity(from)
                        && (i.key == current || previous == Some(i.key))
                });
                if !genuine {
                    assert!(cookies.verify(now, from, nonce, &forged).is_err(), "a forged cookie verified");
                }
            }
            // Bounded so that the model's plain subtraction and the cookie's 32-bit wrapping agree.
            Step::Advance { secs } if now_secs - start < 1 << 31 => now_secs += u64::from(secs),
            Step::Advance { .. } => {}
            Step::Rotate { key } => {
                cookies.rotate(CookieKey::from_bytes(key));
                previous = Some(current);
                current = key;
            }
        }
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { bytes, max_payload } => check_parsed(&bytes, max_payload.get()),
        Input::Built { datagram, corruption, max_payload } => {
            let Some(mut bytes) = build(&datagram) else { return };
            check_parsed(&bytes, u32::MAX);
            check_parsed(&bytes, max_payload.get());
            if !corruption.is_empty() {
                for (at, value) in corruption {
                    let at = usize::from(at) % bytes.len();
                    bytes[at] = value;
                }
                check_parsed(&bytes, max_payload.get());
            }
            if let Some(kind) = Kind::from_u8(bytes[1]) {
                assert!(kind.is_client_sendable() || kind.is_server_sendable());
            }
        }
        Input::Handshake { start_secs, lifetime_secs, key, steps } => {
            handshake(start_secs, lifetime_secs, key, &steps)
        }
    }
});
