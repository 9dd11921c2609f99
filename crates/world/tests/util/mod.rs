//! Deterministic harness for the world's integration tests, in the style of quinn-proto's `Pair`.
//!
//! [`Sim`] owns a [`World`], a set of in-memory connections and a fake clock. Every frame the world
//! produces is encoded, delivered to the right connection's inbox and parsed there by a client-side
//! view model that checks protocol v1's visibility window on the spot: a frame that breaks it panics
//! at the `send` that produced it. [`Sim::check_views`] compares every client's view with the geometry.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use gamewire_proto::{
    Encode, EnterHead, ErrorCode, HEADER_LEN, Hit, Move, Packet, PacketKind, RawFrame, Welcome,
    encode_frame_to_vec,
};
use gamewire_world::{Config, Outbox, PlayerId, Position, Recipients, Session, Verdict, World};

/// Index of a connection in a [`Sim`].
pub(crate) type ConnIdx = usize;

/// An owned, parsed server-to-client payload.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Msg {
    Welcome(Welcome),
    Move(Move),
    Enter { head: EnterHead, name: String },
    Leave,
    Chat(String),
    Pong(Vec<u8>),
    Error { code: u32, message: String },
    Hit(Hit),
}

impl Msg {
    /// Parses one whole server frame; panics if the server produced something a client must refuse.
    pub(crate) fn parse(bytes: &[u8]) -> (u32, Msg) {
        let (frame, rest) = RawFrame::split_from(bytes).expect("the world produced a truncated frame");
        assert!(rest.is_empty(), "one frame per send");
        let kind = PacketKind::from_id(frame.packet_id()).expect("the world produced an unknown packet id");
        assert!(kind.is_server_sendable(), "the world sent a client-only packet {kind:?}");
        let packet = frame.packet().unwrap_or_else(|e| panic!("the world sent an invalid {kind:?}: {e}"));
        let msg = match packet {
            Packet::Welcome(w) => Msg::Welcome(*w),
            Packet::Move(m) => Msg::Move(*m),
            Packet::Enter { head, name } => Msg::Enter { head: *head, name: name.to_owned() },
            Packet::Leave => Msg::Leave,
            Packet::Chat { text } => Msg::Chat(text.to_owned()),
            Packet::Pong { payload } => Msg::Pong(payload.to_vec()),
            Packet::Error { code, message } => Msg::Error { code, message: message.to_owned() },
            Packet::Hit(h) => Msg::Hit(*h),
            other => unreachable!("checked server-sendable: {other:?}"),
        };
        (frame.player_id(), msg)
    }

    /// The ERROR code, if this is an ERROR.
    pub(crate) fn error_code(&self) -> Option<u32> {
        match self {
            Msg::Error { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A MOVE payload.
pub(crate) fn mv(x: f32, y: f32, z: f32, velocity: f32, client_time: u32) -> Msg {
    Msg::Move(Move::new(x, y, z, velocity, client_time))
}

/// An ENTER payload.
pub(crate) fn enter(position: Position, hp: u32, name: &str) -> Msg {
    Msg::Enter { head: enter_head(position, hp), name: name.to_owned() }
}

/// The head of an ENTER payload.
pub(crate) fn enter_head(position: Position, hp: u32) -> EnterHead {
    use gamewire_proto::little_endian::{F32, U32};
    EnterHead { x: F32::new(position.x), y: F32::new(position.y), z: F32::new(position.z), hp: U32::new(hp) }
}

/// A HIT payload.
pub(crate) fn hit(target: PlayerId, damage: u32, target_hp: u32) -> Msg {
    use gamewire_proto::little_endian::U32;
    Msg::Hit(Hit {
        target_id: U32::new(target.get()),
        damage: U32::new(damage),
        target_hp: U32::new(target_hp),
    })
}

/// Asserts that `frames` is exactly one ERROR with header `player_id` and `code`, and returns it.
#[track_caller]
pub(crate) fn assert_error(frames: &[(u32, Msg)], player_id: u32, code: ErrorCode) {
    assert_eq!(frames.len(), 1, "expected exactly one ERROR({code}), got {frames:?}");
    let (header, msg) = &frames[0];
    assert_eq!(msg.error_code(), Some(code.code()), "expected ERROR({code}), got {msg:?}");
    assert_eq!(*header, player_id, "header player_id of ERROR({code})");
}

/// Builds a client frame by hand, for payloads the encoder cannot express (bad sizes, bad UTF-8).
pub(crate) fn raw_frame(packet_id: u32, player_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&packet_id.to_le_bytes());
    bytes.extend_from_slice(&player_id.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A player as one client knows it from ENTER and MOVE frames.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) position: Position,
    pub(crate) name: String,
}

/// What one client knows, built only from the frames it received (and the MOVEs it sent).
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Its id, from WELCOME.
    pub(crate) id: Option<u32>,
    /// Players it sees: between ENTER and LEAVE.
    pub(crate) seen: BTreeMap<u32, Seen>,
    /// Its own position: WELCOME, its accepted MOVEs, corrections.
    pub(crate) position: Position,
    /// Its own hp: WELCOME, HITs on itself, respawns.
    pub(crate) hp: u32,
    /// hp at spawn, from WELCOME.
    pub(crate) max_hp: u32,
    /// When its last accepted position was accepted (WELCOME, accepted MOVE, respawn).
    pub(crate) accepted_at: Instant,
    /// A HIT brought it to 0 hp and the respawn correction has yet to arrive.
    pub(crate) respawn_pending: bool,
    /// The fatal ERROR it received, after which nothing may arrive.
    pub(crate) fatal: Option<u32>,
    /// Frames received.
    pub(crate) frames: usize,
    /// Corrections (MOVE about itself) received, respawns included.
    pub(crate) corrections: usize,
    /// RATE_LIMITED errors received.
    pub(crate) rate_errors: usize,
}

impl View {
    fn new(now: Instant) -> Self {
        View {
            id: None,
            seen: BTreeMap::new(),
            position: Position::default(),
            hp: 0,
            max_hp: 0,
            accepted_at: now,
            respawn_pending: false,
            fatal: None,
            frames: 0,
            corrections: 0,
            rate_errors: 0,
        }
    }

    /// Applies one received frame, checking it against the protocol's session rules.
    fn observe(&mut self, player_id: u32, msg: &Msg, now: Instant) -> Result<(), String> {
        if let Some(code) = self.fatal {
            return Err(format!("frame after the fatal ERROR({code})"));
        }
        self.frames += 1;
        let Some(own) = self.id else {
            return match msg {
                Msg::Welcome(welcome) => {
                    if self.frames != 1 {
                        return Err("WELCOME is not the first frame".into());
                    }
                    if player_id == 0 {
                        return Err("WELCOME with header player_id 0".into());
                    }
                    if welcome.hp.get() == 0 {
                        return Err("WELCOME with hp 0".into());
                    }
                    self.id = Some(player_id);
                    self.position = Position::new(welcome.x.get(), welcome.y.get(), welcome.z.get());
                    self.hp = welcome.hp.get();
                    self.max_hp = welcome.hp.get();
                    self.accepted_at = now;
                    Ok(())
                }
                Msg::Error { code, .. } => {
                    if player_id != 0 {
                        return Err(format!("ERROR before WELCOME with header player_id {player_id}"));
                    }
                    self.note_error(*code);
                    Ok(())
                }
                _ => Err("frame other than WELCOME or ERROR before WELCOME".into()),
            };
        };
        match msg {
            Msg::Welcome(_) => return Err("second WELCOME".into()),
            Msg::Enter { head, name } => {
                if player_id == own || player_id == 0 {
                    return Err(format!("ENTER about player {player_id}"));
                }
                let position = Position::new(head.x.get(), head.y.get(), head.z.get());
                if self.seen.insert(player_id, Seen { position, name: name.clone() }).is_some() {
                    return Err(format!("ENTER about player {player_id}, already seen"));
                }
            }
            Msg::Leave => {
                if player_id == own {
                    return Err("LEAVE about itself".into());
                }
                if self.seen.remove(&player_id).is_none() {
                    return Err(format!("LEAVE about player {player_id}, not seen"));
                }
            }
            Msg::Move(m) => {
                let position = Position::new(m.x.get(), m.y.get(), m.z.get());
                if player_id == own {
                    // A correction: rejected MOVE or respawn.
                    if m.velocity.get().to_bits() != 0 {
                        return Err(format!("correction with velocity {}", m.velocity.get()));
                    }
                    self.corrections += 1;
                    self.position = position;
                    if self.respawn_pending {
                        if m.client_time.get() != 0 {
                            return Err("respawn correction with client_time != 0".into());
                        }
                        self.respawn_pending = false;
                        self.hp = self.max_hp;
                        self.accepted_at = now;
                    }
                } else {
                    let Some(seen) = self.seen.get_mut(&player_id) else {
                        return Err(format!("MOVE about player {player_id}, not seen"));
                    };
                    seen.position = position;
                }
            }
            Msg::Chat(_) => {
                if player_id == own {
                    return Err("CHAT echoed to its speaker".into());
                }
                if !self.seen.contains_key(&player_id) {
                    return Err(format!("CHAT from player {player_id}, not seen"));
                }
            }
            Msg::Hit(h) => {
                if player_id != own && !self.seen.contains_key(&player_id) {
                    return Err(format!("HIT by player {player_id}, not seen"));
                }
                if h.target_id.get() == player_id {
                    return Err("HIT whose attacker is its target".into());
                }
                if h.target_id.get() == own {
                    if self.respawn_pending {
                        return Err("HIT on a dead player".into());
                    }
                    if h.target_hp.get() > self.hp {
                        return Err("HIT raised hp".into());
                    }
                    self.hp = h.target_hp.get();
                    self.respawn_pending = self.hp == 0;
                }
            }
            Msg::Pong(_) => {
                if player_id != own {
                    return Err(format!("PONG with header player_id {player_id}"));
                }
            }
            Msg::Error { code, .. } => {
                if player_id != own {
                    return Err(format!("ERROR with header player_id {player_id}"));
                }
                self.note_error(*code);
            }
        }
        Ok(())
    }

    fn note_error(&mut self, code: u32) {
        let error = ErrorCode::from_u32(code);
        if error == Some(ErrorCode::RateLimited) {
            self.rate_errors += 1;
        }
        if error.is_none_or(ErrorCode::is_fatal) {
            self.fatal = Some(code);
        }
    }
}

/// One connection: its inbox (encoded frames, in delivery order) and its client's view.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) inbox: Vec<Vec<u8>>,
    pub(crate) view: View,
    /// Whether the connection is open (the world has not closed it and the peer has not left).
    pub(crate) open: bool,
    pub(crate) connected_at: Instant,
    /// When its last frame was handed to the world.
    pub(crate) last_sent: Option<Instant>,
    /// Whether the world sent it a frame marked as its last ([`Encode::is_fatal`]): a fatal ERROR or a
    /// `LastFrame`. Nothing may follow one.
    pub(crate) got_last_frame: bool,
}

/// The test's side of the [`Outbox`]: routes every frame to its connections.
#[derive(Debug)]
struct Net {
    now: Instant,
    current: ConnIdx,
    clients: Vec<Client>,
    by_player: HashMap<u32, ConnIdx>,
}

impl Net {
    fn conn_of(&self, id: PlayerId) -> ConnIdx {
        *self
            .by_player
            .get(&id.get())
            .unwrap_or_else(|| panic!("the world sent a frame to player {id}, which has no open connection"))
    }

    fn deliver(&mut self, conn: ConnIdx, bytes: Vec<u8>, is_last: bool) {
        let (player_id, msg) = Msg::parse(&bytes);
        let now = self.now;
        let client = &mut self.clients[conn];
        assert!(client.open, "frame {player_id} {msg:?} delivered to closed connection {conn}");
        assert!(!client.got_last_frame, "frame {player_id} {msg:?} sent to {conn} after its last frame");
        client.got_last_frame = is_last;
        if let Err(error) = client.view.observe(player_id, &msg, now) {
            panic!(
                "connection {conn} (player {:?}) received player_id {player_id} {msg:?}: {error}",
                client.view.id
            );
        }
        if let Msg::Welcome(_) = msg {
            assert_eq!(conn, self.current, "WELCOME to a connection other than the sender");
            let previous = self.by_player.insert(player_id, conn);
            assert_eq!(previous, None, "player id {player_id} handed out twice");
        }
        client.inbox.push(bytes);
    }
}

impl Outbox for Net {
    fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
        let bytes = encode_frame_to_vec(player_id, packet);
        let is_last = packet.is_fatal();
        match to {
            Recipients::Sender => self.deliver(self.current, bytes, is_last),
            Recipients::One(id) => self.deliver(self.conn_of(id), bytes, is_last),
            Recipients::Many(ids) => {
                let mut unique = HashSet::with_capacity(ids.len());
                for &id in ids {
                    assert!(unique.insert(id), "recipient list {ids:?} names player {id} twice");
                }
                for &id in ids {
                    self.deliver(self.conn_of(id), bytes.clone(), is_last);
                }
            }
        }
    }

    fn end(&mut self, player: PlayerId) {
        // Protocol v1 ends a session only through the verdict of a call about it.
        panic!("the world ended player {player} from outside a call about its session");
    }
}

/// A world, its connections and a fake clock.
#[derive(Debug)]
pub(crate) struct Sim {
    pub(crate) world: World,
    sessions: Vec<Session>,
    net: Net,
    start: Instant,
}

impl Sim {
    /// A simulation of a world with `config`.
    pub(crate) fn new(config: Config) -> Self {
        let start = Instant::now();
        Sim {
            world: World::new(config).expect("valid test config"),
            sessions: Vec::new(),
            net: Net { now: start, current: 0, clients: Vec::new(), by_player: HashMap::new() },
            start,
        }
    }

    /// The fake clock.
    pub(crate) fn now(&self) -> Instant {
        self.net.now
    }

    /// When the simulation started.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// Moves the fake clock forward.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.net.now += by;
    }

    /// Sets the fake clock to `start + at` (never backwards).
    pub(crate) fn set_time(&mut self, at: Duration) {
        let now = self.start + at;
        assert!(now >= self.net.now, "the clock never goes back");
        self.net.now = now;
    }

    pub(crate) fn config(&self) -> &Config {
        self.world.config()
    }

    /// Opens a connection.
    pub(crate) fn connect(&mut self) -> ConnIdx {
        let now = self.now();
        self.sessions.push(Session::new(now));
        self.net.clients.push(Client {
            inbox: Vec::new(),
            view: View::new(now),
            open: true,
            connected_at: now,
            last_sent: None,
            got_last_frame: false,
        });
        self.sessions.len() - 1
    }

    /// Sends HELLO (header 0) and returns the id WELCOME assigned. Leaves the frames in the inbox.
    #[track_caller]
    pub(crate) fn hello(&mut self, conn: ConnIdx, name: &str) -> PlayerId {
        assert!(self.net.clients[conn].inbox.is_empty(), "inbox of connection {conn} before HELLO");
        let verdict = self.send(conn, 0, &Packet::Hello { name });
        assert_eq!(verdict, Verdict::Continue, "HELLO refused");
        let first = self.net.clients[conn].inbox.first().expect("an answer to HELLO");
        let (player_id, msg) = Msg::parse(first);
        assert!(matches!(msg, Msg::Welcome(_)), "first frame after HELLO is {msg:?}, not WELCOME");
        let id = PlayerId::from_wire(player_id).expect("WELCOME carries a valid id");
        assert_eq!(self.sessions[conn].player(), Some(id));
        id
    }

    /// Connects and sends HELLO.
    #[track_caller]
    pub(crate) fn join(&mut self, name: &str) -> (ConnIdx, PlayerId) {
        let conn = self.connect();
        let id = self.hello(conn, name);
        (conn, id)
    }

    /// Encodes `packet` with header `player_id` and hands it to the world as `conn`'s next frame.
    pub(crate) fn send(&mut self, conn: ConnIdx, player_id: u32, packet: &Packet<'_>) -> Verdict {
        let bytes = encode_frame_to_vec(player_id, packet);
        let view = &self.net.clients[conn].view;
        let (corrections, rate_errors) = (view.corrections, view.rate_errors);
        let verdict = self.send_bytes(conn, &bytes);
        let now = self.now();
        let view = &mut self.net.clients[conn].view;
        if let Packet::Move(m) = packet
            && verdict == Verdict::Continue
            && view.corrections == corrections
            && view.rate_errors == rate_errors
        {
            // No correction: the MOVE was accepted (or silently dropped by a rate limit, which tests
            // that rely on this model avoid).
            view.position = Position::new(m.x.get(), m.y.get(), m.z.get());
            view.accepted_at = now;
        }
        verdict
    }

    /// Hands one encoded frame to the world as `conn`'s.
    pub(crate) fn send_bytes(&mut self, conn: ConnIdx, bytes: &[u8]) -> Verdict {
        let (frame, rest) = RawFrame::split_from(bytes).expect("a whole frame");
        assert!(rest.is_empty(), "one frame at a time");
        self.net.current = conn;
        self.net.clients[conn].last_sent = Some(self.net.now);
        let verdict = self.world.handle(self.net.now, &mut self.sessions[conn], frame, &mut self.net);
        self.after_call(conn, verdict);
        verdict
    }

    /// Hands `packet` to the world as `conn`'s next frame, read now but completed at the socket at
    /// `completed_at` (since the start): [`World::handle_completed_at`].
    pub(crate) fn send_completed_at(
        &mut self,
        conn: ConnIdx,
        completed_at: Duration,
        packet: &Packet<'_>,
    ) -> Verdict {
        let bytes = encode_frame_to_vec(0, packet);
        let (frame, _) = RawFrame::split_from(&bytes).expect("a whole frame");
        self.net.current = conn;
        self.net.clients[conn].last_sent = Some(self.net.now);
        let completed_at = self.start() + completed_at;
        let verdict = self.world.handle_completed_at(
            self.net.now,
            completed_at,
            &mut self.sessions[conn],
            frame,
            &mut self.net,
        );
        self.after_call(conn, verdict);
        verdict
    }

    /// Calls [`World::poll_timeout`] for one connection.
    pub(crate) fn poll_timeout(&mut self, conn: ConnIdx) -> Verdict {
        self.net.current = conn;
        let verdict = self.world.poll_timeout(self.net.now, &mut self.sessions[conn], &mut self.net);
        self.after_call(conn, verdict);
        verdict
    }

    /// Calls [`World::poll_timeout`] for every open connection; returns those it closed.
    pub(crate) fn poll_timeouts(&mut self) -> Vec<ConnIdx> {
        let mut closed = Vec::new();
        for conn in 0..self.sessions.len() {
            if self.net.clients[conn].open && self.poll_timeout(conn) == Verdict::Close {
                closed.push(conn);
            }
        }
        closed
    }

    /// The peer closes `conn`.
    pub(crate) fn disconnect(&mut self, conn: ConnIdx) {
        self.net.current = conn;
        self.world.close(&mut self.sessions[conn], &mut self.net);
        assert!(self.sessions[conn].is_closed());
        self.after_call(conn, Verdict::Close);
    }

    fn after_call(&mut self, conn: ConnIdx, verdict: Verdict) {
        assert_eq!(
            verdict == Verdict::Close,
            self.sessions[conn].is_closed(),
            "verdict {verdict:?} disagrees with the session of connection {conn}"
        );
        if verdict == Verdict::Close && self.net.clients[conn].open {
            self.net.clients[conn].open = false;
            if let Some(id) = self.net.clients[conn].view.id {
                self.net.by_player.remove(&id);
                let id = PlayerId::from_wire(id).expect("valid id");
                assert!(self.world.player(id).is_none(), "player {id} outlived its session");
            }
        }
        for (index, client) in self.net.clients.iter().enumerate() {
            assert!(
                !client.view.respawn_pending,
                "connection {index} was killed but got no respawn correction"
            );
        }
    }

    /// The frames `conn` received since the last drain: (header player_id, payload).
    pub(crate) fn drain(&mut self, conn: ConnIdx) -> Vec<(u32, Msg)> {
        self.drain_raw(conn).iter().map(|bytes| Msg::parse(bytes)).collect()
    }

    /// The encoded frames `conn` received since the last drain.
    pub(crate) fn drain_raw(&mut self, conn: ConnIdx) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.net.clients[conn].inbox)
    }

    /// Empties every inbox (the frames were checked on delivery).
    pub(crate) fn drain_all(&mut self) {
        for client in &mut self.net.clients {
            client.inbox.clear();
        }
    }

    /// Asserts that no connection but those in `except` received anything since the last drain.
    #[track_caller]
    pub(crate) fn assert_quiet_except(&mut self, except: &[ConnIdx]) {
        for conn in 0..self.net.clients.len() {
            if !except.contains(&conn) {
                let frames = self.drain(conn);
                assert!(frames.is_empty(), "connection {conn} should have received nothing, got {frames:?}");
            }
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.sessions.len()
    }

    pub(crate) fn client(&self, conn: ConnIdx) -> &Client {
        &self.net.clients[conn]
    }

    pub(crate) fn session(&self, conn: ConnIdx) -> &Session {
        &self.sessions[conn]
    }

    pub(crate) fn is_open(&self, conn: ConnIdx) -> bool {
        self.net.clients[conn].open
    }

    /// The player `conn` plays, from its WELCOME.
    #[track_caller]
    pub(crate) fn id(&self, conn: ConnIdx) -> PlayerId {
        let raw = self.net.clients[conn].view.id.expect("connection was WELCOMEd");
        PlayerId::from_wire(raw).expect("valid id")
    }

    /// Where the world has `conn`'s player.
    #[track_caller]
    pub(crate) fn position(&self, conn: ConnIdx) -> Position {
        self.world.player(self.id(conn)).expect("player in the world").position
    }

    #[track_caller]
    pub(crate) fn hp(&self, conn: ConnIdx) -> u32 {
        self.world.player(self.id(conn)).expect("player in the world").hp
    }

    /// Open connections that have a player.
    pub(crate) fn players(&self) -> Vec<ConnIdx> {
        (0..self.sessions.len())
            .filter(|&c| self.net.clients[c].open && self.net.clients[c].view.id.is_some())
            .collect()
    }

    /// Connections whose players see `conn`'s player, by brute force over the world's positions.
    pub(crate) fn viewers(&self, conn: ConnIdx) -> BTreeSet<ConnIdx> {
        let me = self.position(conn);
        let radius = self.config().aoi_radius;
        self.players().into_iter().filter(|&c| c != conn && self.position(c).within(me, radius)).collect()
    }

    /// Takes `conn`'s player to `(x, z)` (same height) with one legal MOVE, advancing the clock just
    /// enough for the speed check.
    #[track_caller]
    pub(crate) fn place(&mut self, conn: ConnIdx, x: f32, z: f32) {
        let from = self.position(conn);
        let distance = from.distance_squared_xz(Position::new(x, from.y, z)).sqrt();
        // The protocol's 0.1 s slack absorbs any rounding of this duration.
        self.advance(Duration::from_secs_f64(distance / self.config().max_speed as f64));
        let corrections = self.net.clients[conn].view.corrections;
        let verdict = self.send(conn, 0, &Packet::Move(&Move::new(x, from.y, z, 0.0, 0)));
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(self.net.clients[conn].view.corrections, corrections, "placement MOVE rejected");
        assert_eq!(self.position(conn), Position::new(x, from.y, z));
    }

    /// Checks every client's view against the geometry: the players it sees by its ENTER/LEAVE frames
    /// are exactly those within `aoi_radius` by brute force, which are exactly those the grid
    /// reports; it knows their last positions and names; its own position and hp are the world's.
    #[track_caller]
    pub(crate) fn check_views(&self) {
        let radius = self.config().aoi_radius;
        let players: Vec<_> = self.world.players().collect();
        assert_eq!(players.len(), self.world.player_count(), "players() vs player_count()");
        let open = self.players();
        assert_eq!(open.len(), players.len(), "every player has an open connection and vice versa");
        let mut grid = Vec::new();
        for conn in open {
            let view = &self.net.clients[conn].view;
            let id = self.id(conn);
            let me = self
                .world
                .player(id)
                .unwrap_or_else(|| panic!("player {id} of open connection {conn} missing"));
            let brute: BTreeSet<u32> = players
                .iter()
                .filter(|p| p.id != id && p.position.within(me.position, radius))
                .map(|p| p.id.get())
                .collect();
            grid.clear();
            self.world.visible_to(id, &mut grid);
            let grid_set: BTreeSet<u32> = grid.iter().map(|p| p.get()).collect();
            assert_eq!(grid.len(), grid_set.len(), "visible_to({id}) lists a player twice: {grid:?}");
            assert_eq!(grid_set, brute, "visible_to({id}) at {:?} vs brute force", me.position);
            let seen: BTreeSet<u32> = view.seen.keys().copied().collect();
            assert_eq!(
                seen, brute,
                "what connection {conn} (player {id} at {:?}) sees vs geometry",
                me.position
            );
            for (&other, known) in &view.seen {
                let actual = self
                    .world
                    .player(PlayerId::from_wire(other).expect("seen id valid"))
                    .expect("seen is live");
                assert_eq!(
                    bits(known.position),
                    bits(actual.position),
                    "connection {conn} knows player {other} at {:?}, it is at {:?}",
                    known.position,
                    actual.position
                );
                assert_eq!(known.name, actual.name, "name of player {other} as known by connection {conn}");
            }
            assert_eq!(bits(view.position), bits(me.position), "connection {conn}'s own position");
            assert_eq!(view.hp, me.hp, "connection {conn}'s own hp");
        }
    }
}

/// A position's exact bits, so that comparisons tell -0.0 from 0.0.
pub(crate) fn bits(p: Position) -> [u32; 3] {
    [p.x.to_bits(), p.y.to_bits(), p.z.to_bits()]
}
