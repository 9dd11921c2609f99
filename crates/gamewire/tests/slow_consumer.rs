//! A client that never reads, among 1,000 bots: `gamewire serve` cuts it off with SLOW_CONSUMER once it
//! has stayed over the soft send limit for the write deadline, its backlog costs the server no more
//! memory than the hard limit, and the bots lose nothing and get nothing out of order meanwhile. Both
//! backends, two workers, the server's default send limits; only 127.0.0.1.
//!
//! A player who sees a handful of bots gets a few kilobytes a second: minutes before any limit. So a
//! flooder joins in view of the client that never reads (it reconnects until the server spawns it
//! there) and sends it long CHATs at a steady 80 KB/s.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{GAMEWIRE, Killed, free_addr, resident_bytes, start_listening};
use gamewire_proto::{Direction, ErrorCode, FrameDecoder, Packet, SERVER_PAYLOAD_MAX, encode_frame_to_vec};

const BOTS: usize = 1000;
/// The flooder's CHATs per second (256 bytes of text each).
const CHATS_PER_SECOND: f64 = 300.0;
const SOFT_LIMIT: u64 = 262_144;
const HARD_LIMIT: u64 = 1_048_576;
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Generous bound on what the kernel buffers for a peer that does not read (our 64 KiB send buffer,
/// doubled by the kernel, plus the peer's receive buffer) before the server's own queue grows.
const KERNEL_ALLOWANCE: u64 = 512 << 10;
/// Growth of the server's resident memory allowed on top of the hard limit: the flooder's frames in
/// flight and allocator noise.
const RSS_SLACK: u64 = 1 << 20;

fn flood_chat(index: u64) -> String {
    let mut text = format!("flood {index:08} ");
    text.extend(std::iter::repeat_n('.', 256 - text.len()));
    text
}

fn decode_all(decoder: &mut FrameDecoder, mut input: &[u8], mut each: impl FnMut(u32, Packet<'_>)) {
    while let Some(frame) = decoder.next_frame(&mut input).expect("the server sends valid frames") {
        each(frame.player_id(), frame.packet().expect("the server sends valid packets"));
    }
}

/// Joins as `name`; returns the stream and the players in view at join time (id, name), all of which
/// come as ENTERs before the answer to a PING sent right behind the HELLO.
fn join(addr: SocketAddr, name: &str) -> (TcpStream, Vec<(u32, String)>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = encode_frame_to_vec(0, &Packet::Hello { name });
    hello.extend(encode_frame_to_vec(0, &Packet::Ping { payload: b"sync" }));
    stream.write_all(&hello).unwrap();
    let mut decoder = FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX);
    let (mut ponged, mut in_view) = (false, Vec::new());
    let mut buffer = [0u8; 16 << 10];
    while !ponged {
        let n = stream.read(&mut buffer).expect("the server answers a PING");
        assert!(n > 0, "the server closed a joining client");
        decode_all(&mut decoder, &buffer[..n], |about, packet| match packet {
            Packet::Enter { name, .. } => in_view.push((about, name.to_string())),
            Packet::Pong { .. } => ponged = true,
            Packet::Error { code, .. } => panic!("{name} got ERROR {code} at join"),
            _ => {}
        });
    }
    (stream, in_view)
}

/// Joins as `name` until the server spawns it in view of the player called `near` (with random spawn
/// points, about 1 try in 125 at this density); returns the stream and `near`'s id.
fn join_near(addr: SocketAddr, name: &str, near: &str) -> (TcpStream, u32) {
    for _ in 0..3000 {
        let (stream, in_view) = join(addr, name);
        if let Some((id, _)) = in_view.iter().find(|(_, seen)| seen == near) {
            return (stream, *id);
        }
    }
    panic!("{name} never spawned in view of {near} in 3,000 tries");
}

/// What the client that never read finds in its socket once it finally reads: the flooder's CHATs in
/// order (a prefix of them), then ERROR(SLOW_CONSUMER) and the end, or a reset.
fn read_after_the_cut(mut stream: TcpStream, io: &str) -> u64 {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut decoder = FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX);
    let (mut chats, mut last_error, mut after_error) = (0u64, None, 0);
    let mut buffer = [0u8; 64 << 10];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {
                // The server gave up on flushing the ERROR and dropped the connection.
                last_error = Some(ErrorCode::SlowConsumer.code());
                break;
            }
            Err(error) => panic!("{io}: the server never closed the client it cut off: {error}"),
        };
        decode_all(&mut decoder, &buffer[..n], |_, packet| match packet {
            Packet::Chat { text } => {
                assert!(last_error.is_none(), "{io}: a CHAT after the ERROR");
                assert_eq!(text, flood_chat(chats), "{io}: CHATs lost or out of order");
                chats += 1;
            }
            Packet::Error { code, .. } => last_error = Some(code),
            _ if last_error.is_some() => after_error += 1,
            _ => {}
        });
    }
    assert_eq!(last_error, Some(ErrorCode::SlowConsumer.code()), "{io}: the last frame is SLOW_CONSUMER");
    assert_eq!(after_error, 0, "{io}: nothing follows the ERROR");
    chats
}

fn run(io: &str) {
    let addr = free_addr();
    let addr_text = addr.to_string();
    let args = [
        "serve",
        "--io",
        io,
        "--workers",
        "2",
        "--no-pin",
        "--addr",
        &addr_text,
        "--world",
        "991,991",
        "--aoi-radius",
        "50",
        "--seed",
        "3",
        "--chat-limit",
        "1000/1000",
        // The defaults, spelled out because the assertions depend on them.
        "--send-soft-limit",
        "262144",
        "--send-hard-limit",
        "1048576",
        "--write-deadline",
        "5",
    ];
    let Ok(server) = start_listening(GAMEWIRE.as_ref(), &args, addr, Stdio::null()) else {
        eprintln!("--- {io}: SKIPPED, the server exited at start (no io_uring here?)");
        return;
    };
    let server_pid = server.0.id();

    // 1,000 bots at mmo density (about 8 in view each), 10 MOVEs a second each.
    let mut bots = Command::new(GAMEWIRE)
        .args(["bots", "--addr", &addr.to_string(), "--bots", &BOTS.to_string()])
        .args(["--warmup", "2", "--duration", "26", "--seed", "5", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gamewire bots");
    let mut bots_output = bots.stdout.take().expect("piped");
    let bots = Killed(bots);
    let summary = std::thread::spawn(move || {
        let mut text = String::new();
        bots_output.read_to_string(&mut text).expect("read the bots' summary");
        text
    });
    std::thread::sleep(Duration::from_secs(3));

    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).expect("connect");
    let mut nonreader: TcpStream = socket.into();
    nonreader.write_all(&encode_frame_to_vec(0, &Packet::Hello { name: "nonreader" })).unwrap();
    // From here on `nonreader` reads nothing until the server has cut it off.
    let (mut flooder, nonreader_id) = join_near(addr, "flooder", "nonreader");

    // The flooder reads everything it is sent, and notes when the non-reader leaves its view.
    let cut_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut flooder_reader = flooder.try_clone().unwrap();
    let cut_seen = Arc::clone(&cut_at);
    let reader = std::thread::spawn(move || {
        let mut decoder = FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX);
        let mut buffer = [0u8; 64 << 10];
        loop {
            match flooder_reader.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => decode_all(&mut decoder, &buffer[..n], |about, packet| {
                    if matches!(packet, Packet::Leave) && about == nonreader_id {
                        cut_seen.lock().unwrap().get_or_insert_with(Instant::now);
                    }
                    if let Packet::Error { code, .. } = packet {
                        panic!("the flooder got ERROR {code}");
                    }
                }),
            }
        }
    });

    let rss_before = resident_bytes(server_pid).expect("the server runs");
    let mut rss_peak = rss_before;
    let flood_started = Instant::now();
    let mut sent = 0u64;
    let mut last_ping = flood_started;
    let cut_after = loop {
        let elapsed = flood_started.elapsed();
        if let Some(at) = *cut_at.lock().unwrap() {
            break at - flood_started;
        }
        assert!(elapsed < Duration::from_secs(40), "{io}: the non-reader was never cut off ({sent} CHATs)");
        let due = (elapsed.as_secs_f64() * CHATS_PER_SECOND) as u64;
        let mut batch = Vec::new();
        while sent < due {
            batch.extend(encode_frame_to_vec(0, &Packet::Chat { text: &flood_chat(sent) }));
            sent += 1;
        }
        flooder.write_all(&batch).expect("the flooder keeps being served");
        if last_ping.elapsed() > Duration::from_secs(2) {
            // Keeps the non-reader clear of the idle timeout: only its reading stopped.
            let _ = nonreader.write_all(&encode_frame_to_vec(0, &Packet::Ping { payload: b"" }));
            last_ping = Instant::now();
        }
        rss_peak = rss_peak.max(resident_bytes(server_pid).expect("the server runs"));
        std::thread::sleep(Duration::from_millis(10));
    };
    let frame_bytes = encode_frame_to_vec(0, &Packet::Chat { text: &flood_chat(0) }).len() as f64;
    let flood_rate = CHATS_PER_SECOND * frame_bytes;
    let latest_cut = WRITE_DEADLINE.as_secs_f64() + (SOFT_LIMIT + KERNEL_ALLOWANCE) as f64 / flood_rate + 1.0;
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "--- {io}: cut {:.2} s into the flood ({sent} CHATs sent, {:.0} KB/s); server RSS {} KiB -> peak {} KiB \
         (+{} KiB)",
        cut_after.as_secs_f64(),
        flood_rate / 1e3,
        rss_before >> 10,
        rss_peak >> 10,
        growth >> 10
    );
    assert!(cut_after >= WRITE_DEADLINE, "{io}: cut after {cut_after:?}, before the write deadline");
    assert!(
        cut_after.as_secs_f64() <= latest_cut,
        "{io}: cut after {cut_after:?}: not within the deadline of the soft limit (at most {latest_cut:.1} s)"
    );
    assert!(
        growth <= HARD_LIMIT + RSS_SLACK,
        "{io}: server RSS grew by {} KiB for one slow client (hard limit {} KiB)",
        growth >> 10,
        HARD_LIMIT >> 10
    );

    let chats = read_after_the_cut(nonreader, io);
    assert!(chats < sent, "{io}: the non-reader got the whole flood ({chats} of {sent}): it was not cut off");

    // Everyone else carried on: the flooder is still served, and so is a newcomer.
    drop(join(addr, "newcomer"));
    drop(flooder);
    reader.join().expect("the flooder got no ERROR");

    let text = summary.join().expect("bots summary reader");
    drop(bots);
    let summary: serde_json::Value = serde_json::from_str(&text).expect("the bots print a JSON summary");
    eprintln!("--- {io}: bots {}", summary);
    assert_eq!(summary["welcomed"], BOTS, "{io}: every bot joined");
    assert_eq!(summary["error_total"], 0, "{io}: no bot got an ERROR");
    assert_eq!(summary["disconnects"], 0, "{io}: no bot was disconnected");
    assert!(summary["received"]["MOVE"].as_u64().unwrap_or(0) > 0, "{io}: the bots saw each other move");
    assert_eq!(summary["moves_reordered"], 0, "{io}: the bots got MOVEs out of order");
    assert_eq!(summary["moves_missing"], 0, "{io}: the bots missed MOVEs");
    drop(server);
}

#[test]
fn a_client_that_never_reads_is_cut_off_within_the_deadline_among_1000_bots() {
    for io in ["mio", "uring"] {
        run(io);
    }
}
