//! Randomized model checks: crowds of players in a small world doing legal and illegal things over
//! fake time, with an oracle written from protocol v1 for every step, the harness's per-frame
//! visibility checker, and [`util::Sim::check_views`] after every step. Plus the grid-versus-brute-
//! force property for random worlds.

mod util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, Move, Packet, encode_frame_to_vec};
use gamewire_world::{Config, PlayerId, Position, Rate, RateLimits, Verdict};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use util::{ConnIdx, Msg, Sim, assert_error, enter, hit, mv, raw_frame};

/// Frames as a sorted list, for sets of frames whose relative order the protocol leaves open.
fn unordered(frames: &[(u32, Msg)]) -> Vec<String> {
    let mut frames: Vec<String> = frames.iter().map(|frame| format!("{frame:?}")).collect();
    frames.sort();
    frames
}

/// The protocol's MOVE rule, written from its text.
fn is_legal(config: &Config, last: Position, accepted_at: Instant, now: Instant, claimed: &Move) -> bool {
    let (x, y, z, velocity) = (claimed.x.get(), claimed.y.get(), claimed.z.get(), claimed.velocity.get());
    let finite = x.is_finite() && y.is_finite() && z.is_finite() && velocity.is_finite();
    let inside = 0.0 <= x && x < config.world_w && 0.0 <= z && z < config.world_h && y.abs() <= 10_000.0;
    let speed_ok = 0.0 <= velocity && velocity <= config.max_speed;
    let seconds = now.duration_since(accepted_at).as_secs_f64();
    let (dx, dz) = (x as f64 - last.x as f64, z as f64 - last.z as f64);
    let near = (dx * dx + dz * dz).sqrt() <= config.max_speed as f64 * (seconds + 0.1);
    finite && inside && speed_ok && near
}

#[derive(Debug, Default)]
struct Stats {
    accepted: usize,
    rejected: usize,
    view_changes: usize,
    chats: usize,
    hits: usize,
    kills: usize,
    invalid_targets: usize,
    joins: usize,
    leaves: usize,
    fatal: usize,
    timeouts: usize,
}

struct Model {
    sim: Sim,
    rng: fastrand::Rng,
    /// Ids of players who left: targets for stale ATTACKs.
    departed: Vec<u32>,
    stats: Stats,
    min_players: usize,
    max_players: usize,
}

impl Model {
    fn config(&self) -> Config {
        self.sim.config().clone()
    }

    fn pick_player(&mut self) -> Option<ConnIdx> {
        let players = self.sim.players();
        self.rng.choice(players)
    }

    fn random_text(&mut self, min: usize, max_bytes: usize) -> String {
        const ALPHABET: [&str; 8] = ["a", "Z", " ", "é", "ü", "✓", "😀", "\u{0}"];
        let len = self.rng.usize(min..=40);
        let mut text = String::new();
        for _ in 0..len {
            let piece = ALPHABET[self.rng.usize(..ALPHABET.len())];
            if text.len() + piece.len() > max_bytes {
                break;
            }
            text.push_str(piece);
        }
        if text.is_empty() {
            text.push('x');
        }
        text
    }

    fn enter_about(&self, conn: ConnIdx) -> (u32, Msg) {
        let info = self.sim.world.player(self.sim.id(conn)).expect("live");
        (info.id.get(), enter(info.position, info.hp, info.name))
    }

    fn join(&mut self) {
        let conn = self.sim.connect();
        let name = self.random_text(1, 32);
        let id = self.sim.hello(conn, &name);
        self.stats.joins += 1;
        let viewers = self.sim.viewers(conn);
        let frames = self.sim.drain(conn);
        assert!(matches!(frames[0].1, Msg::Welcome(_)));
        let expected: Vec<_> = viewers.iter().map(|&v| self.enter_about(v)).collect();
        assert_eq!(unordered(&frames[1..]), unordered(&expected), "ENTERs to the newcomer");
        let about_newcomer = self.enter_about(conn);
        for conn in 0..self.sim.connections() {
            let frames = self.sim.drain(conn);
            if viewers.contains(&conn) {
                assert_eq!(frames, std::slice::from_ref(&about_newcomer));
            } else {
                assert!(frames.is_empty(), "connection {conn} told about newcomer {id}: {frames:?}");
            }
        }
    }

    fn legal_move(&mut self, last: Position, reach: f64) -> Move {
        let config = self.config();
        let (w, h, r) = (config.world_w, config.world_h, config.aoi_radius);
        let reach = reach * 0.999;
        let (mut x, mut z) = match self.rng.u8(..10) {
            0 => (last.x, last.z),
            1 | 2 => {
                // Onto cell borders (multiples of the radius), when within reach.
                let x = (last.x / r).round() * r;
                let z = (last.z / r).round() * r;
                let (dx, dz) = (x as f64 - last.x as f64, z as f64 - last.z as f64);
                if (dx * dx + dz * dz).sqrt() <= reach { (x, z) } else { (last.x, last.z) }
            }
            _ => {
                let angle = self.rng.f64() * std::f64::consts::TAU;
                let distance = self.rng.f64() * reach.min(2.5 * r as f64);
                (
                    (last.x as f64 + distance * angle.cos()) as f32,
                    (last.z as f64 + distance * angle.sin()) as f32,
                )
            }
        };
        // Clamping towards the world, which holds `last`, only shortens the step.
        x = x.clamp(0.0, w.next_down());
        z = z.clamp(0.0, h.next_down());
        let y = match self.rng.u8(..4) {
            0 => self.rng.f32() * 20_000.0 - 10_000.0,
            1 => 10_000.0,
            _ => last.y,
        };
        let velocity = match self.rng.u8(..4) {
            0 => 0.0,
            1 => config.max_speed,
            _ => self.rng.f32() * config.max_speed,
        };
        Move::new(x, y, z, velocity, self.rng.u32(..))
    }

    fn illegal_move(&mut self, last: Position, reach: f64) -> Move {
        let config = self.config();
        let (w, h) = (config.world_w, config.world_h);
        let time = self.rng.u32(..);
        let (x, y, z, v) = (last.x, last.y, last.z, 1.0);
        match self.rng.u8(..8) {
            0 => {
                let bad = if self.rng.bool() { f32::NAN } else { f32::NEG_INFINITY };
                match self.rng.u8(..4) {
                    0 => Move::new(bad, y, z, v, time),
                    1 => Move::new(x, bad, z, v, time),
                    2 => Move::new(x, y, bad, v, time),
                    _ => Move::new(x, y, z, bad, time),
                }
            }
            1 => Move::new(w, y, z, v, time),
            2 => Move::new(x, y, h, v, time),
            3 => Move::new(-0.01, y, -self.rng.f32(), v, time),
            4 => Move::new(x, 10_000.01 + self.rng.f32() * 1e6, z, v, time),
            5 => Move::new(x, y, z, -self.rng.f32() - f32::MIN_POSITIVE, time),
            6 => Move::new(x, y, z, config.max_speed.next_up() + self.rng.f32() * 100.0, time),
            _ => {
                let angle = self.rng.f64() * std::f64::consts::TAU;
                let distance = reach * 1.02 + 0.5;
                let tx = (last.x as f64 + distance * angle.cos()) as f32;
                let tz = (last.z as f64 + distance * angle.sin()) as f32;
                Move::new(tx, y, tz, v, time)
            }
        }
    }

    fn step_move(&mut self) {
        let Some(conn) = self.pick_player() else { return };
        let config = self.config();
        let id = self.sim.id(conn);
        let now = self.sim.now();
        // What the client itself knows: its last accepted position and when it was accepted.
        let view = &self.sim.client(conn).view;
        let (last, accepted_at) = (view.position, view.accepted_at);
        let reach = config.max_speed as f64 * (now.duration_since(accepted_at).as_secs_f64() + 0.1);
        let want_legal = self.rng.u8(..4) != 0;
        let claimed = if want_legal { self.legal_move(last, reach) } else { self.illegal_move(last, reach) };
        let legal = is_legal(&config, last, accepted_at, now, &claimed);
        assert_eq!(legal, want_legal, "test generator: {claimed:?} from {last:?}");

        let before = self.sim.viewers(conn);
        let header = if self.rng.bool() { 0 } else { id.get() };
        assert_eq!(self.sim.send(conn, header, &Packet::Move(&claimed)), Verdict::Continue);
        let mine = self.sim.drain(conn);
        if !legal {
            self.stats.rejected += 1;
            assert_eq!(mine, [(id.get(), mv(last.x, last.y, last.z, 0.0, claimed.client_time.get()))]);
            self.sim.assert_quiet_except(&[]);
            return;
        }
        self.stats.accepted += 1;
        let target = Position::new(claimed.x.get(), claimed.y.get(), claimed.z.get());
        assert_eq!(util::bits(self.sim.position(conn)), util::bits(target));
        let after = self.sim.viewers(conn);
        let mut expected_mine = Vec::new();
        let about_mover = self.enter_about(conn);
        for other in 0..self.sim.connections() {
            if other == conn {
                continue;
            }
            let frames = self.sim.drain(other);
            let expected = match (before.contains(&other), after.contains(&other)) {
                (true, true) => vec![(id.get(), Msg::Move(claimed))],
                (false, true) => {
                    expected_mine.push(self.enter_about(other));
                    vec![about_mover.clone()]
                }
                (true, false) => {
                    expected_mine.push((self.sim.id(other).get(), Msg::Leave));
                    vec![(id.get(), Msg::Leave)]
                }
                (false, false) => vec![],
            };
            assert_eq!(frames, expected, "what connection {other} received about mover {id}");
        }
        self.stats.view_changes += expected_mine.len();
        assert_eq!(unordered(&mine), unordered(&expected_mine), "what mover {id} received");
    }

    fn step_chat(&mut self) {
        let Some(conn) = self.pick_player() else { return };
        let id = self.sim.id(conn);
        let text = self.random_text(1, 256);
        let viewers = self.sim.viewers(conn);
        assert_eq!(self.sim.send(conn, 0, &Packet::Chat { text: &text }), Verdict::Continue);
        self.stats.chats += 1;
        let expected = encode_frame_to_vec(id.get(), &Packet::Chat { text: &text });
        for other in 0..self.sim.connections() {
            let frames = self.sim.drain_raw(other);
            if viewers.contains(&other) {
                assert_eq!(frames, std::slice::from_ref(&expected), "CHAT to viewer {other}");
            } else {
                assert!(frames.is_empty(), "CHAT reached connection {other}, which does not see {id}");
            }
        }
    }

    fn step_attack(&mut self) {
        let Some(conn) = self.pick_player() else { return };
        let config = self.config();
        let attacker = self.sim.id(conn);
        let origin = self.sim.position(conn);
        let in_range: Vec<ConnIdx> = self
            .sim
            .viewers(conn)
            .into_iter()
            .filter(|&v| self.sim.position(v).within(origin, config.attack_range))
            .collect();
        let target_id = match self.rng.u8(..10) {
            0..=4 if !in_range.is_empty() => self.sim.id(in_range[self.rng.usize(..in_range.len())]).get(),
            0..=5 => match self.rng.choice(self.sim.viewers(conn)) {
                Some(v) => self.sim.id(v).get(),
                None => attacker.get(),
            },
            6 => match self.pick_player() {
                Some(p) => self.sim.id(p).get(),
                None => 0,
            },
            7 => attacker.get(),
            8 => match self.rng.choice(&self.departed) {
                Some(&stale) => stale,
                None => 0,
            },
            _ => self.rng.u32(..),
        };
        // The rule, from the protocol: another live player, seen, within attack_range.
        let target = PlayerId::from_wire(target_id)
            .filter(|&t| t != attacker)
            .and_then(|t| self.sim.world.player(t))
            .filter(|t| {
                t.position.within(origin, config.aoi_radius) && t.position.within(origin, config.attack_range)
            })
            .map(|t| (t.id, t.hp));
        let Some((target, hp)) = target else {
            assert_eq!(self.sim.send(conn, 0, &Packet::Attack { target_id }), Verdict::Continue);
            self.stats.invalid_targets += 1;
            assert_error(&self.sim.drain(conn), attacker.get(), ErrorCode::InvalidTarget);
            self.sim.assert_quiet_except(&[]);
            return;
        };
        let target_conn = (0..self.sim.connections())
            .find(|&c| self.sim.is_open(c) && self.sim.client(c).view.id == Some(target.get()))
            .expect("target's connection");
        let mut hit_set = self.sim.viewers(conn);
        hit_set.insert(conn);
        assert!(hit_set.contains(&target_conn), "seeing is symmetric");
        let target_before = self.sim.viewers(target_conn);

        assert_eq!(self.sim.send(conn, 0, &Packet::Attack { target_id }), Verdict::Continue);
        self.stats.hits += 1;
        let left = hp.saturating_sub(config.damage);
        let hit_frame = (attacker.get(), hit(target, config.damage, left));
        let target_after = self.sim.viewers(target_conn);
        let respawned = self.sim.position(target_conn);
        if left == 0 {
            self.stats.kills += 1;
            assert_eq!(self.sim.hp(target_conn), config.max_hp);
            if let Some((x, z)) = config.spawn {
                assert_eq!((respawned.x, respawned.z), (x, z));
            }
        } else {
            assert_eq!(self.sim.hp(target_conn), left);
        }
        let respawn_move = (target.get(), mv(respawned.x, respawned.y, respawned.z, 0.0, 0));
        let about_target = self.enter_about(target_conn);
        let mut target_views = Vec::new();
        for other in 0..self.sim.connections() {
            if other == target_conn {
                continue;
            }
            let mut expected = Vec::new();
            if hit_set.contains(&other) {
                expected.push(hit_frame.clone());
            }
            if left == 0 {
                match (target_before.contains(&other), target_after.contains(&other)) {
                    (true, true) => expected.push(respawn_move.clone()),
                    (false, true) => {
                        expected.push(about_target.clone());
                        target_views.push(self.enter_about(other));
                    }
                    (true, false) => {
                        expected.push((target.get(), Msg::Leave));
                        target_views.push((self.sim.id(other).get(), Msg::Leave));
                    }
                    (false, false) => {}
                }
            }
            assert_eq!(self.sim.drain(other), expected, "connection {other} after {attacker} hit {target}");
        }
        let frames = self.sim.drain(target_conn);
        assert_eq!(frames[0], hit_frame, "target's HIT");
        if left == 0 {
            assert_eq!(frames[1], respawn_move, "target's respawn correction");
            assert_eq!(unordered(&frames[2..]), unordered(&target_views), "target's view after respawn");
        } else {
            assert_eq!(frames.len(), 1);
        }
    }

    fn step_ping(&mut self) {
        let Some(conn) = self.pick_player() else { return };
        let id = self.sim.id(conn);
        let mut payload = vec![0; self.rng.usize(..=64)];
        self.rng.fill(&mut payload);
        assert_eq!(self.sim.send(conn, id.get(), &Packet::Ping { payload: &payload }), Verdict::Continue);
        assert_eq!(self.sim.drain(conn), [(id.get(), Msg::Pong(payload))]);
        self.sim.assert_quiet_except(&[]);
    }

    fn step_leave(&mut self) {
        if self.sim.players().len() <= self.min_players {
            return;
        }
        let Some(conn) = self.pick_player() else { return };
        let id = self.sim.id(conn);
        let viewers = self.sim.viewers(conn);
        let fatal = self.rng.u8(..3) == 0;
        if fatal {
            let (bytes, code) = match self.rng.u8(..4) {
                0 => (raw_frame(3, id.get() ^ 0x10_0000, &[0; 20]), ErrorCode::SpoofedId),
                1 => (raw_frame(1, 0, b"again"), ErrorCode::BadState),
                2 => (raw_frame(3, 0, &[0; 16]), ErrorCode::Malformed),
                _ => (raw_frame(7, id.get(), &[]), ErrorCode::UnknownPacket),
            };
            assert_eq!(self.sim.send_bytes(conn, &bytes), Verdict::Close);
            assert_error(&self.sim.drain(conn), id.get(), code);
            self.stats.fatal += 1;
        } else {
            self.sim.disconnect(conn);
            assert!(self.sim.drain(conn).is_empty());
        }
        self.stats.leaves += 1;
        self.departed.push(id.get());
        for other in 0..self.sim.connections() {
            let frames = self.sim.drain(other);
            if viewers.contains(&other) {
                assert_eq!(frames, [(id.get(), Msg::Leave)]);
            } else {
                assert!(frames.is_empty(), "connection {other} told that {id} left: {frames:?}");
            }
        }
    }

    fn step_time(&mut self) {
        let config = self.config();
        self.sim.advance(Duration::from_millis(self.rng.u64(..400)));
        let now = self.sim.now();
        // Who must time out, from what the harness saw go to the world (not from the session).
        let mut due = BTreeSet::new();
        let mut seen_by = Vec::new();
        for conn in 0..self.sim.connections() {
            let client = self.sim.client(conn);
            if !client.open {
                continue;
            }
            let deadline = match client.view.id {
                None => client.connected_at + config.hello_timeout,
                Some(_) => client.last_sent.expect("sent HELLO") + config.idle_timeout,
            };
            if now >= deadline {
                due.insert(conn);
                if client.view.id.is_some() {
                    seen_by.push((conn, self.sim.viewers(conn)));
                }
            }
        }
        let closed: BTreeSet<ConnIdx> = self.sim.poll_timeouts().into_iter().collect();
        assert_eq!(closed, due, "connections timed out at {:?}", now - self.sim.start());
        self.stats.timeouts += closed.len();
        for conn in 0..self.sim.connections() {
            let mut frames = self.sim.drain(conn);
            if closed.contains(&conn) {
                let (header, error) = frames.pop().expect("a TIMEOUT");
                assert_eq!(error.error_code(), Some(ErrorCode::Timeout.code()));
                assert_eq!(header, self.sim.client(conn).view.id.unwrap_or(0));
            }
            let expected: Vec<_> = seen_by
                .iter()
                .filter(|(_, viewers)| viewers.contains(&conn))
                .map(|&(gone, _)| (self.sim.client(gone).view.id.expect("welcomed"), Msg::Leave))
                .collect();
            if closed.contains(&conn) {
                // LEAVEs about players that timed out before it in the same poll round.
                assert!(frames.iter().all(|frame| expected.contains(frame)), "{frames:?}");
            } else {
                assert_eq!(unordered(&frames), unordered(&expected), "connection {conn} after timeouts");
            }
        }
    }

    fn step(&mut self) {
        match self.rng.u8(..100) {
            0..=34 => self.step_move(),
            35..=44 => self.step_chat(),
            45..=59 => self.step_attack(),
            60..=64 => self.step_ping(),
            65..=69 => self.step_leave(),
            70..=75 if self.sim.players().len() < self.max_players => self.join(),
            76..=77 => {
                // A connection that never says HELLO.
                self.sim.connect();
            }
            _ => self.step_time(),
        }
        self.sim.check_views();
    }
}

fn model_config(seed: u64) -> Config {
    let generous = Rate::new(100_000.0, 100_000.0);
    Config {
        world_w: 200.0,
        world_h: if seed.is_multiple_of(2) { 200.0 } else { 150.0 },
        aoi_radius: if seed.is_multiple_of(2) { 30.0 } else { 25.0 },
        max_speed: 50.0,
        attack_range: 12.0,
        damage: 10,
        max_hp: 30,
        // Every third world spawns everyone on one spot: crowds at a single point.
        spawn: if seed.is_multiple_of(3) { Some((100.0, 100.0)) } else { None },
        limits: RateLimits { moves: generous, chats: generous, attacks: generous, pings: generous },
        hello_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(8),
        seed,
        ..Config::default()
    }
}

fn run_model(seed: u64, steps: usize) -> Stats {
    let mut rng = fastrand::Rng::with_seed(seed);
    let min_players = rng.usize(20..40);
    let mut model = Model {
        sim: Sim::new(model_config(seed)),
        departed: Vec::new(),
        stats: Stats::default(),
        min_players,
        max_players: min_players + 40,
        rng,
    };
    let initial = model.rng.usize(min_players..min_players + 20);
    for _ in 0..initial {
        model.join();
        model.sim.check_views();
    }
    for _ in 0..steps {
        model.step();
    }
    model.stats
}

#[test]
fn random_crowds_keep_every_view_equal_to_the_geometry() {
    let mut total = Stats::default();
    for seed in 1..=6 {
        let stats = run_model(seed, 1_200);
        total.accepted += stats.accepted;
        total.rejected += stats.rejected;
        total.view_changes += stats.view_changes;
        total.chats += stats.chats;
        total.hits += stats.hits;
        total.kills += stats.kills;
        total.invalid_targets += stats.invalid_targets;
        total.joins += stats.joins;
        total.leaves += stats.leaves;
        total.fatal += stats.fatal;
        total.timeouts += stats.timeouts;
    }
    println!("{total:?}");
    // The model exercised what it claims to (guards against a generator that stopped generating).
    assert!(total.accepted > 500 && total.rejected > 100, "{total:?}");
    assert!(total.view_changes > 200, "{total:?}");
    assert!(total.hits > 100 && total.kills > 10 && total.invalid_targets > 50, "{total:?}");
    assert!(total.leaves > 20 && total.fatal > 5 && total.timeouts > 5, "{total:?}");
}

/// Players on every multiple of the radius: neighbours along an axis are exactly at the radius
/// (in view), diagonal ones beyond it.
#[test]
fn a_lattice_on_cell_borders_sees_exactly_its_axis_neighbours() {
    let radius = 25.0;
    let config = Config {
        world_w: 200.0,
        world_h: 200.0,
        aoi_radius: radius,
        max_speed: 1e30,
        spawn: Some((0.0, 0.0)),
        ..Config::default()
    };
    let mut sim = Sim::new(config);
    let coordinates: Vec<f32> = (0..8).map(|k| k as f32 * radius).chain([200.0f32.next_down()]).collect();
    let mut lattice = Vec::new();
    for &x in &coordinates {
        for &z in &coordinates {
            let (conn, _) = sim.join(&format!("{x},{z}"));
            sim.place(conn, x, z);
            lattice.push((conn, x, z));
        }
    }
    sim.check_views();
    for &(conn, x, z) in &lattice {
        let expected = lattice
            .iter()
            .filter(|&&(other, ox, oz)| {
                other != conn
                    && ((ox == x && (oz - z).abs() <= radius) || (oz == z && (ox - x).abs() <= radius))
            })
            .count();
        assert_eq!(sim.viewers(conn).len(), expected, "player at ({x}, {z})");
    }
}

/// Radius larger than the world: one cell, everybody sees everybody.
#[test]
fn a_radius_wider_than_the_world_shows_everyone() {
    let config =
        Config { world_w: 10.0, world_h: 5.0, aoi_radius: 100.0, max_speed: 1e30, ..Config::default() };
    let mut sim = Sim::new(config);
    let conns: Vec<ConnIdx> = (0..20).map(|i| sim.join(&format!("p{i}")).0).collect();
    sim.place(conns[0], 0.0, 0.0);
    sim.place(conns[1], 10.0f32.next_down(), 5.0f32.next_down());
    sim.check_views();
    for &conn in &conns {
        assert_eq!(sim.viewers(conn).len(), 19);
    }
}

/// A coordinate for the grid property: anywhere, on a cell border, on the world's edges, or exactly
/// one radius from a player already placed.
fn pick_coordinate(rng: &mut fastrand::Rng, extent: f32, radius: f32, others: &[f32]) -> f32 {
    let last = extent.next_down();
    let value = match rng.u8(..6) {
        0 | 1 => rng.f32() * extent,
        2 => rng.usize(..=(extent / radius) as usize + 1) as f32 * radius,
        3 => *rng.choice(&[0.0, last]).expect("two"),
        _ => match rng.choice(others) {
            Some(&other) => other + *rng.choice(&[radius, -radius, 0.0, radius.next_up()]).expect("four"),
            None => rng.f32() * extent,
        },
    };
    if (0.0..extent).contains(&value) { value } else { last }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/model.proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// For random worlds, `World::visible_to` (the grid) equals the brute-force scan, and so does
    /// what every client was told (checked by `check_views`), after joins and after moves.
    #[test]
    fn grid_equals_brute_force(
        world_w in 1.0f32..300.0,
        world_h in 1.0f32..300.0,
        radius in prop_oneof![1.5f32..10.0, 10.0f32..80.0, 80.0f32..700.0],
        players in 1usize..40,
        seed in any::<u64>(),
    ) {
        let config = Config {
            world_w,
            world_h,
            aoi_radius: radius,
            max_speed: 1e30,
            spawn: Some((0.0, 0.0)),
            seed,
            ..Config::default()
        };
        let mut sim = Sim::new(config);
        let mut rng = fastrand::Rng::with_seed(seed);
        let conns: Vec<ConnIdx> = (0..players).map(|i| sim.join(&format!("p{i}")).0).collect();
        sim.check_views();
        for round in 0..3 {
            for &conn in &conns {
                if round > 0 && rng.bool() {
                    continue;
                }
                let (xs, zs): (Vec<f32>, Vec<f32>) =
                    conns.iter().map(|&c| { let p = sim.position(c); (p.x, p.z) }).unzip();
                let x = pick_coordinate(&mut rng, world_w, radius, &xs);
                let z = pick_coordinate(&mut rng, world_h, radius, &zs);
                sim.place(conn, x, z);
            }
            sim.check_views();
        }
    }
}
