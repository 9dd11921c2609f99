//! The world against protocol v1, rule by rule: Session section, error table, limits and timeouts.
//!
//! Every test drives [`util::Sim`] with a fake clock; the harness checks the visibility window on
//! every frame delivered, and the tests assert the exact frames (header player_id and payload).

mod util;

use std::collections::BTreeSet;
use std::time::Duration;

use gamewire_proto::{ErrorCode, Move, Packet, encode_frame_to_vec};
use gamewire_world::{Config, Position, Verdict};
use util::{ConnIdx, Msg, Sim, assert_error, enter, hit, mv, raw_frame};

const MOVE: u32 = 3;
const ATTACK: u32 = 4;
const CHAT: u32 = 5;
const HELLO: u32 = 1;
const PING: u32 = 8;

/// Builds a frame for the player with the given id.
type FrameFor = fn(u32) -> Vec<u8>;

/// Default world (1000 x 1000, aoi 50, max_speed 20, range 10, damage 10, hp 100) with a fixed spawn.
fn sim_with_spawn(x: f32, z: f32) -> Sim {
    Sim::new(Config { spawn: Some((x, z)), ..Config::default() })
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Sends a MOVE that must be rejected and checks the correction: only `conn` hears anything, a MOVE
/// about itself with its last accepted position, velocity 0 and the client_time it sent.
#[track_caller]
fn assert_rejected(sim: &mut Sim, conn: ConnIdx, claimed: Move, what: &str) {
    let id = sim.id(conn);
    let last = sim.position(conn);
    let time = claimed.client_time.get();
    assert_eq!(sim.send(conn, id.get(), &Packet::Move(&claimed)), Verdict::Continue, "{what}");
    assert_eq!(sim.drain(conn), [(id.get(), mv(last.x, last.y, last.z, 0.0, time))], "{what}");
    sim.assert_quiet_except(&[]);
    assert_eq!(sim.position(conn), last, "{what}: a rejected MOVE moved the player");
}

/// Sends a MOVE that must be accepted while every other player in `viewers` sees the mover before and
/// after: each receives the very frame a client would have sent, with the mover's id in the header.
#[track_caller]
fn assert_accepted(sim: &mut Sim, conn: ConnIdx, claimed: Move, viewers: &[ConnIdx], what: &str) {
    let id = sim.id(conn);
    assert_eq!(sim.send(conn, 0, &Packet::Move(&claimed)), Verdict::Continue, "{what}");
    let expected = encode_frame_to_vec(id.get(), &Packet::Move(&claimed));
    for &viewer in viewers {
        assert_eq!(
            sim.drain_raw(viewer),
            std::slice::from_ref(&expected),
            "{what}: what viewer {viewer} received"
        );
    }
    sim.assert_quiet_except(viewers);
    let at = sim.position(conn);
    assert_eq!(
        (at.x, at.y, at.z),
        (claimed.x.get(), claimed.y.get(), claimed.z.get()),
        "{what}: accepted position"
    );
    sim.check_views();
}

/// Sends `bytes` as `conn`, which must end the session with ERROR(`code`) carrying `header`; every
/// connection in `viewers` receives LEAVE about the player, nobody else anything.
#[track_caller]
fn assert_fatal(
    sim: &mut Sim,
    conn: ConnIdx,
    bytes: &[u8],
    header: u32,
    code: ErrorCode,
    viewers: &[ConnIdx],
) {
    let players = sim.world.player_count();
    let player = sim.session(conn).player();
    assert_eq!(sim.send_bytes(conn, bytes), Verdict::Close, "{code} must close");
    assert_error(&sim.drain(conn), header, code);
    for &viewer in viewers {
        assert_eq!(sim.drain(viewer), [(header, Msg::Leave)], "LEAVE to viewer {viewer} after {code}");
    }
    sim.assert_quiet_except(&[]);
    assert!(sim.session(conn).is_closed());
    let removed = usize::from(player.is_some());
    assert_eq!(sim.world.player_count(), players - removed);
    // The session is over: whatever else the peer sends gets nothing back.
    assert_eq!(sim.send(conn, header, &Packet::Ping { payload: b"more" }), Verdict::Close);
    sim.assert_quiet_except(&[]);
    sim.check_views();
}

// --- Session 1: HELLO, WELCOME, ENTER -------------------------------------------------------------

#[test]
fn welcome_comes_first_with_the_world_parameters_then_enters_both_ways() {
    let config = Config {
        world_w: 300.0,
        world_h: 200.0,
        aoi_radius: 40.0,
        max_speed: 25.0,
        spawn: Some((10.0, 20.0)),
        ..Config::default()
    };
    let mut sim = Sim::new(config);
    let (a, alice) = sim.join("alice");
    let frames = sim.drain(a);
    assert_eq!(frames.len(), 1, "alone in the world: WELCOME only, got {frames:?}");
    let (header, Msg::Welcome(welcome)) = &frames[0] else { panic!("not a WELCOME: {frames:?}") };
    assert_ne!(*header, 0);
    assert_eq!(*header, alice.get());
    assert_eq!((welcome.x.get(), welcome.z.get()), (10.0, 20.0), "fixed spawn point");
    assert_eq!(welcome.hp.get(), 100);
    assert_eq!(welcome.world_w.get(), 300.0);
    assert_eq!(welcome.world_h.get(), 200.0);
    assert_eq!(welcome.aoi_radius.get(), 40.0);
    assert_eq!(welcome.max_speed.get(), 25.0);
    let spawn = Position::new(10.0, welcome.y.get(), 20.0);
    assert_eq!(sim.position(a), spawn);

    let (b, bob) = sim.join("bob");
    assert_ne!(bob, alice);
    let frames = sim.drain(b);
    assert!(matches!(frames[0], (id, Msg::Welcome(_)) if id == bob.get()));
    assert_eq!(frames[1..], [(alice.get(), enter(spawn, 100, "alice"))]);
    assert_eq!(sim.drain(a), [(bob.get(), enter(spawn, 100, "bob"))]);

    let (c, carol) = sim.join("carol");
    let frames = sim.drain(c);
    assert!(matches!(frames[0], (id, Msg::Welcome(_)) if id == carol.get()));
    let enters: Vec<_> = frames[1..].to_vec();
    assert_eq!(enters.len(), 2, "one ENTER per player seen: {enters:?}");
    assert!(enters.contains(&(alice.get(), enter(spawn, 100, "alice"))));
    assert!(enters.contains(&(bob.get(), enter(spawn, 100, "bob"))));
    assert_eq!(sim.drain(a), [(carol.get(), enter(spawn, 100, "carol"))]);
    assert_eq!(sim.drain(b), [(carol.get(), enter(spawn, 100, "carol"))]);
    sim.check_views();
}

#[test]
fn random_spawns_lie_inside_the_world_and_match_welcome() {
    let mut sim = Sim::new(Config { world_w: 7.0, world_h: 3.0, aoi_radius: 1.0, ..Config::default() });
    let mut ids = BTreeSet::new();
    for i in 0..60 {
        let (conn, id) = sim.join(&format!("p{i}"));
        assert!(ids.insert(id), "id {id} handed out twice");
        let frames = sim.drain(conn);
        let (_, Msg::Welcome(welcome)) = &frames[0] else { panic!("not a WELCOME") };
        let (x, z) = (welcome.x.get(), welcome.z.get());
        assert!((0.0..7.0).contains(&x) && (0.0..3.0).contains(&z), "spawn ({x}, {z}) outside the world");
        assert_eq!(sim.position(conn), Position::new(x, welcome.y.get(), z));
        assert!(welcome.y.get().is_finite() && welcome.y.get().abs() <= 10_000.0);
        sim.check_views();
    }
}

#[test]
fn a_newcomer_out_of_range_gets_no_enter_and_causes_none() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, _) = sim.join("alice");
    sim.place(a, 550.0, 500.000_06);
    sim.drain_all();
    let (b, bob) = sim.join("bob");
    assert_eq!(sim.drain(b).len(), 1, "WELCOME only");
    assert!(sim.drain(a).is_empty());
    // Exactly at the radius is in view (inclusive).
    sim.place(a, 530.0, 540.0);
    assert_eq!(sim.drain(a), [(bob.get(), enter(Position::new(500.0, 0.0, 500.0), 100, "bob"))]);
    sim.check_views();
}

#[test]
fn a_name_of_32_bytes_is_accepted_and_carried_by_enter() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, _) = sim.join("a");
    sim.drain_all();
    let name = "é".repeat(16);
    let (_, bee) = sim.join(&name);
    let spawn = sim.position(a);
    assert_eq!(sim.drain(a), [(bee.get(), enter(spawn, 100, &name))]);
}

// --- Session 2: MOVE ------------------------------------------------------------------------------

#[test]
fn accepted_move_reaches_viewers_byte_for_byte_and_nobody_else() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, _) = sim.join("bob");
    let (c, _) = sim.join("carol");
    sim.place(c, 600.0, 500.0);
    sim.drain_all();
    sim.advance(Duration::from_secs(1));
    // Header = own id is as good as 0; velocity and client_time are relayed untouched.
    let claimed = Move::new(510.0, 3.5, 505.0, 12.5, 0xDEAD_BEEF);
    assert_eq!(sim.send(a, alice.get(), &Packet::Move(&claimed)), Verdict::Continue);
    assert_eq!(sim.drain_raw(b), [encode_frame_to_vec(alice.get(), &Packet::Move(&claimed))]);
    sim.assert_quiet_except(&[]);
    assert_eq!(sim.position(a), Position::new(510.0, 3.5, 505.0));
    sim.check_views();
}

#[test]
fn crossing_the_radius_sends_enter_and_leave_both_ways() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, bob) = sim.join("bob");
    let (c, carol) = sim.join("carol");
    sim.place(c, 600.0, 500.0);
    sim.drain_all();

    // B at exactly the radius from both A and C still sees both: plain MOVEs.
    sim.place(b, 550.0, 500.0);
    assert_eq!(sim.drain(a), [(bob.get(), mv(550.0, 0.0, 500.0, 0.0, 0))]);
    let frames = sim.drain(c);
    assert_eq!(frames.len(), 1);
    assert!(
        matches!(frames[0], (id, Msg::Enter { .. }) if id == bob.get()),
        "C did not see B before: {frames:?}"
    );
    let frames: BTreeSet<_> = sim.drain(b).into_iter().map(|(id, msg)| format!("{id} {msg:?}")).collect();
    assert_eq!(
        frames,
        BTreeSet::from([format!(
            "{} {:?}",
            carol.get(),
            enter(Position::new(600.0, 0.0, 500.0), 100, "carol")
        )])
    );
    sim.check_views();

    // One float past the radius from A: LEAVE both ways; still a MOVE for C.
    sim.place(b, 550.000_06, 500.0);
    assert_eq!(sim.drain(a), [(bob.get(), Msg::Leave)]);
    assert_eq!(sim.drain(b), [(alice.get(), Msg::Leave)]);
    assert_eq!(sim.drain(c), [(bob.get(), mv(550.000_06, 0.0, 500.0, 0.0, 0))]);
    sim.check_views();

    // Back to a 30-40-50 triangle from A (in view again) and 70.7 from C (out of view): ENTER both
    // ways with the new position, LEAVE both ways with C.
    sim.place(b, 530.0, 540.0);
    assert_eq!(sim.drain(a), [(bob.get(), enter(Position::new(530.0, 0.0, 540.0), 100, "bob"))]);
    assert_eq!(sim.drain(c), [(bob.get(), Msg::Leave)]);
    let frames = sim.drain(b);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames.contains(&(alice.get(), enter(Position::new(500.0, 0.0, 500.0), 100, "alice"))));
    assert!(frames.contains(&(carol.get(), Msg::Leave)));
    sim.assert_quiet_except(&[]);
    sim.check_views();
}

#[test]
fn invalid_moves_get_only_a_correction() {
    // A 30 x 30 world: after 1 s any point of it is within reach (22 units), so each case breaks
    // exactly one rule.
    let config = Config { world_w: 30.0, world_h: 30.0, spawn: Some((15.0, 15.0)), ..Config::default() };
    let mut sim = Sim::new(config);
    let (a, _) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let cases = [
        ("x NaN", Move::new(nan, 0.0, 15.0, 1.0, 1)),
        ("y NaN", Move::new(15.0, nan, 15.0, 1.0, 2)),
        ("z NaN", Move::new(15.0, 0.0, nan, 1.0, 3)),
        ("velocity NaN", Move::new(15.0, 0.0, 15.0, nan, 4)),
        ("x +inf", Move::new(inf, 0.0, 15.0, 1.0, 5)),
        ("y -inf", Move::new(15.0, -inf, 15.0, 1.0, 6)),
        ("z -inf", Move::new(15.0, 0.0, -inf, 1.0, 7)),
        ("velocity inf", Move::new(15.0, 0.0, 15.0, inf, 8)),
        ("x 1e30", Move::new(1e30, 0.0, 15.0, 1.0, 9)),
        ("x == world_w", Move::new(30.0, 0.0, 15.0, 1.0, 10)),
        ("z == world_h", Move::new(15.0, 0.0, 30.0, 1.0, 11)),
        ("x below 0", Move::new(-0.001, 0.0, 15.0, 1.0, 12)),
        ("z below 0", Move::new(15.0, 0.0, -0.001, 1.0, 13)),
        ("y above 10000", Move::new(15.0, 10_000.001, 15.0, 1.0, 14)),
        ("y below -10000", Move::new(15.0, -10_000.001, 15.0, 1.0, 15)),
        ("negative velocity", Move::new(15.0, 0.0, 15.0, -1.0, 16)),
        ("tiny negative velocity", Move::new(15.0, 0.0, 15.0, -f32::MIN_POSITIVE, 17)),
        ("velocity just above max_speed", Move::new(15.0, 0.0, 15.0, 20.0f32.next_up(), 18)),
        ("velocity 1e30", Move::new(15.0, 0.0, 15.0, 1e30, u32::MAX)),
    ];
    for (what, claimed) in cases {
        sim.advance(Duration::from_secs(1));
        assert_rejected(&mut sim, a, claimed, what);
    }
    // The edges of what is legal.
    let edges = [
        ("origin corner", Move::new(0.0, 0.0, 0.0, 0.0, 1)),
        ("far corner", Move::new(30.0f32.next_down(), 0.0, 30.0f32.next_down(), 20.0, 2)),
        ("y = 10000", Move::new(15.0, 10_000.0, 15.0, 0.0, 3)),
        ("y = -10000", Move::new(15.0, -10_000.0, 15.0, 0.0, 4)),
        ("velocity = max_speed", Move::new(10.0, 123.5, 10.0, 20.0, 5)),
    ];
    for (what, claimed) in edges {
        // 3 s: corner to corner (42.4 units) is within reach.
        sim.advance(Duration::from_secs(3));
        assert_accepted(&mut sim, a, claimed, &[b], what);
    }
    // A correction holds the last accepted position, y included.
    sim.advance(Duration::from_secs(1));
    assert_rejected(&mut sim, a, Move::new(15.0, 0.0, 30.0, 0.0, 77), "after the edges");
    assert_eq!(sim.position(a), Position::new(10.0, 123.5, 10.0));
}

#[test]
fn speed_check_uses_time_since_the_last_accepted_position_plus_slack() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, _) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    // WELCOME set the last accepted position and time: with no time elapsed the reach is
    // max_speed x 0.1 s = 2 units.
    assert_rejected(&mut sim, a, Move::new(502.5, 0.0, 500.0, 0.0, 1), "2.5 units at once");
    assert_accepted(&mut sim, a, Move::new(502.0, 0.0, 500.0, 0.0, 2), &[b], "2 units at once");
    assert_rejected(&mut sim, a, Move::new(504.001, 0.0, 500.0, 0.0, 3), "2.001 more at once");
    // 0.4 s + 0.1 s slack at 20 units/s: exactly 10 units, inclusive.
    sim.advance(millis(400));
    assert_accepted(&mut sim, a, Move::new(512.0, 0.0, 500.0, 0.0, 4), &[b], "exactly the reach");
    sim.advance(millis(400));
    assert_rejected(
        &mut sim,
        a,
        Move::new(522.0f32.next_up(), 0.0, 500.0, 0.0, 5),
        "one float past the reach",
    );
    // The rejected MOVE did not restart the clock: 1 s after the last accepted position the reach
    // is 22 units (it would be 14 had it restarted, 20 without the slack).
    sim.advance(millis(600));
    assert_accepted(&mut sim, a, Move::new(533.9, 0.0, 500.0, 0.0, 6), &[b], "21.9 units after 1 s");
    // Only x and z count: a height change of 10000 at no distance on the floor is legal at once.
    assert_accepted(&mut sim, a, Move::new(533.9, 10_000.0, 500.0, 0.0, 7), &[b], "straight up");
    // Diagonal distances are Euclidean on the x-z plane: 6-8-10 after 0.4 s.
    sim.advance(millis(400));
    assert_accepted(&mut sim, a, Move::new(539.9, 10_000.0, 508.0, 0.0, 8), &[b], "diagonal at the reach");
}

// --- Session 3: CHAT ------------------------------------------------------------------------------

#[test]
fn chat_is_relayed_byte_for_byte_to_viewers_only() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, bob) = sim.join("bob");
    let (c, _) = sim.join("carol");
    sim.place(c, 550.0, 500.000_06);
    sim.drain_all();
    for text in ["héllo, wörld ✓".to_owned(), "x".to_owned(), "ü".repeat(128)] {
        assert_eq!(sim.send(a, 0, &Packet::Chat { text: &text }), Verdict::Continue);
        assert_eq!(sim.drain_raw(b), [encode_frame_to_vec(alice.get(), &Packet::Chat { text: &text })]);
        sim.assert_quiet_except(&[]);
    }
    assert_eq!(sim.send(b, bob.get(), &Packet::Chat { text: "hi" }), Verdict::Continue);
    assert_eq!(sim.drain(a), [(bob.get(), Msg::Chat("hi".into()))]);
    sim.assert_quiet_except(&[]);
}

// --- Session 4: ATTACK ----------------------------------------------------------------------------

#[test]
fn attacks_on_invalid_targets_get_invalid_target_and_the_session_goes_on() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, bob) = sim.join("bob");
    let (c, carol) = sim.join("carol");
    let (d, dave) = sim.join("dave");
    sim.place(b, 510.001, 500.0);
    sim.place(c, 600.0, 500.0);
    sim.disconnect(d);
    let (e, eve) = sim.join("eve");
    assert_eq!(eve.index(), dave.index(), "eve reuses dave's slot, so dave's id is a stale one");
    assert_ne!(eve, dave);
    sim.drain_all();
    sim.check_views();

    let targets = [
        ("itself", alice.get()),
        ("a player out of view", carol.get()),
        ("a player in view but 10.001 away", bob.get()),
        ("id 0", 0),
        ("an id never handed out", 999_999),
        ("u32::MAX", u32::MAX),
        ("the stale id of a player who left", dave.get()),
    ];
    for (what, target_id) in targets {
        // One attack a second stays well inside the ATTACK rate limit.
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.send(a, 0, &Packet::Attack { target_id }), Verdict::Continue, "{what}");
        assert_error(&sim.drain(a), alice.get(), ErrorCode::InvalidTarget);
        sim.assert_quiet_except(&[]);
    }
    for conn in [a, b, c, e] {
        assert_eq!(sim.hp(conn), 100);
    }
    // Exactly at attack_range is a hit, and the session still works.
    sim.place(b, 510.0, 500.0);
    sim.drain_all();
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: bob.get() }), Verdict::Continue);
    assert_eq!(sim.drain(a), [(alice.get(), hit(bob, 10, 90))]);
    assert_eq!(sim.hp(b), 90);
    sim.check_views();
}

#[test]
fn a_target_in_range_but_out_of_view_is_invalid() {
    // attack_range beyond aoi_radius: both conditions must hold.
    let config =
        Config { aoi_radius: 20.0, attack_range: 50.0, spawn: Some((500.0, 500.0)), ..Config::default() };
    let mut sim = Sim::new(config);
    let (a, alice) = sim.join("alice");
    let (b, bob) = sim.join("bob");
    sim.place(b, 520.0, 500.000_06);
    sim.drain_all();
    assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: bob.get() }), Verdict::Continue);
    assert_error(&sim.drain(a), alice.get(), ErrorCode::InvalidTarget);
    sim.assert_quiet_except(&[]);
    assert_eq!(sim.hp(b), 100);
    sim.place(b, 520.0, 500.0);
    sim.drain_all();
    assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: bob.get() }), Verdict::Continue);
    assert_eq!(sim.drain(a), [(alice.get(), hit(bob, 10, 90))]);
    assert_eq!(sim.drain(b), [(alice.get(), hit(bob, 10, 90))]);
    sim.assert_quiet_except(&[]);
}

#[test]
fn hit_goes_once_to_the_attacker_the_target_and_the_attackers_viewers() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("attacker");
    let (t, target) = sim.join("target");
    let (v, _) = sim.join("sees the attacker only");
    let (w, _) = sim.join("sees the target only");
    let (x, _) = sim.join("sees neither");
    sim.place(t, 508.0, 500.0);
    sim.place(v, 455.0, 500.0);
    sim.place(w, 553.0, 500.0);
    sim.place(x, 700.0, 700.0);
    sim.drain_all();
    sim.check_views();
    assert_eq!(sim.viewers(a), BTreeSet::from([t, v]));
    assert_eq!(sim.viewers(t), BTreeSet::from([a, w]));

    assert_eq!(sim.send(a, alice.get(), &Packet::Attack { target_id: target.get() }), Verdict::Continue);
    let expected = [(alice.get(), hit(target, 10, 90))];
    assert_eq!(sim.drain(a), expected);
    assert_eq!(sim.drain(t), expected);
    assert_eq!(sim.drain(v), expected);
    sim.assert_quiet_except(&[]);
    assert_eq!(sim.hp(t), 90);
    sim.check_views();
}

#[test]
fn a_kill_respawns_the_target_with_full_hp_and_fixes_every_view() {
    // max_speed 200 keeps the placement MOVEs short in fake time (no idle timeouts).
    let config = Config {
        aoi_radius: 100.0,
        max_speed: 200.0,
        damage: 40,
        spawn: Some((100.0, 100.0)),
        ..Config::default()
    };
    let mut sim = Sim::new(config);
    let (a, alice) = sim.join("attacker");
    let (t, target) = sim.join("target");
    let (k, _) = sim.join("keeps seeing it");
    let (l, lou) = sim.join("loses it");
    let (e, eric) = sim.join("gets it");
    let (n, _) = sim.join("never sees it");
    sim.place(a, 170.0, 100.0);
    sim.place(t, 178.0, 100.0);
    sim.place(k, 139.0, 100.0);
    sim.place(l, 270.0, 100.0);
    sim.place(e, 20.0, 100.0);
    sim.place(n, 500.0, 500.0);
    sim.drain_all();
    sim.check_views();
    assert_eq!(sim.viewers(a), BTreeSet::from([t, k, l]), "L sees A at exactly the radius");

    for hp in [60, 20] {
        assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: target.get() }), Verdict::Continue);
        for conn in [a, t, k, l] {
            assert_eq!(sim.drain(conn), [(alice.get(), hit(target, 40, hp))]);
        }
        sim.assert_quiet_except(&[]);
    }
    // 20 - 40 stops at 0: the target dies and respawns at the spawn point.
    assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: target.get() }), Verdict::Continue);
    let spawn = sim.position(t);
    assert_eq!((spawn.x, spawn.z), (100.0, 100.0));
    assert_eq!(sim.hp(t), 100);
    let killed = (alice.get(), hit(target, 40, 0));
    let respawn = (target.get(), mv(100.0, spawn.y, 100.0, 0.0, 0));

    let frames = sim.drain(t);
    assert_eq!(frames[..2], [killed.clone(), respawn.clone()], "target: HIT then correction");
    let rest: Vec<_> = frames[2..].to_vec();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest.contains(&(eric.get(), enter(sim.position(e), 100, "gets it"))));
    assert!(rest.contains(&(lou.get(), Msg::Leave)));
    assert_eq!(sim.drain(a), [killed.clone(), respawn.clone()]);
    assert_eq!(sim.drain(k), [killed.clone(), respawn]);
    assert_eq!(sim.drain(l), [killed, (target.get(), Msg::Leave)]);
    assert_eq!(sim.drain(e), [(target.get(), enter(spawn, 100, "target"))]);
    sim.assert_quiet_except(&[]);
    sim.check_views();

    // Respawn set the last accepted position and its time: at once, the reach from the spawn point
    // is 200 x 0.1 s = 20 units.
    assert_rejected(&mut sim, t, Move::new(120.5, spawn.y, 100.0, 0.0, 8), "20.5 units after respawn");
    assert_accepted(
        &mut sim,
        t,
        Move::new(120.0, spawn.y, 100.0, 0.0, 9),
        &[a, k, e],
        "20 units after respawn",
    );
    // The respawned target is in view of A but 50 away: out of range.
    assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: target.get() }), Verdict::Continue);
    assert_error(&sim.drain(a), alice.get(), ErrorCode::InvalidTarget);
    sim.assert_quiet_except(&[]);
}

// --- Session 5, 6: PING, disconnect ---------------------------------------------------------------

#[test]
fn ping_is_answered_to_the_sender_alone_with_the_same_bytes() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (_b, _) = sim.join("bob");
    sim.drain_all();
    let long: Vec<u8> = (0..64).collect();
    for payload in [&[][..], b"\x00\xffping", &long[..]] {
        assert_eq!(sim.send(a, 0, &Packet::Ping { payload }), Verdict::Continue);
        assert_eq!(sim.drain_raw(a), [encode_frame_to_vec(alice.get(), &Packet::Pong { payload })]);
        sim.assert_quiet_except(&[]);
    }
}

#[test]
fn disconnect_sends_leave_to_viewers_only() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, _) = sim.join("bob");
    let (c, _) = sim.join("carol");
    sim.place(c, 600.0, 500.0);
    sim.drain_all();
    sim.disconnect(a);
    assert_eq!(sim.drain(b), [(alice.get(), Msg::Leave)]);
    sim.assert_quiet_except(&[]);
    assert_eq!(sim.world.player_count(), 2);
    assert!(sim.world.player(alice).is_none());
    sim.check_views();
    // Nothing of A is left in the grid: walking over its spot enters nobody.
    sim.place(c, 500.0, 500.0);
    let frames = sim.drain(c);
    assert_eq!(frames.len(), 1, "only bob: {frames:?}");
    assert_eq!(frames[0].0, sim.id(b).get());
    sim.check_views();
}

// --- Errors ---------------------------------------------------------------------------------------

#[test]
fn spoofed_ids_are_fatal_before_and_after_welcome() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, bob) = sim.join("bob");
    sim.drain_all();

    let c = sim.connect();
    let hello = encode_frame_to_vec(7, &Packet::Hello { name: "carol" });
    assert_fatal(&mut sim, c, &hello, 0, ErrorCode::SpoofedId, &[]);
    let c = sim.connect();
    let hello = encode_frame_to_vec(alice.get(), &Packet::Hello { name: "carol" });
    assert_fatal(&mut sim, c, &hello, 0, ErrorCode::SpoofedId, &[]);

    // Header 0 and the own id are both fine after WELCOME.
    assert_eq!(sim.send(a, 0, &Packet::Ping { payload: b"0" }), Verdict::Continue);
    assert_eq!(sim.send(a, alice.get(), &Packet::Ping { payload: b"own" }), Verdict::Continue);
    assert_eq!(sim.drain(a).len(), 2);

    // Another player's id, even one that exists.
    let moved = encode_frame_to_vec(bob.get(), &Packet::Move(&Move::new(500.0, 0.0, 500.0, 0.0, 0)));
    assert_fatal(&mut sim, a, &moved, alice.get(), ErrorCode::SpoofedId, &[b]);
    let chat = encode_frame_to_vec(bob.get() + 1, &Packet::Chat { text: "hi" });
    assert_fatal(&mut sim, b, &chat, bob.get(), ErrorCode::SpoofedId, &[]);
    assert_eq!(sim.world.player_count(), 0);
}

#[test]
fn anything_but_hello_first_and_a_second_hello_are_bad_state() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let before_hello = [
        encode_frame_to_vec(0, &Packet::Move(&Move::new(500.0, 0.0, 500.0, 0.0, 0))),
        encode_frame_to_vec(0, &Packet::Chat { text: "hi" }),
        encode_frame_to_vec(0, &Packet::Attack { target_id: 1 }),
        encode_frame_to_vec(0, &Packet::Ping { payload: b"" }),
    ];
    for bytes in before_hello {
        let c = sim.connect();
        assert_fatal(&mut sim, c, &bytes, 0, ErrorCode::BadState, &[]);
    }
    assert_eq!(sim.world.player_count(), 0);
    let (a, alice) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    let again = encode_frame_to_vec(0, &Packet::Hello { name: "alice" });
    assert_fatal(&mut sim, a, &again, alice.get(), ErrorCode::BadState, &[b]);
}

#[test]
fn malformed_payloads_are_fatal() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (watcher, _) = sim.join("watcher");
    sim.drain_all();
    let before_welcome: [(&str, Vec<u8>); 4] = [
        ("empty name", raw_frame(HELLO, 0, b"")),
        ("33-byte name", raw_frame(HELLO, 0, &[b'n'; 33])),
        ("name not UTF-8", raw_frame(HELLO, 0, &[b'a', 0xFF])),
        ("name cut inside a character", raw_frame(HELLO, 0, &"é".as_bytes()[..1])),
    ];
    for (what, bytes) in before_welcome {
        let c = sim.connect();
        println!("{what}");
        assert_fatal(&mut sim, c, &bytes, 0, ErrorCode::Malformed, &[]);
    }
    let after_welcome: [(&str, Vec<u8>); 9] = [
        ("MOVE of 19 bytes", raw_frame(MOVE, 0, &[0; 19])),
        ("MOVE of 21 bytes", raw_frame(MOVE, 0, &[0; 21])),
        ("MOVE of 0 bytes", raw_frame(MOVE, 0, &[])),
        ("ATTACK of 3 bytes", raw_frame(ATTACK, 0, &[1, 0, 0])),
        ("ATTACK of 5 bytes", raw_frame(ATTACK, 0, &[1, 0, 0, 0, 0])),
        ("empty CHAT", raw_frame(CHAT, 0, b"")),
        ("CHAT not UTF-8", raw_frame(CHAT, 0, &[b'h', b'i', 0xC0])),
        ("CHAT of 257 bytes", raw_frame(CHAT, 0, &[b'x'; 257])),
        ("PING of 65 bytes", raw_frame(PING, 0, &[0; 65])),
    ];
    for (what, bytes) in after_welcome {
        let (c, id) = sim.join("victim");
        sim.drain_all();
        println!("{what}");
        assert_fatal(&mut sim, c, &bytes, id.get(), ErrorCode::Malformed, &[watcher]);
    }
    assert_eq!(sim.world.player_count(), 1);
}

#[test]
fn packets_a_client_may_not_send_are_unknown_packet() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (watcher, _) = sim.join("watcher");
    sim.drain_all();
    for packet_id in [0, 2, 6, 7, 9, 10, 11, 12, u32::MAX] {
        let c = sim.connect();
        assert_fatal(&mut sim, c, &raw_frame(packet_id, 0, &[]), 0, ErrorCode::UnknownPacket, &[]);
        let (c, id) = sim.join("victim");
        sim.drain_all();
        assert_fatal(
            &mut sim,
            c,
            &raw_frame(packet_id, 0, &[]),
            id.get(),
            ErrorCode::UnknownPacket,
            &[watcher],
        );
    }
}

#[test]
fn the_first_applicable_error_wins() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (watcher, _) = sim.join("watcher");
    sim.drain_all();
    // Before WELCOME: UNKNOWN_PACKET beats SPOOFED_ID beats BAD_STATE beats MALFORMED.
    let cases: [(&str, Vec<u8>, ErrorCode); 4] = [
        ("unknown id with a spoofed header", raw_frame(6, 9, &[]), ErrorCode::UnknownPacket),
        ("short MOVE with a spoofed header", raw_frame(MOVE, 9, &[0; 3]), ErrorCode::SpoofedId),
        ("bad HELLO with a spoofed header", raw_frame(HELLO, 9, b""), ErrorCode::SpoofedId),
        ("short MOVE before HELLO", raw_frame(MOVE, 0, &[0; 3]), ErrorCode::BadState),
    ];
    for (what, bytes, code) in cases {
        let c = sim.connect();
        println!("{what}");
        assert_fatal(&mut sim, c, &bytes, 0, code, &[]);
    }
    // After WELCOME.
    let cases: [(&str, FrameFor, ErrorCode); 4] = [
        ("unknown id with a spoofed header", |id| raw_frame(11, id + 1, &[]), ErrorCode::UnknownPacket),
        ("short MOVE with a spoofed header", |id| raw_frame(MOVE, id + 1, &[0; 3]), ErrorCode::SpoofedId),
        ("second HELLO with a spoofed header", |id| raw_frame(HELLO, id + 1, b"x"), ErrorCode::SpoofedId),
        ("second HELLO with an empty name", |_| raw_frame(HELLO, 0, b""), ErrorCode::BadState),
    ];
    for (what, bytes, code) in cases {
        let (c, id) = sim.join("victim");
        sim.drain_all();
        println!("{what}");
        assert_fatal(&mut sim, c, &bytes(id.get()), id.get(), code, &[watcher]);
    }
    // MALFORMED beats RATE_LIMITED: a bad PING over the limit is still fatal.
    let (c, id) = sim.join("victim");
    for _ in 0..10 {
        assert_eq!(sim.send(c, 0, &Packet::Ping { payload: b"" }), Verdict::Continue);
    }
    sim.drain_all();
    assert_fatal(&mut sim, c, &raw_frame(PING, 0, &[0; 65]), id.get(), ErrorCode::Malformed, &[watcher]);
}

#[test]
fn server_full_refuses_hello_beyond_max_players() {
    let mut sim = Sim::new(Config { max_players: 2, spawn: Some((1.0, 1.0)), ..Config::default() });
    let (a, _) = sim.join("a");
    let (_b, _) = sim.join("b");
    sim.drain_all();
    let c = sim.connect();
    let hello = encode_frame_to_vec(0, &Packet::Hello { name: "c" });
    assert_fatal(&mut sim, c, &hello, 0, ErrorCode::ServerFull, &[]);
    sim.disconnect(a);
    sim.drain_all();
    let (_, _) = sim.join("d");
    assert_eq!(sim.world.player_count(), 2);
    sim.check_views();
}

// --- Rate limits (defaults) -----------------------------------------------------------------------

/// Sends `count` MOVEs to `conn`'s current spot (legal, and the view model stays right whether or
/// not they are dropped); returns how many the viewer `viewer` received.
fn moves_in_place(sim: &mut Sim, conn: ConnIdx, viewer: ConnIdx, count: usize) -> usize {
    let at = sim.position(conn);
    for i in 0..count {
        let claimed = Move::new(at.x, at.y, at.z, 0.0, i as u32);
        assert_eq!(sim.send(conn, 0, &Packet::Move(&claimed)), Verdict::Continue);
    }
    let frames = sim.drain(viewer);
    assert!(frames.iter().all(|(id, msg)| *id == sim.id(conn).get() && matches!(msg, Msg::Move(_))));
    frames.len()
}

#[test]
fn move_limit_is_60_a_second_and_rate_limited_comes_at_most_once_a_second() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    assert_eq!(moves_in_place(&mut sim, a, b, 60), 60, "a burst of 60 at once");
    assert!(sim.drain(a).is_empty());
    assert_eq!(moves_in_place(&mut sim, a, b, 1), 0, "the 61st is dropped");
    assert_error(&sim.drain(a), alice.get(), ErrorCode::RateLimited);
    assert_eq!(moves_in_place(&mut sim, a, b, 1), 0, "the 62nd too");
    assert!(sim.drain(a).is_empty(), "no second RATE_LIMITED in the same second");
    sim.assert_quiet_except(&[]);

    // Half a second refills 30 tokens; dropping more within the second stays silent.
    sim.advance(millis(500));
    assert_eq!(moves_in_place(&mut sim, a, b, 31), 30);
    assert!(sim.drain(a).is_empty(), "no second RATE_LIMITED within a second");
    // The limit is per player: another kind over its limit within the second is silent as well.
    for _ in 0..11 {
        assert_eq!(sim.send(a, 0, &Packet::Ping { payload: b"" }), Verdict::Continue);
    }
    let frames = sim.drain(a);
    assert_eq!(frames.len(), 10, "10 PONGs, the 11th PING dropped without ERROR: {frames:?}");
    assert!(frames.iter().all(|(_, msg)| matches!(msg, Msg::Pong(_))));

    // A second and a half after the first ERROR, the bucket is full again and an ERROR may come.
    sim.advance(Duration::from_secs(1));
    assert_eq!(moves_in_place(&mut sim, a, b, 61), 60);
    assert_error(&sim.drain(a), alice.get(), ErrorCode::RateLimited);
    sim.assert_quiet_except(&[]);
    sim.check_views();
}

/// Sends MOVEs in place as `conn` at `per_second` for `secs` seconds (in 10 ms steps, draining
/// `viewer` and checking it hears only MOVEs about the mover); returns the first Close verdict's time
/// since the start, if any, and whether `conn` heard anything but RATE_LIMITED before it.
fn flood_moves(
    sim: &mut Sim,
    conn: ConnIdx,
    viewer: ConnIdx,
    per_second: u32,
    secs: u32,
) -> Option<Duration> {
    let at = sim.position(conn);
    let id = sim.id(conn).get();
    let per_step = per_second / 100;
    for step in 0..secs * 100 {
        for i in 0..per_step {
            let claimed = Move::new(at.x, at.y, at.z, 0.0, step * per_step + i);
            if sim.send(conn, 0, &Packet::Move(&claimed)) == Verdict::Close {
                return Some(millis(10 * u64::from(step)));
            }
        }
        let heard = sim.drain(viewer);
        assert!(heard.iter().all(|(from, msg)| *from == id && matches!(msg, Msg::Move(_))), "{heard:?}");
        for (from, msg) in sim.drain(conn) {
            assert_eq!((from, msg.error_code()), (id, Some(ErrorCode::RateLimited.code())), "step {step}");
        }
        sim.advance(millis(10));
    }
    None
}

#[test]
fn sustained_abuse_at_10x_the_move_limit_is_cut_with_rate_limited_and_viewers_get_leave() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    // 600 MOVEs a second against 60/s: 540 refused a second; 80 x 60 = 4800 refusals within the
    // 10 s window opened by the first one end the session, about 8.9 s in.
    let cut = flood_moves(&mut sim, a, b, 600, 10).expect("10 x the MOVE limit for 10 s must disconnect");
    assert!(cut > Duration::from_secs(8) && cut < Duration::from_secs(10), "cut after {cut:?}");
    // The last frame is the (here fatal) RATE_LIMITED, even within a second of the previous one, and
    // it is sent as the last frame, so that it passes a send queue the flooder no longer reads.
    let frames = sim.drain(a);
    assert_error(&frames, alice.get(), ErrorCode::RateLimited);
    assert!(sim.client(a).got_last_frame, "the closing RATE_LIMITED must be marked as the last frame");
    // Bob may still hear MOVEs accepted in the last step, then LEAVE.
    let heard = sim.drain(b);
    assert_eq!(heard.last(), Some(&(alice.get(), Msg::Leave)), "{heard:?}");
    assert!(
        heard[..heard.len() - 1]
            .iter()
            .all(|(from, msg)| *from == alice.get() && matches!(msg, Msg::Move(_)))
    );
    sim.assert_quiet_except(&[]);
    assert!(sim.session(a).is_closed());
    assert_eq!(sim.world.player_count(), 1);
    assert_eq!(sim.send(a, 0, &Packet::Ping { payload: b"more" }), Verdict::Close);
    sim.assert_quiet_except(&[]);
    sim.check_views();
}

#[test]
fn twice_the_move_limit_for_a_minute_only_gets_rate_limited() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, _) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    assert_eq!(flood_moves(&mut sim, a, b, 120, 60), None, "2 x the limit must not disconnect");
    assert!(!sim.session(a).is_closed());
    assert_eq!(sim.world.player_count(), 2);
    // Still served: a PING is answered.
    assert_eq!(sim.send(a, 0, &Packet::Ping { payload: b"ok" }), Verdict::Continue);
    assert_eq!(sim.drain(a).len(), 1);
    sim.check_views();
}

#[test]
fn chat_limit_is_a_burst_of_10_then_5_a_second() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    for i in 0..11 {
        assert_eq!(sim.send(a, 0, &Packet::Chat { text: &format!("chat {i}") }), Verdict::Continue);
    }
    let heard = sim.drain(b);
    assert_eq!(heard.len(), 10, "{heard:?}");
    assert_eq!(heard[9], (alice.get(), Msg::Chat("chat 9".into())));
    assert_error(&sim.drain(a), alice.get(), ErrorCode::RateLimited);
    // 0.2 s at 5/s: one more.
    sim.advance(millis(200));
    for text in ["one", "two"] {
        assert_eq!(sim.send(a, 0, &Packet::Chat { text }), Verdict::Continue);
    }
    assert_eq!(sim.drain(b), [(alice.get(), Msg::Chat("one".into()))]);
    sim.assert_quiet_except(&[]);
}

#[test]
fn attack_limit_is_a_burst_of_4_then_4_a_second() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    let (b, bob) = sim.join("bob");
    sim.drain_all();
    for _ in 0..5 {
        assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: bob.get() }), Verdict::Continue);
    }
    let hits = sim.drain(b);
    assert_eq!(hits.len(), 4);
    assert_eq!(hits[3], (alice.get(), hit(bob, 10, 60)));
    let frames = sim.drain(a);
    assert_eq!(frames.len(), 5);
    assert_error(&frames[4..], alice.get(), ErrorCode::RateLimited);
    assert_eq!(sim.hp(b), 60, "the dropped ATTACK did no damage");
    sim.advance(millis(250));
    for _ in 0..2 {
        assert_eq!(sim.send(a, 0, &Packet::Attack { target_id: bob.get() }), Verdict::Continue);
    }
    assert_eq!(sim.drain(b), [(alice.get(), hit(bob, 10, 50))]);
    assert_eq!(sim.drain(a), [(alice.get(), hit(bob, 10, 50))]);
    sim.check_views();
}

#[test]
fn ping_limit_is_a_burst_of_10_then_10_a_second() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, alice) = sim.join("alice");
    for i in 0..11u8 {
        assert_eq!(sim.send(a, 0, &Packet::Ping { payload: &[i] }), Verdict::Continue);
    }
    let frames = sim.drain(a);
    assert_eq!(frames.len(), 12, "WELCOME, 10 PONGs, one ERROR: {frames:?}");
    assert_eq!(frames[10], (alice.get(), Msg::Pong(vec![9])));
    assert_error(&frames[11..], alice.get(), ErrorCode::RateLimited);
    sim.advance(millis(100));
    for i in 0..2u8 {
        assert_eq!(sim.send(a, 0, &Packet::Ping { payload: &[i] }), Verdict::Continue);
    }
    assert_eq!(sim.drain(a), [(alice.get(), Msg::Pong(vec![0]))]);
}

// --- Timeouts -------------------------------------------------------------------------------------

#[test]
fn hello_must_come_within_5_seconds() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let start = sim.start();
    let (watcher, _) = sim.join("watcher");
    let c = sim.connect();
    assert_eq!(sim.session(c).deadline(sim.config()), start + Duration::from_secs(5));
    sim.set_time(millis(4_999));
    assert_eq!(sim.poll_timeout(c), Verdict::Continue);
    sim.set_time(Duration::from_secs(5));
    assert_eq!(sim.poll_timeout(c), Verdict::Close);
    assert_error(&sim.drain(c), 0, ErrorCode::Timeout);
    sim.assert_quiet_except(&[watcher]);

    // A HELLO in time ends the HELLO deadline; the idle one starts from it.
    let d = sim.connect();
    sim.advance(millis(4_900));
    let id = sim.hello(d, "late but in time");
    assert_eq!(sim.session(d).deadline(sim.config()), start + millis(9_900) + Duration::from_secs(30));
    sim.set_time(Duration::from_secs(11));
    assert_eq!(sim.poll_timeout(d), Verdict::Continue);
    assert_eq!(sim.world.player(id).map(|p| p.name), Some("late but in time"));
}

#[test]
fn idle_timeout_counts_only_packets_from_the_client() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let start = sim.start();
    let (a, alice) = sim.join("alice");
    let (b, bob) = sim.join("bob");
    let (c, _) = sim.join("carol");
    sim.drain_all();
    assert_eq!(sim.session(a).deadline(sim.config()), start + Duration::from_secs(30));

    sim.set_time(Duration::from_secs(20));
    assert_eq!(sim.send(a, 0, &Packet::Ping { payload: b"" }), Verdict::Continue);
    assert_eq!(sim.drain(a), [(alice.get(), Msg::Pong(vec![]))]);
    assert_eq!(sim.session(a).deadline(sim.config()), start + Duration::from_secs(50));
    // Carol's packet is a MOVE that gets rejected: still a packet from her.
    sim.set_time(Duration::from_secs(25));
    assert_rejected(&mut sim, c, Move::new(900.0, 0.0, 900.0, 0.0, 1), "too far");
    assert_eq!(sim.session(c).deadline(sim.config()), start + Duration::from_secs(55));
    // Frames sent to a client do not count: bob only received.
    sim.set_time(millis(29_999));
    assert!(sim.poll_timeouts().is_empty());
    sim.set_time(Duration::from_secs(30));
    assert_eq!(sim.poll_timeouts(), [b]);
    assert_error(&sim.drain(b), bob.get(), ErrorCode::Timeout);
    assert_eq!(sim.drain(a), [(bob.get(), Msg::Leave)]);
    assert_eq!(sim.drain(c), [(bob.get(), Msg::Leave)]);

    sim.set_time(millis(49_999));
    assert!(sim.poll_timeouts().is_empty());
    sim.set_time(Duration::from_secs(50));
    assert_eq!(sim.poll_timeouts(), [a]);
    assert_error(&sim.drain(a), alice.get(), ErrorCode::Timeout);
    assert_eq!(sim.drain(c), [(alice.get(), Msg::Leave)]);
    sim.check_views();
}

/// The I/O layer polls timeouts coarsely (its sweep runs a few times a second) and may hand a frame
/// to the world before it polls: a frame that arrives once the deadline has passed must not rescue
/// the session.
#[test]
fn a_frame_arriving_after_the_deadline_does_not_rescue_the_session() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let c = sim.connect();
    sim.set_time(Duration::from_secs(5));
    let hello = encode_frame_to_vec(0, &Packet::Hello { name: "too late" });
    assert_fatal(&mut sim, c, &hello, 0, ErrorCode::Timeout, &[]);
    assert_eq!(sim.world.player_count(), 0);

    let (a, alice) = sim.join("alice");
    let (b, _) = sim.join("bob");
    sim.drain_all();
    sim.set_time(Duration::from_secs(5 + 30));
    let ping = encode_frame_to_vec(0, &Packet::Ping { payload: b"still here?" });
    assert_fatal(&mut sim, a, &ping, alice.get(), ErrorCode::Timeout, &[b]);
}

/// The I/O layer may leave a frame unread for a while (its pool exhausted, reading paused): the
/// session's deadline is judged at the time the frame completed at the socket, not when it was read,
/// while the rules and the idle clock run at the time it is read.
#[test]
fn a_frame_read_late_is_judged_when_it_completed() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let c = sim.connect();
    sim.set_time(Duration::from_secs(18)); // read 18 s after accept ...
    assert_eq!(sim.send_completed_at(c, millis(10), &Packet::Hello { name: "on time" }), Verdict::Continue);
    assert!(matches!(sim.drain(c).first(), Some((_, Msg::Welcome(_)))), "... sent at once: WELCOMEd");
    assert!(sim.world.player(sim.id(c)).is_some());
    // The idle clock restarts when the server learns of the frame, not before.
    assert_eq!(sim.session(c).deadline(sim.config()), sim.start() + Duration::from_secs(18 + 30));

    let late = sim.connect();
    sim.set_time(Duration::from_secs(25));
    let verdict = sim.send_completed_at(late, Duration::from_secs(18 + 5), &Packet::Hello { name: "late" });
    assert_eq!(verdict, Verdict::Close, "a HELLO that completed past its deadline is late however read");
    assert_error(&sim.drain(late), 0, ErrorCode::Timeout);
}

#[test]
fn a_closed_session_stays_closed() {
    let mut sim = sim_with_spawn(500.0, 500.0);
    let (a, _) = sim.join("alice");
    let (_b, _) = sim.join("bob");
    sim.disconnect(a);
    sim.drain_all();
    assert_eq!(sim.send(a, 0, &Packet::Ping { payload: b"" }), Verdict::Close);
    sim.advance(Duration::from_secs(60));
    assert_eq!(sim.poll_timeout(a), Verdict::Close);
    sim.disconnect(a);
    sim.assert_quiet_except(&[]);
    assert_eq!(sim.world.player_count(), 1);
    sim.check_views();
}
