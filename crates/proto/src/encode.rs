//! What the core needs of any outgoing packet, protocol v1's or a game's own: [`Encode`], and the
//! frame writers built on it.

use zerocopy::IntoBytes;

use crate::{HEADER_LEN, Header};

/// A packet the server can send: its wire id and how to write its payload.
///
/// Protocol v1's [`crate::Packet`] implements it; a game implements it for its own packets, with ids
/// outside the core's reserved ones ([`crate::RESERVED_PACKETS`]). Frames are written once, into
/// pooled memory, through [`encode_frame`], whatever the number of recipients.
///
/// # Examples
///
/// ```
/// use gamewire_proto::{Encode, encode_frame_to_vec};
///
/// /// A game's own packet: a score, four bytes.
/// struct Score(u32);
///
/// impl Encode for Score {
///     fn packet_id(&self) -> u32 {
///         40
///     }
///     fn payload_len(&self) -> usize {
///         4
///     }
///     fn write_payload(&self, out: &mut [u8]) {
///         out.copy_from_slice(&self.0.to_le_bytes());
///     }
/// }
///
/// let frame = encode_frame_to_vec(7, &Score(1200));
/// assert_eq!(frame.len(), 12 + 4);
/// assert_eq!(&frame[..4], &40u32.to_le_bytes());
/// ```
pub trait Encode {
    /// The wire id (the header's `packet_id`).
    fn packet_id(&self) -> u32;

    /// The payload's length in bytes (the header's `data_length`).
    fn payload_len(&self) -> usize;

    /// Writes the payload into `out`, which is exactly [`Encode::payload_len`] bytes long.
    fn write_payload(&self, out: &mut [u8]);

    /// Whether this is the last frame its recipient gets (a fatal ERROR): it is queued even past the
    /// recipient's send limit, and nothing after it.
    fn is_fatal(&self) -> bool {
        false
    }

    /// How the frame travels where the transport offers a choice (UDP, `docs/protocol.md` 10.5):
    /// [`Channel::Reliable`], the default, or [`Channel::Unreliable`] for a frame the next one of its
    /// kind supersedes (a position). Over TCP every frame is reliable whatever this says.
    fn channel(&self) -> Channel {
        Channel::Reliable
    }
}

/// How a frame travels over a transport that offers a choice (UDP; TCP delivers everything reliably,
/// in order).
///
/// ```
/// use gamewire_proto::{Channel, Encode, Move, Packet};
/// use gamewire_proto::little_endian::{F32, U32};
///
/// let step = Move { x: F32::new(1.0), y: F32::new(0.0), z: F32::new(2.0), velocity: F32::new(3.0), client_time: U32::new(7) };
/// assert_eq!(Packet::Move(&step).channel(), Channel::Unreliable, "the next MOVE supersedes a lost one");
/// assert_eq!(Packet::Chat { text: "hi" }.channel(), Channel::Reliable);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Delivered once, in order with the other reliable frames to the same recipient; resent until
    /// acknowledged.
    #[default]
    Reliable,
    /// Sent once; lost or late, it is dropped (unreliable-sequenced: never older than one already
    /// delivered).
    Unreliable,
}

/// `packet`, sent as the last frame its recipient gets ([`Encode::is_fatal`]): queued even past the
/// recipient's send limit, and nothing after it. For a frame that ends a session without being a
/// fatal ERROR: protocol v1's RATE_LIMITED to a player cut off for sustained abuse, or a game's own
/// goodbye (a KICKED packet) before it ends the session.
///
/// ```
/// use gamewire_proto::{Encode, ErrorCode, LastFrame, Packet};
///
/// let limited = Packet::Error { code: ErrorCode::RateLimited.code(), message: "rate limit exceeded" };
/// assert!(!limited.is_fatal(), "RATE_LIMITED alone is a warning");
/// assert!(LastFrame(&limited).is_fatal(), "as the last frame it passes the send limit");
/// assert_eq!(LastFrame(&limited).packet_id(), limited.packet_id());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LastFrame<'a, P: ?Sized>(pub &'a P);

impl<P: Encode + ?Sized> Encode for LastFrame<'_, P> {
    fn packet_id(&self) -> u32 {
        self.0.packet_id()
    }

    fn payload_len(&self) -> usize {
        self.0.payload_len()
    }

    fn write_payload(&self, out: &mut [u8]) {
        self.0.write_payload(out);
    }

    fn is_fatal(&self) -> bool {
        true
    }

    // `channel` stays reliable: a last frame must arrive, whatever its packet would be otherwise.
}

/// Size in bytes of the whole frame (header and payload) that carries `packet`.
pub fn frame_len<P: Encode + ?Sized>(packet: &P) -> usize {
    HEADER_LEN + packet.payload_len()
}

/// Writes the frame carrying `packet` with header `player_id` at the start of `out` and returns its
/// length, [`frame_len`]`(packet)`.
///
/// This is the one copy a frame costs on the server: into pooled memory, once, whatever the number of
/// its recipients.
///
/// # Panics
///
/// If `out` is shorter than [`frame_len`]`(packet)`, or the payload is longer than `u32::MAX` bytes.
///
/// # Examples
///
/// Two frames written back to back into one buffer (a pool chunk, on the server):
///
/// ```
/// use gamewire_proto::{Move, Packet, RawFrame, encode_frame, frame_len};
///
/// let mut buffer = [0u8; 256];
/// let moved = Packet::Move(&Move::new(1.0, 0.0, 2.0, 3.0, 99));
/// let mut end = encode_frame(4, &moved, &mut buffer);
/// assert_eq!(end, frame_len(&moved));
/// end += encode_frame(4, &Packet::Chat { text: "hi" }, &mut buffer[end..]);
///
/// let (first, rest) = RawFrame::split_from(&buffer[..end]).unwrap();
/// let (second, rest) = RawFrame::split_from(rest).unwrap();
/// assert_eq!((first.player_id(), first.packet()), (4, Ok(moved)));
/// assert_eq!(second.packet(), Ok(Packet::Chat { text: "hi" }));
/// assert!(rest.is_empty());
/// ```
pub fn encode_frame<P: Encode + ?Sized>(player_id: u32, packet: &P, out: &mut [u8]) -> usize {
    let payload_len = packet.payload_len();
    let total = HEADER_LEN + payload_len;
    let length = u32::try_from(payload_len).expect("a payload fits the header's u32 length");
    let (header, payload) = out[..total].split_at_mut(HEADER_LEN);
    header.copy_from_slice(Header::new(packet.packet_id(), player_id, length).as_bytes());
    packet.write_payload(payload);
    total
}

/// [`encode_frame`] into a new `Vec`: for clients and tests, not for the server's hot path.
pub fn encode_frame_to_vec<P: Encode + ?Sized>(player_id: u32, packet: &P) -> Vec<u8> {
    let mut out = vec![0; frame_len(packet)];
    encode_frame(player_id, packet, &mut out);
    out
}
