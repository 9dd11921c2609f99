//! The world's [`Outbox`] on the server: each frame encoded once into pooled memory, then a shared
//! reference queued for every recipient.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use gamewire_pool::{ChunkMut, Pool, PoolBytes};
use gamewire_proto::{Channel, Encode, encode_frame, encode_frame_to_vec, frame_len};
use gamewire_world::{Outbox, PlayerId, Recipients};

use crate::send_queue::{ENTRY_BYTES, SendQueue};

/// [`Outbound::sender`] while the game runs a tick or a command: there is no sender.
pub(crate) const NO_SENDER: usize = usize::MAX;

/// Encodes frames into pool chunks, many small frames carved one after another from the same chunk.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    pool: Pool,
    current: Option<ChunkMut>,
    /// Frames that went to the heap because the pool was exhausted (or the frame exceeded a chunk).
    pub(crate) heap_fallbacks: u64,
}

impl FrameWriter {
    pub(crate) fn new(pool: Pool) -> Self {
        FrameWriter { pool, current: None, heap_fallbacks: 0 }
    }

    /// The frame `player_id` + `packet`, encoded once. Never fails: when the pool is exhausted the frame
    /// goes to the heap (counted), and the event loop stops reading until chunks come back, so that a
    /// frame the world already produced is never dropped.
    pub(crate) fn encode<P: Encode + ?Sized>(&mut self, player_id: u32, packet: &P) -> PoolBytes {
        let len = frame_len(packet);
        if self.current.as_ref().is_none_or(|chunk| chunk.remaining() < len) {
            // Dropping the old chunk releases only the writer's reference: frames carved from it keep
            // it alive until their last recipient has written them.
            self.current = if len <= self.pool.chunk_size() { self.pool.try_alloc() } else { None };
        }
        match &mut self.current {
            Some(chunk) => {
                encode_frame(player_id, packet, chunk.spare_mut());
                chunk.advance(len);
                chunk.freeze()
            }
            None => {
                self.heap_fallbacks += 1;
                PoolBytes::from_vec(encode_frame_to_vec(player_id, packet))
            }
        }
    }
}

/// The frames queued for a UDP session between two flushes, each with its channel: at flush they
/// move (refcounts, no copy) into the worker's UDP listener, which packs them into datagrams.
///
/// The session's sealed and refusing states stay in its (otherwise empty) [`SendQueue`], so that the
/// rules of [`Outbound::deliver`] are the same for both transports.
#[derive(Debug, Default)]
pub(crate) struct UdpQueue {
    /// Frames and whether each goes on the reliable channel, oldest first.
    pub(crate) frames: VecDeque<(PoolBytes, bool)>,
    /// Bytes of `frames` (and their entries), against the hard limit.
    pub(crate) bytes: usize,
    /// The fatal ERROR ending the session, kept out of `frames`: the listener sends it as the
    /// session's last DATA ([`gamewire_udp::listener::Listener::end_with_frame`]).
    pub(crate) error: Option<PoolBytes>,
}

impl UdpQueue {
    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

/// Per-connection outgoing state, indexed by connection token, plus the routing from player ids to
/// tokens. Kept apart from the connections themselves so that the world can write into any queue while
/// the sender's decoder is borrowed.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) queues: Vec<SendQueue>,
    /// `udp[token]`: the frames of a UDP session (`is_udp[token]`); empty for a TCP connection.
    pub(crate) udp: Vec<UdpQueue>,
    /// `is_udp[token]`: the connection is a UDP session; its frames go to `udp`, not `queues`.
    is_udp: Vec<bool>,
    /// Tokens whose queue received frames since their last flush, each once, in the order they became
    /// dirty: with one coalescing delay for all, that is also the order in which their flushes fall due.
    dirty: VecDeque<usize>,
    /// `dirty_since[token]`: when `token` entered `dirty`, if it is there.
    dirty_since: Vec<Option<Instant>>,
    /// `players[id.index()]` is the token of the connection playing `id`.
    players: Vec<Option<(PlayerId, usize)>>,
    /// Tokens whose queue went over the hard limit: to be cut off with SLOW_CONSUMER.
    pub(crate) over_hard: Vec<usize>,
    /// Tokens whose session the game ended ([`Outbox::end`]), in that order: the worker calls
    /// `Game::close` on each and drains it once the game's call returns.
    pub(crate) ended: Vec<usize>,
    pub(crate) writer: FrameWriter,
    /// The connection whose frame is being handled: [`Recipients::Sender`].
    pub(crate) sender: usize,
    pub(crate) now: Instant,
    soft_limit: usize,
    hard_limit: usize,
    /// Frames queued (one per recipient).
    pub(crate) deliveries: u64,
}

impl Outbound {
    pub(crate) fn new(pool: Pool, soft_limit: usize, hard_limit: usize, now: Instant) -> Self {
        Outbound {
            queues: Vec::new(),
            udp: Vec::new(),
            is_udp: Vec::new(),
            dirty: VecDeque::new(),
            dirty_since: Vec::new(),
            players: Vec::new(),
            over_hard: Vec::new(),
            ended: Vec::new(),
            writer: FrameWriter::new(pool),
            sender: usize::MAX,
            now,
            soft_limit,
            hard_limit,
            deliveries: 0,
        }
    }

    pub(crate) fn soft_limit(&self) -> usize {
        self.soft_limit
    }

    /// Makes room for token `token` (a fresh connection); `udp`: a UDP session.
    pub(crate) fn open(&mut self, token: usize, udp: bool) {
        if self.queues.len() <= token {
            self.queues.resize_with(token + 1, SendQueue::default);
            self.udp.resize_with(token + 1, UdpQueue::default);
            self.is_udp.resize(token + 1, false);
            self.dirty_since.resize(token + 1, None);
        }
        self.queues[token] = SendQueue::default();
        self.udp[token] = UdpQueue::default();
        self.is_udp[token] = udp;
    }

    /// Forgets `token`'s queues (its connection is gone).
    pub(crate) fn close(&mut self, token: usize) {
        self.queues[token] = SendQueue::default();
        self.udp[token] = UdpQueue::default();
        self.is_udp[token] = false;
    }

    /// Whether `token` is a UDP session.
    pub(crate) fn is_udp(&self, token: usize) -> bool {
        self.is_udp.get(token).is_some_and(|&udp| udp)
    }

    /// Routes frames for `id` to `token`.
    pub(crate) fn bind(&mut self, id: PlayerId, token: usize) {
        if self.players.len() <= id.index() {
            self.players.resize(id.index() + 1, None);
        }
        self.players[id.index()] = Some((id, token));
    }

    /// Stops routing frames for `id`.
    pub(crate) fn unbind(&mut self, id: PlayerId) {
        if let Some(entry) = self.players.get_mut(id.index())
            && entry.is_some_and(|(bound, _)| bound == id)
        {
            *entry = None;
        }
    }

    fn token_of(&self, id: PlayerId) -> Option<usize> {
        match self.players.get(id.index()).copied().flatten() {
            Some((bound, token)) if bound == id => Some(token),
            _ => None,
        }
    }

    /// Queues `token` for a flush (once; a token already waiting keeps its place and its time).
    pub(crate) fn mark_dirty(&mut self, token: usize) {
        if self.dirty_since[token].is_none() {
            self.dirty_since[token] = Some(self.now);
            self.dirty.push_back(token);
        }
    }

    /// When the next flush falls due, if any queue waits for one: `delay` after the oldest dirty token
    /// became dirty.
    pub(crate) fn next_flush_due(&self, delay: Duration) -> Option<Instant> {
        let &token = self.dirty.front()?;
        self.dirty_since[token].map(|since| since + delay)
    }

    /// Moves into `out` the tokens that became dirty at least `delay` before `now` (every one with a
    /// zero delay), oldest first; both vectors keep their capacity.
    ///
    /// Each connection's frames wait at most `delay` for company: the first frame queued after a flush
    /// starts the clock, and whatever joins it meanwhile leaves in the same write. Unlike one tick for
    /// all, the flushes stay spread over time as the frames that cause them are.
    pub(crate) fn take_due(&mut self, now: Instant, delay: Duration, out: &mut Vec<usize>) {
        out.clear();
        while let Some(&token) = self.dirty.front() {
            match self.dirty_since[token] {
                Some(since) if since + delay > now => break,
                _ => {}
            }
            self.dirty.pop_front();
            self.dirty_since[token] = None;
            out.push(token);
        }
    }

    /// The kernel refused `token`'s bytes: see [`SendQueue::mark_stalled`].
    pub(crate) fn mark_stalled(&mut self, token: usize) {
        self.queues[token].mark_stalled(&self.writer.pool, self.soft_limit, self.now);
    }

    /// `token`'s asynchronous send completed having taken `written` bytes (0 if it was cancelled):
    /// see [`SendQueue::end_send`] and [`SendQueue::end_zerocopy_send`].
    pub(crate) fn end_send(&mut self, token: usize, written: usize, zerocopy: bool) {
        let queue = &mut self.queues[token];
        match zerocopy {
            true => queue.end_zerocopy_send(written, &self.writer.pool, self.soft_limit, self.now),
            false => queue.end_send(written, &self.writer.pool, self.soft_limit, self.now),
        }
    }

    /// Cuts `token` off: see [`SendQueue::discard_unstarted`]. Its queue is flushed (or its send
    /// cancelled) at the next flush.
    pub(crate) fn discard_unstarted(&mut self, token: usize) {
        self.queues[token].discard_unstarted();
        self.udp[token].clear();
        self.mark_dirty(token);
    }

    /// Queues `frame` for `token`, unless the queue is sealed or the hard limit refuses it (then the
    /// connection is listed in `over_hard`). `is_error`: a fatal ERROR, which always gets in.
    /// `reliable`: the frame's channel, for a UDP session (TCP is reliable anyway).
    pub(crate) fn deliver(&mut self, token: usize, frame: &PoolBytes, is_error: bool, reliable: bool) {
        let queue = &mut self.queues[token];
        if queue.is_sealed() {
            return;
        }
        // A fatal ERROR always gets in (at most 216 bytes, and it ends the queue): a client cut off for
        // any reason must learn why, even when its queue sits right at the limit.
        // Once a frame was refused (or the backlog discarded), later ones are too: a client must not get
        // a MOVE whose ENTER fell.
        if !is_error && queue.is_refusing() {
            return;
        }
        if self.is_udp[token] {
            self.deliver_udp(token, frame, is_error, reliable);
            return;
        }
        if !is_error && queue.held_bytes() + frame.len() + ENTRY_BYTES > self.hard_limit {
            // The connection is cut off with SLOW_CONSUMER once the world's call returns; frames for it
            // meanwhile are pointless, and queueing them would grow memory past the limit.
            queue.refuse_all_but_error();
            self.over_hard.push(token);
            return;
        }
        queue.push_shared(frame, &self.writer.pool, self.soft_limit, self.now);
        self.deliveries += 1;
        self.mark_dirty(token);
    }
}

impl Outbound {
    /// [`Self::deliver`] for a UDP session, past the checks both transports share.
    #[cold]
    fn deliver_udp(&mut self, token: usize, frame: &PoolBytes, is_error: bool, reliable: bool) {
        let queue = &mut self.udp[token];
        if is_error {
            // The session's last frame: the listener ends the session with it.
            queue.error = Some(frame.clone());
        } else if queue.bytes + frame.len() + ENTRY_BYTES > self.hard_limit {
            // Between two flushes only (the listener bounds what waits for acknowledgement).
            self.queues[token].refuse_all_but_error();
            self.over_hard.push(token);
            return;
        } else {
            queue.bytes += frame.len() + ENTRY_BYTES;
            queue.frames.push_back((frame.clone(), reliable));
        }
        self.deliveries += 1;
        self.mark_dirty(token);
    }
}

impl Outbox for Outbound {
    fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
        // Only a fatal ERROR passes the hard limit: it is the last frame, so the excess is bounded by one.
        let is_error = packet.is_fatal();
        let reliable = packet.channel() == Channel::Reliable;
        match to {
            Recipients::Sender => {
                if self.sender == NO_SENDER {
                    return; // A tick or a command: no connection is being handled.
                }
                let frame = self.writer.encode(player_id, packet);
                self.deliver(self.sender, &frame, is_error, reliable);
            }
            Recipients::One(id) => {
                if let Some(token) = self.token_of(id) {
                    let frame = self.writer.encode(player_id, packet);
                    self.deliver(token, &frame, is_error, reliable);
                }
            }
            Recipients::Many(ids) => {
                if ids.is_empty() {
                    return;
                }
                let frame = self.writer.encode(player_id, packet);
                for &id in ids {
                    if let Some(token) = self.token_of(id) {
                        self.deliver(token, &frame, is_error, reliable);
                    }
                }
            }
        }
    }

    fn end(&mut self, player: PlayerId) {
        let Some(token) = self.token_of(player) else { return };
        // Unrouted and sealed at once: what was queued stays (and is flushed by the drain), nothing
        // the game sends from now on gets in, whoever it is addressed as.
        self.unbind(player);
        self.queues[token].seal();
        self.ended.push(token);
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use gamewire_pool::PoolConfig;

    use super::*;

    fn queued_bytes_of(out: &Outbound, token: usize) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); crate::send_queue::MAX_IOVECS];
        let count = out.queues[token].io_slices(&mut slices);
        slices[..count].iter().flat_map(|slice| slice.iter().copied()).collect()
    }

    #[test]
    fn after_a_discard_only_the_fatal_error_gets_in() {
        let pool = Pool::new(PoolConfig { chunk_size: 1024, chunk_count: 8 }).unwrap();
        let mut out = Outbound::new(pool, 1 << 10, 1 << 20, Instant::now());
        out.open(0, false);
        let frame = |text: &str| PoolBytes::from_vec(text.as_bytes().to_vec());
        out.deliver(0, &frame("one"), false, true);
        out.deliver(0, &frame("two"), false, true);
        out.queues[0].discard_unstarted();
        // With the world on its own thread, frames it sent before it saw the cut-off still arrive.
        out.deliver(0, &frame("three"), false, true);
        out.deliver(0, &frame("ERR"), true, true);
        assert_eq!(queued_bytes_of(&out, 0), b"ERR", "a gap, then a frame after it: never");
    }

    #[test]
    fn a_frame_over_the_hard_limit_is_refused_and_so_is_every_later_one() {
        let pool = Pool::new(PoolConfig { chunk_size: 1024, chunk_count: 8 }).unwrap();
        // Room for "12345" and its entry, and 3 bytes more.
        let hard = 8 + ENTRY_BYTES;
        let mut out = Outbound::new(pool, 4, hard, Instant::now());
        out.open(0, false);
        let frame = |text: &str| PoolBytes::from_vec(text.as_bytes().to_vec());
        out.deliver(0, &frame("12345"), false, true);
        out.deliver(0, &frame("6789"), false, true); // 9 bytes and a second entry: refused, listed once
        out.deliver(0, &frame("x"), false, true); // would fit, but must not follow a gap
        out.deliver(0, &frame("ERR"), true, true);
        assert_eq!(queued_bytes_of(&out, 0), b"12345ERR");
        assert_eq!(out.over_hard, [0]);
    }
}
