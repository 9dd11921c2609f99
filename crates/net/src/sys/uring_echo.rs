//! Echo mode on io_uring: every byte received is sent back, unframed, under the limits of `sys::echo`.
//! A receive's bytes leave the ring at once: copied behind the connection's backlog when they fit in
//! its tail chunk (small receives share a chunk), else the ring buffer's chunk itself joins the
//! backlog and a fresh one takes its place. No connection holds ring buffers, so none can starve the
//! ring for the others.

use std::io;
use std::net::{Shutdown, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamewire_pool::Pool;
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use slab::Slab;
use socket2::SockRef;

use super::echo::{Backlog, EchoLimits, EchoTimers, sweep_verdicts};
use super::uring_ring::{
    BUFFER_GROUP, BufferRing, Op, SUBMISSION_ENTRIES, build_ring, decode_user_data, push_entry, user_data,
};
use super::{ACCEPT_RETRY, SWEEP_INTERVAL};
use crate::ServerConfig;
use crate::control::ShutdownState;
use crate::worker::{RunStats, pool_is_low};

/// How long the loop waits for cancelled operations to complete when it stops.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

struct EchoConn {
    socket: OwnedFd,
    backlog: Backlog,
    timers: EchoTimers,
    receiving: bool,
    /// The receive was cancelled (the backlog reached its share) and has not ended yet.
    receive_stopping: bool,
    /// A send of the backlog's front is in flight: its bytes stay untouched until it completes.
    sending: bool,
    closing: bool,
    /// End of stream seen: close once everything received was echoed.
    eof: bool,
    /// The connection failed or was closed by the server: close without echoing the rest.
    failed: bool,
}

/// The echo event loop on io_uring.
pub(crate) struct UringEchoLoop {
    // Field order is drop order: the ring first (see `UringLoop`), before the ring buffers and the
    // backlogs whose memory the kernel may still be reading.
    ring: IoUring,
    buffers: BufferRing,
    listener: TcpListener,
    pool: Pool,
    conns: Slab<EchoConn>,
    shutdown: Arc<ShutdownState>,
    wake_fd: RawFd,
    wake_buffer: Box<[u8; 8]>,
    in_flight: usize,
    /// Receives that ended (ring dry, backlog full, pool low) and wait to be re-armed.
    rearm: Vec<usize>,
    limits: EchoLimits,
    completions: Vec<(u64, i32, u32)>,
    stats: RunStats,
    /// Connections served at once; more are closed as they come.
    max_connections: usize,
    /// Accepting failed (out of descriptors): re-armed when a connection closes or at
    /// `accept_retry_at`.
    accept_paused: bool,
    accept_retry_at: Instant,
}

impl std::fmt::Debug for UringEchoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEchoLoop").field("connections", &self.conns.len()).finish_non_exhaustive()
    }
}

impl UringEchoLoop {
    /// Sets up the ring on the calling thread, which must be the one that runs the loop.
    pub(crate) fn new(
        listener: TcpListener,
        pool: &Pool,
        config: &ServerConfig,
        idle_timeout: Duration,
        shutdown: Arc<ShutdownState>,
        wake_fd: RawFd,
        max_connections: usize,
    ) -> io::Result<Self> {
        let ring = build_ring()?;
        let capacity = BufferRing::size_for(pool.chunk_count(), config.receive_buffers);
        let mut buffers = BufferRing::new(&ring, Vec::new(), capacity)?;
        if buffers.top_up(pool, 0) == 0 {
            return Err(io::Error::other("buffer pool has no chunks for the receive ring"));
        }
        // The ring at full size is not shared out to backlogs.
        let limits = EchoLimits::new(config, idle_timeout, pool, capacity);
        let mut event_loop = UringEchoLoop {
            ring,
            buffers,
            listener,
            pool: pool.clone(),
            conns: Slab::new(),
            shutdown,
            wake_fd,
            wake_buffer: Box::new([0; 8]),
            in_flight: 0,
            rearm: Vec::new(),
            limits,
            completions: Vec::with_capacity(SUBMISSION_ENTRIES as usize * 4),
            stats: RunStats::default(),
            max_connections,
            accept_paused: false,
            accept_retry_at: Instant::now(),
        };
        event_loop.arm_accept();
        event_loop.arm_wake();
        Ok(event_loop)
    }

    fn arm_accept(&mut self) {
        let accept = opcode::AcceptMulti::new(Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Op::Accept, 0));
        self.push(accept);
    }

    fn push(&mut self, entry: squeue::Entry) {
        self.in_flight += 1;
        // SAFETY: every buffer an entry points to (the backlog bytes being sent, which are only
        // appended behind and dropped after the send completed; the wake buffer) stays alive and
        // untouched until the entry's last completion is reaped.
        unsafe { push_entry(&mut self.ring, &entry) }
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(Fd(self.wake_fd), self.wake_buffer.as_mut_ptr(), 8)
            .build()
            .user_data(user_data(Op::Wake, 0));
        self.push(entry);
    }

    fn arm_receive(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        conn.receiving = true;
        let entry = opcode::RecvMulti::new(Fd(conn.socket.as_raw_fd()), BUFFER_GROUP)
            .build()
            .user_data(user_data(Op::Receive, token));
        self.push(entry);
    }

    /// The chunks each backlog may hold now.
    fn share(&self) -> usize {
        self.limits.share(self.conns.len())
    }

    pub(crate) fn run(mut self) -> io::Result<RunStats> {
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        while self.shutdown.requests() == 0 {
            let can_rearm = !self.rearm.is_empty() && self.buffers.in_ring > 0 && !pool_is_low(&self.pool);
            let wait =
                if can_rearm { Duration::ZERO } else { next_sweep.saturating_duration_since(Instant::now()) };
            let timespec = Timespec::from(wait);
            let args = SubmitArgs::new().timespec(&timespec);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(error)
                    if matches!(error.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                Err(error) => return Err(error),
            }
            let now = Instant::now();
            loop {
                let mut completions = std::mem::take(&mut self.completions);
                completions.clear();
                completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
                for &(data, result, flags) in &completions {
                    self.complete(data, result, flags, now);
                }
                let drained = completions.is_empty();
                self.completions = completions;
                if drained || !self.ring.submission().cq_overflow() && self.ring.completion().is_empty() {
                    break;
                }
                let _ = self.ring.submitter().submit();
            }
            // Buffer ids whose chunk joined a backlog while the pool was low get one again here.
            self.buffers.top_up(&self.pool, self.conns.len());
            self.buffers.publish();
            if self.buffers.in_ring > 0 {
                let pool_low = pool_is_low(&self.pool);
                let share = self.share();
                let mut rearm = std::mem::take(&mut self.rearm);
                rearm.retain(|&token| {
                    let Some(conn) = self.conns.get(token) else { return false };
                    if conn.receiving || conn.closing || conn.eof || conn.backlog.held() >= share {
                        // Armed already, or ending; a full backlog is re-armed by the send that
                        // makes room.
                        return false;
                    }
                    if pool_low {
                        return true;
                    }
                    self.arm_receive(token);
                    false
                });
                self.rearm = rearm;
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            if self.accept_paused && Instant::now() >= self.accept_retry_at {
                self.accept_paused = false;
                self.arm_accept();
            }
        }
        Ok(self.stats)
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32, now: Instant) {
        let (op, token) = decode_user_data(data);
        let more = cqueue::more(flags);
        if !more {
            self.in_flight -= 1;
        }
        match op {
            Some(Op::Accept) => {
                if result >= 0 {
                    // SAFETY: a successful accept completion carries a new descriptor nobody owns.
                    let socket = unsafe { OwnedFd::from_raw_fd(result) };
                    self.stats.accepted += 1;
                    if self.conns.len() >= self.max_connections {
                        drop(socket); // Echo mode has no protocol to say SERVER_FULL with.
                    } else {
                        self.admit(socket, now);
                    }
                } else {
                    // EMFILE and the like: re-arming at once would fail at once, in a loop. Retried
                    // when a connection of this loop closes, or after a pause (descriptors may come
                    // back elsewhere in the process).
                    tracing::warn!(error = %io::Error::from_raw_os_error(-result), "accept failed; paused");
                    if !more {
                        self.accept_paused = true;
                        self.accept_retry_at = Instant::now() + ACCEPT_RETRY;
                    }
                    return;
                }
                if !more {
                    self.arm_accept();
                }
            }
            Some(Op::Receive) => self.received(token, result, flags, more, now),
            Some(Op::Send) => self.sent(token, result, now),
            Some(Op::Wake) => self.arm_wake(),
            Some(Op::Cancel) | None => {}
        }
    }

    fn admit(&mut self, socket: OwnedFd, now: Instant) {
        let sock = SockRef::from(&socket);
        if let Some(peer) = sock.peer_addr().ok().and_then(|addr| addr.as_socket()) {
            super::configure_socket(sock, self.limits.socket_send_buffer, peer);
        }
        let token = self.conns.insert(EchoConn {
            socket,
            backlog: Backlog::default(),
            timers: EchoTimers::new(now),
            receiving: false,
            receive_stopping: false,
            sending: false,
            closing: false,
            eof: false,
            failed: false,
        });
        self.buffers.top_up(&self.pool, self.conns.len());
        self.arm_receive(token);
    }

    fn received(&mut self, token: usize, result: i32, flags: u32, more: bool, now: Instant) {
        let share = self.share();
        let conn = &mut self.conns[token];
        if !more {
            (conn.receiving, conn.receive_stopping) = (false, false);
        }
        if result > 0 {
            let bid = cqueue::buffer_select(flags).expect("a multishot receive always selects a buffer");
            let len = result as usize;
            let bytes = self.buffers.take(bid, len);
            if conn.closing {
                // Bytes past the end the server chose: nobody will echo them.
                self.buffers.provide(bid);
            } else if conn.backlog.tail_room() >= len {
                conn.backlog.copy_in(bytes);
                self.buffers.provide(bid);
            } else {
                // The ring's chunk itself joins the backlog; a fresh one takes its place, or, with the
                // pool low, none does until it recovers (the ring shrinks: backpressure).
                let fresh = if pool_is_low(&self.pool) { None } else { self.pool.try_alloc() };
                let replaced = fresh.is_some();
                conn.backlog.push_chunk(self.buffers.detach(bid, fresh));
                if replaced {
                    self.buffers.provide(bid);
                } else {
                    self.stats.read_pauses += 1;
                }
            }
            self.stats.frames_in += 1;
            conn.timers.moved(now);
            conn.timers.backlog_is(conn.backlog.held(), share, now);
            if conn.backlog.held() >= share && conn.receiving && !conn.receive_stopping && !conn.closing {
                // Its backlog holds its share: stop receiving from it until sends make room (its
                // bytes wait in its socket, its TCP window fills; nobody else's).
                conn.receive_stopping = true;
                let cancel =
                    opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data(Op::Receive, token)))
                        .build()
                        .user_data(user_data(Op::Cancel, token));
                self.push(cancel);
            }
            self.send_next(token);
        } else if result == 0 {
            conn.eof = true;
        } else if result != -libc::ENOBUFS && result != -libc::ECANCELED {
            (conn.eof, conn.failed) = (true, true);
        }
        let conn = &self.conns[token];
        if !conn.receiving && !conn.eof && !conn.closing && conn.backlog.held() < share {
            self.rearm.push(token);
        }
        self.close_if_done(token);
    }

    fn send_next(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        if conn.sending || conn.closing {
            return;
        }
        let bytes = conn.backlog.front_unsent();
        if bytes.is_empty() {
            return;
        }
        let entry = opcode::Send::new(Fd(conn.socket.as_raw_fd()), bytes.as_ptr(), bytes.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, token));
        conn.sending = true;
        self.push(entry);
    }

    fn sent(&mut self, token: usize, result: i32, now: Instant) {
        let share = self.share();
        let conn = &mut self.conns[token];
        conn.sending = false;
        if result < 0 {
            (conn.eof, conn.failed) = (true, true);
        } else {
            conn.backlog.consume(result as usize);
            conn.timers.moved(now);
            conn.timers.backlog_is(conn.backlog.held(), share, now);
            if !conn.receiving && !conn.eof && !conn.closing && conn.backlog.held() < share {
                self.rearm.push(token);
            }
            self.send_next(token);
        }
        self.close_if_done(token);
    }

    /// Closes the connections past a deadline or over the hard limit, and, while the pool is low, the
    /// one holding the most beyond its share.
    fn sweep(&mut self, now: Instant) {
        let conns = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.closing && !conn.failed)
            .map(|(token, conn)| (token, &conn.timers, conn.backlog.held()));
        let (low, open) = (pool_is_low(&self.pool), self.conns.len());
        let doomed = sweep_verdicts(conns, &self.limits, low, open, now, &mut self.stats.pressure_cuts);
        for (token, reason) in doomed {
            let conn = &mut self.conns[token];
            tracing::debug!(?reason, held = conn.backlog.held(), "echo connection closed");
            (conn.eof, conn.failed) = (true, true);
            // Ends its receive, and a send blocked on a peer that does not read (EPIPE), which a
            // cancel may not reach.
            let _ = SockRef::from(&conn.socket).shutdown(Shutdown::Both);
            self.close_if_done(token);
        }
    }

    /// Closes `token` once its peer finished and everything it sent was echoed (or failed): cancels
    /// what is still in flight, and drops it when nothing is.
    fn close_if_done(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        if !conn.eof || (!conn.backlog.is_empty() && !conn.failed) {
            return;
        }
        if conn.receiving || conn.sending {
            if !conn.closing {
                conn.closing = true;
                let fd = conn.socket.as_raw_fd();
                let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
                    .build()
                    .user_data(user_data(Op::Cancel, token));
                self.push(cancel);
            }
            return;
        }
        // Its backlog goes back to the pool with it (no send of it is in flight).
        self.conns.remove(token);
        if self.accept_paused {
            self.accept_paused = false;
            self.arm_accept();
        }
    }
}

impl Drop for UringEchoLoop {
    fn drop(&mut self) {
        let cancel =
            opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(user_data(Op::Cancel, 0));
        self.push(cancel);
        let deadline = std::time::Instant::now() + CANCEL_WAIT;
        while self.in_flight > 0 && std::time::Instant::now() < deadline {
            let timespec = Timespec::from(Duration::from_millis(10));
            let args = SubmitArgs::new().timespec(&timespec);
            if let Err(error) = self.ring.submitter().submit_with_args(1, &args)
                && !matches!(error.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY))
            {
                break;
            }
            for cqe in self.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.in_flight -= 1;
                }
            }
        }
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
}
