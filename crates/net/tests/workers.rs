//! Several workers and the world thread: players on different workers see each other as on one, and
//! full rings between the threads are backpressure, never loss or reordering.

mod util;

use gamewire_net::IoBackend;
use gamewire_proto::{Move, Packet, PacketKind, encode_frame_to_vec};
use gamewire_world::Rate;
use util::{TestServer, base_config, base_rules};

/// Both backends (where available) with `workers` workers.
fn configs(workers: usize) -> Vec<gamewire_net::ServerConfig> {
    let mut configs = Vec::new();
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let config = base_config().io(io).workers(workers);
        match gamewire_net::Server::bind(config.clone(), base_rules()) {
            Ok(_) => configs.push(config),
            Err(error) => eprintln!("--- {io:?}: SKIPPED, {error}"),
        }
    }
    configs
}

/// 40 players spread over 4 workers (the kernel hashes each connection to one listener): everyone
/// sees everyone, and every MOVE reaches all 39 others.
#[test]
fn players_on_different_workers_see_each_other_as_on_one() {
    for config in configs(4) {
        eprintln!("--- {:?}", config.io);
        let rules = gamewire_world::Config { max_speed: 1000.0, ..base_rules() };
        let server = TestServer::start_with(config, rules);
        let mut players: Vec<_> = (0..40).map(|i| server.join(&format!("p{i}"))).collect();
        for player in &mut players {
            while player.seen().len() < 39 {
                let frame = player.recv();
                assert_eq!(frame.kind(), PacketKind::Enter, "{frame:?}");
            }
        }
        // MOVE i carries client_time i; each player collects the ones it receives.
        let mut received: Vec<Vec<u32>> = vec![Vec::new(); players.len()];
        let mut collect = |i: usize, frames: Vec<util::Frame>| {
            for frame in frames {
                if frame.kind() == PacketKind::Move {
                    received[i].push(frame.as_move().client_time.get());
                }
            }
        };
        for (i, mover) in players.iter_mut().enumerate() {
            mover.send_move(Move::new(500.0 + i as f32 * 0.1, 0.0, 500.0, 1.0, i as u32));
            let frames = mover.sync();
            collect(i, frames);
        }
        for (i, player) in players.iter_mut().enumerate() {
            let frames = player.sync();
            collect(i, frames);
        }
        for (i, movers) in received.iter_mut().enumerate() {
            movers.sort_unstable();
            let expected: Vec<u32> = (0..40).filter(|&j| j != i as u32).collect();
            assert_eq!(*movers, expected, "player {i} got every other player's MOVE once");
        }
    }
}

/// Rings of two slots between every worker and the world: a burst of 300 CHATs seen by 9 players on
/// other workers overflows them at once. Every viewer still gets every CHAT, in order, and everyone is
/// served afterwards.
#[test]
fn full_rings_between_threads_are_backpressure_not_loss() {
    for mut config in configs(2) {
        eprintln!("--- {:?}", config.io);
        config.ring_slots = 2;
        let mut rules = base_rules();
        rules.limits.chats = Rate::new(1e6, 1e6);
        let server = TestServer::start_with(config, rules);
        let mut talker = server.join("talker");
        let mut viewers: Vec<_> = (0..9).map(|i| server.join(&format!("viewer{i}"))).collect();
        talker.sync();
        for viewer in &mut viewers {
            viewer.sync();
        }
        let texts: Vec<String> = (0..300).map(|i| format!("burst {i:03}")).collect();
        let burst: Vec<u8> =
            texts.iter().flat_map(|text| encode_frame_to_vec(0, &Packet::Chat { text })).collect();
        talker.send_raw(&burst);
        let back = talker.sync();
        assert!(back.is_empty(), "the talker gets nothing back: {back:?}");
        for viewer in &mut viewers {
            for text in &texts {
                let frame = viewer.recv();
                assert!(frame.is(PacketKind::Chat, talker.id()), "{frame:?}");
                assert_eq!(frame.as_chat(), text);
            }
            viewer.assert_served();
        }
        talker.assert_served();
    }
}
