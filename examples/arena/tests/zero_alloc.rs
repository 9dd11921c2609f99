//! In steady state the arena's server threads allocate nothing per relayed frame or per tick:
//! STEER, FIRE and PING handling, moving ships and projectiles, hits, scores and respawns all run
//! on scratch memory the game keeps. Counted by a global allocator.

mod util;

use std::time::{Duration, Instant};

use gamewire_arena::protocol::{self, ClientPacket, Fire, Steer};
use gamewire_net::IoBackend;
use gamewire_pool::alloc_counter::{self, CountingAllocator};
use util::{Client, Running, config_with_spawns};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Four ships 20 apart, firing at each other: every path of the game runs, kills included.
const SPAWNS: [(f32, f32); 4] = [(500.0, 500.0), (520.0, 500.0), (500.0, 520.0), (520.0, 520.0)];

#[test]
fn frames_and_ticks_in_steady_state_allocate_nothing_on_the_server() {
    // With several workers every thread of the server counts (the workers and the game's thread);
    // this thread (the clients) opts out. This test is alone in its binary, so nothing else runs.
    alloc_counter::exclude_this_thread();
    alloc_counter::count_all_threads();
    for (io, workers) in
        [(IoBackend::Mio, 1), (IoBackend::Uring, 1), (IoBackend::Mio, 2), (IoBackend::Uring, 2)]
    {
        eprintln!("--- backend {io:?}, {workers} worker(s)");
        let mut config = config_with_spawns(&SPAWNS);
        config.fire_interval = Duration::from_millis(40);
        config.refresh_ticks = 5;
        let Some(server) = Running::start(config, io, workers) else { continue };
        let mut clients: Vec<Client> = (0..4).map(|i| server.join(&format!("p{i}"))).collect();

        play(&mut clients, Duration::from_millis(1500));
        // The counter sees the server's threads at all: starting and joining allocated there.
        assert!(alloc_counter::allocations() > 0, "nothing counted: the server's threads are not counted");
        let before = alloc_counter::allocations();
        let seen = play(&mut clients, Duration::from_millis(1500));
        let allocated = alloc_counter::allocations() - before;
        eprintln!("--- {seen:?}, {allocated} allocations");
        assert!(seen.projectiles > 50 && seen.hits > 5 && seen.scores > 0, "the game was busy: {seen:?}");
        assert_eq!(allocated, 0, "server threads allocated in steady state ({seen:?})");
    }
}

#[derive(Debug, Default)]
struct Seen {
    frames: usize,
    projectiles: usize,
    hits: usize,
    scores: usize,
}

/// Every client steers, fires at the ship across from it and pings, round after round, and reads
/// what comes, for `duration`.
fn play(clients: &mut [Client], duration: Duration) -> Seen {
    let mut seen = Seen::default();
    let until = Instant::now() + duration;
    let mut round = 0u32;
    // Each client aims at the middle of the square from where its ship last was (respawns move it).
    let mut at: Vec<(f32, f32)> = SPAWNS.to_vec();
    while Instant::now() < until {
        round += 1;
        for (index, client) in clients.iter_mut().enumerate() {
            // Wobble in place: a small step one way, then back.
            let heading = if round.is_multiple_of(2) { 0.0 } else { std::f32::consts::PI };
            client.send(&ClientPacket::Steer(Steer::new(heading, 0.05).unwrap()));
            let (x, z) = at[index];
            client.send(&ClientPacket::Fire(Fire::new((510.0 - z).atan2(510.0 - x)).unwrap()));
            client.send(&ClientPacket::Ping { payload: &round.to_le_bytes() });
        }
        for (index, client) in clients.iter_mut().enumerate() {
            client.read_for(Duration::from_millis(15));
            for frame in client.inbox.drain(..) {
                seen.frames += 1;
                match frame.packet_id {
                    protocol::SHIP if frame.player_id == client.id => {
                        if let protocol::ServerPacket::Ship(ship) = frame.packet() {
                            at[index] = (ship.x, ship.z);
                        }
                    }
                    protocol::PROJECTILE => seen.projectiles += 1,
                    protocol::HIT => seen.hits += 1,
                    protocol::SCORE => seen.scores += 1,
                    protocol::ERROR => {
                        let packet = frame.packet();
                        assert!(
                            matches!(packet, protocol::ServerPacket::Error { code: 6, .. }),
                            "only RATE_LIMITED may come: {packet:?}"
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    seen
}
