//! Per-connection queue of outgoing frames: shared pooled slices, flushed with vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Instant;

use gamewire_pool::{ChunkMut, Pool, PoolBytes};

/// Most slices handed to one `writev`; Linux accepts 1024 (IOV_MAX), 64 covers a loop turn's frames for
/// one client in practice and keeps the slice array on the stack small.
pub(crate) const MAX_IOVECS: usize = 64;

/// What one queued frame costs beyond its bytes: its entry in the queue.
pub(crate) const ENTRY_BYTES: usize = size_of::<PoolBytes>();

/// Entries a drained queue keeps room for; a longer backlog's room is given back once it drains.
const RETAINED_ENTRIES: usize = 256;

/// Frames queued for one client, oldest first. A frame is a reference to pooled memory shared with
/// every other recipient, until the client stops keeping up: then its frames are copies in chunks of
/// its own (see [`SendQueue::mark_stalled`]).
///
/// What the send limits count is [`SendQueue::held_bytes`]: the pool memory the queue keeps alive
/// because of this client, not only the bytes it has still to send.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    frames: VecDeque<PoolBytes>,
    /// Bytes of `frames[0]` already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    queued_bytes: usize,
    /// Of `queued_bytes`, those in chunks of this queue's own.
    own_bytes: usize,
    /// The chunks of this queue's own that its frames (or its open backlog chunk) keep alive, oldest
    /// first; the last one is `backlog` while that is open.
    own: VecDeque<OwnChunk>,
    /// Size of the chunks in `own`.
    own_chunk_size: usize,
    /// Since when `held_bytes` has exceeded the soft limit.
    over_soft_since: Option<Instant>,
    /// No more frames may be queued: a fatal ERROR is the last thing this client gets.
    sealed: bool,
    /// Only a fatal ERROR may still be queued: a frame was refused because it would have crossed the hard
    /// limit, or the unsent frames were discarded for a cut-off. Whatever the world produces until its
    /// ERROR arrives (with the world on another thread, frames already on their way) is dropped too:
    /// after a gap, nothing but the ERROR.
    refusing: bool,
    /// Frames at the front that an asynchronous send (io_uring) is reading from: they stay queued, and
    /// so alive, until its completion says how much it took.
    in_flight: usize,
    /// What becomes of the in-flight frames the send did not take, once it completes.
    after_send: AfterSend,
    /// Frames that zero-copy sends took, kept alive until the kernel's notification that it no longer
    /// reads their pages (it may come long after the send completed: on loopback, once the receiver
    /// read them).
    zerocopy_held: VecDeque<PoolBytes>,
    /// How many frames of `zerocopy_held` each unnotified zero-copy send holds, oldest first.
    zerocopy_batches: VecDeque<usize>,
    /// The kernel refused bytes at the last attempt (a write that would block, or a send still in
    /// flight when the next flush fell due), and the queue has not emptied since.
    stalled: bool,
    /// The chunk a stalled queue copies its new frames into (see [`Self::mark_stalled`]).
    backlog: Option<ChunkMut>,
}

/// A chunk of a queue's own: where it lies, and how many queued frames were copied into it.
#[derive(Debug, Clone, Copy)]
struct OwnChunk {
    start: usize,
    frames: usize,
}

/// What an asynchronous send's frames become when it completes, beyond the bytes it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum AfterSend {
    /// They stay queued as they are.
    #[default]
    Keep,
    /// The queue stalled while they were in flight: they are shared frames, to be copied into chunks of
    /// the queue's own like the rest (the send should be cancelled, so that they do not pin shared
    /// chunks for as long as the client does not read).
    Copy,
    /// The queue was cut off while they were in flight: they are dropped (the send should be
    /// cancelled, so that they go at once).
    Discard,
}

impl SendQueue {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The pool memory this client holds, which the send limits count: its frames' unwritten bytes
    /// where they share chunks with other recipients, its own chunks whole (a stalled client's
    /// copies), and each queued entry's bookkeeping. O(1).
    pub(crate) fn held_bytes(&self) -> usize {
        debug_assert!(self.own_bytes <= self.queued_bytes);
        self.queued_bytes.saturating_sub(self.own_bytes)
            + self.own.len() * self.own_chunk_size
            + self.frames.len() * ENTRY_BYTES
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed
    }

    pub(crate) fn is_refusing(&self) -> bool {
        self.refusing
    }

    pub(crate) fn refuse_all_but_error(&mut self) {
        self.refusing = true;
    }

    pub(crate) fn over_soft_since(&self) -> Option<Instant> {
        self.over_soft_since
    }

    #[cfg(test)]
    fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Whether an asynchronous send holds frames that should be let go of now (the queue stalled or
    /// was cut off since it started): the backend cancels it, and [`Self::end_send`] does the rest.
    pub(crate) fn wants_send_cancelled(&self) -> bool {
        self.in_flight > 0 && self.after_send != AfterSend::Keep
    }

    /// The kernel took less than offered: the client is not keeping up, for now. From here until the
    /// queue empties, its frames are copies in chunks of its own, the frames already queued included.
    ///
    /// A frame is carved from a chunk shared with every frame encoded around it, and keeps the whole
    /// chunk alive while it waits. A client that reads on time holds its frames for a turn; one that
    /// stopped reading would hold a chunk (4 KiB by default) for each 30-byte frame it sees, and a
    /// player who sees a few neighbours sees frames spread over many chunks. Copied into chunks of its
    /// own, what it holds is what [`Self::held_bytes`] counts, and a cut-off frees it at once. The copy
    /// is the price of not keeping up; a client that reads costs no copy. Frames an asynchronous send
    /// is reading cannot move: they are copied once it completes (see [`Self::wants_send_cancelled`]).
    pub(crate) fn mark_stalled(&mut self, pool: &Pool, soft_limit: usize, now: Instant) {
        if self.stalled {
            return;
        }
        self.stalled = true;
        if self.refusing {
            return; // Cut off: what is left is the end of a started frame and the ERROR, off the pool.
        }
        if self.in_flight > 0 && self.after_send == AfterSend::Keep {
            self.after_send = AfterSend::Copy;
        }
        self.copy_frames(self.in_flight..self.frames.len(), pool);
        self.update_soft_clock(soft_limit, now);
    }

    /// Replaces the shared frames in `range` by copies in chunks of the queue's own, oldest first,
    /// until the pool has no chunk to spare.
    fn copy_frames(&mut self, range: std::ops::Range<usize>, pool: &Pool) {
        for index in range {
            if self.own_index(&self.frames[index]).is_some() {
                continue;
            }
            let Some(copy) = self.copy_into_own(&self.frames[index].clone(), pool) else { return };
            let unwritten = if index == 0 { copy.len() - self.front_written } else { copy.len() };
            self.own_bytes += unwritten;
            self.frames[index] = copy;
        }
    }

    /// A copy of `frame` in the queue's open own chunk (a new one when it lacks room): `None` when the
    /// pool has no chunk to spare or the frame exceeds a chunk. Counts the frame in its chunk; the
    /// caller counts its bytes.
    fn copy_into_own(&mut self, frame: &[u8], pool: &Pool) -> Option<PoolBytes> {
        let len = frame.len();
        if len > pool.chunk_size() {
            return None;
        }
        if self.backlog.as_ref().is_none_or(|chunk| chunk.remaining() < len) {
            let mut chunk = pool.try_alloc()?;
            // The old chunk lives on through the frames copied into it, if any are still queued.
            if self.backlog.is_some() && self.own.back().is_some_and(|own| own.frames == 0) {
                self.own.pop_back();
            }
            self.own.push_back(OwnChunk { start: chunk.spare_mut().as_ptr() as usize, frames: 0 });
            self.own_chunk_size = chunk.capacity();
            self.backlog = Some(chunk);
        }
        let chunk = self.backlog.as_mut().expect("allocated above");
        chunk.spare_mut()[..len].copy_from_slice(frame);
        chunk.advance(len);
        self.own.back_mut().expect("the open chunk is the last own one").frames += 1;
        Some(chunk.freeze())
    }

    /// Which of the queue's own chunks `frame` lies in, if any (O(own chunks), a handful).
    fn own_index(&self, frame: &PoolBytes) -> Option<usize> {
        let address = frame.as_ptr() as usize;
        let size = self.own_chunk_size;
        self.own.iter().position(|own| (own.start..own.start + size).contains(&address))
    }

    /// Stops counting `frame` (leaving the queue with `unwritten` of its bytes unsent): an own chunk
    /// none of whose frames is queued any more goes back to the pool, unless it is the open one.
    fn forget(&mut self, frame: &PoolBytes, unwritten: usize) {
        if self.own.is_empty() {
            return; // The common case, a client keeping up: nothing of its own to count.
        }
        let Some(index) = self.own_index(frame) else { return };
        self.own_bytes -= unwritten;
        self.own[index].frames -= 1;
        let is_open = index + 1 == self.own.len() && self.backlog.is_some();
        if self.own[index].frames == 0 && !is_open {
            self.own.remove(index);
        }
    }

    /// Queues a frame shared with other recipients unless the queue is sealed: a reference to it, a
    /// copy in the queue's own chunk while it is stalled, or a heap copy after a cut-off (whose only
    /// frame left to queue is its fatal ERROR, which must not pin a pool chunk for as long as the
    /// client does not read). O(1); allocates only when the queue grows beyond every length it had
    /// before, or after a cut-off.
    pub(crate) fn push_shared(&mut self, frame: &PoolBytes, pool: &Pool, soft_limit: usize, now: Instant) {
        if self.sealed {
            return;
        }
        let frame = if self.refusing {
            match frame.is_pooled() {
                true => PoolBytes::from_vec(frame.to_vec()),
                false => frame.clone(),
            }
        } else if self.stalled {
            match self.copy_into_own(frame, pool) {
                Some(copy) => {
                    self.own_bytes += copy.len();
                    copy
                }
                None => frame.clone(),
            }
        } else {
            frame.clone()
        };
        self.push(frame, soft_limit, now);
    }

    /// Queues `frame` as it is, unless the queue is sealed. O(1); allocates only when the queue grows
    /// beyond every length it had before.
    pub(crate) fn push(&mut self, frame: PoolBytes, soft_limit: usize, now: Instant) {
        if self.sealed {
            return;
        }
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
        self.update_soft_clock(soft_limit, now);
    }

    /// Starts or stops the soft-limit clock after [`Self::held_bytes`] changed.
    fn update_soft_clock(&mut self, soft_limit: usize, now: Instant) {
        if self.held_bytes() <= soft_limit {
            self.over_soft_since = None;
        } else if self.over_soft_since.is_none() {
            self.over_soft_since = Some(now);
        }
    }

    /// Cuts the client off: drops every frame the kernel has not started, and lets go of the pool
    /// memory held for it at once, so that a final ERROR can follow without waiting behind a backlog
    /// the client will never read; only that ERROR may follow. The unwritten rest of a partly written
    /// frame moves to the heap (at most one frame). Frames an asynchronous send is reading go when it
    /// completes (see [`Self::wants_send_cancelled`]).
    pub(crate) fn discard_unstarted(&mut self) {
        self.refusing = true;
        if self.in_flight > 0 {
            self.after_send = AfterSend::Discard;
        }
        self.drop_unstarted_from(self.in_flight);
        // The open own chunk goes back once nothing queued lies in it.
        self.backlog = None;
        if self.own.back().is_some_and(|own| own.frames == 0) {
            self.own.pop_back();
        }
    }

    /// Drops the frames from `index` on, except that a partly written frame at the front keeps its
    /// unwritten rest, moved to the heap.
    fn drop_unstarted_from(&mut self, index: usize) {
        while self.frames.len() > index.max(1) {
            let frame = self.frames.pop_back().expect("len > index");
            self.queued_bytes -= frame.len();
            self.forget(&frame, frame.len());
        }
        if index > 0 || self.frames.is_empty() {
            return;
        }
        let front = self.frames.pop_front().expect("not empty");
        let rest = front.len() - self.front_written;
        self.queued_bytes -= rest;
        self.forget(&front, rest);
        if self.front_written > 0 {
            let tail = PoolBytes::from_vec(front[self.front_written..].to_vec());
            self.front_written = 0;
            self.queued_bytes += tail.len();
            self.frames.push_front(tail);
        }
    }

    /// Refuses every later frame.
    pub(crate) fn seal(&mut self) {
        self.sealed = true;
    }

    /// Fills `slices` with the unwritten bytes, oldest first; returns how many were filled.
    pub(crate) fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut count = 0;
        for (i, frame) in self.frames.iter().take(MAX_IOVECS).enumerate() {
            let bytes = if i == 0 { &frame[self.front_written..] } else { &frame[..] };
            slices[i] = IoSlice::new(bytes);
            count += 1;
        }
        count
    }

    /// Whether frames are queued and not yet written.
    pub(crate) fn has_unwritten(&self) -> bool {
        !self.frames.is_empty()
    }

    /// Marks the first `frames` frames as read by an asynchronous send until [`Self::end_send`].
    pub(crate) fn begin_send(&mut self, frames: usize) {
        debug_assert!(frames <= self.frames.len());
        self.in_flight = frames;
        self.after_send = AfterSend::Keep;
    }

    /// The asynchronous send completed, having taken `written` bytes (see [`Self::consume`]); 0 when
    /// it was cancelled. What it did not take is copied or dropped if the queue stalled or was cut
    /// off meanwhile.
    pub(crate) fn end_send(&mut self, written: usize, pool: &Pool, soft_limit: usize, now: Instant) {
        let in_flight = std::mem::take(&mut self.in_flight);
        let before = self.frames.len();
        self.consume(written, soft_limit);
        self.settle_after_send(in_flight, before, pool, soft_limit, now);
    }

    /// What [`Self::end_send`] does after consuming: `in_flight` frames were sent from, and the queue
    /// held `before` frames.
    fn settle_after_send(
        &mut self,
        in_flight: usize,
        before: usize,
        pool: &Pool,
        soft_limit: usize,
        now: Instant,
    ) {
        let untaken = in_flight.saturating_sub(before - self.frames.len());
        match std::mem::take(&mut self.after_send) {
            AfterSend::Keep => {}
            AfterSend::Copy => self.copy_frames(0..untaken.min(self.frames.len()), pool),
            AfterSend::Discard => {
                // The frames behind the in-flight ones are the fatal ERROR (and nothing else).
                let behind: Vec<PoolBytes> = self.frames.drain(untaken.min(self.frames.len())..).collect();
                self.drop_unstarted_from(0);
                self.frames.extend(behind);
            }
        }
        self.update_soft_clock(soft_limit, now);
    }

    /// A zero-copy send completed, having taken `written` bytes: they count as sent (the queue moves on
    /// and the next send may start), but every frame it read from stays alive until
    /// [`Self::release_zerocopy_batch`].
    pub(crate) fn end_zerocopy_send(&mut self, written: usize, pool: &Pool, soft_limit: usize, now: Instant) {
        let in_flight = std::mem::take(&mut self.in_flight);
        let (mut left, mut offset, mut held) = (written, self.front_written, 0);
        for frame in &self.frames {
            if left == 0 {
                break;
            }
            self.zerocopy_held.push_back(frame.clone());
            held += 1;
            left = left.saturating_sub(frame.len() - offset);
            offset = 0;
        }
        self.zerocopy_batches.push_back(held);
        let before = self.frames.len();
        self.consume(written, soft_limit);
        self.settle_after_send(in_flight, before, pool, soft_limit, now);
    }

    /// The kernel's notification for the oldest unnotified zero-copy send: its frames may go. (TCP
    /// frees a socket's buffers in order, so notifications come in the order of the sends.)
    pub(crate) fn release_zerocopy_batch(&mut self) {
        let held = self.zerocopy_batches.pop_front().unwrap_or(0);
        self.zerocopy_held.drain(..held.min(self.zerocopy_held.len()));
    }

    /// Records that the kernel took `written` bytes: drops the frames it finished (their pooled memory
    /// goes back once every recipient is done) and remembers where a partly written frame stopped.
    pub(crate) fn consume(&mut self, mut written: usize, soft_limit: usize) {
        self.queued_bytes -= written;
        while written > 0 {
            let front = self.frames.front().expect("written bytes were queued");
            let rest = front.len() - self.front_written;
            if written < rest {
                if !self.own.is_empty() && self.own_index(front).is_some() {
                    self.own_bytes -= written;
                }
                self.front_written += written;
                break;
            }
            written -= rest;
            self.front_written = 0;
            let front = self.frames.pop_front().expect("checked above");
            self.forget(&front, rest);
        }
        if self.frames.is_empty() {
            // Caught up: later frames are shared again, and the backlog chunk goes back (the frames
            // copied into it are gone). A long backlog's room goes back too.
            self.stalled = false;
            self.backlog = None;
            self.own.clear();
            self.own_bytes = 0;
            if self.frames.capacity() > RETAINED_ENTRIES {
                self.frames.shrink_to(RETAINED_ENTRIES);
            }
        }
        if self.held_bytes() <= soft_limit {
            self.over_soft_since = None;
        }
    }

    /// Writes as much as `write` takes, one vectored call per batch of [`MAX_IOVECS`] frames, until the
    /// queue is empty or the socket would block. Returns whether the queue is now empty.
    ///
    /// # Errors
    ///
    /// Any error of `write` other than `WouldBlock` (and `Interrupted`, which is retried).
    pub(crate) fn flush_with(
        &mut self,
        soft_limit: usize,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<bool> {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.io_slices(&mut slices);
            match write(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.consume(written, soft_limit),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> PoolBytes {
        PoolBytes::from_vec(bytes.to_vec())
    }

    /// Flushes `queue` into a socket that takes everything; returns the bytes written.
    fn flush_all(queue: &mut SendQueue) -> Vec<u8> {
        let mut wire = Vec::new();
        let done = queue
            .flush_with(1000, |slices| {
                let all: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
                wire.extend_from_slice(&all);
                Ok(all.len())
            })
            .unwrap();
        assert!(done);
        wire
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let now = Instant::now();
        let mut queue = SendQueue::default();
        queue.push(frame(b"hello"), 1000, now);
        queue.push(frame(b"world"), 1000, now);
        let mut wire = Vec::new();
        // A socket that takes 3 bytes per call, then would block after 2 calls.
        let mut calls = 0;
        let done = queue
            .flush_with(1000, |slices| {
                calls += 1;
                if calls > 2 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let all: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
                wire.extend_from_slice(&all[..3]);
                Ok(3)
            })
            .unwrap();
        assert!(!done);
        assert_eq!(wire, b"hellow");
        assert_eq!(queue.queued_bytes(), 4);
        wire.extend(flush_all(&mut queue));
        assert_eq!(wire, b"helloworld");
        assert!(queue.is_empty());
    }

    #[test]
    fn soft_limit_clock_starts_and_stops() {
        let now = Instant::now();
        let mut queue = SendQueue::default();
        let soft = 15 + ENTRY_BYTES; // one 10-byte frame and its entry fit, two do not
        queue.push(frame(&[0; 10]), soft, now);
        assert_eq!(queue.over_soft_since(), None);
        queue.push(frame(&[0; 10]), soft, now);
        assert_eq!(queue.over_soft_since(), Some(now));
        queue.consume(10, soft);
        assert_eq!(queue.over_soft_since(), None);
    }

    /// A pool of eight 64-byte chunks, and four 3-byte frames carved from four different shared
    /// chunks, as a player seeing a few neighbours gets them.
    fn pool_and_shared_frames() -> (Pool, Vec<PoolBytes>) {
        let pool = Pool::new(gamewire_pool::PoolConfig { chunk_size: 64, chunk_count: 8 }).unwrap();
        let shared = (0..4u8)
            .map(|i| {
                let mut chunk = pool.try_alloc().unwrap();
                chunk.spare_mut()[..3].copy_from_slice(&[i; 3]);
                chunk.advance(3);
                chunk.freeze()
            })
            .collect();
        (pool, shared)
    }

    #[test]
    fn a_stalled_queue_holds_copies_not_the_shared_chunks() {
        let (pool, shared) = pool_and_shared_frames();
        let now = Instant::now();
        let mut queue = SendQueue::default();
        // Two frames queued before the stall is noticed, two after: all four end up in one chunk of
        // the queue's own.
        queue.push_shared(&shared[0], &pool, 1000, now);
        queue.push_shared(&shared[1], &pool, 1000, now);
        assert_eq!(queue.held_bytes(), 6 + 2 * ENTRY_BYTES, "shared frames count their bytes");
        queue.mark_stalled(&pool, 1000, now);
        queue.push_shared(&shared[2], &pool, 1000, now);
        queue.push_shared(&shared[3], &pool, 1000, now);
        drop(shared);
        assert_eq!(pool.free_chunks(), 7, "the four frames share one chunk; the shared ones went back");
        assert_eq!(queue.held_bytes(), 64 + 4 * ENTRY_BYTES, "an own chunk counts whole");
        let wire = flush_all(&mut queue);
        assert_eq!(wire, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert!(!queue.is_stalled(), "an emptied queue is caught up");
        assert_eq!(queue.held_bytes(), 0);
        assert_eq!(pool.free_chunks(), 8);
        let all: Vec<ChunkMut> = std::iter::from_fn(|| pool.try_alloc()).collect();
        queue.mark_stalled(&pool, 1000, now);
        let frame = PoolBytes::from_vec(b"abc".to_vec());
        queue.push_shared(&frame, &pool, 1000, now);
        assert_eq!(queue.held_bytes(), 3 + ENTRY_BYTES, "no chunk to spare: the frame itself is queued");
        drop(all);
    }

    #[test]
    fn a_cut_off_frees_the_pool_at_once_and_its_error_pins_no_chunk() {
        let (pool, shared) = pool_and_shared_frames();
        let now = Instant::now();
        let mut queue = SendQueue::default();
        for frame in &shared {
            queue.push_shared(frame, &pool, 1000, now);
        }
        queue.consume(2, 1000); // the kernel took 2 bytes of the first frame, then would block
        queue.mark_stalled(&pool, 1000, now);
        drop(shared);
        assert_eq!(pool.free_chunks(), 7);
        queue.discard_unstarted();
        assert_eq!(pool.free_chunks(), 8, "a cut-off gives back every chunk at once");
        let error = {
            let mut chunk = pool.try_alloc().unwrap();
            chunk.spare_mut()[..3].copy_from_slice(b"ERR");
            chunk.advance(3);
            chunk.freeze()
        };
        queue.push_shared(&error, &pool, 1000, now);
        drop(error);
        queue.mark_stalled(&pool, 1000, now); // the kernel refuses the ERROR too, for now
        assert_eq!(pool.free_chunks(), 8, "the final ERROR is not kept in the pool");
        assert_eq!(queue.held_bytes(), 4 + 2 * ENTRY_BYTES, "the rest of the started frame, the ERROR");
        assert_eq!(flush_all(&mut queue), [0, b'E', b'R', b'R'], "the started frame ends, then the ERROR");
    }

    #[test]
    fn frames_an_asynchronous_send_reads_are_copied_or_dropped_once_it_completes() {
        let (pool, shared) = pool_and_shared_frames();
        let now = Instant::now();
        let mut queue = SendQueue::default();
        for frame in &shared[..3] {
            queue.push_shared(frame, &pool, 1000, now);
        }
        queue.begin_send(2);
        assert!(!queue.wants_send_cancelled(), "a send of a client keeping up is left alone");
        queue.mark_stalled(&pool, 1000, now);
        assert!(queue.wants_send_cancelled(), "in-flight frames pin shared chunks");
        drop(shared);
        assert_eq!(pool.free_chunks(), 5, "two shared chunks pinned by the send, one own chunk");
        queue.end_send(0, &pool, 1000, now); // cancelled: nothing taken
        assert_eq!(pool.free_chunks(), 7, "once it completes, its frames are copies too");
        queue.begin_send(3);
        assert!(!queue.wants_send_cancelled(), "a send of own copies pins only what is counted");
        queue.discard_unstarted();
        assert!(queue.wants_send_cancelled(), "a cut-off lets go of them too");
        queue.push_shared(&PoolBytes::from_vec(b"ERR".to_vec()), &pool, 1000, now);
        queue.end_send(4, &pool, 1000, now); // it took one frame and a byte of the next
        assert_eq!(pool.free_chunks(), 8, "what the send did not take is gone");
        assert_eq!(flush_all(&mut queue), [1, 1, b'E', b'R', b'R']);
    }

    #[test]
    fn entries_count_and_a_drained_backlog_gives_its_room_back() {
        let now = Instant::now();
        let mut queue = SendQueue::default();
        for _ in 0..10_000 {
            queue.push(frame(b"leave-frame!"), usize::MAX, now);
        }
        assert_eq!(queue.held_bytes(), 10_000 * (12 + ENTRY_BYTES));
        assert!(queue.frames.capacity() >= 10_000);
        flush_all(&mut queue);
        assert!(queue.frames.capacity() <= RETAINED_ENTRIES, "{}", queue.frames.capacity());
    }

    #[test]
    fn discard_keeps_a_started_frame_and_seal_refuses_more() {
        let now = Instant::now();
        let mut queue = SendQueue::default();
        for _ in 0..5 {
            queue.push(frame(b"abcd"), 1000, now);
        }
        queue.consume(2, 1000);
        queue.discard_unstarted();
        assert_eq!(queue.queued_bytes(), 2);
        queue.push(frame(b"ERR"), 1000, now);
        queue.seal();
        queue.push(frame(b"late"), 1000, now);
        let wire = flush_all(&mut queue);
        assert_eq!(wire, b"cdERR");
    }
}
