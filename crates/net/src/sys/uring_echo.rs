//! Echo mode on io_uring: every byte received is sent back, unframed, from the very ring buffer the
//! kernel received it into (no copy); the buffer returns to the ring once its echo completed.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamewire_pool::Pool;
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use slab::Slab;

use super::ACCEPT_RETRY;
use super::uring::{
    BUFFER_GROUP, BufferRing, Op, SUBMISSION_ENTRIES, build_ring, decode_user_data, push_entry, user_data,
};
use crate::server::ShutdownState;
use crate::worker::RunStats;

/// How long the loop waits for cancelled operations to complete when it stops.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

struct EchoConn {
    socket: OwnedFd,
    receiving: bool,
    sending: bool,
    closing: bool,
    /// End of stream seen: close once everything received was echoed.
    eof: bool,
    /// The connection failed: close without echoing the rest.
    failed: bool,
    /// Received buffers waiting to be echoed, oldest first: (buffer id, bytes already sent).
    pending: VecDeque<(u16, usize)>,
}

/// The echo event loop on io_uring.
pub(crate) struct UringEchoLoop {
    // Field order is drop order: the ring first (see `UringLoop`).
    ring: IoUring,
    buffers: BufferRing,
    listener: TcpListener,
    conns: Slab<EchoConn>,
    shutdown: Arc<ShutdownState>,
    wake_fd: RawFd,
    wake_buffer: Box<[u8; 8]>,
    in_flight: usize,
    /// Receives that ended (ring dry, or the per-connection limit) and wait to be re-armed.
    rearm: Vec<usize>,
    /// Most buffers one connection may hold unsent before its receive stops (so that one peer that
    /// does not read cannot take the whole ring).
    max_pending: usize,
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
        shutdown: Arc<ShutdownState>,
        wake_fd: RawFd,
        max_connections: usize,
    ) -> io::Result<Self> {
        let ring = build_ring()?;
        let count = BufferRing::size_for(pool.chunk_count(), 0);
        let chunks = (0..count)
            .map(|_| pool.try_alloc())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| io::Error::other("buffer pool has no chunks for the receive ring"))?;
        let buffers = BufferRing::new(&ring, chunks, count)?;
        let mut event_loop = UringEchoLoop {
            ring,
            buffers,
            listener,
            conns: Slab::new(),
            shutdown,
            wake_fd,
            wake_buffer: Box::new([0; 8]),
            in_flight: 0,
            rearm: Vec::new(),
            max_pending: (count / 8).max(2),
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
        // SAFETY: every buffer an entry points to (ring buffers being echoed, the wake buffer) stays
        // alive and untouched until the entry's last completion is reaped.
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

    pub(crate) fn run(mut self) -> io::Result<RunStats> {
        while self.shutdown.requests() == 0 {
            let wait = if !self.rearm.is_empty() && self.buffers.in_ring > 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            let timespec = Timespec::from(wait);
            let args = SubmitArgs::new().timespec(&timespec);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(error)
                    if matches!(error.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                Err(error) => return Err(error),
            }
            loop {
                let mut completions = std::mem::take(&mut self.completions);
                completions.clear();
                completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
                for &(data, result, flags) in &completions {
                    self.complete(data, result, flags);
                }
                let drained = completions.is_empty();
                self.completions = completions;
                if drained || !self.ring.submission().cq_overflow() && self.ring.completion().is_empty() {
                    break;
                }
                let _ = self.ring.submitter().submit();
            }
            self.buffers.publish();
            if self.buffers.in_ring > 0 {
                let mut rearm = std::mem::take(&mut self.rearm);
                for &token in &rearm {
                    let Some(conn) = self.conns.get(token) else { continue };
                    if !conn.receiving && !conn.closing && !conn.eof && conn.pending.len() < self.max_pending
                    {
                        self.arm_receive(token);
                    }
                }
                rearm.clear();
                self.rearm = rearm;
            }
            if self.accept_paused && Instant::now() >= self.accept_retry_at {
                self.accept_paused = false;
                self.arm_accept();
            }
        }
        Ok(self.stats)
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32) {
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
                        self.admit(socket);
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
            Some(Op::Receive) => self.received(token, result, flags, more),
            Some(Op::Send) => self.sent(token, result),
            Some(Op::Wake) => self.arm_wake(),
            Some(Op::Cancel) | None => {}
        }
    }

    fn admit(&mut self, socket: OwnedFd) {
        let _ = socket2::SockRef::from(&socket).set_tcp_nodelay(true);
        let token = self.conns.insert(EchoConn {
            socket,
            receiving: false,
            sending: false,
            closing: false,
            eof: false,
            failed: false,
            pending: VecDeque::new(),
        });
        self.arm_receive(token);
    }

    fn received(&mut self, token: usize, result: i32, flags: u32, more: bool) {
        let conn = &mut self.conns[token];
        if !more {
            conn.receiving = false;
        }
        if result > 0 {
            let bid = cqueue::buffer_select(flags).expect("a multishot receive always selects a buffer");
            self.buffers.take(bid, result as usize);
            self.stats.frames_in += 1;
            conn.pending.push_back((bid, 0));
            if conn.pending.len() >= self.max_pending && conn.receiving && !conn.closing {
                // This peer is not reading its echoes: stop receiving from it until they drain.
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
        if !conn.receiving && !conn.eof && !conn.closing && conn.pending.len() < self.max_pending {
            self.rearm.push(token);
        }
        self.close_if_done(token);
    }

    fn send_next(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        if conn.sending || conn.closing {
            return;
        }
        let Some(&(bid, sent)) = conn.pending.front() else { return };
        let bytes = &self.buffers.filled(bid)[sent..];
        let entry = opcode::Send::new(Fd(conn.socket.as_raw_fd()), bytes.as_ptr(), bytes.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, token));
        conn.sending = true;
        self.push(entry);
    }

    fn sent(&mut self, token: usize, result: i32) {
        let conn = &mut self.conns[token];
        conn.sending = false;
        if result < 0 {
            (conn.eof, conn.failed) = (true, true);
        } else if let Some((bid, sent)) = conn.pending.front_mut() {
            *sent += result as usize;
            if *sent >= self.buffers.filled(*bid).len() {
                let bid = *bid;
                conn.pending.pop_front();
                self.buffers.provide(bid);
                if !conn.receiving && !conn.eof && !conn.closing && conn.pending.len() < self.max_pending / 2
                {
                    self.rearm.push(token);
                }
            }
            self.send_next(token);
        }
        self.close_if_done(token);
    }

    /// Closes `token` once its peer finished and everything it sent was echoed (or failed): cancels
    /// what is still in flight, and drops it when nothing is.
    fn close_if_done(&mut self, token: usize) {
        let conn = &mut self.conns[token];
        if !conn.eof || (!conn.pending.is_empty() && !conn.failed) {
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
        let mut conn = self.conns.remove(token);
        conn.pending.clear_and_return(&mut self.buffers);
        if self.accept_paused {
            self.accept_paused = false;
            self.arm_accept();
        }
    }
}

/// Returning a connection's unsent buffers to the ring.
trait ReturnBuffers {
    fn clear_and_return(&mut self, buffers: &mut BufferRing);
}

impl ReturnBuffers for VecDeque<(u16, usize)> {
    fn clear_and_return(&mut self, buffers: &mut BufferRing) {
        for (bid, _) in self.drain(..) {
            buffers.provide(bid);
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
