//! The arena's wire protocol: packet ids, the packets each side sends, how they are parsed and encoded.
//!
//! Frames keep gamewire's 12-byte header (`packet_id`, `player_id`, `data_length`, little-endian);
//! payloads are fixed-size little-endian fields or UTF-8 text. `docs/arena.md` is the contract.
//! A parsed packet cannot hold an invalid value: [`Steer`] and [`Fire`] are only built through checks.

use gamewire_proto::{Encode, ErrorCode, PacketSet};

/// HELLO: a client's first frame, asking to join; payload its name (1 to [`NAME_MAX`] bytes of UTF-8).
pub const HELLO: u32 = 1;
/// WELCOME: the answer to HELLO; header `player_id` the new ship's id; payload a [`Welcome`].
pub const WELCOME: u32 = 2;
/// PING: up to [`PING_MAX`] bytes the server echoes in PONG.
pub const PING: u32 = 8;
/// PONG: a PING's payload, back.
pub const PONG: u32 = 9;
/// ERROR: the core's format, a `u32` [`ErrorCode`] and a text.
pub const ERROR: u32 = 10;
/// STEER (client): heading and throttle of the sender's ship, a [`Steer`].
pub const STEER: u32 = 16;
/// FIRE (client): fire a projectile along a heading, a [`Fire`].
pub const FIRE: u32 = 17;
/// SHIP (server): where a ship is; header `player_id` the ship; payload a [`ShipState`].
pub const SHIP: u32 = 20;
/// GONE (server): the ship in the header left the arena; empty payload.
pub const GONE: u32 = 21;
/// SHOT (server): a projectile was fired; header `player_id` the shooter; payload a [`Shot`].
pub const SHOT: u32 = 22;
/// PROJECTILE (server): where a projectile is after a tick; header the shooter; payload a
/// [`ProjectileState`].
pub const PROJECTILE: u32 = 23;
/// HIT (server): a projectile hit a ship; header the shooter; payload a [`HitReport`].
pub const HIT: u32 = 24;
/// SCORE (server): a player's score changed; header the player; payload a [`Score`].
pub const SCORE: u32 = 25;
/// ANNOUNCE (server): a message from the operator to every player; header 0; payload UTF-8 text.
pub const ANNOUNCE: u32 = 26;
/// KICKED (server, fatal): the operator removed this player; header the player; payload UTF-8 text.
pub const KICKED: u32 = 27;

/// The packet ids an arena client may send; the core answers any other with ERROR(UNKNOWN_PACKET).
pub const CLIENT_PACKETS: PacketSet = PacketSet::SESSION_FROM_CLIENT.with(STEER).with(FIRE);

/// The packet ids an arena server sends: what a client's `FrameDecoder` should accept.
pub const SERVER_PACKETS: PacketSet = PacketSet::SESSION_FROM_SERVER
    .with(SHIP)
    .with(GONE)
    .with(SHOT)
    .with(PROJECTILE)
    .with(HIT)
    .with(SCORE)
    .with(ANNOUNCE)
    .with(KICKED);

/// Longest HELLO name, in bytes.
pub const NAME_MAX: usize = 32;
/// Longest PING (and so PONG) payload, in bytes.
pub const PING_MAX: usize = 64;
/// Longest ANNOUNCE or KICKED text, in bytes (longer texts are cut at a character boundary).
pub const TEXT_MAX: usize = 200;
/// Largest payload the arena server sends: what a client decoder's `max_payload` must allow.
pub const SERVER_PAYLOAD_MAX: u32 = 4 + TEXT_MAX as u32;

/// Why a payload is not a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// An id this side does not send.
    #[error("packet id {packet_id} is not an arena packet in this direction")]
    UnknownPacket {
        /// The header's `packet_id`.
        packet_id: u32,
    },
    /// A payload of the wrong length, invalid UTF-8 or out-of-range numbers.
    #[error("malformed {packet} payload")]
    Malformed {
        /// The packet's name.
        packet: &'static str,
    },
}

impl ParseError {
    /// The ERROR code a server answers this with.
    pub fn error_code(self) -> ErrorCode {
        match self {
            ParseError::UnknownPacket { .. } => ErrorCode::UnknownPacket,
            ParseError::Malformed { .. } => ErrorCode::Malformed,
        }
    }
}

/// A ship's steering: a heading in radians (x grows along `cos`, z along `sin`) and a throttle
/// from 0 (stop) to 1 (full speed). Finite, and the throttle in range, by construction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Steer {
    heading: f32,
    throttle: f32,
}

impl Steer {
    /// A steering order, if `heading` is finite and `throttle` within `0.0..=1.0`.
    pub fn new(heading: f32, throttle: f32) -> Option<Steer> {
        (heading.is_finite() && (0.0..=1.0).contains(&throttle)).then_some(Steer { heading, throttle })
    }

    /// The heading, radians.
    pub fn heading(self) -> f32 {
        self.heading
    }

    /// The throttle, `0.0..=1.0`.
    pub fn throttle(self) -> f32 {
        self.throttle
    }
}

/// An order to fire along a heading in radians; finite by construction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fire {
    heading: f32,
}

impl Fire {
    /// An order to fire, if `heading` is finite.
    pub fn new(heading: f32) -> Option<Fire> {
        heading.is_finite().then_some(Fire { heading })
    }

    /// The heading, radians.
    pub fn heading(self) -> f32 {
        self.heading
    }
}

/// A packet a client sends.
///
/// # Examples
///
/// ```
/// use gamewire_arena::protocol::{ClientPacket, Fire};
/// use gamewire_proto::Encode;
///
/// let fire = ClientPacket::Fire(Fire::new(1.5).unwrap());
/// let mut payload = vec![0; fire.payload_len()];
/// fire.write_payload(&mut payload);
/// assert_eq!(ClientPacket::parse(fire.packet_id(), &payload), Ok(fire));
/// // NaN is no heading: a server answers ERROR(MALFORMED).
/// assert!(ClientPacket::parse(fire.packet_id(), &f32::NAN.to_le_bytes()).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClientPacket<'a> {
    /// HELLO: join with this name.
    Hello {
        /// 1 to [`NAME_MAX`] bytes.
        name: &'a str,
    },
    /// PING.
    Ping {
        /// At most [`PING_MAX`] bytes.
        payload: &'a [u8],
    },
    /// STEER.
    Steer(Steer),
    /// FIRE.
    Fire(Fire),
}

impl<'a> ClientPacket<'a> {
    /// Parses the payload of a client frame with id `packet_id`.
    ///
    /// # Errors
    ///
    /// [`ParseError::UnknownPacket`] for an id a client does not send, [`ParseError::Malformed`] for a
    /// payload that is not its packet.
    pub fn parse(packet_id: u32, payload: &'a [u8]) -> Result<Self, ParseError> {
        Ok(match packet_id {
            HELLO => {
                let name = text(payload, "HELLO")?;
                if name.is_empty() || name.len() > NAME_MAX {
                    return Err(ParseError::Malformed { packet: "HELLO" });
                }
                ClientPacket::Hello { name }
            }
            PING if payload.len() <= PING_MAX => ClientPacket::Ping { payload },
            PING => return Err(ParseError::Malformed { packet: "PING" }),
            STEER => {
                let mut fields = Reader::exact(payload, 8, "STEER")?;
                Steer::new(fields.f32(), fields.f32())
                    .map(ClientPacket::Steer)
                    .ok_or(ParseError::Malformed { packet: "STEER" })?
            }
            FIRE => {
                let mut fields = Reader::exact(payload, 4, "FIRE")?;
                Fire::new(fields.f32())
                    .map(ClientPacket::Fire)
                    .ok_or(ParseError::Malformed { packet: "FIRE" })?
            }
            packet_id => return Err(ParseError::UnknownPacket { packet_id }),
        })
    }
}

impl Encode for ClientPacket<'_> {
    fn packet_id(&self) -> u32 {
        match self {
            ClientPacket::Hello { .. } => HELLO,
            ClientPacket::Ping { .. } => PING,
            ClientPacket::Steer(_) => STEER,
            ClientPacket::Fire(_) => FIRE,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            ClientPacket::Hello { name } => name.len(),
            ClientPacket::Ping { payload } => payload.len(),
            ClientPacket::Steer(_) => 8,
            ClientPacket::Fire(_) => 4,
        }
    }

    fn write_payload(&self, out: &mut [u8]) {
        let mut out = Writer { out, at: 0 };
        match self {
            ClientPacket::Hello { name } => out.bytes(name.as_bytes()),
            ClientPacket::Ping { payload } => out.bytes(payload),
            ClientPacket::Steer(steer) => {
                out.f32(steer.heading);
                out.f32(steer.throttle);
            }
            ClientPacket::Fire(fire) => out.f32(fire.heading),
        }
    }
}

/// WELCOME's payload: where the ship starts and the arena's rules a client needs. 28 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welcome {
    /// Start position, x.
    pub x: f32,
    /// Start position, z.
    pub z: f32,
    /// The arena's x extent (x in `0.0..world_w`).
    pub world_w: f32,
    /// The arena's z extent.
    pub world_h: f32,
    /// How far a ship sees: it is sent what happens within this distance of it.
    pub aoi_radius: f32,
    /// Server ticks per second.
    pub tick_hz: u32,
    /// A ship's hit points when it (re)spawns.
    pub max_hp: u32,
}

/// SHIP's payload: a ship's position, heading and hit points. 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShipState {
    /// Position, x.
    pub x: f32,
    /// Position, z.
    pub z: f32,
    /// Heading, radians.
    pub heading: f32,
    /// Hit points left.
    pub hp: u32,
}

/// SHOT's payload: a new projectile, where it starts and its velocity per second. 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shot {
    /// The projectile's id (unique among projectiles in flight).
    pub projectile: u32,
    /// Start, x.
    pub x: f32,
    /// Start, z.
    pub z: f32,
    /// Velocity along x, units per second.
    pub vx: f32,
    /// Velocity along z, units per second.
    pub vz: f32,
}

/// PROJECTILE's payload: where a projectile is after a tick. 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectileState {
    /// The projectile's id.
    pub projectile: u32,
    /// Position, x.
    pub x: f32,
    /// Position, z.
    pub z: f32,
}

/// HIT's payload: who was hit by which projectile, and the hit points it has left. 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitReport {
    /// The ship hit.
    pub victim: u32,
    /// The projectile (gone after the hit).
    pub projectile: u32,
    /// The victim's hit points after the hit; 0 means destroyed (it respawns at once).
    pub hp: u32,
}

/// SCORE's payload: a player's kills and deaths. 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    /// Ships this player destroyed.
    pub kills: u32,
    /// Times this player was destroyed.
    pub deaths: u32,
}

/// A packet the server sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServerPacket<'a> {
    /// WELCOME.
    Welcome(Welcome),
    /// PONG.
    Pong {
        /// The PING's payload.
        payload: &'a [u8],
    },
    /// ERROR, in the core's format.
    Error {
        /// An [`ErrorCode`]'s wire value.
        code: u32,
        /// Why, for people.
        message: &'a str,
    },
    /// SHIP.
    Ship(ShipState),
    /// GONE.
    Gone,
    /// SHOT.
    Shot(Shot),
    /// PROJECTILE.
    Projectile(ProjectileState),
    /// HIT.
    Hit(HitReport),
    /// SCORE.
    Score(Score),
    /// ANNOUNCE.
    Announce {
        /// At most [`TEXT_MAX`] bytes.
        text: &'a str,
    },
    /// KICKED, the last frame of its connection.
    Kicked {
        /// At most [`TEXT_MAX`] bytes.
        reason: &'a str,
    },
}

impl<'a> ServerPacket<'a> {
    /// Parses the payload of a server frame with id `packet_id` (the client side).
    ///
    /// # Errors
    ///
    /// [`ParseError::UnknownPacket`] for an id the server does not send, [`ParseError::Malformed`] for
    /// a payload that is not its packet.
    pub fn parse(packet_id: u32, payload: &'a [u8]) -> Result<Self, ParseError> {
        Ok(match packet_id {
            WELCOME => {
                let mut f = Reader::exact(payload, 28, "WELCOME")?;
                ServerPacket::Welcome(Welcome {
                    x: f.f32(),
                    z: f.f32(),
                    world_w: f.f32(),
                    world_h: f.f32(),
                    aoi_radius: f.f32(),
                    tick_hz: f.u32(),
                    max_hp: f.u32(),
                })
            }
            PONG if payload.len() <= PING_MAX => ServerPacket::Pong { payload },
            ERROR if payload.len() >= 4 => {
                let (code, message) = payload.split_at(4);
                let code = u32::from_le_bytes(code.try_into().expect("4 bytes"));
                ServerPacket::Error { code, message: text(message, "ERROR")? }
            }
            SHIP => {
                let mut f = Reader::exact(payload, 16, "SHIP")?;
                ServerPacket::Ship(ShipState { x: f.f32(), z: f.f32(), heading: f.f32(), hp: f.u32() })
            }
            GONE if payload.is_empty() => ServerPacket::Gone,
            SHOT => {
                let mut f = Reader::exact(payload, 20, "SHOT")?;
                ServerPacket::Shot(Shot {
                    projectile: f.u32(),
                    x: f.f32(),
                    z: f.f32(),
                    vx: f.f32(),
                    vz: f.f32(),
                })
            }
            PROJECTILE => {
                let mut f = Reader::exact(payload, 12, "PROJECTILE")?;
                ServerPacket::Projectile(ProjectileState { projectile: f.u32(), x: f.f32(), z: f.f32() })
            }
            HIT => {
                let mut f = Reader::exact(payload, 12, "HIT")?;
                ServerPacket::Hit(HitReport { victim: f.u32(), projectile: f.u32(), hp: f.u32() })
            }
            SCORE => {
                let mut f = Reader::exact(payload, 8, "SCORE")?;
                ServerPacket::Score(Score { kills: f.u32(), deaths: f.u32() })
            }
            ANNOUNCE if payload.len() <= TEXT_MAX => {
                ServerPacket::Announce { text: text(payload, "ANNOUNCE")? }
            }
            KICKED if payload.len() <= TEXT_MAX => ServerPacket::Kicked { reason: text(payload, "KICKED")? },
            PONG | ERROR | GONE | ANNOUNCE | KICKED => {
                return Err(ParseError::Malformed { packet: "server" });
            }
            packet_id => return Err(ParseError::UnknownPacket { packet_id }),
        })
    }

    /// An ERROR packet with `code` and the core's text for it.
    pub fn error(code: ErrorCode) -> ServerPacket<'static> {
        ServerPacket::Error { code: code.code(), message: gamewire_world::error_message(code) }
    }
}

impl Encode for ServerPacket<'_> {
    fn packet_id(&self) -> u32 {
        match self {
            ServerPacket::Welcome(_) => WELCOME,
            ServerPacket::Pong { .. } => PONG,
            ServerPacket::Error { .. } => ERROR,
            ServerPacket::Ship(_) => SHIP,
            ServerPacket::Gone => GONE,
            ServerPacket::Shot(_) => SHOT,
            ServerPacket::Projectile(_) => PROJECTILE,
            ServerPacket::Hit(_) => HIT,
            ServerPacket::Score(_) => SCORE,
            ServerPacket::Announce { .. } => ANNOUNCE,
            ServerPacket::Kicked { .. } => KICKED,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            ServerPacket::Welcome(_) => 28,
            ServerPacket::Pong { payload } => payload.len(),
            ServerPacket::Error { message, .. } => 4 + message.len(),
            ServerPacket::Ship(_) => 16,
            ServerPacket::Gone => 0,
            ServerPacket::Shot(_) => 20,
            ServerPacket::Projectile(_) | ServerPacket::Hit(_) => 12,
            ServerPacket::Score(_) => 8,
            ServerPacket::Announce { text } => text.len(),
            ServerPacket::Kicked { reason } => reason.len(),
        }
    }

    fn write_payload(&self, out: &mut [u8]) {
        let mut out = Writer { out, at: 0 };
        match *self {
            ServerPacket::Welcome(w) => {
                for value in [w.x, w.z, w.world_w, w.world_h, w.aoi_radius] {
                    out.f32(value);
                }
                out.u32(w.tick_hz);
                out.u32(w.max_hp);
            }
            ServerPacket::Pong { payload } => out.bytes(payload),
            ServerPacket::Error { code, message } => {
                out.u32(code);
                out.bytes(message.as_bytes());
            }
            ServerPacket::Ship(s) => {
                out.f32(s.x);
                out.f32(s.z);
                out.f32(s.heading);
                out.u32(s.hp);
            }
            ServerPacket::Gone => {}
            ServerPacket::Shot(s) => {
                out.u32(s.projectile);
                for value in [s.x, s.z, s.vx, s.vz] {
                    out.f32(value);
                }
            }
            ServerPacket::Projectile(p) => {
                out.u32(p.projectile);
                out.f32(p.x);
                out.f32(p.z);
            }
            ServerPacket::Hit(h) => {
                for value in [h.victim, h.projectile, h.hp] {
                    out.u32(value);
                }
            }
            ServerPacket::Score(s) => {
                out.u32(s.kills);
                out.u32(s.deaths);
            }
            ServerPacket::Announce { text } => out.bytes(text.as_bytes()),
            ServerPacket::Kicked { reason } => out.bytes(reason.as_bytes()),
        }
    }

    fn is_fatal(&self) -> bool {
        match self {
            ServerPacket::Kicked { .. } => true,
            ServerPacket::Error { code, .. } => ErrorCode::from_u32(*code).is_none_or(ErrorCode::is_fatal),
            _ => false,
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary: what ANNOUNCE and KICKED carry.
pub fn truncate_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn text<'a>(payload: &'a [u8], packet: &'static str) -> Result<&'a str, ParseError> {
    std::str::from_utf8(payload).map_err(|_| ParseError::Malformed { packet })
}

/// Fixed-size little-endian fields read in order from a payload whose length was checked once.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn exact(bytes: &'a [u8], len: usize, packet: &'static str) -> Result<Self, ParseError> {
        if bytes.len() == len { Ok(Reader { bytes }) } else { Err(ParseError::Malformed { packet }) }
    }

    fn u32(&mut self) -> u32 {
        let (field, rest) = self.bytes.split_first_chunk::<4>().expect("length checked in Reader::exact");
        self.bytes = rest;
        u32::from_le_bytes(*field)
    }

    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
}

/// Fields written in order into a payload of exactly `payload_len` bytes.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    fn f32(&mut self, value: f32) {
        self.u32(value.to_bits());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gamewire_proto::RESERVED_PACKETS;

    fn round_trip_server(packet: ServerPacket<'_>) {
        let mut payload = vec![0; packet.payload_len()];
        packet.write_payload(&mut payload);
        assert_eq!(ServerPacket::parse(packet.packet_id(), &payload), Ok(packet));
        assert!(SERVER_PACKETS.contains(packet.packet_id()));
    }

    #[test]
    fn every_server_packet_round_trips() {
        round_trip_server(ServerPacket::Welcome(Welcome {
            x: 1.0,
            z: 2.0,
            world_w: 3.0,
            world_h: 4.0,
            aoi_radius: 5.0,
            tick_hz: 20,
            max_hp: 100,
        }));
        round_trip_server(ServerPacket::Pong { payload: b"abc" });
        round_trip_server(ServerPacket::error(ErrorCode::Malformed));
        round_trip_server(ServerPacket::Ship(ShipState { x: 1.0, z: 2.0, heading: -1.0, hp: 7 }));
        round_trip_server(ServerPacket::Gone);
        round_trip_server(ServerPacket::Shot(Shot { projectile: 9, x: 1.0, z: 2.0, vx: 3.0, vz: 4.0 }));
        round_trip_server(ServerPacket::Projectile(ProjectileState { projectile: 9, x: 1.0, z: 2.0 }));
        round_trip_server(ServerPacket::Hit(HitReport { victim: 3, projectile: 9, hp: 50 }));
        round_trip_server(ServerPacket::Score(Score { kills: 1, deaths: 2 }));
        round_trip_server(ServerPacket::Announce { text: "hi" });
        round_trip_server(ServerPacket::Kicked { reason: "bye" });
    }

    #[test]
    fn malformed_client_payloads_are_refused() {
        let steer = |heading: f32, throttle: f32| [heading.to_le_bytes(), throttle.to_le_bytes()].concat();
        assert!(ClientPacket::parse(STEER, &steer(0.5, 1.0)).is_ok());
        for bad in [steer(f32::NAN, 0.5), steer(0.0, 1.5), steer(0.0, -0.1), vec![0; 7], vec![0; 9]] {
            assert_eq!(ClientPacket::parse(STEER, &bad), Err(ParseError::Malformed { packet: "STEER" }));
        }
        assert!(ClientPacket::parse(FIRE, &f32::INFINITY.to_le_bytes()).is_err());
        assert!(ClientPacket::parse(HELLO, b"").is_err());
        assert!(ClientPacket::parse(HELLO, &[b'a'; NAME_MAX + 1]).is_err());
        assert!(ClientPacket::parse(HELLO, &[0xff]).is_err());
        assert!(ClientPacket::parse(PING, &[0; PING_MAX + 1]).is_err());
        assert_eq!(ClientPacket::parse(3, &[]), Err(ParseError::UnknownPacket { packet_id: 3 }));
    }

    #[test]
    fn the_arena_ids_stay_clear_of_the_core() {
        let own = [STEER, FIRE, SHIP, GONE, SHOT, PROJECTILE, HIT, SCORE, ANNOUNCE, KICKED];
        for id in own {
            assert!(!RESERVED_PACKETS.contains(id), "{id} is the core's");
        }
        assert!(!CLIENT_PACKETS.contains(3), "protocol v1's MOVE is not the arena's");
    }

    #[test]
    fn texts_are_cut_at_character_boundaries() {
        assert_eq!(truncate_text("héllo", 2), "h");
        assert_eq!(truncate_text("hello", 10), "hello");
    }
}
