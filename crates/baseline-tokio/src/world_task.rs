//! The one task that owns the `World`: it applies connection commands in order, fans frames out to the
//! connections' channels, and enforces the HELLO and idle timeouts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gamewire_proto::{Encode, ErrorCode, RawFrame, encode_frame, frame_len};
use gamewire_world::{Outbox, PlayerId, Recipients, Session, Verdict, World};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How often the HELLO and idle deadlines are checked; also bounds how late a timeout fires. Same
/// period as gamewire's sweep.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Commands taken from the channel per wake-up: one clock read and one wake-up serve them all.
const COMMAND_BATCH: usize = 256;
/// Size of the blocks outgoing frames are carved from. A frame is encoded once into the current block
/// and shared by every recipient; a block is freed when the last frame cut from it has been written.
const ENCODE_BLOCK: usize = 64 * 1024;

/// Identifies a connection for its whole life. Never reused, so a late command about a connection
/// that is gone cannot reach a newer one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(pub(crate) u64);

/// What a connection task tells the world task, in the order things happened on its socket.
#[derive(Debug)]
pub(crate) enum Command {
    /// A connection opened; frames for it go into `frames`.
    Connected { conn: ConnId, frames: mpsc::Sender<Bytes> },
    /// A complete frame arrived (header and payload, already checked by the codec).
    Frame { conn: ConnId, frame: BytesMut },
    /// The connection broke the protocol in a way only the I/O side sees (a bad header, a frame left
    /// unfinished): end its session with this fatal ERROR.
    Fail { conn: ConnId, code: ErrorCode },
    /// The peer closed or the socket failed: the player leaves.
    Closed { conn: ConnId },
}

/// Counters logged when the server stops.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WorldStats {
    /// Connections the world saw open.
    pub(crate) connections: u64,
    /// Complete frames received from clients.
    pub(crate) frames_in: u64,
    /// Frames queued to clients, counted once per recipient.
    pub(crate) frames_out: u64,
    /// Connections cut off because their channel was full.
    pub(crate) slow_consumers: u64,
}

/// A connection as the world task sees it.
#[derive(Debug)]
struct Connection {
    session: Session,
    frames: mpsc::Sender<Bytes>,
    /// The player it plays, once WELCOMEd: its route must be removed when it closes.
    player: Option<PlayerId>,
}

/// Where frames for a player go.
#[derive(Debug)]
struct Route {
    player: PlayerId,
    conn: ConnId,
    frames: mpsc::Sender<Bytes>,
}

/// The world and everything needed to deliver what it produces.
#[derive(Debug)]
struct WorldTask {
    world: World,
    connections: HashMap<ConnId, Connection>,
    /// `routes[id.index()]`: the connection playing `id` (player indices are dense).
    routes: Vec<Option<Route>>,
    /// Connections whose channel was full during the current call: cut off once it returns.
    slow: Vec<ConnId>,
    encoder: BytesMut,
    stats: WorldStats,
}

/// Runs the world until `shutdown` is cancelled (then every client gets ERROR(SHUTTING_DOWN)) or every
/// command sender is gone.
pub(crate) async fn run(
    world: World,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) -> WorldStats {
    let mut task = WorldTask {
        world,
        connections: HashMap::new(),
        routes: Vec::new(),
        slow: Vec::new(),
        encoder: BytesMut::with_capacity(ENCODE_BLOCK),
        stats: WorldStats::default(),
    };
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(COMMAND_BATCH);
    let mut expired = Vec::new();
    loop {
        tokio::select! {
            received = commands.recv_many(&mut batch, COMMAND_BATCH) => {
                if received == 0 {
                    break;
                }
                let now = Instant::now();
                for command in batch.drain(..) {
                    task.apply(now, command);
                }
            }
            _ = sweep.tick() => task.sweep(Instant::now(), &mut expired),
            () = shutdown.cancelled() => {
                // Apply what is already queued first, so that a connection accepted just before the
                // signal is in the map and gets its ERROR(SHUTTING_DOWN) too; senders still waiting
                // on a full channel are refused from here on.
                commands.close();
                let now = Instant::now();
                while let Ok(command) = commands.try_recv() {
                    task.apply(now, command);
                }
                task.shut_down_all();
                break;
            }
        }
    }
    task.stats
}

impl WorldTask {
    fn apply(&mut self, now: Instant, command: Command) {
        match command {
            Command::Connected { conn, frames } => {
                self.stats.connections += 1;
                self.connections
                    .insert(conn, Connection { session: Session::new(now), frames, player: None });
            }
            Command::Frame { conn, frame } => {
                self.stats.frames_in += 1;
                self.handle_frame(now, conn, &frame);
            }
            Command::Fail { conn, code } => self.fail(conn, code),
            Command::Closed { conn } => self.closed(conn),
        }
        self.settle();
    }

    fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: &[u8]) {
        let WorldTask { world, connections, routes, slow, encoder, stats } = self;
        // Frames still in flight for a connection the world already closed are dropped.
        let Some(connection) = connections.get_mut(&conn) else { return };
        let mut out =
            Outgoing { sender: conn, sender_frames: &connection.frames, routes, slow, encoder, stats };
        let verdict = match RawFrame::split_from(frame) {
            Some((raw, _)) => world.handle(now, &mut connection.session, raw, &mut out),
            // The codec only yields whole frames; should that ever break, answer instead of panicking.
            None => world.fail(&mut connection.session, ErrorCode::Malformed, &mut out),
        };
        if verdict == Verdict::Close {
            self.remove(conn);
            return;
        }
        // Route frames addressed to the player from its WELCOME on: the next frame (a MOVE right behind
        // the HELLO) may already produce some.
        if connection.player.is_none()
            && let Some(id) = connection.session.player()
        {
            connection.player = Some(id);
            if routes.len() <= id.index() {
                routes.resize_with(id.index() + 1, || None);
            }
            routes[id.index()] = Some(Route { player: id, conn, frames: connection.frames.clone() });
        }
    }

    /// Ends `conn`'s session with the fatal ERROR `code`; its writer sends what is queued, ERROR last.
    fn fail(&mut self, conn: ConnId, code: ErrorCode) {
        let WorldTask { world, connections, routes, slow, encoder, stats } = self;
        let Some(connection) = connections.get_mut(&conn) else { return };
        let mut out =
            Outgoing { sender: conn, sender_frames: &connection.frames, routes, slow, encoder, stats };
        let _ = world.fail(&mut connection.session, code, &mut out);
        self.remove(conn);
    }

    /// The peer is gone: its player leaves, nothing more is sent to it.
    fn closed(&mut self, conn: ConnId) {
        let Some(mut connection) = self.remove(conn) else { return };
        let WorldTask { world, routes, slow, encoder, stats, .. } = self;
        let mut out =
            Outgoing { sender: conn, sender_frames: &connection.frames, routes, slow, encoder, stats };
        world.close(&mut connection.session, &mut out);
    }

    /// Forgets `conn`. Dropping its senders closes its channel: its writer flushes what is queued, shuts
    /// the write side down and ends.
    fn remove(&mut self, conn: ConnId) -> Option<Connection> {
        let connection = self.connections.remove(&conn)?;
        if let Some(id) = connection.player
            && let Some(slot) = self.routes.get_mut(id.index())
            && slot.as_ref().is_some_and(|route| route.player == id)
        {
            *slot = None;
        }
        Some(connection)
    }

    /// Cuts off every connection whose channel filled up. Cutting one off sends LEAVE to its viewers,
    /// which can fill another, so this runs until none is left.
    fn settle(&mut self) {
        while let Some(conn) = self.slow.pop() {
            if self.connections.contains_key(&conn) {
                self.stats.slow_consumers += 1;
                tracing::debug!(?conn, "channel full: cutting off a slow consumer");
                // Best effort: the ERROR only fits if the writer has made room meanwhile.
                self.fail(conn, ErrorCode::SlowConsumer);
            }
        }
    }

    /// Enforces the HELLO and idle deadlines. O(connections), every [`SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant, expired: &mut Vec<ConnId>) {
        let config = self.world.config();
        expired.clear();
        expired.extend(
            self.connections
                .iter()
                .filter(|(_, connection)| now >= connection.session.deadline(config))
                .map(|(&conn, _)| conn),
        );
        for &conn in expired.iter() {
            let WorldTask { world, connections, routes, slow, encoder, stats } = self;
            let Some(connection) = connections.get_mut(&conn) else { continue };
            let mut out =
                Outgoing { sender: conn, sender_frames: &connection.frames, routes, slow, encoder, stats };
            if world.poll_timeout(now, &mut connection.session, &mut out) == Verdict::Close {
                self.remove(conn);
            }
            self.settle();
        }
    }

    /// Every open session gets ERROR(SHUTTING_DOWN) after what is already queued for it.
    fn shut_down_all(&mut self) {
        tracing::info!(connections = self.connections.len(), "shutting down: draining");
        let all: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in all {
            self.fail(conn, ErrorCode::ShuttingDown);
            self.settle();
        }
    }
}

/// The route of player `id`, if it is still the player bound there (not a stale id of a former one).
fn route(routes: &[Option<Route>], id: PlayerId) -> Option<&Route> {
    routes.get(id.index())?.as_ref().filter(|route| route.player == id)
}

/// The world's [`Outbox`]: encodes each frame once and queues a shared `Bytes` on every recipient's
/// channel, never waiting (a full channel marks a slow consumer instead).
struct Outgoing<'a> {
    /// The connection whose frame or timeout is being handled: [`Recipients::Sender`].
    sender: ConnId,
    sender_frames: &'a mpsc::Sender<Bytes>,
    routes: &'a [Option<Route>],
    slow: &'a mut Vec<ConnId>,
    encoder: &'a mut BytesMut,
    stats: &'a mut WorldStats,
}

impl Outgoing<'_> {
    /// Encodes the frame into the current block (a new one when it is used up) and cuts it off as an
    /// immutable, reference-counted `Bytes`.
    fn encode<P: Encode + ?Sized>(&mut self, player_id: u32, packet: &P) -> Bytes {
        let len = frame_len(packet);
        if self.encoder.capacity() < len {
            self.encoder.reserve(ENCODE_BLOCK.max(len));
        }
        self.encoder.resize(len, 0);
        encode_frame(player_id, packet, &mut self.encoder[..]);
        self.encoder.split().freeze()
    }

    fn deliver(&mut self, conn: ConnId, frames: &mpsc::Sender<Bytes>, frame: Bytes) {
        // Once a frame to a connection is lost, later ones would leave a gap: it gets nothing more
        // until it is cut off (the list is almost always empty).
        if self.slow.contains(&conn) {
            return;
        }
        match frames.try_send(frame) {
            Ok(()) => self.stats.frames_out += 1,
            Err(TrySendError::Full(_)) => self.slow.push(conn),
            // The writer is gone (its socket failed); its reader is telling us so.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

impl Outbox for Outgoing<'_> {
    fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
        match to {
            Recipients::Sender => {
                let frame = self.encode(player_id, packet);
                let (conn, frames) = (self.sender, self.sender_frames);
                self.deliver(conn, frames, frame);
            }
            Recipients::One(id) => {
                if let Some(route) = route(self.routes, id) {
                    let frame = self.encode(player_id, packet);
                    self.deliver(route.conn, &route.frames, frame);
                }
            }
            Recipients::Many(ids) => {
                if ids.is_empty() {
                    return;
                }
                let frame = self.encode(player_id, packet);
                for &id in ids {
                    if let Some(route) = route(self.routes, id) {
                        self.deliver(route.conn, &route.frames, frame.clone());
                    }
                }
            }
        }
    }

    fn end(&mut self, player: PlayerId) {
        // This baseline serves protocol v1's `World` only, which ends a session through the verdict
        // of a call about it, never from outside: failing loudly beats a session left open.
        unreachable!("the world ended player {player} from outside a call about its session");
    }
}
