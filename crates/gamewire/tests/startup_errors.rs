//! Mistakes on the command line end a run at once with one clear line naming the flag: absurd numbers
//! for `serve`, `bots` and `bench` (never a panic or a hang), a second server on a taken address
//! (unless it asks to join with `--reuse-port`), and bots that found no server. Only 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{GAMEWIRE, Killed, free_addr};

/// How long a refused start may take: validation comes before anything is bound or mapped.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// A file under the target's temporary directory for a child's stderr (a file, not a pipe: a child
/// that does not exit must not block the test on a read).
fn log_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.stderr", std::process::id()))
}

/// Starts `gamewire args` with its stderr going to `log` (without backtraces, logging only errors).
fn spawn(args: &[&str], log: &PathBuf) -> Killed {
    let stderr = std::fs::File::create(log).expect("create the stderr file");
    let child = Command::new(GAMEWIRE)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start gamewire");
    Killed(child)
}

/// Runs `gamewire args`, which must exit within [`EXIT_WITHIN`]; returns its status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let log = log_file(&args.join("_").replace(['/', ':', '.'], "-"));
    let mut child = spawn(args, &log);
    let deadline = Instant::now() + EXIT_WITHIN;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for gamewire") {
            break status;
        }
        assert!(Instant::now() < deadline, "gamewire {args:?} still runs after {EXIT_WITHIN:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (status, stderr)
}

/// Asserts that `gamewire args` fails at start with `message` in its stderr, exactly once, and
/// without a panic.
fn assert_refused(args: &[&str], message: &str) {
    let (status, stderr) = run_to_exit(args);
    assert!(!status.success(), "gamewire {args:?} succeeded:\n{stderr}");
    assert!(!stderr.contains("panicked"), "gamewire {args:?} panicked:\n{stderr}");
    assert_eq!(
        stderr.matches(message).count(),
        1,
        "gamewire {args:?}: expected {message:?} once in:\n{stderr}"
    );
}

#[test]
fn absurd_serve_flags_are_refused_at_start_by_flag_name() {
    let addr = free_addr().to_string();
    let cases: &[(&[&str], &str)] = &[
        // Used to start and panic on the first client (an instant overflow in the flush timer).
        (
            &["--flush-interval", "1e19"],
            "invalid configuration: --flush-interval of 10000000000000000000 s exceeds the limit of one year",
        ),
        // Used to read "max_players must be in 1..=1048575, got 0", twice.
        (&["--max-connections", "0"], "invalid configuration: --max-connections must be at least 1, got 0"),
        (&["--write-deadline", "1e9"], "invalid configuration: --write-deadline of 1000000000 s exceeds"),
        (&["--drain-timeout", "4e7"], "invalid configuration: --drain-timeout of 40000000 s exceeds"),
        (&["--idle-timeout", "0"], "invalid configuration: --idle-timeout must be above 0 seconds"),
        (&["--hello-timeout", "1e12"], "invalid configuration: --hello-timeout of 1000000000000 s exceeds"),
        (&["--partial-frame-timeout", "0"], "invalid configuration: --partial-frame-timeout must be above 0"),
        (
            &["--pool-mib", "18446744073709551615"],
            "invalid configuration: --pool-mib 18446744073709551615 is more",
        ),
        (
            &["--pool-mib", "0"],
            "invalid configuration: --pool-mib must hold at least 64 chunks of --chunk-size",
        ),
        (&["--chunk-size", "1099511627776"], "invalid configuration: --chunk-size must be a multiple of 64"),
        (
            &["--send-hard-limit", "0", "--send-soft-limit", "0"],
            "invalid configuration: --send-hard-limit must be at least 1",
        ),
        (
            &["--socket-send-buffer", "18446744073709551615"],
            "invalid configuration: --socket-send-buffer must be at most 1 GiB",
        ),
        (&["--workers", "100000"], "invalid configuration: --workers must be in 1..=256, got 100000"),
        (
            &["--aoi-radius", "NaN"],
            "invalid configuration: --aoi-radius must be a positive finite number, got NaN",
        ),
        (
            &["--max-speed", "inf"],
            "invalid configuration: --max-speed must be a positive finite number, got inf",
        ),
        (&["--move-limit", "inf/5"], "invalid configuration: --move-limit must be a positive finite rate"),
        (&["--max-hp", "0"], "invalid configuration: --max-hp must be positive"),
        (&["--max-payload", "4294967295"], "invalid configuration: --max-payload must be in 256..=65536"),
        // Not numbers a Duration holds: clap refuses them, naming the flag.
        (&["--flush-interval", "nan"], "invalid value 'nan' for '--flush-interval <SECONDS>'"),
        (&["--drain-timeout", "inf"], "invalid value 'inf' for '--drain-timeout <SECONDS>'"),
        (&["--write-deadline=-1"], "invalid value '-1' for '--write-deadline <SECONDS>'"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["serve", "--addr", &addr, "--no-pin"];
        args.extend_from_slice(flags);
        assert_refused(&args, message);
    }
}

#[test]
fn absurd_bots_and_bench_flags_are_refused_by_name() {
    let addr = free_addr().to_string();
    let bots: &[(&[&str], &str)] = &[
        (&["--bots", "0"], "--bots must be in 1..=1048575, got 0"),
        (&["--move-hz", "inf"], "--move-hz must be above 0 and at most 1000 per second, got inf"),
        // A period that rounds to zero microseconds: used to loop for ever.
        (&["--chat-hz", "1e9"], "--chat-hz must be 0 or more and at most 1000 per second"),
        (&["--duration", "inf"], "--duration must be above 0 seconds and at most a year"),
        (&["--warmup", "NaN"], "--warmup must be 0 or more seconds"),
        (&["--read-interval", "1e30"], "--read-interval must be 0 or more seconds and at most a year"),
        (&["--ramp", "0"], "--ramp must be a positive number"),
        (&["--speed-factor", "NaN"], "--speed-factor must be in 0..=10, got NaN"),
    ];
    for (flags, message) in bots {
        let mut args = vec!["bots", "--addr", &addr];
        args.extend_from_slice(flags);
        assert_refused(&args, message);
    }
    let out = log_file("bench-out");
    let out = out.to_str().expect("a UTF-8 path");
    let bench: &[(&[&str], &str)] = &[
        // Used to start measuring: a bench that never ends, or panics converting to a Duration.
        (&["--duration", "inf"], "--duration must be above 0 seconds and at most a year"),
        (&["--warmup", "1e300"], "--warmup must be 0 or more seconds and at most a year"),
        (&["--flush-interval", "1e19"], "--flush-interval must be 0 or more seconds and at most a year"),
        (&["--bots", "18446744073709551615"], "--bots must be in 1..=1048575"),
        (&["--workers", "0"], "--workers must be in 1..=256, got 0"),
        (&["--p99-ms", "NaN"], "--p99-ms must be a positive finite number"),
        (&["--capacity-factor", "inf"], "--capacity-factor must be a finite number above 1"),
        (&["--pool-mib", "18446744073709551615"], "--pool-mib must be at least 1 and fit in memory"),
    ];
    for (flags, message) in bench {
        let mut args = vec!["bench", "--quick", "--out", out];
        args.extend_from_slice(flags);
        assert_refused(&args, message);
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bots_against_nothing_fail_with_the_reason() {
    // Nothing listens there: every connection is refused.
    let addr = free_addr().to_string();
    let args = ["bots", "--addr", &addr, "--bots", "10", "--warmup", "0.3", "--duration", "0.3", "--json"];
    let output = Command::new(GAMEWIRE)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run gamewire bots");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "bots against nothing exited 0:\n{stderr}");
    let message = format!(
        "no bot was welcomed: 10 of 10 connections failed (refused or unreachable): is a gamewire server \
         listening on {addr}?"
    );
    assert!(stderr.contains(&message), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the summary is still printed");
    assert_eq!(summary["connect_failures"], 10, "{summary}");
    assert_eq!(summary["connected"], 0, "{summary}");
    assert_eq!(summary["welcomed"], 0, "{summary}");
}

/// Starts `gamewire serve --addr addr flags…` and waits until it logs that it listens; `Err` with
/// its stderr if it exits first.
fn start_server(addr: SocketAddr, flags: &[&str], name: &str) -> Result<Killed, String> {
    let log = log_file(name);
    let addr = addr.to_string();
    let mut args = vec!["serve", "--addr", &addr, "--no-pin"];
    args.extend_from_slice(flags);
    let mut server = spawn(&args, &log);
    let deadline = Instant::now() + EXIT_WITHIN;
    loop {
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        if stderr.contains("gamewire listening") {
            return Ok(server);
        }
        if let Some(status) = server.0.try_wait().expect("wait for gamewire") {
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{status}: {stderr}"));
        }
        assert!(Instant::now() < deadline, "gamewire serve {flags:?} neither listened nor exited:\n{stderr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_server_on_a_taken_address_fails_unless_both_ask_to_share() {
    for io in ["mio", "auto"] {
        for first_workers in ["1", "2"] {
            let addr = free_addr();
            let _first = start_server(addr, &["--io", io, "--workers", first_workers], "first")
                .unwrap_or_else(|error| panic!("the first server did not start: {error}"));
            for workers in ["1", "2"] {
                let addr = addr.to_string();
                let args = ["serve", "--addr", &addr, "--io", io, "--workers", workers, "--no-pin"];
                assert_refused(&args, &format!("cannot start the server: {addr} is already in use"));
                let (_, stderr) = run_to_exit(&args);
                assert!(stderr.contains("--reuse-port"), "the error says how to share: {stderr}");
            }
        }
        // Both ask: the second joins the first, and both keep running.
        let addr = free_addr();
        let mut first = start_server(addr, &["--io", io, "--workers", "1", "--reuse-port"], "first-joined")
            .unwrap_or_else(|error| panic!("the first server did not start: {error}"));
        let mut second = start_server(addr, &["--io", io, "--workers", "2", "--reuse-port"], "second-joined")
            .unwrap_or_else(|error| panic!("--reuse-port did not let a second server join: {error}"));
        for server in [&mut first, &mut second] {
            assert!(server.0.try_wait().expect("wait").is_none(), "a joined server exited");
        }
    }
}
