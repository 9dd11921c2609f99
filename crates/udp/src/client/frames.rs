//! The client's copies of frames: its reliable frames until acknowledged, the server's reliable frames
//! that arrived ahead of a gap, and one pool of byte buffers behind both, so that steady traffic
//! allocates nothing.
//!
//! The reliability [`Endpoint`](crate::reliable::Endpoint) holds `()` for each message and this store
//! holds the bytes, by message id: the endpoint never says when it drops a message, but ids tell it.
//! Sent messages leave in id order once the endpoint's oldest unacknowledged id has passed them, and a
//! held message leaves when it is delivered.

use std::collections::VecDeque;

use gamewire_proto::RawFrame;

use crate::reliable::RECEIVE_WINDOW;
use crate::seq::Seq;

/// Frame buffers by message id, and the spare buffers they are taken from.
#[derive(Debug, Default)]
pub(super) struct Frames {
    /// The client's reliable frames from message `sent_first` on, consecutive ids (the endpoint's
    /// numbering, before the RESPONSE's offset).
    sent: VecDeque<Vec<u8>>,
    sent_first: Seq,
    /// The server's reliable frames received ahead of the next expected id, in slot `id % 256`:
    /// the same slots as the endpoint's reorder buffer, so a slot is taken exactly when the endpoint
    /// buffers that id. Allocated the first time a frame arrives out of order.
    held: Vec<Option<Vec<u8>>>,
    /// Buffers no one uses; they keep their capacity.
    spare: Vec<Vec<u8>>,
}

impl Frames {
    /// Keeps a copy of the reliable frame the endpoint queued as `id` (the next after the last one
    /// pushed).
    pub(super) fn push_sent(&mut self, id: Seq, frame: &[u8]) {
        if self.sent.is_empty() {
            self.sent_first = id;
        }
        debug_assert_eq!(id, self.sent_first.plus(self.sent.len() as u16), "ids are consecutive");
        let buffer = self.filled(&[frame]);
        self.sent.push_back(buffer);
    }

    /// The frame sent as message `id`, while the endpoint may still send it.
    pub(super) fn sent(&self, id: Seq) -> Option<RawFrame<'_>> {
        let index = usize::try_from(id.distance_from(self.sent_first)).ok()?;
        let (frame, _) = RawFrame::split_from(self.sent.get(index)?)?;
        Some(frame)
    }

    /// Recycles the frames of messages before `oldest`, the oldest the endpoint still holds.
    pub(super) fn release_sent_before(&mut self, oldest: Seq) {
        while !self.sent.is_empty() && oldest.is_newer_than(self.sent_first) {
            if let Some(buffer) = self.sent.pop_front() {
                self.spare.push(buffer);
            }
            self.sent_first = self.sent_first.next();
        }
    }

    /// Copies `frame`, received as message `id` ahead of the next expected one (less than
    /// [`RECEIVE_WINDOW`] ahead), unless a copy of `id` is held already.
    pub(super) fn hold(&mut self, id: Seq, frame: RawFrame<'_>) {
        if self.held.is_empty() {
            self.held.resize_with(RECEIVE_WINDOW, || None);
        }
        let slot = slot_of(id);
        if self.held[slot].is_none() {
            let buffer = self.filled(&[frame.header_bytes(), frame.payload()]);
            self.held[slot] = Some(buffer);
        }
    }

    /// Takes the held copy of message `id`, now delivered; give the buffer back with
    /// [`recycle`](Self::recycle).
    pub(super) fn take_held(&mut self, id: Seq) -> Option<Vec<u8>> {
        self.held.get_mut(slot_of(id))?.take()
    }

    /// Returns a buffer to the pool.
    pub(super) fn recycle(&mut self, buffer: Vec<u8>) {
        self.spare.push(buffer);
    }

    /// Frees everything: the client is closed.
    pub(super) fn clear(&mut self) {
        *self = Frames::default();
    }

    /// A spare buffer (or a new one, when the pool is empty) holding `parts` back to back.
    fn filled(&mut self, parts: &[&[u8]]) -> Vec<u8> {
        let mut buffer = self.spare.pop().unwrap_or_default();
        buffer.clear();
        for part in parts {
            buffer.extend_from_slice(part);
        }
        buffer
    }
}

fn slot_of(id: Seq) -> usize {
    usize::from(id.0) % RECEIVE_WINDOW
}

#[cfg(test)]
mod tests {
    use gamewire_proto::{Packet, encode_frame_to_vec};

    use super::*;

    fn chat(text: &str) -> Vec<u8> {
        encode_frame_to_vec(0, &Packet::Chat { text })
    }

    #[test]
    fn sent_frames_are_found_by_id_until_released_and_their_buffers_reused() {
        let mut frames = Frames::default();
        for (id, text) in [(65534, "a"), (65535, "b"), (0, "c")] {
            frames.push_sent(Seq(id), &chat(text));
        }
        assert_eq!(frames.sent(Seq(0)).unwrap().packet(), Ok(Packet::Chat { text: "c" }));
        assert!(frames.sent(Seq(1)).is_none() && frames.sent(Seq(65533)).is_none());
        frames.release_sent_before(Seq(0));
        assert!(frames.sent(Seq(65535)).is_none());
        assert_eq!(frames.spare.len(), 2);
        frames.push_sent(Seq(1), &chat("d"));
        assert_eq!(frames.spare.len(), 1, "a spare buffer was used");
        assert_eq!(frames.sent(Seq(1)).unwrap().packet(), Ok(Packet::Chat { text: "d" }));
    }

    #[test]
    fn a_held_frame_is_copied_once_and_taken_once() {
        let mut frames = Frames::default();
        let first = chat("first");
        let second = chat("second");
        let (frame, _) = RawFrame::split_from(&first).unwrap();
        frames.hold(Seq(3), frame);
        let (other, _) = RawFrame::split_from(&second).unwrap();
        frames.hold(Seq(3), other);
        let held = frames.take_held(Seq(3)).unwrap();
        assert_eq!(held, first, "the first copy is kept");
        assert!(frames.take_held(Seq(3)).is_none());
        frames.recycle(held);
        assert_eq!(frames.spare.len(), 1);
    }
}
