//! The peer's datagram numbers seen so far: the acks to send, and whether a datagram is new.

use crate::seq::Seq;

/// What to do with a received datagram, from its sequence number alone.
///
/// | verdict     | reliable messages      | unreliable frames |
/// |-------------|------------------------|-------------------|
/// | `Newest`    | pass to `on_reliable`  | accept            |
/// | `Late`      | pass to `on_reliable`  | drop (sequenced)  |
/// | `Duplicate` | drop the whole datagram                   ||
///
/// # Examples
///
/// ```
/// use gamewire_udp::reliable::{Config, DatagramVerdict, Endpoint};
/// use gamewire_udp::seq::Seq;
///
/// let now = std::time::Instant::now();
/// let mut endpoint = Endpoint::<Vec<u8>>::new(Config::default(), now);
/// let never_sent = (Seq(65535), 0); // what a peer acknowledges before it received anything
/// let verdict = |endpoint: &mut Endpoint<_>, seq| endpoint.on_datagram(Seq(seq), never_sent.0, never_sent.1, now);
/// assert_eq!(verdict(&mut endpoint, 1), DatagramVerdict::Newest);
/// assert_eq!(verdict(&mut endpoint, 0), DatagramVerdict::Late);
/// assert_eq!(verdict(&mut endpoint, 1), DatagramVerdict::Duplicate);
/// assert!(!DatagramVerdict::Late.accepts_unreliable() && DatagramVerdict::Late.accepts_reliable());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatagramVerdict {
    /// Newer than every datagram received before: all of it counts.
    Newest,
    /// Older than the newest received and not seen before (or too old to tell, more than 32 behind:
    /// its reliable messages are deduplicated by id anyway). Its unreliable frames are stale.
    Late,
    /// Received before: drop it without looking further.
    Duplicate,
}

impl DatagramVerdict {
    /// Whether the datagram's unreliable (sequenced) frames are to be used.
    pub fn accepts_unreliable(self) -> bool {
        self == DatagramVerdict::Newest
    }

    /// Whether the datagram's acknowledgements and reliable messages are to be used.
    pub fn accepts_reliable(self) -> bool {
        self != DatagramVerdict::Duplicate
    }
}

/// The newest sequence number received and which of the 32 before it were received too.
#[derive(Clone, Debug)]
pub(super) struct ReceivedDatagrams {
    /// Before anything is received: 65535, the number before the peer's first (0), so that the
    /// first datagram counts as following it.
    newest: Seq,
    /// Bit `i` set: `newest - 1 - i` was received.
    bits: u32,
    any: bool,
}

impl ReceivedDatagrams {
    pub(super) fn new() -> Self {
        ReceivedDatagrams { newest: Seq(u16::MAX), bits: 0, any: false }
    }

    /// Records datagram `seq`. Returns the verdict and whether `seq` directly follows the newest one
    /// before it (no datagram missing in between, at the time).
    pub(super) fn record(&mut self, seq: Seq) -> (DatagramVerdict, bool) {
        let ahead = seq.distance_from(self.newest);
        if ahead > 0 || !self.any {
            let follows = ahead == 1;
            // `ahead` is at most 32767 here (or anything when nothing was received: then the old
            // newest must not be marked, as it was never received).
            let shift = u32::try_from(ahead).unwrap_or(u32::MAX);
            self.bits = if self.any {
                self.bits.checked_shl(shift).unwrap_or(0) | 1u32.checked_shl(shift - 1).unwrap_or(0)
            } else {
                0
            };
            self.newest = seq;
            self.any = true;
            return (DatagramVerdict::Newest, follows);
        }
        if ahead == 0 {
            return (DatagramVerdict::Duplicate, false);
        }
        let behind = ahead.unsigned_abs();
        if behind > 32 {
            return (DatagramVerdict::Late, false);
        }
        let bit = 1u32 << (behind - 1);
        if self.bits & bit != 0 {
            return (DatagramVerdict::Duplicate, false);
        }
        self.bits |= bit;
        (DatagramVerdict::Late, false)
    }

    /// The `ack` to send: the newest sequence number received (65535 before any, which the peer
    /// cannot have sent yet and so ignores).
    pub(super) fn ack(&self) -> Seq {
        self.newest
    }

    /// The `ack_bits` to send: bit `i` set when `ack - 1 - i` was received.
    pub(super) fn ack_bits(&self) -> u32 {
        self.bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(seqs: &[u16]) -> ReceivedDatagrams {
        let mut received = ReceivedDatagrams::new();
        for &seq in seqs {
            received.record(Seq(seq));
        }
        received
    }

    #[test]
    fn ack_bits_mark_the_32_numbers_before_the_newest_that_arrived() {
        let r = received(&[0, 1, 3, 4]);
        assert_eq!((r.ack(), r.ack_bits()), (Seq(4), 0b1101));
        let r = received(&[4, 3, 1, 0]);
        assert_eq!((r.ack(), r.ack_bits()), (Seq(4), 0b1101), "the order of arrival does not matter");
        let r = received(&[0, 32]);
        assert_eq!((r.ack(), r.ack_bits()), (Seq(32), 1 << 31), "0 is 32 behind: bit 31, the last one");
        let r = received(&[0, 32, 33]);
        assert_eq!((r.ack(), r.ack_bits()), (Seq(33), 1), "0 is 33 behind: out of reach");
        let r = received(&[0, 33]);
        assert_eq!(r.ack_bits(), 0);
    }

    #[test]
    fn ack_bits_carry_across_the_wrap() {
        let r = received(&[65534, 65535, 1]);
        assert_eq!((r.ack(), r.ack_bits()), (Seq(1), 0b110));
    }

    #[test]
    fn before_anything_the_ack_names_the_number_before_zero_and_no_bits() {
        let r = received(&[]);
        assert_eq!((r.ack(), r.ack_bits()), (Seq(65535), 0));
        let mut r = ReceivedDatagrams::new();
        assert_eq!(r.record(Seq(0)), (DatagramVerdict::Newest, true), "0 follows the start");
        assert_eq!(r.ack_bits(), 0, "65535 was never received, so it is not acknowledged");
        let mut r = ReceivedDatagrams::new();
        assert_eq!(r.record(Seq(40000)), (DatagramVerdict::Newest, false), "anything is newest first");
        assert_eq!(r.record(Seq(40000)).0, DatagramVerdict::Duplicate);
    }

    #[test]
    fn late_and_duplicate_datagrams_are_told_apart_within_reach() {
        let mut r = received(&[10]);
        assert_eq!(r.record(Seq(11)), (DatagramVerdict::Newest, true));
        assert_eq!(r.record(Seq(14)), (DatagramVerdict::Newest, false), "12 and 13 missing");
        assert_eq!(r.record(Seq(12)), (DatagramVerdict::Late, false));
        assert_eq!(r.record(Seq(12)).0, DatagramVerdict::Duplicate);
        assert_eq!(r.record(Seq(14)).0, DatagramVerdict::Duplicate);
        assert_eq!(r.record(Seq(10)).0, DatagramVerdict::Duplicate);
        assert_eq!(
            r.record(Seq(14u16.wrapping_sub(33))).0,
            DatagramVerdict::Late,
            "33 behind: too old to tell"
        );
        assert_eq!(r.record(Seq(14u16.wrapping_sub(33))).0, DatagramVerdict::Late, "even twice");
    }
}
