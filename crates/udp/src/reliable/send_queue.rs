//! Reliable messages queued or sent and not yet acknowledged, with their resend timers.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::seq::Seq;

/// Why [`Endpoint::queue`](super::Endpoint::queue) refused a message; the message comes back with it.
///
/// `MessagesFull` and `BytesFull` mean the peer does not acknowledge as fast as messages are queued:
/// the server cuts such a client with SLOW_CONSUMER, as it does on TCP.
///
/// # Examples
///
/// ```
/// use gamewire_udp::reliable::{Config, Endpoint, QueueError};
///
/// let mut config = Config::default();
/// config.max_unacked_bytes(100);
/// let mut endpoint = Endpoint::new(config, std::time::Instant::now());
/// endpoint.queue(vec![0u8; 60], 60).unwrap();
/// let refused = endpoint.queue(vec![1u8; 60], 60).unwrap_err();
/// assert!(matches!(refused, QueueError::BytesFull(_)));
/// assert_eq!(refused.into_message(), vec![1u8; 60]);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueError<M> {
    /// [`Config::max_unacked_messages`](super::Config::max_unacked_messages) would be exceeded.
    MessagesFull(M),
    /// [`Config::max_unacked_bytes`](super::Config::max_unacked_bytes) would be exceeded.
    BytesFull(M),
    /// The message is bigger than [`Config::max_message_size`](super::Config::max_message_size).
    TooLarge(M),
}

impl<M> QueueError<M> {
    /// The message that was not queued.
    pub fn into_message(self) -> M {
        match self {
            QueueError::MessagesFull(message)
            | QueueError::BytesFull(message)
            | QueueError::TooLarge(message) => message,
        }
    }
}

// By hand rather than derived: the message may be large or not `Debug`, and it is not what the error
// is about.
impl<M> fmt::Debug for QueueError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            QueueError::MessagesFull(_) => "MessagesFull",
            QueueError::BytesFull(_) => "BytesFull",
            QueueError::TooLarge(_) => "TooLarge",
        };
        f.debug_tuple(name).finish_non_exhaustive()
    }
}

impl<M> fmt::Display for QueueError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueError::MessagesFull(_) => "too many reliable messages wait for an acknowledgement",
            QueueError::BytesFull(_) => "too many bytes of reliable messages wait for an acknowledgement",
            QueueError::TooLarge(_) => "reliable message larger than the largest that fits a datagram",
        })
    }
}

impl<M> std::error::Error for QueueError<M> {}

/// One queued message.
struct Pending<M> {
    message: M,
    size: usize,
    /// `None` until it first goes into a datagram.
    sent: Option<Sent>,
}

#[derive(Clone, Copy)]
struct Sent {
    resend_at: Instant,
    /// Datagrams it went into so far (1 after the first send).
    sends: u32,
}

/// What [`SendQueue::select`] needs to know about timing.
#[derive(Clone, Copy)]
pub(super) struct ResendTimer {
    /// The resend timeout for a first send (from the RTT estimate).
    pub(super) timeout: Duration,
    /// Cap of the backoff.
    pub(super) max: Duration,
}

impl ResendTimer {
    /// How long to wait after the `sends`-th send: doubled for each send after the first, capped.
    pub(super) fn after_send(self, sends: u32) -> Duration {
        // 2^10 x the smallest sensible timeout is already far above any sensible cap.
        let doublings = sends.saturating_sub(1).min(10);
        self.timeout.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Messages from the oldest unacknowledged id to the newest queued one, indexed by id.
///
/// A ring (`VecDeque`) of slots: slot `i` holds message id `oldest + i`, or `None` once it was
/// acknowledged (a hole until the older ones are acknowledged too, then popped). Never-sent messages
/// are always the last `unsent` slots, because they are sent in id order. The ring grows by doubling
/// up to the message limit and keeps its capacity, so a steady state allocates nothing.
pub(super) struct SendQueue<M> {
    slots: VecDeque<Option<Pending<M>>>,
    oldest: Seq,
    unsent: usize,
    awaiting: usize,
    bytes: usize,
}

impl<M> SendQueue<M> {
    pub(super) fn new() -> Self {
        SendQueue { slots: VecDeque::with_capacity(16), oldest: Seq(0), unsent: 0, awaiting: 0, bytes: 0 }
    }

    /// Appends a message with the next id, within the limits.
    pub(super) fn push(
        &mut self,
        message: M,
        size: usize,
        max_messages: usize,
        max_bytes: usize,
        max_size: usize,
    ) -> Result<Seq, QueueError<M>> {
        if size > max_size {
            return Err(QueueError::TooLarge(message));
        }
        if self.slots.len() >= max_messages {
            return Err(QueueError::MessagesFull(message));
        }
        if self.bytes.saturating_add(size) > max_bytes {
            return Err(QueueError::BytesFull(message));
        }
        let id = self.next_id();
        self.slots.push_back(Some(Pending { message, size, sent: None }));
        self.unsent += 1;
        self.bytes += size;
        Ok(id)
    }

    /// The id the next queued message gets.
    pub(super) fn next_id(&self) -> Seq {
        // The ring never holds more than RECEIVE_WINDOW slots, so the cast is exact.
        self.oldest.plus(self.slots.len() as u16)
    }

    /// Ids from the oldest unacknowledged to the newest queued, holes included.
    pub(super) fn span(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages sent at least once and not acknowledged.
    pub(super) fn awaiting(&self) -> usize {
        self.awaiting
    }

    pub(super) fn unsent(&self) -> usize {
        self.unsent
    }

    /// The message with this id, if it is still queued.
    pub(super) fn get(&self, id: Seq) -> Option<&M> {
        let index = usize::try_from(id.distance_from(self.oldest)).ok()?;
        self.slots.get(index)?.as_ref().map(|pending| &pending.message)
    }

    /// Drops the message `id` because a datagram carrying it was acknowledged. Returns whether it
    /// was still there. Ids never sent, already freed or out of range are ignored (an ack names
    /// datagrams, and an old datagram may name a message freed long ago).
    pub(super) fn acknowledge(&mut self, id: Seq) -> bool {
        let Ok(index) = usize::try_from(id.distance_from(self.oldest)) else { return false };
        let Some(slot) = self.slots.get_mut(index) else { return false };
        let Some(pending) = slot.take_if(|pending| pending.sent.is_some()) else { return false };
        self.bytes -= pending.size;
        self.awaiting -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.oldest = self.oldest.next();
        }
        true
    }

    /// Whether a datagram with `budget` bytes for messages would carry at least one: a resend that is
    /// due or the oldest never-sent message, and it fits. O(messages in flight).
    pub(super) fn has_sendable(&self, now: Instant, budget: usize) -> bool {
        let first_unsent = self.slots.len() - self.unsent;
        let due =
            self.slots.range(..first_unsent).flatten().any(|pending| {
                pending.size <= budget && pending.sent.is_some_and(|sent| sent.resend_at <= now)
            });
        due || self
            .slots
            .get(first_unsent)
            .and_then(Option::as_ref)
            .is_some_and(|pending| pending.size <= budget)
    }

    /// Picks the messages for the next datagram and marks them sent at `now`: resends that are due,
    /// oldest first, then never-sent messages in id order, while they fit `budget` bytes and
    /// `max_messages`. A due resend that does not fit is skipped (a smaller one may); the never-sent
    /// ones stop at the first that does not fit, so that they stay a suffix of the ring. Calls
    /// `chosen` with each picked id and returns how many. O(messages in flight).
    pub(super) fn select(
        &mut self,
        now: Instant,
        mut budget: usize,
        max_messages: usize,
        timer: ResendTimer,
        mut chosen: impl FnMut(Seq),
    ) -> usize {
        let mut count = 0;
        let first_unsent = self.slots.len() - self.unsent;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if count == max_messages {
                break;
            }
            let Some(pending) = slot else { continue };
            let resend = match pending.sent {
                Some(sent) => sent.resend_at <= now,
                None => false,
            };
            let first_send = index >= first_unsent;
            if !resend && !first_send {
                continue;
            }
            if pending.size > budget {
                if first_send {
                    break;
                }
                continue;
            }
            budget -= pending.size;
            let sends = pending.sent.map_or(1, |sent| sent.sends.saturating_add(1));
            pending.sent = Some(Sent { resend_at: now + timer.after_send(sends), sends });
            if first_send {
                self.unsent -= 1;
                self.awaiting += 1;
            }
            // `index` < RECEIVE_WINDOW, so the cast is exact.
            chosen(self.oldest.plus(index as u16));
            count += 1;
        }
        count
    }

    /// Makes the oldest messages awaiting an ack due at `now`, as many as one datagram with `budget`
    /// bytes and `max_messages` would carry, in the order [`select`](Self::select) picks them; their
    /// backoff is kept. Returns how many. O(messages in flight).
    pub(super) fn expedite(&mut self, now: Instant, mut budget: usize, max_messages: usize) -> usize {
        let first_unsent = self.slots.len() - self.unsent;
        let mut count = 0;
        for pending in self.slots.range_mut(..first_unsent).flatten() {
            if count == max_messages {
                break;
            }
            let Some(sent) = pending.sent.as_mut() else { continue };
            if pending.size > budget {
                continue;
            }
            budget -= pending.size;
            sent.resend_at = sent.resend_at.min(now);
            count += 1;
        }
        count
    }

    /// When the earliest resend falls due, if any message awaits an ack. O(messages in flight).
    pub(super) fn next_resend(&self) -> Option<Instant> {
        self.slots.iter().flatten().filter_map(|pending| pending.sent.map(|sent| sent.resend_at)).min()
    }

    /// How many times message `id` was sent, if it is still queued.
    #[cfg(test)]
    pub(super) fn sends(&self, id: Seq) -> Option<u32> {
        let index = usize::try_from(id.distance_from(self.oldest)).ok()?;
        Some(self.slots.get(index)?.as_ref()?.sent.map_or(0, |sent| sent.sends))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    const TIMER: ResendTimer = ResendTimer { timeout: ms(100), max: ms(1000) };

    fn queue_of(sizes: &[usize]) -> SendQueue<usize> {
        let mut queue = SendQueue::new();
        for (i, &size) in sizes.iter().enumerate() {
            queue.push(i, size, 256, usize::MAX, usize::MAX).unwrap();
        }
        queue
    }

    fn select(queue: &mut SendQueue<usize>, now: Instant, budget: usize, max: usize) -> Vec<u16> {
        let mut ids = Vec::new();
        let count = queue.select(now, budget, max, TIMER, |id| ids.push(id.0));
        assert_eq!(count, ids.len());
        ids
    }

    #[test]
    fn the_backoff_doubles_per_send_up_to_the_cap() {
        let waits: Vec<_> = (1..=6).map(|sends| TIMER.after_send(sends)).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(TIMER.after_send(u32::MAX), ms(1000));
        assert_eq!(ResendTimer { timeout: Duration::MAX, max: Duration::MAX }.after_send(40), Duration::MAX);
    }

    #[test]
    fn due_resends_go_first_oldest_first_then_new_messages_in_order() {
        let start = Instant::now();
        let mut queue = queue_of(&[10, 10, 10]);
        assert_eq!(select(&mut queue, start, 20, 32), [0, 1], "the third does not fit");
        queue.push(3, 10, 256, usize::MAX, usize::MAX).unwrap();
        assert_eq!(select(&mut queue, start + ms(50), 100, 32), [2, 3], "nothing due yet");
        assert_eq!(select(&mut queue, start + ms(100), 100, 32), [0, 1], "0 and 1 are due");
        assert_eq!(queue.sends(Seq(0)), Some(2));
        assert_eq!(select(&mut queue, start + ms(150), 100, 32), [2, 3]);
        assert_eq!(select(&mut queue, start + ms(299), 100, 32), [] as [u16; 0], "the second wait is 200 ms");
        assert_eq!(select(&mut queue, start + ms(300), 100, 1), [0], "at most one per datagram here");
        assert_eq!(queue.next_resend(), Some(start + ms(300)), "1 is due since 300 ms");
    }

    #[test]
    fn a_due_resend_too_big_is_skipped_but_a_new_message_too_big_waits_for_the_next_datagram() {
        let start = Instant::now();
        let mut queue = queue_of(&[50, 10]);
        select(&mut queue, start, 100, 32);
        queue.push(2, 50, 256, usize::MAX, usize::MAX).unwrap();
        queue.push(3, 10, 256, usize::MAX, usize::MAX).unwrap();
        assert_eq!(select(&mut queue, start + ms(100), 30, 32), [1], "0 is skipped; 2 blocks 3");
        assert!(!queue.has_sendable(start + ms(100), 30));
        assert!(queue.has_sendable(start + ms(100), 50));
        assert_eq!(select(&mut queue, start + ms(100), 200, 32), [0, 2, 3]);
    }

    #[test]
    fn expedited_messages_are_the_oldest_in_flight_that_fit_one_datagram() {
        let start = Instant::now();
        let mut queue = queue_of(&[10, 30, 10, 10]);
        select(&mut queue, start, 100, 32);
        queue.push(4, 10, 256, usize::MAX, usize::MAX).unwrap();
        assert_eq!(queue.expedite(start + ms(1), 25, 32), 2, "0 and 2: 1 is too big, 4 was never sent");
        assert_eq!(select(&mut queue, start + ms(1), 25, 32), [0, 2]);
        assert_eq!(queue.expedite(start + ms(2), 100, 1), 1, "at most one here");
        assert_eq!(select(&mut queue, start + ms(2), 100, 32), [0, 4], "0 again, then the never-sent 4");
    }

    #[test]
    fn acknowledged_messages_leave_and_the_oldest_id_moves_past_holes() {
        let start = Instant::now();
        let mut queue = queue_of(&[1, 2, 3]);
        assert!(!queue.acknowledge(Seq(0)), "never sent: cannot be acknowledged");
        select(&mut queue, start, 100, 32);
        assert!(queue.acknowledge(Seq(1)));
        assert!(!queue.acknowledge(Seq(1)), "only once");
        assert_eq!((queue.span(), queue.bytes(), queue.awaiting()), (3, 4, 2), "1 is a hole");
        assert!(queue.acknowledge(Seq(0)));
        assert_eq!((queue.span(), queue.next_id()), (1, Seq(3)));
        assert!(!queue.acknowledge(Seq(65535)) && !queue.acknowledge(Seq(9)), "out of range");
        assert_eq!(queue.get(Seq(2)), Some(&2));
    }

    #[test]
    fn the_limits_count_the_id_span_and_the_bytes() {
        let mut queue = SendQueue::new();
        assert!(matches!(queue.push(0, 11, 2, 20, 10), Err(QueueError::TooLarge(0))));
        queue.push(0, 10, 2, 20, 10).unwrap();
        assert!(matches!(queue.push(1, 10, 2, 19, 10), Err(QueueError::BytesFull(1))));
        queue.push(1, 10, 2, 20, 10).unwrap();
        select(&mut queue, Instant::now(), 100, 32);
        queue.acknowledge(Seq(1));
        assert!(
            matches!(queue.push(2, 1, 2, 20, 10), Err(QueueError::MessagesFull(2))),
            "0 still holds the span"
        );
        queue.acknowledge(Seq(0));
        assert_eq!(queue.push(2, 10, 2, 20, 10).unwrap(), Seq(2));
    }
}
