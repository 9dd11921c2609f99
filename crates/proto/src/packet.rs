//! Packet payloads: zero-copy views for the fixed layouts, checked text for the rest, and the encoder.

use zerocopy::little_endian::{F32, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::encode::Encode;
use crate::{CHAT_MAX, ERROR_MESSAGE_MAX, NAME_MAX, PING_MAX, PacketKind, ParseError};

/// WELCOME payload (40 bytes): the session token, the spawn position, hp and the world's parameters.
///
/// The server's answer to HELLO; the header's `player_id` is the id the client now plays. Fields are
/// little-endian wrappers ([`crate::little_endian`]): build them with `new`, read them with `get`.
///
/// # Examples
///
/// ```
/// use gamewire_proto::little_endian::{F32, U32, U64};
/// use gamewire_proto::{Packet, RawFrame, Welcome, encode_frame_to_vec};
///
/// // Server side: admit player 17 at (500, 250).
/// let welcome = Welcome {
///     token: U64::new(0x5EED),
///     x: F32::new(500.0),
///     y: F32::new(0.0),
///     z: F32::new(250.0),
///     hp: U32::new(100),
///     world_w: F32::new(1000.0),
///     world_h: F32::new(1000.0),
///     aoi_radius: F32::new(50.0),
///     max_speed: F32::new(20.0),
/// };
/// let bytes = encode_frame_to_vec(17, &Packet::Welcome(&welcome));
/// assert_eq!(bytes.len(), 12 + 40);
///
/// // Client side: learn its id and where it stands.
/// let (frame, _) = RawFrame::split_from(&bytes).unwrap();
/// let Packet::Welcome(welcome) = frame.packet()? else { panic!("expected WELCOME") };
/// assert_eq!(frame.player_id(), 17);
/// assert_eq!((welcome.x.get(), welcome.z.get(), welcome.hp.get()), (500.0, 250.0, 100));
/// # Ok::<(), gamewire_proto::ParseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Welcome {
    /// Opaque session token.
    pub token: U64,
    /// Spawn x.
    pub x: F32,
    /// Spawn y (height).
    pub y: F32,
    /// Spawn z.
    pub z: F32,
    /// Hit points.
    pub hp: U32,
    /// World width (x extent).
    pub world_w: F32,
    /// World height (z extent).
    pub world_h: F32,
    /// Area-of-interest radius.
    pub aoi_radius: F32,
    /// Maximum speed in units per second.
    pub max_speed: F32,
}

/// MOVE payload (20 bytes), the same in both directions: a client sends its own new position, and
/// the server relays it to every player who sees the mover, with the mover's id in the header (or sends
/// it back, velocity 0, as the last legal position after refusing a move).
///
/// # Examples
///
/// ```
/// use gamewire_proto::{Move, Packet, RawFrame, encode_frame_to_vec};
///
/// // A client moves; header player_id 0 means "my own player".
/// let bytes = encode_frame_to_vec(0, &Packet::Move(&Move::new(101.5, 0.0, 99.0, 5.0, 123_456)));
/// assert_eq!(bytes.len(), 12 + 20);
///
/// let (frame, _) = RawFrame::split_from(&bytes).unwrap();
/// let Packet::Move(moved) = frame.packet()? else { panic!("expected MOVE") };
/// assert_eq!((moved.x.get(), moved.z.get()), (101.5, 99.0));
/// assert_eq!(moved.client_time.get(), 123_456);
/// # Ok::<(), gamewire_proto::ParseError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Move {
    /// Position x.
    pub x: F32,
    /// Position y (height).
    pub y: F32,
    /// Position z.
    pub z: F32,
    /// Speed claimed by the client.
    pub velocity: F32,
    /// The client's clock when it sent the move; relayed untouched.
    pub client_time: U32,
}

impl Move {
    /// Builds a MOVE payload from native values.
    pub fn new(x: f32, y: f32, z: f32, velocity: f32, client_time: u32) -> Self {
        Move {
            x: F32::new(x),
            y: F32::new(y),
            z: F32::new(z),
            velocity: F32::new(velocity),
            client_time: U32::new(client_time),
        }
    }
}

/// The fixed 16-byte head of an ENTER payload, where and how healthy the player coming into view is;
/// its name follows it. See [`Packet`]'s example for reading one.
#[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EnterHead {
    /// Position x.
    pub x: F32,
    /// Position y (height).
    pub y: F32,
    /// Position z.
    pub z: F32,
    /// Hit points.
    pub hp: U32,
}

/// HIT payload (12 bytes): an attack landed, sent to the attacker and everyone who sees the attacker;
/// the header's `player_id` is the attacker. See [`Packet`]'s example for reading one.
#[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Hit {
    /// The player hit.
    pub target_id: U32,
    /// Damage dealt.
    pub damage: U32,
    /// The target's hp after the hit.
    pub target_hp: U32,
}

/// A parsed payload of protocol v1.
///
/// What a client matches on for every frame it receives, what a server builds to send one
/// (through [`crate::encode_frame`]; `Packet` implements [`Encode`]). Parsing borrows the frame:
/// nothing is copied. Every variant holds only values the protocol allows (lengths in range, UTF-8
/// checked), so code that matches on a `Packet` never re-validates them.
///
/// # Examples
///
/// A client's receive loop over what a server sent: player 4 comes into view, player 2 hits it, then
/// says something.
///
/// ```
/// use gamewire_proto::little_endian::{F32, U32};
/// use gamewire_proto::{
///     Direction, EnterHead, FrameDecoder, Hit, Packet, SERVER_PAYLOAD_MAX, encode_frame_to_vec,
/// };
///
/// let head = EnterHead { x: F32::new(10.0), y: F32::new(0.0), z: F32::new(12.5), hp: U32::new(100) };
/// let hit = Hit { target_id: U32::new(4), damage: U32::new(10), target_hp: U32::new(90) };
/// let mut received = encode_frame_to_vec(4, &Packet::Enter { head: &head, name: "bob" });
/// received.extend(encode_frame_to_vec(2, &Packet::Hit(&hit)));
/// received.extend(encode_frame_to_vec(2, &Packet::Chat { text: "gg" }));
///
/// let mut decoder = FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX);
/// let mut input = &received[..];
/// let mut log = Vec::new();
/// while let Some(frame) = decoder.next_frame(&mut input)? {
///     let who = frame.player_id();
///     match frame.packet()? {
///         Packet::Enter { head, name } => log.push(format!("{name} ({who}) at x={}", head.x.get())),
///         Packet::Leave => log.push(format!("{who} left")),
///         Packet::Hit(hit) => {
///             log.push(format!("{who} hit {}: {} hp left", hit.target_id.get(), hit.target_hp.get()))
///         }
///         Packet::Chat { text } => log.push(format!("{who}: {text}")),
///         other => log.push(other.kind().name().to_string()),
///     }
/// }
/// assert_eq!(log, ["bob (4) at x=10", "2 hit 4: 90 hp left", "2: gg"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Packet<'a> {
    /// HELLO: the player's name, 1..=32 bytes.
    Hello {
        /// The name.
        name: &'a str,
    },
    /// WELCOME: the server admits the client; the header's `player_id` is the client's new id.
    Welcome(&'a Welcome),
    /// MOVE: a position update (a client's own, or one the server relays about the header's player).
    Move(&'a Move),
    /// ATTACK: the client attacks a player it sees.
    Attack {
        /// The player attacked.
        target_id: u32,
    },
    /// CHAT: 1..=256 bytes of text.
    Chat {
        /// The text.
        text: &'a str,
    },
    /// ENTER: position, hp and name (0..=32 bytes) of a player coming into view.
    Enter {
        /// Position and hp.
        head: &'a EnterHead,
        /// The name.
        name: &'a str,
    },
    /// LEAVE: the player in the header went out of view.
    Leave,
    /// PING: 0..=64 opaque bytes.
    Ping {
        /// Echoed back in the PONG.
        payload: &'a [u8],
    },
    /// PONG: the PING's payload.
    Pong {
        /// The PING's payload.
        payload: &'a [u8],
    },
    /// ERROR: a code (see [`crate::ErrorCode`]; kept raw so that a client tolerates codes it does not
    /// know) and a message of 0..=200 bytes.
    Error {
        /// The wire code.
        code: u32,
        /// Human-readable detail.
        message: &'a str,
    },
    /// HIT: an attack landed; the header's `player_id` is the attacker.
    Hit(&'a Hit),
}

fn fixed<T: FromBytes + KnownLayout + Immutable>(kind: PacketKind, payload: &[u8]) -> Result<&T, ParseError> {
    T::ref_from_bytes(payload).map_err(|_| ParseError::WrongSize {
        kind,
        expected: size_of::<T>(),
        actual: payload.len(),
    })
}

fn text(kind: PacketKind, bytes: &[u8], min: usize, max: usize) -> Result<&str, ParseError> {
    if bytes.len() < min || bytes.len() > max {
        return Err(ParseError::BadLength { kind, min, max, actual: bytes.len() });
    }
    std::str::from_utf8(bytes).map_err(|_| ParseError::InvalidUtf8 { kind })
}

fn opaque(kind: PacketKind, bytes: &[u8], max: usize) -> Result<&[u8], ParseError> {
    if bytes.len() > max {
        return Err(ParseError::BadLength { kind, min: 0, max, actual: bytes.len() });
    }
    Ok(bytes)
}

impl<'a> Packet<'a> {
    /// Parses the payload of a packet with wire id `packet_id`.
    ///
    /// Direction is not checked here: [`crate::FrameDecoder`] refuses the ids its direction may not carry
    /// before the payload arrives. [`crate::RawFrame::packet`] calls this with a decoded frame's id and
    /// payload.
    ///
    /// # Errors
    ///
    /// [`ParseError::UnknownPacket`] for an id outside 1..=11; otherwise a [`ParseError`] that maps to
    /// MALFORMED: a fixed payload of the wrong size, a text of the wrong length, or invalid UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_proto::{Packet, PacketKind, ParseError};
    ///
    /// // An ATTACK payload is the target's id, a little-endian u32.
    /// let payload = 7u32.to_le_bytes();
    /// assert_eq!(Packet::parse(PacketKind::Attack.id(), &payload), Ok(Packet::Attack { target_id: 7 }));
    /// assert_eq!(Packet::parse(PacketKind::Chat.id(), "hé".as_bytes()), Ok(Packet::Chat { text: "hé" }));
    /// assert_eq!(
    ///     Packet::parse(PacketKind::Chat.id(), &[0xFF]),
    ///     Err(ParseError::InvalidUtf8 { kind: PacketKind::Chat })
    /// );
    /// ```
    pub fn parse(packet_id: u32, payload: &'a [u8]) -> Result<Self, ParseError> {
        let kind = PacketKind::from_id(packet_id).ok_or(ParseError::UnknownPacket(packet_id))?;
        Ok(match kind {
            PacketKind::Hello => Packet::Hello { name: text(kind, payload, 1, NAME_MAX)? },
            PacketKind::Welcome => Packet::Welcome(fixed(kind, payload)?),
            PacketKind::Move => Packet::Move(fixed(kind, payload)?),
            PacketKind::Attack => Packet::Attack { target_id: fixed::<U32>(kind, payload)?.get() },
            PacketKind::Chat => Packet::Chat { text: text(kind, payload, 1, CHAT_MAX)? },
            PacketKind::Enter => {
                let head_len = size_of::<EnterHead>();
                if payload.len() < head_len || payload.len() > head_len + NAME_MAX {
                    return Err(ParseError::BadLength {
                        kind,
                        min: head_len,
                        max: head_len + NAME_MAX,
                        actual: payload.len(),
                    });
                }
                let (head, name) = payload.split_at(head_len);
                Packet::Enter { head: fixed(kind, head)?, name: text(kind, name, 0, NAME_MAX)? }
            }
            PacketKind::Leave => {
                if !payload.is_empty() {
                    return Err(ParseError::WrongSize { kind, expected: 0, actual: payload.len() });
                }
                Packet::Leave
            }
            PacketKind::Ping => Packet::Ping { payload: opaque(kind, payload, PING_MAX)? },
            PacketKind::Pong => Packet::Pong { payload: opaque(kind, payload, PING_MAX)? },
            PacketKind::Error => {
                if payload.len() < 4 {
                    return Err(ParseError::BadLength {
                        kind,
                        min: 4,
                        max: 4 + ERROR_MESSAGE_MAX,
                        actual: payload.len(),
                    });
                }
                let (code, message) = payload.split_at(4);
                Packet::Error {
                    code: fixed::<U32>(kind, code)?.get(),
                    message: text(kind, message, 0, ERROR_MESSAGE_MAX)?,
                }
            }
            PacketKind::Hit => Packet::Hit(fixed(kind, payload)?),
        })
    }

    /// The packet's kind, e.g. to log its protocol name without matching every variant.
    pub fn kind(&self) -> PacketKind {
        match self {
            Packet::Hello { .. } => PacketKind::Hello,
            Packet::Welcome(_) => PacketKind::Welcome,
            Packet::Move(_) => PacketKind::Move,
            Packet::Attack { .. } => PacketKind::Attack,
            Packet::Chat { .. } => PacketKind::Chat,
            Packet::Enter { .. } => PacketKind::Enter,
            Packet::Leave => PacketKind::Leave,
            Packet::Ping { .. } => PacketKind::Ping,
            Packet::Pong { .. } => PacketKind::Pong,
            Packet::Error { .. } => PacketKind::Error,
            Packet::Hit(_) => PacketKind::Hit,
        }
    }

    /// Payload size in bytes once encoded (the header's `data_length`).
    pub fn payload_len(&self) -> usize {
        match self {
            Packet::Hello { name } => name.len(),
            Packet::Welcome(_) => size_of::<Welcome>(),
            Packet::Move(_) => size_of::<Move>(),
            Packet::Attack { .. } => 4,
            Packet::Chat { text } => text.len(),
            Packet::Enter { name, .. } => size_of::<EnterHead>() + name.len(),
            Packet::Leave => 0,
            Packet::Ping { payload } | Packet::Pong { payload } => payload.len(),
            Packet::Error { message, .. } => 4 + message.len(),
            Packet::Hit(_) => size_of::<Hit>(),
        }
    }

    fn write_payload(&self, out: &mut [u8]) {
        match self {
            Packet::Hello { name: s } | Packet::Chat { text: s } => out.copy_from_slice(s.as_bytes()),
            Packet::Welcome(w) => out.copy_from_slice(w.as_bytes()),
            Packet::Move(m) => out.copy_from_slice(m.as_bytes()),
            Packet::Attack { target_id } => out.copy_from_slice(&target_id.to_le_bytes()),
            Packet::Enter { head, name } => {
                let (h, n) = out.split_at_mut(size_of::<EnterHead>());
                h.copy_from_slice(head.as_bytes());
                n.copy_from_slice(name.as_bytes());
            }
            Packet::Leave => {}
            Packet::Ping { payload } | Packet::Pong { payload } => out.copy_from_slice(payload),
            Packet::Error { code, message } => {
                let (c, m) = out.split_at_mut(4);
                c.copy_from_slice(&code.to_le_bytes());
                m.copy_from_slice(message.as_bytes());
            }
            Packet::Hit(h) => out.copy_from_slice(h.as_bytes()),
        }
    }
}

impl Encode for Packet<'_> {
    fn packet_id(&self) -> u32 {
        self.kind().id()
    }

    fn payload_len(&self) -> usize {
        Packet::payload_len(self)
    }

    fn write_payload(&self, out: &mut [u8]) {
        Packet::write_payload(self, out);
    }

    /// MOVE (relayed moves, corrections, respawns) is unreliable-sequenced over UDP, everything else
    /// reliable (`docs/protocol.md` 10.5).
    fn channel(&self) -> crate::Channel {
        match self {
            Packet::Move(_) => crate::Channel::Unreliable,
            _ => crate::Channel::Reliable,
        }
    }

    /// An ERROR whose code is fatal ([`crate::ErrorCode::is_fatal`]).
    fn is_fatal(&self) -> bool {
        matches!(self, Packet::Error { code, .. } if crate::ErrorCode::from_u32(*code).is_some_and(crate::ErrorCode::is_fatal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, HEADER_LEN, Header, encode_frame_to_vec};

    fn round_trip(packet: Packet<'_>) {
        let bytes = encode_frame_to_vec(42, &packet);
        let (header, payload) = Header::ref_from_prefix(&bytes).unwrap();
        assert_eq!(header.packet_id.get(), packet.kind().id());
        assert_eq!(header.player_id.get(), 42);
        assert_eq!(header.data_length.get() as usize, payload.len());
        assert_eq!(Packet::parse(header.packet_id.get(), payload).unwrap(), packet);
    }

    #[test]
    fn every_packet_round_trips() {
        let welcome = Welcome {
            token: U64::new(0xDEAD_BEEF_0102_0304),
            x: F32::new(1.5),
            y: F32::new(0.0),
            z: F32::new(-2.0),
            hp: U32::new(100),
            world_w: F32::new(1000.0),
            world_h: F32::new(800.0),
            aoi_radius: F32::new(50.0),
            max_speed: F32::new(20.0),
        };
        let mv = Move::new(1.0, 2.0, 3.0, 4.0, 5);
        let head = EnterHead { x: F32::new(1.0), y: F32::new(2.0), z: F32::new(3.0), hp: U32::new(7) };
        let hit = Hit { target_id: U32::new(9), damage: U32::new(10), target_hp: U32::new(90) };
        round_trip(Packet::Hello { name: "héllo" });
        round_trip(Packet::Welcome(&welcome));
        round_trip(Packet::Move(&mv));
        round_trip(Packet::Attack { target_id: 77 });
        round_trip(Packet::Chat { text: "gg" });
        round_trip(Packet::Enter { head: &head, name: "bob" });
        round_trip(Packet::Enter { head: &head, name: "" });
        round_trip(Packet::Leave);
        round_trip(Packet::Ping { payload: &[] });
        round_trip(Packet::Pong { payload: &[1, 2, 3] });
        round_trip(Packet::Error { code: ErrorCode::BadState.code(), message: "hello first" });
        round_trip(Packet::Hit(&hit));
    }

    #[test]
    fn payload_sizes_match_the_contract() {
        assert_eq!(size_of::<Welcome>(), 40);
        assert_eq!(size_of::<Move>(), 20);
        assert_eq!(size_of::<EnterHead>(), 16);
        assert_eq!(size_of::<Hit>(), 12);
    }

    #[test]
    fn move_payload_is_little_endian() {
        let bytes = encode_frame_to_vec(1, &Packet::Move(&Move::new(1.0, 0.0, 0.0, 0.0, 0x0102_0304)));
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 4], &1.0f32.to_le_bytes());
        assert_eq!(&bytes[HEADER_LEN + 16..], &[4, 3, 2, 1]);
    }

    #[test]
    fn wrong_sizes_and_bad_text_are_malformed() {
        let cases: &[(u32, &[u8])] = &[
            (1, b""),
            (1, &[b'a'; 33]),
            (1, &[0xFF, 0xFE]),
            (3, &[0; 19]),
            (3, &[0; 21]),
            (4, &[0; 3]),
            (4, &[0; 5]),
            (5, b""),
            (5, &[b'x'; 257]),
            (5, &[b'a', 0xC0]),
            (8, &[0; 65]),
            (7, &[0]),
            (11, &[0; 11]),
            (2, &[0; 39]),
            (6, &[0; 15]),
            (6, &[0; 49]),
            (10, &[0; 3]),
        ];
        for (id, payload) in cases {
            let err = Packet::parse(*id, payload).unwrap_err();
            assert_eq!(err.error_code(), ErrorCode::Malformed, "id {id} len {}", payload.len());
        }
        assert_eq!(Packet::parse(12, &[]).unwrap_err().error_code(), ErrorCode::UnknownPacket);
        assert_eq!(Packet::parse(0, &[]).unwrap_err().error_code(), ErrorCode::UnknownPacket);
    }

    #[test]
    fn text_limits_are_inclusive() {
        assert!(Packet::parse(1, &[b'a'; 32]).is_ok());
        assert!(Packet::parse(5, &[b'a'; 256]).is_ok());
        assert!(Packet::parse(8, &[7; 64]).is_ok());
        // A multi-byte character counts by bytes, not characters: 16 two-byte characters is 32 bytes.
        assert!(Packet::parse(1, "é".repeat(16).as_bytes()).is_ok());
        assert!(Packet::parse(1, "é".repeat(17).as_bytes()).is_err());
    }
}
