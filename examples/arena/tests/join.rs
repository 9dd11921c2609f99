//! Joining the arena over real sockets: HELLO, the game's WELCOME, then SHIP frames only between
//! players within sight; the arena's own rules (bad state, malformed payloads, the fire rate).

mod util;

use std::time::Duration;

use gamewire_arena::protocol::{self, ClientPacket, Fire, ServerPacket, Steer};
use gamewire_net::IoBackend;
use gamewire_proto::ErrorCode;
use util::{Frame, Running, config_with_spawns};

/// A 150-unit sight: A and B (60 apart) see each other, C (1000 away) sees neither.
const SPAWNS: [(f32, f32); 3] = [(100.0, 100.0), (160.0, 100.0), (800.0, 800.0)];

fn ship_of(frame: &Frame, id: u32) -> bool {
    frame.packet_id == protocol::SHIP && frame.player_id == id
}

#[test]
fn hello_gets_welcome_then_ships_within_sight_and_none_beyond() {
    let mut config = config_with_spawns(&SPAWNS);
    config.refresh_ticks = 4;
    let server = Running::start(config, IoBackend::Mio, 2).expect("mio runs everywhere");
    let mut a = server.join("a");
    let mut b = server.join("b");
    let mut c = server.join("c");
    assert!(a.id != b.id && b.id != c.id && a.id != c.id, "distinct player ids");

    // B joined in A's sight: A is told of B at once, B of A in its join.
    let b_seen = a.wait_for("SHIP of B", |f| ship_of(f, b.id));
    let ServerPacket::Ship(ship) = b_seen.packet() else { unreachable!() };
    assert_eq!((ship.x, ship.z, ship.hp), (160.0, 100.0, 100));
    b.wait_for("SHIP of A", |f| ship_of(f, a.id));

    // Several refreshes later (every 4 ticks at 20 Hz), C has heard only of itself.
    c.read_for(Duration::from_millis(700));
    let own = c.inbox.iter().filter(|f| ship_of(f, c.id)).count();
    assert!(own >= 2, "C is refreshed about its own ship; inbox {:?}", c.inbox);
    assert!(
        !c.inbox.iter().any(|f| f.player_id == a.id || f.player_id == b.id),
        "C is out of sight of A and B: {:?}",
        c.inbox
    );
    a.read_for(Duration::from_millis(100));
    assert!(!a.inbox.iter().any(|f| f.player_id == c.id), "A never hears of C: {:?}", a.inbox);
}

#[test]
fn a_steered_ship_moves_on_the_server_tick_in_sight_of_others() {
    let server = Running::start(config_with_spawns(&SPAWNS), IoBackend::Mio, 2).unwrap();
    let mut a = server.join("a");
    let mut b = server.join("b");
    a.wait_for("SHIP of B", |f| ship_of(f, b.id));
    // One STEER; the ship then moves every tick without another frame. Heading pi: towards -x.
    b.send(&ClientPacket::Steer(Steer::new(std::f32::consts::PI, 1.0).unwrap()));
    let mut last_x = 160.0;
    for step in 0..3 {
        let frame = a.wait_for("a moving SHIP of B", |f| ship_of(f, b.id));
        let ServerPacket::Ship(ship) = frame.packet() else { unreachable!() };
        assert!(ship.x < last_x, "step {step}: B moves towards -x ({} after {last_x})", ship.x);
        last_x = ship.x;
    }
    // Its own ship's moves reach B too.
    let b_id = b.id;
    b.wait_for("B's own SHIP", |f| ship_of(f, b_id));
}

#[test]
fn a_frame_before_hello_is_bad_state_and_a_second_hello_too() {
    let server = Running::start(config_with_spawns(&SPAWNS), IoBackend::Mio, 2).unwrap();
    let mut early = util::Client::connect(server.addr);
    early.send(&ClientPacket::Fire(Fire::new(0.0).unwrap()));
    assert_fatal_error(early.until_closed(), ErrorCode::BadState);

    let mut twice = server.join("twice");
    twice.send(&ClientPacket::Hello { name: "again" });
    assert_fatal_error(twice.until_closed(), ErrorCode::BadState);
}

#[test]
fn a_malformed_steer_fails_the_session_with_malformed() {
    let server = Running::start(config_with_spawns(&SPAWNS), IoBackend::Mio, 2).unwrap();
    let mut a = server.join("a");
    let mut b = server.join("b");
    // STEER with 7 bytes of payload (its payload is 8).
    let frame = [protocol::STEER.to_le_bytes(), 0u32.to_le_bytes(), 7u32.to_le_bytes()].concat();
    a.send_bytes(&[&frame[..], &[0; 7]].concat());
    assert_fatal_error(a.until_closed(), ErrorCode::Malformed);
    // A throttle of 2 is as malformed as a short payload.
    let steer = [2.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat();
    let header = [protocol::STEER.to_le_bytes(), 0u32.to_le_bytes(), 8u32.to_le_bytes()].concat();
    b.send_bytes(&[header, steer].concat());
    let frames = b.until_closed();
    assert!(frames.iter().any(|f| f.packet_id == protocol::GONE && f.player_id == a.id), "B saw A go");
    assert_fatal_error(frames, ErrorCode::Malformed);
}

#[test]
fn firing_faster_than_the_limit_is_rate_limited_and_not_fatal() {
    let server = Running::start(config_with_spawns(&SPAWNS), IoBackend::Mio, 2).unwrap();
    let mut a = server.join("a");
    let fire = ClientPacket::Fire(Fire::new(0.0).unwrap());
    a.send(&fire);
    a.send(&fire);
    a.wait_for("the first SHOT", |f| f.packet_id == protocol::SHOT);
    let error = a.wait_for("RATE_LIMITED", |f| f.packet_id == protocol::ERROR);
    assert_eq!(error.packet(), ServerPacket::error(ErrorCode::RateLimited));
    // Still in: PING is answered.
    a.send(&ClientPacket::Ping { payload: b"still here" });
    let pong = a.wait_for("PONG", |f| f.packet_id == protocol::PONG);
    assert_eq!(pong.packet(), ServerPacket::Pong { payload: b"still here" });
    assert_eq!(a.inbox.iter().filter(|f| f.packet_id == protocol::SHOT).count(), 0, "one shot only");
}

/// The last frame is ERROR `code`, and nothing follows it.
pub(crate) fn assert_fatal_error(frames: Vec<Frame>, code: ErrorCode) {
    let last = frames.last().unwrap_or_else(|| panic!("no ERROR({code:?}) before the close"));
    assert_eq!(last.packet_id, protocol::ERROR, "last frame {last:?}");
    let ServerPacket::Error { code: got, .. } = last.packet() else { unreachable!() };
    assert_eq!(got, code.code(), "ERROR code; frames {frames:?}");
}
