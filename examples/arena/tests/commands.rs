//! Commands from the embedding program, sent through `ServerHandle::command` from another thread,
//! take effect: ANNOUNCE reaches every player, in sight or not; a kick ends one session only.

mod util;

use std::time::{Duration, Instant};

use gamewire_arena::ArenaCommand;
use gamewire_arena::protocol::{self, ClientPacket, ServerPacket};
use gamewire_net::IoBackend;
use gamewire_world::PlayerId;
use util::{Running, config_with_spawns};

const SPAWNS: [(f32, f32); 3] = [(100.0, 100.0), (160.0, 100.0), (800.0, 800.0)];

#[test]
fn an_announce_from_another_thread_reaches_every_player() {
    for workers in [1, 2] {
        eprintln!("--- {workers} worker(s)");
        let server = Running::start(config_with_spawns(&SPAWNS), IoBackend::Mio, workers).unwrap();
        let mut players = [server.join("a"), server.join("b"), server.join("c")];
        let handle = server.handle.clone();
        std::thread::spawn(move || handle.command(ArenaCommand::Announce("round two starts".into())))
            .join()
            .unwrap()
            .expect("the server is running");
        for player in &mut players {
            let frame = player.wait_for("ANNOUNCE", |f| f.packet_id == protocol::ANNOUNCE);
            assert_eq!(frame.packet(), ServerPacket::Announce { text: "round two starts" });
            assert_eq!(frame.player_id, 0, "from the operator, no player");
        }
    }
}

#[test]
fn a_kick_from_another_thread_ends_that_session_only() {
    for workers in [1, 2] {
        eprintln!("--- {workers} worker(s)");
        let server = Running::start(config_with_spawns(&SPAWNS), IoBackend::Mio, workers).unwrap();
        let mut a = server.join("a");
        let mut b = server.join("b");
        let a_id = a.id;
        b.wait_for("SHIP of A", |f| f.packet_id == protocol::SHIP && f.player_id == a_id);
        let handle = server.handle.clone();
        let target = PlayerId::from_wire(a.id).unwrap();
        std::thread::spawn(move || {
            handle.command(ArenaCommand::Kick(target))?;
            // A second kick finds nobody; the ANNOUNCE right behind shows the kick took effect in
            // its own command, not at a later deadline sweep.
            handle.command(ArenaCommand::Kick(target))?;
            handle.command(ArenaCommand::Announce("after the kick".into()))
        })
        .join()
        .unwrap()
        .unwrap();

        let frames = a.until_closed();
        let last = frames.last().expect("KICKED before the close");
        assert_eq!(last.packet(), ServerPacket::Kicked { reason: "kicked by the operator" }, "{frames:?}");
        assert_eq!(last.player_id, a_id);
        assert_eq!(frames.iter().filter(|f| f.packet_id == protocol::KICKED).count(), 1, "{frames:?}");
        assert!(
            !frames.iter().any(|f| f.packet_id == protocol::ANNOUNCE),
            "ANNOUNCE after KICKED: {frames:?}"
        );
        // B hears A go (its session's `close`, run as soon as the kick's command returned) before the
        // next command's ANNOUNCE.
        let deadline = Instant::now() + util::WAIT;
        let announce_at = loop {
            if let Some(at) = b.inbox.iter().position(|f| f.packet_id == protocol::ANNOUNCE) {
                break at;
            }
            assert!(Instant::now() < deadline, "no ANNOUNCE; inbox {:?}", b.inbox);
            assert!(!b.read_for(Duration::from_millis(50)), "B was closed; inbox {:?}", b.inbox);
        };
        let gone_at = b.inbox.iter().position(|f| f.packet_id == protocol::GONE && f.player_id == a_id);
        assert!(gone_at.is_some_and(|at| at < announce_at), "GONE of A, then ANNOUNCE: {:?}", b.inbox);
        // B plays on.
        b.send(&ClientPacket::Ping { payload: b"b" });
        b.wait_for("PONG", |f| f.packet_id == protocol::PONG);
        // The live count follows once the game publishes it (after a frame, tick or command).
        let deadline = Instant::now() + util::WAIT;
        while server.handle.player_count() != 1 {
            assert!(Instant::now() < deadline, "player_count stays {}", server.handle.player_count());
            let _ = server.handle.command(ArenaCommand::Announce(String::new()));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
