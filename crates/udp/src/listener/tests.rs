//! Unit tests of the listener: one per rule of docs/protocol.md §10.3 and §10.4, and the limits.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, Packet, RawFrame, encode_frame_to_vec};

use super::*;
use crate::cookie::{Cookie, CookieKey};
use crate::datagram::{
    CONNECT_LEN, DATA_HEADER_LEN, DISCONNECT_LEN, DataWriter, MAX_DATAGRAM, NONCE_ECHO_LEN, ReliableItem,
    write_response,
};

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn raw(bytes: &[u8]) -> RawFrame<'_> {
    RawFrame::split_from(bytes).unwrap().0
}

fn hello() -> Vec<u8> {
    encode_frame_to_vec(0, &Packet::Hello { name: "ada" })
}

fn chat(text: &str) -> Vec<u8> {
    encode_frame_to_vec(0, &Packet::Chat { text })
}

/// An event with its frame copied out, to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Opened(SessionId, SocketAddr),
    Frame(SessionId, Vec<u8>, bool),
    Closed(SessionId, CloseReason),
}

/// What a DATA from the listener holds.
#[derive(Debug)]
struct Data {
    header: DataHeader,
    reliable: Vec<(Seq, Vec<u8>)>,
    unreliable: Vec<Vec<u8>>,
}

/// A parsed datagram from the listener.
#[derive(Debug)]
enum Out {
    Challenge(Challenge),
    Data(Data),
    Disconnect(Disconnect),
}

impl Out {
    fn data(self) -> Data {
        match self {
            Out::Data(data) => data,
            other => panic!("a DATA, not {other:?}"),
        }
    }

    fn disconnect(self) -> Disconnect {
        match self {
            Out::Disconnect(bye) => bye,
            other => panic!("a DISCONNECT, not {other:?}"),
        }
    }

    fn challenge(self) -> Challenge {
        match self {
            Out::Challenge(challenge) => challenge,
            other => panic!("a CHALLENGE, not {other:?}"),
        }
    }
}

/// A listener of `Vec<u8>` frames under a known cookie key, with a clock of its own.
struct Harness {
    listener: Listener<Vec<u8>>,
    cookies: Cookies,
    start: Instant,
    now: Instant,
    inbox: Inbox,
    transmit: Transmit<Vec<u8>>,
    /// Bytes received from and sent to each address, for the amplification checks.
    received: HashMap<SocketAddr, usize>,
    sent: HashMap<SocketAddr, usize>,
}

impl Harness {
    fn new(config: ListenerConfig) -> Harness {
        let cookies = Cookies::new(CookieKey::from_bytes([7; 16]));
        let start = Instant::now();
        Harness {
            listener: Listener::with_cookies(config, cookies.clone(), start),
            cookies,
            start,
            now: start,
            inbox: Inbox::new(),
            transmit: Transmit::new(),
            received: HashMap::new(),
            sent: HashMap::new(),
        }
    }

    fn advance(&mut self, by: Duration) -> Vec<Seen> {
        self.now += by;
        self.listener.handle_timeout(self.now, &mut self.inbox);
        self.seen(&[])
    }

    fn receive(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Seen> {
        *self.received.entry(from).or_default() += bytes.len();
        self.listener.receive(self.now, from, bytes, &mut self.inbox);
        self.seen(bytes)
    }

    fn seen(&self, datagram: &[u8]) -> Vec<Seen> {
        self.inbox
            .events(datagram)
            .map(|event| match event {
                Event::Opened { session, peer } => Seen::Opened(session, peer),
                Event::Frame { session, frame, reliable } => {
                    Seen::Frame(session, [frame.header_bytes(), frame.payload()].concat(), reliable)
                }
                Event::Closed { session, reason } => Seen::Closed(session, reason),
            })
            .collect()
    }

    /// Every datagram the listener has to send now, parsed.
    fn transmits(&mut self) -> Vec<(SocketAddr, Out)> {
        let mut out = Vec::new();
        while self.listener.poll_transmit(self.now, &mut self.transmit) {
            let mut buf = [0; MAX_DATAGRAM];
            let len = self.transmit.copy_to(&mut buf);
            assert_eq!(len, self.transmit.len());
            assert!(len <= MAX_DATAGRAM);
            let to = self.transmit.destination();
            *self.sent.entry(to).or_default() += len;
            let parsed = match Datagram::parse(&buf[..len], u32::MAX) {
                Ok(Datagram::Challenge(challenge)) => Out::Challenge(challenge),
                Ok(Datagram::Disconnect(bye)) => Out::Disconnect(bye),
                Ok(Datagram::Data(data)) => Out::Data(Data {
                    header: data.header(),
                    reliable: data.reliable().map(|item| (item.id, bytes_of(item.frame))).collect(),
                    unreliable: data.unreliable().map(bytes_of).collect(),
                }),
                other => panic!("the listener sent {other:?}"),
            };
            out.push((to, parsed));
        }
        out
    }

    /// The one datagram the listener has to send now.
    fn transmit_one(&mut self) -> (SocketAddr, Out) {
        let mut all = self.transmits();
        assert_eq!(all.len(), 1, "{all:?}");
        all.pop().unwrap()
    }

    fn cookie(&self, from: SocketAddr, nonce: u64) -> Cookie {
        self.cookies.issue(self.now - self.start, from, nonce)
    }

    /// CONNECT, CHALLENGE, RESPONSE with `items`: the new session, from its `Opened` event.
    fn open_with(&mut self, from: SocketAddr, nonce: u64, items: &[(u16, &[u8])]) -> SessionId {
        let challenge = match self.receive(from, &connect(nonce))[..] {
            [] => self.transmit_one().1.challenge(),
            ref other => panic!("{other:?}"),
        };
        assert_eq!(challenge.client_nonce, nonce);
        let events = self.receive(from, &response(nonce, &challenge.cookie, items));
        let opened = events.iter().find_map(|event| match *event {
            Seen::Opened(session, peer) if peer == from => Some(session),
            _ => None,
        });
        opened.unwrap_or_else(|| panic!("no session: {events:?}"))
    }

    fn open(&mut self, from: SocketAddr, nonce: u64) -> SessionId {
        self.open_with(from, nonce, &[(0, &hello())])
    }

    /// Opens a session and gets its token from the listener's first DATA (a pure ack).
    fn open_and_learn_token(&mut self, from: SocketAddr, nonce: u64) -> (SessionId, SessionToken) {
        let session = self.open(from, nonce);
        assert!(self.transmits().is_empty(), "the ack waits for the ack delay");
        self.advance(ms(20));
        let (to, out) = self.transmit_one();
        let data = out.data();
        assert_eq!((to, data.header.nonce_echo), (from, Some(nonce)));
        (session, data.header.token)
    }
}

fn bytes_of(frame: RawFrame<'_>) -> Vec<u8> {
    [frame.header_bytes(), frame.payload()].concat()
}

fn connect(nonce: u64) -> Vec<u8> {
    let mut buf = vec![0; CONNECT_LEN];
    Connect { client_nonce: nonce }.write_to(&mut buf).unwrap();
    buf
}

fn response(nonce: u64, cookie: &Cookie, items: &[(u16, &[u8])]) -> Vec<u8> {
    let items: Vec<_> =
        items.iter().map(|&(id, frame)| ReliableItem { id: Seq(id), frame: raw(frame) }).collect();
    let mut buf = vec![0; MAX_DATAGRAM];
    let len = write_response(&mut buf, nonce, cookie, &items).unwrap();
    buf.truncate(len);
    buf
}

/// A client DATA: `seq`, acking nothing, with `reliable` items and `unreliable` frames.
fn data(token: SessionToken, seq: u16, reliable: &[(u16, &[u8])], unreliable: &[&[u8]]) -> Vec<u8> {
    data_with(
        DataHeader { token, seq: Seq(seq), ack: Seq(u16::MAX), ack_bits: 0, nonce_echo: None },
        reliable,
        unreliable,
    )
}

fn data_with(header: DataHeader, reliable: &[(u16, &[u8])], unreliable: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0; MAX_DATAGRAM];
    let mut writer = DataWriter::new(&mut buf, &header).unwrap();
    for &(id, frame) in reliable {
        writer.push_reliable(Seq(id), raw(frame)).unwrap();
    }
    for frame in unreliable {
        writer.push_unreliable(raw(frame)).unwrap();
    }
    let len = writer.finish();
    buf.truncate(len);
    buf
}

fn disconnect(token: u64, code: u32) -> Vec<u8> {
    let mut buf = vec![0; DISCONNECT_LEN];
    Disconnect { token, code }.write_to(&mut buf).unwrap();
    buf
}

const CLIENT: &str = "198.51.100.7:40000";

// --- 10.3 the handshake ---------------------------------------------------------------------------

#[test]
fn a_connect_is_answered_with_a_challenge_and_nothing_is_remembered() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    assert!(h.receive(client, &connect(42)).is_empty());
    let (to, out) = h.transmit_one();
    let challenge = out.challenge();
    assert_eq!((to, challenge.client_nonce), (client, 42));
    assert_eq!(h.cookies.verify(h.now - h.start, client, 42, &challenge.cookie), Ok(()));
    assert_eq!(h.listener.session_count(), 0);
    assert!(h.listener.peers.is_empty(), "a CONNECT leaves no state");
    assert_eq!((h.received[&client], h.sent[&client]), (1200, 30));
}

#[test]
fn a_response_opens_a_session_whose_reliable_items_arrive_in_id_order() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (first, second) = (chat("one"), chat("two"));
    let challenge = {
        h.receive(client, &connect(1));
        h.transmit_one().1.challenge()
    };
    // Message 2 before 1: held back, then delivered in order.
    let events =
        h.receive(client, &response(1, &challenge.cookie, &[(0, &hello()), (2, &second), (1, &first)]));
    let Some(&Seen::Opened(session, _)) = events.first() else { panic!("{events:?}") };
    assert_eq!(
        events[1..],
        [
            Seen::Frame(session, hello(), true),
            Seen::Frame(session, first.clone(), true),
            Seen::Frame(session, second.clone(), true)
        ]
    );
    assert_eq!(h.listener.session_count(), 1);
    // The server's first DATA acknowledges them by existing: it carries the echo of the nonce.
    h.listener.send(session, chat("welcome"), true).unwrap();
    let data = h.transmit_one().1.data();
    assert_eq!(data.header.nonce_echo, Some(1));
    assert_eq!(data.reliable, [(Seq(0), chat("welcome"))]);
}

#[test]
fn a_resent_response_is_answered_with_one_data_of_what_is_unacknowledged_and_no_second_session() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let challenge = {
        h.receive(client, &connect(9));
        h.transmit_one().1.challenge()
    };
    let resp = response(9, &challenge.cookie, &[(0, &hello())]);
    let Some(&Seen::Opened(session, _)) = h.receive(client, &resp).first() else { panic!() };
    let welcome = chat("welcome");
    h.listener.send(session, welcome.clone(), true).unwrap();
    h.listener.send(session, chat("enter 1"), true).unwrap();
    let lost = h.transmit_one().1.data();
    assert_eq!(lost.reliable.len(), 2);

    // The first DATA was lost; the client sends its RESPONSE again, 100 ms later: before any resend
    // timer, the answer carries both messages again, the WELCOME first.
    h.now += ms(100);
    assert!(h.receive(client, &resp).is_empty(), "no event: not a new session");
    let (to, out) = h.transmit_one();
    let answer = out.data();
    assert_eq!(to, client);
    assert_eq!(answer.header.nonce_echo, Some(9));
    assert_eq!(answer.header.token, lost.header.token);
    assert_eq!(answer.reliable, [(Seq(0), welcome), (Seq(1), chat("enter 1"))]);
    assert_eq!(h.listener.session_count(), 1);
    assert_eq!(h.listener.stats().resent_responses, 1);

    // Every resent RESPONSE gets one DATA, never more bytes than it had.
    for _ in 0..3 {
        h.receive(client, &resp);
        let out = h.transmits();
        assert_eq!(out.len(), 1);
    }
    assert!(h.sent[&client] <= h.received[&client]);
}

#[test]
fn a_response_with_another_nonce_ends_the_old_session_as_on_eof_and_opens_a_new_one() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let old = h.open(client, 1);
    let challenge = {
        h.receive(client, &connect(2));
        h.transmit_one().1.challenge()
    };
    let events = h.receive(client, &response(2, &challenge.cookie, &[(0, &hello())]));
    let Seen::Opened(new, peer) = events[1] else { panic!("{events:?}") };
    assert_eq!(events[0], Seen::Closed(old, CloseReason::Restarted));
    assert_eq!(events[2], Seen::Frame(new, hello(), true));
    assert_ne!(old, new);
    assert_eq!((peer, h.listener.session_count()), (client, 1));
    assert!(h.transmits().is_empty(), "nothing goes to the old session: EOF, no linger");
    assert!(matches!(h.listener.send(old, chat("late"), true), Err(SendError::UnknownSession(_))));
}

#[test]
fn a_full_server_refuses_with_disconnect_server_full_carrying_the_nonce() {
    let mut config = ListenerConfig::default();
    config.max_sessions(1);
    let mut h = Harness::new(config);
    h.open(addr("198.51.100.1:1000"), 1);
    let late = addr("198.51.100.2:1000");

    // A CONNECT is refused at once, saving the client a round trip.
    h.receive(late, &connect(5));
    let (to, out) = h.transmit_one();
    assert_eq!((to, out.disconnect()), (late, Disconnect { token: 5, code: ErrorCode::ServerFull.code() }));

    // A RESPONSE with a cookie from before the server filled up: refused too, no session.
    let cookie = h.cookie(late, 5);
    assert!(h.receive(late, &response(5, &cookie, &[(0, &hello())])).is_empty());
    let (to, out) = h.transmit_one();
    assert_eq!((to, out.disconnect()), (late, Disconnect { token: 5, code: ErrorCode::ServerFull.code() }));
    assert_eq!(h.listener.session_count(), 1);
    assert_eq!(h.listener.stats().refused_full, 2);
    assert!(h.sent[&late] <= h.received[&late]);
}

#[test]
fn the_per_ip_cap_refuses_one_more_session_from_an_ip_and_spares_loopback_unless_capped() {
    let mut config = ListenerConfig::default();
    config.max_sessions_per_ip(2);
    let mut h = Harness::new(config.clone());
    for port in [1, 2] {
        h.open(addr(&format!("203.0.113.5:{port}")), port);
    }
    let third = addr("203.0.113.5:3");
    h.receive(third, &connect(3));
    assert_eq!(h.transmit_one().1.disconnect().code, ErrorCode::ServerFull.code());
    let cookie = h.cookie(third, 3);
    h.receive(third, &response(3, &cookie, &[(0, &hello())]));
    assert_eq!(h.transmit_one().1.disconnect(), Disconnect { token: 3, code: ErrorCode::ServerFull.code() });
    h.open(addr("203.0.113.6:3"), 4); // another IP is not affected
    // A client at the cap may still start over from one of its ports: its old session makes room.
    let second = h.open(addr("203.0.113.5:2"), 22);
    assert_eq!(h.listener.session_count(), 3);

    // Loopback: exempt by default, capped on request.
    for port in 1..=3u64 {
        h.open(addr(&format!("127.0.0.1:{port}")), 100 + port);
    }
    let mut capped = config;
    capped.cap_loopback(true);
    let mut h = Harness::new(capped);
    h.open(addr("127.0.0.1:1"), 1);
    h.open(addr("127.0.0.1:2"), 2);
    h.receive(addr("127.0.0.1:3"), &connect(3));
    assert_eq!(h.transmit_one().1.disconnect().code, ErrorCode::ServerFull.code());
    let _ = second;
}

#[test]
fn a_bad_cookie_is_dropped_without_a_reply() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let good = h.cookie(client, 5);
    let mut forged = good.to_bytes();
    forged[10] ^= 1;
    let other_port = h.cookie(addr("198.51.100.7:40001"), 5);
    let other_nonce = h.cookie(client, 6);
    for cookie in [Cookie::from_bytes(forged), other_port, other_nonce] {
        assert!(h.receive(client, &response(5, &cookie, &[(0, &hello())])).is_empty());
    }
    // Expired: 15 s is the lifetime.
    h.now += Duration::from_secs(16);
    assert!(h.receive(client, &response(5, &good, &[(0, &hello())])).is_empty());
    assert!(h.transmits().is_empty());
    assert_eq!((h.listener.stats().dropped_cookie, h.listener.session_count()), (4, 0));
}

#[test]
fn a_response_whose_first_item_is_not_message_0_is_dropped() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let cookie = h.cookie(client, 5);
    assert!(h.receive(client, &response(5, &cookie, &[(1, &hello())])).is_empty());
    assert!(h.receive(client, &response(5, &cookie, &[])).is_empty(), "no item at all");
    assert!(h.transmits().is_empty());
    assert_eq!(h.listener.session_count(), 0);
    // The same cookie with a HELLO as message 0 works.
    assert!(matches!(h.receive(client, &response(5, &cookie, &[(0, &hello())]))[0], Seen::Opened(..)));
}

#[test]
fn a_datagram_with_the_wrong_token_or_address_is_dropped_without_a_reply() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    let wrong = SessionToken(token.0 ^ 1);
    assert!(h.receive(client, &data(wrong, 0, &[(1, &chat("x"))], &[])).is_empty());
    assert!(h.receive(client, &disconnect(wrong.0, 0)).is_empty());
    // The right token from another port.
    let elsewhere = addr("198.51.100.7:40001");
    assert!(h.receive(elsewhere, &data(token, 0, &[(1, &chat("x"))], &[])).is_empty());
    assert!(h.receive(elsewhere, &disconnect(token.0, 0)).is_empty());
    assert!(h.transmits().is_empty());
    assert_eq!(h.listener.stats().dropped_unmatched, 4);
    assert_eq!(h.listener.peer(session), Some(client), "still open");
    // The right token and address: delivered.
    assert_eq!(
        h.receive(client, &data(token, 0, &[(1, &chat("x"))], &[])),
        [Seen::Frame(session, chat("x"), true)]
    );
}

#[test]
fn a_client_data_with_the_nonce_echo_is_dropped() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (_, token) = h.open_and_learn_token(client, 5);
    let header = DataHeader { token, seq: Seq(0), ack: Seq(0), ack_bits: 0, nonce_echo: Some(5) };
    assert!(h.receive(client, &data_with(header, &[(1, &chat("x"))], &[])).is_empty());
    assert_eq!(h.listener.stats().dropped_malformed, 1);
    // It does not count as the client's first DATA either: the echo goes on.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.transmit_one().1.data().header.nonce_echo, Some(5), "a keepalive, still echoing");
}

// --- 10.4 the session -----------------------------------------------------------------------------

#[test]
fn the_nonce_is_echoed_until_the_clients_first_data() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 77);
    h.listener.send(session, chat("a"), true).unwrap();
    let first = h.transmit_one().1.data();
    assert_eq!(first.header.nonce_echo, Some(77));
    // A keepalive from the client (no frame) is enough: it shows the token.
    h.receive(client, &data(token, 0, &[], &[]));
    h.listener.send(session, chat("b"), true).unwrap();
    let second = h.transmit_one().1.data();
    assert_eq!(second.header.nonce_echo, None);
    assert_eq!(second.header.ack, Seq(0));
}

#[test]
fn a_client_disconnect_ends_the_session_at_the_first_and_the_others_are_dropped() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    let bye = disconnect(token.0, 0);
    assert_eq!(h.receive(client, &bye), [Seen::Closed(session, CloseReason::Disconnected)]);
    assert!(h.receive(client, &bye).is_empty());
    assert!(h.receive(client, &bye).is_empty());
    assert!(h.transmits().is_empty(), "no reply, no linger");
    assert_eq!(h.listener.session_count(), 0);
    assert!(h.listener.peers.is_empty());
}

#[test]
fn an_ended_session_sends_its_error_then_disconnect_and_lingers_answering_one_disconnect_per_datagram() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    h.receive(client, &data(token, 0, &[], &[]));
    h.listener.set_player_id(session, 12).unwrap();
    h.listener.send(session, chat("sent"), true).unwrap();
    assert_eq!(h.transmit_one().1.data().reliable[0].0, Seq(0));
    h.listener.send(session, chat("never sent"), true).unwrap();
    h.listener.end(session, ErrorCode::BadState).unwrap();
    assert_eq!(h.listener.end(session, ErrorCode::BadState), Err(UnknownSession(session)));

    let out = h.transmits();
    assert_eq!(out.len(), 2, "{out:?}");
    let mut out = out.into_iter().map(|(to, out)| {
        assert_eq!(to, client);
        out
    });
    let last = out.next().unwrap().data();
    assert_eq!(last.header.token, token);
    assert!(last.unreliable.is_empty());
    // The ERROR takes the place of the message never sent: the next id after the last one sent.
    let [(id, frame)] = &last.reliable[..] else { panic!("{last:?}") };
    assert_eq!(*id, Seq(1));
    let error = raw(frame);
    assert_eq!(error.player_id(), 12);
    assert_eq!(error.packet(), Ok(Packet::Error { code: 5, message: "BAD_STATE" }));
    let bye = out.next().unwrap().disconnect();
    assert_eq!(bye, Disconnect { token: token.0, code: ErrorCode::BadState.code() });

    // The linger: each datagram with the token gets the DISCONNECT again, one for one.
    h.sent.clear();
    h.received.clear();
    for datagram in
        [data(token, 1, &[], &[]), disconnect(token.0, 0), data(token, 2, &[(1, &chat("x"))], &[])]
    {
        assert!(h.receive(client, &datagram).is_empty());
        assert_eq!(h.transmit_one().1.disconnect(), bye);
    }
    assert!(h.sent[&client] <= h.received[&client]);
    // Other tokens get nothing; nothing is resent by itself.
    assert!(h.receive(client, &data(SessionToken(token.0 ^ 1), 3, &[], &[])).is_empty());
    assert!(h.transmits().is_empty());
    h.advance(ms(1999));
    assert!(h.transmits().is_empty());
    h.receive(client, &data(token, 4, &[], &[]));
    assert_eq!(h.transmit_one().1.disconnect(), bye);
    // After 2 s the address is forgotten.
    h.advance(ms(1));
    assert!(h.receive(client, &data(token, 5, &[], &[])).is_empty());
    assert!(h.transmits().is_empty());
    assert!(h.listener.peers.is_empty());
}

#[test]
fn end_with_frame_sends_the_callers_error_frame() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let session = h.open(client, 5);
    let error = encode_frame_to_vec(0, &Packet::Error { code: 11, message: "server is shutting down" });
    h.listener.end_with_frame(session, ErrorCode::ShuttingDown, error.clone()).unwrap();
    let out = h.transmits();
    let [(_, Out::Data(last)), (_, Out::Disconnect(bye))] = &out[..] else { panic!("{out:?}") };
    assert_eq!(last.reliable, [(Seq(0), error)]);
    assert_eq!(last.header.nonce_echo, Some(5), "the client has no token yet: the echo gives it");
    assert_eq!(bye.code, 11);
}

#[test]
fn an_idle_client_is_timed_out_though_keepalives_flow() {
    let mut config = ListenerConfig::default();
    config.idle_timeout(Duration::from_secs(5));
    let mut h = Harness::new(config);
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    // A keepalive every second: it does not count. The HELLO (at the start) was the last frame.
    let mut closed = Vec::new();
    for seq in 0..10 {
        h.now += Duration::from_secs(1);
        h.receive(client, &data(token, seq, &[], &[]));
        closed.extend(h.advance(Duration::ZERO));
        h.transmits();
        if !closed.is_empty() {
            break;
        }
    }
    assert_eq!(closed, [Seen::Closed(session, CloseReason::Error(ErrorCode::Timeout))]);
    assert_eq!(h.now - h.start, Duration::from_secs(5) + ms(20));
}

#[test]
fn a_frame_keeps_the_session_alive_and_a_silent_client_times_out() {
    let mut config = ListenerConfig::default();
    config.idle_timeout(Duration::from_secs(3));
    let mut h = Harness::new(config);
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    for seq in 0..5 {
        h.now += Duration::from_secs(2);
        let ping = encode_frame_to_vec(0, &Packet::Ping { payload: b"" });
        h.receive(client, &data(token, seq, &[(1 + seq, &ping)], &[]));
        assert!(h.advance(Duration::ZERO).is_empty());
        h.transmits();
    }
    let mut waited = Duration::ZERO;
    loop {
        let next = h.listener.poll_timeout().unwrap();
        waited += next - h.now;
        let events = h.advance(next - h.now);
        h.transmits();
        if !events.is_empty() {
            assert_eq!(events, [Seen::Closed(session, CloseReason::Error(ErrorCode::Timeout))]);
            break;
        }
    }
    assert_eq!(waited, Duration::from_secs(3));
}

// --- 10.5 and 10.7: channels and limits -----------------------------------------------------------

#[test]
fn unreliable_frames_go_in_the_next_datagram_once_after_the_reliable_ones() {
    let mut config = ListenerConfig::default();
    config.max_unreliable_frames(2);
    let mut h = Harness::new(config);
    let client = addr(CLIENT);
    let session = h.open(client, 5);
    for text in ["m1", "m2", "m3"] {
        h.listener.send(session, chat(text), false).unwrap();
    }
    h.listener.send(session, chat("r"), true).unwrap();
    let data = h.transmit_one().1.data();
    assert_eq!(data.reliable, [(Seq(0), chat("r"))]);
    assert_eq!(data.unreliable, [chat("m2"), chat("m3")], "the oldest was dropped at the cap");
    // Lost: the reliable one comes again, the unreliable ones never.
    h.advance(ms(250));
    let again = h.transmit_one().1.data();
    assert_eq!((again.reliable.len(), again.unreliable.len()), (1, 0));
}

#[test]
fn a_client_frame_held_back_by_a_gap_is_delivered_when_the_gap_fills() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    let (one, two, step) = (chat("one"), chat("two"), chat("move"));
    // Datagram 1 (message 2 and an unreliable frame) overtakes datagram 0 (message 1).
    assert_eq!(
        h.receive(client, &data(token, 1, &[(2, &two)], &[&step])),
        [Seen::Frame(session, step, false)]
    );
    assert_eq!(
        h.receive(client, &data(token, 0, &[(1, &one)], &[&chat("stale")])),
        [Seen::Frame(session, one, true), Seen::Frame(session, two, true)],
        "in order; the late datagram's unreliable frame is stale"
    );
}

#[test]
fn a_message_id_beyond_the_receive_window_ends_the_session_with_malformed() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    let events = h.receive(client, &data(token, 0, &[(1, &chat("ok")), (300, &chat("far"))], &[]));
    assert_eq!(
        events,
        [
            Seen::Frame(session, chat("ok"), true),
            Seen::Closed(session, CloseReason::Error(ErrorCode::Malformed))
        ]
    );
    let out = h.transmits();
    assert!(matches!(&out[..], [(_, Out::Data(_)), (_, Out::Disconnect(bye))] if bye.code == 1), "{out:?}");
}

#[test]
fn over_the_hard_limit_send_refuses_and_over_the_soft_limit_the_write_deadline_cuts() {
    let mut config = ListenerConfig::default();
    let frame = chat(&"x".repeat(100)); // 112 bytes, counted with its id and bookkeeping: 146
    config.send_soft_limit(1000).send_hard_limit(1460).write_deadline(Duration::from_secs(2));
    let mut h = Harness::new(config);
    let client = addr(CLIENT);
    let session = h.open(client, 5);
    for _ in 0..10 {
        h.listener.send(session, frame.clone(), true).unwrap();
    }
    assert_eq!(h.listener.queued_bytes(session), Some(1460));
    assert!(matches!(h.listener.send(session, chat("x"), true), Err(SendError::SlowConsumer(_))));
    assert!(
        matches!(h.listener.send(session, chat("x"), true), Err(SendError::SlowConsumer(_))),
        "once refused, always refused"
    );
    h.listener.send(session, chat("move"), false).expect("unreliable frames are not counted");
    // The client never acknowledges: 2 s over the soft limit, then SLOW_CONSUMER.
    let mut closed = Vec::new();
    while closed.is_empty() {
        h.transmits();
        let next = h.listener.poll_timeout().unwrap();
        closed = h.advance(next - h.now);
    }
    assert_eq!(closed, [Seen::Closed(session, CloseReason::Error(ErrorCode::SlowConsumer))]);
    assert_eq!(h.now - h.start, Duration::from_secs(2));
}

#[test]
fn acknowledgements_bring_the_queue_back_under_the_soft_limit_and_stop_the_clock() {
    let mut config = ListenerConfig::default();
    config.send_soft_limit(500).write_deadline(Duration::from_secs(1));
    let mut h = Harness::new(config);
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    for _ in 0..5 {
        h.listener.send(session, chat(&"y".repeat(100)), true).unwrap();
    }
    let sent = h.transmit_one().1.data();
    h.now += ms(500);
    let ack = DataHeader { token, seq: Seq(0), ack: sent.header.seq, ack_bits: 0, nonce_echo: None };
    h.receive(client, &data_with(ack, &[], &[]));
    assert_eq!(h.listener.queued_bytes(session), Some(0));
    assert!(h.advance(Duration::from_secs(2)).is_empty(), "no SLOW_CONSUMER");
}

#[test]
fn frames_beyond_the_in_flight_window_wait_and_keep_their_order() {
    let mut config = ListenerConfig::default();
    config.reliability_mut().max_unacked_messages(4);
    let mut h = Harness::new(config);
    let client = addr(CLIENT);
    let (session, token) = h.open_and_learn_token(client, 5);
    h.receive(client, &data(token, 0, &[], &[]));
    for i in 0..10 {
        h.listener.send(session, chat(&i.to_string()), true).unwrap();
    }
    let mut delivered = Vec::new();
    for seq in 1..20 {
        for (_, out) in h.transmits() {
            let data = out.data();
            delivered.extend(data.reliable.iter().map(|(id, _)| id.0));
            let ack =
                DataHeader { token, seq: Seq(seq), ack: data.header.seq, ack_bits: 0, nonce_echo: None };
            h.receive(client, &data_with(ack, &[], &[]));
        }
    }
    assert_eq!(delivered, (0..10).collect::<Vec<_>>());
}

#[test]
fn sessions_take_turns_so_a_busy_one_does_not_starve_the_others() {
    let mut h = Harness::new(ListenerConfig::default());
    let busy = h.open(addr("192.0.2.1:1"), 1);
    let quiet = h.open(addr("192.0.2.2:1"), 2);
    let big = chat(&"z".repeat(250));
    for _ in 0..40 {
        h.listener.send(busy, big.clone(), false).unwrap();
    }
    h.listener.send(quiet, chat("hi"), true).unwrap();
    let order: Vec<SocketAddr> = h.transmits().into_iter().map(|(to, _)| to).collect();
    assert!(order.len() > 5);
    let quiet_at = order.iter().position(|&to| to == addr("192.0.2.2:1")).unwrap();
    assert!(quiet_at <= 1, "the quiet session goes second at the latest: {order:?}");
}

#[test]
fn a_datagram_packs_as_many_frames_as_fit_and_never_exceeds_1200_bytes() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let session = h.open(client, 5);
    let frame = chat(&"w".repeat(88)); // 100 bytes
    for _ in 0..30 {
        h.listener.send(session, frame.clone(), true).unwrap();
        h.listener.send(session, frame.clone(), false).unwrap();
    }
    let out = h.transmits();
    let first = out.into_iter().next().unwrap().1.data();
    let len = DATA_HEADER_LEN + NONCE_ECHO_LEN + 102 * first.reliable.len() + 100 * first.unreliable.len();
    assert!(len <= MAX_DATAGRAM && len + 100 > MAX_DATAGRAM, "{len}: full");
    assert_eq!(first.reliable.len(), 11, "reliable frames first");
}

#[test]
fn send_and_end_on_an_unknown_session_are_refused_and_frames_too_large_too() {
    let mut h = Harness::new(ListenerConfig::default());
    let session = h.open(addr(CLIENT), 5);
    let too_large = vec![0; MAX_FRAME_LEN + 1];
    assert!(matches!(h.listener.send(session, too_large, true), Err(SendError::TooLarge(_))));
    assert!(matches!(h.listener.send(session, vec![0; 11], false), Err(SendError::TooLarge(_))));
    h.receive(addr(CLIENT), &disconnect(0, 0));
    h.listener.end(session, ErrorCode::Timeout).unwrap();
    assert!(matches!(h.listener.send(session, chat("x"), true), Err(SendError::UnknownSession(_))));
    assert_eq!(h.listener.set_player_id(session, 1), Err(UnknownSession(session)));
}

#[test]
fn the_cookie_secret_is_replaced_on_schedule_and_the_previous_one_still_checks() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let cookie = h.cookie(client, 5);
    assert_eq!(h.listener.poll_timeout(), Some(h.start + Duration::from_secs(60)));
    h.now += Duration::from_secs(60);
    h.advance(Duration::ZERO);
    assert_eq!(h.listener.poll_timeout(), Some(h.start + Duration::from_secs(120)));
    // The old cookie has expired by now; a fresh one from the old key would still check, and the
    // listener's CHALLENGEs now come from a key the harness does not know.
    h.receive(client, &connect(5));
    let challenge = h.transmit_one().1.challenge();
    assert_ne!(challenge.cookie, h.cookie(client, 5));
    assert!(matches!(
        h.receive(client, &response(5, &challenge.cookie, &[(0, &hello())]))[0],
        Seen::Opened(..)
    ));
    let _ = cookie;
}

#[test]
fn the_transmit_is_an_iovec_of_the_header_then_prefix_and_frame_then_unreliable_frames() {
    let mut h = Harness::new(ListenerConfig::default());
    let session = h.open(addr(CLIENT), 5);
    h.listener.send(session, chat("r"), true).unwrap();
    h.listener.send(session, chat("u"), false).unwrap();
    assert!(h.listener.poll_transmit(h.now, &mut h.transmit));
    let segments: Vec<&[u8]> = h.transmit.segments().collect();
    assert_eq!(segments.len(), 4);
    assert_eq!(segments[0].len(), DATA_HEADER_LEN + NONCE_ECHO_LEN);
    assert_eq!(segments[1], [0, 0]);
    assert_eq!(segments[2], chat("r"));
    assert_eq!(segments[3], chat("u"));
    let mut iovec = [std::io::IoSlice::new(&[]); 8];
    assert_eq!(h.transmit.io_slices(&mut iovec), 4);
    h.transmit.clear();
    assert!(h.transmit.is_empty());
}

#[test]
fn a_response_resent_to_a_lingering_session_is_answered_with_disconnect_carrying_the_nonce() {
    let mut h = Harness::new(ListenerConfig::default());
    let client = addr(CLIENT);
    let challenge = {
        h.receive(client, &connect(31));
        h.transmit_one().1.challenge()
    };
    let resp = response(31, &challenge.cookie, &[(0, &hello())]);
    let Some(&Seen::Opened(session, _)) = h.receive(client, &resp).first() else { panic!() };
    // The game refuses the HELLO; the last DATA (which would have told the token) is lost.
    h.listener.end(session, ErrorCode::BadState).unwrap();
    let out = h.transmits();
    let [(_, Out::Data(_)), (_, Out::Disconnect(bye))] = &out[..] else { panic!("{out:?}") };
    assert_ne!(bye.token, 31, "the session's DISCONNECT carries its token");
    // The client, still without a token, sends its RESPONSE again: told with its nonce, no session.
    h.now += ms(250);
    assert!(h.receive(client, &resp).is_empty());
    assert_eq!(h.transmit_one().1.disconnect(), Disconnect { token: 31, code: ErrorCode::BadState.code() });
    assert_eq!(h.listener.session_count(), 0);
    // Another handshake (a new nonce) from the same address is a new client.
    let cookie = h.cookie(client, 32);
    assert!(matches!(h.receive(client, &response(32, &cookie, &[(0, &hello())]))[0], Seen::Opened(..)));
}
