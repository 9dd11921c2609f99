//! Child processes of the bench: free ports, pinning, readiness, and a guard that never leaves a
//! server behind.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A free port on 127.0.0.1: bind port 0, read it, drop the listener.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether (and how) children are pinned to a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    /// `taskset -c N` prefix.
    Cpu(usize),
    Unpinned,
}

/// Checks that `taskset -c cpu` works here; warns and returns [`Pin::Unpinned`] when it does not.
pub(crate) fn probe_pin(cpu: usize) -> Pin {
    match Command::new("taskset")
        .args(["-c", &cpu.to_string(), "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Pin::Cpu(cpu),
        Ok(status) => {
            tracing::warn!(cpu, %status, "taskset cannot pin to this CPU: running unpinned");
            Pin::Unpinned
        }
        Err(error) => {
            tracing::warn!(%error, "taskset not found (util-linux): running unpinned");
            Pin::Unpinned
        }
    }
}

/// A command for `program args`, pinned as asked.
pub(crate) fn command(pin: Pin, program: &Path, args: &[String]) -> Command {
    match pin {
        Pin::Cpu(cpu) => {
            // taskset execs the program: the child's pid is the program's.
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program).args(args);
            command
        }
        Pin::Unpinned => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, unless it already ended.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) child: Child,
    pub(crate) name: String,
    pub(crate) log: PathBuf,
}

impl Guard {
    /// Spawns `command` with stdin closed and stderr (and stdout, unless `capture_stdout`) going to
    /// the file `log`.
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        log: PathBuf,
        capture_stdout: bool,
    ) -> anyhow::Result<Guard> {
        let file = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let stdout = if capture_stdout { Stdio::piped() } else { Stdio::from(file.try_clone()?) };
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("cannot start {name}: {command:?}"))?;
        Ok(Guard { child, name: name.to_string(), log })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has ended.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the child's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log, 12)
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL. Returns the exit status if it exited
    /// by itself within the grace period.
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = %self.name, "did not stop within {grace:?} of SIGTERM: killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a file (empty when unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    // An anyhow error printed with RUST_BACKTRACE=1 ends in a long backtrace: the message is before it.
    let text = text.split("\nStack backtrace:").next().unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until a TCP connection to `addr` succeeds (bounded by `timeout`), failing early if the server
/// exits.
pub(crate) fn wait_ready(server: &mut Guard, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = server.exited() {
            bail!(
                "{} exited before accepting connections ({status}); its log:\n{}",
                server.name,
                server.log_tail()
            );
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not accept connections on {addr} within {timeout:?}; its log:\n{}",
                server.name,
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }

    #[test]
    fn guards_stop_their_child() {
        let dir = std::env::temp_dir().join(format!("gamewire-bench-child-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sleeper = Guard::spawn(
            "sleep",
            command(Pin::Unpinned, Path::new("sleep"), &["30".into()]),
            dir.join("s.log"),
            false,
        )
        .unwrap();
        assert!(sleeper.exited().is_none());
        let status = sleeper.stop(Duration::from_secs(5)).expect("sleep ends on SIGTERM");
        assert!(!status.success());
        let log = dir.join("l.log");
        std::fs::write(&log, "a\nb\nError: boom\n\nStack backtrace:\n   0: x\n   1: y\n").unwrap();
        assert_eq!(log_tail(&log, 2), "b\nError: boom");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
