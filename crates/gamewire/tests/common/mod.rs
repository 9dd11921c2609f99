//! Shared harness of the binary's integration tests: child processes that are killed when dropped, a
//! free port on 127.0.0.1, and starting `gamewire serve` (or a baseline) until it accepts connections.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `gamewire` binary under test.
pub(crate) const GAMEWIRE: &str = env!("CARGO_BIN_EXE_gamewire");

/// A child process killed and reaped on drop.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An address on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// Starts `program args` (which must listen on `addr`), its stdout discarded and its stderr to
/// `stderr`, and waits up to 10 s until it accepts connections. `Err` with the exit status when it exits
/// first (e.g. `--io uring` on a kernel without io_uring): the caller decides whether that fails the
/// test or skips it.
pub(crate) fn start_listening(
    program: &Path,
    args: &[&str],
    addr: SocketAddr,
    stderr: Stdio,
) -> Result<Killed, ExitStatus> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut server = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            return Err(status);
        }
        assert!(Instant::now() < deadline, "{} did not accept connections within 10 s", program.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// Resident memory of process `pid` in bytes (VmRSS), if it is still running.
pub(crate) fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `gamewire bots --json --addr addr args…` to the end and returns its summary.
pub(crate) fn run_bots(addr: SocketAddr, args: &[&str]) -> serde_json::Value {
    let output = Command::new(GAMEWIRE)
        .args(["bots", "--json", "--addr", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run gamewire bots");
    assert!(
        output.status.success(),
        "gamewire bots failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("bots --json prints JSON")
}
