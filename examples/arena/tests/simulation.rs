//! The server simulates on its own: a projectile fired once moves on every tick with no client
//! frame, hits, scores and respawns, and only those who see it hear of it.

mod util;

use std::time::Duration;

use gamewire_arena::protocol::{self, ClientPacket, Fire, HitReport, ServerPacket};
use gamewire_net::IoBackend;
use util::{Client, Running, config_with_spawns};

/// A and B 60 apart in each other's sight, C far away; B respawns at the fourth point.
const SPAWNS: [(f32, f32); 4] = [(100.0, 100.0), (160.0, 100.0), (800.0, 800.0), (500.0, 500.0)];

#[test]
fn a_projectile_moves_on_ticks_hits_and_scores_without_client_input() {
    for (io, workers) in
        [(IoBackend::Mio, 1), (IoBackend::Uring, 1), (IoBackend::Mio, 2), (IoBackend::Uring, 2)]
    {
        eprintln!("--- backend {io:?}, {workers} worker(s)");
        let mut config = config_with_spawns(&SPAWNS);
        config.damage = 50;
        // No refresh during the test: every SHIP C gets would be its own anyway, but fewer frames
        // make a failure easier to read.
        config.refresh_ticks = 1000;
        let Some(server) = Running::start(config, io, workers) else { continue };
        let mut a = server.join("a");
        let mut b = server.join("b");
        let mut c = server.join("c");

        // First shot: 15 units a tick (300/s at 20 Hz) from x = 100 towards B at x = 160.
        a.send(&ClientPacket::Fire(Fire::new(0.0).unwrap()));
        let shot = a.wait_for("SHOT", |f| f.packet_id == protocol::SHOT);
        let ServerPacket::Shot(shot) = shot.packet() else { unreachable!() };
        assert_eq!((shot.x, shot.z, shot.vx), (100.0, 100.0, 300.0));
        b.wait_for("SHOT at B", |f| f.packet_id == protocol::SHOT && f.player_id == a.id);
        let hit = expect_flight_then_hit(&mut a, shot.projectile);
        assert_eq!(hit, HitReport { victim: b.id, projectile: shot.projectile, hp: 50 });
        let at_b = b.wait_for("HIT at B", |f| f.packet_id == protocol::HIT);
        assert_eq!(at_b.packet(), ServerPacket::Hit(hit));
        assert_eq!(at_b.player_id, a.id, "HIT's header names the shooter");

        // Second shot, after the fire interval: B is destroyed, both scores change, B respawns.
        std::thread::sleep(Duration::from_millis(250));
        a.send(&ClientPacket::Fire(Fire::new(0.0).unwrap()));
        let second = a.wait_for("second SHOT", |f| f.packet_id == protocol::SHOT);
        let ServerPacket::Shot(second) = second.packet() else { unreachable!() };
        let hit = expect_flight_then_hit(&mut a, second.projectile);
        assert_eq!(hit.hp, 0, "destroyed");
        let (a_id, b_id) = (a.id, b.id);
        for client in [&mut a, &mut b] {
            let kills =
                client.wait_for("A's SCORE", |f| f.packet_id == protocol::SCORE && f.player_id == a_id);
            assert_eq!(kills.packet(), ServerPacket::Score(protocol::Score { kills: 1, deaths: 0 }));
            let deaths =
                client.wait_for("B's SCORE", |f| f.packet_id == protocol::SCORE && f.player_id == b_id);
            assert_eq!(deaths.packet(), ServerPacket::Score(protocol::Score { kills: 0, deaths: 1 }));
        }
        let respawned =
            b.wait_for("B's SHIP at its respawn", |f| f.packet_id == protocol::SHIP && f.player_id == b_id);
        let ServerPacket::Ship(ship) = respawned.packet() else { unreachable!() };
        assert_eq!((ship.x, ship.z, ship.hp), (500.0, 500.0, 100));

        // C, 900 units away, heard of none of it.
        c.read_for(Duration::from_millis(200));
        let c_id = c.id;
        assert!(
            c.inbox.iter().all(|f| f.packet_id == protocol::SHIP && f.player_id == c_id),
            "C saw nothing of the fight: {:?}",
            c.inbox
        );
    }
}

/// Reads PROJECTILE frames of `projectile` (at least two, x growing, one per tick) until its HIT.
fn expect_flight_then_hit(client: &mut Client, projectile: u32) -> HitReport {
    let mut positions = Vec::new();
    loop {
        let frame = client.wait_for("PROJECTILE or HIT", |f| {
            f.packet_id == protocol::PROJECTILE || f.packet_id == protocol::HIT
        });
        match frame.packet() {
            ServerPacket::Projectile(p) => {
                assert_eq!(p.projectile, projectile);
                positions.push(p.x);
            }
            ServerPacket::Hit(hit) => {
                assert!(positions.len() >= 2, "the projectile flew across ticks first: {positions:?}");
                assert!(positions.windows(2).all(|w| w[1] > w[0]), "x grows each tick: {positions:?}");
                assert_eq!(positions[0], 115.0, "one tick's step from the ship");
                return hit;
            }
            other => unreachable!("{other:?}"),
        }
    }
}
