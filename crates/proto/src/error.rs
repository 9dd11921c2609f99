//! Protocol error codes and the typed errors of decoding and parsing.

use crate::PacketKind;

/// Why a server refuses a frame or ends a session: the `code` an ERROR packet carries.
///
/// A server answers each protocol violation with one of these (see [`DecodeError::error_code`] and
/// [`ParseError::error_code`]); a client reads the raw `u32` of [`Packet::Error`](crate::Packet::Error)
/// and turns it into an `ErrorCode` with [`ErrorCode::from_u32`], keeping in mind that a newer server
/// may send codes it does not know.
///
/// # Examples
///
/// A client reading the ERROR a server sent before closing:
///
/// ```
/// use gamewire_proto::{ErrorCode, Packet, RawFrame, encode_frame_to_vec};
///
/// let code = ErrorCode::SlowConsumer.code();
/// let bytes = encode_frame_to_vec(0, &Packet::Error { code, message: "send queue over its limit" });
///
/// let (frame, _) = RawFrame::split_from(&bytes).unwrap();
/// let Packet::Error { code, message } = frame.packet().unwrap() else { panic!("an ERROR") };
/// match ErrorCode::from_u32(code) {
///     Some(code) => {
///         assert_eq!(code, ErrorCode::SlowConsumer);
///         assert_eq!(code.to_string(), "SLOW_CONSUMER");
///         assert!(code.is_fatal(), "the server closes the connection after it");
///     }
///     // A code from a newer server: still an error, and the server closes after a fatal one.
///     None => eprintln!("server error {code}: {message}"),
/// }
/// assert!(!ErrorCode::RateLimited.is_fatal(), "a dropped packet; the session goes on");
/// assert_eq!(ErrorCode::from_u32(99), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// A payload of the wrong size for its packet, a text of the wrong length, or invalid UTF-8.
    Malformed = 1,
    /// `data_length` above the server's `max_payload`.
    TooLarge = 2,
    /// A packet id the client may not send.
    UnknownPacket = 3,
    /// A header `player_id` that is neither 0 nor the session's own id.
    SpoofedId = 4,
    /// Anything but HELLO first, or a second HELLO.
    BadState = 5,
    /// A packet over its rate limit was dropped (not fatal).
    RateLimited = 6,
    /// ATTACK on itself, on a player not in view, or out of range (not fatal).
    InvalidTarget = 7,
    /// The server is at its connection limit.
    ServerFull = 8,
    /// The client does not read what it is sent fast enough.
    SlowConsumer = 9,
    /// No HELLO in time, a partial frame left unfinished, or no packet for the idle timeout.
    Timeout = 10,
    /// The server is stopping.
    ShuttingDown = 11,
}

impl ErrorCode {
    /// The code with wire value `code`, if there is one (`None` for a code this version does not know,
    /// which a client should tolerate).
    pub fn from_u32(code: u32) -> Option<Self> {
        use ErrorCode::*;
        Some(match code {
            1 => Malformed,
            2 => TooLarge,
            3 => UnknownPacket,
            4 => SpoofedId,
            5 => BadState,
            6 => RateLimited,
            7 => InvalidTarget,
            8 => ServerFull,
            9 => SlowConsumer,
            10 => Timeout,
            11 => ShuttingDown,
            _ => return None,
        })
    }

    /// The wire value, as written in an ERROR payload.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Whether the server closes the connection after sending this error: every code but RATE_LIMITED
    /// and INVALID_TARGET, which report a refused packet (protocol v1's world still ends a session
    /// over sustained rate abuse, with a last RATE_LIMITED).
    pub fn is_fatal(self) -> bool {
        !matches!(self, Self::RateLimited | Self::InvalidTarget)
    }

    /// The upper-case name used in the protocol document, e.g. `"TOO_LARGE"`.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            Malformed => "MALFORMED",
            TooLarge => "TOO_LARGE",
            UnknownPacket => "UNKNOWN_PACKET",
            SpoofedId => "SPOOFED_ID",
            BadState => "BAD_STATE",
            RateLimited => "RATE_LIMITED",
            InvalidTarget => "INVALID_TARGET",
            ServerFull => "SERVER_FULL",
            SlowConsumer => "SLOW_CONSUMER",
            Timeout => "TIMEOUT",
            ShuttingDown => "SHUTTING_DOWN",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A frame header that breaks the contract, found by [`crate::FrameDecoder`] before the payload is read.
///
/// The connection cannot be resynchronised after one: the server answers with the fatal ERROR of
/// [`DecodeError::error_code`] and closes it.
///
/// # Examples
///
/// A header announcing a 4 KiB payload is refused as soon as its 12 bytes are in, before a byte of
/// the payload is read or buffered:
///
/// ```
/// use gamewire_proto::{DecodeError, Direction, ErrorCode, FrameDecoder, PacketKind};
///
/// let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
/// // packet_id CHAT, player_id 0, data_length 4096.
/// let header = [PacketKind::Chat.id().to_le_bytes(), [0; 4], 4096u32.to_le_bytes()].concat();
/// let error = decoder.next_frame(&mut &header[..]).unwrap_err();
/// assert_eq!(error, DecodeError::TooLarge { length: 4096, max: 1024 });
/// assert_eq!(error.to_string(), "payload of 4096 bytes exceeds the limit of 1024");
/// assert_eq!(error.error_code(), ErrorCode::TooLarge);
/// // Sticky: the stream cannot be trusted any more.
/// assert_eq!(decoder.next_frame(&mut &[][..]).unwrap_err(), error);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `data_length` exceeds the decoder's `max_payload`.
    #[error("payload of {length} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The header's `data_length`.
        length: u32,
        /// The configured limit.
        max: u32,
    },
    /// The packet id is unknown, or not one this direction may carry.
    #[error("packet id {packet_id} may not be sent in this direction")]
    UnknownPacket {
        /// The header's `packet_id`.
        packet_id: u32,
    },
    /// A client header names a player other than 0 or the session's own.
    #[error("header player_id {player_id} is neither 0 nor the session's own id")]
    SpoofedId {
        /// The header's `player_id`.
        player_id: u32,
    },
}

impl DecodeError {
    /// The ERROR code the protocol answers this with (always a fatal one).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::UnknownPacket { .. } => ErrorCode::UnknownPacket,
            DecodeError::SpoofedId { .. } => ErrorCode::SpoofedId,
        }
    }
}

/// A payload that does not fit its packet, found by [`crate::Packet::parse`] once the whole frame is
/// in: the server answers it with the ERROR of [`ParseError::error_code`] (MALFORMED, or
/// UNKNOWN_PACKET for an id no packet has).
///
/// # Examples
///
/// ```
/// use gamewire_proto::{ErrorCode, Packet, PacketKind, ParseError};
///
/// // A HELLO with an empty name.
/// let error = Packet::parse(PacketKind::Hello.id(), b"").unwrap_err();
/// assert_eq!(error, ParseError::BadLength { kind: PacketKind::Hello, min: 1, max: 32, actual: 0 });
/// assert_eq!(error.to_string(), "Hello payload length 0 outside 1..=32");
/// assert_eq!(error.error_code(), ErrorCode::Malformed);
///
/// // A MOVE two bytes short.
/// let error = Packet::parse(PacketKind::Move.id(), &[0; 18]).unwrap_err();
/// assert_eq!(error, ParseError::WrongSize { kind: PacketKind::Move, expected: 20, actual: 18 });
///
/// assert_eq!(Packet::parse(99, b"").unwrap_err().error_code(), ErrorCode::UnknownPacket);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No packet has this id.
    #[error("unknown packet id {0}")]
    UnknownPacket(u32),
    /// A fixed-size payload of another size.
    #[error("{kind:?} payload must be {expected} bytes, got {actual}")]
    WrongSize {
        /// The packet whose payload was refused.
        kind: PacketKind,
        /// Its fixed payload size.
        expected: usize,
        /// The frame's payload size.
        actual: usize,
    },
    /// A text or opaque field outside its allowed length.
    #[error("{kind:?} payload length {actual} outside {min}..={max}")]
    BadLength {
        /// The packet whose payload was refused.
        kind: PacketKind,
        /// Smallest allowed length.
        min: usize,
        /// Largest allowed length.
        max: usize,
        /// The length found.
        actual: usize,
    },
    /// A text field that is not UTF-8.
    #[error("{kind:?} text is not valid UTF-8")]
    InvalidUtf8 {
        /// The packet whose payload was refused.
        kind: PacketKind,
    },
}

impl ParseError {
    /// The ERROR code the protocol answers this with: UNKNOWN_PACKET for an unknown id, MALFORMED for
    /// everything else.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ParseError::UnknownPacket(_) => ErrorCode::UnknownPacket,
            _ => ErrorCode::Malformed,
        }
    }
}
