//! Readiness backend on mio (epoll on Linux, kqueue on BSD/macOS), edge-triggered.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamewire_pool::ChunkMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::SockRef;

use super::{READS_PER_TURN, SWEEP_INTERVAL};
use crate::control::ShutdownState;
use gamewire_world::Game;

use crate::worker::{Phase, RunStats, ShutdownStep, Worker, pool_is_low, pool_reserve};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
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
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
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
            let mut timeout = if self.pending_reads.is_empty() || self.pool_is_low() {
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
            let conn = &mut self.worker.conns[token];
            if let Err(error) =
                self.poll.registry().register(&mut conn.socket, Token(token), Interest::READABLE)
            {
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
            match conn.socket.read(self.receive_chunk.spare_mut()) {
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
            let Some((conn, queue)) = self.worker.conn_and_queue(token) else { continue };
            let socket = &conn.socket;
            let result = queue.flush_with(soft_limit, |slices| {
                writes += 1;
                (&*socket).write_vectored(slices)
            });
            match result {
                Ok(true) => {
                    if conn.wants_writable {
                        conn.wants_writable = false;
                        let _ = self.poll.registry().reregister(
                            &mut conn.socket,
                            Token(token),
                            Interest::READABLE,
                        );
                    }
                    if let Phase::Draining { write_shut: false, .. } = conn.phase {
                        let _ = conn.socket.shutdown(Shutdown::Write);
                        self.worker.mark_write_shut(token, now);
                    }
                }
                Ok(false) => {
                    if !conn.wants_writable {
                        conn.wants_writable = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        let _ = self.poll.registry().reregister(&mut conn.socket, Token(token), interest);
                    }
                    self.worker.out.mark_stalled(token);
                }
                Err(_) => self.worker.peer_closed(token, now),
            }
        }
        self.worker.stats.writes += writes;
        self.scratch = dirty;
    }

    fn drop_closed(&mut self) {
        let mut closed = std::mem::take(&mut self.scratch);
        self.worker.take_closed(&mut closed);
        for &token in &closed {
            if self.worker.conns.contains(token) {
                let mut conn = self.worker.remove(token);
                let _ = self.poll.registry().deregister(&mut conn.socket);
                tracing::trace!(peer = %conn.peer, "closed");
            }
        }
        self.scratch = closed;
    }
}
