//! The io_uring backend where completion I/O differs from readiness: a receive ring that runs dry,
//! operations cancelled while in flight, resets in the middle of a frame, and tokens reused by the
//! next connection. Skipped, saying why, where the kernel cannot run io_uring.

mod util;

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::io;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use gamewire_net::{IoBackend, RunStats, Server, ServerConfig, ServerError};
use gamewire_proto::{ErrorCode, Move, Packet, PacketKind, encode_frame_to_vec};
use gamewire_world::Rate;
use socket2::SockRef;
use util::{Client, Frame, TestServer, WAIT, base_config, base_rules};

/// [`base_config`] on io_uring, with ordinary sends and with every send zero-copy (whose buffers must
/// outlive the kernel's notification); none (after printing why) where this machine cannot run it.
fn uring_configs() -> Vec<ServerConfig> {
    let mut config = base_config();
    config.io = IoBackend::Uring;
    match Server::bind(config.clone(), base_rules()) {
        Ok(_) => {
            let zerocopy = config.clone().send_zerocopy_threshold(1);
            vec![config, zerocopy]
        }
        Err(ServerError::Io(error)) if error.kind() == io::ErrorKind::Unsupported => {
            eprintln!("SKIPPED: {error}");
            Vec::new()
        }
        Err(error) => panic!("binding a server on io_uring failed: {error}"),
    }
}

/// The WARN and ERROR events a server logged, with their fields.
#[derive(Clone, Debug, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = event.metadata().level().to_string();
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A server on `config` and protocol v1's `rules` whose warnings are kept.
fn start(config: ServerConfig, rules: gamewire_world::Config) -> (TestServer, Warnings) {
    let warnings = Warnings::default();
    let server = TestServer::start_logging_to(config, rules, tracing::Dispatch::new(warnings.clone()));
    (server, warnings)
}

/// Waits for `server`, already asked to shut down and with every client gone, to stop; asserts that
/// `run()` returned Ok and that the server warned about nothing: in particular no operation was still
/// in flight when the ring was torn down (every cancelled one was reaped, none forgotten) and the
/// drain did not run into its deadline (every connection was dropped).
fn stopped(mut server: TestServer, warnings: &Warnings) -> RunStats {
    let stats = server.wait_stopped(WAIT).expect("run() returns Ok after a graceful shutdown");
    let warned = warnings.take();
    assert!(warned.is_empty(), "the server warned: {warned:#?}");
    eprintln!("{stats:?}");
    stats
}

/// Reads what is left for `client` during a graceful shutdown: ERROR(SHUTTING_DOWN), then EOF.
fn expect_shut_down(client: &mut Client) {
    client.expect_error(ErrorCode::ShuttingDown);
    client.expect_eof();
}

/// Closes `client`'s socket with a reset (RST) instead of a FIN.
fn reset(client: Client) {
    SockRef::from(client.stream()).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    drop(client);
}

fn summary(frames: &[Frame]) -> Vec<(PacketKind, u32)> {
    frames.iter().map(|f| (f.kind(), f.player_id)).collect()
}

/// The 20 payload bytes of `m`, as a client puts them on the wire.
fn move_bytes(m: &Move) -> Vec<u8> {
    encode_frame_to_vec(0, &Packet::Move(m))[12..].to_vec()
}

/// The 64-byte payload of PING `index` of flooder `client`: unique, so that a lost, repeated, reordered
/// or misrouted PONG shows.
fn ping_payload(client: usize, index: usize) -> Vec<u8> {
    let mut payload = format!("flooder {client:02} ping {index:04} ").into_bytes();
    let fill = (payload.len()..64).map(|k| (client * 7 + index * 13 + k) as u8);
    payload.extend(fill);
    payload
}

/// Where flooder `client` plays: 40 spots 20 apart around the spawn point, none within 5 of it or of
/// one another, so that with an area-of-interest radius of 5 nobody sees anybody.
fn flood_spot(client: usize) -> (f32, f32) {
    (440.0 + 20.0 * (client % 7) as f32, 450.0 + 20.0 * (client / 7) as f32)
}

/// 40 clients, each alone in its corner of the world, write 2000 frames (68 KB: MOVEs that nobody
/// sees, and a PING every 20th frame) in one go, all at the same moment, into a server whose receive
/// ring holds 64 buffers of 4 KiB (a 1 MiB pool): 2.7 MB arrive for 256 KiB of buffers, so the kernel
/// runs out of provided buffers (ENOBUFS) while completions wait to be reaped, many times over. That
/// must only slow the server down: every client gets its 100 PONGs, in order, byte for byte, and
/// nothing else (no ERROR, no correction); a client that joins afterwards is served; the server counts
/// every frame that was sent; and, the frames producing little output, the pool is never exhausted.
#[test]
fn a_flood_that_empties_the_receive_ring_is_backpressure_not_loss() {
    for config in uring_configs() {
        eprintln!("--- zero-copy threshold {}", config.send_zerocopy_threshold);
        a_flood_that_empties_the_receive_ring_is_backpressure_not_loss_on(config);
    }
}

fn a_flood_that_empties_the_receive_ring_is_backpressure_not_loss_on(mut config: ServerConfig) {
    const FLOODERS: usize = 40;
    const FRAMES: usize = 2000;
    const PING_EVERY: usize = 20;
    config.pool_bytes = 1 << 20; // 256 chunks: a receive ring of 64
    let mut rules = base_rules();
    rules.aoi_radius = 5.0;
    rules.max_speed = 1000.0;
    rules.limits.moves = Rate::new(1e6, 1e6);
    let (server, warnings) = start(config, rules);
    let mut sent = 0u64;
    let mut flooders: Vec<Client> = (0..FLOODERS)
        .map(|c| {
            let mut flooder = server.join(&format!("flooder{c}"));
            let (x, z) = flood_spot(c);
            flooder.send_move(Move::new(x, 0.0, z, 0.0, 0));
            flooder
        })
        .collect();
    for flooder in &mut flooders {
        let frames = flooder.sync();
        assert!(frames.iter().all(|f| f.player_id != flooder.id()), "{flooder:?}: {frames:?}");
        assert!(flooder.seen().is_empty(), "{flooder:?} sees {:?}", flooder.seen());
    }
    sent += 3 * FLOODERS as u64;

    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(FLOODERS));
    let threads: Vec<_> = flooders
        .into_iter()
        .enumerate()
        .map(|(c, mut flooder)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let (x, z) = flood_spot(c);
                let mut payloads = Vec::new();
                let mut burst = Vec::new();
                for k in 0..FRAMES {
                    if k % PING_EVERY == PING_EVERY - 1 {
                        let payload = ping_payload(c, payloads.len());
                        burst.extend(encode_frame_to_vec(0, &Packet::Ping { payload: &payload }));
                        payloads.push(payload);
                    } else {
                        // Back and forth by half a unit: legal, and seen by nobody.
                        let m = Move::new(x + (k % 2) as f32 * 0.5, 0.0, z, 1.0, k as u32);
                        burst.extend(encode_frame_to_vec(0, &Packet::Move(&m)));
                    }
                }
                barrier.wait();
                flooder.send_raw(&burst);
                for (i, payload) in payloads.iter().enumerate() {
                    let frame = flooder.recv();
                    assert!(
                        frame.is(PacketKind::Pong, flooder.id()) && frame.payload == *payload,
                        "{flooder:?}: expected PONG {i} of {}, got {frame:?}",
                        payloads.len()
                    );
                }
                flooder
            })
        })
        .collect();
    let mut flooders: Vec<Client> =
        threads.into_iter().map(|thread| thread.join().expect("a flooder's check failed")).collect();
    sent += (FLOODERS * FRAMES) as u64;
    eprintln!(
        "{} frames in, {} PONGs back, in {:?}",
        FLOODERS * FRAMES,
        FLOODERS * FRAMES / PING_EVERY,
        started.elapsed()
    );
    for flooder in &mut flooders {
        flooder.assert_served();
    }
    sent += FLOODERS as u64;

    // Recovery: a newcomer joins and is answered.
    let mut late = server.join("late");
    late.send(0, &Packet::Ping { payload: b"after the flood" });
    let pong = late.recv();
    assert!(pong.is(PacketKind::Pong, late.id()) && pong.payload == b"after the flood", "{pong:?}");
    late.assert_served();
    sent += 3;

    server.shutdown_handle().shutdown();
    for client in flooders.iter_mut().chain([&mut late]) {
        expect_shut_down(client);
    }
    drop((flooders, late));
    let stats = stopped(server, &warnings);
    assert_eq!(stats.frames_in, sent, "every frame sent was received once");
    assert_eq!(stats.accepted, FLOODERS as u64 + 1);
    assert_eq!((stats.pressure_cuts, stats.heap_fallbacks), (0, 0), "the pool was exhausted: {stats:?}");
}

/// 300 clients, scattered (random spawn points, an area of interest of 5 in a 1000 x 1000 world), each
/// write a burst of 20 PINGs, all in one go, into a server whose receive ring starts with 32 buffers
/// and grows as they join (2 per connection, up to the 1,024 a 16 MiB pool allows): every client gets
/// its 20 PONGs, in order, and the pool is never exhausted.
#[test]
fn a_receive_ring_that_starts_small_serves_hundreds_that_send_at_once() {
    for config in uring_configs() {
        eprintln!("--- zero-copy threshold {}", config.send_zerocopy_threshold);
        a_receive_ring_that_starts_small_serves_hundreds_that_send_at_once_on(config);
    }
}

fn a_receive_ring_that_starts_small_serves_hundreds_that_send_at_once_on(mut config: ServerConfig) {
    const CLIENTS: usize = 300;
    const PINGS: usize = 20;
    config.pool_bytes = 16 << 20;
    let rules = gamewire_world::Config { spawn: None, aoi_radius: 5.0, ..base_rules() };
    let (server, warnings) = start(config, rules);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|c| server.join(&format!("client{c}"))).collect();
    let bursts: Vec<Vec<Vec<u8>>> =
        (0..CLIENTS).map(|c| (0..PINGS).map(|i| ping_payload(c, i)).collect()).collect();
    let started = Instant::now();
    for (client, payloads) in clients.iter_mut().zip(&bursts) {
        let burst: Vec<u8> =
            payloads.iter().flat_map(|payload| encode_frame_to_vec(0, &Packet::Ping { payload })).collect();
        client.send_raw(&burst);
    }
    for (client, payloads) in clients.iter_mut().zip(&bursts) {
        for (i, payload) in payloads.iter().enumerate() {
            // Scattered as they are, a few see one another: ENTERs may come between the PONGs.
            let id = client.id();
            let frame = client.recv_until(|frame| frame.kind() == PacketKind::Pong);
            assert!(
                frame.is(PacketKind::Pong, id) && frame.payload == *payload,
                "{client:?}: expected PONG {i} of {PINGS}, got {frame:?}"
            );
        }
    }
    eprintln!("{} PINGs from {CLIENTS} clients answered in {:?}", CLIENTS * PINGS, started.elapsed());
    server.shutdown_handle().shutdown();
    for client in &mut clients {
        let _ = client.recv_until(|frame| frame.error_code() == Some(ErrorCode::ShuttingDown.code()));
        client.expect_eof();
    }
    drop(clients);
    let stats = stopped(server, &warnings);
    assert_eq!(stats.frames_in, (CLIENTS * (PINGS + 1)) as u64, "every HELLO and PING received once");
    assert_eq!((stats.pressure_cuts, stats.heap_fallbacks), (0, 0), "the pool was exhausted: {stats:?}");
}

/// How a viewer leaves in the middle of the traffic.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// Drops its socket with frames unread: the kernel resets the connection.
    Drop,
    /// Shuts both directions and keeps the socket: the server reads end of stream.
    ShutdownBoth,
    /// Drops its socket with SO_LINGER 0: a reset at once.
    Reset,
    /// Sends a malformed frame and then neither reads nor closes: the server cuts it off, and once
    /// the write deadline has passed with its last frames still unsent, drops it with its send and
    /// its receive in flight (both cancelled).
    Malformed,
}

/// Reads what arrives on `client`'s socket until the server closes it (end of stream or a reset),
/// within [`WAIT`], and returns how many bytes came. The bytes are not decoded: a connection dropped
/// with frames unsent may end in the middle of one.
fn read_until_closed(client: &Client) -> usize {
    let mut stream = client.stream();
    let deadline = Instant::now() + WAIT;
    let mut buffer = vec![0; 64 << 10];
    let mut total = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{client:?}: the server did not close the connection within {WAIT:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match io::Read::read(&mut stream, &mut buffer) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return total,
        }
    }
}

/// 50 players at one spot, all in view of one another. One of them sends 10 000 MOVEs; after 8000,
/// 24 of the viewers, which have stopped reading (small receive buffers, so the server's sends to
/// them are stuck in flight), go: 18 by a reset, a plain close with frames unread or shutting both
/// directions, 6 by sending a malformed frame and going silent, so that the server drops them after
/// the write deadline with their send and receive in flight. The 25 other viewers must receive every
/// MOVE, in order and byte for byte, and LEAVE about each player that went; the mover gets those
/// LEAVEs too and nothing else; every connection the server cut off is closed by it; and after a
/// graceful shutdown the server stops with no operation left in flight and no connection left over.
#[test]
fn closes_in_the_middle_of_a_broadcast_cost_the_others_nothing() {
    for config in uring_configs() {
        eprintln!("--- zero-copy threshold {}", config.send_zerocopy_threshold);
        closes_in_the_middle_of_a_broadcast_cost_the_others_nothing_on(config);
    }
}

fn closes_in_the_middle_of_a_broadcast_cost_the_others_nothing_on(mut config: ServerConfig) {
    const LEAVERS: usize = 24;
    const STAYERS: usize = 25;
    const MOVES: usize = 10_000;
    /// MOVEs before the leavers go: 256 KB each, more than the kernel buffers of a connection that
    /// does not read take in, so that some stay queued, and a send in flight, until they go.
    const BEFORE: usize = 8000;
    const BATCH: usize = 500;
    let mut rules = base_rules();
    rules.max_speed = 1000.0;
    rules.limits.moves = Rate::new(1e6, 1e6);
    // How long the server tries to deliver a cut-off client's last frames.
    let write_deadline = Duration::from_millis(300);
    config.write_deadline = write_deadline;
    // Far above what any viewer queues: the leavers go when the test says, never for being slow.
    (config.send_soft_limit, config.send_hard_limit) = (16 << 20, 32 << 20);
    let (server, warnings) = start(config, rules);
    let addr = server.addr();
    let mut sent = 0u64;
    let mut mover = server.join("mover");
    let closes = [Close::Drop, Close::ShutdownBoth, Close::Reset, Close::Malformed];
    let mut leavers: Vec<(Close, Client)> = (0..LEAVERS)
        .map(|i| {
            let close = closes[i % closes.len()];
            let name = format!("leaver{i}");
            let mut leaver = Client::connect_with_receive_buffer(addr, &name, 4096);
            leaver.hello(&name);
            (close, leaver)
        })
        .collect();
    let mut stayers: Vec<Client> = (0..STAYERS).map(|i| server.join(&format!("stayer{i}"))).collect();
    sent += 1 + (LEAVERS + STAYERS) as u64;
    for client in [&mut mover].into_iter().chain(leavers.iter_mut().map(|(_, c)| c)).chain(&mut stayers) {
        client.sync(); // the last read of the leavers
        assert_eq!(client.seen().len(), LEAVERS + STAYERS, "{client:?} sees everyone");
    }
    sent += 1 + (LEAVERS + STAYERS) as u64;
    let mover_id = mover.id();
    let leaver_ids: BTreeSet<u32> = leavers.iter().map(|(_, c)| c.id()).collect();
    // Back and forth by half a unit: every step is legal, and every one is relayed.
    let moves: Arc<Vec<Move>> = Arc::new(
        (0..MOVES).map(|i| Move::new(500.0 + (i % 2) as f32 * 0.5, 0.0, 500.0, 1.0, i as u32)).collect(),
    );

    // Each stayer reads on its own thread, all the while: every MOVE in order, and a LEAVE per leaver.
    let readers: Vec<_> = stayers
        .into_iter()
        .map(|mut stayer| {
            let (moves, mut to_leave) = (Arc::clone(&moves), leaver_ids.clone());
            std::thread::spawn(move || {
                let mut next = 0;
                while next < MOVES || !to_leave.is_empty() {
                    let frame = stayer.recv();
                    if frame.kind() == PacketKind::Leave {
                        assert!(to_leave.remove(&frame.player_id), "{stayer:?}: {frame:?}");
                        continue;
                    }
                    assert!(frame.is(PacketKind::Move, mover_id), "{stayer:?}: MOVE {next}: {frame:?}");
                    assert_eq!(frame.payload, move_bytes(&moves[next]), "{stayer:?}: MOVE {next}");
                    next += 1;
                }
                stayer
            })
        })
        .collect();

    let started = Instant::now();
    let send_batches = |mover: &mut Client, range: std::ops::Range<usize>| {
        for batch in moves[range].chunks(BATCH) {
            let bytes: Vec<u8> =
                batch.iter().flat_map(|m| encode_frame_to_vec(0, &Packet::Move(m))).collect();
            mover.send_raw(&bytes);
        }
    };
    send_batches(&mut mover, 0..BEFORE);
    // Its PONG proves the first half was handled: queued for every viewer, and for the leavers, which
    // do not read, partly stuck in flight.
    assert!(mover.sync().is_empty(), "a legal MOVE was corrected");
    let mut silent = Vec::new();
    let cut_at = Instant::now();
    for (close, leaver) in leavers {
        match close {
            Close::Drop => drop(leaver),
            Close::ShutdownBoth => {
                leaver.stream().shutdown(std::net::Shutdown::Both).expect("shutdown");
                silent.push((close, leaver));
            }
            Close::Reset => reset(leaver),
            Close::Malformed => {
                let mut leaver = leaver;
                leaver.send_raw(&util::raw_frame(3, 0, &[0; 19])); // a MOVE one byte short
                sent += 1;
                silent.push((close, leaver));
            }
        }
    }
    send_batches(&mut mover, BEFORE..MOVES);
    sent += MOVES as u64 + 1;

    let mut to_leave = leaver_ids.clone();
    while !to_leave.is_empty() {
        let frame = mover.recv();
        assert!(
            frame.kind() == PacketKind::Leave && to_leave.remove(&frame.player_id),
            "mover: expected LEAVE about a leaver, got {frame:?}"
        );
    }
    mover.assert_served();
    let mut stayers: Vec<Client> =
        readers.into_iter().map(|reader| reader.join().expect("a stayer's check failed")).collect();
    eprintln!("{MOVES} MOVEs to {STAYERS} viewers, {LEAVERS} left meanwhile, in {:?}", started.elapsed());
    for stayer in &mut stayers {
        stayer.assert_served();
        assert_eq!(stayer.seen().len(), STAYERS, "{stayer:?}: the mover and the other stayers");
    }
    sent += 1 + STAYERS as u64;
    // Only now do the silent leavers read again: by then the server has given up on the ones it cut
    // off (their write deadline, plus the sweep that enforces it, has passed) and dropped them while
    // their sends were still stuck; what they read ends where the kernel's buffers did.
    let given_up = cut_at + write_deadline + 3 * Duration::from_millis(100);
    std::thread::sleep(given_up.saturating_duration_since(Instant::now()));
    let mut abandoned = 0;
    for (close, leaver) in &silent {
        let read = read_until_closed(leaver);
        // Less than the MOVEs queued for it before it went: the server gave up on the rest.
        abandoned += usize::from(matches!(close, Close::Malformed) && read < BEFORE * 32);
    }
    eprintln!("{abandoned} cut-off leavers were dropped with frames unsent");
    drop(silent);

    server.shutdown_handle().shutdown();
    for client in [&mut mover].into_iter().chain(&mut stayers) {
        expect_shut_down(client);
    }
    drop((mover, stayers));
    let stats = stopped(server, &warnings);
    assert_eq!(stats.frames_in, sent, "every frame sent was received once");
    assert_eq!(stats.accepted, (1 + LEAVERS + STAYERS) as u64);
}

/// A client resets its connection (SO_LINGER 0) after writing part of a frame, joined or not yet:
/// 7 bytes of a header, a header and part of its payload, all but the last byte. A player connected
/// all along receives LEAVE about it if it had joined, nothing otherwise, and keeps being served; a
/// newcomer joins afterwards and sees only that player.
#[test]
fn a_reset_in_the_middle_of_a_frame_is_only_a_leave_for_the_others() {
    for config in uring_configs() {
        eprintln!("--- zero-copy threshold {}", config.send_zerocopy_threshold);
        a_reset_in_the_middle_of_a_frame_is_only_a_leave_for_the_others_on(config);
    }
}

fn a_reset_in_the_middle_of_a_frame_is_only_a_leave_for_the_others_on(config: ServerConfig) {
    let (server, warnings) = start(config, base_rules());
    let mut witness = server.join("witness");
    let move_frame = encode_frame_to_vec(0, &Packet::Move(&Move::new(500.5, 0.0, 500.0, 1.0, 7)));
    let chat_frame = encode_frame_to_vec(0, &Packet::Chat { text: "never finished" });
    let hello_frame = encode_frame_to_vec(0, &Packet::Hello { name: "resetter" });
    let cuts: [(&str, bool, &[u8]); 6] = [
        ("7 bytes of a MOVE header", true, &move_frame[..7]),
        ("a MOVE header and 9 of its 20 payload bytes", true, &move_frame[..21]),
        ("a CHAT header alone", true, &chat_frame[..12]),
        ("a CHAT but its last byte", true, &chat_frame[..chat_frame.len() - 1]),
        ("7 bytes of a HELLO header", false, &hello_frame[..7]),
        ("a HELLO header and 3 bytes of the name", false, &hello_frame[..15]),
    ];
    for (what, joined, partial) in cuts {
        let mut resetter = server.connect("resetter");
        let id = if joined {
            let (id, _) = resetter.hello("resetter");
            assert_eq!(summary(&resetter.sync()), [(PacketKind::Enter, witness.id())], "{what}");
            assert_eq!(summary(&witness.sync()), [(PacketKind::Enter, id)], "{what}");
            // A PING in the same write: its PONG shows that the server has decoded what follows it.
            let mut bytes = encode_frame_to_vec(0, &Packet::Ping { payload: b"cut" });
            bytes.extend_from_slice(partial);
            resetter.send_raw(&bytes);
            let pong = resetter.recv();
            assert!(pong.is(PacketKind::Pong, id), "{what}: {pong:?}");
            Some(id)
        } else {
            resetter.send_raw(partial);
            None
        };
        reset(resetter);
        if let Some(id) = id {
            let frame = witness.recv();
            assert!(frame.is(PacketKind::Leave, id), "{what}: expected LEAVE about {id}, got {frame:?}");
        }
        witness.assert_served();
    }
    let mut newcomer = server.join("newcomer");
    assert_eq!(summary(&newcomer.sync()), [(PacketKind::Enter, witness.id())]);
    assert_eq!(summary(&witness.sync()), [(PacketKind::Enter, newcomer.id())]);
    newcomer.send_move(Move::new(501.0, 0.0, 500.0, 1.0, 99));
    let frame = witness.recv();
    assert!(frame.is(PacketKind::Move, newcomer.id()), "{frame:?}");
    newcomer.assert_served();

    server.shutdown_handle().shutdown();
    for client in [&mut witness, &mut newcomer] {
        expect_shut_down(client);
    }
    drop((witness, newcomer));
    let stats = stopped(server, &warnings);
    // A connection reset before the server got to it (one that had not joined) may be dropped
    // uncounted: io_uring's accept gives no peer address, and the socket has none left to ask for.
    let joined = cuts.iter().filter(|(_, joined, _)| *joined).count() as u64;
    let connects = 1 + cuts.len() as u64 + 1;
    assert!(
        (joined + 2..=connects).contains(&stats.accepted),
        "accepted {} of {connects} connections",
        stats.accepted
    );
}

/// What a short-lived connection does before it goes.
#[derive(Clone, Copy, Debug)]
enum Churn {
    /// Connects and closes.
    Nothing,
    /// Sends HELLO and closes without reading: the WELCOME may meet a closed socket.
    HelloThenClose,
    /// Reads its WELCOME, then closes with the ENTERs unread (a reset).
    WelcomeThenClose,
    /// Reads its WELCOME, then resets (SO_LINGER 0).
    WelcomeThenReset,
    /// Sends 5 bytes of a HELLO header and closes.
    PartialThenClose,
    /// Resets at once, maybe before the server has accepted it.
    ResetAtOnce,
    /// Sends a packet id a client may not send, reads ERROR(UNKNOWN_PACKET) and end of stream, and
    /// keeps its socket open: the server drops the connection after the linger, its receive still in
    /// flight (cancelled).
    ErrorThenSilence,
}

/// 300 connections come and go one after the other, each differently (closing or resetting, before
/// HELLO, after HELLO, after WELCOME, in the middle of a header; or cut off by the server, which then
/// drops them itself while they stay open), so that every token and descriptor is reused many times
/// right after the operations of its previous owner ended or were cancelled. Then players fill the
/// server to its limit of 64 connections (a connection the server still held would take a place and
/// make that fail), one more is refused with SERVER_FULL, and the 64 play normally: each sees the 63
/// others and no one that left, a MOVE is relayed to all of them, and every PING is answered.
#[test]
fn hundreds_of_short_lived_connections_leave_every_place_free() {
    for config in uring_configs() {
        eprintln!("--- zero-copy threshold {}", config.send_zerocopy_threshold);
        hundreds_of_short_lived_connections_leave_every_place_free_on(config);
    }
}

fn hundreds_of_short_lived_connections_leave_every_place_free_on(mut config: ServerConfig) {
    const CHURN: usize = 300;
    const LIMIT: usize = 64;
    config.max_connections = LIMIT;
    config.close_linger = Duration::from_millis(20);
    let (server, warnings) = start(config, base_rules());
    let addr = server.addr();
    let witness = server.join("witness");
    let mut connects = 1u64;
    let (mut refused, mut reset_at_once) = (0, 0);
    // The connections the server cut off: kept open, so that only the server can end them.
    let mut held = Vec::new();
    let started = Instant::now();
    let hello = encode_frame_to_vec(0, &Packet::Hello { name: "brief" });
    let kinds = [
        Churn::Nothing,
        Churn::HelloThenClose,
        Churn::WelcomeThenClose,
        Churn::WelcomeThenReset,
        Churn::PartialThenClose,
        Churn::ResetAtOnce,
        Churn::ErrorThenSilence,
    ];
    for i in 0..CHURN {
        let kind = kinds[i % kinds.len()];
        let mut client = Client::connect(addr, &format!("brief{i} ({kind:?})"));
        connects += 1;
        let server_full = Some(ErrorCode::ServerFull.code());
        match kind {
            Churn::Nothing => drop(client),
            Churn::HelloThenClose => {
                client.send_raw(&hello);
                drop(client);
            }
            Churn::WelcomeThenClose | Churn::WelcomeThenReset => {
                client.send_raw(&hello);
                let first = client.recv();
                match first.kind() {
                    PacketKind::Welcome => {}
                    _ if first.error_code() == server_full => refused += 1,
                    _ => panic!("brief{i} ({kind:?}): expected WELCOME or SERVER_FULL, got {first:?}"),
                }
                if let Churn::WelcomeThenReset = kind {
                    reset(client);
                }
            }
            Churn::PartialThenClose => {
                client.send_raw(&hello[..5]);
                drop(client);
            }
            Churn::ResetAtOnce => {
                reset(client);
                reset_at_once += 1;
            }
            Churn::ErrorThenSilence => {
                client.send_raw(&util::raw_frame(7, 0, &[])); // LEAVE: a server's packet
                let first = client.recv();
                let code = first.error_code();
                assert!(
                    code == Some(ErrorCode::UnknownPacket.code()) || code == server_full,
                    "brief{i} ({kind:?}): expected UNKNOWN_PACKET or SERVER_FULL, got {first:?}"
                );
                refused += usize::from(code == server_full);
                client.expect_eof();
                held.push(client);
            }
        }
    }
    eprintln!("{CHURN} short-lived connections in {:?} ({refused} seen refused)", started.elapsed());

    // Fill the server up. A place is freed only once the server has reaped every operation of the
    // connection that held it; give it WAIT in all for the last ones.
    let deadline = Instant::now() + WAIT;
    let mut players = vec![witness];
    let mut refusals = 0;
    while players.len() < LIMIT {
        let name = format!("player{}", players.len());
        let mut client = Client::connect(addr, &name);
        connects += 1;
        client.send(0, &Packet::Hello { name: &name });
        let first = client.recv();
        if first.kind() == PacketKind::Welcome {
            players.push(client);
            continue;
        }
        assert_eq!(first.error_code(), Some(ErrorCode::ServerFull.code()), "{name}: {first:?}");
        refusals += 1;
        assert!(
            Instant::now() < deadline,
            "the server still holds {} places {WAIT:?} after {CHURN} short-lived connections went",
            LIMIT - players.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("full after {refusals} refusals");
    let mut extra = Client::connect(addr, "one too many");
    connects += 1;
    extra.expect_next_error(ErrorCode::ServerFull);
    extra.expect_eof();

    let ids: BTreeSet<u32> = players.iter().map(Client::id).collect();
    for player in &mut players {
        let frames = player.sync();
        let unexpected: Vec<&Frame> =
            frames.iter().filter(|f| !matches!(f.kind(), PacketKind::Enter | PacketKind::Leave)).collect();
        assert!(unexpected.is_empty(), "{player:?}: {unexpected:?}");
        let mut others = ids.clone();
        others.remove(&player.id());
        assert_eq!(player.seen(), &others, "{player:?} sees every player and no one that left");
    }
    let m = Move::new(500.5, 0.0, 500.0, 1.0, 1234);
    players[1].send_move(m);
    let mover = players[1].id();
    // The mover's PONG first: it proves the MOVE was handled before any other player's PING.
    let frames = players[1].sync();
    assert!(frames.is_empty(), "{frames:?}");
    for (i, player) in players.iter_mut().enumerate() {
        if i == 1 {
            continue;
        }
        let frames = player.sync();
        assert_eq!(summary(&frames), [(PacketKind::Move, mover)], "{player:?}");
        assert_eq!(frames[0].payload, move_bytes(&m));
    }

    server.shutdown_handle().shutdown();
    for player in &mut players {
        expect_shut_down(player);
    }
    drop((players, held));
    let stats = stopped(server, &warnings);
    // A connection reset before the server got to it may be dropped uncounted.
    assert!(
        (connects - reset_at_once..=connects).contains(&stats.accepted),
        "accepted {} of {connects} connections ({reset_at_once} reset at once)",
        stats.accepted
    );
}
