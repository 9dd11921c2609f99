//! Wire format of gamewire protocol v1: the 12-byte frame header, zero-copy packet views, encoders and a
//! streaming frame decoder.
//!
//! This crate contains no networking code and reads no clock. It turns bytes into typed, borrowed views
//! and typed values back into bytes; everything else (sockets, time, game rules) lives in other crates.
//!
//! - [`FrameDecoder`] is fed whatever a socket read returned, split at any byte, and yields [`RawFrame`]s
//!   that borrow the input where a frame lies whole inside it. Only a frame split across reads is
//!   assembled in a small per-connection buffer, and only after its header has been checked, so an
//!   oversized `data_length` is refused before a byte is reserved for it.
//! - [`Packet`] is a parsed payload: fixed-size payloads are `zerocopy` views ([`Move`], [`Welcome`],
//!   [`Hit`], [`EnterHead`]) with little-endian, alignment-free fields, text is a checked `&str`. A parsed
//!   packet cannot hold an invalid length or invalid UTF-8.
//! - [`encode_frame`] writes a header and a payload into a caller-provided buffer (pooled memory on the
//!   server), so a frame is encoded exactly once whatever the number of its recipients.
//!
//! The contract is `docs/protocol.md` at the repository root.
//!
//! # Examples
//!
//! ```
//! use gamewire_proto::{Direction, FrameDecoder, Packet, encode_frame_to_vec};
//!
//! let bytes = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
//! let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
//! // The first read delivered 5 bytes, the second the rest.
//! let (first, second) = bytes.split_at(5);
//! let mut input = first;
//! assert!(decoder.next_frame(&mut input).unwrap().is_none());
//! let mut input = second;
//! let frame = decoder.next_frame(&mut input).unwrap().unwrap();
//! assert_eq!(frame.packet().unwrap(), Packet::Hello { name: "ada" });
//! ```
#![warn(missing_docs)]

mod decoder;
mod encode;
mod error;
mod header;
mod packet;
mod packet_set;

pub use decoder::{Direction, FrameDecoder, RawFrame};
pub use encode::{Channel, Encode, LastFrame, encode_frame, encode_frame_to_vec, frame_len};
pub use error::{DecodeError, ErrorCode, ParseError};
pub use header::{HEADER_LEN, Header, PacketKind};
pub use packet::{EnterHead, Hit, Move, Packet, Welcome};
pub use packet_set::PacketSet;

/// Packet ids the core keeps for itself, whatever the game: 0 (never valid) and the session frames
/// HELLO (1), WELCOME (2), PING (8), PONG (9) and ERROR (10), at the ids protocol v1 gave them, plus
/// 12 to 15 for the core's later use. A game's own packets take any other id below
/// [`PacketSet::ID_LIMIT`] (protocol v1's game: 3 to 7 and 11; a new game is best off from 16 up).
///
/// What each session frame means is fixed; what HELLO, WELCOME, PING and PONG carry is the game's (the
/// core never reads nor writes them): HELLO is a client's first frame, asking to join; WELCOME answers
/// it, its header `player_id` the player's id; PONG answers PING. ERROR is the core's own, in protocol
/// v1's format (a `u32` code of [`ErrorCode`], a text), since the core sends it too (SERVER_FULL,
/// SLOW_CONSUMER, TIMEOUT, SHUTTING_DOWN, and every decoding error).
pub const RESERVED_PACKETS: PacketSet = PacketSet::SESSION_FROM_CLIENT
    .union(PacketSet::SESSION_FROM_SERVER)
    .with(0)
    .with(12)
    .with(13)
    .with(14)
    .with(15);

/// The little-endian field types of the payload views, re-exported so users need not depend on
/// `zerocopy` to build a [`Move`] or read a [`Welcome`].
pub use zerocopy::little_endian;

/// Longest HELLO name and ENTER name, in bytes.
pub const NAME_MAX: usize = 32;
/// Longest CHAT text, in bytes.
pub const CHAT_MAX: usize = 256;
/// Longest PING (and so PONG) payload, in bytes.
pub const PING_MAX: usize = 64;
/// Longest ERROR message, in bytes.
pub const ERROR_MESSAGE_MAX: usize = 200;
/// Default `max_payload`: the largest `data_length` a server accepts unless configured otherwise.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1024;
/// The largest `max_payload` a server may be configured with.
pub const MAX_PAYLOAD_LIMIT: u32 = 65536;
/// Largest payload the server itself ever sends (a relayed CHAT of 256 bytes; an ERROR is at most 204,
/// an ENTER 48), so that a client decoder configured with this limit accepts every valid server frame.
pub const SERVER_PAYLOAD_MAX: u32 = CHAT_MAX as u32;
