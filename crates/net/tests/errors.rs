//! Every ERROR the server owns, over real sockets: the offender gets the exact code addressed to it
//! (player_id 0 before WELCOME, its id after) and then a clean close; a client connected at the same
//! time gets LEAVE about the offender if it had joined, and keeps being served.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, Move, Packet, PacketKind, encode_frame_to_vec};
use gamewire_world::Rate;
use util::{Client, Frame, TestServer, WAIT, base_rules, each_backend, header_bytes, raw_frame};

fn summary(frames: &[Frame]) -> Vec<(PacketKind, u32)> {
    frames.iter().map(|f| (f.kind(), f.player_id)).collect()
}

/// When the offender sends its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Right after connecting, before HELLO.
    BeforeWelcome,
    /// After its WELCOME, in view of the witness.
    Joined,
}

/// A new offender, at `stage`, sends `bytes(its id or 0)`. It must receive ERROR(`code`) addressed to
/// it as its next frame, then a clean close; `witness` must receive LEAVE about it (if it had joined)
/// and nothing else, and still be served.
fn assert_fatal(
    server: &TestServer,
    witness: &mut Client,
    stage: Stage,
    code: ErrorCode,
    bytes: impl FnOnce(u32) -> Vec<u8>,
) {
    let mut offender = server.connect("offender");
    let id = match stage {
        Stage::BeforeWelcome => 0,
        Stage::Joined => {
            let (id, _) = offender.hello("offender");
            assert_eq!(summary(&offender.sync()), [(PacketKind::Enter, witness.id())]);
            assert_eq!(summary(&witness.sync()), [(PacketKind::Enter, id)]);
            id
        }
    };
    let bytes = bytes(id);
    offender.send_raw(&bytes);
    let context = format!("{stage:?}, bytes {bytes:?}");
    let frame = offender.recv();
    assert_eq!(frame.error_code(), Some(code.code()), "{context}: expected ERROR({code}), got {frame:?}");
    assert_eq!(frame.player_id, id, "{context}: ERROR header player_id");
    offender.expect_eof();
    let frames = match stage {
        Stage::BeforeWelcome => witness.sync(),
        Stage::Joined => recv_through_leave(witness, id, Vec::new()),
    };
    match stage {
        Stage::BeforeWelcome => assert!(frames.is_empty(), "{context}: witness got {frames:?}"),
        Stage::Joined => assert_eq!(summary(&frames), [(PacketKind::Leave, id)], "{context}"),
    }
}

/// `frames` (already received by `client`), then what `client` receives until LEAVE about `id` is among
/// them, then everything up to a PONG. The server sends that LEAVE once it has noticed the close, on its
/// own time: with several workers the close reaches the world from the closed connection's worker,
/// maybe only after a PING `client` sent on its own connection meanwhile.
fn recv_through_leave(client: &mut Client, id: u32, mut frames: Vec<Frame>) -> Vec<Frame> {
    let deadline = Instant::now() + WAIT;
    while !frames.iter().any(|f| f.is(PacketKind::Leave, id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = client
            .recv_within(left)
            .unwrap_or_else(|| panic!("{client:?}: no LEAVE about {id} within {WAIT:?}; got {frames:?}"));
        frames.push(frame);
    }
    frames.extend(client.sync());
    frames
}

fn start_with_witness(
    config: gamewire_net::ServerConfig,
    rules: gamewire_world::Config,
) -> (TestServer, Client) {
    let server = TestServer::start_with(config, rules);
    let witness = server.join("witness");
    (server, witness)
}

fn a_move() -> Move {
    Move::new(500.0, 0.0, 500.0, 0.0, 1)
}

#[test]
fn malformed_payloads_are_fatal() {
    each_backend(|config| {
        let (server, mut witness) = start_with_witness(config, base_rules());
        let joined: [(u32, &[u8]); 10] = [
            (3, &[0; 19]),
            (3, &[0; 21]),
            (3, &[]),
            (5, &[0xFF, 0xFE]),
            (5, b"ok\xC0"), // truncated UTF-8 sequence
            (5, &[]),
            (5, &[b'a'; 257]),
            (4, &[0; 3]),
            (4, &[0; 5]),
            (8, &[0; 65]),
        ];
        for (packet_id, payload) in joined {
            assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::Malformed, |_| {
                raw_frame(packet_id, 0, payload)
            });
        }
        let long_name = "é".repeat(17); // 34 bytes
        let hellos: [&[u8]; 5] = [&[b'a'; 33], &[], &[0xFF], b"caf\xC3", long_name.as_bytes()];
        for payload in hellos {
            assert_fatal(&server, &mut witness, Stage::BeforeWelcome, ErrorCode::Malformed, |_| {
                raw_frame(1, 0, payload)
            });
        }
        // Frames behind the fatal one in the same write are not acted on: no PONG, no CHAT relayed.
        assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::Malformed, |_| {
            let mut bytes = raw_frame(3, 0, &[0; 19]);
            bytes.extend(encode_frame_to_vec(0, &Packet::Chat { text: "after the error" }));
            bytes.extend(encode_frame_to_vec(0, &Packet::Ping { payload: b"after" }));
            bytes
        });
        // The longest legal name and chat are fine.
        let mut player = server.connect("p");
        player.hello(&"n".repeat(32));
        player.send_chat(&"c".repeat(256));
        assert_eq!(summary(&player.sync()), [(PacketKind::Enter, witness.id())]);
        let frames = witness.sync();
        assert_eq!(summary(&frames), [(PacketKind::Enter, player.id()), (PacketKind::Chat, player.id())]);
    });
}

#[test]
fn an_oversized_length_is_refused_from_the_header_alone() {
    for max_payload in [None, Some(300)] {
        each_backend(|mut config| {
            if let Some(max) = max_payload {
                config.max_payload = max;
            }
            let limit = config.max_payload;
            // A server that waited for the payload would time out only long after the test gave up.
            config.partial_frame_timeout = Duration::from_secs(30);
            let (server, mut witness) = start_with_witness(config, base_rules());
            // Headers only: the payload never comes.
            for (packet_id, length) in [(5, limit + 1), (3, u32::MAX), (8, limit + 1000)] {
                assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::TooLarge, |_| {
                    header_bytes(packet_id, 0, length)
                });
            }
            assert_fatal(&server, &mut witness, Stage::BeforeWelcome, ErrorCode::TooLarge, |_| {
                header_bytes(1, 0, limit + 1)
            });
            // Exactly max_payload is not too large: it waits for the payload (and a CHAT that long is
            // MALFORMED, decided once it is whole).
            assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::Malformed, |_| {
                raw_frame(5, 0, &vec![b'x'; limit as usize])
            });
        });
    }
}

#[test]
fn packet_ids_a_client_may_not_send_are_fatal() {
    each_backend(|mut config| {
        config.partial_frame_timeout = Duration::from_secs(30);
        let (server, mut witness) = start_with_witness(config, base_rules());
        for packet_id in [2, 6, 7, 9, 10, 11, 0, 99, 12, u32::MAX] {
            // A header announcing a payload that never comes: decided from the header alone.
            assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::UnknownPacket, |_| {
                header_bytes(packet_id, 0, 20)
            });
        }
        for packet_id in [2, 0, 99] {
            assert_fatal(&server, &mut witness, Stage::BeforeWelcome, ErrorCode::UnknownPacket, |_| {
                header_bytes(packet_id, 0, 8)
            });
        }
        // Whole frames of server packets are refused the same way.
        assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::UnknownPacket, |id| {
            encode_frame_to_vec(id, &Packet::Pong { payload: b"pong" })
        });
    });
}

#[test]
fn a_spoofed_player_id_is_fatal_before_and_after_welcome() {
    each_backend(|config| {
        let (server, mut witness) = start_with_witness(config, base_rules());
        let witness_id = witness.id();
        for spoofed in [7, witness_id, u32::MAX] {
            assert_fatal(&server, &mut witness, Stage::BeforeWelcome, ErrorCode::SpoofedId, |_| {
                encode_frame_to_vec(spoofed, &Packet::Hello { name: "spoofer" })
            });
        }
        assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::SpoofedId, |_| {
            encode_frame_to_vec(witness_id, &Packet::Move(&a_move()))
        });
        assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::SpoofedId, |id| {
            encode_frame_to_vec(id + 1, &Packet::Chat { text: "not me" })
        });
        assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::SpoofedId, |_| {
            encode_frame_to_vec(u32::MAX, &Packet::Ping { payload: b"x" })
        });
        assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::SpoofedId, |_| {
            encode_frame_to_vec(witness_id, &Packet::Attack { target_id: witness_id })
        });
        // Decided from the header alone: the payload never comes, the ERROR does.
        assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::SpoofedId, |id| {
            header_bytes(PacketKind::Move.id(), id + 1, 20)
        });
        assert_fatal(&server, &mut witness, Stage::BeforeWelcome, ErrorCode::SpoofedId, |_| {
            header_bytes(PacketKind::Hello.id(), 3, 5)
        });
    });
}

#[test]
fn anything_but_hello_first_and_a_second_hello_are_bad_state() {
    each_backend(|config| {
        let (server, mut witness) = start_with_witness(config, base_rules());
        let witness_id = witness.id();
        let first_frames = [
            encode_frame_to_vec(0, &Packet::Move(&a_move())),
            encode_frame_to_vec(0, &Packet::Chat { text: "hi" }),
            encode_frame_to_vec(0, &Packet::Ping { payload: b"p" }),
            encode_frame_to_vec(0, &Packet::Attack { target_id: witness_id }),
        ];
        for frame in first_frames {
            assert_fatal(&server, &mut witness, Stage::BeforeWelcome, ErrorCode::BadState, |_| frame);
        }
        for header in [0, 1] {
            assert_fatal(&server, &mut witness, Stage::Joined, ErrorCode::BadState, |id| {
                let header = if header == 0 { 0 } else { id };
                encode_frame_to_vec(header, &Packet::Hello { name: "again" })
            });
        }
        // HELLO then a MOVE in the same write is fine: the MOVE is handled after the WELCOME.
        let mut quick = server.connect("quick");
        let mut bytes = encode_frame_to_vec(0, &Packet::Hello { name: "quick" });
        bytes.extend(encode_frame_to_vec(0, &Packet::Move(&a_move())));
        quick.send_raw(&bytes);
        assert_eq!(quick.recv().kind(), PacketKind::Welcome);
        assert_eq!(summary(&quick.sync()), [(PacketKind::Enter, witness_id)]);
        assert_eq!(
            summary(&witness.sync()),
            [(PacketKind::Enter, quick.id()), (PacketKind::Move, quick.id())]
        );
    });
}

/// A name, when the offender sends, the code that must win, and the bytes (given its id).
type PrecedenceCase = (&'static str, Stage, ErrorCode, fn(u32) -> Vec<u8>);

#[test]
fn several_errors_in_one_frame_follow_the_protocol_order() {
    each_backend(|mut config| {
        config.partial_frame_timeout = Duration::from_secs(30);
        let (server, mut witness) = start_with_witness(config, base_rules());
        let cases: [PrecedenceCase; 9] = [
            ("TOO_LARGE over UNKNOWN_PACKET", Stage::Joined, ErrorCode::TooLarge, |_| {
                header_bytes(99, 0, 5000)
            }),
            ("TOO_LARGE over SPOOFED_ID", Stage::Joined, ErrorCode::TooLarge, |id| {
                header_bytes(5, id + 1, 5000)
            }),
            ("TOO_LARGE over BAD_STATE", Stage::BeforeWelcome, ErrorCode::TooLarge, |_| {
                header_bytes(3, 0, 5000)
            }),
            ("UNKNOWN_PACKET over SPOOFED_ID", Stage::Joined, ErrorCode::UnknownPacket, |id| {
                header_bytes(2, id + 1, 8)
            }),
            (
                "SPOOFED_ID over BAD_STATE (before WELCOME)",
                Stage::BeforeWelcome,
                ErrorCode::SpoofedId,
                |_| encode_frame_to_vec(5, &Packet::Move(&a_move())),
            ),
            ("SPOOFED_ID over BAD_STATE (second HELLO)", Stage::Joined, ErrorCode::SpoofedId, |id| {
                encode_frame_to_vec(id + 1, &Packet::Hello { name: "again" })
            }),
            ("SPOOFED_ID over MALFORMED", Stage::Joined, ErrorCode::SpoofedId, |id| {
                raw_frame(3, id + 1, &[0; 19])
            }),
            ("BAD_STATE over MALFORMED (first frame)", Stage::BeforeWelcome, ErrorCode::BadState, |_| {
                raw_frame(3, 0, &[0; 3])
            }),
            ("BAD_STATE over MALFORMED (second HELLO)", Stage::Joined, ErrorCode::BadState, |_| {
                raw_frame(1, 0, &[b'a'; 33])
            }),
        ];
        for (name, stage, code, bytes) in cases {
            eprintln!("case: {name}");
            assert_fatal(&server, &mut witness, stage, code, bytes);
        }

        // MALFORMED over RATE_LIMITED: with the MOVE bucket empty, a malformed MOVE is MALFORMED (fatal),
        // not a dropped packet.
        let mut offender = server.join("offender");
        offender.sync();
        witness.sync();
        let mut bytes: Vec<u8> =
            (0..70).flat_map(|_| encode_frame_to_vec(0, &Packet::Move(&a_move()))).collect();
        bytes.extend(raw_frame(3, 0, &[0; 19]));
        offender.send_raw(&bytes);
        offender.expect_next_error(ErrorCode::RateLimited);
        offender.expect_next_error(ErrorCode::Malformed);
        offender.expect_eof();
        let frames = recv_through_leave(&mut witness, offender.id(), Vec::new());
        assert_eq!(frames.last().map(|f| (f.kind(), f.player_id)), Some((PacketKind::Leave, offender.id())));
        assert!(frames[..frames.len() - 1].iter().all(|f| f.is(PacketKind::Move, offender.id())));
    });
}

/// Bursts that exceed the MOVE and CHAT buckets: packets are dropped, ERROR(RATE_LIMITED) is sent at
/// most once a second, and the session goes on.
#[test]
fn rate_limited_is_not_fatal_and_sent_at_most_once_a_second() {
    each_backend(|config| {
        let (server, mut witness) = start_with_witness(config, base_rules()); // MOVE 60/s burst 60, CHAT 5/s burst 10
        let mut mover = server.join("mover");
        mover.sync();
        witness.sync();
        let burst = |first: u32, count: u32| -> Vec<u8> {
            (first..first + count)
                .flat_map(|t| encode_frame_to_vec(0, &Packet::Move(&Move::new(500.0, 0.0, 500.0, 0.0, t))))
                .collect()
        };

        mover.send_raw(&burst(0, 80));
        let frames = mover.sync();
        let first_error_at = Instant::now();
        assert_eq!(summary(&frames), [(PacketKind::Error, mover.id())], "one RATE_LIMITED, no correction");
        assert_eq!(frames[0].error_code(), Some(ErrorCode::RateLimited.code()));
        let relayed: Vec<u32> = witness.sync().iter().map(|f| f.as_move().client_time.get()).collect();
        assert!((60..80).contains(&relayed.len()), "{} of 80 MOVEs relayed", relayed.len());
        assert_eq!(relayed[..60], (0..60).collect::<Vec<_>>(), "the burst is accepted, the excess dropped");
        assert!(relayed.windows(2).all(|w| w[0] < w[1]), "in order: {relayed:?}");

        // Within the same second: dropped again, but no second ERROR.
        std::thread::sleep(Duration::from_millis(200));
        mover.send_raw(&burst(100, 40));
        assert!(mover.sync().is_empty(), "a second RATE_LIMITED within a second");
        let relayed = witness.sync().len();
        assert!(relayed < 40, "{relayed} of 40 MOVEs relayed 200 ms after an exhausted burst");

        // A second later it may be said again.
        std::thread::sleep(
            (first_error_at + Duration::from_millis(1050)).saturating_duration_since(Instant::now()),
        );
        mover.send_raw(&burst(200, 80));
        let frames = mover.sync();
        assert_eq!(summary(&frames), [(PacketKind::Error, mover.id())]);
        assert_eq!(frames[0].error_code(), Some(ErrorCode::RateLimited.code()));

        // CHAT has its own bucket (burst 10).
        let mut talker = server.join("talker");
        talker.sync();
        witness.sync();
        mover.sync();
        let chats: Vec<u8> = (0..15)
            .flat_map(|i| encode_frame_to_vec(0, &Packet::Chat { text: &format!("chat {i}") }))
            .collect();
        talker.send_raw(&chats);
        let frames = talker.sync();
        assert_eq!(summary(&frames), [(PacketKind::Error, talker.id())]);
        assert_eq!(frames[0].error_code(), Some(ErrorCode::RateLimited.code()));
        let heard: Vec<String> = witness.sync().iter().map(|f| f.as_chat().to_owned()).collect();
        assert!((10..15).contains(&heard.len()), "{heard:?}");
        assert_eq!(heard[..10], (0..10).map(|i| format!("chat {i}")).collect::<Vec<_>>());

        // ATTACK has its own bucket (burst 4).
        let mut fighter = server.join("fighter");
        fighter.sync();
        let attacks: Vec<u8> = (0..6)
            .flat_map(|_| encode_frame_to_vec(0, &Packet::Attack { target_id: witness.id() }))
            .collect();
        fighter.send_raw(&attacks);
        let frames = fighter.sync();
        let hits = frames.iter().filter(|f| f.kind() == PacketKind::Hit).count();
        let errors: Vec<_> = frames.iter().filter_map(Frame::error_code).collect();
        assert!((4..6).contains(&hits), "{frames:?}");
        assert_eq!(errors, [ErrorCode::RateLimited.code()], "{frames:?}");

        // Nobody was disconnected.
        for client in [&mut mover, &mut talker, &mut fighter, &mut witness] {
            let frames = client.sync();
            assert!(
                frames.iter().all(|f| matches!(
                    f.kind(),
                    PacketKind::Chat | PacketKind::Move | PacketKind::Hit | PacketKind::Enter
                )),
                "{client:?}: {frames:?}"
            );
        }
        assert!(witness.seen().contains(&mover.id()) && witness.seen().contains(&talker.id()));
    });
}

#[test]
fn no_hello_in_time_is_timeout() {
    each_backend(|config| {
        let rules = gamewire_world::Config { hello_timeout: Duration::from_millis(300), ..base_rules() };
        let (server, mut witness) = start_with_witness(config, rules);
        let connected = Instant::now();
        let mut silent = server.connect("silent");
        silent.expect_next_error(ErrorCode::Timeout);
        let waited = connected.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
            "TIMEOUT after {waited:?}, configured 300 ms"
        );
        silent.expect_eof();
        assert!(witness.sync().is_empty());

        // Half a HELLO does not count as one.
        let connected = Instant::now();
        let mut slow = server.connect("slow");
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "slow" });
        slow.send_raw(&hello[..14]);
        slow.expect_next_error(ErrorCode::Timeout);
        assert!(connected.elapsed() >= Duration::from_millis(300));
        slow.expect_eof();
        witness.assert_served();
    });
}

#[test]
fn idle_players_time_out_and_pings_keep_them_alive() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.idle_timeout = Duration::from_millis(500);
        rules.limits.chats = Rate::new(100.0, 100.0);
        let (server, mut witness) = start_with_witness(config, rules);
        let mut idler = server.join("idler");
        idler.sync();
        witness.sync();

        // PINGs every 150 ms for twice the idle timeout keep both alive.
        let start = Instant::now();
        let mut last_sent = Instant::now();
        while start.elapsed() < Duration::from_millis(1000) {
            last_sent = Instant::now();
            idler.assert_served();
            witness.assert_served();
            std::thread::sleep(Duration::from_millis(150));
        }
        // Now the idler stops sending. The witness keeps talking to it: frames *to* the idler do not
        // count as activity.
        let mut witness_frames = Vec::new();
        let mut said = 0;
        let error = loop {
            assert!(last_sent.elapsed() < Duration::from_secs(3), "no TIMEOUT 3 s after the last packet");
            witness.send_chat(&format!("still there? {said}"));
            said += 1;
            witness_frames.extend(witness.sync());
            match idler.recv_within(Duration::from_millis(50)) {
                Some(frame) if frame.kind() == PacketKind::Chat => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Some(frame) => break frame,
                None => {}
            }
        };
        let idle = last_sent.elapsed();
        assert_eq!(error.error_code(), Some(ErrorCode::Timeout.code()), "{error:?}");
        assert_eq!(error.player_id, idler.id());
        assert!(
            idle >= Duration::from_millis(500) && idle < Duration::from_millis(1500),
            "TIMEOUT after {idle:?} idle, configured 500 ms"
        );
        idler.expect_eof();
        let witness_frames = recv_through_leave(&mut witness, idler.id(), witness_frames);
        assert_eq!(summary(&witness_frames), [(PacketKind::Leave, idler.id())]);
    });
}

#[test]
fn a_partial_frame_left_unfinished_is_timeout() {
    each_backend(|mut config| {
        config.partial_frame_timeout = Duration::from_millis(300);
        let (server, mut witness) = start_with_witness(config, base_rules());
        let chat = encode_frame_to_vec(0, &Packet::Chat { text: "0123456789" });
        // Five bytes of a header; a whole header and part of the payload; part of a HELLO.
        let cases: [(Stage, Vec<u8>); 3] = [
            (Stage::Joined, chat[..5].to_vec()),
            (Stage::Joined, chat[..15].to_vec()),
            (Stage::BeforeWelcome, encode_frame_to_vec(0, &Packet::Hello { name: "late" })[..5].to_vec()),
        ];
        for (stage, bytes) in cases {
            let started = Instant::now();
            let mut timer = None;
            assert_fatal(&server, &mut witness, stage, ErrorCode::Timeout, |_| {
                timer = Some(Instant::now());
                bytes.clone()
            });
            let waited = timer.expect("bytes sent").elapsed();
            assert!(waited >= Duration::from_millis(300), "{stage:?}: TIMEOUT after only {waited:?}");
            assert!(started.elapsed() < Duration::from_secs(3), "{stage:?}: too slow");
        }
    });
}

#[test]
fn connections_beyond_the_limit_are_refused_with_server_full() {
    each_backend(|mut config| {
        config.max_connections = 2;
        let server = TestServer::start(config);
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        alice.sync();
        bob.sync();
        let mut third = server.connect("third");
        third.expect_next_error(ErrorCode::ServerFull);
        third.expect_eof();

        // The two served keep being served.
        let m = Move::new(501.0, 0.0, 500.0, 1.0, 42);
        alice.send_move(m);
        assert!(alice.sync().is_empty()); // handled before bob's PING, whatever worker each is on
        let frames = bob.sync();
        assert_eq!(summary(&frames), [(PacketKind::Move, alice.id())]);

        // A freed place can be taken again, and a connection that has not sent HELLO holds one.
        let bob_id = bob.id();
        drop(bob);
        let frame = alice.recv(); // whenever the server notices (bob's worker may not be alice's)
        assert!(frame.is(PacketKind::Leave, bob_id), "{frame:?}");
        assert!(alice.sync().is_empty());
        let mut carol = server.connect("carol");
        carol.expect_silence(Duration::from_millis(100)); // nothing is sent before HELLO
        let mut fourth = server.connect("fourth");
        fourth.expect_next_error(ErrorCode::ServerFull);
        fourth.expect_eof();
        carol.hello("carol");
        assert_eq!(summary(&carol.sync()), [(PacketKind::Enter, alice.id())]);
    });
}

#[test]
fn loopback_peers_are_not_capped_per_ip_unless_asked() {
    each_backend(|mut config| {
        // Without `cap_loopback`, a cap of 2 does not apply to 127.0.0.1 (load tests run from the
        // server's host); `connections_beyond_the_per_ip_cap_are_refused_with_server_full` turns it on.
        config.max_connections_per_ip = 2;
        let server = TestServer::start(config);
        let mut clients: Vec<Client> = ["alice", "bob", "carol", "dave"].map(|name| server.join(name)).into();
        for client in &mut clients {
            client.sync();
        }
        for client in &mut clients {
            client.assert_served();
        }
    });
}

#[test]
fn connections_beyond_the_per_ip_cap_are_refused_with_server_full() {
    each_backend(|mut config| {
        config.max_connections_per_ip = 3;
        // The tests' clients are on 127.0.0.1, exempt unless asked.
        config.cap_loopback = true;
        let server = TestServer::start(config);
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        let mut carol = server.join("carol");
        for client in [&mut alice, &mut bob, &mut carol] {
            client.sync();
        }
        // A fourth from 127.0.0.1 is refused like SERVER_FULL, whatever worker takes it.
        let mut fourth = server.connect("fourth");
        fourth.expect_next_error(ErrorCode::ServerFull);
        fourth.expect_eof();

        // The three keep being served.
        alice.send_move(Move::new(501.0, 0.0, 500.0, 1.0, 7));
        assert!(alice.sync().is_empty());
        for client in [&mut bob, &mut carol] {
            assert_eq!(summary(&client.sync()), [(PacketKind::Move, alice.id())]);
        }

        // One closes; once the server has noticed, a new connection from the same address is served.
        let bob_id = bob.id();
        drop(bob);
        for client in [&mut alice, &mut carol] {
            let frame = client.recv();
            assert!(frame.is(PacketKind::Leave, bob_id), "{frame:?}");
        }
        // The LEAVE may come from the world thread before bob's worker gave its place back: retry,
        // within a bound, while the place is still held.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut dave = loop {
            let mut dave = server.connect("dave");
            dave.send(0, &Packet::Hello { name: "dave" });
            let first = dave.recv();
            if first.kind() == PacketKind::Welcome {
                break dave;
            }
            assert_eq!(first.error_code(), Some(ErrorCode::ServerFull.code()), "{first:?}");
            dave.expect_eof();
            assert!(Instant::now() < deadline, "the closed connection's place was never given back");
        };
        let mut entered = summary(&dave.sync());
        entered.sort_by_key(|&(_, id)| id);
        let mut expected = vec![(PacketKind::Enter, alice.id()), (PacketKind::Enter, carol.id())];
        expected.sort_by_key(|&(_, id)| id);
        assert_eq!(entered, expected);
        let dave_id = dave.id();
        for client in [&mut alice, &mut carol] {
            assert_eq!(summary(&client.sync()), [(PacketKind::Enter, dave_id)]);
        }
        // Full again: the next one is refused.
        let mut fifth = server.connect("fifth");
        fifth.expect_next_error(ErrorCode::ServerFull);
        fifth.expect_eof();
        alice.assert_served();
        carol.assert_served();
        dave.assert_served();
    });
}

fn flood_chat(i: u64) -> String {
    let mut text = format!("flood {i:08} ");
    text.extend(std::iter::repeat_n('.', 256 - text.len()));
    text
}

/// One element of the flooder's stream: CHAT `i` or MOVE with client_time `i`.
fn check_flood_frame(frame: &Frame, flooder: u32, index: u64) {
    assert_eq!(frame.player_id, flooder, "frame {index}: {frame:?}");
    if index.is_multiple_of(2) {
        assert_eq!(frame.as_chat(), flood_chat(index / 2), "frame {index}");
    } else {
        assert_eq!(frame.as_move().client_time.get() as u64, index / 2, "frame {index}");
    }
}

#[test]
fn a_client_that_does_not_read_is_cut_off_as_slow_consumer() {
    each_backend(|mut config| {
        let mut rules = base_rules();
        config.send_soft_limit = 16 << 10;
        config.send_hard_limit = 64 << 10;
        config.write_deadline = Duration::from_millis(300);
        rules.limits.chats = Rate::new(1e6, 1e6);
        rules.limits.moves = Rate::new(1e6, 1e6);
        let server = TestServer::start_with(config, rules);
        let mut reader = server.join("reader");
        let mut flooder = server.join("flooder");
        let mut slow = Client::connect_with_receive_buffer(server.addr(), "slow", 4096);
        slow.hello("slow");
        for client in [&mut reader, &mut flooder, &mut slow] {
            client.sync();
        }
        let (flooder_id, slow_id) = (flooder.id(), slow.id());
        // From here on `slow` reads nothing until it has been cut off.

        // The reader takes in everything the flooder sends, in order, and reports its progress so that
        // the flood never outruns it: the reader must not become a slow consumer itself.
        let progress = Arc::new(AtomicU64::new(0));
        let reader_progress = Arc::clone(&progress);
        let reader_thread = std::thread::spawn(move || {
            let mut index = 0u64;
            let mut saw_leave = false;
            loop {
                let frame = reader.recv();
                if frame.is(PacketKind::Leave, slow_id) {
                    saw_leave = true;
                    continue;
                }
                if frame.kind() == PacketKind::Chat && frame.as_chat() == "end" {
                    return (reader, index, saw_leave);
                }
                check_flood_frame(&frame, flooder_id, index);
                index += 1;
                reader_progress.store(index, Ordering::Release);
            }
        });

        let mut sent = 0u64;
        let flood_started = Instant::now();
        let cut_at = loop {
            assert!(
                flood_started.elapsed() < Duration::from_secs(10) && sent < 200_000,
                "slow was never cut off ({sent} frames flooded)"
            );
            if let Some(frame) = flooder.recv_within(Duration::ZERO) {
                assert!(frame.is(PacketKind::Leave, slow_id), "flooder got {frame:?}");
                break Instant::now();
            }
            let lag_deadline = Instant::now() + WAIT;
            while sent - progress.load(Ordering::Acquire) > 1000 {
                assert!(Instant::now() < lag_deadline, "the reader stalled");
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut batch = Vec::new();
            for _ in 0..50 {
                let i = sent / 2;
                batch.extend(encode_frame_to_vec(0, &Packet::Chat { text: &flood_chat(i) }));
                let m = Move::new(500.0, 0.0, 500.0, 0.0, i as u32);
                batch.extend(encode_frame_to_vec(0, &Packet::Move(&m)));
                sent += 2;
            }
            flooder.send_raw(&batch);
        };

        // Reading now: a prefix of the flood, then ERROR(SLOW_CONSUMER) and a clean close, or a reset.
        let (frames, end) = slow.recv_to_end();
        eprintln!(
            "cut after {:?}; slow read {} frames then {end:?}; {sent} sent",
            cut_at - flood_started,
            frames.len()
        );
        let (last, flood) = match end {
            util::End::Eof => {
                let (last, flood) = frames.split_last().expect("at least the ERROR");
                assert_eq!(last.error_code(), Some(ErrorCode::SlowConsumer.code()), "last frame {last:?}");
                (Some(last), flood)
            }
            util::End::Reset(_) => (None, &frames[..]),
        };
        assert!((flood.len() as u64) < sent, "slow got the whole flood: it was not cut off early");
        for (index, frame) in flood.iter().enumerate() {
            check_flood_frame(frame, flooder_id, index as u64);
        }
        if let Some(error) = last {
            assert_eq!(error.player_id, slow_id);
        }

        // The others were not affected: the reader got every frame, and both are still served.
        flooder.send_chat("end");
        let (mut reader, read, saw_leave) = reader_thread.join().expect("reader thread");
        assert_eq!(read, sent, "the reader got every flooded frame");
        assert!(saw_leave, "the reader saw slow leave");
        assert!(flooder.sync().is_empty());
        let m = Move::new(500.0, 0.0, 500.0, 0.0, 4242);
        flooder.send_move(m);
        assert_eq!(reader.recv().as_move().client_time.get(), 4242);
        reader.assert_served();
        let mut newcomer = server.join("newcomer");
        let mut seen: Vec<u32> = newcomer.sync().iter().map(|f| f.player_id).collect();
        seen.sort_unstable();
        let mut expected = vec![reader.id(), flooder_id];
        expected.sort_unstable();
        assert_eq!(seen, expected, "slow is gone");
    });
}

/// Clients that do not read, each with a send queue within its limits (below the soft limit, so never
/// SLOW_CONSUMER), together hold more frames than the buffer pool. The others must keep being served:
/// a client elsewhere still gets its PONGs, and no client that wrote whole frames is cut off with
/// TIMEOUT for "a partial frame left unfinished".
#[test]
fn clients_that_do_not_read_but_stay_within_their_limits_cannot_freeze_the_others() {
    const PAIRS: usize = 48;
    const CHATS: usize = 800; // 214 KB per talker: its listener's queue stays below the 256 KiB soft limit
    each_backend(|mut config| {
        let mut rules = base_rules();
        // The 4 MiB test pool and protocol v1's default send limits (soft 256 KiB, hard 1 MiB, 5 s).
        rules.aoi_radius = 10.0;
        rules.max_speed = 1000.0;
        rules.limits.chats = Rate::new(1e6, 1e6);
        config.partial_frame_timeout = Duration::from_secs(1);
        let server = TestServer::start_with(config, rules);
        let mut bystander = server.join("bystander"); // at the spawn point, alone in its radius
        // Pairs of a talker and a listener that never reads, each pair on its own spot 20 apart on a
        // 7 x 7 grid around the spawn point (its centre is the bystander's).
        let spots = (0..49)
            .filter(|&i| i != 24)
            .map(|i| (500.0 + 20.0 * (i % 7) as f32 - 60.0, 500.0 + 20.0 * (i / 7) as f32 - 60.0));
        let mut pairs = Vec::new();
        for (pair, (x, z)) in spots.take(PAIRS).enumerate() {
            let mut talker = server.join(&format!("talker{pair}"));
            let mut listener =
                Client::connect_with_receive_buffer(server.addr(), &format!("listener{pair}"), 4096);
            listener.hello(&format!("listener{pair}"));
            for client in [&mut talker, &mut listener] {
                client.send_move(Move::new(x, 0.0, z, 0.0, 0));
                client.sync();
            }
            pairs.push((talker, listener));
        }
        for (talker, listener) in &mut pairs {
            talker.sync();
            listener.sync(); // the last read of the listeners
            talker.stream().set_write_timeout(Some(WAIT)).unwrap();
        }
        bystander.sync();

        let text = "z".repeat(256);
        let flood: Vec<u8> =
            (0..CHATS).flat_map(|_| encode_frame_to_vec(0, &Packet::Chat { text: &text })).collect();
        let started = Instant::now();
        for (talker, _) in &mut pairs {
            talker.send_raw(&flood);
        }
        // For two seconds the bystander PINGs every 100 ms.
        let mut slowest = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(2) {
            let sent = Instant::now();
            bystander.send(0, &Packet::Ping { payload: b"still served?" });
            let pong = bystander.recv_within(Duration::from_secs(3));
            slowest = slowest.max(sent.elapsed());
            if pong.is_none() {
                break;
            }
            assert!(pong.as_ref().is_some_and(|f| f.kind() == PacketKind::Pong), "{pong:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut cut_off = Vec::new();
        for (talker, _) in &mut pairs {
            let frames = talker.recv_for(Duration::from_millis(20));
            if let Some(code) = frames.iter().find_map(Frame::error_code) {
                cut_off.push((talker.id(), code));
            } else if talker.has_ended() {
                cut_off.push((talker.id(), 0));
            }
        }
        assert!(
            slowest < Duration::from_secs(2) && cut_off.is_empty(),
            "{PAIRS} clients that do not read, each within its send limits, froze the server: the \
             bystander's slowest PING took {slowest:?} (3 s = no PONG at all), and {} of {PAIRS} talkers \
             were cut off though they wrote only whole frames (talker id, ERROR code): {cut_off:?}",
            cut_off.len()
        );
    });
}

#[test]
fn shutdown_sends_what_is_queued_then_shutting_down_to_everyone() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.limits.chats = Rate::new(1000.0, 1000.0);
        let mut server = TestServer::start_with(config, rules);
        let addr = server.addr();
        let mut lurker = server.connect("lurker"); // never sends HELLO
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        let mut carol = Client::connect_with_receive_buffer(addr, "carol", 4096);
        carol.hello("carol");
        for client in [&mut alice, &mut bob, &mut carol] {
            client.sync();
        }
        // alice's last words, handled before the shutdown (her PONG proves it); carol is not reading,
        // so part of them may still wait in the server's queue for her.
        let words: Vec<String> = (0..200).map(|i| format!("last words {i} {}", "~".repeat(200))).collect();
        let bytes: Vec<u8> =
            words.iter().flat_map(|text| encode_frame_to_vec(0, &Packet::Chat { text })).collect();
        alice.send_raw(&bytes);
        alice.assert_served();
        server.shutdown_handle().shutdown();
        assert_no_one_is_admitted_after_the_shutdown(addr);

        for viewer in [&mut bob, &mut carol] {
            for text in &words {
                let frame = viewer.recv();
                assert!(frame.is(PacketKind::Chat, alice.id()), "{viewer:?}: {frame:?}");
                assert_eq!(frame.as_chat(), text);
            }
            // LEAVE about players closed first may come before the ERROR; nothing after it.
            viewer.expect_error(ErrorCode::ShuttingDown);
            viewer.expect_eof();
        }
        alice.expect_error(ErrorCode::ShuttingDown);
        alice.expect_eof();
        lurker.expect_next_error(ErrorCode::ShuttingDown);
        lurker.expect_eof();
        drop((lurker, alice, bob, carol));

        let stats = server.wait_stopped(WAIT).expect("run() returns Ok after a shutdown");
        // The latecomer may have raced the request on a worker that had not seen it yet.
        assert!((4..=5).contains(&stats.accepted), "{stats:?}");
        assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed");
    });
}

/// A newcomer after a shutdown request is refused, or (if it raced the request) told SHUTTING_DOWN:
/// whatever it sends, its connection ends within [`WAIT`], never to be served on.
fn assert_no_one_is_admitted_after_the_shutdown(addr: std::net::SocketAddr) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(&encode_frame_to_vec(0, &Packet::Hello { name: "latecomer" }));
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("a latecomer's connection stayed open after the shutdown: {error}"),
        }
    }
    let mut decoder = gamewire_proto::FrameDecoder::new(gamewire_proto::Direction::ToClient, 65536);
    let mut input = &received[..];
    let mut welcomed = false;
    while let Some(frame) = decoder.next_frame(&mut input).expect("valid frames") {
        welcomed |= frame.packet_id() == PacketKind::Welcome as u32;
        if frame.packet_id() == PacketKind::Error as u32 {
            assert!(welcomed || input.is_empty(), "nothing follows a fatal ERROR");
        }
    }
    if welcomed {
        let shutting_down = ErrorCode::ShuttingDown.code().to_le_bytes();
        assert!(received.windows(4).any(|w| w == shutting_down), "a latecomer was served: {received:?}");
    }
}

/// A slow consumer cut off while it still reads nothing really goes: its place is free again, on every
/// backend (with zero-copy sends too, whose buffers the kernel keeps until the unread socket is gone).
#[test]
fn a_slow_consumer_that_never_reads_frees_its_place() {
    each_backend(|mut config| {
        let mut rules = base_rules();
        config.max_connections = 2;
        config.send_soft_limit = 16 << 10;
        config.send_hard_limit = 64 << 10;
        config.write_deadline = Duration::from_millis(200);
        config.close_linger = Duration::from_millis(200);
        rules.limits.chats = Rate::new(1e6, 1e6);
        let server = TestServer::start_with(config, rules);
        let mut flooder = server.join("flooder");
        let mut silent = Client::connect_with_receive_buffer(server.addr(), "silent", 4096);
        let (silent_id, _) = silent.hello("silent");
        flooder.sync();
        // `silent` never reads again: flood it until the server cuts it off, which its LEAVE shows.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.extend(encode_frame_to_vec(0, &Packet::Chat { text: &flood_chat(i) }));
        }
        loop {
            assert!(Instant::now() < deadline, "the silent client was never cut off");
            flooder.send_raw(&batch);
            let frames = flooder.sync();
            if frames.iter().any(|frame| frame.is(PacketKind::Leave, silent_id)) {
                break;
            }
        }
        // Its place comes back once the connection is dropped (after the linger): a newcomer gets in.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut newcomer = server.connect("newcomer");
            newcomer.send(0, &Packet::Hello { name: "newcomer" });
            let frame = newcomer.recv();
            if frame.kind() == PacketKind::Welcome {
                break;
            }
            assert_eq!(frame.error_code(), Some(ErrorCode::ServerFull.code()), "{frame:?}");
            assert!(Instant::now() < deadline, "the cut-off client's place never came back");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(silent);
    });
}
