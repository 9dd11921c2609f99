//! The UDP transport's datagrams: zero-copy views of each kind, and writers into caller buffers.
//!
//! Five kinds, all little-endian, all at most [`MAX_DATAGRAM`] bytes, each starting with `version` and
//! `kind` (docs/protocol.md §10.2 has the byte layout):
//!
//! | kind | name | direction | size |
//! |---|---|---|---|
//! | 1 | CONNECT | client → server | exactly 1200 ([`Connect`]) |
//! | 2 | CHALLENGE | server → client | 30 ([`Challenge`]) |
//! | 3 | RESPONSE | client → server | exactly 1200 ([`ResponseView`], [`write_response`]) |
//! | 4 | DATA | both | 20 or 28 + items + frames ([`DataView`], [`DataHeader`], [`DataWriter`]) |
//! | 5 | DISCONNECT | both | 14 ([`Disconnect`]) |
//!
//! [`Datagram::parse`] checks a whole datagram, every frame inside included, before it returns, and
//! allocates nothing: a [`DataView`] borrows the received bytes and its iterators yield
//! [`RawFrame`]s that point into them. A datagram that parses is canonical: [`Datagram::write_to`]
//! gives back exactly the bytes it was parsed from (padding must be zero, no byte is unaccounted for).
//!
//! The frames inside are protocol v1's (12-byte header, then payload), byte for byte as on TCP, so a
//! frame encoded once into pooled memory serves both transports. The I/O layer sends a DATA as an
//! iovec: [`DataHeader::write_to`] for this recipient's header, then for each reliable item
//! [`reliable_prefix`] and the shared frame slice, then the shared unreliable frame slices.

use std::fmt;

use gamewire_proto::{ErrorCode, HEADER_LEN, RawFrame};

use crate::cookie::{COOKIE_LEN, Cookie};
use crate::seq::Seq;

/// The protocol version every datagram starts with.
pub const VERSION: u8 = 1;
/// The largest datagram either side sends or accepts (UDP payload bytes). Sent with Don't Fragment:
/// 1200 bytes plus IPv6 and UDP headers fit the IPv6 minimum MTU of 1280, so no datagram is ever
/// fragmented, and a path that cannot carry them fails at the handshake, whose CONNECT is this size.
pub const MAX_DATAGRAM: usize = 1200;
/// Bytes every datagram starts with: `version` u8, `kind` u8.
pub const PREAMBLE_LEN: usize = 2;
/// Size of a CONNECT: always [`MAX_DATAGRAM`] (zero-padded), so the server never answers an address it
/// has not verified with more bytes than it received from it.
pub const CONNECT_LEN: usize = MAX_DATAGRAM;
/// Size of a CHALLENGE: preamble, `client_nonce` u64, the cookie.
pub const CHALLENGE_LEN: usize = PREAMBLE_LEN + 8 + COOKIE_LEN;
/// Size of a RESPONSE: always [`MAX_DATAGRAM`] (zero-padded after its reliable items), as CONNECT.
pub const RESPONSE_LEN: usize = MAX_DATAGRAM;
/// Bytes of a RESPONSE before its reliable items: preamble, `reliable_count` u8, `flags` u8,
/// `client_nonce` u64, the cookie.
pub const RESPONSE_HEADER_LEN: usize = PREAMBLE_LEN + 2 + 8 + COOKIE_LEN;
/// Bytes of a DATA header without the nonce echo: preamble, `reliable_count` u8, `flags` u8,
/// `token` u64, `seq` u16, `ack` u16, `ack_bits` u32.
pub const DATA_HEADER_LEN: usize = PREAMBLE_LEN + 2 + 8 + 2 + 2 + 4;
/// Bytes the nonce echo adds to a DATA header ([`FLAG_NONCE_ECHO`]).
pub const NONCE_ECHO_LEN: usize = 8;
/// Bytes of the longest DATA header, with the nonce echo.
pub const DATA_HEADER_MAX_LEN: usize = DATA_HEADER_LEN + NONCE_ECHO_LEN;
/// Size of a DISCONNECT: preamble, `token` u64, `code` u32.
pub const DISCONNECT_LEN: usize = PREAMBLE_LEN + 8 + 4;
/// Bytes in front of each reliable frame: its `message_id` u16.
pub const RELIABLE_PREFIX_LEN: usize = 2;
/// Most reliable items one DATA or RESPONSE holds (`reliable_count` is a u8).
pub const MAX_RELIABLE_ITEMS: usize = u8::MAX as usize;
/// The largest frame payload that fits in any DATA and any RESPONSE as a reliable item (1154 bytes).
/// The transport does not split frames: a larger one cannot go over UDP. Protocol v1's largest frame
/// is a 268-byte CHAT.
pub const MAX_FRAME_PAYLOAD: usize = MAX_DATAGRAM - RESPONSE_HEADER_LEN - RELIABLE_PREFIX_LEN - HEADER_LEN;
/// DATA flag: the header is followed by the client's nonce, echoed by the server until the client has
/// shown it knows its session token (docs/protocol.md §10.4).
pub const FLAG_NONCE_ECHO: u8 = 0x01;

/// Offset of `data_length` in a protocol v1 frame header (docs/protocol.md §2).
const DATA_LENGTH_AT: usize = 8;

/// What a datagram is: its second byte.
///
/// # Examples
///
/// ```
/// use gamewire_udp::datagram::Kind;
///
/// assert_eq!(Kind::from_u8(4), Some(Kind::Data));
/// assert_eq!(Kind::Data.to_string(), "DATA");
/// assert!(Kind::Connect.is_client_sendable() && !Kind::Connect.is_server_sendable());
/// assert_eq!(Kind::from_u8(0), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Client → server: "I want a session"; carries the client's nonce.
    Connect = 1,
    /// Server → client: the cookie that answers a CONNECT.
    Challenge = 2,
    /// Client → server: the cookie echoed, and the client's first reliable frames (its HELLO).
    Response = 3,
    /// Both ways: a session's frames, acknowledgements, keepalives.
    Data = 4,
    /// Both ways: the session is over (or, from the server, refused).
    Disconnect = 5,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 5] = [Kind::Connect, Kind::Challenge, Kind::Response, Kind::Data, Kind::Disconnect];

    /// The kind with wire value `code`, if any.
    pub fn from_u8(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The wire value.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether a client may send it (all but CHALLENGE).
    pub fn is_client_sendable(self) -> bool {
        self != Kind::Challenge
    }

    /// Whether a server may send it (CHALLENGE, DATA, DISCONNECT).
    pub fn is_server_sendable(self) -> bool {
        matches!(self, Kind::Challenge | Kind::Data | Kind::Disconnect)
    }

    /// The upper-case name used in docs/protocol.md, e.g. `"CONNECT"`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "CONNECT",
            Kind::Challenge => "CHALLENGE",
            Kind::Response => "RESPONSE",
            Kind::Data => "DATA",
            Kind::Disconnect => "DISCONNECT",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The secret a session's datagrams carry, with their source address, to show they belong to it.
///
/// Unguessable (64 bits from the CSPRNG) but not encrypted: anyone who reads the path can read it
/// (docs/protocol.md §10.6).
///
/// # Examples
///
/// ```
/// use gamewire_udp::datagram::SessionToken;
///
/// let token = SessionToken::random().expect("the OS has a CSPRNG");
/// assert_ne!(token, SessionToken::random().unwrap());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionToken(pub u64);

impl SessionToken {
    /// A fresh token from the operating system's CSPRNG (`getrandom`).
    ///
    /// # Errors
    ///
    /// When the operating system cannot provide random bytes; the server then refuses the session
    /// rather than hand out a guessable token.
    pub fn random() -> Result<SessionToken, getrandom::Error> {
        getrandom::u64().map(SessionToken)
    }
}

/// Why a datagram was refused by [`Datagram::parse`]. A server drops such a datagram without a reply
/// (docs/protocol.md §10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Over [`MAX_DATAGRAM`] bytes.
    #[error("datagram of {len} bytes is over the limit of {MAX_DATAGRAM}")]
    TooLong {
        /// The datagram's length.
        len: usize,
    },
    /// Shorter than the smallest datagram of its kind (or than the preamble).
    #[error("datagram of {len} bytes is too short, {needed} needed")]
    Truncated {
        /// The datagram's length.
        len: usize,
        /// The least it would need.
        needed: usize,
    },
    /// A `version` other than [`VERSION`].
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A `kind` that is none of [`Kind`].
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// A fixed-size kind (CONNECT, CHALLENGE, RESPONSE, DISCONNECT) of another size.
    #[error("{kind} of {len} bytes, must be exactly {expected}")]
    WrongLength {
        /// The datagram's kind.
        kind: Kind,
        /// The datagram's length.
        len: usize,
        /// Its kind's size.
        expected: usize,
    },
    /// A `flags` bit this version does not define.
    #[error("unknown flags {flags:#04x} in a {kind}")]
    UnknownFlags {
        /// The datagram's kind.
        kind: Kind,
        /// The whole `flags` byte.
        flags: u8,
    },
    /// Padding (CONNECT, RESPONSE) that is not all zero.
    #[error("non-zero padding byte at offset {offset}")]
    NonZeroPadding {
        /// Offset of the first non-zero byte.
        offset: usize,
    },
    /// A frame (or a reliable item's prefix) that runs past the end of the datagram: a frame's header
    /// must be whole and its `data_length` bytes must follow.
    #[error("frame at offset {offset} is cut off by the end of the datagram")]
    FrameTruncated {
        /// Offset of the item or frame in the datagram.
        offset: usize,
    },
    /// A frame whose `data_length` is over the `max_payload` given to [`Datagram::parse`].
    #[error("frame at offset {offset} has a payload of {length} bytes, over the limit of {max}")]
    FrameTooLarge {
        /// Offset of the frame's header in the datagram.
        offset: usize,
        /// Its `data_length`.
        length: u32,
        /// The limit.
        max: u32,
    },
}

/// Why a writer could not write a datagram. Nothing is written on an error: a [`DataWriter`]'s datagram
/// stays what it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The buffer, or what [`MAX_DATAGRAM`] leaves of the datagram, is too small.
    #[error("no room: {needed} bytes needed, {available} available")]
    NoRoom {
        /// Bytes the write needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// More than [`MAX_RELIABLE_ITEMS`] reliable items.
    #[error("more than {MAX_RELIABLE_ITEMS} reliable items")]
    TooManyReliable,
    /// A reliable item after an unreliable frame: reliable items come first in a DATA.
    #[error("reliable item after an unreliable frame")]
    ReliableAfterUnreliable,
}

/// CONNECT (client → server): asks for a cookie. Exactly [`CONNECT_LEN`] bytes, zero-padded.
///
/// # Examples
///
/// ```
/// use gamewire_udp::datagram::{CONNECT_LEN, Connect, Datagram, MAX_DATAGRAM};
///
/// let mut buf = [0xff; MAX_DATAGRAM];
/// let len = Connect { client_nonce: 42 }.write_to(&mut buf).unwrap();
/// assert_eq!(len, CONNECT_LEN);
/// assert_eq!(Datagram::parse(&buf[..len], 1024), Ok(Datagram::Connect(Connect { client_nonce: 42 })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connect {
    /// A random number the client picks for this handshake (from a CSPRNG) and keeps until it has a
    /// session: every server datagram of the handshake echoes it.
    pub client_nonce: u64,
}

impl Connect {
    /// Writes the whole CONNECT, padding included, at the start of `buf`; returns [`CONNECT_LEN`].
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if `buf` is shorter than [`CONNECT_LEN`].
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let out = room(buf, CONNECT_LEN)?;
        out.fill(0);
        let mut put = Put::new(out, Kind::Connect);
        put.u64(self.client_nonce);
        Ok(CONNECT_LEN)
    }
}

/// CHALLENGE (server → client): the cookie answering a CONNECT. [`CHALLENGE_LEN`] bytes.
///
/// # Examples
///
/// ```
/// use gamewire_udp::cookie::Cookie;
/// use gamewire_udp::datagram::{CHALLENGE_LEN, Challenge, Datagram};
///
/// let challenge = Challenge { client_nonce: 42, cookie: Cookie::from_bytes([9; 20]) };
/// let mut buf = [0; CHALLENGE_LEN];
/// assert_eq!(challenge.write_to(&mut buf), Ok(CHALLENGE_LEN));
/// assert_eq!(Datagram::parse(&buf, 1024), Ok(Datagram::Challenge(challenge)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Challenge {
    /// The nonce of the CONNECT this answers: a client ignores a CHALLENGE with any other.
    pub client_nonce: u64,
    /// The cookie the client must echo in its RESPONSE.
    pub cookie: Cookie,
}

impl Challenge {
    /// Writes the whole CHALLENGE at the start of `buf`; returns [`CHALLENGE_LEN`].
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if `buf` is shorter than [`CHALLENGE_LEN`].
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let mut put = Put::new(room(buf, CHALLENGE_LEN)?, Kind::Challenge);
        put.u64(self.client_nonce);
        put.bytes(&self.cookie.to_bytes());
        Ok(CHALLENGE_LEN)
    }
}

/// DISCONNECT (both ways): the session is over. [`DISCONNECT_LEN`] bytes.
///
/// # Examples
///
/// ```
/// use gamewire_proto::ErrorCode;
/// use gamewire_udp::datagram::{DISCONNECT_LEN, Datagram, Disconnect};
///
/// let bye = Disconnect { token: 0x5eed, code: ErrorCode::ServerFull.code() };
/// let mut buf = [0; DISCONNECT_LEN];
/// assert_eq!(bye.write_to(&mut buf), Ok(DISCONNECT_LEN));
/// let Ok(Datagram::Disconnect(parsed)) = Datagram::parse(&buf, 1024) else { panic!("a DISCONNECT") };
/// assert_eq!(parsed.error_code(), Some(ErrorCode::ServerFull));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Disconnect {
    /// The session's token; or, when a server refuses a handshake (no session exists), the client's
    /// nonce, so that the client can tell the refusal is about its own handshake.
    pub token: u64,
    /// Why: an ERROR code (docs/protocol.md §4), 0 for none (a client that leaves).
    pub code: u32,
}

impl Disconnect {
    /// Writes the whole DISCONNECT at the start of `buf`; returns [`DISCONNECT_LEN`].
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if `buf` is shorter than [`DISCONNECT_LEN`].
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        let mut put = Put::new(room(buf, DISCONNECT_LEN)?, Kind::Disconnect);
        put.u64(self.token);
        put.u32(self.code);
        Ok(DISCONNECT_LEN)
    }

    /// The code as an [`ErrorCode`]: `None` for 0 (no error) and for codes this version does not know.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u32(self.code)
    }
}

/// One reliable message: its id and its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReliableItem<'a> {
    /// The message id: consecutive per direction of a session, from 0 (the client's HELLO, the
    /// server's WELCOME).
    pub id: Seq,
    /// The protocol v1 frame.
    pub frame: RawFrame<'a>,
}

/// The 2 bytes in front of a reliable frame in a DATA or RESPONSE: its message id. For iovecs: this,
/// then the frame's shared bytes.
///
/// # Examples
///
/// ```
/// use gamewire_udp::datagram::reliable_prefix;
/// use gamewire_udp::seq::Seq;
///
/// assert_eq!(reliable_prefix(Seq(0x0102)), [0x02, 0x01]);
/// ```
pub fn reliable_prefix(id: Seq) -> [u8; RELIABLE_PREFIX_LEN] {
    id.0.to_le_bytes()
}

/// RESPONSE (client → server): the cookie echoed, with the client's first reliable frames. Borrows the
/// datagram; exactly [`RESPONSE_LEN`] bytes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseView<'a> {
    client_nonce: u64,
    cookie: Cookie,
    reliable_count: u8,
    /// The reliable items, checked, without the padding.
    items: &'a [u8],
}

impl<'a> ResponseView<'a> {
    /// The nonce of the handshake (the CONNECT's).
    pub fn client_nonce(&self) -> u64 {
        self.client_nonce
    }

    /// The cookie the client echoes, for [`Cookies::verify`](crate::cookie::Cookies::verify).
    pub fn cookie(&self) -> &Cookie {
        &self.cookie
    }

    /// How many reliable items it carries.
    pub fn reliable_count(&self) -> usize {
        usize::from(self.reliable_count)
    }

    /// The reliable items, in wire order (the HELLO first, as message 0).
    pub fn reliable(&self) -> ReliableItems<'a> {
        ReliableItems { rest: self.items, left: self.reliable_count }
    }
}

/// Writes a whole RESPONSE at the start of `buf`: the handshake's nonce, the cookie from the CHALLENGE,
/// the reliable `items` (at least the HELLO, as message 0), zero padding; returns [`RESPONSE_LEN`].
///
/// # Errors
///
/// [`WriteError::NoRoom`] if `buf` is shorter than [`RESPONSE_LEN`] or the items do not fit in it,
/// [`WriteError::TooManyReliable`] for more than [`MAX_RELIABLE_ITEMS`] items.
///
/// # Examples
///
/// ```
/// use gamewire_proto::{Packet, RawFrame, encode_frame_to_vec};
/// use gamewire_udp::cookie::Cookie;
/// use gamewire_udp::datagram::{Datagram, MAX_DATAGRAM, ReliableItem, write_response};
/// use gamewire_udp::seq::Seq;
///
/// let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
/// let (frame, _) = RawFrame::split_from(&hello).unwrap();
/// let cookie = Cookie::from_bytes([3; 20]); // the CHALLENGE's
///
/// let mut buf = [0; MAX_DATAGRAM];
/// let len = write_response(&mut buf, 42, &cookie, &[ReliableItem { id: Seq(0), frame }]).unwrap();
/// let Ok(Datagram::Response(response)) = Datagram::parse(&buf[..len], 1024) else { panic!() };
/// assert_eq!((response.client_nonce(), response.cookie()), (42, &cookie));
/// let first = response.reliable().next().unwrap();
/// assert_eq!((first.id, first.frame.packet()), (Seq(0), Ok(Packet::Hello { name: "ada" })));
/// ```
pub fn write_response(
    buf: &mut [u8],
    client_nonce: u64,
    cookie: &Cookie,
    items: &[ReliableItem<'_>],
) -> Result<usize, WriteError> {
    let reliable_count = u8::try_from(items.len()).map_err(|_| WriteError::TooManyReliable)?;
    let items_len: usize = items.iter().map(|item| RELIABLE_PREFIX_LEN + frame_len(item.frame)).sum();
    let needed = RESPONSE_HEADER_LEN + items_len;
    if needed > RESPONSE_LEN {
        return Err(WriteError::NoRoom { needed, available: RESPONSE_LEN });
    }
    let out = room(buf, RESPONSE_LEN)?;
    let mut put = Put::new(out, Kind::Response);
    put.response_header(reliable_count, client_nonce, cookie);
    for item in items {
        put.reliable_item(item.id, item.frame);
    }
    put.zeros();
    Ok(RESPONSE_LEN)
}

/// The header fields of a DATA that do not depend on what it carries: what the I/O layer writes for
/// each recipient in front of the shared frames.
///
/// # Examples
///
/// Sending a DATA as an iovec, the frames shared with other recipients:
///
/// ```
/// use std::io::IoSlice;
/// use gamewire_proto::{Packet, encode_frame_to_vec};
/// use gamewire_udp::datagram::{DATA_HEADER_MAX_LEN, DataHeader, Datagram, SessionToken, reliable_prefix};
/// use gamewire_udp::seq::Seq;
///
/// let chat = encode_frame_to_vec(3, &Packet::Chat { text: "hi" }); // encoded once, in the pool
/// let header = DataHeader {
///     token: SessionToken(0xfeed),
///     seq: Seq(7),
///     ack: Seq(4),
///     ack_bits: 0b1,
///     nonce_echo: None,
/// };
/// let mut head = [0; DATA_HEADER_MAX_LEN];
/// let head_len = header.write_to(1, &mut head).unwrap();
/// let prefix = reliable_prefix(Seq(12));
/// let iovec = [IoSlice::new(&head[..head_len]), IoSlice::new(&prefix), IoSlice::new(&chat)];
///
/// // What the peer receives is the iovec's bytes back to back.
/// let datagram: Vec<u8> = iovec.iter().flat_map(|slice| slice.iter().copied()).collect();
/// let Ok(Datagram::Data(data)) = Datagram::parse(&datagram, 1024) else { panic!() };
/// assert_eq!(data.header(), header);
/// let item = data.reliable().next().unwrap();
/// assert_eq!((item.id, item.frame.packet()), (Seq(12), Ok(Packet::Chat { text: "hi" })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataHeader {
    /// The session's token.
    pub token: SessionToken,
    /// This datagram's sequence number (one per DATA, consecutive per direction).
    pub seq: Seq,
    /// The newest sequence number received from the peer.
    pub ack: Seq,
    /// Bit `i` set: the peer's datagram `ack - 1 - i` was received too.
    pub ack_bits: u32,
    /// The client's nonce, echoed by the server (flag [`FLAG_NONCE_ECHO`]) until the client has shown
    /// it knows the token; `None` otherwise, and always from a client.
    pub nonce_echo: Option<u64>,
}

impl DataHeader {
    /// Bytes of this header on the wire: [`DATA_HEADER_LEN`], plus [`NONCE_ECHO_LEN`] with the echo.
    pub fn encoded_len(&self) -> usize {
        match self.nonce_echo {
            Some(_) => DATA_HEADER_MAX_LEN,
            None => DATA_HEADER_LEN,
        }
    }

    /// Writes the header of a DATA carrying `reliable_count` reliable items at the start of `buf`;
    /// returns its length ([`DataHeader::encoded_len`]). The items and the unreliable frames follow it
    /// on the wire.
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if `buf` is shorter than the header.
    pub fn write_to(&self, reliable_count: u8, buf: &mut [u8]) -> Result<usize, WriteError> {
        let len = self.encoded_len();
        Put::new(room(buf, len)?, Kind::Data).data_header(reliable_count, self);
        Ok(len)
    }
}

/// DATA (both ways): a session's datagram. Borrows the received bytes; every item and frame was checked
/// by [`Datagram::parse`], so the iterators yield them all, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataView<'a> {
    header: DataHeader,
    reliable_count: u8,
    reliable: &'a [u8],
    unreliable: &'a [u8],
}

impl<'a> DataView<'a> {
    /// The header fields.
    pub fn header(&self) -> DataHeader {
        self.header
    }

    /// The session token.
    pub fn token(&self) -> SessionToken {
        self.header.token
    }

    /// This datagram's sequence number.
    pub fn seq(&self) -> Seq {
        self.header.seq
    }

    /// The newest sequence number the sender has received.
    pub fn ack(&self) -> Seq {
        self.header.ack
    }

    /// Which of the 32 sequence numbers before [`DataView::ack`] the sender has received.
    pub fn ack_bits(&self) -> u32 {
        self.header.ack_bits
    }

    /// The echoed client nonce, if the flag is set.
    pub fn nonce_echo(&self) -> Option<u64> {
        self.header.nonce_echo
    }

    /// How many reliable items it carries.
    pub fn reliable_count(&self) -> usize {
        usize::from(self.reliable_count)
    }

    /// Whether it carries no frame at all: a keepalive, or a pure acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.reliable_count == 0 && self.unreliable.is_empty()
    }

    /// The reliable items, in wire order.
    pub fn reliable(&self) -> ReliableItems<'a> {
        ReliableItems { rest: self.reliable, left: self.reliable_count }
    }

    /// The unreliable frames, in wire order.
    pub fn unreliable(&self) -> Frames<'a> {
        Frames { rest: self.unreliable }
    }
}

/// The reliable items of a DATA or RESPONSE ([`DataView::reliable`], [`ResponseView::reliable`]).
#[derive(Clone, Debug)]
pub struct ReliableItems<'a> {
    /// Checked items, `left` of them back to back.
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for ReliableItems<'a> {
    type Item = ReliableItem<'a>;

    fn next(&mut self) -> Option<ReliableItem<'a>> {
        if self.left == 0 {
            return None;
        }
        // Checked by `parse`: these cannot fail; if they did, the iterator would end, not panic.
        let (id, rest) = self.rest.split_first_chunk::<RELIABLE_PREFIX_LEN>()?;
        let (frame, rest) = RawFrame::split_from(rest)?;
        self.rest = rest;
        self.left -= 1;
        Some(ReliableItem { id: Seq(u16::from_le_bytes(*id)), frame })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

impl ExactSizeIterator for ReliableItems<'_> {}
impl std::iter::FusedIterator for ReliableItems<'_> {}

/// The unreliable frames of a DATA ([`DataView::unreliable`]).
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    /// Checked frames back to back, to the datagram's end.
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = RawFrame<'a>;

    fn next(&mut self) -> Option<RawFrame<'a>> {
        let (frame, rest) = RawFrame::split_from(self.rest)?;
        self.rest = rest;
        Some(frame)
    }
}

impl std::iter::FusedIterator for Frames<'_> {}

/// Builds a whole DATA in a buffer, item by item: for clients, tests and any sender that copies
/// frames rather than sending iovecs. The buffer holds a valid DATA after every call.
///
/// # Examples
///
/// Packing frames until the datagram is full:
///
/// ```
/// use gamewire_proto::{Move, Packet, RawFrame, encode_frame_to_vec};
/// use gamewire_udp::datagram::{DataHeader, DataWriter, Datagram, MAX_DATAGRAM, SessionToken, WriteError};
/// use gamewire_udp::seq::Seq;
///
/// let header =
///     DataHeader { token: SessionToken(1), seq: Seq(0), ack: Seq(65535), ack_bits: 0, nonce_echo: None };
/// let step = encode_frame_to_vec(0, &Packet::Move(&Move::new(1.0, 0.0, 2.0, 3.0, 7)));
/// let (frame, _) = RawFrame::split_from(&step).unwrap();
///
/// let mut buf = [0; MAX_DATAGRAM];
/// let mut writer = DataWriter::new(&mut buf, &header).unwrap();
/// let mut packed = 0;
/// while writer.push_unreliable(frame).is_ok() {
///     packed += 1;
/// }
/// assert_eq!(packed, (MAX_DATAGRAM - 20) / 32);
/// assert!(matches!(writer.push_unreliable(frame), Err(WriteError::NoRoom { .. })));
/// let len = writer.finish();
///
/// let Ok(Datagram::Data(data)) = Datagram::parse(&buf[..len], 1024) else { panic!() };
/// assert_eq!(data.unreliable().count(), packed);
/// ```
#[derive(Debug)]
pub struct DataWriter<'b> {
    /// The caller's buffer, cut to [`MAX_DATAGRAM`].
    buf: &'b mut [u8],
    len: usize,
    reliable_count: u8,
    unreliable_started: bool,
}

impl<'b> DataWriter<'b> {
    /// Starts a DATA with `header` (and no items yet) at the start of `buf`. Only the first
    /// [`MAX_DATAGRAM`] bytes of `buf` are used.
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if `buf` is shorter than the header.
    pub fn new(buf: &'b mut [u8], header: &DataHeader) -> Result<DataWriter<'b>, WriteError> {
        let limit = buf.len().min(MAX_DATAGRAM);
        let buf = &mut buf[..limit];
        let len = header.write_to(0, buf)?;
        Ok(DataWriter { buf, len, reliable_count: 0, unreliable_started: false })
    }

    /// Appends a reliable item. Reliable items come before every unreliable frame.
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if it does not fit, [`WriteError::TooManyReliable`] past
    /// [`MAX_RELIABLE_ITEMS`], [`WriteError::ReliableAfterUnreliable`] after an unreliable frame. The
    /// datagram is unchanged.
    pub fn push_reliable(&mut self, id: Seq, frame: RawFrame<'_>) -> Result<(), WriteError> {
        if self.unreliable_started {
            return Err(WriteError::ReliableAfterUnreliable);
        }
        let count = self.reliable_count.checked_add(1).ok_or(WriteError::TooManyReliable)?;
        let out = self.reserve(RELIABLE_PREFIX_LEN + frame_len(frame))?;
        Put { out, at: 0 }.reliable_item(id, frame);
        self.reliable_count = count;
        // Kept current after every push, so the buffer is always a valid DATA.
        self.buf[2] = count;
        Ok(())
    }

    /// Appends an unreliable frame.
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if it does not fit; the datagram is unchanged.
    pub fn push_unreliable(&mut self, frame: RawFrame<'_>) -> Result<(), WriteError> {
        let out = self.reserve(frame_len(frame))?;
        Put { out, at: 0 }.frame(frame);
        self.unreliable_started = true;
        Ok(())
    }

    /// Bytes written so far: the datagram is `buf[..len]`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no frame yet (a keepalive or pure ack as it stands).
    pub fn is_empty(&self) -> bool {
        self.reliable_count == 0 && !self.unreliable_started
    }

    /// Bytes left for items and frames.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Ends the writer; returns the datagram's length.
    pub fn finish(self) -> usize {
        self.len
    }

    fn reserve(&mut self, needed: usize) -> Result<&mut [u8], WriteError> {
        let available = self.remaining();
        if needed > available {
            return Err(WriteError::NoRoom { needed, available });
        }
        let start = self.len;
        self.len += needed;
        Ok(&mut self.buf[start..start + needed])
    }
}

/// A parsed datagram of any kind.
///
/// Not `#[non_exhaustive]` on purpose: a new kind means a new protocol version, and every `match` on
/// this enum should then be looked at again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// CONNECT.
    Connect(Connect),
    /// CHALLENGE.
    Challenge(Challenge),
    /// RESPONSE.
    Response(ResponseView<'a>),
    /// DATA.
    Data(DataView<'a>),
    /// DISCONNECT.
    Disconnect(Disconnect),
}

impl<'a> Datagram<'a> {
    /// Parses and checks a whole received datagram: preamble, its kind's fields, exact size and zero
    /// padding for the fixed-size kinds, and every reliable item and frame of a RESPONSE or DATA, each
    /// frame's `data_length` against the bytes left and against `max_payload`.
    ///
    /// Reads each byte at most twice (the check here, then the caller's iteration); allocates nothing.
    /// Packet ids and payloads are not looked at: that is the frame decoder's and the game's job, as
    /// on TCP.
    ///
    /// # Errors
    ///
    /// A [`DatagramError`] for anything malformed; never panics, whatever the bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_udp::datagram::{Datagram, DatagramError, Kind};
    ///
    /// let mut keepalive = vec![1, 4, 0, 0];
    /// keepalive.extend_from_slice(&0xfeed_u64.to_le_bytes()); // token
    /// keepalive.extend_from_slice(&[0; 8]); // seq, ack, ack_bits
    /// match Datagram::parse(&keepalive, 1024) {
    ///     Ok(Datagram::Data(data)) => assert!(data.is_empty() && data.token().0 == 0xfeed),
    ///     other => panic!("{other:?}"),
    /// }
    ///
    /// assert_eq!(Datagram::parse(&[2, 4], 1024), Err(DatagramError::UnsupportedVersion(2)));
    /// assert_eq!(Datagram::parse(&[1, 9], 1024), Err(DatagramError::UnknownKind(9)));
    /// assert_eq!(
    ///     Datagram::parse(&[1, 1, 0], 1024),
    ///     Err(DatagramError::WrongLength { kind: Kind::Connect, len: 3, expected: 1200 })
    /// );
    /// ```
    pub fn parse(bytes: &'a [u8], max_payload: u32) -> Result<Datagram<'a>, DatagramError> {
        let len = bytes.len();
        if len > MAX_DATAGRAM {
            return Err(DatagramError::TooLong { len });
        }
        let Some(&[version, kind]) = bytes.first_chunk::<PREAMBLE_LEN>() else {
            return Err(DatagramError::Truncated { len, needed: PREAMBLE_LEN });
        };
        if version != VERSION {
            return Err(DatagramError::UnsupportedVersion(version));
        }
        let kind = Kind::from_u8(kind).ok_or(DatagramError::UnknownKind(kind))?;
        Ok(match kind {
            Kind::Connect => Datagram::Connect(parse_connect(bytes)?),
            Kind::Challenge => Datagram::Challenge(parse_challenge(bytes)?),
            Kind::Response => Datagram::Response(parse_response(bytes, max_payload)?),
            Kind::Data => Datagram::Data(parse_data(bytes, max_payload)?),
            Kind::Disconnect => Datagram::Disconnect(parse_disconnect(bytes)?),
        })
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Datagram::Connect(_) => Kind::Connect,
            Datagram::Challenge(_) => Kind::Challenge,
            Datagram::Response(_) => Kind::Response,
            Datagram::Data(_) => Kind::Data,
            Datagram::Disconnect(_) => Kind::Disconnect,
        }
    }

    /// Writes it back at the start of `buf`: the very bytes it was parsed from. Returns their length.
    ///
    /// # Errors
    ///
    /// [`WriteError::NoRoom`] if `buf` is too short.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, WriteError> {
        match self {
            Datagram::Connect(connect) => connect.write_to(buf),
            Datagram::Challenge(challenge) => challenge.write_to(buf),
            Datagram::Disconnect(disconnect) => disconnect.write_to(buf),
            Datagram::Response(response) => {
                let mut put = Put::new(room(buf, RESPONSE_LEN)?, Kind::Response);
                put.response_header(response.reliable_count, response.client_nonce, &response.cookie);
                put.bytes(response.items);
                put.zeros();
                Ok(RESPONSE_LEN)
            }
            Datagram::Data(data) => {
                let len = data.header.encoded_len() + data.reliable.len() + data.unreliable.len();
                let mut put = Put::new(room(buf, len)?, Kind::Data);
                put.data_header(data.reliable_count, &data.header);
                put.bytes(data.reliable);
                put.bytes(data.unreliable);
                Ok(len)
            }
        }
    }
}

fn parse_connect(bytes: &[u8]) -> Result<Connect, DatagramError> {
    let mut take = Take::fixed(bytes, Kind::Connect, CONNECT_LEN)?;
    let client_nonce = take.u64()?;
    take.zeros()?;
    Ok(Connect { client_nonce })
}

fn parse_challenge(bytes: &[u8]) -> Result<Challenge, DatagramError> {
    let mut take = Take::fixed(bytes, Kind::Challenge, CHALLENGE_LEN)?;
    Ok(Challenge { client_nonce: take.u64()?, cookie: take.cookie()? })
}

fn parse_disconnect(bytes: &[u8]) -> Result<Disconnect, DatagramError> {
    let mut take = Take::fixed(bytes, Kind::Disconnect, DISCONNECT_LEN)?;
    Ok(Disconnect { token: take.u64()?, code: take.u32()? })
}

fn parse_response(bytes: &[u8], max_payload: u32) -> Result<ResponseView<'_>, DatagramError> {
    let mut take = Take::fixed(bytes, Kind::Response, RESPONSE_LEN)?;
    let reliable_count = take.u8()?;
    let flags = take.u8()?;
    if flags != 0 {
        return Err(DatagramError::UnknownFlags { kind: Kind::Response, flags });
    }
    let client_nonce = take.u64()?;
    let cookie = take.cookie()?;
    let start = take.at;
    let end = skip_reliable(bytes, start, reliable_count, max_payload)?;
    take.at = end;
    take.zeros()?;
    Ok(ResponseView { client_nonce, cookie, reliable_count, items: &bytes[start..end] })
}

fn parse_data(bytes: &[u8], max_payload: u32) -> Result<DataView<'_>, DatagramError> {
    let mut take = Take { bytes, at: PREAMBLE_LEN, short: short(bytes, DATA_HEADER_LEN) };
    let reliable_count = take.u8()?;
    let flags = take.u8()?;
    if flags & !FLAG_NONCE_ECHO != 0 {
        return Err(DatagramError::UnknownFlags { kind: Kind::Data, flags });
    }
    let token = SessionToken(take.u64()?);
    let seq = Seq(take.u16()?);
    let ack = Seq(take.u16()?);
    let ack_bits = take.u32()?;
    let nonce_echo = if flags & FLAG_NONCE_ECHO != 0 {
        take.short = short(bytes, DATA_HEADER_MAX_LEN);
        Some(take.u64()?)
    } else {
        None
    };
    let header = DataHeader { token, seq, ack, ack_bits, nonce_echo };
    let start = take.at;
    let unreliable_start = skip_reliable(bytes, start, reliable_count, max_payload)?;
    let mut at = unreliable_start;
    while at < bytes.len() {
        at = skip_frame(bytes, at, max_payload)?;
    }
    Ok(DataView {
        header,
        reliable_count,
        reliable: &bytes[start..unreliable_start],
        unreliable: &bytes[unreliable_start..],
    })
}

/// Checks `count` reliable items from `at`; returns the offset just past them.
fn skip_reliable(bytes: &[u8], mut at: usize, count: u8, max_payload: u32) -> Result<usize, DatagramError> {
    for _ in 0..count {
        if bytes.len() - at < RELIABLE_PREFIX_LEN {
            return Err(DatagramError::FrameTruncated { offset: at });
        }
        at = skip_frame(bytes, at + RELIABLE_PREFIX_LEN, max_payload)?;
    }
    Ok(at)
}

/// Checks the frame at `at` (`at <= bytes.len()`); returns the offset just past it.
fn skip_frame(bytes: &[u8], at: usize, max_payload: u32) -> Result<usize, DatagramError> {
    let rest = bytes.get(at..).unwrap_or_default();
    let Some(header) = rest.first_chunk::<HEADER_LEN>() else {
        return Err(DatagramError::FrameTruncated { offset: at });
    };
    let length = u32::from_le_bytes([
        header[DATA_LENGTH_AT],
        header[DATA_LENGTH_AT + 1],
        header[DATA_LENGTH_AT + 2],
        header[DATA_LENGTH_AT + 3],
    ]);
    // The limit first, as the TCP decoder does: what a frame claims is judged before its bytes are.
    if length > max_payload {
        return Err(DatagramError::FrameTooLarge { offset: at, length, max: max_payload });
    }
    match usize::try_from(length) {
        Ok(length) if length <= rest.len() - HEADER_LEN => Ok(at + HEADER_LEN + length),
        _ => Err(DatagramError::FrameTruncated { offset: at }),
    }
}

/// The error for a datagram shorter than `needed`.
fn short(bytes: &[u8], needed: usize) -> DatagramError {
    DatagramError::Truncated { len: bytes.len(), needed }
}

/// Reads fields one after another; a read past the end is `short`.
struct Take<'a> {
    bytes: &'a [u8],
    at: usize,
    short: DatagramError,
}

impl<'a> Take<'a> {
    /// After the preamble of a fixed-size kind, once its size is checked.
    fn fixed(bytes: &'a [u8], kind: Kind, expected: usize) -> Result<Take<'a>, DatagramError> {
        let wrong = DatagramError::WrongLength { kind, len: bytes.len(), expected };
        if bytes.len() != expected {
            return Err(wrong);
        }
        Ok(Take { bytes, at: PREAMBLE_LEN, short: wrong })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DatagramError> {
        let field = self.bytes.get(self.at..).and_then(<[u8]>::first_chunk::<N>).ok_or(self.short)?;
        self.at += N;
        Ok(*field)
    }

    fn u8(&mut self) -> Result<u8, DatagramError> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Result<u16, DatagramError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DatagramError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DatagramError> {
        self.array().map(u64::from_le_bytes)
    }

    fn cookie(&mut self) -> Result<Cookie, DatagramError> {
        self.array().map(Cookie::from_bytes)
    }

    /// Checks that everything left is zero padding.
    fn zeros(&self) -> Result<(), DatagramError> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        match rest.iter().position(|&byte| byte != 0) {
            Some(i) => Err(DatagramError::NonZeroPadding { offset: self.at + i }),
            None => Ok(()),
        }
    }
}

/// The first `needed` bytes of `buf`, or [`WriteError::NoRoom`].
fn room(buf: &mut [u8], needed: usize) -> Result<&mut [u8], WriteError> {
    let available = buf.len();
    buf.get_mut(..needed).ok_or(WriteError::NoRoom { needed, available })
}

/// Bytes of `frame` on the wire.
fn frame_len(frame: RawFrame<'_>) -> usize {
    HEADER_LEN + frame.payload().len()
}

/// Writes fields one after another into a buffer whose size the caller has checked: a write past its
/// end is a bug in this file, not something the peer can cause.
struct Put<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl<'b> Put<'b> {
    /// Starts a datagram of `kind` with its preamble.
    fn new(out: &'b mut [u8], kind: Kind) -> Put<'b> {
        let mut put = Put { out, at: 0 };
        put.bytes(&[VERSION, kind.code()]);
        put
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    fn response_header(&mut self, reliable_count: u8, client_nonce: u64, cookie: &Cookie) {
        self.bytes(&[reliable_count, 0]);
        self.u64(client_nonce);
        self.bytes(&cookie.to_bytes());
    }

    fn data_header(&mut self, reliable_count: u8, header: &DataHeader) {
        let flags = if header.nonce_echo.is_some() { FLAG_NONCE_ECHO } else { 0 };
        self.bytes(&[reliable_count, flags]);
        self.u64(header.token.0);
        self.bytes(&header.seq.0.to_le_bytes());
        self.bytes(&header.ack.0.to_le_bytes());
        self.u32(header.ack_bits);
        if let Some(nonce) = header.nonce_echo {
            self.u64(nonce);
        }
    }

    fn reliable_item(&mut self, id: Seq, frame: RawFrame<'_>) {
        self.bytes(&reliable_prefix(id));
        self.frame(frame);
    }

    fn frame(&mut self, frame: RawFrame<'_>) {
        self.bytes(frame.header_bytes());
        self.bytes(frame.payload());
    }

    /// Zero padding to the end.
    fn zeros(&mut self) {
        self.out[self.at..].fill(0);
        self.at = self.out.len();
    }
}

#[cfg(test)]
mod tests {
    use gamewire_proto::{Packet, encode_frame_to_vec};
    use proptest::prelude::*;

    use super::*;

    const MAX: u32 = 1024;

    fn frame_bytes(packet_id: u32, player_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(&packet_id.to_le_bytes());
        bytes.extend_from_slice(&player_id.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn raw(bytes: &[u8]) -> RawFrame<'_> {
        let (frame, rest) = RawFrame::split_from(bytes).unwrap();
        assert!(rest.is_empty());
        frame
    }

    fn bytes_of(frame: RawFrame<'_>) -> Vec<u8> {
        [frame.header_bytes(), frame.payload()].concat()
    }

    fn header(nonce_echo: Option<u64>) -> DataHeader {
        DataHeader {
            token: SessionToken(0x1122_3344_5566_7788),
            seq: Seq(9),
            ack: Seq(3),
            ack_bits: 5,
            nonce_echo,
        }
    }

    fn parse(bytes: &[u8]) -> Result<Datagram<'_>, DatagramError> {
        Datagram::parse(bytes, MAX)
    }

    /// A DATA with one reliable CHAT and one unreliable MOVE-sized frame, as bytes.
    fn sample_data() -> Vec<u8> {
        let chat = encode_frame_to_vec(3, &Packet::Chat { text: "hi" });
        let step = frame_bytes(3, 4, &[0xaa; 20]);
        let mut buf = [0; MAX_DATAGRAM];
        let mut writer = DataWriter::new(&mut buf, &header(None)).unwrap();
        writer.push_reliable(Seq(40), raw(&chat)).unwrap();
        writer.push_unreliable(raw(&step)).unwrap();
        let len = writer.finish();
        buf[..len].to_vec()
    }

    #[test]
    fn data_layout_is_the_documented_one() {
        let bytes = sample_data();
        #[rustfmt::skip]
        let head = [
            1, 4, 1, 0,                                     // version, kind, reliable_count, flags
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // token
            9, 0, 3, 0, 5, 0, 0, 0,                         // seq, ack, ack_bits
            40, 0,                                          // message id
            5, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, b'h', b'i', // CHAT frame
        ];
        assert_eq!(&bytes[..head.len()], &head);
        assert_eq!(&bytes[head.len()..], &frame_bytes(3, 4, &[0xaa; 20])[..]);
        assert_eq!(bytes.len(), DATA_HEADER_LEN + 2 + 14 + 32);

        let Ok(Datagram::Data(data)) = parse(&bytes) else { panic!("a DATA") };
        assert_eq!(data.header(), header(None));
        assert_eq!(data.reliable_count(), 1);
        let items: Vec<_> = data.reliable().collect();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].id, Seq(40));
        assert_eq!(items[0].frame.packet(), Ok(Packet::Chat { text: "hi" }));
        let frames: Vec<_> = data.unreliable().collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(
            (frames[0].packet_id(), frames[0].player_id(), frames[0].payload()),
            (3, 4, &[0xaa; 20][..])
        );
        assert!(!data.is_empty());
    }

    #[test]
    fn the_nonce_echo_follows_the_header() {
        let mut buf = [0; MAX_DATAGRAM];
        let len = header(Some(0xabcd)).write_to(0, &mut buf).unwrap();
        assert_eq!(len, DATA_HEADER_MAX_LEN);
        assert_eq!(buf[3], FLAG_NONCE_ECHO);
        assert_eq!(&buf[20..28], &0xabcd_u64.to_le_bytes());
        let Ok(Datagram::Data(data)) = parse(&buf[..len]) else { panic!("a DATA") };
        assert_eq!(data.nonce_echo(), Some(0xabcd));
        assert!(data.is_empty());
        // The flag without the 8 bytes.
        assert_eq!(parse(&buf[..len - 1]), Err(DatagramError::Truncated { len: 27, needed: 28 }));
    }

    #[test]
    fn fixed_kinds_have_the_documented_layout() {
        let mut buf = [0xee; MAX_DATAGRAM];
        assert_eq!(Connect { client_nonce: 0x0102 }.write_to(&mut buf), Ok(1200));
        assert_eq!(&buf[..10], &[1, 1, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert!(buf[10..].iter().all(|&b| b == 0));

        let cookie = Cookie::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(Challenge { client_nonce: 7, cookie }.write_to(&mut buf), Ok(30));
        assert_eq!(&buf[..10], &[1, 2, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[10..30], &cookie.to_bytes());

        assert_eq!(Disconnect { token: 0x0a, code: 9 }.write_to(&mut buf), Ok(14));
        assert_eq!(&buf[..14], &[1, 5, 0x0a, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]);

        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
        let items = [ReliableItem { id: Seq(0), frame: raw(&hello) }];
        assert_eq!(write_response(&mut buf, 7, &cookie, &items), Ok(1200));
        assert_eq!(&buf[..12], &[1, 3, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[12..32], &cookie.to_bytes());
        assert_eq!(&buf[32..34], &[0, 0]);
        assert_eq!(&buf[34..49], &hello[..]);
        assert!(buf[49..].iter().all(|&b| b == 0));
    }

    #[test]
    fn every_kind_round_trips_byte_for_byte() {
        let cookie = Cookie::from_bytes([5; COOKIE_LEN]);
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "bob" });
        let mut datagrams: Vec<Vec<u8>> = vec![sample_data()];
        let mut buf = [0; MAX_DATAGRAM];
        let len = Connect { client_nonce: u64::MAX }.write_to(&mut buf).unwrap();
        datagrams.push(buf[..len].to_vec());
        let len = Challenge { client_nonce: 1, cookie }.write_to(&mut buf).unwrap();
        datagrams.push(buf[..len].to_vec());
        let len =
            write_response(&mut buf, 1, &cookie, &[ReliableItem { id: Seq(0), frame: raw(&hello) }]).unwrap();
        datagrams.push(buf[..len].to_vec());
        let len = Disconnect { token: 3, code: 0 }.write_to(&mut buf).unwrap();
        datagrams.push(buf[..len].to_vec());
        for (bytes, kind) in datagrams.iter().zip([
            Kind::Data,
            Kind::Connect,
            Kind::Challenge,
            Kind::Response,
            Kind::Disconnect,
        ]) {
            let parsed = parse(bytes).unwrap();
            assert_eq!(parsed.kind(), kind);
            let mut again = [0xee; MAX_DATAGRAM];
            let len = parsed.write_to(&mut again).unwrap();
            assert_eq!(&again[..len], &bytes[..], "{kind}");
        }
    }

    #[test]
    fn preamble_errors() {
        assert_eq!(parse(&[]), Err(DatagramError::Truncated { len: 0, needed: 2 }));
        assert_eq!(parse(&[1]), Err(DatagramError::Truncated { len: 1, needed: 2 }));
        assert_eq!(parse(&[0, 4]), Err(DatagramError::UnsupportedVersion(0)));
        assert_eq!(parse(&[1, 0]), Err(DatagramError::UnknownKind(0)));
        assert_eq!(parse(&[1, 6]), Err(DatagramError::UnknownKind(6)));
        assert_eq!(parse(&[1; MAX_DATAGRAM + 1]), Err(DatagramError::TooLong { len: 1201 }));
    }

    #[test]
    fn fixed_kinds_must_have_their_exact_size_and_zero_padding() {
        let mut buf = [0; MAX_DATAGRAM];
        Connect { client_nonce: 1 }.write_to(&mut buf).unwrap();
        assert_eq!(
            parse(&buf[..1199]),
            Err(DatagramError::WrongLength { kind: Kind::Connect, len: 1199, expected: 1200 })
        );
        buf[700] = 1;
        assert_eq!(parse(&buf), Err(DatagramError::NonZeroPadding { offset: 700 }));

        let cookie = Cookie::from_bytes([5; COOKIE_LEN]);
        Challenge { client_nonce: 1, cookie }.write_to(&mut buf).unwrap();
        assert_eq!(
            parse(&buf[..31]),
            Err(DatagramError::WrongLength { kind: Kind::Challenge, len: 31, expected: 30 })
        );
        assert_eq!(
            parse(&buf[..29]),
            Err(DatagramError::WrongLength { kind: Kind::Challenge, len: 29, expected: 30 })
        );

        Disconnect { token: 1, code: 1 }.write_to(&mut buf).unwrap();
        assert_eq!(
            parse(&buf[..15]),
            Err(DatagramError::WrongLength { kind: Kind::Disconnect, len: 15, expected: 14 })
        );
    }

    #[test]
    fn response_errors() {
        let cookie = Cookie::from_bytes([5; COOKIE_LEN]);
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
        let items = [ReliableItem { id: Seq(0), frame: raw(&hello) }];
        let mut buf = [0; MAX_DATAGRAM];
        write_response(&mut buf, 7, &cookie, &items).unwrap();
        assert!(matches!(parse(&buf), Ok(Datagram::Response(_))));

        let mut flags = buf;
        flags[3] = 1;
        assert_eq!(parse(&flags), Err(DatagramError::UnknownFlags { kind: Kind::Response, flags: 1 }));

        // More items declared than written: 14 zero bytes of padding read as an item (id 0, a frame of
        // packet id 0 and no payload, which the frame decoder refuses later), so 82 more fit in the
        // padding (83 items in all) and the 84th is cut off at the end (its id at 1197, its frame at 1199).
        let mut count = buf;
        count[2] = 83;
        assert!(matches!(parse(&count), Ok(Datagram::Response(r)) if r.reliable_count() == 83));
        count[2] = 84;
        assert_eq!(parse(&count), Err(DatagramError::FrameTruncated { offset: 1199 }));

        // A byte after the items.
        let mut tail = buf;
        tail[49] = 1;
        assert_eq!(parse(&tail), Err(DatagramError::NonZeroPadding { offset: 49 }));

        // A frame longer than max_payload.
        let mut large = buf;
        large[34 + 8..34 + 12].copy_from_slice(&2000u32.to_le_bytes());
        assert_eq!(parse(&large), Err(DatagramError::FrameTooLarge { offset: 34, length: 2000, max: MAX }));
        // ... or than the datagram.
        assert_eq!(Datagram::parse(&large, u32::MAX), Err(DatagramError::FrameTruncated { offset: 34 }));
    }

    #[test]
    fn data_errors() {
        let bytes = sample_data();
        let reliable_at = DATA_HEADER_LEN + RELIABLE_PREFIX_LEN; // the CHAT's header
        let unreliable_at = reliable_at + 14; // the MOVE-sized frame's header

        for len in 2..DATA_HEADER_LEN {
            assert_eq!(parse(&bytes[..len]), Err(DatagramError::Truncated { len, needed: 20 }), "{len}");
        }
        let mut flags = bytes.clone();
        flags[3] = 0x82;
        assert_eq!(parse(&flags), Err(DatagramError::UnknownFlags { kind: Kind::Data, flags: 0x82 }));

        // Cut anywhere inside the items and frames: reported at the item (a cut in its id) or frame.
        for len in DATA_HEADER_LEN..bytes.len() {
            let expected = match len {
                20..22 => Some(DATA_HEADER_LEN),
                22..36 => Some(reliable_at),
                36 => None, // the reliable item whole, no unreliable frame: a valid DATA
                _ => Some(unreliable_at),
            };
            match (parse(&bytes[..len]), expected) {
                (Err(DatagramError::FrameTruncated { offset }), Some(expected)) => {
                    assert_eq!(offset, expected, "cut at {len}")
                }
                (Ok(Datagram::Data(data)), None) => assert_eq!(data.unreliable().count(), 0),
                (other, _) => panic!("cut at {len}: {other:?}"),
            }
        }
        // Two reliable items declared, one present: the MOVE-sized frame's first 2 bytes become an id.
        let mut count = bytes.clone();
        count[2] = 2;
        assert!(matches!(
            parse(&count),
            Err(DatagramError::FrameTruncated { .. } | DatagramError::FrameTooLarge { .. })
        ));
        // No reliable item declared: the id bytes and the CHAT read as a frame, cut off.
        let mut none = bytes.clone();
        none[2] = 0;
        assert!(parse(&none).is_err());

        // Over max_payload, reliable and unreliable.
        assert_eq!(
            Datagram::parse(&bytes, 1),
            Err(DatagramError::FrameTooLarge { offset: reliable_at, length: 2, max: 1 })
        );
        assert_eq!(
            Datagram::parse(&bytes, 2),
            Err(DatagramError::FrameTooLarge { offset: unreliable_at, length: 20, max: 2 })
        );
        assert!(Datagram::parse(&bytes, 20).is_ok());
    }

    #[test]
    fn a_data_length_near_u32_max_is_refused_without_overflow() {
        let mut bytes = sample_data();
        let unreliable_at = DATA_HEADER_LEN + RELIABLE_PREFIX_LEN + 14;
        bytes[unreliable_at + 8..unreliable_at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Datagram::parse(&bytes, u32::MAX),
            Err(DatagramError::FrameTruncated { offset: unreliable_at })
        );
    }

    #[test]
    fn data_writer_rules() {
        let chat = encode_frame_to_vec(3, &Packet::Chat { text: "hi" });
        let mut buf = [0; MAX_DATAGRAM];
        let mut writer = DataWriter::new(&mut buf, &header(None)).unwrap();
        assert!(writer.is_empty());
        assert_eq!(writer.remaining(), MAX_DATAGRAM - DATA_HEADER_LEN);
        writer.push_unreliable(raw(&chat)).unwrap();
        assert_eq!(writer.push_reliable(Seq(0), raw(&chat)), Err(WriteError::ReliableAfterUnreliable));
        assert_eq!(writer.len(), DATA_HEADER_LEN + 14);

        // At most 255 reliable items.
        let leave = frame_bytes(7, 2, &[]);
        let mut big = [0; 255 * 14 + 100];
        let mut writer = DataWriter::new(&mut big, &header(None)).unwrap();
        let mut pushed = 0;
        while writer.push_reliable(Seq(pushed), raw(&leave)).is_ok() {
            pushed += 1;
        }
        // 1200 - 20 = 1180 bytes = 84 items of 14 bytes, not 255: the datagram's size bounds it first.
        assert_eq!(pushed, 84);
        let len = writer.finish();
        assert_eq!(len, DATA_HEADER_LEN + 84 * 14);
        let Ok(Datagram::Data(data)) = parse(&big[..len]) else { panic!("a DATA") };
        assert!(data.reliable().map(|item| item.id).eq((0..84).map(Seq)));

        // A buffer too small for the header.
        assert_eq!(
            DataWriter::new(&mut [0; 19], &header(None)).unwrap_err(),
            WriteError::NoRoom { needed: 20, available: 19 }
        );
    }

    #[test]
    fn write_response_checks_room() {
        let cookie = Cookie::from_bytes([5; COOKIE_LEN]);
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
        let item = ReliableItem { id: Seq(0), frame: raw(&hello) };
        assert_eq!(
            write_response(&mut [0; 1199], 1, &cookie, &[item]),
            Err(WriteError::NoRoom { needed: 1200, available: 1199 })
        );
        let many = vec![item; 100]; // 100 x 17 bytes > 1168
        assert_eq!(
            write_response(&mut [0; 1200], 1, &cookie, &many),
            Err(WriteError::NoRoom { needed: 32 + 1700, available: 1200 })
        );
        let leave = frame_bytes(7, 0, &[]);
        let too_many = vec![ReliableItem { id: Seq(0), frame: raw(&leave) }; 256];
        assert_eq!(write_response(&mut [0; 1200], 1, &cookie, &too_many), Err(WriteError::TooManyReliable));
    }

    #[test]
    fn the_largest_frame_fits_every_datagram_that_carries_frames() {
        let payload = vec![b'x'; MAX_FRAME_PAYLOAD];
        let frame = frame_bytes(5, 0, &payload);
        let cookie = Cookie::from_bytes([5; COOKIE_LEN]);
        let mut buf = [0; MAX_DATAGRAM];
        let item = ReliableItem { id: Seq(0), frame: raw(&frame) };
        assert_eq!(write_response(&mut buf, 1, &cookie, &[item]), Ok(MAX_DATAGRAM));
        let mut writer = DataWriter::new(&mut buf, &header(Some(1))).unwrap();
        writer.push_reliable(Seq(0), raw(&frame)).unwrap();
        assert!(writer.remaining() >= 4, "a DATA has 4 bytes more room than a RESPONSE");
        let bigger = frame_bytes(5, 0, &[b'x'; MAX_FRAME_PAYLOAD + 1]);
        assert!(
            write_response(&mut buf, 1, &cookie, &[ReliableItem { id: Seq(0), frame: raw(&bigger) }])
                .is_err()
        );
    }

    #[test]
    fn disconnect_codes() {
        assert_eq!(Disconnect { token: 0, code: 0 }.error_code(), None);
        assert_eq!(Disconnect { token: 0, code: 10 }.error_code(), Some(ErrorCode::Timeout));
        assert_eq!(Disconnect { token: 0, code: 99 }.error_code(), None);
    }

    #[test]
    fn kinds_and_directions() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u8(kind.code()), Some(kind));
            assert!(kind.is_client_sendable() || kind.is_server_sendable());
        }
        assert!(!Kind::Challenge.is_client_sendable());
        assert!(!Kind::Response.is_server_sendable());
    }

    // --- property tests ---------------------------------------------------------------------------

    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        (any::<u32>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(packet_id, player_id, payload)| frame_bytes(packet_id, player_id, &payload))
    }

    fn arb_header() -> impl Strategy<Value = DataHeader> {
        (any::<u64>(), any::<u16>(), any::<u16>(), any::<u32>(), any::<Option<u64>>()).prop_map(
            |(token, seq, ack, ack_bits, nonce_echo)| DataHeader {
                token: SessionToken(token),
                seq: Seq(seq),
                ack: Seq(ack),
                ack_bits,
                nonce_echo,
            },
        )
    }

    proptest! {
        #[test]
        fn data_round_trips(
            header in arb_header(),
            reliable in prop::collection::vec((any::<u16>(), arb_frame()), 0..20),
            unreliable in prop::collection::vec(arb_frame(), 0..20),
        ) {
            let mut buf = [0; MAX_DATAGRAM];
            let mut writer = DataWriter::new(&mut buf, &header).unwrap();
            let mut sent_reliable = Vec::new();
            for (id, frame) in &reliable {
                if writer.push_reliable(Seq(*id), raw(frame)).is_ok() {
                    sent_reliable.push((Seq(*id), frame.clone()));
                }
            }
            let mut sent_unreliable = Vec::new();
            for frame in &unreliable {
                if writer.push_unreliable(raw(frame)).is_ok() {
                    sent_unreliable.push(frame.clone());
                }
            }
            let len = writer.finish();
            let bytes = &buf[..len];
            let Ok(Datagram::Data(data)) = Datagram::parse(bytes, 80) else {
                panic!("{:?}", Datagram::parse(bytes, 80))
            };
            prop_assert_eq!(data.header(), header);
            let got: Vec<_> = data.reliable().map(|item| (item.id, bytes_of(item.frame))).collect();
            prop_assert_eq!(got, sent_reliable);
            let got: Vec<_> = data.unreliable().map(bytes_of).collect();
            prop_assert_eq!(got, sent_unreliable);
            let mut again = [0; MAX_DATAGRAM];
            let again_len = Datagram::Data(data).write_to(&mut again).unwrap();
            prop_assert_eq!(&again[..again_len], bytes);
        }

        #[test]
        fn response_round_trips(
            client_nonce: u64,
            cookie: [u8; COOKIE_LEN],
            items in prop::collection::vec((any::<u16>(), arb_frame()), 0..12),
        ) {
            let cookie = Cookie::from_bytes(cookie);
            let frames: Vec<ReliableItem<'_>> =
                items.iter().map(|(id, frame)| ReliableItem { id: Seq(*id), frame: raw(frame) }).collect();
            let mut buf = [0; MAX_DATAGRAM];
            match write_response(&mut buf, client_nonce, &cookie, &frames) {
                Ok(len) => {
                    let Ok(Datagram::Response(response)) = Datagram::parse(&buf[..len], 80) else { panic!() };
                    prop_assert_eq!(response.client_nonce(), client_nonce);
                    prop_assert_eq!(response.cookie(), &cookie);
                    prop_assert!(response.reliable().eq(frames.iter().copied()));
                }
                Err(WriteError::NoRoom { needed, .. }) => prop_assert!(needed > MAX_DATAGRAM),
                Err(other) => panic!("{other}"),
            }
        }

        #[test]
        fn fixed_kinds_round_trip(client_nonce: u64, cookie: [u8; COOKIE_LEN], token: u64, code: u32) {
            let cookie = Cookie::from_bytes(cookie);
            let mut buf = [0; MAX_DATAGRAM];
            let len = Connect { client_nonce }.write_to(&mut buf).unwrap();
            prop_assert_eq!(parse(&buf[..len]), Ok(Datagram::Connect(Connect { client_nonce })));
            let challenge = Challenge { client_nonce, cookie };
            let len = challenge.write_to(&mut buf).unwrap();
            prop_assert_eq!(parse(&buf[..len]), Ok(Datagram::Challenge(challenge)));
            let disconnect = Disconnect { token, code };
            let len = disconnect.write_to(&mut buf).unwrap();
            prop_assert_eq!(parse(&buf[..len]), Ok(Datagram::Disconnect(disconnect)));
        }

        /// Any bytes: an error or a datagram that writes back to exactly those bytes.
        #[test]
        fn anything_parses_canonically_or_not_at_all(
            kind in 0u8..7,
            rest in prop::collection::vec(any::<u8>(), 0..MAX_DATAGRAM + 2),
            max_payload in prop_oneof![Just(0u32), 0u32..64, Just(u32::MAX)],
        ) {
            let mut bytes = vec![VERSION, kind];
            bytes.extend_from_slice(&rest);
            if let Ok(datagram) = Datagram::parse(&bytes, max_payload) {
                let mut again = vec![0; MAX_DATAGRAM];
                let len = datagram.write_to(&mut again).unwrap();
                prop_assert_eq!(&again[..len], &bytes[..]);
            }
        }

        /// Flipping any byte of a valid DATA never panics, and what still parses is canonical.
        #[test]
        fn corrupted_data_is_refused_or_canonical(at in 0usize..64, value: u8) {
            let mut bytes = sample_data();
            let at = at % bytes.len();
            bytes[at] = value;
            if let Ok(datagram) = Datagram::parse(&bytes, MAX) {
                let mut again = vec![0; MAX_DATAGRAM];
                let len = datagram.write_to(&mut again).unwrap();
                prop_assert_eq!(&again[..len], &bytes[..]);
            }
        }
    }
}
