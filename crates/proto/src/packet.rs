//! Packet payloads: zero-copy views for the fixed layouts, checked text for the rest, and the encoder.

use zerocopy::little_endian::{F32, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::encode::Encode;
use crate::{CHAT_MAX, ERROR_MESSAGE_MAX, NAME_MAX, PING_MAX, PacketKind, ParseError};

/// WELCOME payload (40 bytes): the session token, the spawn position, hp and the world's parameters.
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

/// MOVE payload (20 bytes), the same in both directions.
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

/// The fixed 16-byte head of an ENTER payload; the name follows it.
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

/// HIT payload (12 bytes); the header's `player_id` is the attacker.
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
/// Parsing borrows the frame: nothing is copied. Every variant holds only values the protocol allows
/// (lengths in range, UTF-8 checked), so code that matches on a `Packet` never re-validates them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Packet<'a> {
    /// HELLO: the player's name, 1..=32 bytes.
    Hello {
        /// The name.
        name: &'a str,
    },
    /// WELCOME.
    Welcome(&'a Welcome),
    /// MOVE.
    Move(&'a Move),
    /// ATTACK.
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
    /// HIT.
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
    /// before the payload arrives.
    ///
    /// # Errors
    ///
    /// [`ParseError::UnknownPacket`] for an id outside 1..=11; otherwise a [`ParseError`] that maps to
    /// MALFORMED: a fixed payload of the wrong size, a text of the wrong length, or invalid UTF-8.
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

    /// The packet's kind.
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

    /// Payload size in bytes once encoded.
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
