//! Which reliable message ids went into which sent datagram, and when.

use std::collections::VecDeque;
use std::time::Instant;

use crate::seq::Seq;

/// Datagrams whose sequence numbers directly follow each other.
struct SentDatagram {
    seq: Seq,
    sent_at: Instant,
    /// Position of its first message id in the log's id ring, counted since the log began (so that
    /// it survives ids being popped from the front).
    first_id: usize,
    id_count: usize,
    acked: bool,
}

/// What was learnt from a newly acknowledged datagram.
#[derive(Clone, Copy, Debug)]
pub(super) struct Acked {
    pub(super) sent_at: Instant,
    pub(super) carried_messages: bool,
}

/// The record of sent datagrams, oldest first, consecutive sequence numbers.
///
/// A datagram's message ids live in one shared ring of ids (each datagram's ids are contiguous in it,
/// in datagram order), so a datagram costs no allocation of its own. Records leave from the front:
/// once acknowledged, once 33 or more datagrams behind the newest acknowledged one (an ack covers
/// only 33 datagrams, and the peer's ack never goes back, so those can no longer be acknowledged),
/// or when there are `capacity` of them. Both rings grow up to their bounds (`capacity` records and
/// `capacity x max_messages_per_datagram` ids) and keep their capacity.
pub(super) struct SentLog {
    datagrams: VecDeque<SentDatagram>,
    ids: VecDeque<Seq>,
    /// How many ids were ever popped from `ids`: the position of `ids[0]`.
    ids_popped: usize,
    capacity: usize,
    newest_acked: Option<Seq>,
}

impl SentLog {
    pub(super) fn new(capacity: usize) -> Self {
        SentLog {
            datagrams: VecDeque::with_capacity(capacity.min(32)),
            ids: VecDeque::with_capacity(64),
            ids_popped: 0,
            capacity,
            newest_acked: None,
        }
    }

    /// Starts the record of datagram `seq`, which must follow the previous one.
    pub(super) fn begin(&mut self, seq: Seq, sent_at: Instant) {
        debug_assert!(self.datagrams.back().is_none_or(|last| last.seq.next() == seq));
        if self.datagrams.len() >= self.capacity {
            self.pop_front();
        }
        let first_id = self.ids_popped + self.ids.len();
        self.datagrams.push_back(SentDatagram { seq, sent_at, first_id, id_count: 0, acked: false });
    }

    /// Adds a message id to the datagram begun last.
    pub(super) fn push_id(&mut self, id: Seq) {
        if let Some(last) = self.datagrams.back_mut() {
            self.ids.push_back(id);
            last.id_count += 1;
        }
    }

    /// The message ids of the datagram begun last.
    pub(super) fn last_ids(&self) -> std::collections::vec_deque::Iter<'_, Seq> {
        match self.datagrams.back() {
            Some(last) => {
                let start = last.first_id - self.ids_popped;
                self.ids.range(start..start + last.id_count)
            }
            None => self.ids.range(0..0),
        }
    }

    /// Marks datagram `seq` acknowledged and calls `carried` with each message id it carried.
    /// Returns `None` if it was acknowledged already or is not (or no longer) in the log, which
    /// includes sequence numbers never sent.
    pub(super) fn acknowledge(&mut self, seq: Seq, mut carried: impl FnMut(Seq)) -> Option<Acked> {
        let front = self.datagrams.front()?.seq;
        let index = usize::try_from(seq.distance_from(front)).ok()?;
        let datagram = self.datagrams.get_mut(index)?;
        if datagram.acked {
            return None;
        }
        datagram.acked = true;
        if self.newest_acked.is_none_or(|newest| seq.is_newer_than(newest)) {
            self.newest_acked = Some(seq);
        }
        let start = datagram.first_id - self.ids_popped;
        let acked = Acked { sent_at: datagram.sent_at, carried_messages: datagram.id_count > 0 };
        for &id in self.ids.range(start..start + datagram.id_count) {
            carried(id);
        }
        Some(acked)
    }

    /// Forgets the datagrams that are acknowledged or can no longer be, from the front.
    pub(super) fn prune(&mut self) {
        while let Some(front) = self.datagrams.front() {
            let unackable = self.newest_acked.is_some_and(|newest| newest.distance_from(front.seq) > 32);
            if !(front.acked || unackable) {
                break;
            }
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(front) = self.datagrams.pop_front() {
            self.ids.drain(..front.id_count);
            self.ids_popped += front.id_count;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.datagrams.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ids_of(log: &mut SentLog, seq: Seq) -> Option<Vec<Seq>> {
        let mut ids = Vec::new();
        log.acknowledge(seq, |id| ids.push(id)).map(|_| ids)
    }

    #[test]
    fn an_ack_returns_the_ids_the_datagram_carried_once() {
        let now = Instant::now();
        let mut log = SentLog::new(256);
        log.begin(Seq(0), now);
        log.push_id(Seq(7));
        log.push_id(Seq(8));
        log.begin(Seq(1), now + Duration::from_millis(5));
        log.begin(Seq(2), now);
        log.push_id(Seq(7));
        assert_eq!(log.last_ids().copied().collect::<Vec<_>>(), [Seq(7)]);
        assert_eq!(ids_of(&mut log, Seq(1)), Some(vec![]));
        assert_eq!(ids_of(&mut log, Seq(0)), Some(vec![Seq(7), Seq(8)]));
        assert_eq!(ids_of(&mut log, Seq(0)), None, "already acknowledged");
        assert_eq!(ids_of(&mut log, Seq(3)), None, "never sent");
        assert_eq!(ids_of(&mut log, Seq(65535)), None, "never sent either");
        log.prune();
        assert_eq!(log.len(), 1, "the acknowledged front went");
        assert_eq!(ids_of(&mut log, Seq(2)), Some(vec![Seq(7)]));
    }

    #[test]
    fn datagrams_more_than_32_behind_the_newest_acknowledged_are_forgotten() {
        let now = Instant::now();
        let mut log = SentLog::new(256);
        for seq in 65500..65500 + 40 {
            log.begin(Seq(seq as u16), now);
            log.push_id(Seq(seq as u16));
        }
        let newest = Seq(65500u16.wrapping_add(39));
        assert!(ids_of(&mut log, newest).is_some());
        log.prune();
        // 32 behind the newest can still be acknowledged: 39 - 32 = 7, so 7 datagrams go.
        assert_eq!(log.len(), 33);
        assert_eq!(ids_of(&mut log, Seq(65506)), None);
        assert_eq!(ids_of(&mut log, Seq(65507)), Some(vec![Seq(65507)]));
    }

    #[test]
    fn a_full_log_forgets_its_oldest_datagram() {
        let now = Instant::now();
        let mut log = SentLog::new(33);
        for seq in 0..34u16 {
            log.begin(Seq(seq), now);
            log.push_id(Seq(1000 + seq));
        }
        assert_eq!(log.len(), 33);
        assert_eq!(ids_of(&mut log, Seq(0)), None);
        assert_eq!(ids_of(&mut log, Seq(1)), Some(vec![Seq(1001)]));
        assert_eq!(ids_of(&mut log, Seq(33)), Some(vec![Seq(1033)]));
    }
}
