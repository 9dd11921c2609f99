//! What a loop is told from outside while it runs: shutdown requests, and the wake-ups that interrupt
//! its wait (for a request, the world thread's deliveries or a game command). Below the backends: they
//! import it, it imports none of them.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shutdown requests shared between a [`ShutdownHandle`] and the loops, and how to wake each loop.
#[derive(Debug)]
pub(crate) struct ShutdownState {
    requests: AtomicUsize,
    /// `wakers[i]` interrupts worker `i`'s wait.
    wakers: Vec<LoopWaker>,
}

/// How another thread interrupts a loop's wait.
#[derive(Debug)]
pub(crate) enum LoopWaker {
    /// A mio loop's waker.
    Mio(mio::Waker),
    /// An eventfd the io_uring loop keeps a read posted on (`sys::uring::new_wake_fd`); a write of 1
    /// completes that read.
    #[cfg(target_os = "linux")]
    EventFd(std::fs::File),
}

impl LoopWaker {
    fn wake(&self) -> io::Result<()> {
        match self {
            LoopWaker::Mio(waker) => waker.wake(),
            #[cfg(target_os = "linux")]
            LoopWaker::EventFd(file) => match (&*file).write(&1u64.to_ne_bytes()) {
                // The counter is saturated: a wake-up is pending anyway.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
                result => result.map(drop),
            },
        }
    }
}

impl ShutdownState {
    /// No request yet; `wakers[i]` wakes worker `i`.
    pub(crate) fn new(wakers: Vec<LoopWaker>) -> Self {
        ShutdownState { requests: AtomicUsize::new(0), wakers }
    }

    /// Requests so far: 0 (serving), 1 (draining), 2 or more (stop at once).
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// Wakes worker `worker`'s loop.
    pub(crate) fn wake_worker(&self, worker: usize) {
        if let Err(error) = self.wakers[worker].wake() {
            tracing::error!(%error, worker, "cannot wake the event loop");
        }
    }
}

/// Stops a running [`crate::Server`] from any thread (a signal handler thread, an admin console, a
/// test).
///
/// Get one from [`Server::shutdown_handle`](crate::Server::shutdown_handle) (or
/// [`EchoServer::shutdown_handle`](crate::EchoServer::shutdown_handle)) before calling `run`, which
/// takes the server and blocks; clones are cheap and all stop the same server. Either call
/// [`ShutdownHandle::shutdown`] yourself or let [`ShutdownHandle::stop_on_signals`] call it on
/// SIGINT and SIGTERM.
///
/// # Examples
///
/// An admin console on a thread of its own: `stop` drains the server, a second `stop` makes it
/// return at once. Not run as a test, since it binds a port and serves until someone types `stop`.
///
/// ```no_run
/// use std::io::BufRead;
///
/// use gamewire_net::{Server, ServerConfig};
///
/// let server = Server::bind(ServerConfig::default().addr("127.0.0.1:7777".parse()?), Default::default())?;
/// let stop = server.shutdown_handle();
/// std::thread::spawn(move || {
///     for line in std::io::stdin().lock().lines() {
///         let Ok(line) = line else { break };
///         if line.trim() == "stop" {
///             stop.shutdown();
///         }
///     }
/// });
/// let stats = server.run()?; // serves on this thread until stopped
/// println!("served {} connections", stats.accepted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle(pub(crate) Arc<ShutdownState>);

impl ShutdownHandle {
    /// Stops the server when the process gets SIGINT or SIGTERM: the first signal starts the graceful
    /// stop of [`ShutdownHandle::shutdown`], a second makes [`crate::Server::run`] return at once. The
    /// signals are waited for on a thread of their own (the event loops never block on them).
    ///
    /// # Errors
    ///
    /// If the handlers cannot be installed or the thread cannot start.
    ///
    /// # Examples
    ///
    /// A server that stops on Ctrl-C (and on `kill`, as a service manager stops it). Not run as a
    /// test, since it binds a port and installs process-wide signal handlers, then serves until a
    /// signal comes.
    ///
    /// ```no_run
    /// use gamewire_net::{Server, ServerConfig};
    ///
    /// let server = Server::bind(ServerConfig::default(), Default::default())?;
    /// server.shutdown_handle().stop_on_signals()?;
    /// let stats = server.run()?; // returns once the clients are drained, or at a second signal
    /// println!("served {} connections", stats.accepted);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(unix)]
    pub fn stop_on_signals(&self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let stop = self.clone();
        std::thread::Builder::new().name("gamewire-signals".into()).spawn(move || {
            for signal in signals.forever() {
                tracing::info!(signal, "signal received: stopping");
                stop.shutdown();
            }
        })?;
        Ok(())
    }

    /// The first call starts a graceful stop: no more connections are accepted, every client gets what
    /// is queued for it and then ERROR(SHUTTING_DOWN), and [`crate::Server::run`] returns once all are
    /// closed or the drain deadline passes
    /// ([`ServerConfig::drain_timeout`](crate::ServerConfig::drain_timeout)). A second call makes it
    /// return at once. Never blocks: it only records the request and wakes the event loops. See the
    /// type's documentation for an example.
    pub fn shutdown(&self) {
        self.0.requests.fetch_add(1, Ordering::AcqRel);
        for worker in 0..self.0.wakers.len() {
            self.0.wake_worker(worker);
        }
    }
}
