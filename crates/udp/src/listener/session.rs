//! One session's state: its reliability endpoint, the frames waiting to go, its send limits.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, HEADER_LEN, RawFrame};

use super::inbox::Inbox;
use super::transmit::Transmit;
use super::{SessionId, reached};
use crate::datagram::{
    DATA_HEADER_LEN, DataHeader, DataView, MAX_DATAGRAM, NONCE_ECHO_LEN, RELIABLE_PREFIX_LEN, SessionToken,
};
use crate::reliable::{Config, Endpoint, RECEIVE_WINDOW, ReliableVerdict};
use crate::seq::Seq;

/// Bytes of bookkeeping counted per queued reliable frame against the send limits, on top of its
/// bytes, as `docs/protocol.md` §8, 24 counts it on TCP (so 1 MiB holds about as many frames on
/// either transport).
pub(super) const FRAME_BOOKKEEPING: usize = 32;

/// A reliable message in a session's endpoint: the endpoint carries both directions in one type.
pub(super) enum Message<F> {
    /// A frame to the client, shared with its other recipients.
    Out(F),
    /// A frame from the client.
    In(Incoming),
}

/// Where a reliable frame from the client is while the endpoint holds it.
pub(super) enum Incoming {
    /// In the datagram being received, `start..start + len`: a frame delivered at once.
    Here { start: u16, len: u16 },
    /// Copied out: a frame that arrived ahead of a gap and must outlive its datagram.
    Owned(Vec<u8>),
}

/// A frame from the client that breaks the channel's rules: the session ends with this ERROR.
pub(super) struct Violation(pub(super) ErrorCode);

pub(super) struct Session<F> {
    pub(super) peer: SocketAddr,
    pub(super) token: SessionToken,
    /// The handshake's nonce: echoed until `confirmed`, and what tells a resent RESPONSE.
    pub(super) nonce: u64,
    /// Whether a DATA came from the client, which shows it knows its token: the echo stops.
    pub(super) confirmed: bool,
    pub(super) endpoint: Endpoint<Message<F>>,
    /// Reliable frames beyond the endpoint's in-flight window, in order; they get their message ids
    /// when they enter it.
    backlog: VecDeque<F>,
    /// What `backlog` counts against the send limits.
    backlog_bytes: usize,
    /// Unreliable frames for the next datagram.
    unreliable: VecDeque<F>,
    /// Since when the queued bytes are over the soft limit.
    over_soft_since: Option<Instant>,
    /// A frame was refused at the hard limit: every later one is too (§8, 24).
    pub(super) refused: bool,
    /// When the last frame came from the client: keepalives and pure acks do not count (§10.7).
    pub(super) last_frame_at: Instant,
    /// The header `player_id` of the ERROR the listener encodes itself: 0 until the caller says.
    pub(super) player_id: u32,
    /// A resent RESPONSE was received: one DATA answers it, whatever is due.
    pub(super) answer_owed: bool,
    /// Whether it is in the listener's queue of sessions to transmit for.
    pub(super) ready: bool,
    /// The deadline of its live entry in the listener's timer heap, if it has one.
    pub(super) scheduled: Option<Instant>,
}

impl<F: AsRef<[u8]> + Clone> Session<F> {
    pub(super) fn new(
        peer: SocketAddr,
        token: SessionToken,
        nonce: u64,
        config: Config,
        now: Instant,
    ) -> Self {
        Session {
            peer,
            token,
            nonce,
            confirmed: false,
            endpoint: Endpoint::new(config, now),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            unreliable: VecDeque::new(),
            over_soft_since: None,
            refused: false,
            last_frame_at: now,
            player_id: 0,
            answer_owed: false,
            ready: false,
            scheduled: None,
        }
    }

    /// The echo the header of its next DATA carries: the nonce, until the client showed its token.
    fn nonce_echo(&self) -> Option<u64> {
        (!self.confirmed).then_some(self.nonce)
    }

    /// Room for reliable items and frames in its next DATA.
    pub(super) fn budget(&self) -> usize {
        let header = DATA_HEADER_LEN + if self.confirmed { 0 } else { NONCE_ECHO_LEN };
        MAX_DATAGRAM - header
    }

    /// Bytes counted against the send limits: reliable frames queued and not acknowledged (unsent,
    /// or sent and in flight) with their ids, plus bookkeeping per frame.
    pub(super) fn queued_bytes(&self) -> usize {
        let in_window = self.endpoint.unacked_bytes() + FRAME_BOOKKEEPING * self.endpoint.unacked_messages();
        in_window + self.backlog_bytes
    }

    /// What a reliable `frame` of `len` bytes adds to [`queued_bytes`](Self::queued_bytes).
    pub(super) fn cost(len: usize) -> usize {
        RELIABLE_PREFIX_LEN + len + FRAME_BOOKKEEPING
    }

    /// Queues a reliable frame (its size checked by the caller): into the endpoint if its window has
    /// room and nothing waits before it, else at the end of the backlog.
    pub(super) fn queue_reliable(&mut self, frame: F) {
        let len = frame.as_ref().len();
        if self.backlog.is_empty() {
            let Err(refused) = self.endpoint.queue(Message::Out(frame), RELIABLE_PREFIX_LEN + len) else {
                return;
            };
            if let Message::Out(frame) = refused.into_message() {
                self.push_backlog(frame);
            }
        } else {
            self.push_backlog(frame);
        }
    }

    fn push_backlog(&mut self, frame: F) {
        self.backlog_bytes += Self::cost(frame.as_ref().len());
        self.backlog.push_back(frame);
    }

    /// Moves backlog frames into the endpoint while its window has room.
    fn refill(&mut self) {
        while let Some(frame) = self.backlog.pop_front() {
            let len = frame.as_ref().len();
            match self.endpoint.queue(Message::Out(frame), RELIABLE_PREFIX_LEN + len) {
                Ok(_) => self.backlog_bytes -= Self::cost(len),
                Err(refused) => {
                    if let Message::Out(frame) = refused.into_message() {
                        self.backlog.push_front(frame);
                    }
                    return;
                }
            }
        }
    }

    /// Whether reliable frames wait for room in the window.
    pub(super) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Queues an unreliable frame for the next datagram; at `cap`, the oldest waiting is dropped.
    pub(super) fn queue_unreliable(&mut self, frame: F, cap: usize) {
        if self.unreliable.len() >= cap {
            self.unreliable.pop_front();
        }
        self.unreliable.push_back(frame);
    }

    /// Starts or stops the soft-limit clock after the queued bytes changed.
    pub(super) fn update_soft_limit(&mut self, now: Instant, soft_limit: usize) {
        let over = self.queued_bytes() > soft_limit;
        match (over, self.over_soft_since) {
            (true, None) => self.over_soft_since = Some(now),
            (false, Some(_)) => self.over_soft_since = None,
            _ => {}
        }
    }

    /// Fills `transmit` with this session's next DATA if one is owed (reliability: new or due
    /// messages, an ack, a keepalive) or wanted (unreliable frames wait, a resent RESPONSE is to be
    /// answered). Reliable items first (due resends oldest first, then new messages in id order),
    /// then as many unreliable frames as fit. Returns whether it filled it.
    pub(super) fn poll_transmit(&mut self, now: Instant, transmit: &mut Transmit<F>) -> bool {
        self.refill();
        let budget = self.budget();
        let wanted = self.answer_owed || !self.unreliable.is_empty();
        let datagram = if wanted {
            self.endpoint.next_datagram(now, budget)
        } else {
            match self.endpoint.poll_datagram(now, budget) {
                Some(datagram) => datagram,
                None => return false,
            }
        };
        self.answer_owed = false;
        let header = DataHeader {
            token: self.token,
            seq: datagram.seq(),
            ack: datagram.ack(),
            ack_bits: datagram.ack_bits(),
            nonce_echo: (!self.confirmed).then_some(self.nonce),
        };
        // The head is written first with no item and rewritten once the count is known.
        transmit.start(self.peer, |buf| header.write_to(0, buf).unwrap_or_default());
        let mut count = 0u8;
        for (id, message) in datagram.messages() {
            if let Message::Out(frame) = message {
                transmit.push_reliable(id, frame.clone());
                count += 1;
            }
        }
        transmit.rewrite_head(|buf| header.write_to(count, buf).unwrap_or_default());
        while let Some(frame) = self.unreliable.front() {
            if transmit.len() + frame.as_ref().len() > MAX_DATAGRAM {
                // It waits for the next datagram of this session, in this same round of transmits.
                break;
            }
            if let Some(frame) = self.unreliable.pop_front() {
                transmit.push_unreliable(frame);
            }
        }
        true
    }

    /// The header of the session's last DATA and the message id of its ERROR: the next id after the
    /// last message sent (those queued and never sent are dropped, §10.4). Uses a sequence number.
    pub(super) fn last_data(&mut self, now: Instant) -> (DataHeader, Seq) {
        let unsent = self.endpoint.unsent_messages() as u16;
        let error_id = Seq(self.endpoint.next_message_id().0.wrapping_sub(unsent));
        let nonce_echo = self.nonce_echo();
        // A budget of 0 picks no message: only the numbers and acks are wanted.
        let datagram = self.endpoint.next_datagram(now, 0);
        let header = DataHeader {
            token: self.token,
            seq: datagram.seq(),
            ack: datagram.ack(),
            ack_bits: datagram.ack_bits(),
            nonce_echo,
        };
        (header, error_id)
    }

    /// Handles a DATA from the client, whose token matched: acknowledgements, then reliable items
    /// (delivered in order), then unreliable frames if the datagram is the newest. Events go to
    /// `inbox`, frames as ranges of `datagram`.
    ///
    /// # Errors
    ///
    /// A [`Violation`] when the client breaks the channel (an id beyond the receive window): the
    /// session is to end with it. What was delivered before stays delivered.
    pub(super) fn receive_data(
        &mut self,
        id: SessionId,
        data: &DataView<'_>,
        datagram: &[u8],
        now: Instant,
        inbox: &mut Inbox,
    ) -> Result<(), Violation> {
        // Any DATA with the token, even a duplicate, shows the client has it.
        self.confirmed = true;
        let verdict = self.endpoint.on_datagram(data.seq(), data.ack(), data.ack_bits(), now);
        if !verdict.accepts_reliable() {
            return Ok(());
        }
        if !data.is_empty() {
            self.last_frame_at = now;
        }
        for item in data.reliable() {
            self.receive_reliable(id, item.id, item.frame, datagram, inbox)?;
        }
        if verdict.accepts_unreliable() {
            for frame in data.unreliable() {
                let (start, len) = span_of(datagram, frame);
                inbox.frame_in_datagram(id, start, len, false);
            }
        }
        Ok(())
    }

    /// Handles one reliable item from the client (of a DATA or of the RESPONSE).
    ///
    /// # Errors
    ///
    /// [`Violation`] (MALFORMED) for an id [`RECEIVE_WINDOW`] or more ahead of the next expected one:
    /// a client that keeps the in-flight limit never sends it (§10.5).
    pub(super) fn receive_reliable(
        &mut self,
        id: SessionId,
        message_id: Seq,
        frame: RawFrame<'_>,
        datagram: &[u8],
        inbox: &mut Inbox,
    ) -> Result<(), Violation> {
        let (start, len) = span_of(datagram, frame);
        let ahead = message_id.distance_from(self.endpoint.next_expected_id());
        // Only a frame the endpoint will hold back needs to outlive the datagram; one it delivers at
        // once, or drops, stays where it is.
        let incoming = if ahead > 0 && ahead < RECEIVE_WINDOW as i32 {
            Incoming::Owned(inbox.copy_out(&datagram[start..start + len]))
        } else {
            Incoming::Here { start: start as u16, len: len as u16 }
        };
        let delivery = self.endpoint.on_reliable(message_id, Message::In(incoming));
        if delivery.verdict() == ReliableVerdict::BeyondWindow {
            return Err(Violation(ErrorCode::Malformed));
        }
        for message in delivery {
            match message {
                Message::In(Incoming::Here { start, len }) => {
                    inbox.frame_in_datagram(id, usize::from(start), usize::from(len), true)
                }
                Message::In(Incoming::Owned(buffer)) => inbox.frame_owned(id, buffer),
                Message::Out(_) => {}
            }
        }
        Ok(())
    }

    /// When something may next be due: a resend, an ack, a keepalive, the reliability layer giving
    /// up, the idle timeout or the write deadline.
    pub(super) fn deadline(&self, idle_timeout: Duration, write_deadline: Duration) -> Instant {
        let idle = self.last_frame_at.checked_add(idle_timeout);
        let slow = self.over_soft_since.and_then(|since| since.checked_add(write_deadline));
        [idle, slow].into_iter().flatten().fold(self.endpoint.poll_timeout(), Instant::min)
    }

    /// The ERROR the session ends with at `now`, if a deadline has passed: TIMEOUT (no frame from
    /// the client for the idle timeout, or the reliability layer gave up on it), else SLOW_CONSUMER
    /// (over the soft limit for the write deadline).
    pub(super) fn expired(
        &self,
        now: Instant,
        idle_timeout: Duration,
        write_deadline: Duration,
    ) -> Option<ErrorCode> {
        if self.endpoint.peer_gone(now).is_some() || reached(now, self.last_frame_at, idle_timeout) {
            Some(ErrorCode::Timeout)
        } else if self.over_soft_since.is_some_and(|since| reached(now, since, write_deadline)) {
            Some(ErrorCode::SlowConsumer)
        } else {
            None
        }
    }
}

/// Where `frame` lies in `datagram`, which it borrows from: its offset and length.
fn span_of(datagram: &[u8], frame: RawFrame<'_>) -> (usize, usize) {
    let start = frame.header_bytes().as_ptr() as usize - datagram.as_ptr() as usize;
    (start, HEADER_LEN + frame.payload().len())
}
