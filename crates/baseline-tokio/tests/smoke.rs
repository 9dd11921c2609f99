//! The built binary over real sockets on 127.0.0.1: sessions, relays, fatal errors, timeouts, limits,
//! shutdown and the echo mode.

mod util;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gamewire_proto::{Header, Move, Packet, encode_frame_to_vec};
use util::{Client, Server, TIMEOUT, read_frame};

/// Raw header bytes, for frames no encoder would produce.
fn header(packet_id: u32, player_id: u32, data_length: u32) -> Vec<u8> {
    let header = Header::new(packet_id, player_id, data_length);
    [header.packet_id.get(), header.player_id.get(), header.data_length.get()]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Two players at the fixed spawn point, each having received ENTER about the other.
fn two_players(server: &Server) -> (Client, u32, Client, u32) {
    let mut ada = Client::connect(server.addr);
    let ada_id = ada.hello("ada");
    let mut bob = Client::connect(server.addr);
    let bob_id = bob.hello("bob");
    bob.expect_enter(ada_id, "ada");
    ada.expect_enter(bob_id, "bob");
    (ada, ada_id, bob, bob_id)
}

#[test]
fn players_meet_and_moves_chats_and_pings_flow() {
    let server = Server::start(&["--spawn", "500,500", "--seed", "1"]);
    let (mut ada, ada_id, mut bob, bob_id) = two_players(&server);
    assert_ne!(ada_id, bob_id);

    // A MOVE one unit away is legal at once; bob receives ada's frame byte for byte.
    let moved = encode_frame_to_vec(ada_id, &Packet::Move(&Move::new(501.0, 0.0, 500.0, 1.0, 42)));
    ada.send_raw(&moved);
    assert_eq!(bob.recv().to_bytes(), moved);

    bob.send(0, &Packet::Chat { text: "hello there" });
    let chat = ada.recv();
    assert_eq!((chat.packet_id, chat.player_id), (5, bob_id));
    assert_eq!(chat.payload, b"hello there");

    // The PONG is the next frame ada gets: its own MOVE was not echoed to it.
    ada.send(0, &Packet::Ping { payload: &[1, 2, 3] });
    let pong = ada.recv();
    assert_eq!((pong.packet_id, pong.player_id, pong.payload), (9, ada_id, vec![1, 2, 3]));
}

#[test]
fn an_unknown_packet_is_fatal_for_its_sender_only() {
    let server = Server::start(&["--spawn", "500,500", "--seed", "2"]);
    let (mut ada, ada_id, mut bob, bob_id) = two_players(&server);
    let mut eve = Client::connect(server.addr);
    let eve_id = eve.hello("eve");
    eve.expect_enter(ada_id, "ada");
    eve.expect_enter(bob_id, "bob");
    ada.expect_enter(eve_id, "eve");
    bob.expect_enter(eve_id, "eve");

    // WELCOME is not a packet a client may send: ERROR(UNKNOWN_PACKET), then end of stream.
    eve.send_raw(&header(2, 0, 0));
    let error = eve.recv();
    assert_eq!((error.error_code(), error.player_id), (3, eve_id));
    eve.expect_eof();

    // The others see eve leave and carry on.
    for client in [&mut ada, &mut bob] {
        let leave = client.recv();
        assert_eq!((leave.packet_id, leave.player_id), (7, eve_id));
    }
    bob.send(0, &Packet::Chat { text: "still here" });
    let chat = ada.recv();
    assert_eq!((chat.packet_id, chat.player_id, chat.payload), (5, bob_id, b"still here".to_vec()));
    ada.send(0, &Packet::Ping { payload: b"ok" });
    assert_eq!(ada.recv().packet_id, 9);
}

#[test]
fn an_oversized_header_is_refused_before_its_payload() {
    let server = Server::start(&[]);
    let mut client = Client::connect(server.addr);
    client.send_raw(&header(5, 0, 5000));
    let error = client.recv();
    assert_eq!((error.error_code(), error.player_id), (2, 0));
    client.expect_eof();
}

#[test]
fn silent_and_stalled_clients_time_out() {
    let server = Server::start(&["--hello-timeout", "0.3", "--partial-frame-timeout", "0.3"]);
    let mut silent = Client::connect(server.addr);
    let mut stalled = Client::connect(server.addr);
    let stalled_id = stalled.hello("sloth");
    // Half a header, then nothing.
    stalled.send_raw(&header(8, 0, 0)[..5]);

    let error = silent.recv();
    assert_eq!((error.error_code(), error.player_id), (10, 0));
    silent.expect_eof();
    let error = stalled.recv();
    assert_eq!((error.error_code(), error.player_id), (10, stalled_id));
    stalled.expect_eof();
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut first = Client::connect(server.addr);
    first.hello("first");
    let mut second = Client::connect(server.addr);
    let error = second.recv();
    assert_eq!((error.error_code(), error.player_id), (8, 0));
    second.expect_eof();
    // The first one is still served.
    first.send(0, &Packet::Ping { payload: &[] });
    assert_eq!(first.recv().packet_id, 9);
}

#[test]
fn a_client_that_does_not_read_is_cut_off() {
    let server = Server::start(&[
        "--spawn",
        "500,500",
        "--move-limit",
        "10000000/10000000",
        "--send-queue",
        "64",
        "--write-deadline",
        "1",
    ]);
    let (ada, ada_id, _bob, bob_id) = two_players(&server);
    let mut reader = ada.stream.try_clone().unwrap();
    let (frames_tx, frames) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some(frame) = read_frame(&mut reader) {
            if frames_tx.send(frame).is_err() {
                break;
            }
        }
    });

    // Ada moves in place, as fast as she can; bob never reads. Once his socket buffers and his
    // channel are full, he is cut off and ada sees him leave.
    let batch: Vec<u8> = (0..1024)
        .flat_map(|i| encode_frame_to_vec(ada_id, &Packet::Move(&Move::new(500.0, 0.0, 500.0, 0.0, i))))
        .collect();
    let mut writer = ada.stream;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "bob was never cut off");
        writer.write_all(&batch).unwrap();
        if let Ok(frame) = frames.try_recv() {
            assert_eq!((frame.packet_id, frame.player_id), (7, bob_id), "expected LEAVE, got {frame:?}");
            break;
        }
    }
}

#[cfg(unix)]
#[test]
fn a_signal_stops_the_server_gracefully() {
    let mut server = Server::start(&[]);
    let mut client = Client::connect(server.addr);
    let id = client.hello("ada");
    server.signal("TERM");
    let error = client.recv();
    assert_eq!((error.error_code(), error.player_id), (11, id));
    client.expect_eof();
    drop(client);
    assert!(server.wait_exit().success());
}

#[test]
fn echo_mode_echoes_bytes() {
    let server = Server::start(&["--echo"]);
    let mut client = Client::connect(server.addr);
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client.send_raw(&sent);
    client.shutdown_write();
    let mut echoed = Vec::new();
    client.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.stream.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, sent);
}
