//! `World` driven by arbitrary operations of up to 8 open connections on a fake clock.
//!
//! Operations: open a connection; send a client packet (valid encodings of HELLO, MOVE, ATTACK, CHAT
//! and PING with arbitrary fields: NaN, infinities and huge floats, names and texts that are not
//! UTF-8 or out of range, any header `player_id`); hand the world a raw frame of any id and payload;
//! push raw bytes through the connection's `FrameDecoder`, as the I/O layer does; advance the clock;
//! poll timeouts; fail a connection with a fatal code; close it. The world's parameters come from the
//! input too.
//!
//! Invariants, after every call or step:
//! - no panic;
//! - every frame the world emits encodes, and decodes back (`Direction::ToClient`) to the same packet
//!   and the same bytes; it goes to a connection that is open, has not received a fatal ERROR and, for
//!   `One`/`Many`, plays a live player (each named once);
//! - each client's view, built only from the frames it received, obeys the protocol's session rules
//!   (WELCOME first, ENTER only about a player not in view, LEAVE only about one in view, MOVE/CHAT/HIT
//!   about another player only while it is in view, ERROR before WELCOME with header 0);
//! - every player's position is finite, inside the world, |y| <= 10000, and its hp in 1..=max_hp (a
//!   player at 0 respawns in the same step);
//! - `World::visible_to` is symmetric, lists nobody twice and equals the distance rule dx² + dz² <= r²
//!   (docs/protocol.md §8.1);
//! - the players each connection believes it sees (ENTER/LEAVE) are exactly the world's visibility for
//!   its player, with the positions and names the world holds;
//! - the world's players are exactly the open, WELCOMEd connections; a `Close` verdict means the session
//!   is closed and its player gone.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use gamewire_proto::{
    CHAT_MAX, Direction, Encode, ErrorCode, FrameDecoder, HEADER_LEN, Move, NAME_MAX, PING_MAX, Packet, PacketKind,
    RawFrame, SERVER_PAYLOAD_MAX, encode_frame_to_vec,
};
use gamewire_world::{
    Config, MAX_HEIGHT, Outbox, PlayerId, Position, Rate, RateLimits, Recipients, Session, Verdict, World,
};
use libfuzzer_sys::fuzz_target;

/// Most connections open at once.
const MAX_OPEN: usize = 8;
/// Most connections over a run (closed ones stay addressable, for operations on closed sessions).
const MAX_CONNECTIONS: usize = 32;
/// Largest grid a run may build (keeps each run fast).
const MAX_CELLS: f64 = 4096.0;

// ---------------------------------------------------------------------------------------------------
// Input

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Extent {
    /// One of a few useful values.
    Nice(u8),
    /// Any finite positive value (others are skipped).
    Any(f32),
}

impl Extent {
    fn value(self, nice: &[f32]) -> f32 {
        match self {
            Extent::Nice(i) => nice[usize::from(i) % nice.len()],
            Extent::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Limits {
    Default,
    Generous,
    Tight,
    Any { per_second: [u8; 4], burst: [u8; 4] },
}

#[derive(Arbitrary, Debug)]
struct ConfigInput {
    world_w: Extent,
    world_h: Extent,
    aoi_radius: Extent,
    max_speed: Extent,
    attack_range: Extent,
    damage: u8,
    max_hp: u8,
    /// Fixed spawn point as fractions of the world, or random spawns.
    spawn: Option<(u16, u16)>,
    limits: Limits,
    hello_timeout_ms: u16,
    idle_timeout_ms: u16,
    max_players: u8,
    seed: u64,
    max_payload: u16,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HeaderId {
    Zero,
    Own,
    /// The id of another connection's player (or 0).
    Of(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Float {
    Any(f32),
    /// 0, -0, NaN, ±inf, f32::MAX, MIN_POSITIVE, subnormal, ...
    Special(u8),
    /// A fraction (u8/255) of `scale` (the world's extent, or max_speed).
    Fraction(u8),
}

const SPECIALS: [f32; 14] = [
    0.0,
    -0.0,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    f32::MIN,
    f32::MIN_POSITIVE,
    1e-45,
    -1.0,
    1e30,
    MAX_HEIGHT,
    -MAX_HEIGHT,
    10_000.001,
];

impl Float {
    fn value(self, scale: f32) -> f32 {
        match self {
            Float::Any(v) => v,
            Float::Special(i) => SPECIALS[usize::from(i) % SPECIALS.len()],
            Float::Fraction(f) => scale * (f32::from(f) / 255.0),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Target {
    /// Stay where the player is.
    Stay,
    /// A step from where the player is, as a fraction of max_speed × (elapsed + 0.1), in a direction.
    Step { reach: u8, angle: u8 },
    /// Towards (or onto) another connection's player.
    Towards { conn: u8, fraction: u8 },
    /// Anywhere.
    At { x: Float, z: Float },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum AttackTarget {
    Conn(u8),
    Own,
    Departed(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Text {
    /// Valid UTF-8, cut to the packet's range at a character boundary (at least one byte).
    Valid(String),
    /// Any bytes, any length.
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum ClientPacket {
    Hello(Text),
    Move { target: Target, y: Option<Float>, velocity: Float, client_time: u32 },
    Attack(AttackTarget),
    Chat(Text),
    Ping(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open,
    Send {
        conn: u8,
        header: HeaderId,
        packet: ClientPacket,
    },
    /// A frame of any id and payload, handed to the world as it is (the I/O layer would have refused
    /// some of them first: the world must cope anyway).
    RawFrame {
        conn: u8,
        packet_id: u8,
        header: HeaderId,
        payload: Vec<u8>,
    },
    /// Bytes through the connection's `FrameDecoder`, as the I/O layer feeds a socket read.
    Bytes {
        conn: u8,
        bytes: Vec<u8>,
    },
    AdvanceMs(u16),
    AdvanceSecs(u8),
    PollTimeout(u8),
    PollAll,
    Fail {
        conn: u8,
        code: u8,
    },
    Close(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: ConfigInput,
    ops: Vec<Op>,
}

// ---------------------------------------------------------------------------------------------------
// Config

fn build_config(input: &ConfigInput) -> Option<(Config, u32)> {
    const EXTENTS: [f32; 6] = [100.0, 200.0, 37.5, 1000.0, 1.0, 3e38];
    const RADII: [f32; 6] = [30.0, 50.0, 1000.0, 7.25, 1.0, 1e38];
    const SPEEDS: [f32; 5] = [50.0, 20.0, 1e30, 1.0, f32::MAX];
    const RANGES: [f32; 4] = [12.0, 10.0, 1e6, 0.5];
    let world_w = input.world_w.value(&EXTENTS);
    let world_h = input.world_h.value(&EXTENTS);
    let aoi_radius = input.aoi_radius.value(&RADII);
    if !(world_w.is_finite() && world_h.is_finite() && aoi_radius.is_finite() && aoi_radius > 0.0) {
        return None;
    }
    let cells = (world_w as f64 / aoi_radius as f64).ceil() * (world_h as f64 / aoi_radius as f64).ceil();
    // `cells` is finite here (finite extents, positive radius), but may be huge.
    if cells.is_nan() || cells > MAX_CELLS {
        return None;
    }
    let rate =
        |per_second: u8, burst: u8| Rate::new(f32::from(per_second) / 4.0 + 0.25, f32::from(burst) + 1.0);
    let limits = match input.limits {
        Limits::Default => RateLimits::default(),
        Limits::Generous => {
            let generous = Rate::new(1e6, 1e6);
            RateLimits { moves: generous, chats: generous, attacks: generous, pings: generous }
        }
        Limits::Tight => {
            let tight = Rate::new(1.0, 1.0);
            RateLimits { moves: tight, chats: tight, attacks: tight, pings: tight }
        }
        Limits::Any { per_second: p, burst: b } => RateLimits {
            moves: rate(p[0], b[0]),
            chats: rate(p[1], b[1]),
            attacks: rate(p[2], b[2]),
            pings: rate(p[3], b[3]),
        },
    };
    let spawn = input.spawn.map(|(fx, fz)| {
        let x = (world_w * (f32::from(fx) / 65535.0)).min(world_w.next_down());
        let z = (world_h * (f32::from(fz) / 65535.0)).min(world_h.next_down());
        (x, z)
    });
    let config = Config {
        world_w,
        world_h,
        aoi_radius,
        max_speed: input.max_speed.value(&SPEEDS),
        attack_range: input.attack_range.value(&RANGES),
        damage: u32::from(input.damage % 64),
        max_hp: u32::from(input.max_hp % 100) + 1,
        spawn,
        limits,
        hello_timeout: Duration::from_millis(u64::from(input.hello_timeout_ms)),
        idle_timeout: Duration::from_millis(u64::from(input.idle_timeout_ms)),
        max_players: usize::from(input.max_players % 10) + 1,
        seed: input.seed,
    };
    config.validate().ok()?;
    let max_payload = 256 + u32::from(input.max_payload) % (65536 - 256 + 1);
    Some((config, max_payload))
}

// ---------------------------------------------------------------------------------------------------
// The clients' side

/// What one client knows, built only from the frames it received.
#[derive(Debug, Default)]
struct View {
    id: Option<u32>,
    /// Players in view (between ENTER and LEAVE), with the position and name last heard.
    seen: BTreeMap<u32, (Position, String)>,
    /// The fatal ERROR code received, after which nothing may arrive.
    fatal: Option<u32>,
    frames: usize,
}

/// One connection as the client sees it (the world's `Session` and the I/O layer's decoder live in
/// [`Harness`], beside the outbox that borrows this).
#[derive(Debug)]
struct Conn {
    /// The client's decoder for what the server sends.
    client_decoder: FrameDecoder,
    view: View,
    /// Neither side has closed it.
    open: bool,
}

fn position_bits(p: Position) -> [u32; 3] {
    [p.x.to_bits(), p.y.to_bits(), p.z.to_bits()]
}

impl View {
    /// Applies one frame received, with the protocol's session rules (docs/protocol.md §5, §7, §8).
    fn observe(&mut self, player_id: u32, packet: &Packet<'_>) {
        assert!(self.fatal.is_none(), "frame {player_id} {packet:?} after the fatal ERROR({:?})", self.fatal);
        self.frames += 1;
        let Some(own) = self.id else {
            match packet {
                Packet::Welcome(welcome) => {
                    assert_eq!(self.frames, 1, "WELCOME is not the first frame");
                    assert_ne!(player_id, 0, "WELCOME with header player_id 0");
                    assert_ne!(welcome.hp.get(), 0, "WELCOME with hp 0");
                    self.id = Some(player_id);
                }
                Packet::Error { code, .. } => {
                    assert_eq!(player_id, 0, "ERROR before WELCOME with header player_id {player_id}");
                    self.note_error(*code);
                }
                other => panic!("{other:?} (header {player_id}) before WELCOME"),
            }
            return;
        };
        match packet {
            Packet::Welcome(_) => panic!("second WELCOME"),
            Packet::Enter { head, name } => {
                assert!(player_id != own && player_id != 0, "ENTER about player {player_id} (own {own})");
                let position = Position::new(head.x.get(), head.y.get(), head.z.get());
                assert_ne!(head.hp.get(), 0, "ENTER with hp 0");
                let previous = self.seen.insert(player_id, (position, (*name).to_owned()));
                assert!(previous.is_none(), "ENTER about player {player_id}, already in view");
            }
            Packet::Leave => {
                assert_ne!(player_id, own, "LEAVE about itself");
                assert!(
                    self.seen.remove(&player_id).is_some(),
                    "LEAVE about player {player_id}, not in view"
                );
            }
            Packet::Move(m) => {
                if player_id == own {
                    assert_eq!(
                        m.velocity.get().to_bits(),
                        0,
                        "correction with velocity {}",
                        m.velocity.get()
                    );
                } else {
                    let seen = self
                        .seen
                        .get_mut(&player_id)
                        .unwrap_or_else(|| panic!("MOVE about player {player_id}, not in view"));
                    seen.0 = Position::new(m.x.get(), m.y.get(), m.z.get());
                }
            }
            Packet::Chat { .. } => {
                assert_ne!(player_id, own, "CHAT echoed to its speaker");
                assert!(self.seen.contains_key(&player_id), "CHAT from player {player_id}, not in view");
            }
            Packet::Hit(hit) => {
                assert!(
                    player_id == own || self.seen.contains_key(&player_id),
                    "HIT by player {player_id}, not in view"
                );
                assert_ne!(hit.target_id.get(), player_id, "HIT whose attacker is its target");
            }
            Packet::Pong { .. } => assert_eq!(player_id, own, "PONG with header player_id {player_id}"),
            Packet::Error { code, .. } => {
                assert_eq!(player_id, own, "ERROR with header player_id {player_id}, own {own}");
                self.note_error(*code);
            }
            other => panic!("the world sent a client-only packet {other:?}"),
        }
    }

    fn note_error(&mut self, code: u32) {
        let error = ErrorCode::from_u32(code).unwrap_or_else(|| panic!("unknown ERROR code {code}"));
        if error.is_fatal() {
            self.fatal = Some(code);
        }
    }
}

/// The harness's [`Outbox`]: checks and delivers every frame.
#[derive(Debug)]
struct Net {
    current: usize,
    conns: Vec<Conn>,
    by_player: HashMap<u32, usize>,
    frames: usize,
}

impl Net {
    fn deliver(&mut self, conn: usize, player_id: u32, packet: &Packet<'_>, bytes: &[u8]) {
        let target = &mut self.conns[conn];
        assert!(target.open, "frame {player_id} {packet:?} to closed connection {conn}");
        // The client reads it from its stream, as one whole frame that parses back to the same packet.
        let mut input = bytes;
        let welcome = {
            let frame = target
                .client_decoder
                .next_frame(&mut input)
                .unwrap_or_else(|e| panic!("client decoder refused {packet:?}: {e}"))
                .unwrap_or_else(|| panic!("{packet:?} did not decode as one whole frame"));
            assert_eq!(frame.player_id(), player_id);
            let decoded =
                frame.packet().unwrap_or_else(|e| panic!("the world sent an invalid {packet:?}: {e}"));
            assert_eq!(&decoded, packet, "decoded packet differs");
            assert_eq!(encode_frame_to_vec(player_id, &decoded), bytes, "re-encoded bytes differ");
            target.view.observe(player_id, &decoded);
            matches!(decoded, Packet::Welcome(_))
        };
        assert!(input.is_empty(), "{packet:?} encoded to more than one frame");
        assert!(!target.client_decoder.is_mid_frame());
        if welcome {
            assert_eq!(conn, self.current, "WELCOME to a connection other than the sender");
            let previous = self.by_player.insert(player_id, conn);
            assert_eq!(previous, None, "player id {player_id} handed out twice");
        }
        self.frames += 1;
    }

    fn conn_of(&self, id: PlayerId) -> usize {
        *self
            .by_player
            .get(&id.get())
            .unwrap_or_else(|| panic!("frame to player {id}, which has no open connection"))
    }
}

impl Outbox for Net {
    fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
        let bytes = encode_frame_to_vec(player_id, packet);
        let (frame, _) = RawFrame::split_from(&bytes).expect("a whole frame");
        let packet = &frame.packet().unwrap_or_else(|e| panic!("the world sent an invalid frame: {e}"));
        match to {
            Recipients::Sender => self.deliver(self.current, player_id, packet, &bytes),
            Recipients::One(id) => self.deliver(self.conn_of(id), player_id, packet, &bytes),
            Recipients::Many(ids) => {
                let unique: BTreeSet<PlayerId> = ids.iter().copied().collect();
                assert_eq!(unique.len(), ids.len(), "recipient list {ids:?} names a player twice");
                for &id in ids {
                    self.deliver(self.conn_of(id), player_id, packet, &bytes);
                }
            }
        }
    }

    fn end(&mut self, player: PlayerId) {
        // Protocol v1 ends a session only through the verdict of a call about it.
        panic!("the world ended player {player} from outside a call about its session");
    }
}

// ---------------------------------------------------------------------------------------------------
// The driver

struct Harness {
    world: World,
    /// Per connection: the world's session.
    sessions: Vec<Session>,
    /// Per connection: the I/O layer's decoder for what the client sends.
    decoders: Vec<FrameDecoder>,
    net: Net,
    now: Instant,
    max_payload: u32,
    departed: Vec<u32>,
}

const FATAL_CODES: [ErrorCode; 9] = [
    ErrorCode::Malformed,
    ErrorCode::TooLarge,
    ErrorCode::UnknownPacket,
    ErrorCode::SpoofedId,
    ErrorCode::BadState,
    ErrorCode::ServerFull,
    ErrorCode::SlowConsumer,
    ErrorCode::Timeout,
    ErrorCode::ShuttingDown,
];

fn text_bytes(text: &Text, max: usize) -> Vec<u8> {
    match text {
        Text::Valid(s) => {
            let mut end = s.len().min(max);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            if end == 0 { b"x".to_vec() } else { s.as_bytes()[..end].to_vec() }
        }
        Text::Bytes(bytes) => bytes.clone(),
    }
}

fn raw_frame(packet_id: u32, player_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&packet_id.to_le_bytes());
    bytes.extend_from_slice(&player_id.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

impl Harness {
    fn conn(&self, index: u8) -> Option<usize> {
        let n = self.net.conns.len();
        (n > 0).then(|| usize::from(index) % n)
    }

    fn player_of(&self, conn: usize) -> Option<PlayerId> {
        self.sessions[conn].player()
    }

    fn header_id(&self, conn: usize, header: HeaderId) -> u32 {
        match header {
            HeaderId::Zero => 0,
            HeaderId::Own => self.sessions[conn].header_id(),
            HeaderId::Of(other) => self.conn(other).and_then(|c| self.player_of(c)).map_or(0, PlayerId::get),
            HeaderId::Any(id) => id,
        }
    }

    fn open(&mut self) {
        let open = self.net.conns.iter().filter(|c| c.open).count();
        if open >= MAX_OPEN || self.net.conns.len() >= MAX_CONNECTIONS {
            return;
        }
        let mut decoder = FrameDecoder::new(Direction::ToServer, self.max_payload);
        decoder.skip_player_id_check(); // set once the session has its id; the world checks meanwhile
        self.sessions.push(Session::new(self.now));
        self.decoders.push(decoder);
        self.net.conns.push(Conn {
            client_decoder: FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX),
            view: View::default(),
            open: true,
        });
    }

    fn move_packet(&self, conn: usize, target: Target, y: Option<Float>, velocity: Float, time: u32) -> Move {
        let config = self.world.config();
        let me = self.player_of(conn).and_then(|id| self.world.player(id)).map(|p| p.position);
        let here = me.unwrap_or_default();
        let (x, z) = match target {
            Target::Stay => (here.x, here.z),
            Target::Step { reach, angle } => {
                // Elapsed time is unknown to the harness (no record of acceptance): use 0.1 s, the slack.
                let distance = config.max_speed as f64 * 0.1 * f64::from(reach) / 255.0;
                let angle = f64::from(angle) / 256.0 * std::f64::consts::TAU;
                (
                    (here.x as f64 + distance * angle.cos()) as f32,
                    (here.z as f64 + distance * angle.sin()) as f32,
                )
            }
            Target::Towards { conn: other, fraction } => {
                let there = self
                    .conn(other)
                    .and_then(|c| self.player_of(c))
                    .and_then(|id| self.world.player(id))
                    .map_or(here, |p| p.position);
                let f = f64::from(fraction) / 255.0;
                (
                    (here.x as f64 + (there.x as f64 - here.x as f64) * f) as f32,
                    (here.z as f64 + (there.z as f64 - here.z as f64) * f) as f32,
                )
            }
            Target::At { x, z } => (x.value(config.world_w), z.value(config.world_h)),
        };
        let y = y.map_or(here.y, |y| y.value(MAX_HEIGHT));
        Move::new(x, y, z, velocity.value(config.max_speed), time)
    }

    fn packet_bytes(&self, conn: usize, header: u32, packet: &ClientPacket) -> Vec<u8> {
        match packet {
            ClientPacket::Hello(name) => {
                raw_frame(PacketKind::Hello.id(), header, &text_bytes(name, NAME_MAX))
            }
            ClientPacket::Move { target, y, velocity, client_time } => {
                let m = self.move_packet(conn, *target, *y, *velocity, *client_time);
                encode_frame_to_vec(header, &Packet::Move(&m))
            }
            ClientPacket::Attack(target) => {
                let target_id = match *target {
                    AttackTarget::Conn(c) => {
                        self.conn(c).and_then(|c| self.player_of(c)).map_or(0, PlayerId::get)
                    }
                    AttackTarget::Own => self.sessions[conn].header_id(),
                    AttackTarget::Departed(i) => {
                        if self.departed.is_empty() {
                            0
                        } else {
                            self.departed[usize::from(i) % self.departed.len()]
                        }
                    }
                    AttackTarget::Any(id) => id,
                };
                encode_frame_to_vec(header, &Packet::Attack { target_id })
            }
            ClientPacket::Chat(text) => raw_frame(PacketKind::Chat.id(), header, &text_bytes(text, CHAT_MAX)),
            ClientPacket::Ping(payload) => encode_frame_to_vec(
                header,
                &Packet::Ping { payload: &payload[..payload.len().min(PING_MAX)] },
            ),
        }
    }

    /// Checks a verdict against the session, and retires a closed connection.
    fn after_call(&mut self, conn: usize, verdict: Verdict) {
        let session = &self.sessions[conn];
        let c = &mut self.net.conns[conn];
        assert_eq!(verdict == Verdict::Close, session.is_closed(), "verdict {verdict:?} vs session");
        if let Some(id) = session.player()
            && c.view.id == Some(id.get())
            // The I/O layer learns the id once the world has WELCOMEd the session; a spoofed header
            // buffered meanwhile is refused then, as the worker does on `Delivery::Bound`.
            && let Err(error) = self.decoders[conn].set_player_id(id.get())
        {
            self.net.current = conn;
            let verdict = self.world.fail(&mut self.sessions[conn], error.error_code(), &mut self.net);
            self.after_call(conn, verdict);
            return;
        }
        let c = &mut self.net.conns[conn];
        if verdict == Verdict::Close && c.open {
            c.open = false;
            if let Some(id) = c.view.id {
                self.net.by_player.remove(&id);
                self.departed.push(id);
                let id = PlayerId::from_wire(id).expect("WELCOME carried a valid id");
                assert!(self.world.player(id).is_none(), "player {id} outlived its session");
            }
        }
    }

    fn handle(&mut self, conn: usize, bytes: &[u8]) {
        let (frame, rest) = RawFrame::split_from(bytes).expect("a whole frame");
        assert!(rest.is_empty());
        self.net.current = conn;
        let verdict = self.world.handle(self.now, &mut self.sessions[conn], frame, &mut self.net);
        self.after_call(conn, verdict);
    }

    /// Feeds bytes through the connection's decoder and the world, as the I/O layer does.
    fn feed(&mut self, conn: usize, bytes: &[u8]) {
        if !self.net.conns[conn].open {
            return;
        }
        let mut input = bytes;
        loop {
            match self.decoders[conn].next_frame(&mut input) {
                Ok(Some(frame)) => {
                    let owned = [frame.header_bytes(), frame.payload()].concat();
                    self.handle(conn, &owned);
                    if !self.net.conns[conn].open {
                        return; // bytes after a fatal frame are discarded (§8.23)
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    self.net.current = conn;
                    let verdict =
                        self.world.fail(&mut self.sessions[conn], error.error_code(), &mut self.net);
                    self.after_call(conn, verdict);
                    return;
                }
            }
        }
    }

    fn poll(&mut self, conn: usize) {
        self.net.current = conn;
        let verdict = self.world.poll_timeout(self.now, &mut self.sessions[conn], &mut self.net);
        self.after_call(conn, verdict);
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Open => self.open(),
            Op::Send { conn, header, packet } => {
                let Some(conn) = self.conn(*conn) else { return };
                let header = self.header_id(conn, *header);
                let bytes = self.packet_bytes(conn, header, packet);
                self.handle(conn, &bytes);
            }
            Op::RawFrame { conn, packet_id, header, payload } => {
                let Some(conn) = self.conn(*conn) else { return };
                let header = self.header_id(conn, *header);
                let packet_id =
                    if *packet_id < 16 { u32::from(*packet_id) } else { u32::from(*packet_id) << 20 };
                self.handle(conn, &raw_frame(packet_id, header, payload));
            }
            Op::Bytes { conn, bytes } => {
                let Some(conn) = self.conn(*conn) else { return };
                self.feed(conn, bytes);
            }
            Op::AdvanceMs(ms) => self.now += Duration::from_millis(u64::from(*ms)),
            Op::AdvanceSecs(s) => self.now += Duration::from_secs(u64::from(*s)),
            Op::PollTimeout(conn) => {
                let Some(conn) = self.conn(*conn) else { return };
                self.poll(conn);
            }
            Op::PollAll => {
                for conn in 0..self.net.conns.len() {
                    if self.net.conns[conn].open {
                        self.poll(conn);
                    }
                }
            }
            Op::Fail { conn, code } => {
                let Some(conn) = self.conn(*conn) else { return };
                let code = FATAL_CODES[usize::from(*code) % FATAL_CODES.len()];
                self.net.current = conn;
                let verdict = self.world.fail(&mut self.sessions[conn], code, &mut self.net);
                self.after_call(conn, verdict);
            }
            Op::Close(conn) => {
                let Some(conn) = self.conn(*conn) else { return };
                self.net.current = conn;
                self.world.close(&mut self.sessions[conn], &mut self.net);
                assert!(self.sessions[conn].is_closed(), "close left the session open");
                self.after_call(conn, Verdict::Close);
            }
        }
    }

    /// The world's state against the geometry and against what every client was told.
    fn check(&self) {
        let config = self.world.config();
        let radius = config.aoi_radius as f64;
        let players: Vec<_> = self.world.players().collect();
        assert_eq!(players.len(), self.world.player_count(), "players() vs player_count()");
        for p in &players {
            let Position { x, y, z } = p.position;
            assert!(x.is_finite() && y.is_finite() && z.is_finite(), "player {} at {:?}", p.id, p.position);
            assert!(
                (0.0..config.world_w).contains(&x) && (0.0..config.world_h).contains(&z),
                "player {} at {:?} outside the world {} x {}",
                p.id,
                p.position,
                config.world_w,
                config.world_h
            );
            assert!(y.abs() <= MAX_HEIGHT, "player {} at height {y}", p.id);
            assert!(
                (1..=config.max_hp).contains(&p.hp),
                "player {} has hp {} of {}",
                p.id,
                p.hp,
                config.max_hp
            );
            assert_eq!(self.world.player(p.id), Some(*p), "player() vs players()");
        }
        // The world's players are exactly the open, WELCOMEd connections.
        let live: BTreeSet<u32> = players.iter().map(|p| p.id.get()).collect();
        let connected: BTreeSet<u32> =
            self.net.conns.iter().filter(|c| c.open).filter_map(|c| c.view.id).collect();
        assert_eq!(live, connected, "players vs open WELCOMEd connections");
        for (c, session) in self.net.conns.iter().zip(&self.sessions).filter(|(c, _)| c.open) {
            assert_eq!(session.player().map(PlayerId::get), c.view.id, "session's player vs its WELCOME");
        }

        let mut visible: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
        let mut out = Vec::new();
        for p in &players {
            out.clear();
            self.world.visible_to(p.id, &mut out);
            let set: BTreeSet<u32> = out.iter().map(|id| id.get()).collect();
            assert_eq!(set.len(), out.len(), "visible_to({}) lists a player twice: {out:?}", p.id);
            let rule: BTreeSet<u32> = players
                .iter()
                .filter(|q| {
                    let dx = q.position.x as f64 - p.position.x as f64;
                    let dz = q.position.z as f64 - p.position.z as f64;
                    q.id != p.id && dx * dx + dz * dz <= radius * radius
                })
                .map(|q| q.id.get())
                .collect();
            assert_eq!(set, rule, "visible_to({}) at {:?} vs the distance rule", p.id, p.position);
            visible.insert(p.id.get(), set);
        }
        for (&a, seen) in &visible {
            for b in seen {
                assert!(visible[b].contains(&a), "{a} sees {b} but not the other way round");
            }
        }
        for (index, c) in self.net.conns.iter().enumerate().filter(|(_, c)| c.open) {
            let Some(id) = c.view.id else {
                assert!(c.view.seen.is_empty());
                continue;
            };
            let told: BTreeSet<u32> = c.view.seen.keys().copied().collect();
            assert_eq!(
                told, visible[&id],
                "what connection {index} (player {id}) was told it sees vs the world"
            );
            for (&other, (position, name)) in &c.view.seen {
                let actual = self.world.player(PlayerId::from_wire(other).expect("valid")).expect("live");
                assert_eq!(
                    position_bits(*position),
                    position_bits(actual.position),
                    "connection {index} knows player {other} at {position:?}, it is at {:?}",
                    actual.position
                );
                assert_eq!(name, actual.name, "name of player {other} as known by connection {index}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let Some((config, max_payload)) = build_config(&input.config) else { return };
    let world = World::new(config).expect("validated");
    let mut harness = Harness {
        world,
        sessions: Vec::new(),
        decoders: Vec::new(),
        net: Net { current: 0, conns: Vec::new(), by_player: HashMap::new(), frames: 0 },
        now: Instant::now(),
        max_payload,
        departed: Vec::new(),
    };
    for op in &input.ops {
        harness.step(op);
        harness.check();
    }
});
