//! The whole protocol v1 session over real sockets: WELCOME, ENTER/LEAVE, MOVE relay and corrections,
//! CHAT, ATTACK/HIT and respawn, PING/PONG, disconnects, and frames split or batched across writes.

mod util;

use std::time::Duration;

use gamewire_proto::{Move, Packet, PacketKind, encode_frame_to_vec};
use gamewire_world::Rate;
use util::{Client, Frame, SPAWN, TestServer, base_rules, each_backend};

/// (kind, header player_id) of each frame, for compact assertions.
fn summary(frames: &[Frame]) -> Vec<(PacketKind, u32)> {
    frames.iter().map(|f| (f.kind(), f.player_id)).collect()
}

/// The 20 payload bytes of `m`, as a client puts them on the wire.
fn move_bytes(m: &Move) -> Vec<u8> {
    encode_frame_to_vec(0, &Packet::Move(m))[12..].to_vec()
}

/// Moves `client` to (x, z) and waits until the server has handled it (the mover receives nothing
/// for an accepted MOVE, but ENTER/LEAVE about others may arrive and are returned).
fn move_to(client: &mut Client, x: f32, z: f32) -> Vec<Frame> {
    client.send_move(Move::new(x, 0.0, z, 0.0, 0));
    let frames = client.sync();
    assert!(
        frames.iter().all(|f| f.player_id != client.id()),
        "a legal MOVE to ({x}, {z}) was corrected: {frames:?}"
    );
    frames
}

fn assert_move_about(frame: &Frame, mover: u32, expected: &Move) {
    assert!(frame.is(PacketKind::Move, mover), "expected MOVE about {mover}, got {frame:?}");
    assert_eq!(frame.payload, move_bytes(expected), "relayed MOVE payload differs from what was sent");
}

fn assert_correction(frame: &Frame, mover: u32, last: (f32, f32, f32), client_time: u32) {
    assert!(frame.is(PacketKind::Move, mover), "expected a correction about {mover}, got {frame:?}");
    let m = frame.as_move();
    assert_eq!((m.x.get(), m.y.get(), m.z.get()), last, "a correction holds the last accepted position");
    assert_eq!(m.velocity.get(), 0.0, "a correction has velocity 0");
    assert_eq!(m.client_time.get(), client_time, "a correction echoes the client_time sent");
}

#[test]
fn welcome_carries_a_fresh_id_the_spawn_point_and_the_world_parameters() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.world_w = 800.0;
        rules.world_h = 600.0;
        rules.aoi_radius = 40.0;
        rules.max_speed = 15.0;
        rules.spawn = Some((123.5, 456.25));
        let server = TestServer::start_with(config, rules);
        let mut alice = server.connect("alice");
        let (alice_id, welcome) = alice.hello("alice");
        assert_ne!(alice_id, 0);
        assert_eq!((welcome.x, welcome.z), (123.5, 456.25), "spawn at the configured point");
        assert!(welcome.y.is_finite() && welcome.y.abs() <= 10_000.0, "spawn height {}", welcome.y);
        assert_eq!(welcome.hp, 100);
        assert_eq!((welcome.world_w, welcome.world_h), (800.0, 600.0));
        assert_eq!(welcome.aoi_radius, 40.0);
        assert_eq!(welcome.max_speed, 15.0);
        let bob = server.join("bob");
        assert_ne!(bob.id(), alice_id, "two players, two ids");
        assert_eq!(bob.welcome().hp, 100);
    });
}

#[test]
fn random_spawns_lie_inside_the_world() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.spawn = None;
        rules.world_w = 300.0;
        rules.world_h = 200.0;
        let server = TestServer::start_with(config, rules);
        let clients: Vec<Client> = (0..12).map(|i| server.join(&format!("p{i}"))).collect();
        for client in &clients {
            let w = client.welcome();
            assert!((0.0..300.0).contains(&w.x) && (0.0..200.0).contains(&w.z), "spawn {w:?}");
        }
    });
}

#[test]
fn joining_sends_enter_both_ways() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.max_speed = 1000.0;
        let server = TestServer::start_with(config, rules);
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        // Right after its WELCOME, bob gets one ENTER per player he sees.
        let frames = bob.sync();
        assert_eq!(summary(&frames), [(PacketKind::Enter, alice.id())]);
        let (head, name) = frames[0].as_enter();
        assert_eq!(name, "alice");
        assert_eq!((head.x.get(), head.z.get(), head.hp.get()), (SPAWN.0, SPAWN.1, 100));
        let frames = alice.sync();
        assert_eq!(summary(&frames), [(PacketKind::Enter, bob.id())]);
        assert_eq!(frames[0].as_enter().1, "bob");

        // An ENTER carries the player's current position, not its spawn.
        alice.send_move(Move::new(510.0, 2.5, 505.0, 1.0, 7));
        // alice's PONG first: it proves her MOVE was handled before bob's PING (with several workers,
        // a PING on another connection may otherwise be handled first).
        assert!(alice.sync().is_empty(), "a legal MOVE was corrected");
        assert_eq!(summary(&bob.sync()), [(PacketKind::Move, alice.id())]);
        let mut carol = server.join("carol");
        let frames = carol.sync();
        assert_eq!(frames.len(), 2, "carol sees alice and bob: {frames:?}");
        let about_alice = frames.iter().find(|f| f.player_id == alice.id()).expect("ENTER about alice");
        let (head, name) = about_alice.as_enter();
        assert_eq!((head.x.get(), head.y.get(), head.z.get()), (510.0, 2.5, 505.0));
        assert_eq!((name.as_str(), head.hp.get()), ("alice", 100));
        let about_bob = frames.iter().find(|f| f.player_id == bob.id()).expect("ENTER about bob");
        assert_eq!(about_bob.as_enter().1, "bob");
        assert_eq!(summary(&alice.sync()), [(PacketKind::Enter, carol.id())]);
        assert_eq!(summary(&bob.sync()), [(PacketKind::Enter, carol.id())]);
        assert_eq!(carol.seen().len(), 2);
    });
}

#[test]
fn move_is_relayed_byte_for_byte_to_viewers_and_not_back_to_the_mover() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.max_speed = 1000.0;
        let server = TestServer::start_with(config, rules);
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        let mut carol = server.join("carol");
        let mut far = server.join("far");
        move_to(&mut far, 500.0, 590.0);
        for client in [&mut alice, &mut bob, &mut carol, &mut far] {
            client.sync();
        }
        assert!(far.seen().is_empty());

        // Header 0 and the mover's own id are both accepted; the relay carries the mover's id.
        let moves = [
            (0, Move::new(510.0, 3.0, 495.0, 12.5, 0xDEAD_BEEF)),
            (alice.id(), Move::new(511.25, -3.5, 494.0, 0.0, 0)),
            (0, Move::new(511.25, -3.5, 494.0, 1000.0, u32::MAX)),
        ];
        for (header, m) in moves {
            alice.send(header, &Packet::Move(&m));
            // The mover's PONG first: it proves the MOVE was handled before the others' PINGs.
            assert!(alice.sync().is_empty(), "the mover receives nothing back");
            for viewer in [&mut bob, &mut carol] {
                let frames = viewer.sync();
                assert_eq!(frames.len(), 1, "{frames:?}");
                assert_move_about(&frames[0], alice.id(), &m);
            }
            assert!(far.sync().is_empty(), "a player out of view receives nothing");
        }
    });
}

#[test]
fn rejected_move_is_corrected_to_the_mover_only() {
    each_backend(|config| {
        let mut rules = base_rules();
        // Near the world's corner, so that "outside the world" is a short, otherwise legal step.
        rules.spawn = Some((1.0, 999.5));
        let server = TestServer::start_with(config, rules); // max_speed 20: 2 units of slack per MOVE
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        alice.sync();
        bob.sync();
        let first = Move::new(1.5, 7.0, 999.0, 5.0, 1);
        alice.send_move(first);
        assert!(alice.sync().is_empty(), "a legal MOVE was corrected"); // handled before bob's PING
        assert_move_about(&bob.sync()[0], alice.id(), &first);
        let last = (1.5, 7.0, 999.0);

        let rejected = [
            Move::new(300.0, 0.0, 700.0, 5.0, 10), // far beyond max_speed
            Move::new(f32::NAN, 7.0, 999.0, 5.0, 11),
            Move::new(1.5, f32::INFINITY, 999.0, 5.0, 12),
            Move::new(1.5, 7.0, f32::NEG_INFINITY, 5.0, 13),
            Move::new(-0.25, 7.0, 999.0, 5.0, 14), // x < 0
            Move::new(1.5, 7.0, 1000.0, 5.0, 15),  // z == world_h lies outside
            Move::new(1.5, 10_000.5, 999.0, 5.0, 16),
            Move::new(1.5, -10_001.0, 999.0, 5.0, 17),
            Move::new(1.5, 7.0, 999.0, 20.5, 18), // velocity above max_speed
            Move::new(1.5, 7.0, 999.0, -1.0, 19),
            Move::new(1.5, 7.0, 999.0, f32::NAN, 20),
        ];
        for m in rejected {
            alice.send_move(m);
            let frames = alice.sync();
            assert_eq!(frames.len(), 1, "one correction for {m:?}: {frames:?}");
            assert_correction(&frames[0], alice.id(), last, m.client_time.get());
        }
        assert!(bob.sync().is_empty(), "nothing is broadcast for a rejected MOVE");

        // The limits themselves are legal: x = 0, |y| = 10000, velocity = max_speed.
        let edge = Move::new(0.0, 10_000.0, 999.0, 20.0, 30);
        alice.send_move(edge);
        assert!(alice.sync().is_empty(), "a legal MOVE at the limits was corrected");
        assert_move_about(&bob.sync()[0], alice.id(), &edge);
        // A correction now holds the new position.
        alice.send_move(Move::new(500.0, 0.0, 500.0, 1.0, 31));
        let frames = alice.sync();
        assert_correction(&frames[0], alice.id(), (0.0, 10_000.0, 999.0), 31);

        // Speed is measured against the time since the last accepted position: after a 300 ms pause
        // 7 units are legal (20 × 0.4 = 8), 3 more at once are not (20 × 0.1 = 2).
        std::thread::sleep(Duration::from_millis(300));
        let far_step = Move::new(7.0, 10_000.0, 999.0, 20.0, 40);
        let too_soon = Move::new(7.0, 10_000.0, 996.0, 20.0, 41);
        let mut batch = encode_frame_to_vec(0, &Packet::Move(&far_step));
        batch.extend(encode_frame_to_vec(0, &Packet::Move(&too_soon)));
        alice.send_raw(&batch);
        let frames = alice.sync();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_correction(&frames[0], alice.id(), (7.0, 10_000.0, 999.0), 41);
        let frames = bob.sync();
        assert_eq!(frames.len(), 1, "only the legal step is relayed: {frames:?}");
        assert_move_about(&frames[0], alice.id(), &far_step);
    });
}

#[test]
fn crossing_the_radius_sends_enter_and_leave_both_ways() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.max_speed = 1000.0;
        let server = TestServer::start_with(config, rules);
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        let mut spectator = server.join("spectator");
        move_to(&mut spectator, 500.0, 590.0);
        for client in [&mut alice, &mut bob, &mut spectator] {
            client.sync();
        }
        let (a, b) = (alice.id(), bob.id());

        // 60 units apart: out of view, both ways, and no MOVE.
        let frames = move_to(&mut alice, 560.0, 500.0);
        assert_eq!(summary(&frames), [(PacketKind::Leave, b)]);
        assert_eq!(summary(&bob.sync()), [(PacketKind::Leave, a)]);

        // Exactly 50 apart: seeing is inclusive. ENTERs carry the current positions.
        let frames = move_to(&mut alice, 550.0, 500.0);
        assert_eq!(summary(&frames), [(PacketKind::Enter, b)]);
        let (head, name) = frames[0].as_enter();
        assert_eq!((head.x.get(), head.z.get(), name.as_str()), (500.0, 500.0, "bob"));
        let frames = bob.sync();
        assert_eq!(summary(&frames), [(PacketKind::Enter, a)]);
        let (head, name) = frames[0].as_enter();
        assert_eq!((head.x.get(), head.z.get(), head.hp.get(), name.as_str()), (550.0, 500.0, 100, "alice"));

        // Still in view: a MOVE, not an ENTER.
        let step = Move::new(549.0, 1.0, 500.0, 3.0, 77);
        alice.send_move(step);
        assert!(alice.sync().is_empty());
        let frames = bob.sync();
        assert_eq!(frames.len(), 1);
        assert_move_about(&frames[0], a, &step);

        // The other one moving works the same.
        let frames = move_to(&mut bob, 450.0, 500.0);
        assert_eq!(summary(&frames), [(PacketKind::Leave, a)]);
        assert_eq!(summary(&alice.sync()), [(PacketKind::Leave, b)]);
        let frames = move_to(&mut bob, 499.5, 500.0);
        assert_eq!(summary(&frames), [(PacketKind::Enter, a)]);
        assert_eq!(summary(&alice.sync()), [(PacketKind::Enter, b)]);

        assert!(spectator.sync().is_empty(), "a player whose view does not change hears nothing");
        assert!(spectator.seen().is_empty());
    });
}

#[test]
fn chat_is_relayed_byte_for_byte_to_viewers_only() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.max_speed = 1000.0;
        let server = TestServer::start_with(config, rules);
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        let mut far = server.join("far");
        move_to(&mut far, 500.0, 590.0);
        alice.sync();
        bob.sync();
        let longest = "x".repeat(256);
        let multibyte = "é".repeat(128); // 256 bytes, 128 characters
        let texts = ["hello", "héllo wörld ✓ 🎮", "!", "line\nbreak\0nul", &longest, &multibyte];
        for (i, text) in texts.into_iter().enumerate() {
            let header = if i % 2 == 0 { 0 } else { alice.id() };
            alice.send(header, &Packet::Chat { text });
            // The speaker's PONG first: it proves the CHAT was handled before the others' PINGs.
            assert!(alice.sync().is_empty(), "the speaker hears nothing back");
            let frames = bob.sync();
            assert_eq!(summary(&frames), [(PacketKind::Chat, alice.id())]);
            assert_eq!(frames[0].payload, text.as_bytes(), "CHAT relayed byte for byte");
            assert!(far.sync().is_empty(), "a player out of view hears nothing");
        }
    });
}

#[test]
fn attack_sends_hit_to_attacker_target_and_viewers_of_the_attacker() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.max_speed = 1000.0;
        let server = TestServer::start_with(config, rules);
        let mut attacker = server.join("attacker");
        let mut target = server.join("target");
        let mut watcher = server.join("watcher");
        let mut target_side = server.join("target-side");
        let mut far = server.join("far");
        // attacker (530,500), target (525,500): 5 apart, in range. watcher (500,500) sees both.
        // target-side (476,500) sees the target (49) but not the attacker (54). far (500,590) sees
        // nobody.
        move_to(&mut attacker, 530.0, 500.0);
        move_to(&mut target, 525.0, 500.0);
        move_to(&mut target_side, 476.0, 500.0);
        move_to(&mut far, 500.0, 590.0);
        for client in [&mut attacker, &mut target, &mut watcher, &mut target_side, &mut far] {
            client.sync();
        }
        assert!(!target_side.seen().contains(&attacker.id()));
        assert!(target_side.seen().contains(&target.id()));

        let (attacker_id, target_id) = (attacker.id(), target.id());
        for expected_hp in [90, 80] {
            attacker.send(0, &Packet::Attack { target_id });
            for client in [&mut attacker, &mut target, &mut watcher] {
                let frames = client.sync();
                assert_eq!(summary(&frames), [(PacketKind::Hit, attacker_id)], "{client:?}");
                let hit = frames[0].as_hit();
                assert_eq!(
                    (hit.target_id.get(), hit.damage.get(), hit.target_hp.get()),
                    (target_id, 10, expected_hp)
                );
            }
            assert!(target_side.sync().is_empty(), "HIT goes to viewers of the attacker only");
            assert!(far.sync().is_empty());
        }
        // The other way round: the target strikes back with its own id in the header. Its own PONG
        // first: it proves the ATTACK was handled before anyone else's PING (with several workers,
        // PINGs from other connections may otherwise be handled first).
        target.send(target_id, &Packet::Attack { target_id: attacker_id });
        for client in [&mut target, &mut attacker, &mut watcher, &mut target_side] {
            let frames = client.sync();
            assert_eq!(summary(&frames), [(PacketKind::Hit, target_id)], "{client:?}");
            assert_eq!(frames[0].as_hit().target_hp.get(), 90);
        }
    });
}

#[test]
fn a_kill_respawns_the_target_with_full_hp_and_updates_every_view() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.max_speed = 1000.0;
        rules.damage = 50;
        let server = TestServer::start_with(config, rules);
        let mut killer = server.join("killer");
        let mut victim = server.join("victim");
        let mut camper = server.join("camper"); // stays at the spawn point
        let mut between = server.join("between");
        move_to(&mut killer, 580.0, 500.0);
        move_to(&mut victim, 585.0, 500.0);
        move_to(&mut between, 540.0, 500.0);
        for client in [&mut killer, &mut victim, &mut camper, &mut between] {
            client.sync();
        }
        let (k, v, c, b) = (killer.id(), victim.id(), camper.id(), between.id());
        // killer sees victim and between; victim sees killer and between; between sees everyone;
        // camper sees between only.
        assert_eq!(victim.seen().iter().copied().collect::<Vec<_>>(), sorted([k, b]));
        assert_eq!(camper.seen().iter().copied().collect::<Vec<_>>(), [b]);

        for expected_hp in [50, 0] {
            killer.send(0, &Packet::Attack { target_id: v });
            for client in [&mut killer, &mut victim, &mut between] {
                let frame = client.recv();
                assert!(frame.is(PacketKind::Hit, k), "{client:?}: {frame:?}");
                assert_eq!(frame.as_hit().target_hp.get(), expected_hp);
            }
        }
        // The victim respawns at the spawn point (500, 500) with full hp.
        let mut frames = victim.sync();
        frames.sort_by_key(|f| f.packet_id);
        assert_eq!(
            summary(&frames),
            [(PacketKind::Move, v), (PacketKind::Enter, c), (PacketKind::Leave, k)],
            "victim: a correction, ENTER about the camper, LEAVE about the killer"
        );
        let correction = frames[0].as_move();
        assert_eq!((correction.x.get(), correction.z.get()), SPAWN);
        assert_eq!((correction.velocity.get(), correction.client_time.get()), (0.0, 0));
        // Seen before and after: a MOVE about the victim, the same payload.
        let frames = between.sync();
        assert_eq!(summary(&frames), [(PacketKind::Move, v)]);
        assert_eq!(frames[0].payload, move_bytes(&correction));
        // Seen only after: ENTER with full hp.
        let frames = camper.sync();
        assert_eq!(summary(&frames), [(PacketKind::Enter, v)]);
        let (head, _) = frames[0].as_enter();
        assert_eq!((head.x.get(), head.z.get(), head.hp.get()), (SPAWN.0, SPAWN.1, 100));
        // Seen only before: LEAVE.
        assert_eq!(summary(&killer.sync()), [(PacketKind::Leave, v)]);

        // Full hp for real: the next hit leaves 50.
        camper.send(0, &Packet::Attack { target_id: v });
        let frame = victim.recv_until(|f| f.kind() == PacketKind::Hit);
        assert_eq!((frame.player_id, frame.as_hit().target_hp.get()), (c, 50));
    });
}

fn sorted<const N: usize>(mut ids: [u32; N]) -> [u32; N] {
    ids.sort_unstable();
    ids
}

#[test]
fn invalid_target_is_answered_and_not_fatal() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.max_speed = 1000.0;
        rules.limits.attacks = Rate::new(100.0, 100.0);
        let server = TestServer::start_with(config, rules);
        let mut alice = server.join("alice");
        let mut near = server.join("near"); // in view, out of range
        let mut away = server.join("away"); // out of view
        let gone = server.join("gone");
        let gone_id = gone.id();
        drop(gone);
        alice.recv_until(|f| f.is(PacketKind::Leave, gone_id));
        move_to(&mut near, 520.0, 500.0);
        move_to(&mut away, 590.0, 500.0);
        alice.sync();
        near.sync();
        assert!(alice.seen().contains(&near.id()) && !alice.seen().contains(&away.id()));
        assert!(!alice.seen().contains(&gone_id));

        for target_id in [alice.id(), near.id(), away.id(), gone_id, 0, 0x000F_FFFF, u32::MAX] {
            alice.send(0, &Packet::Attack { target_id });
            alice.expect_next_error(gamewire_proto::ErrorCode::InvalidTarget);
            assert!(alice.sync().is_empty(), "nothing else after INVALID_TARGET on {target_id}");
        }
        assert!(near.sync().is_empty(), "no HIT for an invalid target");
        assert!(away.sync().is_empty());
        // Still playing: once in range, the same attack lands.
        move_to(&mut near, 505.0, 500.0);
        alice.sync();
        alice.send(0, &Packet::Attack { target_id: near.id() });
        let frames = alice.sync();
        assert_eq!(summary(&frames), [(PacketKind::Hit, alice.id())]);
    });
}

#[test]
fn ping_is_answered_byte_for_byte_to_the_sender_alone() {
    each_backend(|config| {
        let server = TestServer::start(config);
        let mut alice = server.join("alice");
        let mut bob = server.join("bob");
        alice.sync();
        bob.sync();
        let every_byte: Vec<u8> = (0..64).map(|i| (i * 37 % 256) as u8).collect();
        let payloads: [&[u8]; 4] = [&[], &every_byte, &[0, 255, 0, 255], &[0xC0]];
        for (i, payload) in payloads.into_iter().enumerate() {
            let header = if i % 2 == 0 { 0 } else { alice.id() };
            alice.send(header, &Packet::Ping { payload });
            let pong = alice.recv();
            assert!(pong.is(PacketKind::Pong, alice.id()), "{pong:?}");
            assert_eq!(pong.payload, payload);
            assert!(bob.sync().is_empty(), "a PONG goes to the sender alone");
        }
    });
}

#[test]
fn disconnect_sends_leave_to_every_viewer() {
    each_backend(|config| {
        let server = TestServer::start(config);
        let alice = server.join("alice");
        let mut bob = server.join("bob");
        let mut carol = server.join("carol");
        bob.sync();
        carol.sync();
        let alice_id = alice.id();
        drop(alice);
        // When the server notices the close is its own business (with several workers, on another
        // thread than bob's and carol's): wait for the LEAVE, then nothing else may have come.
        for viewer in [&mut bob, &mut carol] {
            let frame = viewer.recv();
            assert!(frame.is(PacketKind::Leave, alice_id), "{viewer:?}: {frame:?}");
            assert!(viewer.sync().is_empty(), "{viewer:?}");
        }
        // A half-close counts as leaving too.
        bob.shutdown_write();
        let frame = carol.recv();
        assert!(frame.is(PacketKind::Leave, bob.id()), "{frame:?}");
        // Joining and closing in one go: ENTER, then LEAVE.
        let mut brief = server.connect("brief");
        brief.send(0, &Packet::Hello { name: "brief" });
        brief.shutdown_write();
        let frames = [carol.recv(), carol.recv()];
        assert_eq!(frames[0].kind(), PacketKind::Enter, "{frames:?}");
        assert!(frames[1].is(PacketKind::Leave, frames[0].player_id), "{frames:?}");
        // A newcomer sees only who is still there.
        let mut dave = server.join("dave");
        assert_eq!(summary(&dave.sync()), [(PacketKind::Enter, carol.id())]);
    });
}

/// How the scripted client writes its bytes.
#[derive(Clone, Copy, Debug)]
enum Writes {
    /// One write per frame.
    PerFrame,
    /// One byte per write, with a pause after each.
    ByteByByte,
    /// Every frame in a single write.
    AllAtOnce,
}

/// A client joins and plays a fixed script written in `writes`; the outcome must not depend on how the
/// bytes were cut.
fn scripted_session(writes: Writes) {
    each_backend(|config| {
        let server = TestServer::start(config); // max_speed 20: 1-unit steps are legal at once
        let mut bob = server.join("bob");
        let mut alice = server.connect("alice");
        let steps: Vec<Move> =
            (1..=5).map(|i| Move::new(500.0 + i as f32, 0.5, 500.0, 10.0, 100 + i)).collect();
        let mut frames: Vec<Vec<u8>> = vec![encode_frame_to_vec(0, &Packet::Hello { name: "alice" })];
        frames.extend(steps.iter().map(|m| encode_frame_to_vec(0, &Packet::Move(m))));
        frames.push(encode_frame_to_vec(0, &Packet::Chat { text: "split me ✂" }));
        frames.push(encode_frame_to_vec(0, &Packet::Ping { payload: b"\x01\x02\x03\x04\xfe" }));
        frames.push(encode_frame_to_vec(0, &Packet::Move(&Move::new(900.0, 0.0, 900.0, 1.0, 999))));
        frames.push(encode_frame_to_vec(0, &Packet::Ping { payload: b"end" }));
        match writes {
            Writes::PerFrame => frames.iter().for_each(|frame| alice.send_raw(frame)),
            Writes::ByteByByte => {
                frames.iter().for_each(|frame| alice.send_byte_by_byte(frame, Duration::from_micros(500)))
            }
            Writes::AllAtOnce => alice.send_raw(&frames.concat()),
        }

        // alice: WELCOME, ENTER about bob, the PONG, the correction of the far MOVE, the last PONG.
        let welcome = alice.recv();
        assert_eq!(welcome.kind(), PacketKind::Welcome, "{writes:?}: {welcome:?}");
        let a = alice.id();
        let mut got = Vec::new();
        loop {
            let frame = alice.recv();
            let last = frame.kind() == PacketKind::Pong && frame.payload == b"end";
            got.push(frame);
            if last {
                break;
            }
        }
        assert_eq!(
            summary(&got),
            [
                (PacketKind::Enter, bob.id()),
                (PacketKind::Pong, a),
                (PacketKind::Move, a),
                (PacketKind::Pong, a)
            ],
            "{writes:?}: {got:?}"
        );
        assert_eq!(got[1].payload, b"\x01\x02\x03\x04\xfe");
        assert_correction(&got[2], a, (505.0, 0.5, 500.0), 999);

        // bob: ENTER about alice, her five MOVEs byte for byte, her CHAT.
        let got = bob.sync();
        let expected_kinds: Vec<_> = [(PacketKind::Enter, a)]
            .into_iter()
            .chain(steps.iter().map(|_| (PacketKind::Move, a)))
            .chain([(PacketKind::Chat, a)])
            .collect();
        assert_eq!(summary(&got), expected_kinds, "{writes:?}: {got:?}");
        for (frame, m) in got[1..6].iter().zip(&steps) {
            assert_move_about(frame, a, m);
        }
        assert_eq!(got[6].payload, "split me ✂".as_bytes());
    });
}

#[test]
fn frames_written_one_per_write() {
    scripted_session(Writes::PerFrame);
}

#[test]
fn frames_split_byte_by_byte_across_writes_give_the_same_results() {
    scripted_session(Writes::ByteByByte);
}

#[test]
fn many_frames_in_one_write_give_the_same_results() {
    scripted_session(Writes::AllAtOnce);
}
