//! A short soak: `gamewire bots --chaos` against `gamewire serve` on 127.0.0.1, then a fresh client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gamewire_proto::{Direction, FrameDecoder, Packet, SERVER_PAYLOAD_MAX, encode_frame_to_vec};

mod common;

use common::{GAMEWIRE, Killed, free_addr, run_bots, start_listening};

/// The server's log, for failure messages.
fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Starts `gamewire serve` in a 200 x 200 world (about 20 bots in each one's view) logging to `log`,
/// and waits until it accepts connections.
fn start_server(log: &Path) -> (Killed, SocketAddr) {
    let addr = free_addr();
    let args = ["serve", "--addr", &addr.to_string(), "--world", "200,200", "--seed", "1"].map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = std::fs::File::create(log).expect("create the server log");
    match start_listening(GAMEWIRE.as_ref(), &args, addr, stderr.into()) {
        Ok(server) => (server, addr),
        Err(status) => panic!("gamewire serve exited at start: {status}\n{}", log_of(log)),
    }
}

/// A new player joins: HELLO, and the first frame back must be its WELCOME.
fn join(addr: SocketAddr) -> Result<u32, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    stream.write_all(&encode_frame_to_vec(0, &Packet::Hello { name: "late" })).map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX);
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Err("the server closed the connection".to_string()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut input = &buffer[..n];
        if let Some(frame) = decoder.next_frame(&mut input).map_err(|e| e.to_string())? {
            return match frame.packet() {
                Ok(Packet::Welcome(_)) if frame.player_id() != 0 => Ok(frame.player_id()),
                other => Err(format!("first frame is not a WELCOME: {other:?}")),
            };
        }
    }
    Err("no WELCOME within 5 s".to_string())
}

fn scratch_log(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.log", std::process::id()))
}

#[test]
fn honest_bots_are_served_untouched_while_chaos_bots_misbehave() {
    let log = scratch_log("chaos-server");
    let (mut server, addr) = start_server(&log);
    // 20 of 100 bots misbehave about once a second each: some 100 misdeeds in 8 s.
    let summary = run_bots(
        addr,
        &[
            "--bots",
            "100",
            "--warmup",
            "1",
            "--duration",
            "8",
            "--chat-hz",
            "0.2",
            "--chaos",
            "--chaos-fraction",
            "0.2",
            "--chaos-interval",
            "1",
            "--seed",
            "7",
        ],
    );
    let field = |name: &str| summary[name].as_u64().unwrap_or_else(|| panic!("no {name}: {summary}"));

    // The honest bots saw nothing of it.
    assert_eq!(field("welcomed"), 100, "every bot played: {summary}");
    assert_eq!(field("error_total"), 0, "honest bots got ERRORs: {summary}");
    assert_eq!(field("disconnects"), 0, "honest bots were disconnected: {summary}");
    assert_eq!(field("connect_failures"), 0, "{summary}");
    assert_eq!(field("moves_reordered"), 0, "MOVEs out of order: {summary}");
    assert_eq!(field("moves_missing"), 0, "MOVEs lost: {summary}");
    assert!(summary["latency_us"]["samples"].as_u64() > Some(1000), "MOVEs relayed: {summary}");

    // The chaos bots misbehaved in many ways, and the server answered each as protocol v1 says.
    let chaos = &summary["chaos"];
    let count = |name: &str| chaos[name].as_u64().unwrap_or_else(|| panic!("no chaos.{name}: {chaos}"));
    assert_eq!(count("bots"), 20);
    assert!(count("action_total") >= 30, "too few misdeeds: {chaos}");
    let kinds = chaos["actions"].as_object().expect("actions by kind");
    assert!(kinds.values().filter(|n| n.as_u64() > Some(0)).count() >= 6, "few kinds of misdeed: {chaos}");
    assert_eq!(count("unexpected_answers"), 0, "answers not as protocol v1 says: {chaos}");
    assert!(count("error_total") > 0 && count("closed_after_error") > 0, "no fatal ERROR answered: {chaos}");
    assert!(count("reconnects") > 0, "chaos bots did not come back: {chaos}");
    assert_eq!(count("frames_after_fatal"), 0, "the server spoke after a fatal ERROR: {chaos}");
    assert_eq!(count("not_closed_after_error"), 0, "the server kept a connection after its ERROR: {chaos}");
    assert_eq!(count("unexplained_closes"), 0, "the server closed chaos bots for nothing: {chaos}");

    // And the server is still there for a newcomer.
    assert!(server.0.try_wait().expect("poll the server").is_none(), "the server died:\n{}", log_of(&log));
    if let Err(error) = join(addr) {
        panic!("a fresh client cannot join after the chaos: {error}\n{}", log_of(&log));
    }
    let _ = std::fs::remove_file(&log);
}
