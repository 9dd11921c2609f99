//! One test per client rule of docs/protocol.md §10.3 to §10.5, the server played by hand.

use std::time::Duration;

use gamewire_proto::{Move, Packet, encode_frame_to_vec};

use super::*;
use crate::datagram::{CONNECT_LEN, DISCONNECT_LEN, FLAG_NONCE_ECHO, RESPONSE_LEN};

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

const TOKEN: SessionToken = SessionToken(0x0123_4567_89ab_cdef);

fn server() -> SocketAddr {
    "192.0.2.1:7777".parse().unwrap()
}

/// The server's IP, another port: not the server.
fn other_port() -> SocketAddr {
    "192.0.2.1:7778".parse().unwrap()
}

fn hello() -> Vec<u8> {
    encode_frame_to_vec(0, &Packet::Hello { name: "ada" })
}

fn chat(player_id: u32, text: &str) -> Vec<u8> {
    encode_frame_to_vec(player_id, &Packet::Chat { text })
}

fn step(player_id: u32, time: u32) -> Vec<u8> {
    encode_frame_to_vec(player_id, &Packet::Move(&Move::new(1.0, 0.0, 2.0, 3.0, time)))
}

fn client_with(config: Config, start: Instant) -> Client {
    Client::new(server(), &hello(), config, start).unwrap()
}

fn client(start: Instant) -> Client {
    client_with(Config::default(), start)
}

fn transmit(client: &mut Client, now: Instant) -> Option<Vec<u8>> {
    let mut buf = [0; MAX_DATAGRAM];
    client.poll_transmit(now, &mut buf).map(|len| buf[..len].to_vec())
}

fn drain(client: &mut Client, now: Instant) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| transmit(client, now)).collect()
}

fn parse(bytes: &[u8]) -> Datagram<'_> {
    Datagram::parse(bytes, u32::MAX).expect("the client sends well-formed datagrams")
}

fn challenge(client_nonce: u64, cookie: [u8; 20]) -> Vec<u8> {
    let mut buf = [0; MAX_DATAGRAM];
    let len = Challenge { client_nonce, cookie: Cookie::from_bytes(cookie) }.write_to(&mut buf).unwrap();
    buf[..len].to_vec()
}

fn disconnect(token: u64, code: u32) -> Vec<u8> {
    let mut buf = [0; MAX_DATAGRAM];
    let len = Disconnect { token, code }.write_to(&mut buf).unwrap();
    buf[..len].to_vec()
}

/// A DATA from the server acknowledging nothing.
fn data(
    token: SessionToken,
    seq: u16,
    echo: Option<u64>,
    reliable: &[(u16, &[u8])],
    unreliable: &[&[u8]],
) -> Vec<u8> {
    let header = DataHeader { token, seq: Seq(seq), ack: Seq(65535), ack_bits: 0, nonce_echo: echo };
    let mut buf = [0; MAX_DATAGRAM];
    let mut writer = DataWriter::new(&mut buf, &header).unwrap();
    for (id, frame) in reliable {
        writer.push_reliable(Seq(*id), RawFrame::split_from(frame).unwrap().0).unwrap();
    }
    for frame in unreliable {
        writer.push_unreliable(RawFrame::split_from(frame).unwrap().0).unwrap();
    }
    let len = writer.finish();
    buf[..len].to_vec()
}

/// An event, owned.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Connected(SessionToken),
    Reliable(Vec<u8>),
    Unreliable(Vec<u8>),
    Closed(Close),
}

fn receive_from(client: &mut Client, now: Instant, from: SocketAddr, datagram: &[u8]) -> Vec<Got> {
    let mut got = Vec::new();
    client.receive(now, from, datagram, |event| {
        got.push(match event {
            Event::Connected(token) => Got::Connected(token),
            Event::Frame { frame, channel } => {
                let bytes = [frame.header_bytes(), frame.payload()].concat();
                match channel {
                    Channel::Reliable => Got::Reliable(bytes),
                    Channel::Unreliable => Got::Unreliable(bytes),
                }
            }
            Event::Closed(close) => Got::Closed(close),
        })
    });
    got
}

fn receive(client: &mut Client, now: Instant, datagram: &[u8]) -> Vec<Got> {
    receive_from(client, now, server(), datagram)
}

/// A client in the session with [`TOKEN`] at `start + 20 ms`, the WELCOME-like CHAT "hi" received as
/// message 0, everything it owed sent.
fn connected(start: Instant) -> (Client, Instant) {
    let mut client = client(start);
    let _ = drain(&mut client, start);
    let nonce = client.nonce;
    receive(&mut client, start + ms(10), &challenge(nonce, [7; 20]));
    let _ = drain(&mut client, start + ms(10));
    let now = start + ms(20);
    let got = receive(&mut client, now, &data(TOKEN, 0, Some(nonce), &[(0, &chat(1, "hi"))], &[]));
    assert_eq!(got, [Got::Connected(TOKEN), Got::Reliable(chat(1, "hi"))]);
    (client, now)
}

#[test]
fn the_connect_is_1200_bytes_with_a_fresh_nonce_resent_after_250_ms_doubling_until_5_s() {
    let start = Instant::now();
    let mut client = client(start);
    assert_ne!(client.nonce, self::client(start).nonce, "a fresh nonce per client");
    let mut sends = Vec::new();
    for at in (0..=6000).step_by(5) {
        let now = start + ms(at);
        if client.handle_timeout(now).is_some() {
            assert_eq!(at, 5000, "gives up at 5 s");
            break;
        }
        for connect in drain(&mut client, now) {
            assert_eq!(connect.len(), CONNECT_LEN);
            assert_eq!(parse(&connect), Datagram::Connect(Connect { client_nonce: client.nonce }));
            sends.push(at);
        }
    }
    assert_eq!(sends, [0, 250, 750, 1750, 3750]);
    assert_eq!(client.state(), State::Closed(Close::HandshakeTimeout));
    assert_eq!((client.poll_timeout(), transmit(&mut client, start + ms(6000))), (None, None));
    assert_eq!(client.stats().handshake_resends, 4);
}

#[test]
fn a_challenge_counts_only_with_the_nonce_and_from_the_server_address() {
    let start = Instant::now();
    let mut client = client(start);
    let nonce = client.nonce;
    let _ = drain(&mut client, start);
    let early = chat(0, "before the session");
    client.send(&early, Channel::Reliable).unwrap();

    let now = start + ms(10);
    assert!(receive(&mut client, now, &challenge(nonce ^ 1, [7; 20])).is_empty());
    assert!(receive_from(&mut client, now, other_port(), &challenge(nonce, [7; 20])).is_empty());
    assert_eq!((client.state(), drain(&mut client, now).len()), (State::Connecting, 0));
    assert_eq!(client.stats().dropped, 2);

    receive(&mut client, now, &challenge(nonce, [7; 20]));
    assert_eq!(client.state(), State::Responding);
    // A second CHALLENGE (a resent CONNECT's answer) changes nothing: the RESPONSE is resent as is.
    receive(&mut client, now, &challenge(nonce, [8; 20]));
    assert_eq!(client.stats().dropped, 3);
    let sent = drain(&mut client, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].len(), RESPONSE_LEN);
    let Datagram::Response(response) = parse(&sent[0]) else { panic!("a RESPONSE") };
    assert_eq!((response.client_nonce(), response.cookie().to_bytes()), (nonce, [7; 20]));
    let items: Vec<_> = response.reliable().map(|item| (item.id, item.frame)).collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0], (Seq(0), RawFrame::split_from(&hello()).unwrap().0), "the HELLO is message 0");
    assert_eq!(items[1], (Seq(1), RawFrame::split_from(&early).unwrap().0));
}

#[test]
fn the_response_is_resent_on_the_same_schedule_until_the_first_data_or_5_s() {
    let start = Instant::now();
    let mut client = client(start);
    let nonce = client.nonce;
    let _ = drain(&mut client, start);
    let challenged = start + ms(100);
    receive(&mut client, challenged, &challenge(nonce, [7; 20]));
    let mut sends = Vec::new();
    let mut first = None;
    for at in (100..=6000).step_by(5) {
        let now = start + ms(at);
        if client.handle_timeout(now).is_some() {
            assert_eq!(at, 5100, "5 s after the CHALLENGE");
            break;
        }
        for response in drain(&mut client, now) {
            assert_eq!(first.get_or_insert_with(|| response.clone()), &response, "the same RESPONSE");
            sends.push(at - 100);
        }
    }
    assert_eq!(sends, [0, 250, 750, 1750, 3750]);
    assert_eq!(client.state(), State::Closed(Close::HandshakeTimeout));

    // With the first DATA, resending stops.
    let (mut client, now) = connected(start);
    for at in [250, 750, 1750, 3750] {
        assert!(
            drain(&mut client, now + ms(at)).iter().all(|sent| matches!(parse(sent), Datagram::Data(_))),
            "at {at} ms"
        );
    }
}

#[test]
fn the_token_comes_only_from_a_data_echoing_the_nonce() {
    let start = Instant::now();
    let mut client = client(start);
    let nonce = client.nonce;
    let _ = drain(&mut client, start);
    let welcome = chat(1, "hi");
    let first = data(TOKEN, 0, Some(nonce), &[(0, &welcome)], &[]);
    assert!(receive(&mut client, start + ms(5), &first).is_empty(), "no RESPONSE sent yet");

    receive(&mut client, start + ms(10), &challenge(nonce, [7; 20]));
    let _ = drain(&mut client, start + ms(10));
    let now = start + ms(20);
    assert!(receive(&mut client, now, &data(TOKEN, 0, None, &[(0, &welcome)], &[])).is_empty());
    assert!(receive(&mut client, now, &data(TOKEN, 0, Some(nonce ^ 1), &[(0, &welcome)], &[])).is_empty());
    assert!(receive_from(&mut client, now, other_port(), &first).is_empty());
    assert_eq!((client.state(), client.token()), (State::Responding, None));
    assert_eq!(client.stats().dropped, 4);

    assert_eq!(receive(&mut client, now, &first), [Got::Connected(TOKEN), Got::Reliable(welcome)]);
    assert_eq!((client.state(), client.token()), (State::Connected(TOKEN), Some(TOKEN)));
    // The client's DATAs carry the token, never the nonce echo, and acknowledge the server's.
    let sent = drain(&mut client, now + ms(20));
    assert_eq!(sent.len(), 1, "an ack of the WELCOME within 20 ms");
    assert_eq!(sent[0][3] & FLAG_NONCE_ECHO, 0);
    let Datagram::Data(ack) = parse(&sent[0]) else { panic!("a DATA") };
    assert_eq!((ack.token(), ack.nonce_echo(), ack.seq(), ack.ack()), (TOKEN, None, Seq(0), Seq(0)));
}

#[test]
fn after_the_token_a_data_with_another_token_is_dropped() {
    let start = Instant::now();
    let (mut client, now) = connected(start);
    let nonce = client.nonce;
    let forged = SessionToken(TOKEN.0 ^ 1);
    let text = chat(1, "forged");
    assert!(receive(&mut client, now, &data(forged, 1, Some(nonce), &[(1, &text)], &[])).is_empty());
    assert!(receive(&mut client, now, &data(forged, 1, None, &[(1, &text)], &[])).is_empty());
    assert_eq!(client.stats().dropped, 2);
    // The server may echo the nonce until it hears from the client: with the token, that is fine.
    let real = chat(1, "real");
    assert_eq!(
        receive(&mut client, now, &data(TOKEN, 1, Some(nonce), &[(1, &real)], &[])),
        [Got::Reliable(real)]
    );
}

#[test]
fn a_disconnect_with_the_nonce_during_the_handshake_closes_with_its_code() {
    let full = ErrorCode::ServerFull.code();
    let start = Instant::now();
    // Refused at CONNECT.
    let mut client = client(start);
    let nonce = client.nonce;
    let _ = drain(&mut client, start);
    assert!(receive(&mut client, start, &disconnect(nonce ^ 1, full)).is_empty());
    assert!(receive_from(&mut client, start, other_port(), &disconnect(nonce, full)).is_empty());
    assert_eq!(client.state(), State::Connecting);
    let closed = Close::Disconnected { code: full };
    assert_eq!(receive(&mut client, start, &disconnect(nonce, full)), [Got::Closed(closed)]);
    assert_eq!(client.state(), State::Closed(closed));
    assert_eq!(closed.error_code(), Some(ErrorCode::ServerFull));
    assert_eq!((drain(&mut client, start + ms(250)).len(), client.poll_timeout()), (0, None));

    // Refused at RESPONSE.
    let mut client = self::client(start);
    let nonce = client.nonce;
    receive(&mut client, start, &challenge(nonce, [7; 20]));
    assert_eq!(receive(&mut client, start, &disconnect(nonce, full)), [Got::Closed(closed)]);

    // In the session the nonce no longer counts; the token does.
    let (mut client, now) = connected(start);
    let nonce = client.nonce;
    assert!(receive(&mut client, now, &disconnect(nonce, full)).is_empty());
    let timeout = Close::Disconnected { code: ErrorCode::Timeout.code() };
    assert_eq!(receive(&mut client, now, &disconnect(TOKEN.0, 10)), [Got::Closed(timeout)]);
    assert!(receive(&mut client, now, &disconnect(TOKEN.0, 10)).is_empty(), "final");
    assert!(receive(&mut client, now, &data(TOKEN, 1, None, &[(1, &chat(1, "late"))], &[])).is_empty());
    assert_eq!(client.send(&chat(0, "x"), Channel::Reliable), Err(SendError::Closed));
}

#[test]
fn leaving_sends_three_disconnects_with_the_token_and_code_0() {
    let start = Instant::now();
    let (mut client, now) = connected(start);
    client.send(&chat(0, "unsent"), Channel::Reliable).unwrap();
    client.disconnect();
    assert_eq!(client.state(), State::Closed(Close::Left));
    let sent = drain(&mut client, now);
    assert_eq!(sent, vec![disconnect(TOKEN.0, 0); 3]);
    assert!(sent.iter().all(|goodbye| goodbye.len() == DISCONNECT_LEN));
    client.disconnect();
    assert!(drain(&mut client, now + ms(1000)).is_empty(), "once");

    // Without a session there is nothing to end.
    let mut client = self::client(start);
    let _ = drain(&mut client, start);
    client.disconnect();
    assert!(drain(&mut client, start + ms(250)).is_empty());
    assert_eq!(client.state(), State::Closed(Close::Left));
}

#[test]
fn a_keepalive_goes_after_a_second_without_sending() {
    let start = Instant::now();
    let (mut client, connected_at) = connected(start);
    let acked = connected_at + ms(20);
    assert_eq!(drain(&mut client, acked).len(), 1, "the ack");
    assert_eq!(client.poll_timeout(), Some(acked + ms(1000)));
    assert!(drain(&mut client, acked + ms(999)).is_empty());
    let keepalive = drain(&mut client, acked + ms(1000));
    assert_eq!(keepalive.len(), 1);
    let Datagram::Data(keepalive) = parse(&keepalive[0]) else { panic!("a DATA") };
    assert!(keepalive.is_empty() && keepalive.token() == TOKEN);
    assert_eq!(keepalive.header().encoded_len(), DATA_HEADER_LEN);
}

#[test]
fn the_server_is_gone_after_30_s_without_a_datagram() {
    let start = Instant::now();
    let (mut client, last_heard) = connected(start);
    let mut now = last_heard;
    let closed = loop {
        let _ = drain(&mut client, now);
        now = client.poll_timeout().expect("open");
        if let Some(close) = client.handle_timeout(now) {
            break close;
        }
    };
    assert_eq!((closed, now), (Close::ServerGone(Gone::Silent), last_heard + ms(30_000)));
    assert_eq!(client.state(), State::Closed(closed));
}

#[test]
fn reliable_frames_come_in_order_then_the_unreliable_ones_of_the_newest_datagram_only() {
    let start = Instant::now();
    let (mut client, now) = connected(start);
    let (b, c, d) = (chat(2, "b"), chat(2, "c"), chat(2, "d"));
    let (m1, m2, m3) = (step(3, 1), step(3, 2), step(3, 3));
    // Message 2 overtakes message 1: held; the DATA is the newest, so its MOVE counts.
    let got = receive(&mut client, now, &data(TOKEN, 2, None, &[(2, &c)], &[&m2]));
    assert_eq!(got, [Got::Unreliable(m2.clone())]);
    // DATA 1 arrives late: message 1 fills the gap, 2 follows; its MOVE is stale.
    let got = receive(&mut client, now, &data(TOKEN, 1, None, &[(1, &b)], &[&m1]));
    assert_eq!(got, [Got::Reliable(b.clone()), Got::Reliable(c)]);
    assert_eq!(client.stats().stale_unreliable, 1);
    // Message 1 again (a resend) is dropped; 3 is delivered before the MOVE of the same DATA.
    let third = data(TOKEN, 3, None, &[(1, &b), (3, &d)], &[&m3]);
    assert_eq!(receive(&mut client, now, &third), [Got::Reliable(d), Got::Unreliable(m3)]);
    assert_eq!(client.stats().dropped_reliable, 1);
    // The same DATA twice: dropped whole.
    assert!(receive(&mut client, now, &third).is_empty());
    assert_eq!(client.stats().duplicates, 1);
}

#[test]
fn frames_that_do_not_fit_the_response_follow_it_in_order_in_the_first_datas() {
    let start = Instant::now();
    let mut client = client(start);
    let nonce = client.nonce;
    let _ = drain(&mut client, start);
    let long: Vec<_> = (0..5).map(|i| chat(0, &format!("{i}{}", "x".repeat(255)))).collect();
    for frame in &long {
        client.send(frame, Channel::Reliable).unwrap();
    }
    let moved = step(0, 9);
    client.send(&moved, Channel::Unreliable).unwrap();
    receive(&mut client, start + ms(10), &challenge(nonce, [7; 20]));
    let after_challenge = chat(0, "after the challenge");
    client.send(&after_challenge, Channel::Reliable).unwrap();
    let response = drain(&mut client, start + ms(10));
    let Datagram::Response(response) = parse(&response[0]) else { panic!("a RESPONSE") };
    assert_eq!(response.reliable_count(), 5, "the HELLO and 4 CHATs of 256 bytes");

    let now = start + ms(20);
    receive(&mut client, now, &data(TOKEN, 0, Some(nonce), &[], &[]));
    let sent = drain(&mut client, now);
    assert_eq!(sent.len(), 1);
    let Datagram::Data(first) = parse(&sent[0]) else { panic!("a DATA") };
    let items: Vec<_> = first.reliable().map(|item| (item.id, item.frame)).collect();
    assert_eq!(
        items,
        [
            (Seq(5), RawFrame::split_from(&long[4]).unwrap().0),
            (Seq(6), RawFrame::split_from(&after_challenge).unwrap().0)
        ]
    );
    assert!(first.unreliable().eq([RawFrame::split_from(&moved).unwrap().0]));
}

#[test]
fn an_unacknowledged_frame_is_resent_and_counted_and_the_acknowledged_ones_are_let_go() {
    let start = Instant::now();
    let (mut client, now) = connected(start);
    client.send(&chat(0, "once"), Channel::Reliable).unwrap();
    let first = drain(&mut client, now);
    let resent = drain(&mut client, now + ms(250));
    assert_eq!(resent.len(), 1);
    let (Datagram::Data(first), Datagram::Data(resent)) = (parse(&first[0]), parse(&resent[0])) else {
        panic!("DATAs")
    };
    assert_eq!((first.seq(), resent.seq()), (Seq(0), Seq(1)));
    assert!(first.reliable().eq(resent.reliable()), "the same id and bytes");
    assert_eq!(client.stats().reliable_resends, 1);

    let ack = DataHeader { token: TOKEN, seq: Seq(1), ack: Seq(1), ack_bits: 0b1, nonce_echo: None };
    let mut buf = [0; MAX_DATAGRAM];
    let len = ack.write_to(0, &mut buf).unwrap();
    assert!(receive(&mut client, now + ms(300), &buf[..len]).is_empty());
    assert_eq!(client.endpoint.unacked_messages(), 0);
    assert!(client.frames.sent(Seq(0)).is_none(), "the copy is recycled");
    assert!(client.rtt().samples() > 0);
}

#[test]
fn send_refuses_what_cannot_go() {
    let start = Instant::now();
    let mut config = Config::default();
    let mut reliability = crate::reliable::Config::default();
    reliability.max_unacked_messages(2);
    config.reliable(reliability).max_unreliable_bytes(40);
    let mut client = client_with(config, start);

    let frame = chat(0, "hi");
    assert_eq!(client.send(&frame[..13], Channel::Reliable), Err(SendError::NotOneFrame));
    assert_eq!(
        client.send(&[frame.clone(), frame.clone()].concat(), Channel::Reliable),
        Err(SendError::NotOneFrame)
    );
    let mut huge = vec![0; HEADER_LEN + MAX_FRAME_PAYLOAD + 1];
    huge[8..12].copy_from_slice(&((MAX_FRAME_PAYLOAD + 1) as u32).to_le_bytes());
    let too_large = SendError::TooLarge { len: MAX_FRAME_PAYLOAD + 1 };
    assert_eq!(client.send(&huge, Channel::Unreliable), Err(too_large));
    assert!(matches!(
        Client::new(server(), &huge, Config::default(), start),
        Err(ConnectError::Hello(SendError::TooLarge { .. }))
    ));

    assert_eq!(client.send(&step(0, 1), Channel::Unreliable), Ok(()));
    assert_eq!(client.send(&step(0, 2), Channel::Unreliable), Err(SendError::UnreliableFull), "32 + 32 > 40");

    // The RESPONSE holds what fits whatever the limits; after it, the session's limits apply.
    client.receive(start, server(), &challenge(client.nonce, [7; 20]), |_| {});
    assert_eq!(client.send(&frame, Channel::Reliable), Ok(()));
    assert_eq!(client.send(&frame, Channel::Reliable), Ok(()));
    assert_eq!(client.send(&frame, Channel::Reliable), Err(SendError::ReliableFull));
    client.disconnect();
    assert_eq!(client.send(&frame, Channel::Reliable), Err(SendError::Closed));
}

#[test]
fn anything_not_from_the_server_or_not_well_formed_is_dropped_and_counted() {
    let start = Instant::now();
    let (mut client, now) = connected(start);
    let keepalive = data(TOKEN, 1, None, &[], &[]);
    let stranger: SocketAddr = "198.51.100.9:7777".parse().unwrap();
    let mut too_long = keepalive.clone();
    too_long.resize(MAX_DATAGRAM + 1, 0);
    let mut oversized_frame = data(TOKEN, 1, None, &[], &[&chat(1, "x")]);
    oversized_frame[DATA_HEADER_LEN + 8] = 0xff; // data_length past the datagram
    let mut connect = [0; MAX_DATAGRAM];
    Connect { client_nonce: client.nonce }.write_to(&mut connect).unwrap();
    for (from, datagram) in [
        (stranger, &keepalive[..]),
        (server(), &too_long[..]),
        (server(), &oversized_frame[..]),
        (server(), &[1, 9][..]),
        (server(), &[][..]),
        (server(), &connect[..]),
        (server(), &challenge(client.nonce, [7; 20])[..]),
    ] {
        assert!(receive_from(&mut client, now, from, datagram).is_empty());
    }
    let stats = client.stats();
    assert_eq!((stats.dropped, stats.datagrams_received), (7, 9), "the handshake's two count too");
    assert!(receive(&mut client, now, &keepalive).is_empty());
    assert_eq!(client.stats().dropped, 7, "a keepalive is used, not dropped");
}
