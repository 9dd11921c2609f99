//! Readiness backend on mio (epoll on Linux, kqueue on BSD/macOS), edge-triggered.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamewire_pool::{ChunkMut, PoolBytes};
use gamewire_udp::datagram::MAX_DATAGRAM;
use gamewire_udp::listener::Transmit;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::SockRef;

use super::udp_batch::{BatchedUdpSocket, DEFAULT_BATCH, RecvBatch, SendBatch};
use super::{READS_PER_TURN, SWEEP_INTERVAL};
use crate::control::ShutdownState;
use gamewire_world::Game;

use crate::worker::{Phase, RunStats, ShutdownStep, Worker, pool_is_low, pool_reserve};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// The worker's UDP socket: its sessions take connection tokens, but not its readiness.
const UDP: Token = Token(usize::MAX - 3);
/// Bytes of each receive slot: a whole datagram of ours (at most 1200 bytes) with room to spare, so
/// that a larger one shows as truncated (and is dropped) rather than cut to a plausible length.
const UDP_SLOT: usize = 2048;

/// The UDP side of the loop: the socket, and the buffers its batches use, allocated once.
struct UdpIo {
    socket: BatchedUdpSocket,
    receive: RecvBatch,
    /// One slot per message of a `recvmmsg`. Datagrams are handed to the worker before the next
    /// call, and none is kept: unreliable frames are handled or dropped at once, and the listener
    /// copies the reliable ones it must hold.
    arena: Box<[u8]>,
    /// Datagrams the listener filled, for one `sendmmsg`.
    transmits: Vec<Transmit<PoolBytes>>,
    send: SendBatch,
    /// `transmits[unsent]` were filled but the kernel refused them (socket buffer full): they go
    /// first once the socket is writable.
    unsent: std::ops::Range<usize>,
    /// Waiting for writability (a send hit `WouldBlock`).
    blocked: bool,
    /// Datagrams may wait unread: the receive budget ran out or the pool ran low. Edge-triggered
    /// readiness will not report them again.
    pending: bool,
}

impl UdpIo {
    fn new(socket: BatchedUdpSocket) -> UdpIo {
        UdpIo {
            socket,
            receive: RecvBatch::new(DEFAULT_BATCH),
            arena: vec![0; DEFAULT_BATCH * UDP_SLOT].into_boxed_slice(),
            transmits: (0..DEFAULT_BATCH).map(|_| Transmit::new()).collect(),
            // Each datagram is at most 171 pieces (see `Transmit`).
            send: SendBatch::new(DEFAULT_BATCH, DEFAULT_BATCH * 172),
            unsent: 0..0,
            blocked: false,
            pending: false,
        }
    }
}
/// Token of the waker, for [`crate::Server`] to create it.
pub(crate) const WAKER_TOKEN: Token = WAKER;

/// The event loop of one worker on mio.
pub(crate) struct EventLoop<G: Game> {
    poll: Poll,
    listener: Option<TcpListener>,
    worker: Worker<TcpStream, G>,
    shutdown: Arc<ShutdownState>,
    /// The chunk every read goes into; its bytes are decoded in place and it is reused.
    receive_chunk: ChunkMut,
    /// Connections with bytes possibly left unread: the read budget ran out or the pool ran low.
    /// Edge-triggered readiness will not report them again, so the loop must come back to them.
    pending_reads: Vec<usize>,
    /// The pending list being worked through this turn (kept apart, and for its capacity).
    retrying_reads: Vec<usize>,
    /// `is_pending_read[token]`: the token is in `pending_reads`, so repeated events while reading is
    /// paused do not queue it again and again.
    is_pending_read: Vec<bool>,
    /// Scratch lists, kept for their capacity.
    scratch: Vec<usize>,
    accept_paused: bool,
    /// Connections refused with SERVER_FULL, kept (unread, write side shut) for the close linger so
    /// that closing them does not reset the ERROR away before the client reads it. Bounded.
    refused: VecDeque<(TcpStream, Instant)>,
    /// The UDP socket and its buffers, when the server serves UDP.
    udp: Option<UdpIo>,
}

/// Most refused connections held for their linger at once; beyond it the oldest is closed early.
const MAX_LINGERING_REFUSALS: usize = 1024;

impl<G: Game> std::fmt::Debug for EventLoop<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").field("connections", &self.worker.conns.len()).finish_non_exhaustive()
    }
}

impl<G: Game> EventLoop<G> {
    pub(crate) fn new(
        poll: Poll,
        mut listener: TcpListener,
        worker: Worker<TcpStream, G>,
        shutdown: Arc<ShutdownState>,
        udp: Option<BatchedUdpSocket>,
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let udp = match udp {
            Some(mut socket) => {
                poll.registry().register(socket.source(), UDP, Interest::READABLE)?;
                Some(UdpIo::new(socket))
            }
            None => None,
        };
        let receive_chunk = worker
            .pool
            .try_alloc()
            .ok_or_else(|| io::Error::other("buffer pool has no chunk for receiving"))?;
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            worker,
            shutdown,
            receive_chunk,
            pending_reads: Vec::new(),
            retrying_reads: Vec::new(),
            is_pending_read: Vec::new(),
            scratch: Vec::new(),
            accept_paused: false,
            refused: VecDeque::new(),
            udp,
        })
    }

    pub(crate) fn run(mut self) -> io::Result<RunStats> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        let mut drain_deadline: Option<Instant> = None;
        let flush_interval = self.worker.config.flush_interval;
        loop {
            let now = Instant::now();
            let wake_at = self.worker.wake_at(next_sweep);
            let udp_pending = self.udp.as_ref().is_some_and(|udp| udp.pending);
            let mut timeout = if (self.pending_reads.is_empty() && !udp_pending) || self.pool_is_low() {
                wake_at.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if !timeout.is_zero() && !self.worker.may_wait() {
                timeout = Duration::ZERO; // The world thread sent something meanwhile.
            }
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.worker.woke();
            if let Err(error) = polled {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Instant::now();
            self.worker.out.now = now;
            self.worker.apply_deliveries(now);
            self.worker.run_game(now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    UDP => {
                        if event.is_writable()
                            && let Some(udp) = &mut self.udp
                            && udp.blocked
                        {
                            udp.blocked = false;
                            let _ =
                                self.poll.registry().reregister(udp.socket.source(), UDP, Interest::READABLE);
                        }
                        if event.is_readable() {
                            self.receive_udp(now);
                        }
                    }
                    Token(token) => {
                        // A connection already waiting for its turn is read in that turn (until end of
                        // stream), not ahead of the others: a flooder whose bytes keep coming must
                        // not take, through its events, every chunk a cut-off gives back.
                        let waiting = self.is_pending_read.get(token).is_some_and(|&pending| pending);
                        if (event.is_readable() || event.is_read_closed() || event.is_error()) && !waiting {
                            // After the peer's FIN no new edge will come: read until end of stream.
                            let until_eof = event.is_read_closed() || event.is_error();
                            self.read(token, now, until_eof);
                        }
                        if event.is_writable() && self.worker.conns.contains(token) {
                            self.worker.out.mark_dirty(token);
                        }
                    }
                }
            }
            if !self.pending_reads.is_empty() && !self.pool_is_low() {
                // Swap lists: reads that run out of budget again queue themselves for the next turn.
                std::mem::swap(&mut self.pending_reads, &mut self.retrying_reads);
                let mut retrying = std::mem::take(&mut self.retrying_reads);
                for (index, &token) in retrying.iter().enumerate() {
                    if self.pool_is_low() {
                        // Those not reached yet go first next time, ahead of those just read: a
                        // connection with much to read must not starve the others (a flood ahead
                        // of a newcomer's HELLO, each turn exhausting the pool again).
                        let served = std::mem::take(&mut self.pending_reads);
                        self.pending_reads.extend_from_slice(&retrying[index..]);
                        self.pending_reads.extend(served);
                        break;
                    }
                    self.is_pending_read[token] = false;
                    if self.worker.conns.contains(token) {
                        self.read(token, now, true);
                    }
                }
                retrying.clear();
                self.retrying_reads = retrying;
            }
            if self.udp.as_ref().is_some_and(|udp| udp.pending) {
                self.receive_udp(now);
            }
            self.worker.udp_timeout(now);
            if now >= next_sweep {
                self.worker.sweep(now);
                // Memory pressure proper (not a backlog towards the world thread, which resolves
                // itself): cut the largest backlog.
                if self.worker.under_memory_pressure() {
                    self.worker.relieve_pool_pressure(now);
                }
                while self.refused.front().is_some_and(|(_, until)| *until <= now) {
                    self.refused.pop_front();
                }
                next_sweep = now + SWEEP_INTERVAL;
                if self.accept_paused {
                    self.accept_paused = false;
                    self.accept_all(now);
                }
            }
            match self.worker.shutdown_step(self.shutdown.requests(), now, &mut drain_deadline) {
                ShutdownStep::Continue => {}
                ShutdownStep::StopAccepting => {
                    if let Some(mut listener) = self.listener.take() {
                        let _ = self.poll.registry().deregister(&mut listener);
                    }
                }
                ShutdownStep::Return => break,
            }
            self.worker.settle(now);
            // With a flush interval, a client's frames of several loop turns leave in one write: fewer
            // syscalls per frame, at the cost of up to one interval of added latency. Draining on
            // shutdown flushes everything at once.
            let delay = if drain_deadline.is_some() { Duration::ZERO } else { flush_interval };
            self.flush_due(now, delay);
            self.drop_closed();
            self.worker.end_turn();
            if self.worker.drained(now, drain_deadline) {
                break;
            }
        }
        Ok(self.worker.finish_stats())
    }

    /// Whether reading must pause: the pool runs low, or (several workers) the way to the world is
    /// backed up.
    fn pool_is_low(&self) -> bool {
        pool_is_low(&self.worker.pool) || self.worker.reads_blocked()
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else { return };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // EMFILE/ENFILE/ENOBUFS: the pending connection stays in the backlog; try again at
                    // the next sweep instead of spinning on a listener that stays readable.
                    tracing::warn!(%error, "accept failed; pausing accept until the next sweep");
                    self.accept_paused = true;
                    return;
                }
            };
            super::configure_accepted(SockRef::from(&stream), &self.worker.config, peer);
            if !self.worker.take_place(peer.ip()) {
                self.worker.stats.accepted += 1;
                // A fresh socket's send buffer is empty: the short frame goes out whole or not at all.
                let _ = stream.write(self.worker.server_full_frame());
                let _ = stream.shutdown(Shutdown::Write);
                tracing::debug!(%peer, "refused: server full");
                if self.refused.len() == MAX_LINGERING_REFUSALS {
                    self.refused.pop_front();
                }
                self.refused.push_back((stream, now + self.worker.config.close_linger));
                continue;
            }
            let token = self.worker.accept(stream, peer, now);
            let Some(socket) = self.worker.conns[token].tcp_mut() else { continue };
            if let Err(error) = self.poll.registry().register(socket, Token(token), Interest::READABLE) {
                tracing::warn!(%error, %peer, "register failed");
                self.worker.peer_closed(token, now);
            }
        }
    }

    /// Reads `token` until the kernel has nothing more, the turn's budget is spent, or the pool is low.
    ///
    /// A read that returns less than the buffer emptied the socket's receive queue, so the loop stops
    /// there instead of paying one more `read` only to see `WouldBlock`: with edge-triggered epoll any
    /// byte arriving later raises a new edge (tokio clears readiness on short reads for the same reason).
    /// `until_eof` turns this off when the peer has already closed, since no edge will follow its FIN.
    fn read(&mut self, token: usize, now: Instant, until_eof: bool) {
        let reserve = pool_reserve(&self.worker.pool);
        let blocked = self.worker.reads_blocked();
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.worker.conns.get_mut(token) else { return };
            if conn.phase == Phase::Open && (blocked || self.worker.pool.free_chunks() < reserve) {
                self.worker.stats.read_pauses += 1;
                self.queue_pending_read(token, now);
                return;
            }
            self.receive_chunk.clear();
            let Some(socket) = conn.tcp_mut() else { return };
            match socket.read(self.receive_chunk.spare_mut()) {
                Ok(0) => {
                    self.worker.peer_closed(token, now);
                    return;
                }
                Ok(n) => {
                    let drained = n < self.receive_chunk.spare_mut().len();
                    self.receive_chunk.advance(n);
                    self.worker.receive(token, self.receive_chunk.filled(), now);
                    if drained && !until_eof {
                        self.worker.caught_up(token);
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.worker.caught_up(token);
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.worker.peer_closed(token, now);
                    return;
                }
            }
        }
        self.queue_pending_read(token, now);
    }

    /// Comes back to `token` on a later turn (each token at most once in the list); until then, what
    /// its socket holds counts as arrived by `now`.
    fn queue_pending_read(&mut self, token: usize, now: Instant) {
        self.worker.defer_read(token, now);
        if self.is_pending_read.len() <= token {
            self.is_pending_read.resize(token + 1, false);
        }
        if !self.is_pending_read[token] {
            self.is_pending_read[token] = true;
            self.pending_reads.push(token);
        }
    }

    /// Flushes every connection whose frames have waited `delay` (all dirty ones when it is zero).
    fn flush_due(&mut self, now: Instant, delay: Duration) {
        let mut dirty = std::mem::take(&mut self.scratch);
        self.worker.out.take_due(now, delay, &mut dirty);
        let soft_limit = self.worker.out.soft_limit();
        let mut writes = 0;
        for &token in &dirty {
            if self.worker.out.is_udp(token) {
                // Into the listener; its datagrams leave together below.
                self.worker.flush_udp(token, now);
                continue;
            }
            let Some((conn, queue)) = self.worker.conn_and_queue(token) else { continue };
            let Some(socket) = conn.tcp() else { continue };
            let result = queue.flush_with(soft_limit, |slices| {
                writes += 1;
                (&*socket).write_vectored(slices)
            });
            match result {
                Ok(true) => {
                    let draining = matches!(conn.phase, Phase::Draining { write_shut: false, .. });
                    let wants_writable = std::mem::replace(&mut conn.wants_writable, false);
                    let Some(socket) = conn.tcp_mut() else { continue };
                    if wants_writable {
                        let _ = self.poll.registry().reregister(socket, Token(token), Interest::READABLE);
                    }
                    if draining {
                        let _ = socket.shutdown(Shutdown::Write);
                        self.worker.mark_write_shut(token, now);
                    }
                }
                Ok(false) => {
                    if !conn.wants_writable {
                        conn.wants_writable = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if let Some(socket) = conn.tcp_mut() {
                            let _ = self.poll.registry().reregister(socket, Token(token), interest);
                        }
                    }
                    self.worker.out.mark_stalled(token);
                }
                Err(_) => self.worker.peer_closed(token, now),
            }
        }
        self.worker.stats.writes += writes;
        self.scratch = dirty;
        if self.udp.is_some() {
            self.transmit_udp(now);
            // Draining sessions end after their last frames left: the listener sends their ERROR
            // and DISCONNECT.
            self.worker.finish_udp_ends(now);
            self.transmit_udp(now);
        }
    }

    /// Receives datagrams until the socket is empty, the turn's budget is spent or the pool runs
    /// low (then `pending` brings the loop back), handing each to the worker before the next batch.
    fn receive_udp(&mut self, now: Instant) {
        let EventLoop { udp, worker, .. } = self;
        let Some(udp) = udp else { return };
        udp.pending = false;
        for _ in 0..READS_PER_TURN {
            if pool_is_low(&worker.pool) || worker.reads_blocked() {
                worker.stats.read_pauses += 1;
                udp.pending = true;
                return;
            }
            let slots = udp.arena.chunks_mut(UDP_SLOT);
            let received = match udp.socket.recv_batch(&mut udp.receive, slots) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    // ICMP errors reported on the socket (a client's port unreachable) and the
                    // like: they concern one datagram, not the socket.
                    tracing::trace!(%error, "UDP receive error");
                    continue;
                }
            };
            for (index, datagram) in udp.receive.datagrams().iter().enumerate() {
                let slot = &udp.arena[index * UDP_SLOT..(index + 1) * UDP_SLOT];
                // GRO is off: one datagram per message; a truncated one yields nothing.
                for bytes in datagram.segments(slot) {
                    if bytes.len() <= MAX_DATAGRAM {
                        worker.receive_datagram(datagram.source, bytes, now);
                    }
                }
            }
            if received < udp.receive.capacity() {
                return; // Drained: a later datagram raises a new edge.
            }
        }
        udp.pending = true;
    }

    /// Sends what the listener has to send, up to 64 datagrams per `sendmmsg`, until it has no more
    /// or the socket buffer is full (then the loop waits for writability and the rest waits).
    fn transmit_udp(&mut self, now: Instant) {
        let EventLoop { udp, worker, poll, .. } = self;
        let (Some(io), Some(side)) = (udp, worker.udp.as_mut()) else { return };
        if io.blocked {
            return;
        }
        loop {
            if io.unsent.is_empty() {
                let filled = side.listener.poll_transmits(now, &mut io.transmits);
                if filled == 0 {
                    return;
                }
                io.unsent = 0..filled;
            }
            let start = io.unsent.start;
            let mut outgoing = io.send.begin();
            let mut all_pushed = true;
            for transmit in &io.transmits[io.unsent.clone()] {
                if let Err(error) = outgoing.push(transmit.destination(), transmit.segments()) {
                    // Never for what the listener fills (at most 1200 bytes, 171 pieces): dropped.
                    tracing::debug!(%error, "UDP datagram not sent");
                    all_pushed = false;
                }
            }
            let filled_all = io.unsent.end == io.transmits.len();
            loop {
                worker.stats.writes += 1;
                match io.socket.send_batch(&mut outgoing) {
                    Ok(_) if outgoing.is_done() => break,
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        // Keep the rest for when the socket is writable (with a dropped one in the
                        // batch, the indices no longer match: the rest is lost, as on a network).
                        let consumed = outgoing.consumed();
                        io.unsent = if all_pushed { start + consumed..io.unsent.end } else { 0..0 };
                        io.blocked = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        let _ = poll.registry().reregister(io.socket.source(), UDP, interest);
                        return;
                    }
                    // The kernel refused one datagram (dropped and counted as consumed): go on.
                    Err(_) if outgoing.is_done() => break,
                    Err(_) => {}
                }
            }
            io.unsent = 0..0;
            if !filled_all {
                return; // The listener had fewer than a batch: nothing more now.
            }
        }
    }

    fn drop_closed(&mut self) {
        let mut closed = std::mem::take(&mut self.scratch);
        self.worker.take_closed(&mut closed);
        for &token in &closed {
            if self.worker.conns.contains(token) {
                let mut conn = self.worker.remove(token);
                if let Some(socket) = conn.tcp_mut() {
                    let _ = self.poll.registry().deregister(socket);
                }
                tracing::trace!(peer = %conn.peer, "closed");
            }
        }
        self.scratch = closed;
    }
}
