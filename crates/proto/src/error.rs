//! Protocol error codes and the typed errors of decoding and parsing.

use crate::PacketKind;

/// The `code` of an ERROR packet.
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
    /// The code with wire value `code`, if there is one.
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

    /// The wire value.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Whether the server closes the connection after sending this error.
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
    /// The ERROR code the protocol answers this with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::UnknownPacket { .. } => ErrorCode::UnknownPacket,
            DecodeError::SpoofedId { .. } => ErrorCode::SpoofedId,
        }
    }
}

/// A payload that does not fit its packet, found by [`crate::Packet::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No packet has this id.
    #[error("unknown packet id {0}")]
    UnknownPacket(u32),
    /// A fixed-size payload of another size.
    #[error("{kind:?} payload must be {expected} bytes, got {actual}")]
    WrongSize {
        /// The packet.
        kind: PacketKind,
        /// Its fixed payload size.
        expected: usize,
        /// The frame's payload size.
        actual: usize,
    },
    /// A text or opaque field outside its allowed length.
    #[error("{kind:?} payload length {actual} outside {min}..={max}")]
    BadLength {
        /// The packet.
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
        /// The packet.
        kind: PacketKind,
    },
}

impl ParseError {
    /// The ERROR code the protocol answers this with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ParseError::UnknownPacket(_) => ErrorCode::UnknownPacket,
            _ => ErrorCode::Malformed,
        }
    }
}
