//! What one call of the listener hands the caller: sessions opened, frames delivered, sessions closed.

use std::fmt;
use std::net::SocketAddr;

use gamewire_proto::{ErrorCode, RawFrame};

use super::{MAX_FRAME_LEN, SessionId};
use crate::datagram::MAX_DATAGRAM;

/// Spare buffers kept for reliable frames that arrive out of order: enough for a burst of loss on
/// many sessions, bounded so that one burst does not pin memory for ever.
const MAX_SPARE_BUFFERS: usize = 256;

/// Why a session ended, as [`Event::Closed`] reports it.
///
/// # Examples
///
/// ```
/// use gamewire_proto::ErrorCode;
/// use gamewire_udp::listener::CloseReason;
///
/// assert!(CloseReason::Disconnected.is_eof());
/// assert_eq!(CloseReason::Error(ErrorCode::Timeout).error_code(), Some(ErrorCode::Timeout));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent DISCONNECT: it left, as EOF on TCP (docs/protocol.md §10.4). Nothing was sent
    /// to it.
    Disconnected,
    /// The client started a new handshake from the same address and port (a RESPONSE with another
    /// nonce): the old session ends as on EOF, and the new one opens (§10.3). Nothing was sent to it.
    Restarted,
    /// The listener ended the session with this ERROR (TIMEOUT, SLOW_CONSUMER, MALFORMED): it sends
    /// the last DATA holding the ERROR, then DISCONNECT, and lingers (§10.4).
    Error(ErrorCode),
}

impl CloseReason {
    /// Whether the client ended the session (what EOF is on TCP): its player leaves, no ERROR is sent.
    pub fn is_eof(self) -> bool {
        matches!(self, CloseReason::Disconnected | CloseReason::Restarted)
    }

    /// The ERROR the session was ended with, if the listener ended it.
    pub fn error_code(self) -> Option<ErrorCode> {
        match self {
            CloseReason::Error(code) => Some(code),
            CloseReason::Disconnected | CloseReason::Restarted => None,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Disconnected => f.write_str("the client disconnected"),
            CloseReason::Restarted => f.write_str("the client started a new handshake"),
            CloseReason::Error(code) => write!(f, "ended with {}", code.name()),
        }
    }
}

/// One thing that happened, in order, as [`Inbox::events`] yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A handshake completed: a new session, from `peer`. Its first frames (the HELLO first) follow.
    Opened {
        /// The new session.
        session: SessionId,
        /// The client's address; the session is bound to it.
        peer: SocketAddr,
    },
    /// A frame from a session's client, for the game, in the order the client's channel gives:
    /// reliable frames once each and in order, unreliable frames only when newer than everything
    /// received before. The frame's length is checked against the datagram (and `max_payload`); its
    /// packet id, header player id and payload are not: that is the game's job, as on TCP.
    Frame {
        /// The session it came on.
        session: SessionId,
        /// The frame's bytes.
        frame: RawFrame<'a>,
        /// Whether it came on the reliable channel.
        reliable: bool,
    },
    /// A session ended; its id is stale from now on. After [`CloseReason::Error`], the listener
    /// still sends the ERROR and DISCONNECT it owes.
    Closed {
        /// The session that ended.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
}

/// Where a delivered frame's bytes are.
#[derive(Clone, Copy, Debug)]
enum FrameAt {
    /// In the datagram just received: `start..start + len`.
    Datagram { start: u16, len: u16 },
    /// In the inbox's own buffer `index`: a reliable frame held back until the gap before it was
    /// filled.
    Owned(u32),
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Opened { session: SessionId, peer: SocketAddr },
    Frame { session: SessionId, at: FrameAt, reliable: bool },
    Closed { session: SessionId, reason: CloseReason },
}

/// The caller's reusable list of what one [`Listener::receive`](super::Listener::receive) or
/// [`Listener::handle_timeout`](super::Listener::handle_timeout) produced.
///
/// Kept apart from the listener on purpose: while the caller walks the events it may call
/// [`Listener::send`](super::Listener::send) and [`Listener::end`](super::Listener::end) freely, to
/// this session or any other. Each call of the listener that fills it clears it first.
///
/// Frames are not copied: an event points into the datagram the caller passed to `receive` and
/// still holds, which is why [`events`](Self::events) takes it again. The one exception is a
/// reliable frame that arrived ahead of a gap (after a loss or a reordering): it has to outlive its
/// datagram, so it is copied into a buffer of its own, which the inbox hands back to the listener
/// for reuse once the caller moves on. So a loss-free session copies nothing, and a lossy one only
/// allocates while the pool of spare buffers grows.
///
/// # Examples
///
/// ```
/// use gamewire_udp::listener::{Event, Inbox};
///
/// let inbox = Inbox::new();
/// let datagram = [0u8; 0]; // what was passed to `receive`
/// for event in inbox.events(&datagram) {
///     match event {
///         Event::Opened { session, peer } => println!("{session} opened from {peer}"),
///         Event::Frame { session, frame, reliable } => println!("{session}: packet {}", frame.packet_id()),
///         Event::Closed { session, reason } => println!("{session} closed: {reason}"),
///     }
/// }
/// assert!(inbox.is_empty());
/// ```
pub struct Inbox {
    entries: Vec<Entry>,
    owned: Vec<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl Inbox {
    /// An empty inbox, with room for a full datagram's worth of events.
    pub fn new() -> Inbox {
        Inbox { entries: Vec::with_capacity(128), owned: Vec::with_capacity(16), spare: Vec::new() }
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The events, in the order they happened. `datagram` must be the bytes last passed to
    /// [`Listener::receive`](super::Listener::receive) with this inbox (anything, say `&[]`, after
    /// [`Listener::handle_timeout`](super::Listener::handle_timeout), which delivers no frame).
    pub fn events<'a>(&'a self, datagram: &'a [u8]) -> Events<'a> {
        Events { entries: self.entries.iter(), owned: &self.owned, datagram }
    }

    /// Forgets the events; the buffers of held-back frames are kept for reuse. The listener calls it
    /// at the start of every call that fills the inbox.
    pub fn clear(&mut self) {
        self.entries.clear();
        for mut buffer in self.owned.drain(..) {
            if self.spare.len() < MAX_SPARE_BUFFERS {
                buffer.clear();
                self.spare.push(buffer);
            }
        }
    }

    pub(super) fn opened(&mut self, session: SessionId, peer: SocketAddr) {
        self.entries.push(Entry::Opened { session, peer });
    }

    pub(super) fn closed(&mut self, session: SessionId, reason: CloseReason) {
        self.entries.push(Entry::Closed { session, reason });
    }

    /// A frame at `start..start + len` of the datagram being received.
    pub(super) fn frame_in_datagram(&mut self, session: SessionId, start: usize, len: usize, reliable: bool) {
        // A datagram is at most 1200 bytes: both fit a u16.
        debug_assert!(start + len <= MAX_DATAGRAM);
        let at = FrameAt::Datagram { start: start as u16, len: len as u16 };
        self.entries.push(Entry::Frame { session, at, reliable });
    }

    /// A reliable frame that was held back in a buffer of its own.
    pub(super) fn frame_owned(&mut self, session: SessionId, buffer: Vec<u8>) {
        let at = FrameAt::Owned(self.owned.len() as u32);
        self.owned.push(buffer);
        self.entries.push(Entry::Frame { session, at, reliable: true });
    }

    /// A copy of `bytes` in a spare buffer (allocated only when none is left, with room for the
    /// largest frame, so that a reused one never grows).
    pub(super) fn copy_out(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buffer =
            self.spare.pop().unwrap_or_else(|| Vec::with_capacity(MAX_FRAME_LEN.max(bytes.len())));
        buffer.extend_from_slice(bytes);
        buffer
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox::new()
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("events", &self.entries.len())
            .field("held_back_frames", &self.owned.len())
            .field("spare_buffers", &self.spare.len())
            .finish()
    }
}

/// The events of an [`Inbox`], from [`Inbox::events`].
#[derive(Clone, Debug)]
pub struct Events<'a> {
    entries: std::slice::Iter<'a, Entry>,
    owned: &'a [Vec<u8>],
    datagram: &'a [u8],
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        loop {
            return Some(match *self.entries.next()? {
                Entry::Opened { session, peer } => Event::Opened { session, peer },
                Entry::Closed { session, reason } => Event::Closed { session, reason },
                Entry::Frame { session, at, reliable } => {
                    let bytes = match at {
                        FrameAt::Datagram { start, len } => {
                            let start = usize::from(start);
                            self.datagram.get(start..start + usize::from(len))
                        }
                        FrameAt::Owned(index) => self.owned.get(index as usize).map(Vec::as_slice),
                    };
                    // The listener checked every frame; only a caller passing other bytes than it
                    // received gets here, and then the frame is skipped rather than made up.
                    let Some((frame, _)) = bytes.and_then(RawFrame::split_from) else {
                        debug_assert!(
                            false,
                            "Inbox::events was given another datagram than the one received"
                        );
                        continue;
                    };
                    Event::Frame { session, frame, reliable }
                }
            });
        }
    }
}

impl std::iter::FusedIterator for Events<'_> {}
