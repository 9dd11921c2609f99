//! What one event loop owns, whatever the backend: connections, their sessions and decoders, the
//! world, the send queues, and the rules for closing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gamewire_pool::{Pool, PoolBytes};
use gamewire_proto::{Direction, ErrorCode, FrameDecoder, Packet, PacketSet, RawFrame, encode_frame_to_vec};
use gamewire_udp::listener::{Event, Inbox, Listener, ListenerConfig, SendError, SessionId};
use gamewire_world::{Game, PlayerId, Verdict, error_message};
use slab::Slab;

use crate::ServerConfig;
use crate::game::{GameInbox, handle_frame};
use crate::outbound::{NO_SENDER, Outbound};
use crate::send_queue::SendQueue;
use crate::world_thread::{Command, ConnId, Delivery, RemoteWorld};

/// The connection places of a whole server, shared by its workers: `max_connections` in all and
/// `max_connections_per_ip` per peer address.
///
/// The total is one atomic. The per-IP counts are a map behind a mutex, locked only at accept and at
/// removal, never per packet, and only for peers a per-IP cap applies to.
#[derive(Debug, Default)]
pub(crate) struct Places {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Where the game runs for a worker.
#[derive(Debug)]
pub(crate) enum WorldLink<G: Game> {
    /// In the worker itself (one worker): a frame is handled during the read that completed it; the
    /// embedding program's commands and the tick run between loop turns.
    Inline(G, GameInbox<G>),
    /// On the world thread (several workers): frames go there as commands, frames come back as
    /// deliveries.
    Remote(RemoteWorld),
}

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

/// How a connection reaches its client.
#[derive(Debug)]
pub(crate) enum Transport<S> {
    /// Its own TCP socket (the backend's type).
    Tcp(S),
    /// A session of the worker's UDP listener ([`UdpSide`]): frames arrive whole, no decoder.
    Udp(SessionId),
}

/// One client connection. `S` is the backend's socket, `X` the game's session.
#[derive(Debug)]
pub(crate) struct Conn<S, X> {
    pub(crate) transport: Transport<S>,
    pub(crate) peer: SocketAddr,
    pub(crate) phase: Phase,
    /// Whether the backend currently asks for write readiness.
    pub(crate) wants_writable: bool,
    decoder: FrameDecoder,
    /// The game's state of the connection (with the world on its own thread, kept there instead).
    session: Option<X>,
    /// The player whose frames are routed to this connection, once WELCOMEd.
    player: Option<PlayerId>,
    /// Since when the decoder holds an unfinished frame.
    partial_since: Option<Instant>,
    /// Which of its token's successive connections this is (see [`ConnId`]).
    generation: u32,
    /// With a remote world: the session's end was asked for (a fatal ERROR or a close), and the
    /// world's answer is awaited; nothing more is read from the connection.
    end_requested: bool,
    /// With a remote world: the world was told the connection is gone.
    closed_sent: bool,
    /// With a remote world: the decoder knows the player's id (`Delivery::Bound`).
    bound: bool,
    /// Since when bytes may wait unread in the socket because the loop chose not to read them yet
    /// (reading paused for memory pressure, or the connection's turn was over): a frame read from them
    /// is judged as completed then, and no client-side deadline runs out meanwhile (protocol.md section
    /// 8, #34). `None` once the backend has read what the socket held.
    unread_since: Option<Instant>,
}

impl<S, X> Conn<S, X> {
    fn id(&self, token: usize) -> ConnId {
        ConnId { token: token as u32, generation: self.generation }
    }

    /// The TCP socket, unless this is a UDP session.
    pub(crate) fn tcp(&self) -> Option<&S> {
        match &self.transport {
            Transport::Tcp(socket) => Some(socket),
            Transport::Udp(_) => None,
        }
    }

    /// The TCP socket, unless this is a UDP session.
    pub(crate) fn tcp_mut(&mut self) -> Option<&mut S> {
        match &mut self.transport {
            Transport::Tcp(socket) => Some(socket),
            Transport::Udp(_) => None,
        }
    }
}

/// The worker's UDP transport: the listener of its socket (sans-IO; the backend moves the
/// datagrams) and which connection token each session is.
#[derive(Debug)]
pub(crate) struct UdpSide {
    pub(crate) listener: Listener<PoolBytes>,
    /// Reused for every call that fills one; taken out while its events are walked (an `Option`, as
    /// `mem::take` of an `Inbox` would allocate a fresh one per datagram).
    inbox: Option<Inbox>,
    /// `tokens[session.index()]`: the session and its connection token, while both live.
    tokens: Vec<Option<(SessionId, usize)>>,
    /// Draining sessions whose queued frames went to the listener at this flush: they are ended
    /// ([`Listener::end_with_frame`]) once those frames were transmitted, as the listener drops
    /// what an ended session has not sent yet.
    ending: Vec<usize>,
}

impl UdpSide {
    fn token(&self, session: SessionId) -> Option<usize> {
        match self.tokens.get(session.index()).copied().flatten() {
            Some((live, token)) if live == session => Some(token),
            _ => None,
        }
    }

    fn forget(&mut self, session: SessionId) {
        if let Some(entry) = self.tokens.get_mut(session.index())
            && entry.is_some_and(|(live, _)| live == session)
        {
            *entry = None;
        }
    }
}

/// The listener settings that follow the server's: the same places, limits and payload cap as TCP.
pub(crate) fn listener_config(config: &ServerConfig) -> ListenerConfig {
    let mut udp = ListenerConfig::default();
    udp.max_sessions(config.max_connections)
        .max_sessions_per_ip(config.max_connections_per_ip)
        .cap_loopback(config.cap_loopback)
        .send_soft_limit(config.send_soft_limit)
        .send_hard_limit(config.send_hard_limit)
        .write_deadline(config.write_deadline)
        .max_payload(config.max_payload);
    udp
}

/// The fatal code of an ERROR frame the game encoded (for the DISCONNECT that follows it).
fn error_code_of(frame: &[u8]) -> ErrorCode {
    match RawFrame::split_from(frame).map(|(frame, _)| frame.packet()) {
        Some(Ok(Packet::Error { code, .. })) => ErrorCode::from_u32(code).unwrap_or(ErrorCode::ShuttingDown),
        _ => ErrorCode::ShuttingDown,
    }
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

impl RunStats {
    /// Adds `other`'s counters to these (several workers).
    pub fn add(&mut self, other: &RunStats) {
        self.accepted += other.accepted;
        self.frames_in += other.frames_in;
        self.frames_out += other.frames_out;
        self.writes += other.writes;
        self.heap_fallbacks += other.heap_fallbacks;
        self.read_pauses += other.read_pauses;
        self.pressure_cuts += other.pressure_cuts;
    }
}

/// Most clients one sweep cuts off for memory pressure ([`Worker::relieve_pool_pressure`]).
const MAX_CUTS_PER_SWEEP: usize = 16;

/// Free chunks below which a pool counts as low: reading pauses until it recovers, so that the frames
/// produced by what was read always find room.
pub(crate) fn pool_reserve(pool: &Pool) -> usize {
    (pool.chunk_count() / 16).max(4)
}

/// Whether `pool` has fewer free chunks than its [`pool_reserve`].
pub(crate) fn pool_is_low(pool: &Pool) -> bool {
    pool.free_chunks() < pool_reserve(pool)
}

/// What the sweep does about a connection whose time is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// End the session with this fatal ERROR (a frame left unfinished, a slow consumer).
    Fail(ErrorCode),
    /// The game's deadline passed: [`Game::poll_timeout`].
    Session,
    /// A draining connection's time is over: drop it.
    Drop,
}

/// What a loop does about shutdown requests this turn (see [`Worker::shutdown_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShutdownStep {
    /// Go on (serving, or draining).
    Continue,
    /// The first request just arrived: every session is ending; the backend stops accepting.
    StopAccepting,
    /// A second request: return at once, without draining.
    Return,
}

/// The backend-independent state of one event loop.
#[derive(Debug)]
pub(crate) struct Worker<S, G: Game> {
    pub(crate) conns: Slab<Conn<S, G::Session>>,
    pub(crate) out: Outbound,
    world: WorldLink<G>,
    /// The packet ids the game accepts from clients; the decoder refuses any other.
    client_packets: PacketSet,
    /// Where outgoing frames are encoded: this worker's pool, or the world thread's.
    frame_pool: Pool,
    /// `generations[token]`: connections accepted on that token so far.
    generations: Vec<u32>,
    /// Connections open on every worker of the server, for `max_connections` and
    /// `max_connections_per_ip`.
    places: Arc<Places>,
    pub(crate) config: ServerConfig,
    pub(crate) pool: Pool,
    /// Tokens the backend must deregister and drop.
    closed: Vec<usize>,
    /// Scratch list of the sweep: the connections whose time is up, and what is done about it.
    expired: Vec<(usize, Expiry)>,
    server_full_frame: Vec<u8>,
    pub(crate) stats: RunStats,
    /// The UDP transport, when the server serves one (`ServerConfig::udp_addr`).
    pub(crate) udp: Option<UdpSide>,
    /// Off once draining for shutdown starts: TCP stops accepting when the backend drops its
    /// listener; a UDP handshake that completes after that is answered SHUTTING_DOWN here.
    accepting: bool,
}

impl<S, G: Game> Worker<S, G> {
    /// A worker whose frames are encoded into `frame_pool` (its own `pool` with an inline world), for
    /// a game whose clients send `client_packets`.
    pub(crate) fn new(
        config: ServerConfig,
        mut world: WorldLink<G>,
        client_packets: PacketSet,
        pool: Pool,
        frame_pool: Pool,
        places: Arc<Places>,
        now: Instant,
    ) -> Self {
        if let WorldLink::Inline(game, inbox) = &mut world {
            // The tick clock starts with the worker (the world thread starts its own).
            inbox.start(game, now);
        }
        let server_full_frame = encode_frame_to_vec(
            0,
            &Packet::Error {
                code: ErrorCode::ServerFull.code(),
                message: error_message(ErrorCode::ServerFull),
            },
        );
        Worker {
            conns: Slab::with_capacity(config.max_connections.min(1 << 16)),
            out: Outbound::new(frame_pool.clone(), config.send_soft_limit, config.send_hard_limit, now),
            world,
            client_packets,
            frame_pool,
            generations: Vec::new(),
            places,
            config,
            pool,
            closed: Vec::new(),
            expired: Vec::new(),
            server_full_frame,
            stats: RunStats::default(),
            udp: None,
            accepting: true,
        }
    }

    /// Serves UDP sessions too, through `listener` (the backend binds and drives its socket).
    pub(crate) fn enable_udp(&mut self, listener: Listener<PoolBytes>) {
        self.udp =
            Some(UdpSide { listener, inbox: Some(Inbox::new()), tokens: Vec::new(), ending: Vec::new() });
    }

    /// Bytes of the ERROR(SERVER_FULL) frame written to a connection refused at accept.
    pub(crate) fn server_full_frame(&self) -> &[u8] {
        &self.server_full_frame
    }

    /// Takes a place for a new connection from `ip`, unless the server (every worker together) already
    /// holds `max_connections`, or as many from `ip` as its per-IP cap allows (`ServerConfig::per_ip_cap`:
    /// none for loopback by default). A place taken is given back by
    /// [`Self::remove`], so it must be followed by [`Self::accept`] with a peer of that `ip`.
    pub(crate) fn take_place(&self, ip: IpAddr) -> bool {
        let before = self.places.open.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.max_connections {
            self.places.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if let Some(cap) = self.config.per_ip_cap(ip) {
            let mut per_ip = self.places.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= cap {
                // `count` is at least `cap` >= 1 here: no empty entry is left behind.
                drop(per_ip);
                self.places.open.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
            *count += 1;
        }
        true
    }

    /// Adds an accepted connection and returns its token.
    pub(crate) fn accept(&mut self, socket: S, peer: SocketAddr, now: Instant) -> usize {
        self.add_conn(Transport::Tcp(socket), peer, now)
    }

    fn add_conn(&mut self, transport: Transport<S>, peer: SocketAddr, now: Instant) -> usize {
        self.stats.accepted += 1;
        let udp = matches!(transport, Transport::Udp(_));
        let decoder =
            FrameDecoder::with_packets(Direction::ToServer, self.client_packets, self.config.max_payload);
        let session = match &mut self.world {
            WorldLink::Inline(game, _) => Some(game.open(now)),
            WorldLink::Remote(_) => None,
        };
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        if self.generations.len() <= token {
            self.generations.resize(token + 1, 0);
        }
        self.generations[token] = self.generations[token].wrapping_add(1);
        let generation = self.generations[token];
        entry.insert(Conn {
            transport,
            peer,
            phase: Phase::Open,
            wants_writable: false,
            decoder,
            session,
            player: None,
            partial_since: None,
            generation,
            end_requested: false,
            closed_sent: false,
            bound: false,
            unread_since: None,
        });
        self.out.open(token, udp);
        if let WorldLink::Remote(remote) = &mut self.world {
            // The HELLO clock starts at accept, not when the world thread gets to it.
            remote.send(Command::Opened(ConnId { token: token as u32, generation }, now));
        }
        token
    }

    /// Handles one datagram the UDP socket received from `from`: sessions opened (each takes a place
    /// as a TCP connection does, or is refused with SERVER_FULL), their frames handed to the game,
    /// sessions closed (as a TCP peer's EOF).
    pub(crate) fn receive_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let Some(udp) = &mut self.udp else { return };
        // Out while its events are walked: handling them needs the whole worker.
        let mut inbox = udp.inbox.take().unwrap_or_default();
        udp.listener.receive(now, from, datagram, &mut inbox);
        self.handle_udp_events(&inbox, datagram, now);
        if let Some(udp) = &mut self.udp {
            udp.inbox = Some(inbox);
        }
    }

    /// Runs the UDP listener's deadlines due at `now` (resends, acks, keepalives, its own timeouts,
    /// cookie rotation); the sessions it ends leave as on EOF.
    pub(crate) fn udp_timeout(&mut self, now: Instant) {
        let Some(udp) = &mut self.udp else { return };
        if udp.listener.poll_timeout().is_none_or(|at| at > now) {
            return;
        }
        let mut inbox = udp.inbox.take().unwrap_or_default();
        udp.listener.handle_timeout(now, &mut inbox);
        self.handle_udp_events(&inbox, &[], now);
        if let Some(udp) = &mut self.udp {
            udp.inbox = Some(inbox);
        }
    }

    fn handle_udp_events(&mut self, inbox: &Inbox, datagram: &[u8], now: Instant) {
        for event in inbox.events(datagram) {
            match event {
                Event::Opened { session, peer } => self.accept_udp(session, peer, now),
                Event::Frame { session, frame, .. } => {
                    // None: a session refused at `accept_udp`, whose HELLO follows its opening.
                    if let Some(token) = self.udp.as_ref().and_then(|udp| udp.token(session)) {
                        self.receive_frame(token, frame, now);
                    }
                }
                Event::Closed { session, .. } => {
                    let Some(udp) = &mut self.udp else { continue };
                    if let Some(token) = udp.token(session) {
                        udp.forget(session);
                        self.peer_closed(token, now);
                    }
                }
            }
        }
    }

    /// A UDP session opened: it takes a place (the same places as TCP connections) and a token.
    fn accept_udp(&mut self, session: SessionId, peer: SocketAddr, now: Instant) {
        if !self.accepting {
            // Draining: as a TCP connect is refused once the listener is gone, with a reason.
            if let Some(udp) = &mut self.udp {
                let _ = udp.listener.end(session, ErrorCode::ShuttingDown);
            }
            return;
        }
        if !self.take_place(peer.ip()) {
            self.stats.accepted += 1;
            if let Some(udp) = &mut self.udp {
                let _ = udp.listener.end(session, ErrorCode::ServerFull);
            }
            tracing::debug!(%peer, "refused over UDP: server full");
            return;
        }
        let token = self.add_conn(Transport::Udp(session), peer, now);
        if let Some(udp) = &mut self.udp {
            if udp.tokens.len() <= session.index() {
                udp.tokens.resize(session.index() + 1, None);
            }
            udp.tokens[session.index()] = Some((session, token));
        }
    }

    /// Handles one whole frame of a UDP session: the check the TCP decoder makes at header time
    /// (the game's packet set; the payload cap is the listener's, the header id `handle_frame`'s),
    /// then the game, as [`Self::receive`] does for a decoded frame.
    fn receive_frame(&mut self, token: usize, frame: RawFrame<'_>, now: Instant) {
        let Worker { conns, out, world, stats, client_packets, udp, .. } = self;
        let conn = &mut conns[token];
        if conn.phase != Phase::Open || conn.end_requested {
            return;
        }
        stats.frames_in += 1;
        if !client_packets.contains(frame.packet_id()) {
            self.fail(token, ErrorCode::UnknownPacket, now);
            return;
        }
        match world {
            WorldLink::Inline(game, _) => {
                let Some(session) = &mut conn.session else { return };
                out.sender = token;
                out.now = now;
                // A datagram is handled as it arrives: completed now.
                let verdict = handle_frame(game, now, now, session, frame, out);
                if verdict != Verdict::Close
                    && conn.player.is_none()
                    && let Some(id) = game.player(session)
                {
                    conn.player = Some(id);
                    out.bind(id, token);
                    if let (Some(udp), Transport::Udp(session)) = (udp, &conn.transport) {
                        // The ERROR the listener writes itself carries the player's id, as on TCP.
                        let _ = udp.listener.set_player_id(*session, id.get());
                    }
                }
                if verdict == Verdict::Close {
                    conn.session = None;
                    self.begin_drain(token, now);
                }
                self.finish_ends(now);
            }
            WorldLink::Remote(remote) => {
                // Header ids are checked on the world thread (`handle_frame`), as for TCP before
                // `Delivery::Bound`.
                let copy = remote.copy_frame(frame);
                remote.send(Command::Frame(conn.id(token), copy, now));
            }
        }
    }

    /// Moves `token`'s queued frames (a UDP session) into the listener, each on its channel. A
    /// draining session is ended once they are transmitted ([`Self::finish_udp_ends`]).
    pub(crate) fn flush_udp(&mut self, token: usize, now: Instant) {
        let Worker { conns, out, udp, .. } = self;
        let (Some(conn), Some(udp)) = (conns.get(token), udp.as_mut()) else { return };
        let Transport::Udp(session) = conn.transport else { return };
        let queue = &mut out.udp[token];
        let mut slow = false;
        while let Some((frame, reliable)) = queue.frames.pop_front() {
            // Refcounts move, no byte is copied. Unknown session: it ended meanwhile (its `Closed`
            // is on the way); too large: no datagram carries it, dropped as the network would.
            if let Err(SendError::SlowConsumer(_)) = udp.listener.send(session, frame, reliable) {
                slow = true;
                break;
            }
        }
        queue.frames.clear();
        queue.bytes = 0;
        if matches!(conn.phase, Phase::Draining { .. }) && !udp.ending.contains(&token) {
            udp.ending.push(token);
        }
        if slow {
            // Unacknowledged frames over the hard limit: the same cut as a TCP client's.
            self.out.discard_unstarted(token);
            self.fail(token, ErrorCode::SlowConsumer, now);
        }
    }

    /// Ends the draining UDP sessions flushed this turn, after their last frames were transmitted
    /// (the listener drops what an ended session has not sent yet): it sends the game's ERROR as the
    /// session's last DATA, then DISCONNECT, and lingers; the connection goes at once.
    pub(crate) fn finish_udp_ends(&mut self, now: Instant) {
        let Some(udp) = &mut self.udp else { return };
        if udp.ending.is_empty() {
            return;
        }
        let mut ending = std::mem::take(&mut udp.ending);
        for &token in &ending {
            let Some(Conn { transport: Transport::Udp(session), .. }) = self.conns.get(token) else {
                continue;
            };
            let session = *session;
            let error = self.out.udp[token].error.take();
            if let Some(udp) = &mut self.udp {
                let _ = match error {
                    Some(frame) => udp.listener.end_with_frame(session, error_code_of(&frame), frame),
                    // The game closed without an ERROR (TCP would just close): the listener has no
                    // DISCONNECT without one; SHUTTING_DOWN tells the client the server let it go.
                    None => udp.listener.end(session, ErrorCode::ShuttingDown),
                };
                udp.forget(session);
            }
            self.peer_closed(token, now);
        }
        ending.clear();
        if let Some(udp) = &mut self.udp {
            udp.ending = ending;
        }
    }

    /// Records that `token`'s socket may hold bytes the backend leaves unread for now (reading is
    /// paused, or the connection's turn is over): until [`Self::caught_up`], frames read from it count
    /// as completed no later than `now`, and its HELLO, idle and partial-frame deadlines wait.
    pub(crate) fn defer_read(&mut self, token: usize, now: Instant) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.unread_since.get_or_insert(now);
        }
    }

    /// Records that the backend has read what `token`'s socket held (see [`Self::defer_read`]).
    pub(crate) fn caught_up(&mut self, token: usize) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.unread_since = None;
        }
    }

    /// Handles bytes read from `token` at `now`: decodes every complete frame and hands it to the
    /// world. Frames count as completed at `now`, or when the backend deferred reading them
    /// ([`Self::defer_read`]), whichever is earlier.
    pub(crate) fn receive(&mut self, token: usize, bytes: &[u8], now: Instant) {
        let Worker { conns, out, world, stats, config, .. } = self;
        let conn = &mut conns[token];
        if conn.phase != Phase::Open || conn.end_requested {
            return; // Draining, or ending: the peer's bytes are read only to be dropped.
        }
        let completed_at = conn.unread_since.unwrap_or(now);
        let mut input = bytes;
        let mut completed = 0;
        let mut failed = None;
        let verdict = match world {
            WorldLink::Inline(game, _) => loop {
                let conn = &mut conns[token];
                if conn.phase != Phase::Open {
                    // The game ended this very session (`Outbox::end`) and `close_ended` drained it:
                    // the frames behind the one that did are not handed to it.
                    break Verdict::Continue;
                }
                let Some(session) = &mut conn.session else { return };
                out.sender = token;
                out.now = now;
                let verdict = loop {
                    match conn.decoder.next_frame(&mut input) {
                        Ok(Some(frame)) => {
                            stats.frames_in += 1;
                            completed += 1;
                            let verdict = handle_frame(game, now, completed_at, session, frame, out);
                            if verdict == Verdict::Close {
                                break Some(Verdict::Close);
                            }
                            // Route frames addressed to the player by id from its WELCOME on: the next
                            // frame in this same read (a MOVE right behind the HELLO) already needs it.
                            if conn.player.is_none()
                                && let Some(id) = game.player(session)
                            {
                                conn.player = Some(id);
                                // Nothing is buffered past the HELLO yet: the frames behind it are
                                // decoded after this, with the id known.
                                let _ = conn.decoder.set_player_id(id.get());
                                out.bind(id, token);
                            }
                            if !out.ended.is_empty() {
                                break None;
                            }
                        }
                        Ok(None) => break Some(Verdict::Continue),
                        Err(error) => break Some(game.fail(session, error.error_code(), out)),
                    }
                };
                match verdict {
                    Some(verdict) => break verdict,
                    // The frame ended sessions (`Outbox::end`), maybe this one: they are closed before
                    // the game gets the next frame.
                    None => close_ended(game, conns, out, config.write_deadline, now),
                }
            },
            WorldLink::Remote(remote) => {
                let id = conn.id(token);
                loop {
                    match conn.decoder.next_frame(&mut input) {
                        Ok(Some(frame)) => {
                            stats.frames_in += 1;
                            completed += 1;
                            let copy = remote.copy_frame(frame);
                            remote.send(Command::Frame(id, copy, completed_at));
                            if !conn.bound {
                                // This frame may give the session a player (a HELLO) on the world
                                // thread; until `Delivery::Bound` brings its id here, header ids are
                                // checked there once each frame is complete (`handle_frame`), against
                                // the id just assigned, as one worker does at header time.
                                conn.decoder.skip_player_id_check();
                            }
                        }
                        Ok(None) => break Verdict::Continue,
                        Err(error) => {
                            failed = Some(error.error_code());
                            break Verdict::Continue;
                        }
                    }
                }
            }
        };
        // The deadline runs from the first byte of the frame that is unfinished now: a frame that
        // began in this read (after others completed) starts its own clock.
        let conn = &mut conns[token];
        conn.partial_since = match (conn.decoder.is_mid_frame(), completed) {
            (false, _) => None,
            (true, 0) => conn.partial_since.or(Some(now)),
            (true, _) => Some(now),
        };
        if verdict == Verdict::Close {
            conn.session = None; // The game is done with it.
            self.begin_drain(token, now);
        }
        self.finish_ends(now);
        if let Some(code) = failed {
            self.fail(token, code, now);
        }
    }

    /// Ends the session of `token` with the fatal ERROR `code` (the world removes its player).
    pub(crate) fn fail(&mut self, token: usize, code: ErrorCode, now: Instant) {
        let Worker { conns, out, world, .. } = self;
        let conn = &mut conns[token];
        if conn.phase != Phase::Open || conn.end_requested {
            return;
        }
        match world {
            WorldLink::Inline(game, _) => {
                out.sender = token;
                out.now = now;
                if let Some(mut session) = conn.session.take() {
                    let _ = game.fail(&mut session, code, out);
                }
                self.begin_drain(token, now);
                self.finish_ends(now);
            }
            WorldLink::Remote(remote) => {
                // The world sends the ERROR and LEAVEs, then `Delivery::End` starts the drain.
                conn.end_requested = true;
                remote.send(Command::Fail(conn.id(token), code));
            }
        }
    }

    /// The game's deadline for `token`'s session passed (one worker): [`Game::poll_timeout`].
    fn poll_timeout(&mut self, token: usize, now: Instant) {
        let Worker { conns, out, world, .. } = self;
        let (Some(conn), WorldLink::Inline(game, _)) = (conns.get_mut(token), world) else { return };
        let Some(session) = &mut conn.session else { return };
        out.sender = token;
        out.now = now;
        if game.poll_timeout(now, session, out) == Verdict::Close {
            conn.session = None;
            self.begin_drain(token, now);
        }
        self.finish_ends(now);
    }

    /// Runs what the game has due besides frames (one worker): the embedding program's commands and
    /// the tick. Called by the backend once per loop turn, after its events.
    pub(crate) fn run_game(&mut self, now: Instant) {
        let Worker { conns, out, world, config, .. } = self;
        if let WorldLink::Inline(game, inbox) = world {
            out.sender = NO_SENDER;
            out.now = now;
            let write_deadline = config.write_deadline;
            // Each command and the tick is a call of its own: the sessions it ended are closed before
            // the next one runs.
            let ran = inbox.run(game, now, out, |game, out| {
                close_ended(game, conns, out, write_deadline, now);
            });
            if !ran {
                // Counts change with frames too: published once per turn (a relaxed store).
                inbox.publish(game);
            }
        }
    }

    /// Closes the sessions the game ended in the call that just returned ([`gamewire_world::Outbox::end`]), one worker.
    fn finish_ends(&mut self, now: Instant) {
        let Worker { conns, out, world, config, .. } = self;
        if let WorldLink::Inline(game, _) = world {
            close_ended(game, conns, out, config.write_deadline, now);
        }
    }

    fn begin_drain(&mut self, token: usize, now: Instant) {
        begin_drain(&mut self.conns[token], &mut self.out, token, now + self.config.write_deadline);
    }

    /// The peer closed, reset, or the socket failed: the player leaves and the connection goes.
    pub(crate) fn peer_closed(&mut self, token: usize, now: Instant) {
        let Worker { conns, out, world, .. } = self;
        let Some(conn) = conns.get_mut(token) else { return };
        if let Some(id) = conn.player.take() {
            out.unbind(id);
        }
        match world {
            WorldLink::Inline(game, _) => {
                if let Some(mut session) = conn.session.take() {
                    out.sender = token;
                    out.now = now;
                    game.close(&mut session, out);
                }
            }
            WorldLink::Remote(remote) => {
                if !conn.closed_sent {
                    conn.closed_sent = true;
                    remote.send(Command::Closed(conn.id(token)));
                }
            }
        }
        out.queues[token].seal();
        if !self.closed.contains(&token) {
            self.closed.push(token);
        }
        // Its `close` may have ended other sessions.
        self.finish_ends(now);
    }

    /// Applies what the world thread sent (a remote world): frames queued, sessions ended. Called by
    /// the backend once per loop turn, after its events.
    pub(crate) fn apply_deliveries(&mut self, now: Instant) {
        self.out.now = now;
        loop {
            let delivery = match &mut self.world {
                WorldLink::Remote(remote) => remote.next_delivery(),
                WorldLink::Inline(..) => None,
            };
            let Some(delivery) = delivery else { return };
            match delivery {
                Delivery::Frame { conn, frame, fatal, reliable } => {
                    let token = conn.token as usize;
                    if self.conns.get(token).is_some_and(|c| c.generation == conn.generation) {
                        self.out.deliver(token, &frame, fatal, reliable);
                    }
                }
                Delivery::Bound(conn, player_id) => {
                    let token = conn.token as usize;
                    if let Some(c) = self.conns.get_mut(token)
                        && c.generation == conn.generation
                    {
                        c.bound = true;
                        if let (Transport::Udp(session), Some(udp)) = (&c.transport, &mut self.udp) {
                            let _ = udp.listener.set_player_id(*session, player_id);
                        }
                        // A spoofed header that came behind the HELLO, before the id did, and whose
                        // payload has not (or never will): refused now, as one worker refuses it.
                        if let Err(error) = c.decoder.set_player_id(player_id) {
                            self.fail(token, error.error_code(), now);
                        }
                    }
                }
                Delivery::Expired(conn) => {
                    // The world saw the session's HELLO or idle deadline pass. It ends only if no byte
                    // of it waits unread here; otherwise the world asks again at its next sweep, or
                    // the frames arrive first and restart the clock.
                    let token = conn.token as usize;
                    if let Some(c) = self.conns.get(token)
                        && c.generation == conn.generation
                        && c.phase == Phase::Open
                        && !c.end_requested
                        && c.unread_since.is_none()
                        && let WorldLink::Remote(remote) = &mut self.world
                    {
                        remote.send(Command::Expire(conn));
                    }
                }
                Delivery::End(conn) => {
                    let token = conn.token as usize;
                    if self
                        .conns
                        .get(token)
                        .is_some_and(|c| c.generation == conn.generation && c.phase == Phase::Open)
                    {
                        self.begin_drain(token, now);
                    }
                }
            }
        }
    }

    /// Ends a loop turn: sends the world what waited for room and wakes it (a remote world).
    pub(crate) fn end_turn(&mut self) {
        if let WorldLink::Remote(remote) = &mut self.world {
            remote.end_turn();
        }
    }

    /// Called before the backend blocks for events: whether it may (no delivery from the world waits).
    pub(crate) fn may_wait(&self) -> bool {
        match &self.world {
            WorldLink::Remote(remote) => remote.may_wait(),
            WorldLink::Inline(..) => true,
        }
    }

    /// Called when the backend is awake again after [`Self::may_wait`].
    pub(crate) fn woke(&self) {
        if let WorldLink::Remote(remote) = &self.world {
            remote.woke();
        }
    }

    /// Whether reading must pause: commands wait for room on the way to the world thread, or the pool
    /// the world encodes into runs low (a remote world; the backends check their own pool).
    pub(crate) fn reads_blocked(&self) -> bool {
        match &self.world {
            WorldLink::Remote(remote) => remote.is_backlogged() || self.frame_pool_is_low(),
            WorldLink::Inline(..) => false,
        }
    }

    /// Whether the pool holding outgoing frames (the world thread's, with a remote world) runs low.
    pub(crate) fn frame_pool_is_low(&self) -> bool {
        pool_is_low(&self.frame_pool)
    }

    /// Whether memory itself is short (this worker's pool or the one frames are encoded into), as
    /// opposed to a backlog towards the world thread, which resolves itself: the sweep then cuts the
    /// largest backlog ([`Self::relieve_pool_pressure`]).
    pub(crate) fn under_memory_pressure(&self) -> bool {
        pool_is_low(&self.pool) || self.frame_pool_is_low()
    }

    /// When the loop must wake at the latest: the next sweep, the next flush falling due, or the
    /// game's next tick (one worker).
    pub(crate) fn wake_at(&self, next_sweep: Instant) -> Instant {
        let tick = match &self.world {
            WorldLink::Inline(_, inbox) => inbox.next_tick(),
            WorldLink::Remote(_) => None,
        };
        let udp = self.udp.as_ref().and_then(|udp| udp.listener.poll_timeout());
        [self.out.next_flush_due(self.config.flush_interval), tick, udp]
            .into_iter()
            .flatten()
            .fold(next_sweep, Instant::min)
    }

    /// Cuts off every client whose queue went over the hard limit. Cutting one off sends LEAVE to its
    /// viewers, which can push another over, so this runs until none is left.
    pub(crate) fn settle(&mut self, now: Instant) {
        while let Some(token) = self.out.over_hard.pop() {
            // A session whose end was already asked for (several workers: its ERROR may be queued, its
            // `End` on the way) keeps what it has: discarding could drop that ERROR, and nothing more
            // gets in past the limit anyway.
            if self.conns.get(token).is_some_and(|conn| conn.phase == Phase::Open && !conn.end_requested) {
                self.out.discard_unstarted(token);
                self.fail(token, ErrorCode::SlowConsumer, now);
            }
        }
    }

    /// Enforces every deadline: HELLO, idle, partial frame, write (soft limit), flush and linger.
    /// O(connections); called a few times a second.
    ///
    /// The client-side deadlines (HELLO, idle, partial frame) wait while the backend leaves bytes of
    /// the connection unread ([`Self::defer_read`]): the bytes that would meet them may be there. A
    /// connection whose socket holds nothing is judged as usual, pause or not.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let config = &self.config;
        let (partial_timeout, write_deadline) = (config.partial_frame_timeout, config.write_deadline);
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        for (token, conn) in &self.conns {
            let code = match conn.phase {
                Phase::Draining { deadline, .. } => {
                    if now >= deadline {
                        expired.push((token, Expiry::Drop));
                    }
                    continue;
                }
                Phase::Open if conn.end_requested => continue,
                Phase::Open => {
                    let partial_expired = conn
                        .partial_since
                        .is_some_and(|since| now.saturating_duration_since(since) >= partial_timeout);
                    let session_expired = match &self.world {
                        WorldLink::Inline(game, _) => conn
                            .session
                            .as_ref()
                            .and_then(|session| game.deadline(session))
                            .is_some_and(|deadline| now >= deadline),
                        // The world thread sees these pass and asks (`Delivery::Expired`).
                        WorldLink::Remote(_) => false,
                    };
                    if conn.unread_since.is_none() && session_expired {
                        expired.push((token, Expiry::Session));
                        continue;
                    } else if conn.unread_since.is_none() && partial_expired {
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
            expired.push((token, Expiry::Fail(code)));
        }
        for &(token, expiry) in &expired {
            match expiry {
                Expiry::Fail(code) => {
                    if code == ErrorCode::SlowConsumer {
                        self.out.discard_unstarted(token);
                    }
                    self.fail(token, code, now);
                }
                Expiry::Session => self.poll_timeout(token, now),
                Expiry::Drop => self.peer_closed(token, now),
            }
        }
        self.expired = expired;
        self.settle(now);
    }

    /// The buffer pool is exhausted and reading is paused: if nothing gives, clients that do not read
    /// would hold every chunk and stall everyone else. Cuts off the open connection that holds the
    /// most of the pool ([`SendQueue::held_bytes`]) as a slow consumer: its unsent frames are dropped
    /// and its chunks go back at once (an in-flight send's when its cancellation completes). Then the
    /// next, as long as what the cut-offs give back leaves the pool short of twice its reserve, at
    /// most [`MAX_CUTS_PER_SWEEP`]: reading resumes after one sweep, not one sweep per client. Called
    /// once per sweep while the pressure lasts.
    pub(crate) fn relieve_pool_pressure(&mut self, now: Instant) {
        let chunk_size = self.frame_pool.chunk_size();
        let target = 2 * pool_reserve(&self.frame_pool);
        // Chunks the cut-offs hold that have not gone back yet (cancelled sends complete later).
        let mut coming_back = 0;
        for cut in 0..MAX_CUTS_PER_SWEEP {
            if cut > 0 && self.frame_pool.free_chunks() + coming_back >= target {
                return;
            }
            let worst = self
                .conns
                .iter()
                .filter(|(_, conn)| conn.phase == Phase::Open && !conn.end_requested)
                .map(|(token, _)| (self.out.queues[token].held_bytes(), token))
                .max();
            let Some((held, token)) = worst.filter(|&(held, _)| held > 0) else { return };
            tracing::warn!(peer = %self.conns[token].peer, held, "buffer pool exhausted: cutting the client holding the most");
            self.stats.pressure_cuts += 1;
            let free_before = self.frame_pool.free_chunks();
            self.out.discard_unstarted(token);
            self.fail(token, ErrorCode::SlowConsumer, now);
            let given_back = self.frame_pool.free_chunks().saturating_sub(free_before);
            coming_back += (held / chunk_size).saturating_sub(given_back);
        }
    }

    /// Begins a graceful stop: every open session gets ERROR(SHUTTING_DOWN) after what is queued.
    pub(crate) fn shut_down_all(&mut self, now: Instant) {
        let tokens: Vec<usize> = self.conns.iter().map(|(token, _)| token).collect();
        for token in tokens {
            self.fail(token, ErrorCode::ShuttingDown, now);
        }
    }

    /// Acts on the shutdown requests seen (`requests`): on the first, ends every session and sets
    /// `drain_deadline`; on a second, tells the loop to return.
    pub(crate) fn shutdown_step(
        &mut self,
        requests: usize,
        now: Instant,
        drain_deadline: &mut Option<Instant>,
    ) -> ShutdownStep {
        match requests {
            0 => ShutdownStep::Continue,
            1 if drain_deadline.is_some() => ShutdownStep::Continue,
            1 => {
                tracing::info!(connections = self.conns.len(), "shutting down: draining");
                self.accepting = false;
                self.shut_down_all(now);
                *drain_deadline = Some(now + self.config.drain_timeout);
                ShutdownStep::StopAccepting
            }
            _ => {
                tracing::warn!("second shutdown request: stopping without draining");
                ShutdownStep::Return
            }
        }
    }

    /// Whether a draining loop is done: every connection gone, or the drain deadline passed.
    pub(crate) fn drained(&self, now: Instant, drain_deadline: Option<Instant>) -> bool {
        let Some(deadline) = drain_deadline else { return false };
        if self.conns.is_empty() {
            return true;
        }
        if now >= deadline {
            tracing::warn!(connections = self.conns.len(), "drain deadline passed");
            return true;
        }
        false
    }

    /// Tokens to deregister and drop, moved into `out`.
    pub(crate) fn take_closed(&mut self, out: &mut Vec<usize>) {
        out.clear();
        out.append(&mut self.closed);
    }

    /// Removes a closed connection and returns it for the backend to deregister.
    pub(crate) fn remove(&mut self, token: usize) -> Conn<S, G::Session> {
        self.places.open.fetch_sub(1, Ordering::Relaxed);
        self.out.close(token);
        let conn = self.conns.remove(token);
        if let (Transport::Udp(session), Some(udp)) = (&conn.transport, &mut self.udp)
            && udp.token(*session) == Some(token)
        {
            // Gone without the listener ending it (a drain that ran out): end it there too.
            let _ = udp.listener.end(*session, ErrorCode::ShuttingDown);
            udp.forget(*session);
        }
        let ip = conn.peer.ip();
        // The same decision as at `take_place`: only a counted connection is taken off its count.
        if self.config.per_ip_cap(ip).is_some() {
            let mut per_ip = self.places.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        conn
    }

    /// The connection and its send queue, for the backend's flush.
    pub(crate) fn conn_and_queue(
        &mut self,
        token: usize,
    ) -> Option<(&mut Conn<S, G::Session>, &mut SendQueue)> {
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

/// Starts draining `token`'s connection: unrouted, its queue sealed and flushed, then its write side
/// shut (by `deadline` at the latest).
fn begin_drain<S, X>(conn: &mut Conn<S, X>, out: &mut Outbound, token: usize, deadline: Instant) {
    if let Some(id) = conn.player.take() {
        out.unbind(id);
    }
    conn.phase = Phase::Draining { deadline, write_shut: false };
    out.queues[token].seal();
    // Flush (and then shut the write side) even if nothing new was queued.
    out.mark_dirty(token);
}

/// One worker: calls [`Game::close`] on each session the game ended ([`gamewire_world::Outbox::end`]) and drains its
/// connection, in the order they were ended; a `close` that ends more is followed to the last.
fn close_ended<S, G: Game>(
    game: &mut G,
    conns: &mut Slab<Conn<S, G::Session>>,
    out: &mut Outbound,
    write_deadline: Duration,
    now: Instant,
) {
    let mut next = 0;
    while let Some(&token) = out.ended.get(next) {
        next += 1;
        let Some(conn) = conns.get_mut(token) else { continue };
        if conn.phase != Phase::Open {
            continue; // It also ended another way in the same call.
        }
        if let Some(mut session) = conn.session.take() {
            // Its queue is sealed: `Sender` reaches nothing, as for a peer that is gone.
            out.sender = NO_SENDER;
            out.now = now;
            game.close(&mut session, out);
        }
        begin_drain(conn, out, token, now + write_deadline);
    }
    out.ended.clear();
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::time::Duration;

    use gamewire_pool::PoolConfig;
    use gamewire_proto::{PacketKind, encode_frame_to_vec};
    use gamewire_world::World;

    use super::*;
    use crate::send_queue::MAX_IOVECS;

    /// A one-worker `Worker` (the world inline) over a socket type of nothing: the sans-IO half of the
    /// loop, driven with a fake clock.
    fn worker(now: Instant) -> Worker<(), World> {
        let config = ServerConfig::default();
        let pool = Pool::new(PoolConfig { chunk_size: 4096, chunk_count: 64 }).unwrap();
        let world = World::new(gamewire_world::Config::default()).unwrap();
        let (inbox, _handle) = crate::game::channel(crate::game::GameWaker::Thread(std::thread::current()));
        let link = WorldLink::Inline(world, inbox);
        Worker::new(config, link, PacketSet::V1_FROM_CLIENT, pool.clone(), pool, Arc::default(), now)
    }

    /// The kinds of the frames queued for `token`.
    fn queued_kinds(worker: &Worker<(), World>, token: usize) -> Vec<(PacketKind, Option<u32>)> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = worker.out.queues[token].io_slices(&mut slices);
        let bytes: Vec<u8> = slices[..count].iter().flat_map(|slice| slice.iter().copied()).collect();
        let mut decoder = FrameDecoder::new(Direction::ToClient, 65536);
        let mut input = &bytes[..];
        let mut kinds = Vec::new();
        while let Ok(Some(frame)) = decoder.next_frame(&mut input) {
            let kind = PacketKind::from_id(frame.packet_id()).expect("a known kind");
            let code = match frame.packet() {
                Ok(Packet::Error { code, .. }) => Some(code),
                _ => None,
            };
            kinds.push((kind, code));
        }
        kinds
    }

    const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

    #[test]
    fn a_hello_left_unread_by_the_server_is_judged_when_it_arrived() {
        let start = Instant::now();
        let mut worker = worker(start);
        let token = worker.accept((), PEER, start);
        // The HELLO arrives at once, but the loop leaves it in the socket (the pool is exhausted) ...
        worker.defer_read(token, start + Duration::from_millis(10));
        // ... well past the 5 s HELLO deadline: the sweep spares it, its bytes may be there.
        worker.sweep(start + Duration::from_secs(20));
        assert_eq!(queued_kinds(&worker, token), [], "no TIMEOUT while its bytes wait unread");
        // Reading resumes: the HELLO completed 10 ms after accept, in time.
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "on time" });
        worker.receive(token, &hello, start + Duration::from_secs(21));
        worker.caught_up(token);
        assert_eq!(queued_kinds(&worker, token), [(PacketKind::Welcome, None)]);
    }

    #[test]
    fn a_client_with_nothing_unread_times_out_whatever_else_is_paused() {
        let start = Instant::now();
        let mut worker = worker(start);
        let silent = worker.accept((), PEER, start);
        let waiting = worker.accept((), PEER, start);
        worker.defer_read(waiting, start);
        worker.sweep(start + Duration::from_secs(6));
        let timeout = Some(ErrorCode::Timeout.code());
        assert_eq!(queued_kinds(&worker, silent), [(PacketKind::Error, timeout)], "it sent nothing");
        assert_eq!(queued_kinds(&worker, waiting), []);
        // A HELLO that really came late is late, whenever it is read.
        worker.caught_up(waiting);
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "late" });
        worker.receive(waiting, &hello, start + Duration::from_secs(7));
        assert_eq!(queued_kinds(&worker, waiting), [(PacketKind::Error, timeout)]);
    }
}
