//! Echo mode on mio: every byte read is sent back, unframed, for comparing the bare I/O core with other
//! runtimes under a standard echo client. Bytes are read straight into the tail chunk of the
//! connection's backlog (small reads share a chunk) and written back from there, under the limits of
//! `sys::echo`.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamewire_pool::Pool;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::echo::{Backlog, EchoLimits, EchoTimers, sweep_verdicts};
use super::{ACCEPT_RETRY, READS_PER_TURN, SWEEP_INTERVAL};
use crate::ServerConfig;
use crate::control::ShutdownState;
use crate::send_queue::MAX_IOVECS;
use crate::worker::{RunStats, pool_is_low};

const LISTENER: Token = Token(usize::MAX - 1);

struct EchoConn {
    stream: TcpStream,
    backlog: Backlog,
    timers: EchoTimers,
    wants_writable: bool,
    /// Waiting in `EchoLoop::starved` for the pool to recover.
    starved: bool,
    /// The peer's FIN (or an error) was reported: read until end of stream, no edge will follow.
    until_eof: bool,
    /// End of stream read: nothing more to read; closed once the backlog is echoed.
    eof: bool,
}

/// The echo event loop.
pub(crate) struct EchoLoop {
    poll: Poll,
    listener: TcpListener,
    pool: Pool,
    conns: Slab<EchoConn>,
    shutdown: Arc<ShutdownState>,
    stats: RunStats,
    limits: EchoLimits,
    /// Connections served at once; more are closed as they come.
    max_connections: usize,
    /// Connections whose reading stopped because the pool ran low (not because of their own
    /// backlog): served again once it recovers, as no new edge may announce their waiting bytes.
    starved: Vec<usize>,
    /// Accepting failed (out of descriptors): retried at `accept_retry_at`, or as soon as a connection
    /// closes (the listener's edge will not fire again for connections already waiting).
    accept_paused: bool,
    accept_retry_at: Instant,
}

impl std::fmt::Debug for EchoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoLoop").field("connections", &self.conns.len()).finish_non_exhaustive()
    }
}

impl EchoLoop {
    pub(crate) fn new(
        poll: Poll,
        mut listener: TcpListener,
        pool: Pool,
        config: &ServerConfig,
        idle_timeout: Duration,
        shutdown: Arc<ShutdownState>,
        max_connections: usize,
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let limits = EchoLimits::new(config, idle_timeout, &pool, 0);
        Ok(EchoLoop {
            poll,
            listener,
            pool,
            conns: Slab::new(),
            shutdown,
            stats: RunStats::default(),
            limits,
            max_connections,
            starved: Vec::new(),
            accept_paused: false,
            accept_retry_at: Instant::now(),
        })
    }

    pub(crate) fn run(mut self) -> io::Result<RunStats> {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<usize> = Vec::new();
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        while self.shutdown.requests() == 0 {
            let now = Instant::now();
            let timeout = if !ready.is_empty() {
                Duration::ZERO
            } else if self.accept_paused {
                self.accept_retry_at.min(next_sweep).saturating_duration_since(now)
            } else {
                next_sweep.saturating_duration_since(now)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            let mut turn = std::mem::take(&mut ready);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all()?,
                    Token(token) if self.conns.contains(token) => {
                        if event.is_read_closed() || event.is_error() {
                            self.conns[token].until_eof = true;
                        }
                        turn.push(token);
                    }
                    _ => {}
                }
            }
            if !self.starved.is_empty() && !pool_is_low(&self.pool) {
                for token in self.starved.drain(..) {
                    if let Some(conn) = self.conns.get_mut(token) {
                        conn.starved = false;
                        turn.push(token);
                    }
                }
            }
            turn.sort_unstable();
            turn.dedup();
            let now = Instant::now();
            for &token in &turn {
                if self.conns.contains(token) && self.serve(token, now) {
                    ready.push(token);
                }
            }
            turn.clear();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            if self.accept_paused && Instant::now() >= self.accept_retry_at {
                self.accept_paused = false;
                self.accept_all()?;
            }
        }
        Ok(self.stats)
    }

    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    self.stats.accepted += 1;
                    if self.conns.len() >= self.max_connections {
                        drop(stream); // Echo mode has no protocol to say SERVER_FULL with.
                        continue;
                    }
                    super::configure_socket(
                        socket2::SockRef::from(&stream),
                        self.limits.socket_send_buffer,
                        peer,
                    );
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    self.poll.registry().register(&mut stream, token, Interest::READABLE)?;
                    entry.insert(EchoConn {
                        stream,
                        backlog: Backlog::default(),
                        timers: EchoTimers::new(Instant::now()),
                        wants_writable: false,
                        starved: false,
                        until_eof: false,
                        eof: false,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, "accept failed; paused");
                    self.accept_paused = true;
                    self.accept_retry_at = Instant::now() + ACCEPT_RETRY;
                    return Ok(());
                }
            }
        }
    }

    /// Echoes what `token` has queued, reads what its share allows and echoes that; returns whether
    /// it must be served again next turn without an event (its read budget ran out while bytes may
    /// remain).
    fn serve(&mut self, token: usize, now: Instant) -> bool {
        let share = self.limits.share(self.conns.len());
        let conn = &mut self.conns[token];
        // Writing first makes room for what is read next.
        let mut failed = flush(conn, now).is_err();
        let mut again = false;
        let mut read_any = false;
        for turn in 0..=READS_PER_TURN {
            if failed || conn.eof {
                break;
            }
            if turn == READS_PER_TURN {
                again = true;
                break;
            }
            let needs_chunk = conn.backlog.tail_room() == 0;
            if needs_chunk && conn.backlog.held() >= share {
                // Its own backlog is full: the bytes wait in its socket (its TCP window fills, nobody
                // else's) until the writable edge of the flush that makes room.
                break;
            }
            let spare =
                if needs_chunk && pool_is_low(&self.pool) { None } else { conn.backlog.spare(&self.pool) };
            let Some(spare) = spare else {
                self.stats.read_pauses += 1;
                if !conn.starved {
                    conn.starved = true;
                    self.starved.push(token);
                }
                break;
            };
            let room = spare.len();
            match conn.stream.read(spare) {
                Ok(0) => conn.eof = true,
                Ok(n) => {
                    conn.backlog.commit(n);
                    conn.timers.moved(now);
                    self.stats.frames_in += 1;
                    read_any = true;
                    // A short read emptied the receive queue: the next byte raises a new edge (see
                    // `sys::mio`), so no extra read just to see WouldBlock.
                    if n < room && !conn.until_eof {
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => failed = true,
            }
        }
        conn.backlog.trim();
        if read_any && !failed {
            failed = flush(conn, now).is_err();
        }
        conn.timers.backlog_is(conn.backlog.held(), share, now);
        let echoed = conn.backlog.is_empty();
        if failed || (conn.eof && echoed) {
            self.close(token);
            return false;
        }
        if echoed == conn.wants_writable {
            // Interest in writability only while a write is unfinished: its edge resumes the echo.
            conn.wants_writable = !echoed;
            let interest = if echoed { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE };
            let _ = self.poll.registry().reregister(&mut conn.stream, Token(token), interest);
        }
        again
    }

    /// Closes the connections past a deadline or over the hard limit, and, while the pool is low, the
    /// one holding the most beyond its share.
    fn sweep(&mut self, now: Instant) {
        let conns = self.conns.iter().map(|(token, conn)| (token, &conn.timers, conn.backlog.held()));
        let (low, open) = (pool_is_low(&self.pool), self.conns.len());
        let doomed = sweep_verdicts(conns, &self.limits, low, open, now, &mut self.stats.pressure_cuts);
        for (token, reason) in doomed {
            tracing::debug!(?reason, held = self.conns[token].backlog.held(), "echo connection closed");
            self.close(token);
        }
    }

    fn close(&mut self, token: usize) {
        let mut conn = self.conns.remove(token);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // Closing with unread bytes resets the connection: a peer that stopped reading learns at once.
        drop(conn);
        // Its descriptor is back: a paused accept may go on at once.
        self.accept_retry_at = Instant::now();
    }
}

/// Writes `conn`'s backlog until it is empty (`Ok(true)`) or the socket is full (`Ok(false)`).
fn flush(conn: &mut EchoConn, now: Instant) -> io::Result<bool> {
    while !conn.backlog.is_empty() {
        let written = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = conn.backlog.io_slices(&mut slices);
            (&conn.stream).write_vectored(&slices[..count])
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.backlog.consume(n);
                conn.timers.moved(now);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}
