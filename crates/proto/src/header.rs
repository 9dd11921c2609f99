//! The 12-byte frame header and the table of packet kinds.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the frame header in bytes: every frame is these 12 bytes, then `data_length` payload bytes.
pub const HEADER_LEN: usize = 12;

/// The frame header as it lies on the wire: `packet_id`, `player_id`, `data_length`, each a little-endian
/// `u32`.
///
/// Every frame starts with one; [`crate::RawFrame::header`] hands out the one of a decoded frame, and
/// [`crate::encode_frame`] writes it for you. The fields are byte arrays underneath (`Unaligned`), so a
/// `&Header` can be taken at any offset of a receive buffer without an unaligned read; `.get()` reads
/// a field as a native `u32`.
///
/// # Examples
///
/// ```
/// use gamewire_proto::{HEADER_LEN, Header, Packet, PacketKind, RawFrame, encode_frame_to_vec};
///
/// let bytes = encode_frame_to_vec(7, &Packet::Chat { text: "gg" });
/// let (frame, _) = RawFrame::split_from(&bytes).unwrap();
/// let header: &Header = frame.header();
/// assert_eq!(*header, Header::new(PacketKind::Chat.id(), 7, 2));
/// assert_eq!(header.data_length.get() as usize, bytes.len() - HEADER_LEN);
/// // Little-endian on the wire, whatever the host.
/// assert_eq!(frame.header_bytes(), [5, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// Which packet follows; see [`PacketKind`].
    pub packet_id: U32,
    /// The player the frame is about (server to client) or 0 / the sender's own id (client to server).
    pub player_id: U32,
    /// Payload bytes that follow the header.
    pub data_length: U32,
}

impl Header {
    /// Builds a header from native values, e.g. to compare against a received one or to write a frame
    /// by hand in a test.
    pub fn new(packet_id: u32, player_id: u32, data_length: u32) -> Self {
        Header {
            packet_id: U32::new(packet_id),
            player_id: U32::new(player_id),
            data_length: U32::new(data_length),
        }
    }
}

/// Every packet of protocol v1, with its wire id as discriminant: what a header's `packet_id` names,
/// for code that dispatches on a frame, checks a direction or prints a packet's protocol name without
/// parsing its payload.
///
/// # Examples
///
/// ```
/// use gamewire_proto::PacketKind;
///
/// let kind = PacketKind::from_id(3).unwrap();
/// assert_eq!(kind, PacketKind::Move);
/// assert_eq!((kind.id(), kind.name()), (3, "MOVE"));
/// assert!(kind.is_client_sendable() && kind.is_server_sendable());
/// assert!(!PacketKind::Hello.is_server_sendable());
/// assert_eq!(PacketKind::from_id(40), None, "not a protocol v1 packet (a game's own, perhaps)");
///
/// let from_clients: Vec<&str> =
///     PacketKind::ALL.into_iter().filter(|k| k.is_client_sendable()).map(PacketKind::name).collect();
/// assert_eq!(from_clients, ["HELLO", "MOVE", "ATTACK", "CHAT", "PING"]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PacketKind {
    /// Client asks to join: its name.
    Hello = 1,
    /// Server admits the client: its id, token, position and the world's parameters.
    Welcome = 2,
    /// A position update (both directions).
    Move = 3,
    /// Client attacks a player it sees.
    Attack = 4,
    /// A text message (both directions).
    Chat = 5,
    /// A player comes into view.
    Enter = 6,
    /// A player goes out of view.
    Leave = 7,
    /// Client asks for a PONG with the same payload.
    Ping = 8,
    /// Server answers a PING.
    Pong = 9,
    /// Server reports an error; see [`crate::ErrorCode`].
    Error = 10,
    /// An attack landed.
    Hit = 11,
}

impl PacketKind {
    /// All kinds, in id order (`ALL[i]` has id `i + 1`): for iterating over the protocol's packets.
    pub const ALL: [PacketKind; 11] = [
        PacketKind::Hello,
        PacketKind::Welcome,
        PacketKind::Move,
        PacketKind::Attack,
        PacketKind::Chat,
        PacketKind::Enter,
        PacketKind::Leave,
        PacketKind::Ping,
        PacketKind::Pong,
        PacketKind::Error,
        PacketKind::Hit,
    ];

    /// The kind with wire id `id`, if protocol v1 has one (ids 1 to 11).
    pub fn from_id(id: u32) -> Option<Self> {
        match id {
            1..=11 => Some(Self::ALL[id as usize - 1]),
            _ => None,
        }
    }

    /// The wire id, as a header's `packet_id` carries it.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Whether a client may send this kind (HELLO, MOVE, ATTACK, CHAT, PING).
    pub fn is_client_sendable(self) -> bool {
        matches!(self, Self::Hello | Self::Move | Self::Attack | Self::Chat | Self::Ping)
    }

    /// Whether a server may send this kind (everything but HELLO, ATTACK and PING).
    pub fn is_server_sendable(self) -> bool {
        !matches!(self, Self::Hello | Self::Attack | Self::Ping)
    }

    /// The upper-case name used in the protocol document, e.g. `"MOVE"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "HELLO",
            Self::Welcome => "WELCOME",
            Self::Move => "MOVE",
            Self::Attack => "ATTACK",
            Self::Chat => "CHAT",
            Self::Enter => "ENTER",
            Self::Leave => "LEAVE",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Error => "ERROR",
            Self::Hit => "HIT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_twelve_unaligned_bytes() {
        assert_eq!(size_of::<Header>(), HEADER_LEN);
        assert_eq!(align_of::<Header>(), 1);
        let bytes = Header::new(3, 7, 20).as_bytes().to_vec();
        assert_eq!(bytes, [3, 0, 0, 0, 7, 0, 0, 0, 20, 0, 0, 0]);
        // Readable at an odd offset: no alignment requirement.
        let mut shifted = vec![0xAA];
        shifted.extend_from_slice(&bytes);
        let (header, _) = Header::ref_from_prefix(&shifted[1..]).unwrap();
        assert_eq!(header.data_length.get(), 20);
    }

    #[test]
    fn kinds_round_trip_and_directions_match_the_table() {
        for kind in PacketKind::ALL {
            assert_eq!(PacketKind::from_id(kind.id()), Some(kind));
        }
        assert_eq!(PacketKind::from_id(0), None);
        assert_eq!(PacketKind::from_id(12), None);
        let client: Vec<u32> =
            PacketKind::ALL.iter().filter(|k| k.is_client_sendable()).map(|k| k.id()).collect();
        assert_eq!(client, [1, 3, 4, 5, 8]);
        let server: Vec<u32> =
            PacketKind::ALL.iter().filter(|k| k.is_server_sendable()).map(|k| k.id()).collect();
        assert_eq!(server, [2, 3, 5, 6, 7, 9, 10, 11]);
    }
}
