//! The client's half of the handshake (docs/protocol.md §10.3): the resend schedule of CONNECT and
//! RESPONSE, and the reliable frames the RESPONSE carries.

use std::time::{Duration, Instant};

use gamewire_proto::{HEADER_LEN, RawFrame};

use crate::cookie::Cookie;
use crate::datagram::{
    MAX_RELIABLE_ITEMS, RELIABLE_PREFIX_LEN, RESPONSE_HEADER_LEN, RESPONSE_LEN, ReliableItem, write_response,
};
use crate::seq::Seq;

/// When to send a handshake datagram again: at once, then after `wait`, doubling, until the deadline.
#[derive(Clone, Copy, Debug)]
pub(super) struct Resends {
    next_at: Instant,
    wait: Duration,
    deadline: Instant,
    sent: u32,
}

impl Resends {
    /// A schedule whose first send is due at `now`.
    pub(super) fn new(now: Instant, first_wait: Duration, timeout: Duration) -> Resends {
        // An `Instant` too far to represent is as good as never.
        let deadline = now.checked_add(timeout).unwrap_or(now + Duration::from_secs(86_400 * 365));
        Resends { next_at: now, wait: first_wait, deadline, sent: 0 }
    }

    /// Whether a send is due at `now`: its time has come and the deadline has not.
    pub(super) fn is_due(&self, now: Instant) -> bool {
        now >= self.next_at && now < self.deadline
    }

    /// Records a send at `now`; returns whether it was a resend. The next one waits twice as long.
    pub(super) fn on_sent(&mut self, now: Instant) -> bool {
        // Timed from the actual send, so a caller that polls late does not get two sends in a row.
        self.next_at = now.checked_add(self.wait).unwrap_or(self.deadline);
        self.wait = self.wait.saturating_mul(2);
        self.sent += 1;
        self.sent > 1
    }

    /// Whether the client is to give up at `now`.
    pub(super) fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// The next send or the deadline, whichever comes first.
    pub(super) fn timeout(&self) -> Instant {
        self.next_at.min(self.deadline)
    }
}

/// The reliable frames that go in the RESPONSE as messages 0, 1, 2, ...: the HELLO first, then what
/// [`Client::send`](super::Client::send) gave before the CHALLENGE, as long as it fits.
///
/// It is frozen at the first frame that does not fit and when the CHALLENGE arrives: the RESPONSE is
/// resent as it was first sent, and a frame queued after one that went to the session must not
/// overtake it.
#[derive(Debug)]
pub(super) struct ResponseFrames {
    /// Frames back to back.
    frames: Vec<u8>,
    count: u8,
    frozen: bool,
}

impl ResponseFrames {
    /// Starts with the HELLO (checked by the caller to fit a RESPONSE).
    pub(super) fn new(hello: RawFrame<'_>) -> ResponseFrames {
        let mut frames = Vec::with_capacity(RESPONSE_LEN - RESPONSE_HEADER_LEN);
        frames.extend_from_slice(hello.header_bytes());
        frames.extend_from_slice(hello.payload());
        ResponseFrames { frames, count: 1, frozen: false }
    }

    /// Adds `frame` as the next message if the RESPONSE is not frozen and it fits; otherwise freezes
    /// it and returns false.
    pub(super) fn push(&mut self, frame: RawFrame<'_>) -> bool {
        if self.frozen {
            return false;
        }
        let used = RESPONSE_HEADER_LEN + self.frames.len() + usize::from(self.count) * RELIABLE_PREFIX_LEN;
        let needed = RELIABLE_PREFIX_LEN + HEADER_LEN + frame.payload().len();
        if used + needed > RESPONSE_LEN || usize::from(self.count) == MAX_RELIABLE_ITEMS {
            self.frozen = true;
            return false;
        }
        self.frames.extend_from_slice(frame.header_bytes());
        self.frames.extend_from_slice(frame.payload());
        self.count += 1;
        true
    }

    /// No frame is added from now on.
    pub(super) fn freeze(&mut self) {
        self.frozen = true;
    }

    /// How many messages the RESPONSE carries: the id of the first message the session sends.
    pub(super) fn count(&self) -> u8 {
        self.count
    }

    /// Writes the RESPONSE at the start of `buf`; returns its length ([`RESPONSE_LEN`]).
    pub(super) fn write(&self, buf: &mut [u8], client_nonce: u64, cookie: &Cookie) -> Option<usize> {
        // One small vector per RESPONSE sent: the handshake is not the steady state.
        let mut items = Vec::with_capacity(usize::from(self.count));
        let mut rest = &self.frames[..];
        while let Some((frame, after)) = RawFrame::split_from(rest) {
            items.push(ReliableItem { id: Seq(items.len() as u16), frame });
            rest = after;
        }
        write_response(buf, client_nonce, cookie, &items).ok()
    }

    /// Forgets the frames: the server has them (any DATA of the session acknowledges the RESPONSE).
    pub(super) fn release(&mut self) {
        self.frames = Vec::new();
        self.frozen = true;
    }
}

#[cfg(test)]
mod tests {
    use gamewire_proto::{Packet, encode_frame_to_vec};

    use super::*;
    use crate::datagram::{Datagram, MAX_DATAGRAM, MAX_FRAME_PAYLOAD};

    const fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn the_wait_doubles_from_250_ms_and_nothing_is_sent_from_the_deadline_on() {
        let start = Instant::now();
        let mut resends = Resends::new(start, ms(250), ms(5000));
        let mut sends = Vec::new();
        for at in (0..=6000).step_by(10) {
            let now = start + ms(at);
            if resends.is_due(now) {
                resends.on_sent(now);
                sends.push(at);
            }
        }
        assert_eq!(sends, [0, 250, 750, 1750, 3750]);
        assert_eq!(resends.timeout(), start + ms(5000), "the next would be at 7750");
        assert!(!resends.is_expired(start + ms(4999)) && resends.is_expired(start + ms(5000)));
    }

    #[test]
    fn frames_fill_the_response_until_one_does_not_fit_and_then_it_is_frozen() {
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
        let (hello, _) = RawFrame::split_from(&hello).unwrap();
        let mut response = ResponseFrames::new(hello);
        let chat = encode_frame_to_vec(0, &Packet::Chat { text: &"x".repeat(256) });
        let (chat, _) = RawFrame::split_from(&chat).unwrap();
        // 32 + 17 + n x 270 <= 1200: 4 CHATs of 256 bytes fit.
        assert_eq!((0..5).map(|_| response.push(chat)).collect::<Vec<_>>(), [true, true, true, true, false]);
        let small = encode_frame_to_vec(0, &Packet::Ping { payload: b"" });
        let (small, _) = RawFrame::split_from(&small).unwrap();
        assert!(!response.push(small), "frozen: it would overtake the CHAT that did not fit");
        assert_eq!(response.count(), 5);

        let mut buf = [0; MAX_DATAGRAM];
        assert_eq!(response.write(&mut buf, 9, &Cookie::from_bytes([1; 20])), Some(RESPONSE_LEN));
        let Ok(Datagram::Response(parsed)) = Datagram::parse(&buf, 1024) else { panic!("a RESPONSE") };
        assert!(parsed.reliable().map(|item| item.id).eq((0..5).map(Seq)));
    }

    #[test]
    fn the_largest_frame_fits_alone() {
        let big = encode_frame_to_vec(0, &Packet::Chat { text: "x" });
        let (hello, _) = RawFrame::split_from(&big).unwrap();
        let mut response = ResponseFrames::new(hello);
        let mut largest = vec![0; HEADER_LEN + MAX_FRAME_PAYLOAD];
        largest[8..12].copy_from_slice(&(MAX_FRAME_PAYLOAD as u32).to_le_bytes());
        let (largest, _) = RawFrame::split_from(&largest).unwrap();
        assert!(!response.push(largest), "not after a HELLO");
        let mut alone = ResponseFrames::new(largest);
        let mut buf = [0; MAX_DATAGRAM];
        assert_eq!(alone.write(&mut buf, 1, &Cookie::from_bytes([0; 20])), Some(RESPONSE_LEN));
        alone.freeze();
        assert!(!alone.push(hello));
    }
}
