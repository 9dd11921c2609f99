//! The client side of the UDP transport, without I/O: handshake, session token, reliable and
//! unreliable frames, keepalives and timeouts of one connection to a server.
//!
//! A [`Client`] follows docs/protocol.md section 10 from the client's side. It never touches a socket
//! or a clock: the caller sends what [`Client::poll_transmit`] returns to [`Client::server`], passes
//! in every datagram it receives, and says what time it is. So one thread can drive thousands of
//! clients over one `mio` poll (`gamewire bots --transport udp`), and tests drive one over an
//! in-memory link.
//!
//! Frames are protocol v1's, whole (12-byte header and payload), in both directions. The client
//! copies the frames it must be able to resend and those that arrive ahead of a gap, into buffers it
//! reuses: once traffic is steady, nothing allocates.

mod config;
mod frames;
mod handshake;
mod stats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use gamewire_proto::{ErrorCode, HEADER_LEN, RawFrame};

pub use config::Config;
pub use stats::Stats;

use frames::Frames;
use handshake::{Resends, ResponseFrames};

use crate::cookie::Cookie;
use crate::datagram::{
    Challenge, Connect, DATA_HEADER_LEN, DataHeader, DataView, DataWriter, Datagram, Disconnect,
    MAX_DATAGRAM, MAX_FRAME_PAYLOAD, RELIABLE_PREFIX_LEN, SessionToken,
};
use crate::reliable::{DatagramVerdict, Endpoint, Gone, RECEIVE_WINDOW, ReliableVerdict, RttEstimator};
use crate::seq::Seq;

/// How many DISCONNECTs a client that leaves sends, back to back: any of them may be lost (§10.4).
pub const GOODBYES: u8 = 3;

/// Room for reliable items and unreliable frames in a client's DATA (it never carries the nonce echo).
const DATA_ROOM: usize = MAX_DATAGRAM - DATA_HEADER_LEN;

/// The largest reliable item: the largest frame that fits in a RESPONSE, with its message id.
const MAX_ITEM: usize = RELIABLE_PREFIX_LEN + HEADER_LEN + MAX_FRAME_PAYLOAD;

/// Which channel a frame travels on (docs/protocol.md §10.5): the one type the whole workspace uses,
/// so that a frame's [`gamewire_proto::Encode::channel`] is what a client sends it on. HELLO, ATTACK,
/// CHAT and PING go reliable; a MOVE unreliable (the next one supersedes it).
pub use gamewire_proto::Channel;

/// Where a [`Client`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// CONNECT sent (and resent), waiting for the CHALLENGE.
    Connecting,
    /// RESPONSE sent (and resent), waiting for the first DATA of the session.
    Responding,
    /// In the session with this token: frames flow both ways.
    Connected(SessionToken),
    /// Over, for this reason. Only the DISCONNECTs of a client that left are still to be sent.
    Closed(Close),
}

impl State {
    /// Whether the session is up.
    pub fn is_connected(self) -> bool {
        matches!(self, State::Connected(_))
    }

    /// Whether the client is over.
    pub fn is_closed(self) -> bool {
        matches!(self, State::Closed(_))
    }
}

/// Why a [`Client`] closed: the end of its connection, as EOF and a last ERROR are on TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Close {
    /// The server sent DISCONNECT with the session's token (or, during the handshake, with the
    /// client's nonce: a refusal, such as SERVER_FULL). `code` is an ERROR code (section 4), 0 for
    /// none. It is final even if frames before it never arrived (§10.4).
    Disconnected {
        /// The ERROR code, as on the wire.
        code: u32,
    },
    /// No CHALLENGE, or no first DATA, within [`Config::handshake_timeout`] of asking for it.
    HandshakeTimeout,
    /// The server stopped answering during the session: no datagram from it for the idle timeout
    /// ([`Gone::Silent`]), or reliable frames sent and none acknowledged for as long
    /// ([`Gone::Unacknowledged`]).
    ServerGone(Gone),
    /// The caller left with [`Client::disconnect`].
    Left,
}

impl Close {
    /// The DISCONNECT's code as an [`ErrorCode`]: `None` for other reasons, for 0, and for codes this
    /// version does not know.
    pub fn error_code(self) -> Option<ErrorCode> {
        match self {
            Close::Disconnected { code } => ErrorCode::from_u32(code),
            _ => None,
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Disconnected { code } => match ErrorCode::from_u32(*code) {
                Some(error) => write!(f, "disconnected by the server: {}", error.name()),
                None => write!(f, "disconnected by the server (code {code})"),
            },
            Close::HandshakeTimeout => f.write_str("no answer to the handshake"),
            Close::ServerGone(Gone::Unacknowledged) => f.write_str("the server acknowledges nothing"),
            Close::ServerGone(_) => f.write_str("the server went silent"),
            Close::Left => f.write_str("left"),
        }
    }
}

/// What [`Client::receive`] hands to the caller, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The session started with this token: the first DATA echoing the client's nonce arrived. Its
    /// frames follow.
    Connected(SessionToken),
    /// A frame from the server: reliable ones once each and in message order, then the unreliable
    /// frames of the same DATA if it was the newest yet. The bytes are borrowed for the call only.
    Frame {
        /// The frame, whole.
        frame: RawFrame<'a>,
        /// The channel it came on.
        channel: Channel,
    },
    /// The server ended the session (or refused the handshake); nothing follows.
    Closed(Close),
}

/// Why [`Client::send`] refused a frame. Nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The bytes are not exactly one whole frame (12-byte header, then `data_length` bytes).
    #[error("not exactly one protocol frame")]
    NotOneFrame,
    /// The payload is over [`MAX_FRAME_PAYLOAD`]: a frame never spans two datagrams.
    #[error("frame payload of {len} bytes is over the limit of {MAX_FRAME_PAYLOAD}")]
    TooLarge {
        /// The payload's length.
        len: usize,
    },
    /// Too many reliable frames wait for an acknowledgement (the limits of
    /// [`reliable::Config`](crate::reliable::Config)): the server does not keep up, or is gone.
    #[error("too many reliable frames wait for an acknowledgement")]
    ReliableFull,
    /// Unreliable frames waiting for a datagram are at [`Config::max_unreliable_bytes`]: call
    /// [`Client::poll_transmit`].
    #[error("too many unreliable frames wait to be sent")]
    UnreliableFull,
    /// The client is closed.
    #[error("the client is closed")]
    Closed,
}

/// Why [`Client::new`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The HELLO is not one frame that fits a RESPONSE.
    #[error("unusable HELLO: {0}")]
    Hello(SendError),
    /// The operating system has no random bytes for the nonce; a guessable nonce would let an
    /// off-path attacker hand the client a session token.
    #[error("no random nonce: {0}")]
    Random(#[from] getrandom::Error),
}

/// Where the handshake or the session is.
#[derive(Debug)]
enum Phase {
    Connecting { resends: Resends },
    Responding { cookie: Cookie, resends: Resends },
    Connected { token: SessionToken },
    Closed(Close),
}

/// One client connection to a gamewire server over UDP, as a state machine without I/O.
///
/// # The calls
///
/// - [`new`](Self::new) with the server's address and the HELLO frame, which the RESPONSE carries as
///   reliable message 0.
/// - [`send`](Self::send) a frame on a channel, at any time: before the session, reliable frames join
///   the HELLO in the RESPONSE while they fit (the rest, and unreliable frames, wait for the session).
/// - After `new`, after `send`, after `receive`, after `disconnect`, and whenever
///   [`poll_timeout`](Self::poll_timeout) passes: call [`poll_transmit`](Self::poll_transmit) until
///   it returns `None`, sending each datagram to [`server`](Self::server).
/// - [`receive`](Self::receive) every datagram from the socket, whoever sent it: the client drops
///   what is not from the server or not for it, and hands over what is, as [`Event`]s.
/// - When [`poll_timeout`](Self::poll_timeout) passes: [`handle_timeout`](Self::handle_timeout)
///   (it may close the client), then `poll_transmit`.
/// - [`disconnect`](Self::disconnect) to leave; `poll_transmit` then gives the DISCONNECTs.
///
/// Every call takes `now` from one monotonic clock.
///
/// # Examples
///
/// A whole session against a server played by hand:
///
/// ```
/// use std::time::{Duration, Instant};
/// use gamewire_proto::{Packet, RawFrame, encode_frame_to_vec};
/// use gamewire_udp::client::{Channel, Client, Config, Event, State};
/// use gamewire_udp::cookie::Cookie;
/// use gamewire_udp::datagram::{Challenge, DataHeader, DataWriter, Datagram, MAX_DATAGRAM, SessionToken};
/// use gamewire_udp::seq::Seq;
///
/// let server = "192.0.2.1:7777".parse()?;
/// let mut now = Instant::now();
/// let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
/// let mut client = Client::new(server, &hello, Config::default(), now)?;
/// let mut out = [0; MAX_DATAGRAM];
///
/// // CONNECT: 1200 bytes, carrying the nonce.
/// let len = client.poll_transmit(now, &mut out).expect("CONNECT is due");
/// let Ok(Datagram::Connect(connect)) = Datagram::parse(&out[..len], 1024) else { panic!() };
/// assert!(client.poll_transmit(now, &mut out).is_none(), "the next one in 250 ms");
///
/// // The server's CHALLENGE (a real server makes the cookie with `cookie::Cookies`).
/// now += Duration::from_millis(20);
/// let cookie = Cookie::from_bytes([7; 20]);
/// let mut datagram = [0; MAX_DATAGRAM];
/// let len = Challenge { client_nonce: connect.client_nonce, cookie }.write_to(&mut datagram)?;
/// client.receive(now, server, &datagram[..len], |_| {});
///
/// // RESPONSE: the cookie echoed, the HELLO as reliable message 0.
/// let len = client.poll_transmit(now, &mut out).expect("RESPONSE is due");
/// let Ok(Datagram::Response(response)) = Datagram::parse(&out[..len], 1024) else { panic!() };
/// assert_eq!(response.cookie(), &cookie);
/// assert_eq!(response.reliable().next().unwrap().frame.packet(), Ok(Packet::Hello { name: "ada" }));
///
/// // The first DATA echoes the nonce: the client takes its token from it.
/// now += Duration::from_millis(20);
/// let token = SessionToken(0x5eed);
/// let header =
///     DataHeader { token, seq: Seq(0), ack: Seq(65535), ack_bits: 0, nonce_echo: Some(connect.client_nonce) };
/// let chat = encode_frame_to_vec(4, &Packet::Chat { text: "welcome" });
/// let mut writer = DataWriter::new(&mut datagram, &header)?;
/// writer.push_reliable(Seq(0), RawFrame::split_from(&chat).unwrap().0)?;
/// let len = writer.finish();
/// let mut log = Vec::new();
/// client.receive(now, server, &datagram[..len], |event| match event {
///     Event::Connected(token) => log.push(format!("connected {:#x}", token.0)),
///     Event::Frame { frame, channel } => log.push(format!("{channel:?} {:?}", frame.packet())),
///     other => log.push(format!("{other:?}")),
/// });
/// assert_eq!(log, ["connected 0x5eed", r#"Reliable Ok(Chat { text: "welcome" })"#]);
/// assert_eq!(client.state(), State::Connected(token));
///
/// // From now on frames go in DATAs with the token; reliable ids go on after the RESPONSE's.
/// let ping = encode_frame_to_vec(0, &Packet::Ping { payload: b"t=1" });
/// client.send(&ping, Channel::Reliable)?;
/// let len = client.poll_transmit(now, &mut out).expect("a DATA with the PING and the ack");
/// let Ok(Datagram::Data(data)) = Datagram::parse(&out[..len], 1024) else { panic!() };
/// assert_eq!((data.token(), data.nonce_echo(), data.ack()), (token, None, Seq(0)));
/// assert_eq!(data.reliable().next().unwrap().id, Seq(1));
///
/// // Leaving: three DISCONNECTs.
/// client.disconnect();
/// let mut goodbyes = 0;
/// while let Some(len) = client.poll_transmit(now, &mut out) {
///     assert!(matches!(Datagram::parse(&out[..len], 1024), Ok(Datagram::Disconnect(d)) if d.token == token.0));
///     goodbyes += 1;
/// }
/// assert_eq!(goodbyes, 3);
/// assert!(client.state().is_closed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Client {
    server: SocketAddr,
    nonce: u64,
    phase: Phase,
    config: Config,
    /// The RESPONSE's reliable frames, messages 0 to `response.count() - 1`.
    response: ResponseFrames,
    /// The session's reliability; its message ids are the wire's minus `response.count()`.
    endpoint: Endpoint<()>,
    frames: Frames,
    /// Unreliable frames back to back, waiting for a DATA.
    unreliable: Vec<u8>,
    /// The endpoint id after the newest reliable message sent at least once: an id before it in a
    /// datagram is a resend.
    next_first_send: Seq,
    /// DISCONNECTs still to send, with this token.
    goodbyes: u8,
    token: Option<SessionToken>,
    stats: Stats,
}

impl Client {
    /// A client that will connect to `server`, sending `hello` (a whole HELLO frame) as reliable
    /// message 0 of its RESPONSE. Picks the handshake's nonce from the operating system's CSPRNG; a
    /// CONNECT is due at once ([`poll_transmit`](Self::poll_transmit)).
    ///
    /// The frame is not checked to be a HELLO: the server answers anything else first with
    /// BAD_STATE, as on TCP, which a test may want.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Hello`] when `hello` is not exactly one frame of at most
    /// [`MAX_FRAME_PAYLOAD`] payload bytes; [`ConnectError::Random`] when there is no CSPRNG.
    pub fn new(
        server: SocketAddr,
        hello: &[u8],
        config: Config,
        now: Instant,
    ) -> Result<Client, ConnectError> {
        let hello = one_frame(hello).map_err(ConnectError::Hello)?;
        let nonce = getrandom::u64()?;
        let mut reliability = config.reliable.clone();
        reliability.max_message_size(MAX_ITEM);
        Ok(Client {
            server,
            nonce,
            phase: Phase::Connecting {
                resends: Resends::new(now, config.handshake_resend, config.handshake_timeout),
            },
            response: ResponseFrames::new(hello),
            endpoint: Endpoint::new(reliability, now),
            frames: Frames::default(),
            unreliable: Vec::new(),
            next_first_send: Seq(0),
            goodbyes: 0,
            token: None,
            stats: Stats::default(),
            config,
        })
    }

    /// The server's address: every datagram goes there, and only datagrams from there count.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Where the client stands.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Connecting { .. } => State::Connecting,
            Phase::Responding { .. } => State::Responding,
            Phase::Connected { token } => State::Connected(token),
            Phase::Closed(close) => State::Closed(close),
        }
    }

    /// The session token, once the session has started (it stays known after the client closes).
    pub fn token(&self) -> Option<SessionToken> {
        self.token
    }

    /// The round-trip time estimate of the session.
    pub fn rtt(&self) -> &RttEstimator {
        self.endpoint.rtt()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Queues `frame` (one whole frame: 12-byte header and payload) to go to the server on `channel`.
    /// Copies it, into a buffer reused from an acknowledged frame once traffic is steady; O(1) but for
    /// the copy. Call [`poll_transmit`](Self::poll_transmit) after.
    ///
    /// Before the session, reliable frames go in the RESPONSE after the HELLO while they fit; the
    /// others, and unreliable frames, go in the first DATAs. Reliable frames keep the order of the
    /// calls whatever datagram carries them.
    ///
    /// # Errors
    ///
    /// [`SendError::NotOneFrame`], [`SendError::TooLarge`] for bytes that cannot go as one frame;
    /// [`SendError::ReliableFull`], [`SendError::UnreliableFull`] when too much waits already;
    /// [`SendError::Closed`] once the client is closed.
    pub fn send(&mut self, frame: &[u8], channel: Channel) -> Result<(), SendError> {
        if matches!(self.phase, Phase::Closed(_)) {
            return Err(SendError::Closed);
        }
        let raw = one_frame(frame)?;
        match channel {
            Channel::Unreliable => {
                if self.unreliable.len() + frame.len() > self.config.max_unreliable_bytes {
                    return Err(SendError::UnreliableFull);
                }
                self.unreliable.extend_from_slice(frame);
                Ok(())
            }
            Channel::Reliable if self.response.push(raw) => Ok(()),
            Channel::Reliable => {
                self.release_acknowledged();
                match self.endpoint.queue((), RELIABLE_PREFIX_LEN + frame.len()) {
                    Ok(id) => {
                        self.frames.push_sent(id, frame);
                        Ok(())
                    }
                    Err(_) => Err(SendError::ReliableFull),
                }
            }
        }
    }

    /// The next datagram to send to [`server`](Self::server), written at the start of `buf`; returns
    /// its length, or `None` when nothing is to be sent now. Call it until `None` after
    /// [`new`](Self::new), [`send`](Self::send), [`receive`](Self::receive),
    /// [`handle_timeout`](Self::handle_timeout) and [`disconnect`](Self::disconnect). The datagram
    /// counts as sent. O(reliable frames in flight).
    ///
    /// Gives, in this order: the DISCONNECTs of a client that left; the CONNECT or RESPONSE when
    /// (re)sending is due; during the session, DATAs carrying reliable frames never sent or due again
    /// (oldest first), then unreliable frames in the room left, an acknowledgement owed, or a keepalive
    /// after 1 s of silence.
    #[must_use = "the datagram counts as sent"]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<usize> {
        let len = self.transmit(now, buf)?;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += len as u64;
        Some(len)
    }

    /// Handles `datagram`, received from `from` at `now`, and hands what it brings to `on_event`:
    /// [`Event::Connected`] when it starts the session, the server's frames in order, and
    /// [`Event::Closed`] when it ends it. Datagrams not from the server, malformed, or not for this
    /// client in its current state are dropped silently (and counted in [`Stats::dropped`]). Call
    /// [`poll_transmit`](Self::poll_transmit) after: acknowledgements may be owed, and the RESPONSE is
    /// due after a CHALLENGE.
    ///
    /// `on_event` cannot call the client (it is borrowed); collect what to answer and send it after.
    /// Frames are handed over from the datagram itself; only reliable frames that arrive ahead of a
    /// gap are copied, to wait for it.
    ///
    /// The client takes a CHALLENGE only with its nonce; its token only from a DATA echoing its nonce;
    /// after that, only DATAs with its token. A DISCONNECT counts with the token, or during the
    /// handshake with the nonce.
    pub fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        mut on_event: impl FnMut(Event<'_>),
    ) {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let used = from == self.server
            && match Datagram::parse(datagram, self.config.max_payload) {
                Ok(Datagram::Challenge(challenge)) => self.on_challenge(now, challenge),
                Ok(Datagram::Data(data)) => self.on_data(now, data, &mut on_event),
                Ok(Datagram::Disconnect(disconnect)) => self.on_disconnect(disconnect, &mut on_event),
                // A server never sends these, and malformed datagrams get no reply (§10.2).
                Ok(Datagram::Connect(_) | Datagram::Response(_)) | Err(_) => false,
            };
        if !used {
            self.stats.dropped += 1;
        }
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) and
    /// [`poll_transmit`](Self::poll_transmit) may have something to do: a handshake resend or
    /// deadline, a reliable resend, an acknowledgement, a keepalive, the idle timeout. `None` once
    /// closed. Frames queued since the last `poll_transmit` are not counted: poll after sending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Connecting { resends } | Phase::Responding { resends, .. } => Some(resends.timeout()),
            Phase::Connected { .. } => Some(self.endpoint.poll_timeout()),
            Phase::Closed(_) => None,
        }
    }

    /// Applies the timers at `now`: closes the client when the handshake step has waited
    /// [`Config::handshake_timeout`] or the server is gone (no datagram from it for the idle timeout).
    /// Returns the reason when it closed it just now. Resends are not sent here: call
    /// [`poll_transmit`](Self::poll_transmit) after.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Close> {
        let close = match &self.phase {
            Phase::Connecting { resends } | Phase::Responding { resends, .. } if resends.is_expired(now) => {
                Close::HandshakeTimeout
            }
            Phase::Connected { .. } => Close::ServerGone(self.endpoint.peer_gone(now)?),
            _ => return None,
        };
        self.close(close);
        Some(close)
    }

    /// Leaves: during the session, [`GOODBYES`] DISCONNECTs (the token, code 0) are due back to back
    /// from [`poll_transmit`](Self::poll_transmit); during the handshake there is no session to end
    /// and nothing is sent. The client is [closed](Close::Left) at once; nothing queued is sent.
    pub fn disconnect(&mut self) {
        match self.phase {
            Phase::Closed(_) => return,
            Phase::Connected { .. } => self.goodbyes = GOODBYES,
            Phase::Connecting { .. } | Phase::Responding { .. } => {}
        }
        self.close(Close::Left);
    }

    fn transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<usize> {
        if self.goodbyes > 0
            && let Some(token) = self.token
        {
            self.goodbyes -= 1;
            return Disconnect { token: token.0, code: 0 }.write_to(buf).ok();
        }
        match &mut self.phase {
            Phase::Connecting { resends } => {
                if !resends.is_due(now) {
                    return None;
                }
                if resends.on_sent(now) {
                    self.stats.handshake_resends += 1;
                }
                Connect { client_nonce: self.nonce }.write_to(buf).ok()
            }
            Phase::Responding { cookie, resends } => {
                if !resends.is_due(now) {
                    return None;
                }
                if resends.on_sent(now) {
                    self.stats.handshake_resends += 1;
                }
                self.response.write(buf, self.nonce, cookie)
            }
            Phase::Connected { token } => {
                let token = *token;
                self.transmit_data(now, token, buf)
            }
            Phase::Closed(_) => None,
        }
    }

    /// The next DATA of the session, if one is owed or unreliable frames wait.
    fn transmit_data(&mut self, now: Instant, token: SessionToken, buf: &mut [u8]) -> Option<usize> {
        let datagram = if self.unreliable.is_empty() {
            self.endpoint.poll_datagram(now, DATA_ROOM)?
        } else {
            self.endpoint.next_datagram(now, DATA_ROOM)
        };
        let header = DataHeader {
            token,
            seq: datagram.seq(),
            ack: datagram.ack(),
            ack_bits: datagram.ack_bits(),
            nonce_echo: None,
        };
        let mut writer = DataWriter::new(buf, &header).ok()?;
        let offset = self.response.count();
        for (id, ()) in datagram.messages() {
            if id.distance_from(self.next_first_send) >= 0 {
                self.next_first_send = id.next();
            } else {
                self.stats.reliable_resends += 1;
            }
            // The endpoint chose what fits DATA_ROOM, so neither can fail; were it to, the message
            // would simply be resent after its timeout.
            let written =
                self.frames.sent(id).map(|frame| writer.push_reliable(id.plus(u16::from(offset)), frame));
            debug_assert!(matches!(written, Some(Ok(()))), "message {id} could not be written: {written:?}");
        }
        let mut taken = 0;
        let mut rest = &self.unreliable[..];
        while let Some((frame, after)) = RawFrame::split_from(rest) {
            if writer.push_unreliable(frame).is_err() {
                break;
            }
            taken += rest.len() - after.len();
            rest = after;
        }
        self.unreliable.drain(..taken);
        Some(writer.finish())
    }

    fn on_challenge(&mut self, now: Instant, challenge: Challenge) -> bool {
        if !matches!(self.phase, Phase::Connecting { .. }) || challenge.client_nonce != self.nonce {
            return false;
        }
        // The RESPONSE is resent as first sent: what it carries is settled now.
        self.response.freeze();
        let resends = Resends::new(now, self.config.handshake_resend, self.config.handshake_timeout);
        self.phase = Phase::Responding { cookie: challenge.cookie, resends };
        true
    }

    fn on_data(&mut self, now: Instant, data: DataView<'_>, on_event: &mut impl FnMut(Event<'_>)) -> bool {
        match self.phase {
            Phase::Responding { .. } if data.nonce_echo() == Some(self.nonce) => {
                let token = data.token();
                self.phase = Phase::Connected { token };
                self.token = Some(token);
                // Any DATA of the session acknowledges the RESPONSE (§10.3, 5).
                self.response.release();
                on_event(Event::Connected(token));
            }
            Phase::Connected { token } if data.token() == token => {}
            _ => return false,
        }
        let verdict = self.endpoint.on_datagram(data.seq(), data.ack(), data.ack_bits(), now);
        if verdict == DatagramVerdict::Duplicate {
            self.stats.duplicates += 1;
            return true;
        }
        self.release_acknowledged();
        for item in data.reliable() {
            self.on_reliable(item.id, item.frame, on_event);
        }
        if verdict.accepts_unreliable() {
            for frame in data.unreliable() {
                on_event(Event::Frame { frame, channel: Channel::Unreliable });
            }
        } else {
            self.stats.stale_unreliable += data.unreliable().count() as u64;
        }
        true
    }

    /// One reliable item of an accepted DATA: delivers it and whatever it unblocks, in order.
    fn on_reliable(&mut self, id: Seq, frame: RawFrame<'_>, on_event: &mut impl FnMut(Event<'_>)) {
        let next = self.endpoint.next_expected_id();
        let ahead = id.distance_from(next);
        // A frame ahead of a gap is copied (the datagram's bytes go when this call returns); the next
        // expected one is delivered from the datagram itself.
        if ahead > 0 && ahead < RECEIVE_WINDOW as i32 {
            self.frames.hold(id, frame);
        }
        let delivery = self.endpoint.on_reliable(id, ());
        match delivery.verdict() {
            // An honest server never sends 256 ids ahead; such a frame is dropped, as duplicates are.
            ReliableVerdict::Duplicate | ReliableVerdict::BeyondWindow => self.stats.dropped_reliable += 1,
            ReliableVerdict::Delivered | ReliableVerdict::Buffered => {}
        }
        // The endpoint delivers `next`, `next + 1`, ... : the first is this frame, the rest were held.
        for (index, ()) in delivery.enumerate() {
            if index == 0 {
                on_event(Event::Frame { frame, channel: Channel::Reliable });
                continue;
            }
            let delivered = next.plus(index as u16);
            let Some(buffer) = self.frames.take_held(delivered) else {
                debug_assert!(false, "message {delivered} was delivered but not held");
                continue;
            };
            if let Some((held, _)) = RawFrame::split_from(&buffer) {
                on_event(Event::Frame { frame: held, channel: Channel::Reliable });
            }
            self.frames.recycle(buffer);
        }
    }

    fn on_disconnect(&mut self, disconnect: Disconnect, on_event: &mut impl FnMut(Event<'_>)) -> bool {
        let ours = match self.phase {
            // A refusal names the handshake by its nonce: there is no token yet.
            Phase::Connecting { .. } | Phase::Responding { .. } => disconnect.token == self.nonce,
            Phase::Connected { token } => disconnect.token == token.0,
            Phase::Closed(_) => false,
        };
        if !ours {
            return false;
        }
        let close = Close::Disconnected { code: disconnect.code };
        self.close(close);
        on_event(Event::Closed(close));
        true
    }

    /// Recycles the frames of reliable messages the server has acknowledged, up to the oldest one it
    /// has not.
    fn release_acknowledged(&mut self) {
        let unacked = self.endpoint.unacked_messages() as u16;
        let oldest = self.endpoint.next_message_id().plus(unacked.wrapping_neg());
        self.frames.release_sent_before(oldest);
    }

    fn close(&mut self, close: Close) {
        self.phase = Phase::Closed(close);
        // Nothing more is sent but the DISCONNECTs: the buffers can go.
        self.frames.clear();
        self.unreliable = Vec::new();
        self.response.release();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("state", &self.state())
            .field("endpoint", &self.endpoint)
            .field("unreliable_bytes", &self.unreliable.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// `bytes` as one whole frame that fits a datagram.
fn one_frame(bytes: &[u8]) -> Result<RawFrame<'_>, SendError> {
    match RawFrame::split_from(bytes) {
        Some((frame, [])) => {
            let len = frame.payload().len();
            if len > MAX_FRAME_PAYLOAD {
                return Err(SendError::TooLarge { len });
            }
            Ok(frame)
        }
        _ => Err(SendError::NotOneFrame),
    }
}
