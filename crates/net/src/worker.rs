//! What one event loop owns, whatever the backend: connections, their sessions and decoders, the
//! world, the send queues, and the rules for closing.

use std::net::SocketAddr;
use std::time::Instant;

use gamewire_pool::Pool;
use gamewire_proto::{Direction, ErrorCode, FrameDecoder, Packet, encode_frame_to_vec};
use gamewire_world::{PlayerId, Session, Verdict, World, error_message};
use slab::Slab;

use crate::ServerConfig;
use crate::outbound::Outbound;
use crate::send_queue::SendQueue;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving: frames are read, decoded and handed to the world.
    Open,
    /// The session is over; what is queued (ending with the fatal ERROR) is being flushed, for at most
    /// the write deadline. Once it is, the write side is shut and the peer's remaining bytes are read
    /// and dropped until it closes or the linger passes: closing with unread bytes would send a RST
    /// that can destroy the ERROR before the client reads it.
    Draining {
        /// When the connection is dropped whatever happens: the flush deadline, then the linger.
        deadline: Instant,
        /// Whether everything was flushed and the write side shut.
        write_shut: bool,
    },
}

/// One client connection. `S` is the backend's socket.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(crate) socket: S,
    pub(crate) peer: SocketAddr,
    pub(crate) phase: Phase,
    /// Whether the backend currently asks for write readiness.
    pub(crate) wants_writable: bool,
    decoder: FrameDecoder,
    session: Session,
    /// The player whose frames are routed to this connection, once WELCOMEd.
    player: Option<PlayerId>,
    /// Since when the decoder holds an unfinished frame.
    partial_since: Option<Instant>,
}

/// Counters reported when the loop stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Connections accepted (including those refused as SERVER_FULL).
    pub accepted: u64,
    /// Complete frames received from clients.
    pub frames_in: u64,
    /// Frames queued to clients, counted once per recipient.
    pub frames_out: u64,
    /// Vectored writes (or sends) issued to clients: `frames_out / writes` is how many frames share a
    /// syscall.
    pub writes: u64,
    /// Frames encoded on the heap because the pool was exhausted.
    pub heap_fallbacks: u64,
    /// Times reading stopped because the pool ran low.
    pub read_pauses: u64,
    /// Clients cut off as slow consumers because the pool stayed exhausted.
    pub pressure_cuts: u64,
}

/// The backend-independent state of one event loop.
#[derive(Debug)]
pub(crate) struct Worker<S> {
    pub(crate) conns: Slab<Conn<S>>,
    pub(crate) out: Outbound,
    world: World,
    pub(crate) config: ServerConfig,
    pub(crate) pool: Pool,
    /// Tokens the backend must deregister and drop.
    closed: Vec<usize>,
    /// Whether the last sweep ran with reads paused for pool pressure.
    reads_were_paused: bool,
    /// Scratch list of the sweep: (token, the ERROR to fail it with, or `None` to just drop it).
    expired: Vec<(usize, Option<ErrorCode>)>,
    server_full_frame: Vec<u8>,
    pub(crate) stats: RunStats,
}

impl<S> Worker<S> {
    pub(crate) fn new(config: ServerConfig, world: World, pool: Pool, now: Instant) -> Self {
        let server_full_frame = encode_frame_to_vec(
            0,
            &Packet::Error {
                code: ErrorCode::ServerFull.code(),
                message: error_message(ErrorCode::ServerFull),
            },
        );
        Worker {
            conns: Slab::with_capacity(config.max_connections.min(1 << 16)),
            out: Outbound::new(pool.clone(), config.send_soft_limit, config.send_hard_limit, now),
            world,
            config,
            pool,
            closed: Vec::new(),
            expired: Vec::new(),
            reads_were_paused: false,
            server_full_frame,
            stats: RunStats::default(),
        }
    }

    /// Bytes of the ERROR(SERVER_FULL) frame written to a connection refused at accept.
    pub(crate) fn server_full_frame(&self) -> &[u8] {
        &self.server_full_frame
    }

    pub(crate) fn is_full(&self) -> bool {
        self.conns.len() >= self.config.max_connections
    }

    /// Adds an accepted connection and returns its token.
    pub(crate) fn accept(&mut self, socket: S, peer: SocketAddr, now: Instant) -> usize {
        self.stats.accepted += 1;
        let token = self.conns.insert(Conn {
            socket,
            peer,
            phase: Phase::Open,
            wants_writable: false,
            decoder: FrameDecoder::new(Direction::ToServer, self.config.max_payload),
            session: Session::new(now),
            player: None,
            partial_since: None,
        });
        self.out.open(token);
        token
    }

    /// Handles bytes read from `token`: decodes every complete frame and hands it to the world.
    pub(crate) fn receive(&mut self, token: usize, bytes: &[u8], now: Instant) {
        let Worker { conns, out, world, stats, .. } = self;
        let conn = &mut conns[token];
        if conn.phase != Phase::Open {
            return; // Draining: the peer's bytes are read only to be dropped.
        }
        out.sender = token;
        out.now = now;
        let mut input = bytes;
        let mut completed = 0;
        let verdict = loop {
            match conn.decoder.next_frame(&mut input) {
                Ok(Some(frame)) => {
                    stats.frames_in += 1;
                    completed += 1;
                    if world.handle(now, &mut conn.session, frame, out) == Verdict::Close {
                        break Verdict::Close;
                    }
                    // Route frames addressed to the player by id from its WELCOME on: the next frame in
                    // this same read (a MOVE right behind the HELLO) already needs it.
                    if conn.player.is_none()
                        && let Some(id) = conn.session.player()
                    {
                        conn.player = Some(id);
                        conn.decoder.set_player_id(id.get());
                        out.bind(id, token);
                    }
                }
                Ok(None) => break Verdict::Continue,
                Err(error) => break world.fail(&mut conn.session, error.error_code(), out),
            }
        };
        // The deadline runs from the first byte of the frame that is unfinished now: a frame that
        // began in this read (after others completed) starts its own clock.
        conn.partial_since = match (conn.decoder.is_mid_frame(), completed) {
            (false, _) => None,
            (true, 0) => conn.partial_since.or(Some(now)),
            (true, _) => Some(now),
        };
        if verdict == Verdict::Close {
            self.begin_drain(token, now);
        }
    }

    /// Ends the session of `token` with the fatal ERROR `code` (the world removes its player).
    pub(crate) fn fail(&mut self, token: usize, code: ErrorCode, now: Instant) {
        let Worker { conns, out, world, .. } = self;
        let conn = &mut conns[token];
        if conn.phase != Phase::Open {
            return;
        }
        out.sender = token;
        out.now = now;
        let _ = world.fail(&mut conn.session, code, out);
        self.begin_drain(token, now);
    }

    fn begin_drain(&mut self, token: usize, now: Instant) {
        let conn = &mut self.conns[token];
        if let Some(id) = conn.player.take() {
            self.out.unbind(id);
        }
        conn.phase = Phase::Draining { deadline: now + self.config.write_deadline, write_shut: false };
        self.out.queues[token].seal();
        // Flush (and then shut the write side) even if nothing new was queued.
        self.out.mark_dirty(token);
    }

    /// The peer closed, reset, or the socket failed: the player leaves and the connection goes.
    pub(crate) fn peer_closed(&mut self, token: usize, now: Instant) {
        let Worker { conns, out, world, .. } = self;
        let Some(conn) = conns.get_mut(token) else { return };
        if let Some(id) = conn.player.take() {
            out.unbind(id);
        }
        out.sender = token;
        out.now = now;
        world.close(&mut conn.session, out);
        out.queues[token].seal();
        if !self.closed.contains(&token) {
            self.closed.push(token);
        }
    }

    /// Cuts off every client whose queue went over the hard limit. Cutting one off sends LEAVE to its
    /// viewers, which can push another over, so this runs until none is left.
    pub(crate) fn settle(&mut self, now: Instant) {
        while let Some(token) = self.out.over_hard.pop() {
            if self.conns.contains(token) && self.conns[token].phase == Phase::Open {
                self.out.queues[token].discard_unstarted();
                self.fail(token, ErrorCode::SlowConsumer, now);
            }
        }
    }

    /// Enforces every deadline: HELLO, idle, partial frame, write (soft limit), flush and linger.
    /// O(connections); called a few times a second.
    ///
    /// While `reads_paused` (the pool is exhausted), the client-side deadlines (HELLO, idle, partial
    /// frame) are not enforced: the bytes that would meet them may be waiting in a socket the server
    /// chose not to read. When reading resumes, unfinished frames get a fresh partial-frame deadline.
    pub(crate) fn sweep(&mut self, now: Instant, reads_paused: bool) {
        if self.reads_were_paused && !reads_paused {
            for (_, conn) in &mut self.conns {
                if conn.partial_since.is_some() {
                    conn.partial_since = Some(now);
                }
            }
        }
        self.reads_were_paused = reads_paused;
        let config = &self.config;
        let (partial_timeout, write_deadline) = (config.partial_frame_timeout, config.write_deadline);
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        for (token, conn) in &self.conns {
            let code = match conn.phase {
                Phase::Draining { deadline, .. } => {
                    if now >= deadline {
                        expired.push((token, None));
                    }
                    continue;
                }
                Phase::Open => {
                    let partial_expired = conn
                        .partial_since
                        .is_some_and(|since| now.saturating_duration_since(since) >= partial_timeout);
                    let session_expired = now >= conn.session.deadline(self.world.config());
                    if !reads_paused && (session_expired || partial_expired) {
                        ErrorCode::Timeout
                    } else if self.out.queues[token]
                        .over_soft_since()
                        .is_some_and(|since| now.saturating_duration_since(since) >= write_deadline)
                    {
                        ErrorCode::SlowConsumer
                    } else {
                        continue;
                    }
                }
            };
            expired.push((token, Some(code)));
        }
        for &(token, code) in &expired {
            match code {
                Some(code) => {
                    if code == ErrorCode::SlowConsumer {
                        self.out.queues[token].discard_unstarted();
                    }
                    self.fail(token, code, now);
                }
                None => self.peer_closed(token, now),
            }
        }
        self.expired = expired;
        self.settle(now);
    }

    /// The buffer pool is exhausted and reading is paused: if nothing gives, clients that do not read
    /// would hold every chunk and stall everyone else. Cuts off the open connection with the largest
    /// backlog as a slow consumer (its unsent frames are dropped, returning their chunks). Called once
    /// per sweep while the pressure lasts, so it removes one client at a time, the worst first.
    pub(crate) fn relieve_pool_pressure(&mut self, now: Instant) {
        let worst = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.phase == Phase::Open)
            .map(|(token, _)| (self.out.queues[token].queued_bytes(), token))
            .max();
        if let Some((backlog, token)) = worst
            && backlog > 0
        {
            tracing::warn!(peer = %self.conns[token].peer, backlog, "buffer pool exhausted: cutting the largest backlog");
            self.stats.pressure_cuts += 1;
            self.out.queues[token].discard_unstarted();
            self.fail(token, ErrorCode::SlowConsumer, now);
        }
    }

    /// Begins a graceful stop: every open session gets ERROR(SHUTTING_DOWN) after what is queued.
    pub(crate) fn shut_down_all(&mut self, now: Instant) {
        let tokens: Vec<usize> = self.conns.iter().map(|(token, _)| token).collect();
        for token in tokens {
            self.fail(token, ErrorCode::ShuttingDown, now);
        }
    }

    /// Tokens to deregister and drop, moved into `out`.
    pub(crate) fn take_closed(&mut self, out: &mut Vec<usize>) {
        out.clear();
        out.append(&mut self.closed);
    }

    /// Removes a closed connection and returns it for the backend to deregister.
    pub(crate) fn remove(&mut self, token: usize) -> Conn<S> {
        self.out.queues[token] = SendQueue::default();
        self.conns.remove(token)
    }

    /// The connection and its send queue, for the backend's flush.
    pub(crate) fn conn_and_queue(&mut self, token: usize) -> Option<(&mut Conn<S>, &mut SendQueue)> {
        let conn = self.conns.get_mut(token)?;
        Some((conn, &mut self.out.queues[token]))
    }

    /// Records that the write side of a draining connection was shut after its last byte went out.
    pub(crate) fn mark_write_shut(&mut self, token: usize, now: Instant) {
        if let Phase::Draining { deadline, write_shut } = &mut self.conns[token].phase {
            *write_shut = true;
            *deadline = now + self.config.close_linger;
        }
    }

    pub(crate) fn finish_stats(&mut self) -> RunStats {
        self.stats.frames_out = self.out.deliveries;
        self.stats.heap_fallbacks = self.out.writer.heap_fallbacks;
        self.stats
    }
}
