//! CI smoke of the benchmark: `gamewire bots` against each of the three servers for a few seconds
//! (frames delivered, no protocol ERROR, no disconnect, every MOVE in order and none lost), and one
//! `gamewire bench --quick` whose results.json must hold the figures. Only 127.0.0.1; every child is
//! killed when dropped. No timing is asserted: performance is the bench's business, not a test's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{GAMEWIRE, Killed, free_addr, run_bots, start_listening};

/// A baseline's executable: a sibling of `gamewire` in the same target directory.
fn sibling(name: &str) -> PathBuf {
    let path = Path::new(GAMEWIRE).with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// Starts a server (`program` + `args`, with --addr and a small world so 50 bots see each other) and
/// waits until it accepts connections.
fn start_server(program: &Path, args: &[&str]) -> (Killed, SocketAddr) {
    let addr = free_addr();
    let addr_text = addr.to_string();
    let args: Vec<&str> =
        args.iter().copied().chain(["--addr", &addr_text, "--world", "200,200", "--seed", "1"]).collect();
    match start_listening(program, &args, addr, Stdio::null()) {
        Ok(server) => (server, addr),
        Err(status) => panic!("{} exited at start: {status}", program.display()),
    }
}

/// Runs `gamewire bots --json` against `addr` and returns its summary.
fn bots(addr: SocketAddr) -> Value {
    run_bots(addr, &["--bots", "50", "--warmup", "1", "--duration", "2.5", "--chat-hz", "0.2"])
}

fn check_delivery(server: &str, summary: &Value) {
    let field =
        |name: &str| summary[name].as_u64().unwrap_or_else(|| panic!("{server}: no {name}: {summary}"));
    assert!(field("frames_received") > 0, "{server}: no frame delivered: {summary}");
    assert!(summary["latency_us"]["samples"].as_u64() > Some(0), "{server}: no MOVE relayed: {summary}");
    assert_eq!(field("error_total"), 0, "{server}: protocol ERRORs: {summary}");
    assert_eq!(field("disconnects"), 0, "{server}: disconnects: {summary}");
    assert_eq!(field("welcomed"), 50, "{server}: not every bot was welcomed: {summary}");
    // Every server relays each sender's MOVEs in order and drops none of an honest bot's (a slow
    // recipient is cut off, which the disconnect count above would show).
    assert_eq!(field("moves_reordered"), 0, "{server}: MOVEs out of order: {summary}");
    assert_eq!(field("moves_missing"), 0, "{server}: MOVEs lost: {summary}");
}

#[test]
fn bots_play_on_gamewire() {
    let (_server, addr) = start_server(Path::new(GAMEWIRE), &["serve"]);
    check_delivery("gamewire", &bots(addr));
}

#[test]
fn bots_that_read_every_few_milliseconds_miss_nothing() {
    let (_server, addr) = start_server(Path::new(GAMEWIRE), &["serve"]);
    let summary = run_bots(
        addr,
        &[
            "--bots",
            "50",
            "--warmup",
            "1",
            "--duration",
            "2.5",
            "--chat-hz",
            "0.2",
            "--read-interval",
            "0.005",
        ],
    );
    check_delivery("gamewire, --read-interval 0.005", &summary);
    // Reading every 5 ms, a MOVE waits up to 5 ms more in the socket: the median shows it, bounded.
    let p50 = summary["latency_us"]["p50"].as_u64().expect("a median");
    assert!(p50 >= 1_000, "reads were not spaced: median latency {p50} µs");
}

#[test]
fn bots_play_on_baseline_tokio() {
    let (_server, addr) = start_server(&sibling("gamewire-baseline-tokio"), &[]);
    check_delivery("tokio", &bots(addr));
}

#[test]
fn bots_play_on_baseline_blocking() {
    let (_server, addr) = start_server(&sibling("gamewire-baseline-blocking"), &[]);
    check_delivery("blocking", &bots(addr));
}

/// A fresh, empty directory under the target's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn bench_quick_writes_results() {
    let out = scratch("bench-quick");
    // Output goes to files, not pipes: nobody reads a pipe while the bench runs, and a full one would
    // stall it.
    let stdout_path = out.with_extension("stdout");
    let stderr_path = out.with_extension("stderr");
    let child = Command::new(GAMEWIRE)
        .args(["bench", "--quick", "--servers", "gamewire", "--scenario", "mmo", "--bots", "50"])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("create stderr file"))
        .spawn()
        .expect("run gamewire bench");
    let mut bench = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = bench.0.try_wait().expect("wait for bench") {
            break status;
        }
        assert!(Instant::now() < deadline, "gamewire bench --quick took over 40 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "gamewire bench failed: {status}\n{stderr}");
    assert!(stdout.contains("| figure | gamewire |"), "the table goes to stdout: {stdout}");

    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json written");
    let results: Value = serde_json::from_str(&text).expect("results.json parses");
    assert_eq!(results["scenario"], "mmo");
    assert_eq!(results["bots"], 50);
    assert!(results["duration"].as_f64() > Some(0.0));
    for field in ["cores", "kernel", "cpu_model"] {
        assert!(!results["machine"][field].is_null(), "machine.{field} missing: {text}");
    }
    assert!(results["date"].as_str().is_some_and(|d| d.ends_with('Z')), "{text}");
    assert!(results["command"].as_array().is_some_and(|c| !c.is_empty()), "{text}");
    let servers = results["servers"].as_array().expect("servers is a list");
    assert_eq!(servers.len(), 1, "{text}");
    let server = &servers[0];
    assert_eq!(server["name"], "gamewire");
    assert!(server["frames_per_second"].as_f64() > Some(0.0), "{text}");
    assert!(server["frames_delivered"].as_u64() > Some(0), "{text}");
    assert!(server["cpu_seconds"].as_f64().is_some(), "{text}");
    assert!(server["peak_rss_bytes"].as_u64() > Some(0), "{text}");
    for p in ["p50", "p99", "p999"] {
        assert!(server["latency_us"][p].as_u64() > Some(0), "latency_us.{p}: {text}");
    }
    assert_eq!(server["errors"], 0, "{text}");
    assert_eq!(server["disconnects"], 0, "{text}");
    for file in ["results.md", "latency_cdf.svg", "cpu_per_million_frames.svg", "rss.svg"] {
        assert!(out.join(file).is_file(), "{file} not written");
    }
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&stdout_path);
    let _ = std::fs::remove_file(&stderr_path);
}
