//! Completion backend on io_uring (Linux 6.0+): operations are posted ahead and their completions
//! reaped, the Linux counterpart of the chapter's IOCP server.
//!
//! - One multishot accept on the listener.
//! - One multishot receive per connection, drawing from a provided-buffer ring made of pool chunks: the
//!   kernel picks the chunk, the bytes are decoded in place, and the chunk goes straight back into the
//!   ring (or is held back while the pool is low, which starves the ring: backpressure, not loss).
//! - At most one vectored send per connection in flight, reading the queued pooled frames in place;
//!   they stay queued (alive) until its completion says how much the kernel took.
//! - Per-connection operation state lives in a slab indexed by the token carried in `user_data` (the
//!   chapter's OverlappedEx pool): nothing is allocated per operation.
//! - One `io_uring_enter` per loop turn submits everything and waits for completions.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use socket2::SockRef;

use super::SWEEP_INTERVAL;
use super::uring_ring::{
    BUFFER_GROUP, BufferRing, Op, SUBMISSION_ENTRIES, build_ring, decode_user_data, push_entry, user_data,
};
use crate::control::ShutdownState;
use crate::send_queue::MAX_IOVECS;
use gamewire_world::Game;

use crate::worker::{Phase, RunStats, ShutdownStep, Worker, pool_is_low};

/// Most refused connections held for their linger at once; beyond it the oldest is closed early.
const MAX_LINGERING_REFUSALS: usize = 1024;
/// How long the loop waits for cancelled operations to complete when it stops.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Where an in-flight send's message header and slices live: fixed for the operation's life.
struct SendSlot {
    iovecs: [libc::iovec; MAX_IOVECS],
    header: libc::msghdr,
}

// SAFETY: the raw pointers point into this slot and into frames of the connection's send queue, both
// owned by the loop that owns the slot; they are only dereferenced by the kernel during the send.
unsafe impl Send for SendSlot {}

impl SendSlot {
    fn new() -> Box<SendSlot> {
        Box::new(SendSlot {
            iovecs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOVECS],
            // SAFETY: msghdr is plain data for which all-zero is the empty header.
            header: unsafe { std::mem::zeroed() },
        })
    }
}

/// The operations of one connection (indexed by token): at most one receive and one send at a time.
struct ConnOps {
    /// The connection's socket (the worker's `Conn` holds only its number): owned here so that a
    /// closing connection can let go of it before its last zero-copy notification comes.
    socket: Option<OwnedFd>,
    receiving: bool,
    sending: bool,
    /// Zero-copy sends whose notification (the kernel let go of their pages) has not come yet.
    zerocopy_unnotified: usize,
    /// Its operations were cancelled: the connection is dropped once neither is in flight.
    closing: bool,
    /// Its send was cancelled (the queue stalled or was cut off while it was in flight).
    send_cancelled: bool,
    send: Box<SendSlot>,
}

/// The event loop of one worker on io_uring.
pub(crate) struct UringLoop<G: Game> {
    // Field order is drop order: the ring goes first, so the kernel is done with every buffer before
    // the buffer ring's memory and the chunks are released.
    ring: IoUring,
    buffers: BufferRing,
    worker: Worker<RawFd, G>,
    listener: Option<TcpListener>,
    shutdown: Arc<ShutdownState>,
    wake_fd: RawFd,
    wake_buffer: Box<[u8; 8]>,
    ops: Vec<ConnOps>,
    /// Operations submitted whose last completion has not arrived.
    in_flight: usize,
    accept_armed: bool,
    accept_paused: bool,
    /// Shutting down: the accept is cancelled and never re-armed.
    stopped_accepting: bool,
    /// Connections whose multishot receive ended (no buffer, or the kernel stopped it) and must be
    /// re-armed.
    rearm: Vec<usize>,
    /// Connections whose receive was re-armed last turn: their deferred bytes are read by the end of
    /// this turn's reaping (see `Worker::defer_read`).
    rearmed: Vec<usize>,
    /// Completions copied out of the queue, processed after it is released.
    completions: Vec<(u64, i32, u32)>,
    scratch: Vec<usize>,
    refused: VecDeque<(OwnedFd, Instant)>,
}

impl<G: Game> std::fmt::Debug for UringLoop<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringLoop")
            .field("connections", &self.worker.conns.len())
            .field("in_flight", &self.in_flight)
            .field("buffers", &self.buffers)
            .finish_non_exhaustive()
    }
}

impl<G: Game> UringLoop<G> {
    /// Sets up the ring on the calling thread (a single-issuer ring belongs to the thread that made
    /// it: call this on the thread that runs the loop).
    pub(crate) fn new(
        listener: TcpListener,
        worker: Worker<RawFd, G>,
        shutdown: Arc<ShutdownState>,
        wake_fd: RawFd,
    ) -> io::Result<Self> {
        let ring = build_ring()?;
        let capacity = BufferRing::size_for(worker.pool.chunk_count(), worker.config.receive_buffers);
        let mut buffers = BufferRing::new(&ring, Vec::new(), capacity)?;
        if buffers.top_up(&worker.pool, 0) == 0 {
            return Err(io::Error::other("buffer pool has no chunks for the receive ring"));
        }
        let capacity = worker.config.max_connections.min(1 << 16);
        let mut event_loop = UringLoop {
            ring,
            buffers,
            worker,
            listener: Some(listener),
            shutdown,
            wake_fd,
            wake_buffer: Box::new([0; 8]),
            ops: Vec::with_capacity(capacity),
            in_flight: 0,
            accept_armed: false,
            accept_paused: false,
            stopped_accepting: false,
            rearm: Vec::new(),
            rearmed: Vec::new(),
            completions: Vec::with_capacity(SUBMISSION_ENTRIES as usize * 4),
            scratch: Vec::new(),
            refused: VecDeque::new(),
        };
        event_loop.arm_accept();
        event_loop.arm_wake();
        Ok(event_loop)
    }

    /// The pool is considered low below this many free chunks (the mio backend's margin): consumed
    /// receive buffers are held back until it recovers. The kernel may already have filled every ring
    /// buffer when this trips; what they produce beyond the margin goes to the heap (bounded by one
    /// ring's worth, counted in `RunStats::heap_fallbacks`). A larger margin was tried: it keeps too
    /// much of the pool from clients that do not read, and the pressure cut then stalls everyone.
    fn pool_is_low(&self) -> bool {
        pool_is_low(&self.worker.pool) || self.worker.reads_blocked()
    }

    /// Queues `entry`, submitting first if the submission queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: every buffer an entry points to (buffer ring, send slot and queued frames, wake
        // buffer) stays alive and untouched until the entry's last completion is reaped.
        unsafe { push_entry(&mut self.ring, &entry) }
    }

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else { return };
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Op::Accept, 0));
        self.push(entry);
        self.accept_armed = true;
        self.in_flight += 1;
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(Fd(self.wake_fd), self.wake_buffer.as_mut_ptr(), 8)
            .build()
            .user_data(user_data(Op::Wake, 0));
        self.push(entry);
        self.in_flight += 1;
    }

    fn arm_receive(&mut self, token: usize) {
        let fd = tcp_fd(&self.worker.conns[token]);
        let entry =
            opcode::RecvMulti::new(Fd(fd), BUFFER_GROUP).build().user_data(user_data(Op::Receive, token));
        self.push(entry);
        self.ops[token].receiving = true;
        self.in_flight += 1;
    }

    pub(crate) fn run(mut self) -> io::Result<RunStats> {
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        let mut drain_deadline: Option<Instant> = None;
        let flush_interval = self.worker.config.flush_interval;
        loop {
            let now = Instant::now();
            let wake_at = self.worker.wake_at(next_sweep);
            let wait = if !self.rearm.is_empty() && self.buffers.in_ring > 0 {
                Duration::ZERO
            } else {
                wake_at.saturating_duration_since(now)
            };
            let wait = if !wait.is_zero() && !self.worker.may_wait() { Duration::ZERO } else { wait };
            let submitted = self.submit_and_wait(wait);
            self.worker.woke();
            submitted?;
            let now = Instant::now();
            self.worker.out.now = now;
            self.reap(now);
            self.worker.apply_deliveries(now);
            self.worker.run_game(now);
            if !self.buffers.withheld.is_empty() && !self.pool_is_low() {
                while let Some(bid) = self.buffers.withheld.pop() {
                    self.buffers.provide(bid);
                }
            }
            self.buffers.publish();
            // Receives re-armed last turn have been submitted and reaped since: what the socket held
            // then has been read (a completion), or it held nothing.
            for token in self.rearmed.drain(..) {
                self.worker.caught_up(token);
            }
            if self.buffers.in_ring > 0 {
                let mut rearm = std::mem::take(&mut self.rearm);
                for &token in &rearm {
                    if self.worker.conns.contains(token)
                        && !self.ops[token].closing
                        && !self.ops[token].receiving
                    {
                        self.arm_receive(token);
                        self.rearmed.push(token);
                    }
                }
                rearm.clear();
                self.rearm = rearm;
            }
            if now >= next_sweep {
                self.worker.sweep(now);
                // The ring grows at admit, except while the pool was low then: catch up here.
                self.buffers.top_up(&self.worker.pool, self.worker.conns.len());
                // Memory pressure proper (not a backlog towards the world thread, which resolves
                // itself): cut the largest backlog.
                if self.worker.under_memory_pressure() {
                    self.worker.relieve_pool_pressure(now);
                }
                while self.refused.front().is_some_and(|(_, until)| *until <= now) {
                    self.refused.pop_front();
                }
                next_sweep = now + SWEEP_INTERVAL;
                if self.accept_paused && !self.stopped_accepting {
                    self.accept_paused = false;
                    self.arm_accept();
                }
            }
            match self.worker.shutdown_step(self.shutdown.requests(), now, &mut drain_deadline) {
                ShutdownStep::Continue => {}
                ShutdownStep::StopAccepting => self.stop_accepting(),
                ShutdownStep::Return => break,
            }
            self.worker.settle(now);
            let delay = if drain_deadline.is_some() { Duration::ZERO } else { flush_interval };
            // Closed connections first: nothing new is sent to a socket whose operations are being
            // cancelled.
            self.close_finished();
            self.flush_due(now, delay);
            self.worker.end_turn();
            if self.worker.drained(now, drain_deadline) {
                break;
            }
        }
        Ok(self.worker.finish_stats())
    }

    /// Submits what is queued and waits up to `wait` for at least one completion.
    fn submit_and_wait(&mut self, wait: Duration) -> io::Result<()> {
        let timespec = Timespec::from(wait);
        let args = SubmitArgs::new().timespec(&timespec);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            // ETIME: the wait timed out; EINTR: a signal; EBUSY: completions overflowed and must be
            // reaped before more can be submitted (they are, right after this).
            Err(error) if matches!(error.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Handles every completion that has arrived, including those the kernel kept aside when the
    /// completion queue overflowed.
    fn reap(&mut self, now: Instant) {
        loop {
            let mut completions = std::mem::take(&mut self.completions);
            completions.clear();
            completions
                .extend(self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
            for &(data, result, flags) in &completions {
                self.complete(data, result, flags, now);
            }
            let drained = completions.is_empty();
            self.completions = completions;
            if drained {
                break;
            }
            if self.ring.submission().cq_overflow() {
                tracing::debug!("completion queue overflowed: flushing the kernel's backlog");
                let _ = self.ring.submitter().submit();
            } else if self.ring.completion().is_empty() {
                break;
            }
        }
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32, now: Instant) {
        let (op, token) = decode_user_data(data);
        let more = cqueue::more(flags);
        if !more {
            self.in_flight -= 1;
        }
        match op {
            Some(Op::Accept) => self.accepted(result, more, now),
            Some(Op::Receive) => self.received(token, result, flags, more, now),
            Some(Op::Send) if cqueue::notif(flags) => {
                // A zero-copy send's pages are free: its frames may go back.
                self.ops[token].zerocopy_unnotified -= 1;
                self.worker.out.queues[token].release_zerocopy_batch();
                if self.ops[token].closing {
                    self.finish_if_idle(token);
                }
            }
            Some(Op::Send) => {
                // With MORE set, this was a zero-copy send and its notification follows.
                if more {
                    self.ops[token].zerocopy_unnotified += 1;
                }
                self.sent(token, result, more, now);
            }
            Some(Op::Wake) => {
                if self.shutdown.requests() < 2 {
                    self.arm_wake();
                }
            }
            Some(Op::Cancel) | None => {}
        }
    }

    fn accepted(&mut self, result: i32, more: bool, now: Instant) {
        if !more {
            self.accept_armed = false;
        }
        if result < 0 {
            let error = io::Error::from_raw_os_error(-result);
            if result != -libc::ECANCELED && self.listener.is_some() {
                // EMFILE/ENFILE/ENOBUFS: the pending connections stay in the backlog; try again at
                // the next sweep instead of spinning.
                tracing::warn!(%error, "accept failed; pausing accept until the next sweep");
                self.accept_paused = true;
            }
        } else {
            // SAFETY: a successful accept completion carries a new descriptor that nothing else owns.
            let socket = unsafe { OwnedFd::from_raw_fd(result) };
            if self.stopped_accepting {
                // Accepted by the kernel between the shutdown request and the cancel taking effect:
                // after `shut_down_all`, so it would never hear SHUTTING_DOWN. Closed at once instead.
                self.worker.stats.accepted += 1;
                drop(socket);
            } else {
                self.admit(socket, now);
            }
        }
        if self.stopped_accepting {
            if !self.accept_armed {
                // The cancelled accept is over: closing the listener now refuses what waits in its
                // backlog.
                self.listener = None;
            }
        } else if !self.accept_armed && !self.accept_paused {
            self.arm_accept();
        }
    }

    fn admit(&mut self, socket: OwnedFd, now: Instant) {
        let sock = SockRef::from(&socket);
        let Some(peer) = sock.peer_addr().ok().and_then(|addr| addr.as_socket()) else {
            self.worker.stats.accepted += 1; // Reset before we got to it: counted, as mio does.
            return;
        };
        super::configure_accepted(sock, &self.worker.config, peer);
        if !self.worker.take_place(peer.ip()) {
            self.refuse(socket, peer, now);
            return;
        }
        let token = self.worker.accept(socket.as_raw_fd(), peer, now);
        self.buffers.top_up(&self.worker.pool, self.worker.conns.len());
        if self.ops.len() <= token {
            self.ops.resize_with(token + 1, || ConnOps {
                socket: None,
                receiving: false,
                sending: false,
                zerocopy_unnotified: 0,
                closing: false,
                send_cancelled: false,
                send: SendSlot::new(),
            });
        }
        let ops = &mut self.ops[token];
        (ops.receiving, ops.sending, ops.closing, ops.zerocopy_unnotified) = (false, false, false, 0);
        ops.send_cancelled = false;
        ops.socket = Some(socket);
        self.arm_receive(token);
    }

    fn refuse(&mut self, socket: OwnedFd, peer: SocketAddr, now: Instant) {
        self.worker.stats.accepted += 1;
        let sock = SockRef::from(&socket);
        // A fresh socket's send buffer is empty: the short frame goes out whole or not at all.
        let _ =
            sock.send_with_flags(self.worker.server_full_frame(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        let _ = sock.shutdown(Shutdown::Write);
        tracing::debug!(%peer, "refused: server full");
        if self.refused.len() == MAX_LINGERING_REFUSALS {
            self.refused.pop_front();
        }
        self.refused.push_back((socket, now + self.worker.config.close_linger));
    }

    fn received(&mut self, token: usize, result: i32, flags: u32, more: bool, now: Instant) {
        if !more {
            self.ops[token].receiving = false;
        }
        let closing = self.ops[token].closing;
        if result > 0 {
            let bid = cqueue::buffer_select(flags).expect("a multishot receive always selects a buffer");
            let bytes = self.buffers.take(bid, result as usize);
            if !closing {
                self.worker.receive(token, bytes, now);
                self.worker.caught_up(token);
            }
            if self.pool_is_low() {
                self.worker.stats.read_pauses += 1;
                self.buffers.withheld.push(bid);
            } else {
                self.buffers.provide(bid);
            }
            if !more && !closing {
                self.rearm.push(token);
                self.worker.defer_read(token, now);
            }
        } else if result == -libc::ENOBUFS {
            // The ring ran dry: re-arm once buffers are back (bytes wait in the socket meanwhile, and
            // count as arrived by now).
            if !closing {
                self.rearm.push(token);
                self.worker.defer_read(token, now);
            }
        } else if result != -libc::ECANCELED && !closing {
            // 0: end of stream; below 0: the connection failed.
            self.worker.peer_closed(token, now);
        }
        if closing {
            self.finish_if_idle(token);
        }
    }

    fn sent(&mut self, token: usize, result: i32, zerocopy: bool, now: Instant) {
        self.ops[token].sending = false;
        self.ops[token].send_cancelled = false;
        let closing = self.ops[token].closing;
        if !self.worker.conns.contains(token) {
            return;
        }
        let written = usize::try_from(result).unwrap_or(0);
        self.worker.out.end_send(token, written, zerocopy);
        let Some((conn, queue)) = self.worker.conn_and_queue(token) else { return };
        if closing {
            self.finish_if_idle(token);
        } else if result == -libc::ECANCELED {
            // Cancelled because the queue stalled or was cut off meanwhile (nothing was taken): send
            // again, from its own copies, or its ERROR.
            self.worker.out.mark_dirty(token);
        } else if result < 0 {
            self.worker.peer_closed(token, now);
        } else if queue.has_unwritten() {
            // A short send, or frames queued meanwhile: send the rest with the next flush.
            self.worker.out.mark_dirty(token);
        } else if let Phase::Draining { write_shut: false, .. } = conn.phase {
            shut_write(&self.ops[token]);
            self.worker.mark_write_shut(token, now);
        }
    }

    /// Sends, for every connection whose frames have waited `delay`, what its queue holds.
    fn flush_due(&mut self, now: Instant, delay: Duration) {
        let mut due = std::mem::take(&mut self.scratch);
        self.worker.out.take_due(now, delay, &mut due);
        let threshold = self.worker.config.send_zerocopy_threshold;
        for &token in &due {
            if self.ops.get(token).is_none_or(|ops| ops.closing) {
                continue;
            }
            let Some((conn, queue)) = self.worker.conn_and_queue(token) else { continue };
            if self.ops[token].sending {
                // The last send has not completed by the next flush: the socket is full. The send marks
                // the connection dirty again when it completes. Frames it holds that pin shared chunks
                // (it started before the stall), or that a cut-off dropped, are let go of by
                // cancelling it: a client that does not read would keep them for good.
                self.worker.out.mark_stalled(token);
                let wants_cancel = self.worker.out.queues[token].wants_send_cancelled();
                if wants_cancel && !self.ops[token].send_cancelled {
                    self.ops[token].send_cancelled = true;
                    let send = CancelBuilder::user_data(user_data(Op::Send, token));
                    let entry =
                        opcode::AsyncCancel2::new(send).build().user_data(user_data(Op::Cancel, token));
                    self.push(entry);
                    self.in_flight += 1;
                }
                continue;
            }
            if !queue.has_unwritten() {
                if let Phase::Draining { write_shut: false, .. } = conn.phase {
                    shut_write(&self.ops[token]);
                    self.worker.mark_write_shut(token, now);
                }
                continue;
            }
            let slot = &mut *self.ops[token].send;
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = queue.io_slices(&mut slices);
            for (iovec, slice) in slot.iovecs.iter_mut().zip(&slices[..count]) {
                *iovec = libc::iovec { iov_base: slice.as_ptr().cast_mut().cast(), iov_len: slice.len() };
            }
            queue.begin_send(count);
            slot.header.msg_iov = slot.iovecs.as_mut_ptr();
            slot.header.msg_iovlen = count as _;
            let fd = Fd(tcp_fd(conn));
            let flags = libc::MSG_NOSIGNAL as u32;
            let entry = if threshold > 0 && queue.queued_bytes() >= threshold {
                opcode::SendMsgZc::new(fd, &slot.header).flags(flags).build()
            } else {
                opcode::SendMsg::new(fd, &slot.header).flags(flags).build()
            };
            let entry = entry.user_data(user_data(Op::Send, token));
            self.ops[token].sending = true;
            self.worker.stats.writes += 1;
            self.push(entry);
            self.in_flight += 1;
        }
        self.scratch = due;
    }

    /// Drops the connections the worker closed: at once when no operation of theirs is in flight,
    /// else after cancelling them and reaping their last completions.
    fn close_finished(&mut self) {
        let mut closed = std::mem::take(&mut self.scratch);
        self.worker.take_closed(&mut closed);
        for &token in &closed {
            if !self.worker.conns.contains(token) || self.ops[token].closing {
                continue;
            }
            let ops = &mut self.ops[token];
            ops.closing = true;
            if ops.receiving || ops.sending || ops.zerocopy_unnotified > 0 {
                // Shutting the socket down ends its receive (end of stream) and a send blocked on a
                // peer that does not read (EPIPE), even one the cancel below cannot reach.
                if let Some(socket) = &ops.socket {
                    let _ = SockRef::from(socket).shutdown(Shutdown::Both);
                }
                let fd = tcp_fd(&self.worker.conns[token]);
                let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
                    .build()
                    .user_data(user_data(Op::Cancel, token));
                self.push(entry);
                self.in_flight += 1;
                // Submitted now, while `fd` still names this socket: a multishot accept may reuse
                // the number as soon as it is closed.
                if let Err(error) = self.ring.submit() {
                    tracing::warn!(%error, "io_uring submit of a cancel failed");
                }
                let ops = &mut self.ops[token];
                if ops.zerocopy_unnotified > 0
                    && let Some(socket) = ops.socket.take()
                {
                    // Zero-copy notifications come only once the kernel frees the pages, which an
                    // unread send buffer never does: a reset purges it.
                    let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
                }
            } else {
                self.finish_if_idle(token);
            }
        }
        self.scratch = closed;
    }

    /// Drops closing connection `token` once neither its receive nor its send is in flight.
    fn finish_if_idle(&mut self, token: usize) {
        let ops = &self.ops[token];
        let idle = !ops.receiving && !ops.sending && ops.zerocopy_unnotified == 0;
        if ops.closing && idle && self.worker.conns.contains(token) {
            self.ops[token].socket = None;
            let conn = self.worker.remove(token);
            self.ops[token].closing = false;
            tracing::trace!(peer = %conn.peer, "closed");
        }
    }

    fn stop_accepting(&mut self) {
        self.stopped_accepting = true;
        if self.accept_armed {
            let entry = opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data(Op::Accept, 0)))
                .build()
                .user_data(user_data(Op::Cancel, 0));
            self.push(entry);
            self.in_flight += 1;
        } else {
            self.listener = None;
        }
    }
}

/// The descriptor of a connection's socket. This loop serves TCP only (`ServerConfig::udp_addr` is
/// refused with io_uring), so every connection has one; -1 would only make its operations fail.
fn tcp_fd<X>(conn: &crate::worker::Conn<RawFd, X>) -> RawFd {
    conn.tcp().copied().unwrap_or(-1)
}

/// Shuts the write side of a connection's socket (after its last frame went out).
fn shut_write(ops: &ConnOps) {
    if let Some(socket) = &ops.socket {
        let _ = SockRef::from(socket).shutdown(Shutdown::Write);
    }
}

impl<G: Game> Drop for UringLoop<G> {
    /// Cancels whatever is still in flight and waits (boundedly) for the kernel to let go of every
    /// buffer before the pool chunks and the buffer ring go back.
    fn drop(&mut self) {
        let entry =
            opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(user_data(Op::Cancel, 0));
        self.push(entry);
        self.in_flight += 1;
        let deadline = Instant::now() + CANCEL_WAIT;
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.submit_and_wait(Duration::from_millis(10)).is_err() {
                break;
            }
            for cqe in self.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.in_flight -= 1;
                }
            }
        }
        if self.in_flight > 0 {
            tracing::warn!(in_flight = self.in_flight, "io_uring operations still in flight at exit");
        }
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
}
