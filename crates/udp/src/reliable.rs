//! Reliable-ordered and unreliable-sequenced delivery over datagrams: acks, resends, RTT, reordering.

mod config;
mod received;
mod reorder;
mod rtt;
mod send_queue;
mod sent_log;

use std::fmt;
use std::time::{Duration, Instant};

pub use config::Config;
pub use received::DatagramVerdict;
pub use reorder::{Delivery, ReliableVerdict};
pub use rtt::RttEstimator;
pub use send_queue::QueueError;

use received::ReceivedDatagrams;
use reorder::ReorderBuffer;
use send_queue::{ResendTimer, SendQueue};
use sent_log::SentLog;

use crate::seq::Seq;

/// How many message ids ahead of the next expected one a receiver buffers (the next expected one
/// included). A sender never has more than this many ids from its oldest unacknowledged message to
/// its newest, so everything it sends fits.
pub const RECEIVE_WINDOW: usize = 256;

/// One end of a connection's reliability layer: it numbers datagrams, acknowledges the peer's,
/// resends reliable messages until one of their datagrams is acknowledged, and delivers the peer's
/// reliable messages once each, in order. It never touches a socket or a clock, and knows nothing of
/// bytes: the caller encodes what [`Datagram`] lists and decodes what it passes in. `M` is the
/// message payload (the server uses refcounted pool slices; anything works).
///
/// # The calls, in order
///
/// - **Receiving** a datagram: [`on_datagram`](Self::on_datagram) with its header first. Unless the
///   verdict is [`Duplicate`](DatagramVerdict::Duplicate), pass each reliable item to
///   [`on_reliable`](Self::on_reliable) and hand what its [`Delivery`] yields to the application; use
///   the unreliable frames only if [`DatagramVerdict::accepts_unreliable`] (unreliable-sequenced:
///   anything older than the newest datagram received is stale).
/// - **Sending**: [`queue`](Self::queue) each reliable message (the id it gets is what the peer
///   delivers it by). When a datagram goes to the peer anyway (it has unreliable frames),
///   [`next_datagram`](Self::next_datagram) says what header to write and which reliable messages to
///   put first. Then, and whenever [`poll_timeout`](Self::poll_timeout) passes, call
///   [`poll_datagram`](Self::poll_datagram) until it returns `None`: it returns a datagram only when
///   one is owed (messages never sent or due again, an ack owed, a keepalive due). Every datagram
///   returned must be sent (or lost as if sent): its sequence number is used and its messages count
///   as sent.
/// - **Timers**: after [`poll_timeout`](Self::poll_timeout), check [`peer_gone`](Self::peer_gone);
///   `Some` means the peer is to be dropped (the server sends TIMEOUT).
///
/// Both ends start with datagram number 0 and message id 0.
///
/// # Resends, acknowledgements and RTT
///
/// Acknowledgements name datagrams (`ack` = newest received, bit `i` of `ack_bits` = `ack - 1 - i`
/// received). A reliable message is done when any datagram that carried it is acknowledged; until
/// then it is sent again when [`RttEstimator::resend_timeout`] has passed since it was last sent,
/// that timeout doubling with each resend up to [`Config::max_resend_timeout`]. A receiver owes an
/// ack within [`Config::ack_delay`] of receiving a reliable message.
///
/// RTT samples come from datagrams that carried reliable messages, timed from their own send (each
/// datagram has a number of its own and is sent once, so an ack is never ambiguous: Karn's rule
/// holds by construction; a resend is timed from the resend). A sample is taken only when the
/// acknowledging datagram directly follows the peer's previous one, none missing (so it is the first
/// ack the peer sent since our datagram arrived), and only from the newest such datagram it newly
/// acknowledges: the sample is then the round trip plus at most the peer's ack delay (the header has
/// no ack-delay field to subtract it), never a wait for a keepalive or for a lost ack's successor.
///
/// # Costs
///
/// `queue`, `on_reliable` and each delivered message are O(1); `on_datagram` is O(1 + messages the
/// newly acknowledged datagrams carried); `poll_datagram`, `next_datagram` and `poll_timeout` are
/// O(messages in flight), at most [`RECEIVE_WINDOW`]. Nothing allocates per message: the rings grow to
/// their high-water mark (in-flight messages, tracked datagrams and their message ids) and keep their
/// capacity, and the receive window's 256 slots are allocated the first time a message arrives out of
/// order.
///
/// # Examples
///
/// A message lost once, resent, delivered, acknowledged:
///
/// ```
/// use std::time::{Duration, Instant};
/// use gamewire_udp::reliable::{Config, Endpoint};
///
/// let ms = Duration::from_millis;
/// let start = Instant::now();
/// let mut server = Endpoint::new(Config::default(), start);
/// let mut client = Endpoint::new(Config::default(), start);
///
/// server.queue(b"hello".to_vec(), 5)?;
/// server.queue(b"world".to_vec(), 5)?;
/// let lost = server.poll_datagram(start, 1100).expect("two new messages");
/// assert_eq!(lost.message_count(), 2);
/// assert!(server.poll_datagram(start + ms(100), 1100).is_none(), "nothing due yet");
///
/// // 250 ms later (1.25 x the initial RTT guess) both are due again, in a new datagram.
/// let resent = server.poll_datagram(start + ms(250), 1100).expect("resends due");
/// let header = (resent.seq(), resent.ack(), resent.ack_bits());
/// let items: Vec<_> = resent.messages().map(|(id, message)| (id, message.clone())).collect();
///
/// let arrival = start + ms(260);
/// assert!(client.on_datagram(header.0, header.1, header.2, arrival).accepts_unreliable());
/// let mut delivered = Vec::new();
/// for (id, message) in items {
///     delivered.extend(client.on_reliable(id, message));
/// }
/// assert_eq!(delivered, [b"hello".to_vec(), b"world".to_vec()]);
///
/// // With nothing else to send, the client owes a pure ack after the ack delay (20 ms).
/// assert!(client.poll_datagram(arrival, 1100).is_none());
/// let ack = client.poll_datagram(arrival + ms(20), 1100).expect("an ack is owed");
/// assert_eq!(ack.message_count(), 0);
/// server.on_datagram(ack.seq(), ack.ack(), ack.ack_bits(), arrival + ms(30));
/// assert_eq!(server.unacked_messages(), 0);
/// assert_eq!(server.rtt().smoothed(), ms(40), "timed from the resend (250 ms), not the first send");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Endpoint<M> {
    config: Config,
    queue: SendQueue<M>,
    log: SentLog,
    rtt: RttEstimator,
    received: ReceivedDatagrams,
    reorder: ReorderBuffer<M>,
    next_seq: Seq,
    last_sent_at: Instant,
    last_received_at: Instant,
    /// When the oldest reliable message not yet acknowledged to the peer arrived.
    ack_owed_since: Option<Instant>,
    /// When an ack last freed a message, or sending started after nothing awaited an ack.
    last_ack_progress: Instant,
}

/// Why [`Endpoint::peer_gone`] gave up on the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Gone {
    /// No datagram from the peer for [`Config::idle_timeout`].
    Silent,
    /// Reliable messages were sent and none was acknowledged for [`Config::idle_timeout`]: the peer
    /// still sends, but does not receive (or does not say so).
    Unacknowledged,
}

impl<M> Endpoint<M> {
    /// A fresh endpoint; `now` starts the idle and keepalive clocks.
    pub fn new(config: Config, now: Instant) -> Self {
        Endpoint {
            queue: SendQueue::new(),
            log: SentLog::new(config.tracked_datagrams),
            rtt: RttEstimator::new(config.initial_rtt),
            received: ReceivedDatagrams::new(),
            reorder: ReorderBuffer::new(),
            next_seq: Seq(0),
            last_sent_at: now,
            last_received_at: now,
            ack_owed_since: None,
            last_ack_progress: now,
            config,
        }
    }

    /// Queues a reliable message taking `size` bytes in a datagram (the item's header included, as
    /// the caller's encoding counts it) and returns the message id it will carry. It goes out with the
    /// next [`next_datagram`](Self::next_datagram) or [`poll_datagram`](Self::poll_datagram) that has
    /// room. O(1).
    ///
    /// # Errors
    ///
    /// [`QueueError::MessagesFull`] or [`QueueError::BytesFull`] when the message would take the
    /// messages awaiting an ack over [`Config::max_unacked_messages`] or
    /// [`Config::max_unacked_bytes`]: the peer does not keep up. [`QueueError::TooLarge`] when `size`
    /// is over [`Config::max_message_size`]. The message comes back in the error.
    pub fn queue(&mut self, message: M, size: usize) -> Result<Seq, QueueError<M>> {
        let config = &self.config;
        self.queue.push(
            message,
            size,
            config.max_unacked_messages,
            config.max_unacked_bytes,
            config.max_message_size,
        )
    }

    /// The datagram to send now, because one goes to the peer anyway: its sequence number, the
    /// acknowledgements, and the reliable messages that fit `budget` bytes (resends that are due,
    /// oldest first, then never-sent messages in id order; at most
    /// [`Config::max_messages_per_datagram`]). The caller fills the rest with unreliable frames.
    ///
    /// Call it only for a datagram that will be sent: the messages it lists count as sent at `now`
    /// and the sequence number is used. It clears an owed ack and restarts the keepalive clock.
    pub fn next_datagram(&mut self, now: Instant, budget: usize) -> Datagram<'_, M> {
        let seq = self.next_seq;
        self.next_seq = seq.next();
        self.log.begin(seq, now);
        let was_awaiting = self.queue.awaiting() > 0;
        let max = self.config.max_resend_timeout;
        let timer =
            ResendTimer { timeout: self.rtt.resend_timeout(self.config.min_resend_timeout, max), max };
        let log = &mut self.log;
        self.queue.select(now, budget, self.config.max_messages_per_datagram, timer, |id| log.push_id(id));
        if !was_awaiting && self.queue.awaiting() > 0 {
            self.last_ack_progress = now;
        }
        self.ack_owed_since = None;
        self.last_sent_at = now;
        Datagram {
            seq,
            ack: self.received.ack(),
            ack_bits: self.received.ack_bits(),
            ids: self.log.last_ids(),
            queue: &self.queue,
        }
    }

    /// A datagram that reliability needs sent now, or `None`: one is owed when a reliable message
    /// that fits `budget` was never sent or is due again, when an ack is owed for longer than
    /// [`Config::ack_delay`], or when nothing was sent for [`Config::keepalive_interval`]. The
    /// datagram is built as by [`next_datagram`](Self::next_datagram) (the caller may add unreliable
    /// frames to it). Call it until `None` after queueing messages and when
    /// [`poll_timeout`](Self::poll_timeout) passes.
    ///
    /// `budget` should fit [`Config::max_message_size`] so that every message can make progress.
    pub fn poll_datagram(&mut self, now: Instant, budget: usize) -> Option<Datagram<'_, M>> {
        let ack_due = self.ack_owed_since.is_some_and(|since| reached(now, since, self.config.ack_delay));
        let keepalive_due = reached(now, self.last_sent_at, self.config.keepalive_interval);
        if ack_due || keepalive_due || self.queue.has_sendable(now, budget) {
            Some(self.next_datagram(now, budget))
        } else {
            None
        }
    }

    /// Makes the oldest reliable messages awaiting an acknowledgement due for a resend at `now`, as
    /// many as the next datagram with `budget` bytes carries (the order of
    /// [`next_datagram`](Self::next_datagram): oldest first), and returns how many. Their backoff is
    /// kept. For a peer that shows it lost them, as a client that sends its RESPONSE again has not
    /// received the server's first DATA (`docs/protocol.md` 10.3): the next datagram resends them
    /// without waiting for their timers. O(messages in flight).
    pub fn expedite_resends(&mut self, now: Instant, budget: usize) -> usize {
        self.queue.expedite(now, budget, self.config.max_messages_per_datagram)
    }

    /// Handles the header of a datagram from the peer: records its sequence number for the acks to
    /// send, and applies its `ack` and `ack_bits` (freeing the reliable messages the acknowledged
    /// datagrams carried and taking an RTT sample when one is clean). Returns what to do with the rest
    /// of the datagram. Call it first for every datagram received from the peer.
    ///
    /// Any input is safe: an `ack` naming a datagram never sent makes the whole acknowledgement
    /// ignored (the peer is confused or lying), and acks for datagrams forgotten are ignored.
    pub fn on_datagram(&mut self, seq: Seq, ack: Seq, ack_bits: u32, now: Instant) -> DatagramVerdict {
        let (verdict, follows) = self.received.record(seq);
        if verdict == DatagramVerdict::Duplicate {
            return verdict;
        }
        self.last_received_at = now;
        // `next_seq` has not been sent: an ack at or past it names a datagram that does not exist.
        if ack.distance_from(self.next_seq) >= 0 {
            return verdict;
        }
        let mut freed = false;
        let mut sample_from = None;
        let queue = &mut self.queue;
        let log = &mut self.log;
        let mut acknowledge = |seq: Seq| {
            let acked = log.acknowledge(seq, |id| freed |= queue.acknowledge(id));
            // The first found is the newest: `ack`, then the bits from `ack - 1` down.
            if let Some(acked) = acked.filter(|acked| acked.carried_messages) {
                sample_from.get_or_insert(acked.sent_at);
            }
        };
        acknowledge(ack);
        let mut bits = ack_bits;
        while bits != 0 {
            let i = bits.trailing_zeros() as u16;
            bits &= bits - 1;
            acknowledge(ack.plus(u16::MAX - i));
        }
        self.log.prune();
        if freed {
            self.last_ack_progress = now;
        }
        if follows && let Some(sent_at) = sample_from {
            self.rtt.on_sample(now.saturating_duration_since(sent_at));
        }
        verdict
    }

    /// Handles one reliable item of a datagram whose verdict [accepts reliable
    /// messages](DatagramVerdict::accepts_reliable), after [`on_datagram`](Self::on_datagram).
    /// Returns the messages now deliverable, in order (see [`Delivery`]), and owes the peer an ack
    /// whatever the verdict: a duplicate means the peer has not heard of the first copy.
    pub fn on_reliable(&mut self, message_id: Seq, message: M) -> Delivery<'_, M> {
        self.ack_owed_since.get_or_insert(self.last_received_at);
        self.reorder.receive(message_id, message)
    }

    /// The next instant at which [`poll_datagram`](Self::poll_datagram) or
    /// [`peer_gone`](Self::peer_gone) may have something new to say: a resend, an owed ack, a
    /// keepalive or a timeout. Does not account for messages queued and not yet polled for (poll
    /// after queueing). O(messages in flight).
    pub fn poll_timeout(&self) -> Instant {
        let config = &self.config;
        let awaiting = self.queue.awaiting() > 0;
        [
            self.queue.next_resend(),
            self.ack_owed_since.and_then(|since| since.checked_add(config.ack_delay)),
            self.last_sent_at.checked_add(config.keepalive_interval),
            self.last_received_at.checked_add(config.idle_timeout),
            self.last_ack_progress.checked_add(config.idle_timeout).filter(|_| awaiting),
        ]
        .into_iter()
        .flatten()
        .min()
        // Only when every timer overflows an `Instant`: as far as can be said.
        .unwrap_or(self.last_sent_at)
    }

    /// Whether the peer is to be given up at `now`, and why. Check it when
    /// [`poll_timeout`](Self::poll_timeout) passes.
    pub fn peer_gone(&self, now: Instant) -> Option<Gone> {
        let idle = self.config.idle_timeout;
        if reached(now, self.last_received_at, idle) {
            Some(Gone::Silent)
        } else if self.queue.awaiting() > 0 && reached(now, self.last_ack_progress, idle) {
            Some(Gone::Unacknowledged)
        } else {
            None
        }
    }

    /// Message ids from the oldest unacknowledged message to the newest queued (what
    /// [`Config::max_unacked_messages`] limits).
    pub fn unacked_messages(&self) -> usize {
        self.queue.span()
    }

    /// Bytes of the messages queued and not yet acknowledged (what [`Config::max_unacked_bytes`]
    /// limits).
    pub fn unacked_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Messages queued and never sent yet.
    pub fn unsent_messages(&self) -> usize {
        self.queue.unsent()
    }

    /// The id the next queued message will get.
    pub fn next_message_id(&self) -> Seq {
        self.queue.next_id()
    }

    /// The id of the next reliable message to deliver from the peer.
    pub fn next_expected_id(&self) -> Seq {
        self.reorder.next_expected()
    }

    /// Reliable messages from the peer received out of order and waiting for an earlier one.
    pub fn buffered_messages(&self) -> usize {
        self.reorder.buffered()
    }

    /// The round-trip time estimate.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl<M> fmt::Debug for Endpoint<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("next_seq", &self.next_seq)
            .field("ack", &self.received.ack())
            .field("next_message_id", &self.queue.next_id())
            .field("unacked_messages", &self.queue.span())
            .field("unacked_bytes", &self.queue.bytes())
            .field("tracked_datagrams", &self.log.len())
            .field("next_expected_id", &self.reorder.next_expected())
            .field("rtt", &self.rtt)
            .finish_non_exhaustive()
    }
}

/// Whether `duration` has passed from `since` to `now` (a `now` before `since` counts as no time).
fn reached(now: Instant, since: Instant, duration: Duration) -> bool {
    now.saturating_duration_since(since) >= duration
}

/// What to put in the datagram being sent: the header values and the reliable messages, from
/// [`Endpoint::next_datagram`] or [`Endpoint::poll_datagram`]. The datagram counts as sent already.
///
/// # Examples
///
/// ```
/// use gamewire_udp::reliable::{Config, Endpoint};
/// use gamewire_udp::seq::Seq;
///
/// let now = std::time::Instant::now();
/// let mut endpoint = Endpoint::new(Config::default(), now);
/// endpoint.queue("big", 600).unwrap();
/// endpoint.queue("small", 100).unwrap();
/// let datagram = endpoint.next_datagram(now, 650);
/// assert_eq!((datagram.seq(), datagram.ack(), datagram.ack_bits()), (Seq(0), Seq(65535), 0));
/// assert_eq!(datagram.messages().collect::<Vec<_>>(), [(Seq(0), &"big")], "the next one must wait");
/// ```
#[must_use = "the datagram counts as sent: its messages wait for an ack of it"]
pub struct Datagram<'a, M> {
    seq: Seq,
    ack: Seq,
    ack_bits: u32,
    ids: std::collections::vec_deque::Iter<'a, Seq>,
    queue: &'a SendQueue<M>,
}

impl<'a, M> Datagram<'a, M> {
    /// This datagram's sequence number.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The newest datagram number received from the peer (65535 before any: the number before its
    /// first, which it ignores).
    pub fn ack(&self) -> Seq {
        self.ack
    }

    /// Bit `i` set: the peer's datagram `ack - 1 - i` was received.
    pub fn ack_bits(&self) -> u32 {
        self.ack_bits
    }

    /// How many reliable messages go in this datagram.
    pub fn message_count(&self) -> usize {
        self.ids.len()
    }

    /// The reliable messages to put in, with their ids, in the order chosen.
    pub fn messages(&self) -> impl Iterator<Item = (Seq, &'a M)> + 'a {
        let queue = self.queue;
        // Every id listed was chosen from the queue just now and cannot have left it yet.
        self.ids.clone().filter_map(move |&id| queue.get(id).map(|message| (id, message)))
    }
}

impl<M> fmt::Debug for Datagram<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("seq", &self.seq)
            .field("ack", &self.ack)
            .field("ack_bits", &format_args!("{:#034b}", self.ack_bits))
            .field("message_ids", &self.ids)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    const BUDGET: usize = 1100;

    fn endpoint(start: Instant) -> Endpoint<u32> {
        Endpoint::new(Config::default(), start)
    }

    /// Polls one datagram and returns its sequence number and message ids.
    fn poll(endpoint: &mut Endpoint<u32>, at: Instant) -> Option<(Seq, Vec<Seq>)> {
        let datagram = endpoint.poll_datagram(at, BUDGET)?;
        Some((datagram.seq(), datagram.messages().map(|(id, _)| id).collect()))
    }

    #[test]
    fn karns_rule_a_resent_message_is_timed_from_the_datagram_acknowledged() {
        let start = Instant::now();
        let mut sender = endpoint(start);
        sender.queue(7, 4).unwrap();
        assert_eq!(poll(&mut sender, start), Some((Seq(0), vec![Seq(0)])));
        assert_eq!(poll(&mut sender, start + ms(250)), Some((Seq(1), vec![Seq(0)])), "resent");
        // The peer's first datagram acknowledges the resend only: 30 ms after it, 280 after the first.
        sender.on_datagram(Seq(0), Seq(1), 0, start + ms(280));
        assert_eq!(sender.unacked_messages(), 0);
        assert_eq!((sender.rtt().samples(), sender.rtt().smoothed()), (1, ms(30)));
    }

    #[test]
    fn samples_come_only_from_in_order_datagrams_and_datagrams_that_carried_messages() {
        let start = Instant::now();
        let mut sender = endpoint(start);
        sender.queue(1, 4).unwrap();
        let _ = poll(&mut sender, start);
        let _ = sender.next_datagram(start + ms(5), BUDGET); // nothing reliable in it
        // Datagram 1 (no messages) acknowledged alone: no sample, and 0 is still in flight.
        sender.on_datagram(Seq(0), Seq(1), 0, start + ms(40));
        assert_eq!((sender.rtt().samples(), sender.unacked_messages()), (0, 1));
        // The peer's datagram 2 (1 lost) acknowledges 0: its ack may be stale, so no sample.
        sender.on_datagram(Seq(2), Seq(1), 0b1, start + ms(300));
        assert_eq!((sender.rtt().samples(), sender.unacked_messages()), (0, 0));
        sender.queue(2, 4).unwrap();
        let _ = poll(&mut sender, start + ms(310)); // datagram 2
        sender.on_datagram(Seq(3), Seq(2), 0b11, start + ms(350));
        assert_eq!((sender.rtt().samples(), sender.rtt().smoothed()), (1, ms(40)));
    }

    #[test]
    fn an_unanswered_message_is_resent_with_the_wait_doubling_up_to_a_second() {
        let start = Instant::now();
        let mut config = Config::default();
        config.keepalive_interval(ms(60_000));
        let mut sender = Endpoint::new(config, start);
        sender.queue(7, 4).unwrap();
        // 250 ms (1.25 x the initial 200 ms), then 500, 1000, 1000.
        for at in [0, 250, 750, 1750, 2750] {
            if at > 0 {
                assert_eq!(poll(&mut sender, start + ms(at - 1)), None, "before {at} ms");
                assert_eq!(sender.poll_timeout(), start + ms(at));
            }
            assert_eq!(
                poll(&mut sender, start + ms(at)).map(|(_, ids)| ids),
                Some(vec![Seq(0)]),
                "at {at} ms"
            );
        }
    }

    #[test]
    fn an_ack_is_owed_within_the_ack_delay_of_a_reliable_message_and_then_no_more() {
        let start = Instant::now();
        let mut receiver = endpoint(start);
        receiver.on_datagram(Seq(0), Seq(65535), 0, start + ms(10));
        assert_eq!(poll(&mut receiver, start + ms(29)), None, "unreliable data owes no ack");
        receiver.on_datagram(Seq(1), Seq(65535), 0, start + ms(20));
        assert_eq!(receiver.on_reliable(Seq(0), 5).collect::<Vec<_>>(), [5]);
        assert_eq!(receiver.poll_timeout(), start + ms(40));
        assert_eq!(poll(&mut receiver, start + ms(39)), None);
        assert_eq!(poll(&mut receiver, start + ms(40)), Some((Seq(0), vec![])));
        assert_eq!(poll(&mut receiver, start + ms(40)), None);
        // A duplicate owes an ack as well: the peer has not heard of the first copy.
        receiver.on_datagram(Seq(2), Seq(65535), 0, start + ms(50));
        assert!(receiver.on_reliable(Seq(0), 5).next().is_none());
        assert_eq!(poll(&mut receiver, start + ms(70)), Some((Seq(1), vec![])));
    }

    #[test]
    fn any_datagram_sent_carries_the_acks_and_clears_the_debt() {
        let start = Instant::now();
        let mut receiver = endpoint(start);
        receiver.on_datagram(Seq(3), Seq(65535), 0, start);
        receiver.on_datagram(Seq(1), Seq(65535), 0, start);
        assert_eq!(receiver.on_reliable(Seq(0), 5).count(), 1);
        let datagram = receiver.next_datagram(start + ms(1), BUDGET);
        assert_eq!((datagram.ack(), datagram.ack_bits()), (Seq(3), 0b10));
        assert_eq!(poll(&mut receiver, start + ms(100)), None);
    }

    #[test]
    fn a_keepalive_is_due_after_a_second_without_sending() {
        let start = Instant::now();
        let mut endpoint = endpoint(start);
        assert_eq!(endpoint.poll_timeout(), start + ms(1000));
        assert_eq!(poll(&mut endpoint, start + ms(999)), None);
        assert_eq!(poll(&mut endpoint, start + ms(1000)), Some((Seq(0), vec![])));
        let _ = endpoint.next_datagram(start + ms(1500), BUDGET);
        assert_eq!(poll(&mut endpoint, start + ms(2499)), None);
        assert!(poll(&mut endpoint, start + ms(2500)).is_some());
    }

    #[test]
    fn acks_naming_datagrams_never_sent_are_ignored_whole() {
        let start = Instant::now();
        let mut sender = endpoint(start);
        sender.queue(1, 4).unwrap();
        let _ = poll(&mut sender, start);
        sender.on_datagram(Seq(0), Seq(1), u32::MAX, start + ms(10));
        assert_eq!(sender.unacked_messages(), 1, "1 was never sent, so bit 0 (datagram 0) is not believed");
        sender.on_datagram(Seq(1), Seq(40000), u32::MAX, start + ms(10));
        assert_eq!(sender.unacked_messages(), 1);
        sender.on_datagram(Seq(2), Seq(0), 0, start + ms(20));
        assert_eq!(sender.unacked_messages(), 0);
    }

    #[test]
    fn a_silent_peer_is_gone_after_the_idle_timeout_and_so_is_one_that_never_acknowledges() {
        let start = Instant::now();
        let idle = Config::default().idle_timeout;
        let silent = endpoint(start);
        assert_eq!(silent.peer_gone(start + idle - ms(1)), None);
        assert_eq!(silent.peer_gone(start + idle), Some(Gone::Silent));

        let mut endpoint = endpoint(start);
        endpoint.queue(1, 4).unwrap();
        let _ = poll(&mut endpoint, start + ms(100));
        // The peer keeps sending, acknowledging only datagrams without the message.
        let mut at = start + ms(100);
        for seq in 0..40u16 {
            at += ms(1000);
            let _ = endpoint.next_datagram(at, 0);
            endpoint.on_datagram(Seq(seq), endpoint.next_seq.plus(u16::MAX), 0, at + ms(10));
            if endpoint.peer_gone(at + ms(10)).is_some() {
                break;
            }
        }
        assert_eq!(endpoint.peer_gone(at + ms(10)), Some(Gone::Unacknowledged));
        assert!(at + ms(10) >= start + ms(100) + idle, "not before the idle timeout");
        assert!(at < start + ms(100) + idle + ms(1000));
    }

    #[test]
    fn the_message_limit_counts_ids_from_the_oldest_unacknowledged() {
        let start = Instant::now();
        let mut config = Config::default();
        config.max_unacked_messages(2);
        let mut sender = Endpoint::new(config, start);
        sender.queue(0, 4).unwrap();
        sender.queue(1, 4).unwrap();
        let _ = poll(&mut sender, start);
        assert!(matches!(sender.queue(2, 4), Err(QueueError::MessagesFull(2))));
        sender.on_datagram(Seq(0), Seq(0), 0, start + ms(10));
        assert_eq!((sender.unacked_messages(), sender.unacked_bytes()), (0, 0));
        assert_eq!(sender.queue(2, 4).unwrap(), Seq(2));
        assert_eq!(sender.next_message_id(), Seq(3));
    }

    #[test]
    fn a_message_is_done_when_any_of_its_datagrams_is_acknowledged() {
        let start = Instant::now();
        let mut sender = endpoint(start);
        sender.queue(0, 4).unwrap();
        let _ = poll(&mut sender, start);
        let _ = poll(&mut sender, start + ms(250));
        let _ = poll(&mut sender, start + ms(750));
        // Only the first copy arrived, late.
        sender.on_datagram(Seq(0), Seq(2), 0b10, start + ms(800));
        assert_eq!(sender.unacked_messages(), 0);
        assert_eq!(sender.poll_timeout(), start + ms(1750), "no resend left: the keepalive");
    }
}
