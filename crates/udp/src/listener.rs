//! The server side of the UDP transport on one socket, sans-IO: handshakes, sessions, datagrams out.
//!
//! A [`Listener`] turns the datagrams one UDP socket receives into session events and frames, and
//! the frames the game sends into datagrams, following `docs/protocol.md` §10: the stateless
//! handshake of §10.3, the sessions of §10.4, the channels of §10.5 (one
//! [`reliable::Endpoint`](crate::reliable::Endpoint) per session) and the limits of §10.7. It opens no
//! socket and reads no clock: every call takes `now`, and bytes go in and out through the caller's
//! buffers, so the I/O layer (one listener per worker socket) batches system calls as it likes and
//! the tests drive it over simulated links.
//!
//! Submodules: [`ListenerConfig`] (config), [`Inbox`] and [`Event`] (what a call delivers),
//! [`Transmit`] (one datagram out, as iovec pieces), the per-session state (session) and counters
//! ([`ListenerStats`]).

mod config;
mod inbox;
mod session;
mod stats;
mod transmit;

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, HEADER_LEN, Packet, encode_frame};

pub use config::ListenerConfig;
pub use inbox::{CloseReason, Event, Events, Inbox};
pub use stats::ListenerStats;
pub use transmit::{Segments, Transmit};

use session::{Session, Violation};
use transmit::OWN_ERROR_MAX;

use crate::cookie::{CookieKey, Cookies};
use crate::datagram::{
    CHALLENGE_LEN, Challenge, Connect, DATA_HEADER_MAX_LEN, DataHeader, DataView, Datagram, Disconnect,
    MAX_DATAGRAM, MAX_FRAME_PAYLOAD, ResponseView, SessionToken,
};
use crate::seq::Seq;

/// The largest frame a session carries, header included: one that fits a DATA as a reliable item
/// even with the nonce echo (`MAX_FRAME_PAYLOAD`, 1154 payload bytes).
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_FRAME_PAYLOAD;

/// How long an ended session is remembered (its address, token and code only) to answer its
/// client's datagrams with DISCONNECT: the TCP linger (docs/protocol.md §10.4).
pub const LINGER: Duration = Duration::from_secs(2);

/// Most small replies (CHALLENGE, refusal and linger DISCONNECT) waiting to be sent; beyond, a reply
/// is dropped. Each answers one datagram received, so the queue only fills when the caller receives
/// far faster than it transmits, as in a flood; a client resends anyway.
const MAX_PENDING_REPLIES: usize = 1024;

/// A session's handle, from [`Event::Opened`]: valid until the session ends, never reused for
/// another session.
///
/// # Examples
///
/// ```
/// use gamewire_udp::listener::SessionId;
///
/// fn table_slot(session: SessionId) -> usize {
///     session.index() // small and dense: index the caller's own per-session tables with it
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    index: u32,
    generation: u32,
}

impl SessionId {
    /// A small number, dense from 0, that a later session may reuse once this one ended: for the
    /// caller's tables. The whole id tells sessions apart.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {}.{}", self.index, self.generation)
    }
}

/// Why [`Listener::send`] did not queue a frame; the frame comes back with it.
///
/// # Examples
///
/// ```
/// use gamewire_udp::listener::SendError;
///
/// let refused: SendError<Vec<u8>> = SendError::UnknownSession(vec![1, 2]);
/// assert_eq!(refused.to_string(), "no such session: it ended, or never was");
/// assert_eq!(refused.into_frame(), vec![1, 2]);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError<F> {
    /// The frame would take the session's queue over the hard limit (or one already did): the
    /// client does not keep up. End the session with [`ErrorCode::SlowConsumer`] ([`Listener::end`]).
    SlowConsumer(F),
    /// The session ended (its `Closed` event came, or the caller ended it) or never existed.
    UnknownSession(F),
    /// The frame is over [`MAX_FRAME_LEN`], or shorter than a frame header: no datagram carries it.
    TooLarge(F),
}

impl<F> SendError<F> {
    /// The frame that was not queued.
    pub fn into_frame(self) -> F {
        match self {
            SendError::SlowConsumer(frame)
            | SendError::UnknownSession(frame)
            | SendError::TooLarge(frame) => frame,
        }
    }
}

// By hand: the frame is not what the error is about, and need not be `Debug`.
impl<F> fmt::Debug for SendError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SendError::SlowConsumer(_) => "SlowConsumer",
            SendError::UnknownSession(_) => "UnknownSession",
            SendError::TooLarge(_) => "TooLarge",
        };
        f.debug_tuple(name).finish_non_exhaustive()
    }
}

impl<F> fmt::Display for SendError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::SlowConsumer(_) => "the session's send queue is over its hard limit",
            SendError::UnknownSession(_) => "no such session: it ended, or never was",
            SendError::TooLarge(_) => "frame does not fit a datagram",
        })
    }
}

impl<F> std::error::Error for SendError<F> {}

/// The session named does not exist: it ended, or never was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no such session: {0}")]
pub struct UnknownSession(pub SessionId);

/// What is remembered of an address: its live session, and an ended one that lingers. Both can be
/// there at once (a client that started over within the linger), which is why one lookup by address
/// finds both.
#[derive(Default)]
struct Peer {
    session: Option<u32>,
    linger: Option<Linger>,
}

#[derive(Clone, Copy)]
struct Linger {
    token: SessionToken,
    /// The handshake's nonce: a client that never got the session's first DATA has no token and
    /// still sends its RESPONSE; it is told with the nonce, as a refused handshake is.
    nonce: u64,
    code: u32,
}

/// A small datagram owed to an address: CHALLENGE or DISCONNECT.
struct Reply {
    to: SocketAddr,
    bytes: [u8; CHALLENGE_LEN],
    len: usize,
}

/// The ERROR frame of a session's last DATA.
enum ErrorFrame<F> {
    /// Encoded by the listener (it ended the session itself, or [`Listener::end`]).
    Own { bytes: [u8; OWN_ERROR_MAX], len: usize },
    /// Given by the caller ([`Listener::end_with_frame`]).
    Given(F),
}

/// A session ended by the server: its last DATA (while `error` is there), then its DISCONNECT.
struct Ending<F> {
    to: SocketAddr,
    header: DataHeader,
    error_id: Seq,
    error: Option<ErrorFrame<F>>,
    code: u32,
}

struct Slot<F> {
    generation: u32,
    session: Option<Session<F>>,
}

/// The server side of the UDP transport for one socket: handshakes, sessions, and the datagrams to
/// send, with no I/O (module docs above; the rules are `docs/protocol.md` §10).
///
/// `F` is an outgoing frame: a whole protocol v1 frame (12-byte header and payload), shared between
/// its recipients and cheap to clone (the server uses refcounted pool slices; `Arc<[u8]>` or
/// `Vec<u8>` work too). A datagram to send holds clones of its frames, never a copy of their bytes.
///
/// # The calls
///
/// - **Receiving**: for each datagram the socket gives, [`receive`](Self::receive) with its source
///   address and an [`Inbox`], then walk [`Inbox::events`]: sessions opened, frames (pointing into the
///   datagram, which the caller keeps until it moves on), sessions closed. The listener is free while
///   the caller does so: handling a frame may [`send`](Self::send) to any session.
/// - **Sending**: [`send`](Self::send) queues a frame for a session, reliable or not;
///   [`end`](Self::end) ends a session with an ERROR.
/// - **Transmitting**: after any of the calls above and after [`handle_timeout`](Self::handle_timeout),
///   call [`poll_transmit`](Self::poll_transmit) (or [`poll_transmits`](Self::poll_transmits) for a
///   batch) until it has nothing more, and send each datagram it fills to its destination.
/// - **Timers**: wake at [`poll_timeout`](Self::poll_timeout) and call
///   [`handle_timeout`](Self::handle_timeout), then transmit.
///
/// # Costs
///
/// A datagram that matches no session costs a parse and one hash lookup; a CONNECT or RESPONSE one
/// SipHash more (two with the previous cookie key). At steady state nothing allocates, per frame or
/// per datagram: queues keep their capacity, a [`Transmit`] has room for any datagram, and the only
/// copies are of reliable frames that arrived out of order (into buffers the [`Inbox`] recycles).
/// Creating a session allocates its queues.
///
/// # Examples
///
/// A handshake by hand: CONNECT is answered with a CHALLENGE, the RESPONSE opens a session whose
/// first frame is its HELLO, and the game's WELCOME goes out as reliable message 0.
///
/// ```
/// use std::time::Instant;
/// use gamewire_proto::{Packet, RawFrame, encode_frame_to_vec};
/// use gamewire_udp::datagram::{Connect, Datagram, MAX_DATAGRAM, ReliableItem, write_response};
/// use gamewire_udp::listener::{Event, Inbox, Listener, ListenerConfig, Transmit};
/// use gamewire_udp::seq::Seq;
///
/// let now = Instant::now();
/// let mut listener = Listener::<Vec<u8>>::new(ListenerConfig::default(), now)?;
/// let (mut inbox, mut transmit) = (Inbox::new(), Transmit::new());
/// let client = "192.0.2.1:5000".parse().unwrap();
/// let mut buf = [0; MAX_DATAGRAM];
///
/// let len = Connect { client_nonce: 7 }.write_to(&mut buf)?;
/// listener.receive(now, client, &buf[..len], &mut inbox);
/// assert!(listener.poll_transmit(now, &mut transmit));
/// let len = transmit.copy_to(&mut buf);
/// let Ok(Datagram::Challenge(challenge)) = Datagram::parse(&buf[..len], 1024) else { panic!() };
///
/// let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
/// let (frame, _) = RawFrame::split_from(&hello).unwrap();
/// let len = write_response(&mut buf, 7, &challenge.cookie, &[ReliableItem { id: Seq(0), frame }])?;
/// listener.receive(now, client, &buf[..len], &mut inbox);
/// let mut session = None;
/// for event in inbox.events(&buf[..len]) {
///     match event {
///         Event::Opened { session: opened, .. } => session = Some(opened),
///         Event::Frame { frame, .. } => assert_eq!(frame.packet(), Ok(Packet::Hello { name: "ada" })),
///         Event::Closed { .. } => unreachable!(),
///     }
/// }
///
/// let welcome = encode_frame_to_vec(1, &Packet::Chat { text: "welcome" }); // a WELCOME, say
/// listener.send(session.unwrap(), welcome, true)?;
/// assert!(listener.poll_transmit(now, &mut transmit));
/// let len = transmit.copy_to(&mut buf);
/// let Ok(Datagram::Data(data)) = Datagram::parse(&buf[..len], 1024) else { panic!() };
/// assert_eq!(data.nonce_echo(), Some(7), "the nonce echo until the client's first DATA");
/// assert_eq!(data.reliable().next().unwrap().id, Seq(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listener<F> {
    config: ListenerConfig,
    /// The reliability settings of every session: the caller's, with the listener's frame size and
    /// idle timeout.
    session_config: crate::reliable::Config,
    cookies: Cookies,
    /// The instant cookies count their seconds from: the listener's creation.
    epoch: Instant,
    next_rotation: Instant,
    /// The latest `now` given to any call: the time of calls that take none (`send`, `end`).
    clock: Instant,
    slots: Vec<Slot<F>>,
    free: Vec<u32>,
    peers: HashMap<SocketAddr, Peer>,
    /// Sessions per IP address, for the IPs the per-IP cap applies to.
    per_ip: HashMap<IpAddr, usize>,
    sessions: usize,
    /// Sessions that may have a datagram to send, served round-robin.
    ready: VecDeque<SessionId>,
    /// Session deadlines: (when, slot index, generation). An entry is live only if it is its
    /// session's `scheduled` one; the others are skipped when they come up.
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Lingering ended sessions, oldest first (all linger for [`LINGER`]): until when, address, token.
    lingers: VecDeque<(Instant, SocketAddr, SessionToken)>,
    endings: VecDeque<Ending<F>>,
    replies: VecDeque<Reply>,
    /// Alternates the sessions' turn with the small replies', so that neither starves the other.
    sessions_turn: bool,
    stats: ListenerStats,
}

impl<F: AsRef<[u8]> + Clone> Listener<F> {
    /// A listener with a fresh cookie secret from the operating system's CSPRNG; `now` starts its
    /// clocks.
    ///
    /// # Errors
    ///
    /// When the operating system has no random bytes to give: a server must not run with a
    /// guessable secret.
    pub fn new(config: ListenerConfig, now: Instant) -> Result<Listener<F>, getrandom::Error> {
        Ok(Listener::with_cookies(config, Cookies::random()?, now))
    }

    /// A listener checking cookies with `cookies`: for tests, and for workers that share keys.
    /// The listener replaces the key every [`ListenerConfig::cookie_rotation`] with a fresh random one.
    pub fn with_cookies(config: ListenerConfig, cookies: Cookies, now: Instant) -> Listener<F> {
        let mut session_config = config.reliability.clone();
        session_config.max_message_size(MAX_DATAGRAM - DATA_HEADER_MAX_LEN).idle_timeout(config.idle_timeout);
        Listener {
            session_config,
            cookies,
            epoch: now,
            next_rotation: now + config.cookie_rotation,
            clock: now,
            slots: Vec::new(),
            free: Vec::new(),
            peers: HashMap::new(),
            per_ip: HashMap::new(),
            sessions: 0,
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            lingers: VecDeque::new(),
            endings: VecDeque::new(),
            replies: VecDeque::with_capacity(64),
            sessions_turn: false,
            stats: ListenerStats::default(),
            config,
        }
    }

    /// Handles one datagram received from `from`, and fills `inbox` (cleared first) with what it
    /// caused: a session opened with its first frames, frames of a session, sessions closed. Then
    /// walk [`Inbox::events`] with the same `datagram`, and [`poll_transmit`](Self::poll_transmit).
    ///
    /// What does not parse, or matches no session, is dropped and counted ([`stats`](Self::stats));
    /// the only replies to an address without a session are a CHALLENGE (30 bytes) or a DISCONNECT
    /// (14 bytes) to a CONNECT (1200 bytes), so the listener never sends an unproved address more
    /// than it received (§10.3). Never panics, whatever the bytes.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], inbox: &mut Inbox) {
        inbox.clear();
        self.clock = now;
        self.stats.datagrams_received += 1;
        let from = peer_key(from);
        match Datagram::parse(datagram, self.config.parse_limit()) {
            Ok(Datagram::Connect(connect)) => self.on_connect(now, from, connect),
            Ok(Datagram::Response(response)) => self.on_response(now, from, &response, datagram, inbox),
            Ok(Datagram::Data(data)) => self.on_data(now, from, &data, datagram, inbox),
            Ok(Datagram::Disconnect(bye)) => self.on_disconnect(from, bye, inbox),
            // Only a server sends CHALLENGE: one received is not for us.
            Ok(Datagram::Challenge(_)) | Err(_) => self.stats.dropped_malformed += 1,
        }
    }

    /// CONNECT: a CHALLENGE, or a refusal when there is no room; nothing is remembered.
    fn on_connect(&mut self, now: Instant, from: SocketAddr, connect: Connect) {
        let nonce = connect.client_nonce;
        // A client that has a session here starts over: its new session takes the old one's place.
        let restarting = self.peers.get(&from).is_some_and(|peer| peer.session.is_some());
        if !restarting && self.is_full_for(from.ip()) {
            self.stats.refused_full += 1;
            self.reply(from, Disconnect { token: nonce, code: ErrorCode::ServerFull.code() });
            return;
        }
        let cookie = self.cookies.issue(self.cookie_time(now), from, nonce);
        self.stats.challenges += 1;
        self.reply(from, Challenge { client_nonce: nonce, cookie });
    }

    /// RESPONSE: the rules of §10.3 step 4, in their order.
    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        response: &ResponseView<'_>,
        datagram: &[u8],
        inbox: &mut Inbox,
    ) {
        let nonce = response.client_nonce();
        if self.cookies.verify(self.cookie_time(now), from, nonce, response.cookie()).is_err() {
            self.stats.dropped_cookie += 1;
            return;
        }
        if response.reliable().next().is_none_or(|first| first.id != Seq(0)) {
            self.stats.dropped_malformed += 1;
            return;
        }
        let linger = self.peers.get(&from).and_then(|peer| peer.linger);
        if let Some(linger) = linger.filter(|linger| linger.nonce == nonce) {
            // The handshake of a session that ended while its client still waited for its first
            // DATA (§10.4): it ended, and it does not start again. Checked first, so that a late copy
            // of that RESPONSE cannot pass for a restart and end a newer session of the address.
            self.stats.linger_replies += 1;
            self.reply(from, Disconnect { token: nonce, code: linger.code });
            return;
        }
        if let Some(index) = self.peers.get(&from).and_then(|peer| peer.session) {
            let id = self.id_at(index);
            let Some(session) = self.session_mut(id) else { return };
            if session.nonce == nonce {
                // The client has not seen our first DATA: answer with one DATA carrying what it
                // has not acknowledged, the WELCOME first, and never a second session.
                let budget = session.budget();
                session.endpoint.expedite_resends(now, budget);
                session.answer_owed = true;
                self.stats.resent_responses += 1;
                self.mark_ready(id);
                return;
            }
            // The client started over on the same port: the old session ends as on EOF.
            self.close(id, inbox, CloseReason::Restarted);
        }
        if self.is_full_for(from.ip()) {
            self.stats.refused_full += 1;
            self.reply(from, Disconnect { token: nonce, code: ErrorCode::ServerFull.code() });
            return;
        }
        let Ok(token) = SessionToken::random() else {
            // No randomness: refuse rather than hand out a guessable token. The client retries.
            self.stats.dropped_no_token += 1;
            return;
        };
        let id = self.create(now, from, token, nonce);
        inbox.opened(id, from);
        let Some(session) = self.session_mut(id) else { return };
        for item in response.reliable() {
            if let Err(Violation(code)) = session.receive_reliable(id, item.id, item.frame, datagram, inbox) {
                self.fail(id, code, inbox);
                return;
            }
        }
        self.reschedule(id);
    }

    /// DATA: a session's frames, or a lingering session's client to remind.
    fn on_data(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &DataView<'_>,
        datagram: &[u8],
        inbox: &mut Inbox,
    ) {
        let Some(peer) = self.peers.get(&from) else {
            self.stats.dropped_unmatched += 1;
            return;
        };
        let (live, linger) = (peer.session, peer.linger);
        let id = live.map(|index| self.id_at(index));
        let Some(id) = id.filter(|&id| self.session(id).is_some_and(|session| session.token == data.token()))
        else {
            self.answer_linger(from, data.token().0, linger);
            return;
        };
        if data.nonce_echo().is_some() {
            // Only the server echoes the nonce (§10.4).
            self.stats.dropped_malformed += 1;
            return;
        }
        let soft_limit = self.config.send_soft_limit;
        let Some(session) = self.session_mut(id) else { return };
        if let Err(Violation(code)) = session.receive_data(id, data, datagram, now, inbox) {
            self.fail(id, code, inbox);
            return;
        }
        // Acknowledgements may have freed room in the window and under the limits.
        session.update_soft_limit(now, soft_limit);
        let backlog = session.has_backlog();
        if backlog {
            self.mark_ready(id);
        } else {
            self.reschedule(id);
        }
    }

    /// DISCONNECT: the client leaves (EOF), or a lingering session's client is reminded.
    fn on_disconnect(&mut self, from: SocketAddr, bye: Disconnect, inbox: &mut Inbox) {
        let Some(peer) = self.peers.get(&from) else {
            self.stats.dropped_unmatched += 1;
            return;
        };
        let (live, linger) = (peer.session, peer.linger);
        let id = live.map(|index| self.id_at(index));
        match id.filter(|&id| self.session(id).is_some_and(|session| session.token.0 == bye.token)) {
            Some(id) => self.close(id, inbox, CloseReason::Disconnected),
            None => self.answer_linger(from, bye.token, linger),
        }
    }

    /// Answers a datagram carrying `token` from `from` with the DISCONNECT of the session that
    /// lingers there, if the token is its; drops it otherwise. One DISCONNECT (14 bytes) per
    /// datagram received (at least 14), so never more bytes than received.
    fn answer_linger(&mut self, from: SocketAddr, token: u64, linger: Option<Linger>) {
        match linger.filter(|linger| linger.token.0 == token) {
            Some(linger) => {
                self.stats.linger_replies += 1;
                self.reply(from, Disconnect { token, code: linger.code });
            }
            None => self.stats.dropped_unmatched += 1,
        }
    }

    /// Queues a frame for `session`: reliable (resent until acknowledged, delivered in order) or
    /// unreliable (in the next datagram to the session only, never resent; past
    /// [`ListenerConfig::max_unreliable_frames`] waiting, the oldest is dropped). Call
    /// [`poll_transmit`](Self::poll_transmit) afterwards. O(1), allocates nothing at steady state.
    ///
    /// Reliable frames count against the send limits until acknowledged; over the soft limit for the
    /// write deadline, [`handle_timeout`](Self::handle_timeout) ends the session with SLOW_CONSUMER
    /// (the clock starts at the time of the listener's latest call).
    ///
    /// # Errors
    ///
    /// [`SendError::SlowConsumer`] when the frame would take the session over the hard limit (the
    /// caller ends it: [`end`](Self::end) with [`ErrorCode::SlowConsumer`]);
    /// [`SendError::UnknownSession`] when it ended; [`SendError::TooLarge`] for a frame no datagram
    /// carries. The frame comes back in the error.
    pub fn send(&mut self, session: SessionId, frame: F, reliable: bool) -> Result<(), SendError<F>> {
        let len = frame.as_ref().len();
        if !(HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            return Err(SendError::TooLarge(frame));
        }
        let (hard_limit, soft_limit, cap) =
            (self.config.send_hard_limit, self.config.send_soft_limit, self.config.max_unreliable_frames);
        let now = self.clock;
        let Some(state) = self.session_mut(session) else {
            return Err(SendError::UnknownSession(frame));
        };
        if reliable {
            if state.refused || state.queued_bytes() + Session::<F>::cost(len) > hard_limit {
                state.refused = true;
                return Err(SendError::SlowConsumer(frame));
            }
            state.queue_reliable(frame);
            state.update_soft_limit(now, soft_limit);
        } else {
            state.queue_unreliable(frame, cap);
        }
        self.mark_ready(session);
        Ok(())
    }

    /// Ends `session` with the ERROR `code` (any fatal code, or RATE_LIMITED for sustained abuse):
    /// frames queued and not sent are dropped, one last DATA carries an ERROR frame (header
    /// `player_id` as set by [`set_player_id`](Self::set_player_id), 0 before; message: the code's
    /// name) as the next reliable message, then DISCONNECT with `code`; the address and token linger
    /// for [`LINGER`], answered with that DISCONNECT (docs/protocol.md §10.4). No `Closed` event
    /// follows: the caller knows. Call [`poll_transmit`](Self::poll_transmit) afterwards.
    ///
    /// # Errors
    ///
    /// [`UnknownSession`] when the session already ended.
    pub fn end(&mut self, session: SessionId, code: ErrorCode) -> Result<(), UnknownSession> {
        let player_id = self.session(session).ok_or(UnknownSession(session))?.player_id;
        self.finish(session, code, own_error(player_id, code))
    }

    /// As [`end`](Self::end), with the ERROR frame the caller encoded (the one TCP clients get, with
    /// its text), sent as is. A frame over [`MAX_FRAME_LEN`] is replaced by the listener's own.
    ///
    /// # Errors
    ///
    /// [`UnknownSession`] when the session already ended.
    pub fn end_with_frame(
        &mut self,
        session: SessionId,
        code: ErrorCode,
        error: F,
    ) -> Result<(), UnknownSession> {
        let player_id = self.session(session).ok_or(UnknownSession(session))?.player_id;
        let len = error.as_ref().len();
        let error = if (HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            ErrorFrame::Given(error)
        } else {
            own_error(player_id, code)
        };
        self.finish(session, code, error)
    }

    /// Sets the header `player_id` of the ERROR frame the listener encodes when it ends `session`
    /// itself (TIMEOUT, SLOW_CONSUMER, MALFORMED) or through [`end`](Self::end): the player's id, once
    /// the game gave it one (protocol v1: the WELCOME's header id). 0 until then, as protocol v1 wants
    /// before WELCOME.
    ///
    /// # Errors
    ///
    /// [`UnknownSession`] when the session already ended.
    pub fn set_player_id(&mut self, session: SessionId, player_id: u32) -> Result<(), UnknownSession> {
        self.session_mut(session).ok_or(UnknownSession(session))?.player_id = player_id;
        Ok(())
    }

    /// Fills `transmit` with the next datagram to send and returns `true`, or returns `false` when
    /// nothing is to be sent now. Call it until `false` after every other call. Every datagram it
    /// fills counts as sent: send it (or lose it, as the network may).
    ///
    /// Serves, turn about, the small datagrams owed (a session's last DATA and its DISCONNECT,
    /// CHALLENGEs, refusals, linger DISCONNECTs) and the sessions, round-robin, one DATA per session per
    /// turn, so that a busy session does not starve the others. A session's DATA packs reliable items
    /// first (resends that are due, oldest first, then new messages in order), then its waiting
    /// unreliable frames, up to [`MAX_DATAGRAM`] bytes; a session with more goes to the back of the
    /// queue for another.
    pub fn poll_transmit(&mut self, now: Instant, transmit: &mut Transmit<F>) -> bool {
        self.clock = now;
        let sessions_first = self.sessions_turn;
        self.sessions_turn = !self.sessions_turn;
        let mut sent = false;
        for sessions in [sessions_first, !sessions_first] {
            sent =
                if sessions { self.transmit_session(now, transmit) } else { self.transmit_small(transmit) };
            if sent {
                break;
            }
        }
        if sent {
            self.stats.datagrams_sent += 1;
        }
        sent
    }

    /// Fills up to `transmits.len()` datagrams (64 fit one `sendmmsg`) by calling
    /// [`poll_transmit`](Self::poll_transmit); returns how many, in order. Fewer than
    /// `transmits.len()` means nothing more is to be sent now.
    pub fn poll_transmits(&mut self, now: Instant, transmits: &mut [Transmit<F>]) -> usize {
        let mut filled = 0;
        for transmit in transmits.iter_mut() {
            if !self.poll_transmit(now, transmit) {
                break;
            }
            filled += 1;
        }
        filled
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) may have a datagram: `false` means it has none.
    /// (`true` may still find none: a session woken by a timer may owe nothing after all.)
    pub fn has_transmit(&self) -> bool {
        !self.endings.is_empty() || !self.replies.is_empty() || !self.ready.is_empty()
    }

    fn transmit_small(&mut self, transmit: &mut Transmit<F>) -> bool {
        if let Some(ending) = self.endings.front_mut() {
            match ending.error.take() {
                Some(error) => {
                    let header = ending.header;
                    transmit.start(ending.to, |buf| header.write_to(1, buf).unwrap_or_default());
                    match error {
                        ErrorFrame::Own { bytes, len } => {
                            transmit.push_own_error(ending.error_id, &bytes[..len])
                        }
                        ErrorFrame::Given(frame) => transmit.push_reliable(ending.error_id, frame),
                    }
                }
                None => {
                    let bye = Disconnect { token: ending.header.token.0, code: ending.code };
                    transmit.start(ending.to, |buf| bye.write_to(buf).unwrap_or_default());
                    self.endings.pop_front();
                }
            }
            return true;
        }
        if let Some(reply) = self.replies.pop_front() {
            transmit.start(reply.to, |buf| {
                buf[..reply.len].copy_from_slice(&reply.bytes[..reply.len]);
                reply.len
            });
            return true;
        }
        false
    }

    fn transmit_session(&mut self, now: Instant, transmit: &mut Transmit<F>) -> bool {
        while let Some(id) = self.ready.pop_front() {
            let Some(session) = self.session_mut(id) else { continue };
            session.ready = false;
            if session.poll_transmit(now, transmit) {
                // Back of the queue: it may have more, after every other session had its turn.
                self.mark_ready(id);
                return true;
            }
            self.reschedule(id);
        }
        false
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work: a session's
    /// resend, owed ack, keepalive, idle timeout or write deadline, a linger's end, or the cookie
    /// secret's replacement. May be early (a deadline that moved later), never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let session = self.timers.peek().map(|Reverse((at, ..))| *at);
        let linger = self.lingers.front().map(|&(until, ..)| until);
        [session, linger, Some(self.next_rotation)].into_iter().flatten().min()
    }

    /// Handles every deadline reached at `now`, and fills `inbox` (cleared first) with the sessions
    /// it ended (TIMEOUT, SLOW_CONSUMER): each is sent its last DATA and DISCONNECT, and lingers.
    /// Sessions that owe a datagram (a resend, an ack, a keepalive) are queued for
    /// [`poll_transmit`](Self::poll_transmit): call it afterwards. Lingers that ran out are
    /// forgotten, and the cookie secret is replaced when due.
    pub fn handle_timeout(&mut self, now: Instant, inbox: &mut Inbox) {
        inbox.clear();
        self.clock = now;
        if now >= self.next_rotation {
            // On failure the current key stays: better an old secret than a guessable one.
            if let Ok(key) = CookieKey::random() {
                self.cookies.rotate(key);
            }
            self.next_rotation = now + self.config.cookie_rotation;
        }
        while let Some(&(until, addr, token)) = self.lingers.front() {
            if until > now {
                break;
            }
            self.lingers.pop_front();
            if let Entry::Occupied(mut peer) = self.peers.entry(addr) {
                // A newer session of this address may linger in its place: only ours goes.
                if peer.get().linger.is_some_and(|linger| linger.token == token) {
                    peer.get_mut().linger = None;
                    if peer.get().session.is_none() {
                        peer.remove();
                    }
                }
            }
        }
        let (idle, write_deadline) = (self.config.idle_timeout, self.config.write_deadline);
        while let Some(&Reverse((at, index, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = SessionId { index, generation };
            let Some(session) = self.session_mut(id).filter(|session| session.scheduled == Some(at)) else {
                continue;
            };
            session.scheduled = None;
            if let Some(code) = session.expired(now, idle, write_deadline) {
                self.fail(id, code, inbox);
            } else if session.endpoint.poll_timeout() <= now {
                // Something is due: `poll_transmit` sends it and sets the next deadline.
                self.mark_ready(id);
            } else {
                self.reschedule(id);
            }
        }
    }

    /// The settings.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions
    }

    /// The open sessions, in no particular order: to end them all at shutdown, say.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.session.is_some())
            .map(|(index, slot)| SessionId { index: index as u32, generation: slot.generation })
    }

    /// The client address of `session`, if it is open.
    pub fn peer(&self, session: SessionId) -> Option<SocketAddr> {
        self.session(session).map(|session| session.peer)
    }

    /// Bytes of `session`'s reliable frames counted against the send limits (queued and not
    /// acknowledged, with 32 bytes of bookkeeping each), if it is open.
    pub fn queued_bytes(&self, session: SessionId) -> Option<usize> {
        self.session(session).map(Session::queued_bytes)
    }

    /// The round-trip time estimate of `session`, if it is open.
    pub fn rtt(&self, session: SessionId) -> Option<&crate::reliable::RttEstimator> {
        self.session(session).map(|session| session.endpoint.rtt())
    }

    // --- sessions -----------------------------------------------------------------------------

    fn session(&self, id: SessionId) -> Option<&Session<F>> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation).then_some(slot.session.as_ref()).flatten()
    }

    fn session_mut(&mut self, id: SessionId) -> Option<&mut Session<F>> {
        let slot = self.slots.get_mut(id.index as usize)?;
        (slot.generation == id.generation).then_some(slot.session.as_mut()).flatten()
    }

    /// The id of the session in slot `index` now.
    fn id_at(&self, index: u32) -> SessionId {
        let generation = self.slots.get(index as usize).map_or(0, |slot| slot.generation);
        SessionId { index, generation }
    }

    /// Whether a new session from `ip` would be refused: the listener is full, or `ip` at its cap.
    fn is_full_for(&self, ip: IpAddr) -> bool {
        let capped = self
            .config
            .per_ip_cap(ip)
            .is_some_and(|cap| self.per_ip.get(&ip.to_canonical()).copied().unwrap_or(0) >= cap);
        self.sessions >= self.config.max_sessions || capped
    }

    fn create(&mut self, now: Instant, from: SocketAddr, token: SessionToken, nonce: u64) -> SessionId {
        let session = Session::new(from, token, nonce, self.session_config.clone(), now);
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize].session = Some(session);
                index
            }
            None => {
                self.slots.push(Slot { generation: 0, session: Some(session) });
                (self.slots.len() - 1) as u32
            }
        };
        self.peers.entry(from).or_default().session = Some(index);
        if self.config.per_ip_cap(from.ip()).is_some() {
            *self.per_ip.entry(from.ip().to_canonical()).or_default() += 1;
        }
        self.sessions += 1;
        self.stats.sessions_opened += 1;
        self.id_at(index)
    }

    /// Takes the session out: its slot is freed (the id goes stale), its address forgets it, it no
    /// longer counts. Its ready and timer entries go stale with the id.
    fn take(&mut self, id: SessionId) -> Option<Session<F>> {
        let slot = self.slots.get_mut(id.index as usize).filter(|slot| slot.generation == id.generation)?;
        let session = slot.session.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        if let Entry::Occupied(mut peer) = self.peers.entry(session.peer)
            && peer.get().session == Some(id.index)
        {
            peer.get_mut().session = None;
            if peer.get().linger.is_none() {
                peer.remove();
            }
        }
        if self.config.per_ip_cap(session.peer.ip()).is_some() {
            let ip = session.peer.ip().to_canonical();
            if let Entry::Occupied(mut count) = self.per_ip.entry(ip) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        self.sessions -= 1;
        self.stats.sessions_closed += 1;
        Some(session)
    }

    /// Ends a session the client ended (EOF): nothing is sent, nothing lingers.
    fn close(&mut self, id: SessionId, inbox: &mut Inbox, reason: CloseReason) {
        if self.take(id).is_some() {
            inbox.closed(id, reason);
        }
    }

    /// Ends a session the listener ends itself, with its own ERROR frame, and reports it.
    fn fail(&mut self, id: SessionId, code: ErrorCode, inbox: &mut Inbox) {
        let player_id = self.session(id).map_or(0, |session| session.player_id);
        if self.finish(id, code, own_error(player_id, code)).is_ok() {
            inbox.closed(id, CloseReason::Error(code));
        }
    }

    /// Ends a session with an ERROR: queues its last DATA and DISCONNECT, and lingers.
    fn finish(&mut self, id: SessionId, code: ErrorCode, error: ErrorFrame<F>) -> Result<(), UnknownSession> {
        let mut session = self.take(id).ok_or(UnknownSession(id))?;
        let (header, error_id) = session.last_data(self.clock);
        let to = session.peer;
        let linger = Linger { token: session.token, nonce: session.nonce, code: code.code() };
        self.peers.entry(to).or_default().linger = Some(linger);
        self.lingers.push_back((self.clock + LINGER, to, session.token));
        self.endings.push_back(Ending { to, header, error_id, error: Some(error), code: code.code() });
        Ok(())
    }

    fn mark_ready(&mut self, id: SessionId) {
        if let Some(session) = self.session_mut(id)
            && !session.ready
        {
            session.ready = true;
            self.ready.push_back(id);
        }
    }

    /// Makes sure the session's timer entry is no later than its deadline.
    fn reschedule(&mut self, id: SessionId) {
        let (idle, write_deadline) = (self.config.idle_timeout, self.config.write_deadline);
        let Some(session) = self.session_mut(id) else { return };
        let at = session.deadline(idle, write_deadline);
        // A later deadline keeps the earlier entry, which comes up early and is then moved.
        if session.scheduled.is_none_or(|scheduled| at < scheduled) {
            session.scheduled = Some(at);
            self.timers.push(Reverse((at, id.index, id.generation)));
            if self.timers.len() > 2 * self.sessions + 64 {
                self.compact_timers();
            }
        }
    }

    /// Drops the timer entries that are no longer any session's live one. In place: no allocation.
    fn compact_timers(&mut self) {
        let slots = &self.slots;
        self.timers.retain(|&Reverse((at, index, generation))| {
            slots.get(index as usize).is_some_and(|slot| {
                slot.generation == generation
                    && slot.session.as_ref().is_some_and(|s| s.scheduled == Some(at))
            })
        });
    }

    /// Queues a small reply, unless too many wait already.
    fn reply(&mut self, to: SocketAddr, datagram: impl SmallDatagram) {
        if self.replies.len() >= MAX_PENDING_REPLIES {
            self.stats.dropped_replies += 1;
            return;
        }
        let mut bytes = [0; CHALLENGE_LEN];
        let len = datagram.write(&mut bytes);
        self.replies.push_back(Reply { to, bytes, len });
    }

    /// `now` as the cookies count time: since the listener's creation.
    fn cookie_time(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }
}

impl<F> fmt::Debug for Listener<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("sessions", &self.sessions)
            .field("lingering", &self.lingers.len())
            .field("ready", &self.ready.len())
            .field("pending_replies", &self.replies.len())
            .field("endings", &self.endings.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The small datagrams the listener queues as replies.
trait SmallDatagram {
    /// Writes it at the start of `buf` (room for a CHALLENGE); returns its length.
    fn write(&self, buf: &mut [u8; CHALLENGE_LEN]) -> usize;
}

impl SmallDatagram for Challenge {
    fn write(&self, buf: &mut [u8; CHALLENGE_LEN]) -> usize {
        self.write_to(buf).unwrap_or_default()
    }
}

impl SmallDatagram for Disconnect {
    fn write(&self, buf: &mut [u8; CHALLENGE_LEN]) -> usize {
        self.write_to(buf).unwrap_or_default()
    }
}

/// The ERROR frame the listener encodes itself: header `player_id`, the code, the code's name as its
/// text (for humans; the game's own texts come through [`Listener::end_with_frame`]).
fn own_error<F>(player_id: u32, code: ErrorCode) -> ErrorFrame<F> {
    let mut bytes = [0; OWN_ERROR_MAX];
    let len = encode_frame(player_id, &Packet::Error { code: code.code(), message: code.name() }, &mut bytes);
    ErrorFrame::Own { bytes, len }
}

/// The address a peer is known by. An IPv6 flow label may differ between a client's datagrams;
/// only the address, port and scope say who it is.
fn peer_key(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(mut v6) => {
            v6.set_flowinfo(0);
            SocketAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Whether `duration` has passed from `since` to `now`.
fn reached(now: Instant, since: Instant, duration: Duration) -> bool {
    now.saturating_duration_since(since) >= duration
}

#[cfg(test)]
mod tests;
