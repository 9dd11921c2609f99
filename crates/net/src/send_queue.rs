//! Per-connection queue of outgoing frames: shared pooled slices, flushed with vectored writes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Instant;

use gamewire_pool::{ChunkMut, Pool, PoolBytes};

/// Most slices handed to one `writev`; Linux accepts 1024 (IOV_MAX), 64 covers a loop turn's frames for
/// one client in practice and keeps the slice array on the stack small.
pub(crate) const MAX_IOVECS: usize = 64;

/// Frames queued for one client, oldest first. A frame is a reference to pooled memory shared with
/// every other recipient; the queue only counts bytes and remembers how much of its front frame the
/// kernel already took.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    frames: VecDeque<PoolBytes>,
    /// Bytes of `frames[0]` already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    queued_bytes: usize,
    /// Since when `queued_bytes` has exceeded the soft limit.
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
    /// Frames that zero-copy sends took, kept alive until the kernel's notification that it no longer
    /// reads their pages (it may come long after the send completed: on loopback, once the receiver
    /// read them).
    zerocopy_held: VecDeque<PoolBytes>,
    /// How many frames of `zerocopy_held` each unnotified zero-copy send holds, oldest first.
    zerocopy_batches: VecDeque<usize>,
    /// The kernel refused bytes at the last attempt (a write that would block, or a send still in
    /// flight when the next flush fell due), and the queue has not emptied since.
    stalled: bool,
    /// The chunk a stalled queue copies its new frames into (see [`Self::copy_for_backlog`]).
    backlog: Option<ChunkMut>,
}

impl SendQueue {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
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

    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// The kernel took less than offered: the client is not keeping up, for now.
    pub(crate) fn mark_stalled(&mut self) {
        self.stalled = true;
    }

    /// A copy of `frame` in this queue's own backlog chunk, for a stalled queue: `None` when the pool
    /// has no chunk to spare (the caller then queues the shared frame).
    ///
    /// A frame is carved from a chunk shared with every frame encoded around it, and keeps the whole
    /// chunk alive while it waits. A client that reads on time holds its frames for a turn; one that
    /// stopped reading would hold a chunk (4 KiB by default) for each 30-byte frame it sees, and a
    /// player who sees a few neighbours sees frames spread over many chunks. Copying the frames of a
    /// stalled client into chunks of its own bounds what it holds to the bytes it has queued (plus one
    /// chunk), which is what the send limits count. The copy is the price of not keeping up; a client
    /// that reads costs no copy.
    pub(crate) fn copy_for_backlog(&mut self, frame: &[u8], pool: &Pool) -> Option<PoolBytes> {
        let len = frame.len();
        if len > pool.chunk_size() {
            return None;
        }
        if self.backlog.as_ref().is_none_or(|chunk| chunk.remaining() < len) {
            // Frames copied into the old chunk keep it alive until they are written.
            self.backlog = pool.try_alloc();
        }
        let chunk = self.backlog.as_mut()?;
        chunk.spare_mut()[..len].copy_from_slice(frame);
        chunk.advance(len);
        Some(chunk.freeze())
    }

    /// Queues `frame` unless the queue is sealed. O(1); allocates only when the queue grows beyond
    /// every length it had before.
    pub(crate) fn push(&mut self, frame: PoolBytes, soft_limit: usize, now: Instant) {
        if self.sealed {
            return;
        }
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
        if self.queued_bytes > soft_limit && self.over_soft_since.is_none() {
            self.over_soft_since = Some(now);
        }
    }

    /// Drops every frame not yet started, so that a final ERROR can follow the partly written one
    /// without waiting behind a backlog the client will never read; only that ERROR may follow.
    pub(crate) fn discard_unstarted(&mut self) {
        self.refusing = true;
        let keep = usize::from(self.front_written > 0).max(self.in_flight);
        while self.frames.len() > keep {
            let frame = self.frames.pop_back().expect("len > keep");
            self.queued_bytes -= frame.len();
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
    }

    /// The asynchronous send completed, having taken `written` bytes (see [`Self::consume`]).
    pub(crate) fn end_send(&mut self, written: usize, soft_limit: usize) {
        self.in_flight = 0;
        self.consume(written, soft_limit);
    }

    /// A zero-copy send completed, having taken `written` bytes: they count as sent (the queue moves on
    /// and the next send may start), but every frame it read from stays alive until
    /// [`Self::release_zerocopy_batch`].
    pub(crate) fn end_zerocopy_send(&mut self, written: usize, soft_limit: usize) {
        self.in_flight = 0;
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
        self.consume(written, soft_limit);
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
                self.front_written += written;
                break;
            }
            written -= rest;
            self.front_written = 0;
            self.frames.pop_front();
        }
        if self.queued_bytes <= soft_limit {
            self.over_soft_since = None;
        }
        if self.frames.is_empty() {
            // Caught up: later frames are shared again, and the backlog chunk goes back once the
            // frames copied into it are gone.
            self.stalled = false;
            self.backlog = None;
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
        queue.push(frame(&[0; 10]), 15, now);
        assert_eq!(queue.over_soft_since(), None);
        queue.push(frame(&[0; 10]), 15, now);
        assert_eq!(queue.over_soft_since(), Some(now));
        queue.consume(10, 15);
        assert_eq!(queue.over_soft_since(), None);
    }

    #[test]
    fn a_stalled_queue_holds_copies_not_the_shared_chunks() {
        let pool = Pool::new(gamewire_pool::PoolConfig { chunk_size: 64, chunk_count: 8 }).unwrap();
        let now = Instant::now();
        let mut queue = SendQueue::default();
        // Four frames carved from four different shared chunks, as a player seeing a few neighbours
        // gets them.
        let shared: Vec<PoolBytes> = (0..4u8)
            .map(|i| {
                let mut chunk = pool.try_alloc().unwrap();
                chunk.spare_mut()[..3].copy_from_slice(&[i; 3]);
                chunk.advance(3);
                chunk.freeze()
            })
            .collect();
        assert_eq!(queue.copy_for_backlog(&[0; 65], &pool), None, "larger than a chunk");
        queue.mark_stalled();
        for frame in &shared {
            let copy = queue.copy_for_backlog(frame, &pool).unwrap();
            queue.push(copy, 1000, now);
        }
        drop(shared);
        assert_eq!(pool.free_chunks(), 7, "the four frames share one backlog chunk; the others went back");
        let wire = flush_all(&mut queue);
        assert_eq!(wire, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert!(!queue.is_stalled(), "an emptied queue is caught up");
        assert_eq!(pool.free_chunks(), 8);
        let all: Vec<ChunkMut> = std::iter::from_fn(|| pool.try_alloc()).collect();
        assert_eq!(queue.copy_for_backlog(b"abc", &pool), None, "no chunk to spare");
        drop(all);
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
