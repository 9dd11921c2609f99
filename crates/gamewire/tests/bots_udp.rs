//! `gamewire bots --transport udp` against a tiny UDP game server run inside the test (no `gamewire serve` speaks UDP yet).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gamewire_proto::little_endian::{F32, U32, U64};
use gamewire_proto::{EnterHead, Packet, Welcome, encode_frame_to_vec};
use gamewire_udp::datagram::MAX_DATAGRAM;
use gamewire_udp::listener::{Event, Inbox, Listener, ListenerConfig, SessionId, Transmit};

mod common;

use common::GAMEWIRE;

const WORLD: f32 = 100.0;
const MAX_SPEED: f32 = 5.0;

/// What the test server saw, for failure messages and checks.
#[derive(Debug, Default)]
struct ServerReport {
    opened: u64,
    hellos: u64,
    moves_relayed: u64,
    closed: u64,
}

/// A player of the test server.
struct Player {
    id: u32,
    name: String,
    x: f32,
    z: f32,
}

/// Just enough of a game for bots to play: WELCOME on HELLO, everyone in everyone's view (ENTER
/// both ways, LEAVE when a session ends), MOVEs relayed unreliable and CHATs reliable to the others.
struct Game {
    listener: Listener<Vec<u8>>,
    players: BTreeMap<SessionId, Player>,
    next_id: u32,
    report: ServerReport,
}

impl Game {
    fn send(&mut self, to: SessionId, frame: Vec<u8>, reliable: bool) {
        // A refused frame (a session that just ended) is nothing this test checks.
        let _ = self.listener.send(to, frame, reliable);
    }

    fn relay_to_others(&mut self, from: SessionId, frame: &[u8], reliable: bool) {
        let others: Vec<SessionId> = self.players.keys().copied().filter(|&s| s != from).collect();
        for other in others {
            self.send(other, frame.to_vec(), reliable);
        }
    }

    fn enter_frame(player: &Player) -> Vec<u8> {
        let head =
            EnterHead { x: F32::new(player.x), y: F32::new(0.0), z: F32::new(player.z), hp: U32::new(100) };
        encode_frame_to_vec(player.id, &Packet::Enter { head: &head, name: &player.name })
    }

    fn hello(&mut self, session: SessionId, name: &str) {
        if self.players.contains_key(&session) {
            return;
        }
        self.report.hellos += 1;
        self.next_id += 1;
        let id = self.next_id;
        // Spread the spawns, inside the world, as the world does.
        let (x, z) = (10.0 + (id % 8) as f32 * 10.0, 10.0 + (id / 8 % 8) as f32 * 10.0);
        let welcome = Welcome {
            token: U64::new(u64::from(id) * 7919),
            x: F32::new(x),
            y: F32::new(0.0),
            z: F32::new(z),
            hp: U32::new(100),
            world_w: F32::new(WORLD),
            world_h: F32::new(WORLD),
            aoi_radius: F32::new(WORLD),
            max_speed: F32::new(MAX_SPEED),
        };
        self.send(session, encode_frame_to_vec(id, &Packet::Welcome(&welcome)), true);
        let _ = self.listener.set_player_id(session, id);
        let player = Player { id, name: name.to_string(), x, z };
        let entered = Self::enter_frame(&player);
        let others: Vec<Vec<u8>> = self.players.values().map(Self::enter_frame).collect();
        for frame in others {
            self.send(session, frame, true);
        }
        self.relay_to_others(session, &entered, true);
        self.players.insert(session, player);
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], inbox: &mut Inbox) {
        self.listener.receive(now, from, datagram, inbox);
        for event in inbox.events(datagram) {
            match event {
                Event::Opened { .. } => self.report.opened += 1,
                Event::Frame { session, frame, .. } => match frame.packet() {
                    Ok(Packet::Hello { name }) => self.hello(session, name),
                    Ok(Packet::Move(step)) => {
                        let Some(player) = self.players.get_mut(&session) else { continue };
                        (player.x, player.z) = (step.x.get(), step.z.get());
                        let relayed = encode_frame_to_vec(player.id, &Packet::Move(step));
                        self.report.moves_relayed += self.players.len() as u64 - 1;
                        self.relay_to_others(session, &relayed, false);
                    }
                    Ok(Packet::Chat { text }) => {
                        let Some(player) = self.players.get(&session) else { continue };
                        let relayed = encode_frame_to_vec(player.id, &Packet::Chat { text });
                        self.relay_to_others(session, &relayed, true);
                    }
                    _ => {}
                },
                Event::Closed { session, .. } => self.closed(session),
            }
        }
    }

    fn closed(&mut self, session: SessionId) {
        self.report.closed += 1;
        if let Some(player) = self.players.remove(&session) {
            let leave = encode_frame_to_vec(player.id, &Packet::Leave);
            self.relay_to_others(session, &leave, true);
        }
    }
}

/// Runs the game on 127.0.0.1:0 in a thread until `stop`; returns its address and the thread.
fn start_server(stop: Arc<AtomicBool>) -> (SocketAddr, JoinHandle<ServerReport>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let addr = socket.local_addr().expect("local addr");
    let thread = std::thread::spawn(move || {
        let mut game = Game {
            listener: Listener::new(ListenerConfig::default(), Instant::now()).expect("a random cookie key"),
            players: BTreeMap::new(),
            next_id: 0,
            report: ServerReport::default(),
        };
        let (mut inbox, mut transmit) = (Inbox::new(), Transmit::new());
        let mut buf = [0u8; 2048];
        let mut out = [0u8; MAX_DATAGRAM];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let wait = game
                .listener
                .poll_timeout()
                .map_or(Duration::from_millis(5), |at| at.saturating_duration_since(now))
                .clamp(Duration::from_micros(100), Duration::from_millis(5));
            socket.set_read_timeout(Some(wait)).expect("set a read timeout");
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => game.receive(Instant::now(), from, &buf[..n], &mut inbox),
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => panic!("test server recv: {error}"),
            }
            let now = Instant::now();
            if game.listener.poll_timeout().is_some_and(|at| at <= now) {
                game.listener.handle_timeout(now, &mut inbox);
                let closed: Vec<SessionId> = inbox
                    .events(&[])
                    .filter_map(|event| match event {
                        Event::Closed { session, .. } => Some(session),
                        _ => None,
                    })
                    .collect();
                for session in closed {
                    game.closed(session);
                }
            }
            while game.listener.poll_transmit(now, &mut transmit) {
                let len = transmit.copy_to(&mut out);
                // Loopback drops only when the bots' buffer is full: UDP's loss, which the bots count.
                let _ = socket.send_to(&out[..len], transmit.destination());
            }
        }
        game.report
    });
    (addr, thread)
}

/// Runs `gamewire bots` with `args`, killed after `limit`; returns (exit success, stdout, stderr).
fn run_bots_within(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(GAMEWIRE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gamewire bots");
    // Read both pipes while it runs: a full pipe would block it past the deadline.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gamewire bots") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gamewire bots did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), out.join().expect("stdout reader"), err.join().expect("stderr reader"))
}

#[test]
fn udp_bots_are_welcomed_and_move_without_reliable_loss_or_reordering() {
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, server) = start_server(Arc::clone(&stop));
    let addr = addr.to_string();
    let args =
        ["bots", "--transport", "udp", "--addr", &addr, "--bots", "20", "--warmup", "1", "--duration", "3"];
    let (success, stdout, stderr) =
        run_bots_within(&[&args[..], &["--chat-hz", "0.5", "--json"]].concat(), Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let report = server.join().expect("the test server panicked");
    assert!(success, "gamewire bots failed:\n{stderr}\nserver: {report:?}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("bots --json prints JSON");
    let context = format!("{summary:#}\nserver: {report:?}");

    assert_eq!(summary["transport"], "udp", "{context}");
    assert_eq!(summary["welcomed"], 20, "every bot was welcomed: {context}");
    assert_eq!(summary["connected"], 20, "{context}");
    assert_eq!(report.hellos, 20, "one HELLO per bot: {context}");
    let moves = summary["received"]["MOVE"].as_u64().unwrap_or(0);
    assert!(moves > 0, "MOVEs were relayed to the bots: {context}");
    assert!(summary["sent"]["CHAT"].as_u64().unwrap_or(0) > 0, "{context}");
    // Reliable frames arrive once and in order, and an unreliable MOVE never goes backwards.
    assert_eq!(summary["moves_reordered"], 0, "{context}");
    assert_eq!(summary["moves_missing"], 0, "gaps over UDP count as lost-unreliable: {context}");
    assert_eq!(summary["error_total"], 0, "{context}");
    assert_eq!(summary["disconnects"], 0, "{context}");
    assert_eq!(summary["connect_failures"], 0, "{context}");
    assert!(summary["latency_us"]["samples"].as_u64().unwrap_or(0) > 0, "{context}");
    let udp = &summary["udp"];
    assert!(udp["datagrams_sent"].as_u64().unwrap_or(0) > 0, "{context}");
    assert!(udp["datagrams_received"].as_u64().unwrap_or(0) > 0, "{context}");
    assert_eq!(udp["handshake_timeouts"], 0, "{context}");
    // On loopback, few MOVEs may be lost; most must arrive.
    let lost = summary["moves_lost_unreliable"].as_u64().expect("moves_lost_unreliable");
    assert!(lost * 10 <= moves, "{lost} MOVEs lost of {moves} received: {context}");
}

#[test]
fn udp_is_refused_with_chaos() {
    let (success, _, stderr) = run_bots_within(
        &["bots", "--transport", "udp", "--chaos", "--duration", "1"],
        Duration::from_secs(10),
    );
    assert!(!success);
    assert!(stderr.contains("--chaos is TCP-only"), "{stderr}");
}
