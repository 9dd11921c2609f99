//! The io_uring plumbing both io_uring loops share: building and probing the ring, `user_data`
//! encoding, submission, the loop's wake-up eventfd, and the provided-buffer ring of pool chunks that
//! multishot receives draw from.

use std::alloc::Layout;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use gamewire_pool::{ChunkMut, Pool};
use io_uring::types::BufRingEntry;
use io_uring::{IoUring, squeue};

use crate::worker::pool_is_low;

/// Submission queue entries; the completion queue gets four times as many.
pub(super) const SUBMISSION_ENTRIES: u32 = 4096;
/// Most receive buffers in the ring (a power of two); fewer when the pool is small.
pub(super) const MAX_RECEIVE_BUFFERS: usize = 32768;
/// Most receive buffers lent by default: a quarter of the pool, at most this many (4 MiB of 4 KiB chunks;
/// 4,096 was measured no better at 2,000 connections, and costs 12 MiB more resident memory).
const DEFAULT_RECEIVE_BUFFERS: usize = 1024;
/// Receive buffers lent before any connection is open; the ring grows from there (see
/// [`BufferRing::target_for`]).
const RING_BASE_BUFFERS: usize = 32;
/// Receive buffers lent per open connection: one for a receive that completed and waits to be reaped,
/// one for the next segment already arriving.
const RING_BUFFERS_PER_CONNECTION: usize = 2;
/// The provided-buffer group of the receive ring.
pub(super) const BUFFER_GROUP: u16 = 0;

/// What an operation is; the low byte of its `user_data`, above it the connection token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Accept = 1,
    Receive = 2,
    Send = 3,
    Cancel = 4,
    Wake = 5,
}

pub(super) fn user_data(op: Op, token: usize) -> u64 {
    ((token as u64) << 8) | op as u64
}

pub(super) fn decode_user_data(data: u64) -> (Option<Op>, usize) {
    let op = match data & 0xff {
        1 => Some(Op::Accept),
        2 => Some(Op::Receive),
        3 => Some(Op::Send),
        4 => Some(Op::Cancel),
        5 => Some(Op::Wake),
        _ => None,
    };
    (op, (data >> 8) as usize)
}

/// Builds a ring with the setup flags this kernel takes, best first. Single issuer (6.0) is required:
/// a kernel without it also lacks the multishot receive (6.0) this backend is built on.
///
/// Cooperative task running, not deferred: with `DEFER_TASKRUN` completions are produced only while the
/// loop is inside `io_uring_enter`, so receives pile up during a long turn and run dry the buffer ring
/// all at once; measured at 2,000 `mmo` clients, its p99 was 28-84 ms against 7 ms with
/// `COOP_TASKRUN`, at the same CPU (docs/BENCHMARKS.md).
pub(super) fn build_ring() -> io::Result<IoUring> {
    type SetupFlags = fn(&mut io_uring::Builder);
    let attempts: [(&str, SetupFlags); 2] = [
        ("single issuer, cooperative task running", |b| {
            b.setup_single_issuer().setup_coop_taskrun();
        }),
        ("single issuer", |b| {
            b.setup_single_issuer();
        }),
    ];
    let mut last_error = None;
    for (flags, configure) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(SUBMISSION_ENTRIES * 4);
        configure(&mut builder);
        match builder.build(SUBMISSION_ENTRIES) {
            Ok(ring) => {
                tracing::debug!(flags, "io_uring set up");
                return Ok(ring);
            }
            Err(error) => last_error = Some(error),
        }
    }
    let error = last_error.expect("at least one attempt");
    Err(match error.raw_os_error() {
        Some(libc::EINVAL) => io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel's io_uring lacks single-issuer rings and multishot receive (Linux 6.0+ needed)",
        ),
        Some(libc::ENOSYS) => {
            io::Error::new(io::ErrorKind::Unsupported, "this kernel has no io_uring (ENOSYS)")
        }
        Some(libc::EPERM) => io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring is not permitted here (sysctl kernel.io_uring_disabled, or a seccomp filter)",
        ),
        _ => error,
    })
}

/// Checks that this kernel offers everything the backend needs (a ring with the required setup flags
/// and a provided-buffer ring), so that `--io auto` can fall back to mio; the error says what lacks.
///
/// The probe ring is made and dropped on a thread of its own: tearing a ring down queues work to the
/// thread that made it, which would interrupt (EINTR) a blocking call of the caller's.
pub(crate) fn probe() -> io::Result<()> {
    std::thread::Builder::new()
        .name("gamewire-uring-probe".into())
        .spawn(probe_here)?
        .join()
        .map_err(|_| io::Error::other("the io_uring probe panicked"))?
}

fn probe_here() -> io::Result<()> {
    let ring = build_ring()?;
    let buffers = BufferRing::new(&ring, Vec::new(), 1).map_err(|error| {
        io::Error::new(io::ErrorKind::Unsupported, format!("provided-buffer rings unavailable: {error}"))
    })?;
    let _ = ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    drop(buffers);
    Ok(())
}

/// Queues `entry` on `ring`, submitting first if the submission queue is full.
///
/// # Safety
///
/// Every buffer `entry` points to must stay alive and untouched until its last completion is reaped.
pub(super) unsafe fn push_entry(ring: &mut IoUring, entry: &squeue::Entry) {
    loop {
        // SAFETY: the caller keeps the entry's buffers alive until it completes.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return;
        }
        if let Err(error) = ring.submit() {
            tracing::warn!(%error, "io_uring submit failed while the submission queue was full");
        }
    }
}

/// An eventfd that wakes the loop from another thread.
pub(crate) fn new_wake_fd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a fresh descriptor we now own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a valid descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The provided-buffer ring: pool chunks lent to the kernel for multishot receives.
///
/// The ring is registered at its full capacity (entries cost 16 bytes) but lent only as many chunks
/// as the open connections warrant ([`BufferRing::top_up`]): a server with 100 clients does not hold
/// 4 MiB of receive buffers from the start. It never gives chunks back: it stays at its high-water mark.
pub(super) struct BufferRing {
    /// Page-aligned array of `entries` ring entries shared with the kernel.
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    mask: u16,
    /// Our producer index: entries before it are published to the kernel.
    tail: u16,
    /// `chunks[bid]`: the chunk behind buffer id `bid`; `None` while vacant (its chunk was detached).
    chunks: Vec<Option<ChunkMut>>,
    /// Buffer ids whose chunk was detached, lent again first when the ring is topped up.
    vacant: Vec<u16>,
    /// Entries registered: the most buffers the ring ever holds.
    capacity: usize,
    /// Buffers in the kernel's hands (provided and not yet completed).
    pub(super) in_ring: usize,
    /// Buffers consumed while the pool was low, held back until it recovers.
    pub(super) withheld: Vec<u16>,
}

// SAFETY: the ring memory is owned by this struct alone (and the kernel); moving it to the thread that
// runs the loop moves that ownership. The chunks are `Send`.
unsafe impl Send for BufferRing {}

impl std::fmt::Debug for BufferRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferRing")
            .field("buffers", &self.lent())
            .field("capacity", &self.capacity)
            .field("in_ring", &self.in_ring)
            .field("withheld", &self.withheld.len())
            .finish_non_exhaustive()
    }
}

impl BufferRing {
    /// Registers a ring of `capacity` entries (a power of two) on `ring` and provides every chunk
    /// (more may be lent later with [`Self::top_up`]).
    pub(super) fn new(ring: &IoUring, chunks: Vec<ChunkMut>, capacity: usize) -> io::Result<BufferRing> {
        assert!(capacity.is_power_of_two() && capacity <= 1 << 15 && chunks.len() <= capacity);
        let layout = Layout::from_size_align(capacity * size_of::<BufRingEntry>(), 4096)
            .map_err(|_| io::Error::other("buffer ring layout"))?;
        // SAFETY: the layout has a non-zero size (capacity >= 1, entries are 16 bytes).
        let memory = unsafe { std::alloc::alloc_zeroed(layout) };
        let entries = NonNull::new(memory.cast::<BufRingEntry>())
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"))?;
        let mut buffers = BufferRing {
            entries,
            layout,
            mask: (capacity - 1) as u16,
            tail: 0,
            chunks: chunks.into_iter().map(Some).collect(),
            vacant: Vec::new(),
            capacity,
            in_ring: 0,
            withheld: Vec::with_capacity(capacity),
        };
        // SAFETY: `entries` is page-aligned, zeroed memory for `capacity` entries that stays allocated
        // until `buffers` is dropped, which happens only after the group is unregistered or the ring
        // is gone (see `UringLoop`'s field order and `Drop`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                capacity as u16,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..buffers.chunks.len() {
            buffers.provide(bid as u16);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// Puts buffer `bid` back at the ring's tail (visible to the kernel after [`Self::publish`]).
    pub(super) fn provide(&mut self, bid: u16) {
        let chunk = self.chunks[usize::from(bid)].as_mut().expect("a vacant buffer is never provided");
        chunk.clear();
        let spare = chunk.spare_mut();
        let (addr, len) = (spare.as_mut_ptr() as u64, spare.len() as u32);
        let slot = usize::from(self.tail & self.mask);
        // SAFETY: `slot < capacity`, inside the ring memory; the kernel reads this entry only once the
        // tail published past it, and the entry it previously held was consumed (at most `capacity`
        // buffers exist, so the producer never laps the kernel's head).
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(addr);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.in_ring += 1;
    }

    /// Makes every provided entry visible to the kernel.
    pub(super) fn publish(&self) {
        // SAFETY: `entries` is the ring's first entry, initialised; its reserved field is the tail the
        // kernel reads, which we only ever store to atomically.
        let tail = unsafe { BufRingEntry::tail(self.entries.as_ptr()) };
        // SAFETY: the tail is a live, aligned u16 shared with the kernel: access it atomically only.
        let tail = unsafe { AtomicU16::from_ptr(tail.cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The `len` bytes the kernel received into buffer `bid`, now back in our hands.
    pub(super) fn take(&mut self, bid: u16, len: usize) -> &[u8] {
        self.in_ring -= 1;
        let chunk = self.chunks[usize::from(bid)].as_mut().expect("the kernel selects only lent buffers");
        chunk.clear();
        chunk.advance(len.min(chunk.capacity()));
        chunk.filled()
    }
}

impl BufferRing {
    /// Chunks lent to the ring (in the kernel's hands or ours): its size now.
    pub(super) fn lent(&self) -> usize {
        self.chunks.len() - self.vacant.len()
    }

    /// How many chunks the ring should hold with `connections` open, at most `capacity`: a few for
    /// an idle server, and two more for each connection, so that all of them can send at once.
    pub(super) fn target_for(connections: usize, capacity: usize) -> usize {
        RING_BASE_BUFFERS
            .saturating_add(connections.saturating_mul(RING_BUFFERS_PER_CONNECTION))
            .min(capacity)
    }

    /// Lends the ring chunks from `pool` (vacant buffer ids first, then new ones) until it holds
    /// [`Self::target_for`] `connections`, and publishes them. Stops early while the pool is low:
    /// what the connections hold comes first. Call it when a connection is admitted (and, where
    /// chunks were detached, every turn). Returns how many chunks were added.
    pub(super) fn top_up(&mut self, pool: &Pool, connections: usize) -> usize {
        let target = Self::target_for(connections, self.capacity);
        let mut added = 0;
        while self.lent() < target && !pool_is_low(pool) {
            let Some(chunk) = pool.try_alloc() else { break };
            let bid = match self.vacant.pop() {
                Some(bid) => {
                    self.chunks[usize::from(bid)] = Some(chunk);
                    bid
                }
                None => {
                    self.chunks.push(Some(chunk));
                    (self.chunks.len() - 1) as u16
                }
            };
            self.provide(bid);
            added += 1;
        }
        if added > 0 {
            self.publish();
        }
        added
    }

    /// Hands over the chunk of buffer `bid` (just [`taken`](Self::take), so in our hands) with the
    /// bytes received into it, putting `fresh` in its place (`bid` is then provided again as usual),
    /// or, without `fresh`, leaving `bid` vacant until [`Self::top_up`] lends it a chunk again: the
    /// ring shrinks meanwhile, which is backpressure on every receive.
    pub(super) fn detach(&mut self, bid: u16, fresh: Option<ChunkMut>) -> ChunkMut {
        let slot = &mut self.chunks[usize::from(bid)];
        let filled = match fresh {
            Some(fresh) => slot.replace(fresh),
            None => {
                self.vacant.push(bid);
                slot.take()
            }
        };
        filled.expect("a detached buffer was lent")
    }

    /// The most receive buffers a pool of `chunk_count` chunks lends the ring (its capacity): `wanted`
    /// if set, else a quarter of the pool up to 1,024; a power of two, at most the kernel's 32,768 and
    /// half the pool.
    ///
    /// Every receive takes a whole buffer, however few bytes arrived: with more connections sending
    /// than buffers between two reaps, the ring runs dry and receives must be re-armed (ENOBUFS).
    pub(super) fn size_for(chunk_count: usize, wanted: usize) -> usize {
        let wanted = if wanted == 0 { (chunk_count / 4).min(DEFAULT_RECEIVE_BUFFERS) } else { wanted };
        let count = wanted.clamp(1, MAX_RECEIVE_BUFFERS.min(chunk_count / 2).max(1));
        if count.is_power_of_two() { count } else { count.next_power_of_two() / 2 }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the kernel no longer uses it (unregistered or
        // ring closed before this drop).
        unsafe { std::alloc::dealloc(self.entries.as_ptr().cast(), self.layout) }
    }
}

#[cfg(test)]
mod buffer_ring_tests {
    use gamewire_pool::PoolConfig;

    use super::*;

    #[test]
    fn the_ring_targets_a_few_buffers_plus_two_per_connection_up_to_its_capacity() {
        assert_eq!(BufferRing::target_for(0, 1024), 32);
        assert_eq!(BufferRing::target_for(100, 1024), 232);
        assert_eq!(BufferRing::target_for(496, 1024), 1024);
        assert_eq!(BufferRing::target_for(10_000, 1024), 1024);
        assert_eq!(BufferRing::target_for(0, 16), 16, "never beyond the capacity");
        assert_eq!(BufferRing::target_for(usize::MAX, 1024), 1024);
        // The capacity keeps its meaning: `--receive-buffers`, else a quarter of the pool up to 1,024.
        assert_eq!(BufferRing::size_for(16_384, 0), 1024);
        assert_eq!(BufferRing::size_for(16_384, 4096), 4096);
        assert_eq!(BufferRing::size_for(256, 0), 64);
    }

    #[test]
    fn the_ring_starts_small_grows_with_the_connections_and_refills_what_was_detached() {
        let ring = match build_ring() {
            Ok(ring) => ring,
            Err(error) => {
                eprintln!("SKIPPED: {error}");
                return;
            }
        };
        let pool = Pool::new(PoolConfig { chunk_size: 4096, chunk_count: 4096 }).unwrap();
        let capacity = BufferRing::size_for(pool.chunk_count(), 0);
        let mut buffers = BufferRing::new(&ring, Vec::new(), capacity).unwrap();
        assert_eq!(buffers.top_up(&pool, 0), 32);
        assert_eq!((buffers.lent(), buffers.in_ring, pool.free_chunks()), (32, 32, 4096 - 32));
        assert_eq!(buffers.top_up(&pool, 100), 200);
        assert_eq!(buffers.lent(), 232);
        assert_eq!(buffers.top_up(&pool, 10), 0, "no smaller than its high-water mark");
        assert_eq!(buffers.top_up(&pool, 5000), 1024 - 232);
        assert_eq!(buffers.lent(), capacity);

        // A buffer the kernel filled, handed to a backlog with no chunk in its place: the ring shrinks,
        // then gets a chunk for the id again.
        let _ = buffers.take(7, 100);
        let held = buffers.detach(7, None);
        assert_eq!((held.filled().len(), buffers.lent(), buffers.in_ring), (100, capacity - 1, capacity - 1));
        assert_eq!(buffers.top_up(&pool, 5000), 1);
        assert_eq!((buffers.lent(), buffers.in_ring), (capacity, capacity));
        drop(held);
        let _ = ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }

    #[test]
    fn the_ring_does_not_grow_into_a_low_pool() {
        let ring = match build_ring() {
            Ok(ring) => ring,
            Err(error) => {
                eprintln!("SKIPPED: {error}");
                return;
            }
        };
        let pool = Pool::new(PoolConfig { chunk_size: 4096, chunk_count: 256 }).unwrap();
        let mut buffers = BufferRing::new(&ring, Vec::new(), 64).unwrap();
        assert_eq!(buffers.top_up(&pool, 0), 32);
        let taken: Vec<_> = std::iter::from_fn(|| pool.try_alloc()).take(256 - 32 - 10).collect();
        // 10 free: below the pool's reserve (16), which stays for what connections hold.
        assert_eq!(buffers.top_up(&pool, 100), 0);
        drop(taken);
        assert_eq!(buffers.top_up(&pool, 100), 32);
        let _ = ring.submitter().unregister_buf_ring(BUFFER_GROUP);
    }
}
