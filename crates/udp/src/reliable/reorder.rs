//! Received reliable messages put back in message-id order: delivered once each, in order.

use std::fmt;

use super::RECEIVE_WINDOW;
use crate::seq::Seq;

/// What happened to one received reliable message.
///
/// # Examples
///
/// ```
/// use gamewire_udp::reliable::{Config, Endpoint, ReliableVerdict};
/// use gamewire_udp::seq::Seq;
///
/// let mut endpoint = Endpoint::new(Config::default(), std::time::Instant::now());
/// assert_eq!(endpoint.on_reliable(Seq(1), "b").verdict(), ReliableVerdict::Buffered);
/// assert_eq!(endpoint.on_reliable(Seq(300), "z").verdict(), ReliableVerdict::BeyondWindow);
/// let delivery = endpoint.on_reliable(Seq(0), "a");
/// assert_eq!(delivery.verdict(), ReliableVerdict::Delivered);
/// assert_eq!(delivery.collect::<Vec<_>>(), ["a", "b"]);
/// assert_eq!(endpoint.on_reliable(Seq(1), "b").verdict(), ReliableVerdict::Duplicate);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReliableVerdict {
    /// It was the next expected message: it is delivered, with any buffered successors.
    Delivered,
    /// It is ahead of the next expected one, within the window: kept until the gap is filled.
    Buffered,
    /// Delivered or buffered already: dropped.
    Duplicate,
    /// [`RECEIVE_WINDOW`] or more ids ahead of the next expected one: dropped. An [`Endpoint`]
    /// never sends this far ahead. A sender that does loses the message: acknowledgements name
    /// datagrams, and the datagram that carried it is acknowledged.
    ///
    /// [`Endpoint`]: super::Endpoint
    BeyondWindow,
}

/// Messages received ahead of the next expected id, in a ring of [`RECEIVE_WINDOW`] slots indexed by
/// id. The ring is allocated the first time a message arrives out of order, never again.
pub(super) struct ReorderBuffer<M> {
    slots: Vec<Option<M>>,
    next: Seq,
    buffered: usize,
}

impl<M> ReorderBuffer<M> {
    pub(super) fn new() -> Self {
        ReorderBuffer { slots: Vec::new(), next: Seq(0), buffered: 0 }
    }

    /// The id of the next message to deliver.
    pub(super) fn next_expected(&self) -> Seq {
        self.next
    }

    /// Messages received out of order and waiting for the gap before them.
    pub(super) fn buffered(&self) -> usize {
        self.buffered
    }

    pub(super) fn receive(&mut self, id: Seq, message: M) -> Delivery<'_, M> {
        let ahead = id.distance_from(self.next);
        let (verdict, first) = match ahead {
            ..0 => (ReliableVerdict::Duplicate, None),
            0 => (ReliableVerdict::Delivered, Some(message)),
            _ if ahead >= RECEIVE_WINDOW as i32 => (ReliableVerdict::BeyondWindow, None),
            _ => {
                if self.slots.is_empty() {
                    self.slots.resize_with(RECEIVE_WINDOW, || None);
                }
                let slot = &mut self.slots[slot_of(id)];
                if slot.is_some() {
                    (ReliableVerdict::Duplicate, None)
                } else {
                    *slot = Some(message);
                    self.buffered += 1;
                    (ReliableVerdict::Buffered, None)
                }
            }
        };
        Delivery { verdict, first, buffer: self }
    }
}

fn slot_of(id: Seq) -> usize {
    usize::from(id.0) % RECEIVE_WINDOW
}

/// The messages one [`Endpoint::on_reliable`](super::Endpoint::on_reliable) call delivers, in order:
/// the message passed in if it was the next expected one, then the buffered ones that follow it
/// without a gap. Empty unless the verdict is [`ReliableVerdict::Delivered`].
///
/// Each message leaves the endpoint as the iterator yields it. Like [`Vec::drain`], dropping the
/// iterator early discards the messages not yet taken (the peer will not send them again: they are
/// acknowledged), so take them all.
#[must_use = "dropping the delivery discards the messages it holds"]
pub struct Delivery<'a, M> {
    verdict: ReliableVerdict,
    first: Option<M>,
    buffer: &'a mut ReorderBuffer<M>,
}

impl<M> Delivery<'_, M> {
    /// What happened to the message passed in.
    pub fn verdict(&self) -> ReliableVerdict {
        self.verdict
    }
}

impl<M> Iterator for Delivery<'_, M> {
    type Item = M;

    fn next(&mut self) -> Option<M> {
        let message = match self.first.take() {
            Some(message) => message,
            None if self.buffer.buffered == 0 => return None,
            None => {
                // Only reached after `first` was yielded (the slot of the next expected id is always
                // empty between calls), so this drains exactly the successors of the message passed in.
                if self.verdict != ReliableVerdict::Delivered {
                    return None;
                }
                let message = self.buffer.slots[slot_of(self.buffer.next)].take()?;
                self.buffer.buffered -= 1;
                message
            }
        };
        self.buffer.next = self.buffer.next.next();
        Some(message)
    }
}

impl<M> Drop for Delivery<'_, M> {
    fn drop(&mut self) {
        // Keeps the invariant `next` relies on: nothing deliverable stays behind.
        for _ in self.by_ref() {}
    }
}

impl<M> fmt::Debug for Delivery<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery").field("verdict", &self.verdict).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(buffer: &mut ReorderBuffer<u16>, id: u16) -> (ReliableVerdict, Vec<u16>) {
        let delivery = buffer.receive(Seq(id), id);
        (delivery.verdict(), delivery.collect())
    }

    #[test]
    fn the_window_holds_255_ids_ahead_of_the_next_expected_one() {
        let mut buffer = ReorderBuffer::new();
        assert_eq!(receive(&mut buffer, 256), (ReliableVerdict::BeyondWindow, vec![]));
        assert_eq!(receive(&mut buffer, 255), (ReliableVerdict::Buffered, vec![]));
        assert_eq!(receive(&mut buffer, 65535), (ReliableVerdict::Duplicate, vec![]), "one behind");
        assert_eq!(receive(&mut buffer, 0), (ReliableVerdict::Delivered, vec![0]), "255 waits for 1..255");
        assert_eq!(receive(&mut buffer, 256), (ReliableVerdict::Buffered, vec![]), "the window moved by one");
        assert_eq!(receive(&mut buffer, 257), (ReliableVerdict::BeyondWindow, vec![]));
        assert_eq!(buffer.buffered(), 2);
    }

    #[test]
    fn a_gap_filled_delivers_everything_after_it_in_order_once() {
        let mut buffer = ReorderBuffer::new();
        for id in [3, 2, 5, 3] {
            receive(&mut buffer, id);
        }
        assert_eq!(receive(&mut buffer, 1), (ReliableVerdict::Buffered, vec![]));
        assert_eq!(receive(&mut buffer, 0), (ReliableVerdict::Delivered, vec![0, 1, 2, 3]));
        assert_eq!(buffer.next_expected(), Seq(4));
        assert_eq!(receive(&mut buffer, 2), (ReliableVerdict::Duplicate, vec![]));
        assert_eq!(receive(&mut buffer, 4), (ReliableVerdict::Delivered, vec![4, 5]));
        assert_eq!(buffer.buffered(), 0);
    }

    #[test]
    fn dropping_a_delivery_early_discards_the_rest_and_keeps_the_order() {
        let mut buffer = ReorderBuffer::new();
        receive(&mut buffer, 1);
        receive(&mut buffer, 2);
        let mut delivery = buffer.receive(Seq(0), 0);
        assert_eq!(delivery.next(), Some(0));
        drop(delivery);
        assert_eq!(buffer.next_expected(), Seq(3));
        assert_eq!(receive(&mut buffer, 3), (ReliableVerdict::Delivered, vec![3]));
    }

    #[test]
    fn ids_wrap_around_the_circle() {
        let mut buffer = ReorderBuffer { slots: Vec::new(), next: Seq(65534), buffered: 0 };
        assert_eq!(receive(&mut buffer, 0), (ReliableVerdict::Buffered, vec![]));
        assert_eq!(receive(&mut buffer, 65535), (ReliableVerdict::Buffered, vec![]));
        assert_eq!(receive(&mut buffer, 65534), (ReliableVerdict::Delivered, vec![65534, 65535, 0]));
        assert_eq!(buffer.next_expected(), Seq(1));
    }
}
