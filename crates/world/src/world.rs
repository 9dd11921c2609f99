//! The world: players, sessions and every rule of protocol v1, driven by frames and time passed in.

use std::time::{Duration, Instant};

use gamewire_proto::little_endian::{F32, U32, U64};
use gamewire_proto::{
    EnterHead, ErrorCode, Hit, LastFrame, Move, NAME_MAX, Packet, PacketKind, PacketSet, RawFrame, Welcome,
};

use crate::geometry::{Grid, GridSlot, Position};
use crate::rate::TokenBucket;
use crate::{Config, ConfigError, Game, Outbox, PlayerId, Recipients, Verdict};

/// Largest |y| a position may have: a MOVE higher or deeper than this is refused.
pub const MAX_HEIGHT: f32 = 10_000.0;
/// Slack added to the elapsed time of the speed check, in seconds (protocol v1: + 0.1 s).
const SPEED_SLACK_SECS: f64 = 0.1;
/// A player hears RATE_LIMITED at most this often.
const RATE_ERROR_INTERVAL: Duration = Duration::from_secs(1);
/// Sustained abuse: the window over which a player's refused packets of one kind are counted.
const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// Sustained abuse: refusals of one kind within one [`ABUSE_WINDOW`] that end the session, in
/// seconds' worth of the kind's rate. 80 = refused at 8 x the rate for the whole window, i.e. sent at
/// 9 x the limit or more (protocol.md section 8, interpretation 40).
const ABUSE_REFUSED_SECONDS: f32 = 80.0;

/// The protocol state of one connection, owned by the I/O layer and passed into the world with every
/// frame.
///
/// It knows whether the connection has said HELLO, which player it plays, and when it times out
/// ([`Session::deadline`]); the I/O layer keeps one per connection and calls
/// [`World::poll_timeout`] once the deadline passes.
///
/// # Examples
///
/// A connection that never says HELLO, on a fake clock:
///
/// ```
/// use std::time::{Duration, Instant};
///
/// use gamewire_proto::{Encode, ErrorCode, Packet, RawFrame, encode_frame_to_vec};
/// use gamewire_world::{Config, Outbox, PlayerId, Recipients, Session, Verdict, World};
///
/// /// Keeps every frame, whoever it is for.
/// #[derive(Default)]
/// struct Frames(Vec<Vec<u8>>);
///
/// impl Outbox for Frames {
///     fn send<P: Encode + ?Sized>(&mut self, _to: Recipients<'_>, player_id: u32, packet: &P) {
///         self.0.push(encode_frame_to_vec(player_id, packet));
///     }
///     fn end(&mut self, _player: PlayerId) {} // protocol v1 ends only the sender's session
/// }
///
/// let mut world = World::new(Config::default())?;
/// let opened = Instant::now();
/// let mut session = Session::new(opened);
/// let mut out = Frames::default();
///
/// // No HELLO yet: it has `hello_timeout` (5 s by default) to send one.
/// assert_eq!(session.deadline(world.config()), opened + Duration::from_secs(5));
/// let later = |seconds| opened + Duration::from_secs(seconds);
/// assert_eq!(world.poll_timeout(later(4), &mut session, &mut out), Verdict::Continue);
/// assert_eq!(world.poll_timeout(later(5), &mut session, &mut out), Verdict::Close);
///
/// let (frame, _) = RawFrame::split_from(&out.0[0]).unwrap();
/// assert_eq!(frame.packet()?, Packet::Error { code: ErrorCode::Timeout.code(), message: "timed out" });
/// assert!(session.is_closed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    state: SessionState,
    opened_at: Instant,
    last_packet_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionState {
    AwaitingHello,
    Playing(PlayerId),
    Closed,
}

impl Session {
    /// A connection opened at `now` that has yet to send HELLO.
    pub fn new(now: Instant) -> Self {
        Session { state: SessionState::AwaitingHello, opened_at: now, last_packet_at: now }
    }

    /// The player this session plays, once WELCOMEd and until closed.
    pub fn player(&self) -> Option<PlayerId> {
        match self.state {
            SessionState::Playing(id) => Some(id),
            _ => None,
        }
    }

    /// The `player_id` the server puts in headers of frames addressed to this session's own
    /// connection: its id, or 0 before WELCOME.
    pub fn header_id(&self) -> u32 {
        self.player().map_or(0, PlayerId::get)
    }

    /// Whether the session has ended (the connection only waits to be flushed and closed).
    pub fn is_closed(&self) -> bool {
        self.state == SessionState::Closed
    }

    /// When the session times out if nothing arrives: the HELLO deadline before WELCOME, the idle
    /// deadline after.
    pub fn deadline(&self, config: &Config) -> Instant {
        match self.state {
            SessionState::AwaitingHello => self.opened_at + config.hello_timeout,
            _ => self.last_packet_at + config.idle_timeout,
        }
    }
}

/// A read-only view of a player, from [`World::player`] and [`World::players`]: for tests, tools and an
/// admin console.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlayerInfo<'a> {
    /// Its id.
    pub id: PlayerId,
    /// The name it sent in HELLO.
    pub name: &'a str,
    /// Its last accepted position.
    pub position: Position,
    /// Its hit points.
    pub hp: u32,
}

#[derive(Debug)]
struct Player {
    id: PlayerId,
    name: [u8; NAME_MAX],
    name_len: u8,
    position: Position,
    accepted_at: Instant,
    hp: u32,
    grid_slot: GridSlot,
    moves: TokenBucket,
    chats: TokenBucket,
    attacks: TokenBucket,
    pings: TokenBucket,
    rate_error_at: Option<Instant>,
    /// Sustained-abuse windows, one per limited kind (MOVE, CHAT, ATTACK, PING).
    abuse: [AbuseWindow; 4],
}

/// Refusals of one kind counted over a tumbling window that a refusal opens.
#[derive(Clone, Copy, Debug, Default)]
struct AbuseWindow {
    opened_at: Option<Instant>,
    refused: u32,
}

impl AbuseWindow {
    /// Counts one refusal at `now`; true when the window holds `limit` of them.
    fn refuse(&mut self, now: Instant, limit: u32) -> bool {
        match self.opened_at {
            Some(at) if now.saturating_duration_since(at) < ABUSE_WINDOW => self.refused += 1,
            _ => {
                self.opened_at = Some(now);
                self.refused = 1;
            }
        }
        self.refused >= limit
    }
}

/// Refusals within one [`ABUSE_WINDOW`] that end a session for a kind limited to `rate`.
fn abuse_limit(rate: crate::Rate) -> u32 {
    // Rates are validated positive and finite; `as` saturates, and at least one refusal is needed.
    ((rate.per_second * ABUSE_REFUSED_SECONDS).ceil() as u32).max(1)
}

impl Player {
    fn name(&self) -> &str {
        // Names are copied from a parsed HELLO, so they are valid UTF-8; never fail on a peer's bytes.
        std::str::from_utf8(&self.name[..self.name_len as usize]).unwrap_or_default()
    }

    fn enter_head(&self) -> EnterHead {
        EnterHead {
            x: F32::new(self.position.x),
            y: F32::new(self.position.y),
            z: F32::new(self.position.z),
            hp: U32::new(self.hp),
        }
    }
}

/// Reusable lists of recipients, so that no packet allocates once they have grown to the crowd size.
#[derive(Debug, Default)]
struct Scratch {
    kept: Vec<PlayerId>,
    entered: Vec<PlayerId>,
    left: Vec<PlayerId>,
}

/// Players, their positions and every rule of protocol v1: the reference game, which
/// `gamewire_net::Server::bind` serves (it implements [`Game`]).
///
/// The world does no I/O and reads no clock: the caller passes `now` and an [`Outbox`] into every
/// call. Calls must be made in this order for each connection: [`Session::new`] when it opens;
/// [`World::handle`] for each complete frame; [`World::poll_timeout`] whenever its
/// [`Session::deadline`] passes; [`World::fail`] for a violation the I/O layer finds itself (a bad
/// header, a partial frame left unfinished, a slow consumer); [`World::close`] when it closes for any
/// other reason. A [`Verdict::Close`] means the world has already removed the player.
///
/// # Examples
///
/// Driving a world by hand, as the I/O layer (or a test) does: two connections say HELLO, each is
/// WELCOMEd and sees the other enter, then one closes and the other sees it leave. The [`Outbox`]
/// records what the world sends instead of writing to sockets.
///
/// ```
/// use std::time::Instant;
///
/// use gamewire_proto::{Encode, Packet, RawFrame, encode_frame_to_vec};
/// use gamewire_world::{Config, Outbox, PlayerId, Recipients, Session, Verdict, World};
///
/// /// Records each frame, encoded as its recipients would receive it.
/// #[derive(Debug, Default)]
/// struct Recorder {
///     /// Frames for the connection being handled.
///     to_sender: Vec<Vec<u8>>,
///     /// Frames for other players, each with its recipient.
///     to_players: Vec<(PlayerId, Vec<u8>)>,
/// }
///
/// impl Outbox for Recorder {
///     fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
///         let frame = encode_frame_to_vec(player_id, packet);
///         match to {
///             Recipients::Sender => self.to_sender.push(frame),
///             Recipients::One(id) => self.to_players.push((id, frame)),
///             Recipients::Many(ids) => self.to_players.extend(ids.iter().map(|&id| (id, frame.clone()))),
///         }
///     }
///     fn end(&mut self, _player: PlayerId) {} // protocol v1 ends only the sender's session
/// }
///
/// /// What the I/O layer does with each complete frame it reads from `session`'s connection.
/// fn receive(world: &mut World, session: &mut Session, bytes: &[u8], out: &mut Recorder) -> Verdict {
///     let (frame, _) = RawFrame::split_from(bytes).expect("one whole frame");
///     world.handle(Instant::now(), session, frame, out)
/// }
///
/// // Everyone spawns at (100, 100), so everyone sees everyone.
/// let mut world = World::new(Config { spawn: Some((100.0, 100.0)), ..Config::default() })?;
/// let mut out = Recorder::default();
///
/// // A connection opens and says HELLO: the world answers it with WELCOME.
/// let mut ada = Session::new(Instant::now());
/// let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
/// assert_eq!(receive(&mut world, &mut ada, &hello, &mut out), Verdict::Continue);
/// let ada_id = ada.player().expect("ada joined");
/// let welcome = out.to_sender.pop().unwrap();
/// let (frame, _) = RawFrame::split_from(&welcome).unwrap();
/// let Packet::Welcome(welcome) = frame.packet()? else { panic!("expected WELCOME") };
/// assert_eq!(frame.player_id(), ada_id.get(), "the header carries the new player's id");
/// assert_eq!((welcome.x.get(), welcome.z.get()), (100.0, 100.0));
///
/// // A second player joins beside her: it gets WELCOME then ENTER(ada); ada gets ENTER(bob).
/// let mut bob = Session::new(Instant::now());
/// let hello = encode_frame_to_vec(0, &Packet::Hello { name: "bob" });
/// assert_eq!(receive(&mut world, &mut bob, &hello, &mut out), Verdict::Continue);
/// let bob_id = bob.player().expect("bob joined");
/// assert_eq!(out.to_sender.len(), 2);
/// let (to, enter) = &out.to_players[0];
/// let (frame, _) = RawFrame::split_from(enter).unwrap();
/// assert_eq!((*to, frame.player_id()), (ada_id, bob_id.get()));
/// assert!(matches!(frame.packet()?, Packet::Enter { name: "bob", .. }));
/// let mut seen = Vec::new();
/// world.visible_to(ada_id, &mut seen);
/// assert_eq!(seen, [bob_id]);
///
/// // Bob's connection closes: ada sees him leave.
/// let mut out = Recorder::default();
/// world.close(&mut bob, &mut out);
/// assert_eq!(out.to_players, [(ada_id, encode_frame_to_vec(bob_id.get(), &Packet::Leave))]);
/// assert_eq!(world.player_count(), 1);
/// assert_eq!(world.player(ada_id).map(|ada| ada.name), Some("ada"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct World {
    config: Config,
    slots: Vec<Option<Player>>,
    generations: Vec<u32>,
    free_slots: Vec<u32>,
    player_count: usize,
    grid: Grid,
    rng: fastrand::Rng,
    scratch: Scratch,
}

impl World {
    /// An empty world with `config`'s rules.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if `config` does not [validate](Config::validate).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(World {
            grid: Grid::new(config.world_w, config.world_h, config.aoi_radius),
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            slots: Vec::new(),
            generations: Vec::new(),
            free_slots: Vec::new(),
            player_count: 0,
            scratch: Scratch::default(),
        })
    }

    /// The parameters in force (e.g. for [`Session::deadline`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Players currently in the world.
    pub fn player_count(&self) -> usize {
        self.player_count
    }

    /// A view of player `id`, if it is in the world.
    pub fn player(&self, id: PlayerId) -> Option<PlayerInfo<'_>> {
        self.get(id).map(|p| PlayerInfo { id: p.id, name: p.name(), position: p.position, hp: p.hp })
    }

    /// Every player in the world, in slot order.
    pub fn players(&self) -> impl Iterator<Item = PlayerInfo<'_>> {
        self.slots.iter().flatten().map(|p| PlayerInfo {
            id: p.id,
            name: p.name(),
            position: p.position,
            hp: p.hp,
        })
    }

    /// Appends to `out` every player that `id` sees, found through the grid.
    pub fn visible_to(&self, id: PlayerId, out: &mut Vec<PlayerId>) {
        if let Some(player) = self.get(id) {
            self.collect_viewers(id, player.position, out);
        }
    }

    fn get(&self, id: PlayerId) -> Option<&Player> {
        self.slots.get(id.index())?.as_ref().filter(|p| p.id == id)
    }

    fn get_mut(&mut self, id: PlayerId) -> Option<&mut Player> {
        self.slots.get_mut(id.index())?.as_mut().filter(|p| p.id == id)
    }

    fn player_at(&self, index: u32) -> &Player {
        self.slots[index as usize].as_ref().expect("grid entries are live players")
    }

    /// Appends every player other than `except` within the radius of `position`.
    fn collect_viewers(&self, except: PlayerId, position: Position, out: &mut Vec<PlayerId>) {
        let radius = self.config.aoi_radius;
        self.grid.for_each_in(self.grid.block_around(position), |index, _| {
            let other = self.player_at(index);
            if other.id != except && other.position.within(position, radius) {
                out.push(other.id);
            }
        });
    }

    /// Handles one complete frame from `session`'s connection at `now`, the frame having completed
    /// then too (see [`World::handle_completed_at`] for a frame the I/O layer read late).
    ///
    /// Checks, in the protocol's order, the header `player_id` (SPOOFED_ID), the session state
    /// (BAD_STATE), the payload (MALFORMED) and the rate limits (RATE_LIMITED), then applies the rule.
    /// The I/O layer has already refused TOO_LARGE and UNKNOWN_PACKET headers. A frame handled at or
    /// after the session's [`Session::deadline`] ends it with TIMEOUT instead, as
    /// [`World::poll_timeout`] would have.
    pub fn handle(
        &mut self,
        now: Instant,
        session: &mut Session,
        frame: RawFrame<'_>,
        out: &mut impl Outbox,
    ) -> Verdict {
        self.handle_completed_at(now, now, session, frame, out)
    }

    /// [`World::handle`] for a frame that completed at the socket at `completed_at`, earlier than
    /// `now` when the I/O layer did not read it at once (it paused reading for memory pressure, or
    /// another connection had its turn): the session's deadline is judged at `completed_at`, since
    /// the time the server left the bytes unread is not the client's fault (protocol.md section 8,
    /// #14 and #34); the rules (speed check, rate limits) and the idle clock run at `now`, when the
    /// server learns of the frame.
    pub fn handle_completed_at(
        &mut self,
        now: Instant,
        completed_at: Instant,
        session: &mut Session,
        frame: RawFrame<'_>,
        out: &mut impl Outbox,
    ) -> Verdict {
        if session.is_closed() {
            return Verdict::Close;
        }
        // The I/O layer may poll timeouts coarsely or read before it polls: a frame that completed
        // once the deadline had passed must not rescue the session ("HELLO within 5 s", idle timeout).
        if completed_at.min(now) >= session.deadline(&self.config) {
            return self.fail(session, ErrorCode::Timeout, out);
        }
        session.last_packet_at = now;
        let Some(kind) = PacketKind::from_id(frame.packet_id()).filter(|k| k.is_client_sendable()) else {
            return self.fail(session, ErrorCode::UnknownPacket, out);
        };
        let claimed = frame.player_id();
        if claimed != 0 && claimed != session.header_id() {
            return self.fail(session, ErrorCode::SpoofedId, out);
        }
        let player = match (session.state, kind) {
            (SessionState::AwaitingHello, PacketKind::Hello) => None,
            (SessionState::Playing(id), kind) if kind != PacketKind::Hello => Some(id),
            _ => return self.fail(session, ErrorCode::BadState, out),
        };
        let packet = match frame.packet() {
            Ok(packet) => packet,
            Err(error) => return self.fail(session, error.error_code(), out),
        };
        let Some(id) = player else {
            let Packet::Hello { name } = packet else { unreachable!("kind is HELLO") };
            return self.join(now, session, name, out);
        };
        match self.take_token(id, kind, now, out) {
            Token::Taken => {}
            Token::Refused => return Verdict::Continue,
            Token::Abuse => {
                // Sustained abuse: RATE_LIMITED, this time as the last frame (interpretation 40), so
                // it passes a full send queue as a fatal ERROR would: a flooder that does not read
                // still learns why it was cut off.
                let code = ErrorCode::RateLimited;
                let last = Packet::Error { code: code.code(), message: error_message(code) };
                out.send(Recipients::Sender, id.get(), &LastFrame(&last));
                self.close(session, out);
                return Verdict::Close;
            }
        }
        match packet {
            Packet::Move(claimed) => self.handle_move(now, id, claimed, out),
            Packet::Chat { text } => {
                let position = self.get(id).expect("session's player exists").position;
                let mut viewers = std::mem::take(&mut self.scratch.kept);
                viewers.clear();
                self.collect_viewers(id, position, &mut viewers);
                out.send(Recipients::Many(&viewers), id.get(), &Packet::Chat { text });
                self.scratch.kept = viewers;
            }
            Packet::Attack { target_id } => self.handle_attack(now, id, target_id, out),
            Packet::Ping { payload } => out.send(Recipients::Sender, id.get(), &Packet::Pong { payload }),
            _ => unreachable!("client-sendable kinds other than HELLO"),
        }
        Verdict::Continue
    }

    /// Enforces the HELLO and idle timeouts: call when [`Session::deadline`] has passed (calling
    /// earlier is harmless).
    pub fn poll_timeout(&mut self, now: Instant, session: &mut Session, out: &mut impl Outbox) -> Verdict {
        if session.is_closed() {
            return Verdict::Close;
        }
        if now >= session.deadline(&self.config) {
            return self.fail(session, ErrorCode::Timeout, out);
        }
        Verdict::Continue
    }

    /// Ends `session` with a fatal ERROR `code` sent to its connection, and removes its player
    /// (everyone who saw it receives LEAVE). Always [`Verdict::Close`].
    pub fn fail(&mut self, session: &mut Session, code: ErrorCode, out: &mut impl Outbox) -> Verdict {
        debug_assert!(code.is_fatal());
        if !session.is_closed() {
            send_error(out, session.header_id(), code);
            self.close(session, out);
        }
        Verdict::Close
    }

    /// Ends `session` without an ERROR (the peer closed, or the server stops it after its own ERROR):
    /// everyone who saw its player receives LEAVE. Idempotent.
    pub fn close(&mut self, session: &mut Session, out: &mut impl Outbox) {
        if let Some(id) = session.player() {
            self.remove(id, out);
        }
        session.state = SessionState::Closed;
    }

    fn take_token(&mut self, id: PlayerId, kind: PacketKind, now: Instant, out: &mut impl Outbox) -> Token {
        let limits = self.config.limits;
        let player = self.get_mut(id).expect("session's player exists");
        let (bucket, rate, window) = match kind {
            PacketKind::Move => (&mut player.moves, limits.moves, 0),
            PacketKind::Chat => (&mut player.chats, limits.chats, 1),
            PacketKind::Attack => (&mut player.attacks, limits.attacks, 2),
            PacketKind::Ping => (&mut player.pings, limits.pings, 3),
            _ => return Token::Taken,
        };
        if bucket.try_take(rate, now) {
            return Token::Taken;
        }
        if player.abuse[window].refuse(now, abuse_limit(rate)) {
            return Token::Abuse;
        }
        if player.rate_error_at.is_none_or(|at| now.saturating_duration_since(at) >= RATE_ERROR_INTERVAL) {
            player.rate_error_at = Some(now);
            send_error(out, id.get(), ErrorCode::RateLimited);
        }
        Token::Refused
    }

    fn spawn_point(&mut self) -> Position {
        match self.config.spawn {
            Some((x, z)) => Position::new(x, 0.0, z),
            None => {
                // `f32` rounding could turn a draw just below 1.0 into the world's edge, which lies
                // outside: clamp to the largest float below it.
                let x = (self.rng.f32() * self.config.world_w).min(self.config.world_w.next_down());
                let z = (self.rng.f32() * self.config.world_h).min(self.config.world_h.next_down());
                Position::new(x, 0.0, z)
            }
        }
    }

    fn join(&mut self, now: Instant, session: &mut Session, name: &str, out: &mut impl Outbox) -> Verdict {
        if self.player_count >= self.config.max_players {
            return self.fail(session, ErrorCode::ServerFull, out);
        }
        let index = match self.free_slots.pop() {
            Some(index) => index as usize,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                self.slots.len() - 1
            }
        };
        let id = PlayerId::new(index, self.generations[index]);
        let position = self.spawn_point();
        let limits = self.config.limits;
        let mut stored_name = [0; NAME_MAX];
        stored_name[..name.len()].copy_from_slice(name.as_bytes());
        let grid_slot = self.grid.insert(self.grid.cell_of(position), index as u32);
        self.slots[index] = Some(Player {
            id,
            name: stored_name,
            name_len: name.len() as u8,
            position,
            accepted_at: now,
            hp: self.config.max_hp,
            grid_slot,
            moves: TokenBucket::full(limits.moves, now),
            chats: TokenBucket::full(limits.chats, now),
            attacks: TokenBucket::full(limits.attacks, now),
            pings: TokenBucket::full(limits.pings, now),
            rate_error_at: None,
            abuse: [AbuseWindow::default(); 4],
        });
        self.player_count += 1;
        session.state = SessionState::Playing(id);

        let welcome = Welcome {
            token: U64::new(self.rng.u64(..)),
            x: F32::new(position.x),
            y: F32::new(position.y),
            z: F32::new(position.z),
            hp: U32::new(self.config.max_hp),
            world_w: F32::new(self.config.world_w),
            world_h: F32::new(self.config.world_h),
            aoi_radius: F32::new(self.config.aoi_radius),
            max_speed: F32::new(self.config.max_speed),
        };
        out.send(Recipients::Sender, id.get(), &Packet::Welcome(&welcome));

        let mut viewers = std::mem::take(&mut self.scratch.entered);
        viewers.clear();
        self.collect_viewers(id, position, &mut viewers);
        for &other in &viewers {
            let other = self.get(other).expect("viewer exists");
            out.send(
                Recipients::Sender,
                other.id.get(),
                &Packet::Enter { head: &other.enter_head(), name: other.name() },
            );
        }
        let newcomer = self.get(id).expect("just inserted");
        out.send(
            Recipients::Many(&viewers),
            id.get(),
            &Packet::Enter { head: &newcomer.enter_head(), name: newcomer.name() },
        );
        self.scratch.entered = viewers;
        Verdict::Continue
    }

    fn remove(&mut self, id: PlayerId, out: &mut impl Outbox) {
        let Some(player) = self.get(id) else { return };
        let position = player.position;
        let grid_slot = player.grid_slot;
        let mut viewers = std::mem::take(&mut self.scratch.left);
        viewers.clear();
        self.collect_viewers(id, position, &mut viewers);
        out.send(Recipients::Many(&viewers), id.get(), &Packet::Leave);
        self.scratch.left = viewers;
        self.grid_remove(grid_slot);
        self.slots[id.index()] = None;
        // A new generation for the slot's next occupant: a stale id held by a client no longer matches.
        self.generations[id.index()] = self.generations[id.index()].wrapping_add(1);
        self.free_slots.push(id.index() as u32);
        self.player_count -= 1;
    }

    fn grid_remove(&mut self, slot: GridSlot) {
        if let Some(moved) = self.grid.remove(slot) {
            self.slots[moved as usize].as_mut().expect("grid entries are live players").grid_slot = slot;
        }
    }

    fn is_legal_move(&self, player: &Player, claimed: &Move, now: Instant) -> bool {
        let (x, y, z, velocity) = (claimed.x.get(), claimed.y.get(), claimed.z.get(), claimed.velocity.get());
        let config = &self.config;
        if !(x.is_finite() && y.is_finite() && z.is_finite() && velocity.is_finite()) {
            return false;
        }
        let inside = (0.0..config.world_w).contains(&x) && (0.0..config.world_h).contains(&z);
        if !inside || y.abs() > MAX_HEIGHT || !(0.0..=config.max_speed).contains(&velocity) {
            return false;
        }
        let elapsed = now.saturating_duration_since(player.accepted_at).as_secs_f64();
        let reach = config.max_speed as f64 * (elapsed + SPEED_SLACK_SECS);
        player.position.distance_squared_xz(Position::new(x, y, z)) <= reach * reach
    }

    fn handle_move(&mut self, now: Instant, id: PlayerId, claimed: &Move, out: &mut impl Outbox) {
        let player = self.get(id).expect("session's player exists");
        if !self.is_legal_move(player, claimed, now) {
            let last = player.position;
            let correction = Move::new(last.x, last.y, last.z, 0.0, claimed.client_time.get());
            out.send(Recipients::Sender, id.get(), &Packet::Move(&correction));
            return;
        }
        let target = Position::new(claimed.x.get(), claimed.y.get(), claimed.z.get());
        self.relocate(now, id, target, claimed, out);
    }

    /// Moves `id` to `target` and tells everyone whose view changes: MOVE (`relayed`, byte for byte) to
    /// those who see it before and after, ENTER/LEAVE both ways to those who see it only after/before.
    fn relocate(
        &mut self,
        now: Instant,
        id: PlayerId,
        target: Position,
        relayed: &Move,
        out: &mut impl Outbox,
    ) {
        let radius = self.config.aoi_radius;
        let player = self.get(id).expect("relocated player exists");
        let origin = player.position;
        let Scratch { mut kept, mut entered, mut left } = std::mem::take(&mut self.scratch);
        kept.clear();
        entered.clear();
        left.clear();

        let before = self.grid.block_around(origin);
        let after = self.grid.block_around(target);
        self.grid.for_each_in(before, |index, _| {
            let other = self.player_at(index);
            if other.id == id {
                return;
            }
            match (other.position.within(origin, radius), other.position.within(target, radius)) {
                (true, true) => kept.push(other.id),
                (true, false) => left.push(other.id),
                (false, true) => entered.push(other.id),
                (false, false) => {}
            }
        });
        let columns = self.grid.columns();
        self.grid.for_each_in(after, |index, cell| {
            // Cells of both blocks were classified above; a player outside `before`'s cells cannot
            // have seen the origin.
            if before.contains_cell(cell, columns) {
                return;
            }
            let other = self.player_at(index);
            if other.id != id && other.position.within(target, radius) {
                entered.push(other.id);
            }
        });

        let new_cell = self.grid.cell_of(target);
        let player = self.get_mut(id).expect("relocated player exists");
        player.position = target;
        player.accepted_at = now;
        let old_slot = player.grid_slot;
        if old_slot.cell != new_cell {
            self.grid_remove(old_slot);
            let slot = self.grid.insert(new_cell, id.index() as u32);
            self.get_mut(id).expect("relocated player exists").grid_slot = slot;
        }

        out.send(Recipients::Many(&kept), id.get(), &Packet::Move(relayed));
        let mover = self.get(id).expect("relocated player exists");
        out.send(
            Recipients::Many(&entered),
            id.get(),
            &Packet::Enter { head: &mover.enter_head(), name: mover.name() },
        );
        out.send(Recipients::Many(&left), id.get(), &Packet::Leave);
        for &other in &entered {
            let other = self.get(other).expect("viewer exists");
            out.send(
                Recipients::One(id),
                other.id.get(),
                &Packet::Enter { head: &other.enter_head(), name: other.name() },
            );
        }
        for &other in &left {
            out.send(Recipients::One(id), other.get(), &Packet::Leave);
        }
        self.scratch = Scratch { kept, entered, left };
    }

    fn handle_attack(&mut self, now: Instant, attacker: PlayerId, target_id: u32, out: &mut impl Outbox) {
        let origin = self.get(attacker).expect("session's player exists").position;
        let (radius, range) = (self.config.aoi_radius, self.config.attack_range);
        let target = PlayerId::from_wire(target_id).filter(|&target| {
            target != attacker
                && self
                    .get(target)
                    .is_some_and(|t| t.position.within(origin, radius) && t.position.within(origin, range))
        });
        let Some(target) = target else {
            send_error(out, attacker.get(), ErrorCode::InvalidTarget);
            return;
        };
        let damage = self.config.damage;
        let victim = self.get_mut(target).expect("checked above");
        victim.hp = victim.hp.saturating_sub(damage);
        let hit = Hit {
            target_id: U32::new(target.get()),
            damage: U32::new(damage),
            target_hp: U32::new(victim.hp),
        };
        let dead = victim.hp == 0;

        let mut recipients = std::mem::take(&mut self.scratch.kept);
        recipients.clear();
        recipients.push(attacker);
        self.collect_viewers(attacker, origin, &mut recipients);
        out.send(Recipients::Many(&recipients), attacker.get(), &Packet::Hit(&hit));
        self.scratch.kept = recipients;

        if dead {
            let spawn = self.spawn_point();
            self.get_mut(target).expect("checked above").hp = self.config.max_hp;
            let respawned = Move::new(spawn.x, spawn.y, spawn.z, 0.0, 0);
            out.send(Recipients::One(target), target.get(), &Packet::Move(&respawned));
            self.relocate(now, target, spawn, &respawned, out);
        }
    }
}

/// What the rate limiter made of a packet.
enum Token {
    /// Within the limit: handle it.
    Taken,
    /// Over the limit: dropped (RATE_LIMITED already sent if due).
    Refused,
    /// Over the limit, and the sustained-abuse threshold is reached: end the session.
    Abuse,
}

fn send_error(out: &mut impl Outbox, header_id: u32, code: ErrorCode) {
    out.send(
        Recipients::Sender,
        header_id,
        &Packet::Error { code: code.code(), message: error_message(code) },
    );
}

/// The human-readable text sent with each ERROR code: the world's own, and the one an I/O layer
/// should send with the ERRORs it raises itself (TOO_LARGE, SLOW_CONSUMER, SHUTTING_DOWN, ...), so
/// that clients see the same words whoever sent it.
///
/// # Examples
///
/// ```
/// use gamewire_proto::{ErrorCode, Packet, encode_frame_to_vec};
/// use gamewire_world::error_message;
///
/// let code = ErrorCode::ShuttingDown;
/// assert_eq!(error_message(code), "server is shutting down");
/// let frame = encode_frame_to_vec(0, &Packet::Error { code: code.code(), message: error_message(code) });
/// assert_eq!(frame.len(), 12 + 4 + error_message(code).len());
/// ```
pub fn error_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Malformed => "payload does not match its packet",
        ErrorCode::TooLarge => "payload exceeds max_payload",
        ErrorCode::UnknownPacket => "packet id not accepted from a client",
        ErrorCode::SpoofedId => "header player_id is not yours",
        ErrorCode::BadState => "HELLO must come first, and only once",
        ErrorCode::RateLimited => "rate limit exceeded; packets dropped",
        ErrorCode::InvalidTarget => "target not in view or out of range",
        ErrorCode::ServerFull => "server is full",
        ErrorCode::SlowConsumer => "send queue over its limit",
        ErrorCode::Timeout => "timed out",
        ErrorCode::ShuttingDown => "server is shutting down",
    }
}

/// Protocol v1 as a [`Game`]: the calls forward to [`World`]'s own methods, which the contract in
/// `docs/protocol.md` describes.
impl Game for World {
    type Session = Session;
    /// Protocol v1 takes no command from the embedding program yet.
    type Command = std::convert::Infallible;

    fn client_packets(&self) -> PacketSet {
        PacketSet::V1_FROM_CLIENT
    }

    fn open(&mut self, now: Instant) -> Session {
        Session::new(now)
    }

    fn handle(
        &mut self,
        now: Instant,
        completed_at: Instant,
        session: &mut Session,
        frame: RawFrame<'_>,
        out: &mut impl Outbox,
    ) -> Verdict {
        self.handle_completed_at(now, completed_at, session, frame, out)
    }

    fn deadline(&self, session: &Session) -> Option<Instant> {
        (!session.is_closed()).then(|| session.deadline(&self.config))
    }

    fn poll_timeout(&mut self, now: Instant, session: &mut Session, out: &mut impl Outbox) -> Verdict {
        World::poll_timeout(self, now, session, out)
    }

    fn fail(&mut self, session: &mut Session, code: ErrorCode, out: &mut impl Outbox) -> Verdict {
        World::fail(self, session, code, out)
    }

    fn close(&mut self, session: &mut Session, out: &mut impl Outbox) {
        World::close(self, session, out);
    }

    fn player(&self, session: &Session) -> Option<PlayerId> {
        session.player()
    }

    fn player_count(&self) -> usize {
        self.player_count
    }

    fn command(&mut self, _now: Instant, command: Self::Command, _out: &mut impl Outbox) {
        match command {}
    }
}
