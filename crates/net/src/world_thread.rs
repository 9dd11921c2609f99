//! With more than one worker, the world runs on a thread of its own, linked to every worker by a pair
//! of bounded SPSC rings: commands in (connections opened and closed, complete frames), deliveries out
//! (encoded frames, shared by reference with every recipient on every worker).
//!
//! Ownership rule: the world thread owns every session and the routing from player ids to
//! connections; a worker owns its sockets, decoders and send queues. Frames about one player reach each
//! recipient in the order the world produced them: one world thread, FIFO rings, FIFO send queues.
//!
//! Backpressure, never a drop and never a stall: a delivery that does not fit its ring waits in that
//! ring's overflow and the world takes no new command until every overflow is empty (what one command
//! produces bounds the overflow); a command that does not fit waits in its worker's backlog, and the
//! worker stops reading sockets until the backlog is gone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use gamewire_pool::{ChunkMut, Consumer, Pool, PoolBytes, Producer, spsc};
use gamewire_proto::{Encode, ErrorCode, RawFrame};
use gamewire_world::{Game, Outbox, PlayerId, Recipients, Verdict};

use crate::control::ShutdownState;
use crate::game::{GameInbox, GameWaker, ServerHandle};
use crate::outbound::FrameWriter;
use crate::sys::SWEEP_INTERVAL;

/// Commands the world takes from one worker before looking at the others: fairness.
const COMMANDS_PER_TURN: usize = 256;

/// A connection across threads: its token on its worker, and which of that token's successive
/// connections it is (tokens are reused; a delivery for an old connection must not reach a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnId {
    pub(crate) token: u32,
    pub(crate) generation: u32,
}

/// Worker → world.
#[derive(Debug)]
pub(crate) enum Command {
    /// A connection was accepted at this time (its HELLO deadline runs from it).
    Opened(ConnId, Instant),
    /// One complete frame (header and payload, contiguous), copied into the worker's pool, and when it
    /// completed at the socket (the session's deadline is judged then, see
    /// [`Game::handle`]).
    Frame(ConnId, PoolBytes, Instant),
    /// The session's deadline passed, as the world said (`Delivery::Expired`), and the worker holds
    /// no unread byte of the connection: it ends with TIMEOUT unless a frame handled since moved the
    /// deadline.
    Expire(ConnId),
    /// The I/O layer ends the session with this fatal ERROR (a decoder error, a partial frame too
    /// slow, a slow consumer, the server shutting down).
    Fail(ConnId, ErrorCode),
    /// The peer is gone: the player leaves; nothing more is sent to the connection.
    Closed(ConnId),
}

/// World → worker.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Queue `frame` for the connection; `fatal`: a fatal ERROR, the one frame that passes the hard
    /// limit; `reliable`: its channel, for a UDP session ([`gamewire_proto::Encode::channel`]).
    Frame { conn: ConnId, frame: PoolBytes, fatal: bool, reliable: bool },
    /// The connection's player has this id (sent before its WELCOME): from now on the worker's
    /// decoder refuses other non-zero header ids at header time (SPOOFED_ID), as one worker does.
    Bound(ConnId, u32),
    /// The session is over: flush what is queued (ending with the fatal ERROR, if any), then close.
    End(ConnId),
    /// The session's HELLO or idle deadline has passed as far as the world knows. Only the worker
    /// knows whether bytes of the connection wait unread (reading paused for memory pressure, which is
    /// not the client's fault): it answers `Command::Expire` if none do.
    Expired(ConnId),
}

/// The worker's end of its link to the world thread.
#[derive(Debug)]
pub(crate) struct RemoteWorld {
    commands: Producer<Command>,
    deliveries: Consumer<Delivery>,
    /// Commands the ring had no room for, oldest first.
    backlog: VecDeque<Command>,
    world_thread: Thread,
    /// Commands were pushed this turn: the world thread is unparked once at the end of it.
    pushed: bool,
    /// Set by the worker while it waits for events, so that the world wakes it only then.
    waiting: Arc<AtomicBool>,
    /// Copies of complete frames, carved from the worker's pool.
    copier: FrameCopier,
}

impl RemoteWorld {
    /// Sends `command` to the world (into the backlog if the ring is full).
    pub(crate) fn send(&mut self, command: Command) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(command);
            return;
        }
        if let Err(command) = self.commands.push(command) {
            self.backlog.push_back(command);
        }
        self.pushed = true;
    }

    /// Copies a complete frame into the worker's pool, for the world thread to read.
    pub(crate) fn copy_frame(&mut self, frame: RawFrame<'_>) -> PoolBytes {
        self.copier.copy(frame.header_bytes(), frame.payload())
    }

    /// Whether commands wait for room: the worker must stop reading until they are gone.
    pub(crate) fn is_backlogged(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// The next delivery from the world, if any.
    pub(crate) fn next_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.pop()
    }

    /// Moves what it can of the backlog into the ring and wakes the world if anything was sent this
    /// turn. Called once at the end of every loop turn.
    pub(crate) fn end_turn(&mut self) {
        while let Some(command) = self.backlog.pop_front() {
            match self.commands.push(command) {
                Ok(()) => self.pushed = true,
                Err(command) => {
                    self.backlog.push_front(command);
                    break;
                }
            }
        }
        if std::mem::take(&mut self.pushed) {
            self.world_thread.unpark();
        }
    }

    /// Called before the loop blocks for events: returns whether it may (no delivery waits). From
    /// then on the world wakes the loop for its next delivery.
    pub(crate) fn may_wait(&self) -> bool {
        self.waiting.store(true, Ordering::SeqCst);
        // Pairs with the fence in `WorldThread::wake_workers`: either the world sees `waiting` and
        // wakes us, or we see its delivery here (a store then a load of another location needs it).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.deliveries.is_empty() {
            true
        } else {
            self.waiting.store(false, Ordering::SeqCst);
            false
        }
    }

    /// Called once the loop is awake again.
    pub(crate) fn woke(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }
}

/// Copies small frames one after another into pool chunks (the heap when the pool is exhausted).
#[derive(Debug)]
struct FrameCopier {
    pool: Pool,
    current: Option<ChunkMut>,
}

impl FrameCopier {
    fn copy(&mut self, header: &[u8], payload: &[u8]) -> PoolBytes {
        let len = header.len() + payload.len();
        if self.current.as_ref().is_none_or(|chunk| chunk.remaining() < len) {
            self.current = if len <= self.pool.chunk_size() { self.pool.try_alloc() } else { None };
        }
        match &mut self.current {
            Some(chunk) => {
                let spare = chunk.spare_mut();
                spare[..header.len()].copy_from_slice(header);
                spare[header.len()..len].copy_from_slice(payload);
                chunk.advance(len);
                chunk.freeze()
            }
            None => PoolBytes::from_vec([header, payload].concat()),
        }
    }
}

/// The world thread's end of one worker's link.
struct WorkerLink {
    commands: Consumer<Command>,
    deliveries: Producer<Delivery>,
    /// Deliveries the ring had no room for, oldest first.
    overflow: VecDeque<Delivery>,
    waiting: Arc<AtomicBool>,
    /// Deliveries were pushed since the worker was last woken.
    delivered: bool,
}

impl WorkerLink {
    fn push(&mut self, delivery: Delivery) {
        self.delivered = true;
        if !self.overflow.is_empty() {
            self.overflow.push_back(delivery);
        } else if let Err(delivery) = self.deliveries.push(delivery) {
            self.overflow.push_back(delivery);
        }
    }

    fn drain_overflow(&mut self) {
        if self.deliveries.is_abandoned() {
            self.overflow.clear(); // The worker is gone: nobody left to deliver to.
            return;
        }
        while let Some(delivery) = self.overflow.pop_front() {
            if let Err(delivery) = self.deliveries.push(delivery) {
                self.overflow.push_front(delivery);
                return;
            }
            self.delivered = true;
        }
    }
}

/// Links one worker to the world thread: returns the worker's end and the world's end.
fn link(world_thread: Thread, pool: Pool, slots: usize) -> (RemoteWorld, WorkerLink) {
    let (command_tx, command_rx) = spsc(slots);
    let (delivery_tx, delivery_rx) = spsc(slots);
    let waiting = Arc::new(AtomicBool::new(false));
    let remote = RemoteWorld {
        commands: command_tx,
        deliveries: delivery_rx,
        backlog: VecDeque::new(),
        world_thread,
        pushed: false,
        waiting: Arc::clone(&waiting),
        copier: FrameCopier { pool, current: None },
    };
    let link = WorkerLink {
        commands: command_rx,
        deliveries: delivery_tx,
        overflow: VecDeque::new(),
        waiting,
        delivered: false,
    };
    (remote, link)
}

/// Starts the world thread for `pools.len()` workers (each link's frame copies use that worker's
/// pool); returns each worker's end of its link and the thread's handle, which returns, once every
/// worker is gone, how many frames it had to encode on the heap.
pub(crate) fn start<G: Game>(
    game: G,
    world_pool: Pool,
    pools: &[Pool],
    ring_slots: usize,
    shutdown: Arc<ShutdownState>,
) -> std::io::Result<(Vec<RemoteWorld>, std::thread::JoinHandle<u64>, ServerHandle<G>)> {
    let (links_tx, links_rx) = std::sync::mpsc::channel::<(Vec<WorkerLink>, GameInbox<G>)>();
    let handle = std::thread::Builder::new().name("gamewire-world".into()).spawn(move || {
        let Ok((links, inbox)) = links_rx.recv() else { return 0 };
        WorldThread::new(game, inbox, world_pool, links, shutdown).run()
    })?;
    let (remotes, links): (Vec<_>, Vec<_>) =
        pools.iter().map(|pool| link(handle.thread().clone(), pool.clone(), ring_slots)).unzip();
    let (inbox, server_handle) = crate::game::channel(GameWaker::Thread(handle.thread().clone()));
    links_tx.send((links, inbox)).map_err(|_| std::io::Error::other("the world thread ended at start"))?;
    Ok((remotes, handle, server_handle))
}

/// The game's state of one connection, as the world thread keeps it.
struct SessionSlot<S> {
    /// Which of its token's connections it belongs to.
    generation: u32,
    session: S,
    /// The session is over (a call returned [`Verdict::Close`], or the connection closed): the game
    /// gets no more calls for it.
    ended: bool,
}

/// The game, its sessions and its links.
struct WorldThread<G: Game> {
    game: G,
    /// Commands from the embedding program, the game's tick and its live counts.
    inbox: GameInbox<G>,
    links: Vec<WorkerLink>,
    /// `sessions[worker][token]`: the session of the connection on that token.
    sessions: Vec<Vec<Option<SessionSlot<G::Session>>>>,
    writer: FrameWriter,
    /// `players[id.index()]`: the worker and connection playing `id`.
    players: Vec<Option<(PlayerId, usize, ConnId)>>,
    /// Sessions the game ended ([`Outbox::end`]) in the call running now: closed once it returns.
    ended: Vec<(usize, ConnId)>,
    shutdown: Arc<ShutdownState>,
}

impl<G: Game> WorldThread<G> {
    fn new(
        game: G,
        inbox: GameInbox<G>,
        pool: Pool,
        links: Vec<WorkerLink>,
        shutdown: Arc<ShutdownState>,
    ) -> Self {
        let sessions = links.iter().map(|_| Vec::new()).collect();
        WorldThread {
            game,
            inbox,
            links,
            sessions,
            writer: FrameWriter::new(pool),
            players: Vec::new(),
            ended: Vec::new(),
            shutdown,
        }
    }

    fn run(mut self) -> u64 {
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        self.inbox.start(&self.game, Instant::now());
        loop {
            let mut busy = false;
            for link in &mut self.links {
                link.drain_overflow();
            }
            if self.links.iter().all(|link| link.overflow.is_empty()) {
                let now = Instant::now();
                'workers: for worker in 0..self.links.len() {
                    for _ in 0..COMMANDS_PER_TURN {
                        let Some(command) = self.links[worker].commands.pop() else { break };
                        busy = true;
                        self.handle(worker, command, now);
                        if self.links.iter().any(|link| !link.overflow.is_empty()) {
                            break 'workers; // No new command until the workers made room.
                        }
                    }
                }
                // The embedding program's commands and the tick, with the same backpressure.
                if self.links.iter().all(|link| link.overflow.is_empty()) {
                    let WorldThread { game, inbox, links, sessions, writer, players, ended, .. } = &mut self;
                    let mut out = WorldOutbox { links, writer, players, ended, sender: None };
                    // Each command and the tick is a call of its own: the sessions it ended are closed
                    // before the next one runs.
                    busy |= inbox.run(game, now, &mut out, |game, out| close_ended(game, sessions, out));
                }
            } else {
                busy = true; // Waiting for a worker to make room: come back soon.
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            self.wake_workers();
            if !busy {
                let abandoned = self.links.iter().all(|link| link.commands.is_abandoned());
                if abandoned && self.links.iter().all(|link| link.commands.is_empty()) {
                    return self.writer.heap_fallbacks;
                }
                let wake_at = self.inbox.next_tick().map_or(next_sweep, |tick| tick.min(next_sweep));
                let wait = wake_at.saturating_duration_since(Instant::now()).min(SWEEP_INTERVAL);
                std::thread::park_timeout(wait);
            } else if self.links.iter().any(|link| !link.overflow.is_empty()) {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Wakes each worker that got deliveries and is waiting for events.
    fn wake_workers(&mut self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        for (worker, link) in self.links.iter_mut().enumerate() {
            if std::mem::take(&mut link.delivered) && link.waiting.load(Ordering::SeqCst) {
                self.shutdown.wake_worker(worker);
            }
        }
    }

    fn handle(&mut self, worker: usize, command: Command, now: Instant) {
        match command {
            Command::Opened(conn, accepted_at) => {
                let session = self.game.open(accepted_at);
                let sessions = &mut self.sessions[worker];
                let token = conn.token as usize;
                if sessions.len() <= token {
                    sessions.resize_with(token + 1, || None);
                }
                sessions[token] = Some(SessionSlot { generation: conn.generation, session, ended: false });
            }
            Command::Frame(conn, bytes, completed_at) => {
                let Some((frame, _)) = RawFrame::split_from(&bytes) else { return };
                self.with_session(worker, conn, |game, session, out| {
                    crate::game::handle_frame(game, now, completed_at, session, frame, out)
                });
            }
            Command::Expire(conn) => {
                self.with_session(worker, conn, |game, session, out| game.poll_timeout(now, session, out));
            }
            Command::Fail(conn, code) => {
                self.with_session(worker, conn, |game, session, out| game.fail(session, code, out));
            }
            Command::Closed(conn) => {
                self.with_session(worker, conn, |game, session, out| {
                    game.close(session, out);
                    Verdict::Close // the worker is already closing it
                });
                let token = conn.token as usize;
                let sessions = &mut self.sessions[worker];
                if sessions
                    .get(token)
                    .and_then(Option::as_ref)
                    .is_some_and(|slot| slot.generation == conn.generation)
                {
                    sessions[token] = None;
                }
            }
        }
        self.inbox.publish(&self.game);
    }

    /// Runs `f` on the session of `conn` (unless it has ended) with an outbox whose sender is `conn`,
    /// then keeps the routing in step with the session: bound once it has a player, unbound once it
    /// ends.
    fn with_session(
        &mut self,
        worker: usize,
        conn: ConnId,
        f: impl FnOnce(&mut G, &mut G::Session, &mut WorldOutbox<'_>) -> Verdict,
    ) {
        let WorldThread { game, links, sessions, writer, players, ended, .. } = self;
        let token = conn.token as usize;
        let Some(Some(slot)) = sessions[worker].get_mut(token) else { return };
        if slot.generation != conn.generation || slot.ended {
            return;
        }
        let had_player = game.player(&slot.session);
        let verdict = f(
            game,
            &mut slot.session,
            &mut WorldOutbox { links, writer, players, ended, sender: Some((worker, conn)) },
        );
        let has_player = if verdict == Verdict::Close { None } else { game.player(&slot.session) };
        match (had_player, has_player) {
            (None, Some(id)) => {
                if players.len() <= id.index() {
                    players.resize(id.index() + 1, None);
                }
                players[id.index()] = Some((id, worker, conn));
                links[worker].push(Delivery::Bound(conn, id.get()));
            }
            (Some(id), None) => unbind(players, id),
            (Some(old), Some(new)) if old != new => {
                unbind(players, old);
                if players.len() <= new.index() {
                    players.resize(new.index() + 1, None);
                }
                players[new.index()] = Some((new, worker, conn));
                links[worker].push(Delivery::Bound(conn, new.get()));
            }
            _ => {}
        }
        if verdict == Verdict::Close {
            slot.ended = true;
            links[worker].push(Delivery::End(conn));
        }
        if !ended.is_empty() {
            close_ended(game, sessions, &mut WorldOutbox { links, writer, players, ended, sender: None });
        }
    }

    /// Tells the workers of sessions past their deadline (each is asked again at every sweep until
    /// it answers or a frame comes).
    fn sweep(&mut self, now: Instant) {
        for worker in 0..self.links.len() {
            for token in 0..self.sessions[worker].len() {
                let Some(slot) = &self.sessions[worker][token] else { continue };
                if slot.ended || self.game.deadline(&slot.session).is_none_or(|deadline| now < deadline) {
                    continue;
                }
                let conn = ConnId { token: token as u32, generation: slot.generation };
                self.links[worker].push(Delivery::Expired(conn));
            }
        }
    }
}

/// Calls [`Game::close`] on each session the game ended ([`Outbox::end`]) and tells its worker to drain
/// the connection, in the order they were ended; a `close` that ends more is followed to the last.
fn close_ended<G: Game>(
    game: &mut G,
    sessions: &mut [Vec<Option<SessionSlot<G::Session>>>],
    out: &mut WorldOutbox<'_>,
) {
    let mut next = 0;
    while let Some(&(worker, conn)) = out.ended.get(next) {
        next += 1;
        let Some(Some(slot)) = sessions[worker].get_mut(conn.token as usize) else { continue };
        if slot.generation != conn.generation || slot.ended {
            continue; // It also ended another way in the same call.
        }
        slot.ended = true;
        // `Sender` reaches nothing, as on one worker, where the ended connection's queue is sealed.
        out.sender = None;
        game.close(&mut slot.session, out);
        // After the frames sent to it before the end, on the same ring: they arrive first.
        out.links[worker].push(Delivery::End(conn));
    }
    out.ended.clear();
}

fn unbind(players: &mut [Option<(PlayerId, usize, ConnId)>], id: PlayerId) {
    if let Some(entry) = players.get_mut(id.index())
        && entry.is_some_and(|(bound, _, _)| bound == id)
    {
        *entry = None;
    }
}

/// The world's outbox on the world thread: each frame encoded once into the world's pool, a reference
/// pushed to each recipient's worker.
struct WorldOutbox<'a> {
    links: &'a mut [WorkerLink],
    writer: &'a mut FrameWriter,
    players: &'a mut [Option<(PlayerId, usize, ConnId)>],
    /// Sessions ended in this call ([`Outbox::end`]), for [`close_ended`].
    ended: &'a mut Vec<(usize, ConnId)>,
    /// The connection whose frame is handled; `None` in a tick or a command, which have none.
    sender: Option<(usize, ConnId)>,
}

impl WorldOutbox<'_> {
    fn route(&self, id: PlayerId) -> Option<(usize, ConnId)> {
        match self.players.get(id.index()).copied().flatten() {
            Some((bound, worker, conn)) if bound == id => Some((worker, conn)),
            _ => None,
        }
    }
}

impl Outbox for WorldOutbox<'_> {
    fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
        let fatal = packet.is_fatal();
        let reliable = packet.channel() == gamewire_proto::Channel::Reliable;
        match to {
            Recipients::Sender => {
                let Some((worker, conn)) = self.sender else { return };
                let frame = self.writer.encode(player_id, packet);
                self.links[worker].push(Delivery::Frame { conn, frame, fatal, reliable });
            }
            Recipients::One(id) => {
                if let Some((worker, conn)) = self.route(id) {
                    let frame = self.writer.encode(player_id, packet);
                    self.links[worker].push(Delivery::Frame { conn, frame, fatal, reliable });
                }
            }
            Recipients::Many(ids) => {
                if ids.is_empty() {
                    return;
                }
                let frame = self.writer.encode(player_id, packet);
                for &id in ids {
                    if let Some((worker, conn)) = self.route(id) {
                        self.links[worker].push(Delivery::Frame {
                            conn,
                            frame: frame.clone(),
                            fatal,
                            reliable,
                        });
                    }
                }
            }
        }
    }

    fn end(&mut self, player: PlayerId) {
        let Some((worker, conn)) = self.route(player) else { return };
        // Unrouted at once: frames sent to it from now on are dropped here, those already pushed
        // reach it ahead of the `Delivery::End` that `close_ended` pushes behind them.
        unbind(self.players, player);
        if self.sender == Some((worker, conn)) {
            self.sender = None;
        }
        self.ended.push((worker, conn));
    }
}
