//! Many clients random-walking and chatting at once in a small world. Every frame passes the
//! visibility checker; at the end every client's view equals the geometry of the final positions, and
//! inside every visibility window a viewer received every MOVE and CHAT of the player it saw.

mod util;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gamewire_proto::{Move, Packet};
use gamewire_world::Rate;
use util::{Client, Frame, Rng, TestServer, base_rules, each_backend, sees};

const CLIENTS: usize = 48;
const STEPS: usize = 60;
const TICK: Duration = Duration::from_millis(20);
const WORLD: f32 = 300.0;
const RADIUS: f32 = 50.0;
/// The speed check allows `max_speed × 0.1` units per MOVE however soon it follows the last one, so
/// steps of at most 10 units per axis (14.2 in all) are always legal at this speed.
const MAX_SPEED: f32 = 200.0;
const STEP: f32 = 10.0;

/// What a client did, in order; the index is the event number. MOVE carries its event number as
/// `client_time` and as its height `y` (so that an ENTER's position names the event it reflects), and
/// CHAT carries it in its text.
#[derive(Clone, Debug, PartialEq)]
enum Action {
    Spawn(f32, f32, f32),
    Move(Move),
    Chat(String),
}

impl Action {
    fn position(&self) -> Option<(f32, f32, f32)> {
        match self {
            Action::Spawn(x, y, z) => Some((*x, *y, *z)),
            Action::Move(m) => Some((m.x.get(), m.y.get(), m.z.get())),
            Action::Chat(_) => None,
        }
    }
}

/// A frame about another player, as received.
#[derive(Debug)]
enum Received {
    Enter { about: u32, position: (f32, f32, f32) },
    Leave { about: u32 },
    Move { about: u32, m: Move },
    Chat { about: u32, text: String },
}

#[derive(Debug)]
struct Outcome {
    id: u32,
    actions: Vec<Action>,
    seen: BTreeSet<u32>,
    received: Vec<Received>,
}

impl Outcome {
    fn final_position(&self) -> (f32, f32) {
        let (x, _, z) = self.actions.iter().rev().find_map(Action::position).expect("spawned");
        (x, z)
    }

    /// The event whose position an ENTER showed.
    fn event_at(&self, position: (f32, f32, f32)) -> usize {
        let matches: Vec<usize> =
            (0..self.actions.len()).filter(|&i| self.actions[i].position() == Some(position)).collect();
        assert_eq!(matches.len(), 1, "ENTER about {} at {position:?}: events {matches:?}", self.id);
        matches[0]
    }
}

/// A barrier whose wait gives up (panics) after a bound, so that one failed client thread fails the
/// test instead of hanging it.
struct Rendezvous {
    parties: usize,
    state: Mutex<(usize, u64)>,
    arrived: Condvar,
}

impl Rendezvous {
    fn new(parties: usize) -> Self {
        Rendezvous { parties, state: Mutex::new((0, 0)), arrived: Condvar::new() }
    }

    fn wait(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = state.1;
        state.0 += 1;
        if state.0 == self.parties {
            *state = (0, generation + 1);
            self.arrived.notify_all();
            return;
        }
        while state.1 == generation {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "rendezvous timed out: another client thread failed");
            state = self.arrived.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

fn record(me: u32, frame: Frame, received: &mut Vec<Received>) {
    let about = frame.player_id;
    let entry = match frame.packet() {
        Packet::Enter { head, .. } => {
            Received::Enter { about, position: (head.x.get(), head.y.get(), head.z.get()) }
        }
        Packet::Leave => Received::Leave { about },
        Packet::Move(m) => {
            assert_ne!(about, me, "a legal MOVE was corrected: {frame:?}");
            Received::Move { about, m: *m }
        }
        Packet::Chat { text } => Received::Chat { about, text: text.to_owned() },
        _ => panic!("{me}: unexpected {frame:?}"),
    };
    received.push(entry);
}

fn play(addr: SocketAddr, index: usize, rendezvous: &Rendezvous) -> Outcome {
    let mut client = Client::connect(addr, &format!("p{index}"));
    let (id, welcome) = client.hello(&format!("p{index}"));
    let mut rng = Rng::new(index as u64 + 1);
    let mut actions = vec![Action::Spawn(welcome.x, welcome.y, welcome.z)];
    let mut received = Vec::new();
    rendezvous.wait(); // everyone has joined

    let (mut x, mut z) = (welcome.x, welcome.z);
    let mut next_tick = Instant::now();
    for _ in 0..STEPS {
        x = (x + rng.range_f32(-STEP, STEP)).clamp(1.0, WORLD - 1.0);
        z = (z + rng.range_f32(-STEP, STEP)).clamp(1.0, WORLD - 1.0);
        let event = actions.len() as u32;
        let m = Move::new(x, event as f32, z, rng.range_f32(0.0, MAX_SPEED), event);
        client.send_move(m);
        actions.push(Action::Move(m));
        if rng.below(4) == 0 {
            let text = format!("{id} says {}", actions.len());
            client.send_chat(&text);
            actions.push(Action::Chat(text));
        }
        next_tick += TICK;
        while let Some(frame) = client.recv_within(next_tick.saturating_duration_since(Instant::now())) {
            record(id, frame, &mut received);
        }
    }
    // Its own packets are handled...
    client.sync().into_iter().for_each(|frame| record(id, frame, &mut received));
    rendezvous.wait();
    // ...and once everyone's are, everything they caused has been queued before this PONG.
    client.sync().into_iter().for_each(|frame| record(id, frame, &mut received));
    let seen = client.seen().clone();
    rendezvous.wait(); // nobody leaves (which would send LEAVE) before everyone has read
    Outcome { id, actions, seen, received }
}

/// Checks, for viewer `viewer`, that every window [ENTER, LEAVE) about a player P holds every MOVE and
/// CHAT P sent while it lasted, byte for byte, in order. Returns the number of MOVEs checked.
fn check_windows(viewer: &Outcome, players: &HashMap<u32, &Outcome>) -> usize {
    /// The last event of P this viewer knows of, and whether it knows it from the ENTER.
    struct Window {
        last: usize,
        from_enter: bool,
    }
    let mut windows: HashMap<u32, Window> = HashMap::new();
    let mut moves = 0;
    // The next event received must follow the window's last one directly; only right after ENTER may
    // CHATs said before it (out of view) be skipped, never a MOVE.
    let advance = |window: &mut Window, player: &Outcome, event: usize| {
        if window.from_enter {
            assert!(
                event > window.last,
                "viewer {}: event {event} of {} before its ENTER",
                viewer.id,
                player.id
            );
            for skipped in window.last + 1..event {
                assert!(
                    matches!(player.actions[skipped], Action::Chat(_)),
                    "viewer {} missed MOVE {skipped} of {} (in view since its ENTER)",
                    viewer.id,
                    player.id
                );
            }
        } else {
            assert_eq!(
                event,
                window.last + 1,
                "viewer {}: a gap in the events of {} in view",
                viewer.id,
                player.id
            );
        }
        *window = Window { last: event, from_enter: false };
    };
    for entry in &viewer.received {
        match entry {
            Received::Enter { about, position } => {
                let player = players[about];
                windows.insert(*about, Window { last: player.event_at(*position), from_enter: true });
            }
            Received::Leave { about } => {
                windows.remove(about);
            }
            Received::Move { about, m } => {
                let player = players[about];
                let event = m.client_time.get() as usize;
                assert_eq!(player.actions.get(event), Some(&Action::Move(*m)), "relayed MOVE bytes");
                advance(windows.get_mut(about).expect("checked on arrival"), player, event);
                moves += 1;
            }
            Received::Chat { about, text } => {
                let player = players[about];
                let event: usize = text.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("chat text");
                assert_eq!(
                    player.actions.get(event),
                    Some(&Action::Chat(text.clone())),
                    "relayed CHAT bytes"
                );
                advance(windows.get_mut(about).expect("checked on arrival"), player, event);
            }
        }
    }
    // Windows still open at the end: everything the player did since must have arrived.
    for (about, window) in &windows {
        let player = players[about];
        for missed in window.last + 1..player.actions.len() {
            assert!(
                window.from_enter && matches!(player.actions[missed], Action::Chat(_)),
                "viewer {} never received event {missed} of {} ({:?}), in view to the end",
                viewer.id,
                player.id,
                player.actions[missed]
            );
        }
    }
    moves
}

#[test]
fn a_random_walking_crowd_keeps_every_view_exact() {
    each_backend(|config| {
        let mut rules = base_rules();
        rules.spawn = None;
        rules.world_w = WORLD;
        rules.world_h = WORLD;
        rules.aoi_radius = RADIUS;
        rules.max_speed = MAX_SPEED;
        rules.limits.moves = Rate::new(1000.0, 1000.0);
        rules.limits.chats = Rate::new(1000.0, 1000.0);
        let server = TestServer::start_with(config, rules);
        let addr = server.addr();
        let started = Instant::now();
        let rendezvous = Arc::new(Rendezvous::new(CLIENTS));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|index| {
                let rendezvous = Arc::clone(&rendezvous);
                std::thread::Builder::new()
                    .name(format!("client-{index}"))
                    .spawn(move || play(addr, index, &rendezvous))
                    .expect("spawn a client thread")
            })
            .collect();
        let mut outcomes = Vec::new();
        for thread in threads {
            match thread.join() {
                Ok(outcome) => outcomes.push(outcome),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        let players: HashMap<u32, &Outcome> = outcomes.iter().map(|o| (o.id, o)).collect();
        assert_eq!(players.len(), CLIENTS, "ids are unique");

        // Every view equals the geometry of the final positions.
        for viewer in &outcomes {
            let expected: BTreeSet<u32> = outcomes
                .iter()
                .filter(|other| {
                    other.id != viewer.id && sees(viewer.final_position(), other.final_position(), RADIUS)
                })
                .map(|other| other.id)
                .collect();
            assert_eq!(viewer.seen, expected, "view of {} at {:?}", viewer.id, viewer.final_position());
        }
        // Every window is complete.
        let moves: usize = outcomes.iter().map(|viewer| check_windows(viewer, &players)).sum();
        let leaves =
            outcomes.iter().flat_map(|o| &o.received).filter(|r| matches!(r, Received::Leave { .. })).count();
        eprintln!("{moves} MOVEs relayed, {leaves} LEAVEs, in {:?}", started.elapsed());
        // The run exercised what it checks: relays and players crossing each other's radius.
        assert!(moves > CLIENTS * 10, "only {moves} MOVEs relayed");
        assert!(leaves > CLIENTS / 2, "only {leaves} LEAVEs: the walk did not cross radii");
    });
}
