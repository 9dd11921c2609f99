//! Completion backend on io_uring (Linux 6.0+): operations are posted ahead and their completions
//! reaped, the Linux counterpart of the chapter's IOCP server.
//!
//! - One multishot accept on the listener.
//! - One multishot receive per connection, drawing from a provided-buffer ring made of pool chunks: the
//!   kernel picks the chunk, the bytes are decoded in place, and the chunk goes straight back into the
//!   ring (or is held back while the pool is low, which starves the ring: backpressure, not loss).
//! - At most one vectored send per connection in flight, reading the queued pooled frames in place;
//!   they stay queued (alive) until its completion says how much the kernel took.
//! - Per-connection operation state lives in a slab indexed by the token carried in `user_data` (the
//!   chapter's OverlappedEx pool): nothing is allocated per operation.
//! - One `io_uring_enter` per loop turn submits everything and waits for completions.

use std::alloc::Layout;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use gamewire_pool::{ChunkMut, Pool};
use io_uring::types::{BufRingEntry, CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use socket2::SockRef;

use super::SWEEP_INTERVAL;
use crate::control::ShutdownState;
use crate::send_queue::MAX_IOVECS;
use gamewire_world::Game;

use crate::worker::{Phase, RunStats, ShutdownStep, Worker, pool_is_low};

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
/// Most refused connections held for their linger at once; beyond it the oldest is closed early.
const MAX_LINGERING_REFUSALS: usize = 1024;
/// How long the loop waits for cancelled operations to complete when it stops.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

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
    withheld: Vec<u16>,
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

/// Where an in-flight send's message header and slices live: fixed for the operation's life.
struct SendSlot {
    iovecs: [libc::iovec; MAX_IOVECS],
    header: libc::msghdr,
}

// SAFETY: the raw pointers point into this slot and into frames of the connection's send queue, both
// owned by the loop that owns the slot; they are only dereferenced by the kernel during the send.
unsafe impl Send for SendSlot {}

impl SendSlot {
    fn new() -> Box<SendSlot> {
        Box::new(SendSlot {
            iovecs: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOVECS],
            // SAFETY: msghdr is plain data for which all-zero is the empty header.
            header: unsafe { std::mem::zeroed() },
        })
    }
}

/// The operations of one connection (indexed by token): at most one receive and one send at a time.
struct ConnOps {
    /// The connection's socket (the worker's `Conn` holds only its number): owned here so that a
    /// closing connection can let go of it before its last zero-copy notification comes.
    socket: Option<OwnedFd>,
    receiving: bool,
    sending: bool,
    /// Zero-copy sends whose notification (the kernel let go of their pages) has not come yet.
    zerocopy_unnotified: usize,
    /// Its operations were cancelled: the connection is dropped once neither is in flight.
    closing: bool,
    /// Its send was cancelled (the queue stalled or was cut off while it was in flight).
    send_cancelled: bool,
    send: Box<SendSlot>,
}

/// The event loop of one worker on io_uring.
pub(crate) struct UringLoop<G: Game> {
    // Field order is drop order: the ring goes first, so the kernel is done with every buffer before
    // the buffer ring's memory and the chunks are released.
    ring: IoUring,
    buffers: BufferRing,
    worker: Worker<RawFd, G>,
    listener: Option<TcpListener>,
    shutdown: Arc<ShutdownState>,
    wake_fd: RawFd,
    wake_buffer: Box<[u8; 8]>,
    ops: Vec<ConnOps>,
    /// Operations submitted whose last completion has not arrived.
    in_flight: usize,
    accept_armed: bool,
    accept_paused: bool,
    /// Shutting down: the accept is cancelled and never re-armed.
    stopped_accepting: bool,
    /// Connections whose multishot receive ended (no buffer, or the kernel stopped it) and must be
    /// re-armed.
    rearm: Vec<usize>,
    /// Connections whose receive was re-armed last turn: their deferred bytes are read by the end of
    /// this turn's reaping (see `Worker::defer_read`).
    rearmed: Vec<usize>,
    /// Completions copied out of the queue, processed after it is released.
    completions: Vec<(u64, i32, u32)>,
    scratch: Vec<usize>,
    refused: VecDeque<(OwnedFd, Instant)>,
}

impl<G: Game> std::fmt::Debug for UringLoop<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringLoop")
            .field("connections", &self.worker.conns.len())
            .field("in_flight", &self.in_flight)
            .field("buffers", &self.buffers)
            .finish_non_exhaustive()
    }
}

impl<G: Game> UringLoop<G> {
    /// Sets up the ring on the calling thread (a single-issuer ring belongs to the thread that made
    /// it: call this on the thread that runs the loop).
    pub(crate) fn new(
        listener: TcpListener,
        worker: Worker<RawFd, G>,
        shutdown: Arc<ShutdownState>,
        wake_fd: RawFd,
    ) -> io::Result<Self> {
        let ring = build_ring()?;
        let capacity = BufferRing::size_for(worker.pool.chunk_count(), worker.config.receive_buffers);
        let mut buffers = BufferRing::new(&ring, Vec::new(), capacity)?;
        if buffers.top_up(&worker.pool, 0) == 0 {
            return Err(io::Error::other("buffer pool has no chunks for the receive ring"));
        }
        let capacity = worker.config.max_connections.min(1 << 16);
        let mut event_loop = UringLoop {
            ring,
            buffers,
            worker,
            listener: Some(listener),
            shutdown,
            wake_fd,
            wake_buffer: Box::new([0; 8]),
            ops: Vec::with_capacity(capacity),
            in_flight: 0,
            accept_armed: false,
            accept_paused: false,
            stopped_accepting: false,
            rearm: Vec::new(),
            rearmed: Vec::new(),
            completions: Vec::with_capacity(SUBMISSION_ENTRIES as usize * 4),
            scratch: Vec::new(),
            refused: VecDeque::new(),
        };
        event_loop.arm_accept();
        event_loop.arm_wake();
        Ok(event_loop)
    }

    /// The pool is considered low below this many free chunks (the mio backend's margin): consumed
    /// receive buffers are held back until it recovers. The kernel may already have filled every ring
    /// buffer when this trips; what they produce beyond the margin goes to the heap (bounded by one
    /// ring's worth, counted in `RunStats::heap_fallbacks`). A larger margin was tried: it keeps too
    /// much of the pool from clients that do not read, and the pressure cut then stalls everyone.
    fn pool_is_low(&self) -> bool {
        pool_is_low(&self.worker.pool) || self.worker.reads_blocked()
    }

    /// Queues `entry`, submitting first if the submission queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: every buffer an entry points to (buffer ring, send slot and queued frames, wake
        // buffer) stays alive and untouched until the entry's last completion is reaped.
        unsafe { push_entry(&mut self.ring, &entry) }
    }

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else { return };
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Op::Accept, 0));
        self.push(entry);
        self.accept_armed = true;
        self.in_flight += 1;
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(Fd(self.wake_fd), self.wake_buffer.as_mut_ptr(), 8)
            .build()
            .user_data(user_data(Op::Wake, 0));
        self.push(entry);
        self.in_flight += 1;
    }

    fn arm_receive(&mut self, token: usize) {
        let fd = self.worker.conns[token].socket;
        let entry =
            opcode::RecvMulti::new(Fd(fd), BUFFER_GROUP).build().user_data(user_data(Op::Receive, token));
        self.push(entry);
        self.ops[token].receiving = true;
        self.in_flight += 1;
    }

    pub(crate) fn run(mut self) -> io::Result<RunStats> {
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        let mut drain_deadline: Option<Instant> = None;
        let flush_interval = self.worker.config.flush_interval;
        loop {
            let now = Instant::now();
            let wake_at = self.worker.wake_at(next_sweep);
            let wait = if !self.rearm.is_empty() && self.buffers.in_ring > 0 {
                Duration::ZERO
            } else {
                wake_at.saturating_duration_since(now)
            };
            let wait = if !wait.is_zero() && !self.worker.may_wait() { Duration::ZERO } else { wait };
            let submitted = self.submit_and_wait(wait);
            self.worker.woke();
            submitted?;
            let now = Instant::now();
            self.worker.out.now = now;
            self.reap(now);
            self.worker.apply_deliveries(now);
            self.worker.run_game(now);
            if !self.buffers.withheld.is_empty() && !self.pool_is_low() {
                while let Some(bid) = self.buffers.withheld.pop() {
                    self.buffers.provide(bid);
                }
            }
            self.buffers.publish();
            // Receives re-armed last turn have been submitted and reaped since: what the socket held
            // then has been read (a completion), or it held nothing.
            for token in self.rearmed.drain(..) {
                self.worker.caught_up(token);
            }
            if self.buffers.in_ring > 0 {
                let mut rearm = std::mem::take(&mut self.rearm);
                for &token in &rearm {
                    if self.worker.conns.contains(token)
                        && !self.ops[token].closing
                        && !self.ops[token].receiving
                    {
                        self.arm_receive(token);
                        self.rearmed.push(token);
                    }
                }
                rearm.clear();
                self.rearm = rearm;
            }
            if now >= next_sweep {
                self.worker.sweep(now);
                // The ring grows at admit, except while the pool was low then: catch up here.
                self.buffers.top_up(&self.worker.pool, self.worker.conns.len());
                // Memory pressure proper (not a backlog towards the world thread, which resolves
                // itself): cut the largest backlog.
                if self.worker.under_memory_pressure() {
                    self.worker.relieve_pool_pressure(now);
                }
                while self.refused.front().is_some_and(|(_, until)| *until <= now) {
                    self.refused.pop_front();
                }
                next_sweep = now + SWEEP_INTERVAL;
                if self.accept_paused && !self.stopped_accepting {
                    self.accept_paused = false;
                    self.arm_accept();
                }
            }
            match self.worker.shutdown_step(self.shutdown.requests(), now, &mut drain_deadline) {
                ShutdownStep::Continue => {}
                ShutdownStep::StopAccepting => self.stop_accepting(),
                ShutdownStep::Return => break,
            }
            self.worker.settle(now);
            let delay = if drain_deadline.is_some() { Duration::ZERO } else { flush_interval };
            // Closed connections first: nothing new is sent to a socket whose operations are being
            // cancelled.
            self.close_finished();
            self.flush_due(now, delay);
            self.worker.end_turn();
            if self.worker.drained(now, drain_deadline) {
                break;
            }
        }
        Ok(self.worker.finish_stats())
    }

    /// Submits what is queued and waits up to `wait` for at least one completion.
    fn submit_and_wait(&mut self, wait: Duration) -> io::Result<()> {
        let timespec = Timespec::from(wait);
        let args = SubmitArgs::new().timespec(&timespec);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            // ETIME: the wait timed out; EINTR: a signal; EBUSY: completions overflowed and must be
            // reaped before more can be submitted (they are, right after this).
            Err(error) if matches!(error.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Handles every completion that has arrived, including those the kernel kept aside when the
    /// completion queue overflowed.
    fn reap(&mut self, now: Instant) {
        loop {
            let mut completions = std::mem::take(&mut self.completions);
            completions.clear();
            completions
                .extend(self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())));
            for &(data, result, flags) in &completions {
                self.complete(data, result, flags, now);
            }
            let drained = completions.is_empty();
            self.completions = completions;
            if drained {
                break;
            }
            if self.ring.submission().cq_overflow() {
                tracing::debug!("completion queue overflowed: flushing the kernel's backlog");
                let _ = self.ring.submitter().submit();
            } else if self.ring.completion().is_empty() {
                break;
            }
        }
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32, now: Instant) {
        let (op, token) = decode_user_data(data);
        let more = cqueue::more(flags);
        if !more {
            self.in_flight -= 1;
        }
        match op {
            Some(Op::Accept) => self.accepted(result, more, now),
            Some(Op::Receive) => self.received(token, result, flags, more, now),
            Some(Op::Send) if cqueue::notif(flags) => {
                // A zero-copy send's pages are free: its frames may go back.
                self.ops[token].zerocopy_unnotified -= 1;
                self.worker.out.queues[token].release_zerocopy_batch();
                if self.ops[token].closing {
                    self.finish_if_idle(token);
                }
            }
            Some(Op::Send) => {
                // With MORE set, this was a zero-copy send and its notification follows.
                if more {
                    self.ops[token].zerocopy_unnotified += 1;
                }
                self.sent(token, result, more, now);
            }
            Some(Op::Wake) => {
                if self.shutdown.requests() < 2 {
                    self.arm_wake();
                }
            }
            Some(Op::Cancel) | None => {}
        }
    }

    fn accepted(&mut self, result: i32, more: bool, now: Instant) {
        if !more {
            self.accept_armed = false;
        }
        if result < 0 {
            let error = io::Error::from_raw_os_error(-result);
            if result != -libc::ECANCELED && self.listener.is_some() {
                // EMFILE/ENFILE/ENOBUFS: the pending connections stay in the backlog; try again at
                // the next sweep instead of spinning.
                tracing::warn!(%error, "accept failed; pausing accept until the next sweep");
                self.accept_paused = true;
            }
        } else {
            // SAFETY: a successful accept completion carries a new descriptor that nothing else owns.
            let socket = unsafe { OwnedFd::from_raw_fd(result) };
            if self.stopped_accepting {
                // Accepted by the kernel between the shutdown request and the cancel taking effect:
                // after `shut_down_all`, so it would never hear SHUTTING_DOWN. Closed at once instead.
                self.worker.stats.accepted += 1;
                drop(socket);
            } else {
                self.admit(socket, now);
            }
        }
        if self.stopped_accepting {
            if !self.accept_armed {
                // The cancelled accept is over: closing the listener now refuses what waits in its
                // backlog.
                self.listener = None;
            }
        } else if !self.accept_armed && !self.accept_paused {
            self.arm_accept();
        }
    }

    fn admit(&mut self, socket: OwnedFd, now: Instant) {
        let sock = SockRef::from(&socket);
        let Some(peer) = sock.peer_addr().ok().and_then(|addr| addr.as_socket()) else {
            self.worker.stats.accepted += 1; // Reset before we got to it: counted, as mio does.
            return;
        };
        super::configure_accepted(sock, &self.worker.config, peer);
        if !self.worker.take_place(peer.ip()) {
            self.refuse(socket, peer, now);
            return;
        }
        let token = self.worker.accept(socket.as_raw_fd(), peer, now);
        self.buffers.top_up(&self.worker.pool, self.worker.conns.len());
        if self.ops.len() <= token {
            self.ops.resize_with(token + 1, || ConnOps {
                socket: None,
                receiving: false,
                sending: false,
                zerocopy_unnotified: 0,
                closing: false,
                send_cancelled: false,
                send: SendSlot::new(),
            });
        }
        let ops = &mut self.ops[token];
        (ops.receiving, ops.sending, ops.closing, ops.zerocopy_unnotified) = (false, false, false, 0);
        ops.send_cancelled = false;
        ops.socket = Some(socket);
        self.arm_receive(token);
    }

    fn refuse(&mut self, socket: OwnedFd, peer: SocketAddr, now: Instant) {
        self.worker.stats.accepted += 1;
        let sock = SockRef::from(&socket);
        // A fresh socket's send buffer is empty: the short frame goes out whole or not at all.
        let _ =
            sock.send_with_flags(self.worker.server_full_frame(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        let _ = sock.shutdown(Shutdown::Write);
        tracing::debug!(%peer, "refused: server full");
        if self.refused.len() == MAX_LINGERING_REFUSALS {
            self.refused.pop_front();
        }
        self.refused.push_back((socket, now + self.worker.config.close_linger));
    }

    fn received(&mut self, token: usize, result: i32, flags: u32, more: bool, now: Instant) {
        if !more {
            self.ops[token].receiving = false;
        }
        let closing = self.ops[token].closing;
        if result > 0 {
            let bid = cqueue::buffer_select(flags).expect("a multishot receive always selects a buffer");
            let bytes = self.buffers.take(bid, result as usize);
            if !closing {
                self.worker.receive(token, bytes, now);
                self.worker.caught_up(token);
            }
            if self.pool_is_low() {
                self.worker.stats.read_pauses += 1;
                self.buffers.withheld.push(bid);
            } else {
                self.buffers.provide(bid);
            }
            if !more && !closing {
                self.rearm.push(token);
                self.worker.defer_read(token, now);
            }
        } else if result == -libc::ENOBUFS {
            // The ring ran dry: re-arm once buffers are back (bytes wait in the socket meanwhile, and
            // count as arrived by now).
            if !closing {
                self.rearm.push(token);
                self.worker.defer_read(token, now);
            }
        } else if result != -libc::ECANCELED && !closing {
            // 0: end of stream; below 0: the connection failed.
            self.worker.peer_closed(token, now);
        }
        if closing {
            self.finish_if_idle(token);
        }
    }

    fn sent(&mut self, token: usize, result: i32, zerocopy: bool, now: Instant) {
        self.ops[token].sending = false;
        self.ops[token].send_cancelled = false;
        let closing = self.ops[token].closing;
        if !self.worker.conns.contains(token) {
            return;
        }
        let written = usize::try_from(result).unwrap_or(0);
        self.worker.out.end_send(token, written, zerocopy);
        let Some((conn, queue)) = self.worker.conn_and_queue(token) else { return };
        if closing {
            self.finish_if_idle(token);
        } else if result == -libc::ECANCELED {
            // Cancelled because the queue stalled or was cut off meanwhile (nothing was taken): send
            // again, from its own copies, or its ERROR.
            self.worker.out.mark_dirty(token);
        } else if result < 0 {
            self.worker.peer_closed(token, now);
        } else if queue.has_unwritten() {
            // A short send, or frames queued meanwhile: send the rest with the next flush.
            self.worker.out.mark_dirty(token);
        } else if let Phase::Draining { write_shut: false, .. } = conn.phase {
            shut_write(&self.ops[token]);
            self.worker.mark_write_shut(token, now);
        }
    }

    /// Sends, for every connection whose frames have waited `delay`, what its queue holds.
    fn flush_due(&mut self, now: Instant, delay: Duration) {
        let mut due = std::mem::take(&mut self.scratch);
        self.worker.out.take_due(now, delay, &mut due);
        let threshold = self.worker.config.send_zerocopy_threshold;
        for &token in &due {
            if self.ops.get(token).is_none_or(|ops| ops.closing) {
                continue;
            }
            let Some((conn, queue)) = self.worker.conn_and_queue(token) else { continue };
            if self.ops[token].sending {
                // The last send has not completed by the next flush: the socket is full. The send marks
                // the connection dirty again when it completes. Frames it holds that pin shared chunks
                // (it started before the stall), or that a cut-off dropped, are let go of by
                // cancelling it: a client that does not read would keep them for good.
                self.worker.out.mark_stalled(token);
                let wants_cancel = self.worker.out.queues[token].wants_send_cancelled();
                if wants_cancel && !self.ops[token].send_cancelled {
                    self.ops[token].send_cancelled = true;
                    let send = CancelBuilder::user_data(user_data(Op::Send, token));
                    let entry =
                        opcode::AsyncCancel2::new(send).build().user_data(user_data(Op::Cancel, token));
                    self.push(entry);
                    self.in_flight += 1;
                }
                continue;
            }
            if !queue.has_unwritten() {
                if let Phase::Draining { write_shut: false, .. } = conn.phase {
                    shut_write(&self.ops[token]);
                    self.worker.mark_write_shut(token, now);
                }
                continue;
            }
            let slot = &mut *self.ops[token].send;
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = queue.io_slices(&mut slices);
            for (iovec, slice) in slot.iovecs.iter_mut().zip(&slices[..count]) {
                *iovec = libc::iovec { iov_base: slice.as_ptr().cast_mut().cast(), iov_len: slice.len() };
            }
            queue.begin_send(count);
            slot.header.msg_iov = slot.iovecs.as_mut_ptr();
            slot.header.msg_iovlen = count as _;
            let fd = Fd(conn.socket);
            let flags = libc::MSG_NOSIGNAL as u32;
            let entry = if threshold > 0 && queue.queued_bytes() >= threshold {
                opcode::SendMsgZc::new(fd, &slot.header).flags(flags).build()
            } else {
                opcode::SendMsg::new(fd, &slot.header).flags(flags).build()
            };
            let entry = entry.user_data(user_data(Op::Send, token));
            self.ops[token].sending = true;
            self.worker.stats.writes += 1;
            self.push(entry);
            self.in_flight += 1;
        }
        self.scratch = due;
    }

    /// Drops the connections the worker closed: at once when no operation of theirs is in flight,
    /// else after cancelling them and reaping their last completions.
    fn close_finished(&mut self) {
        let mut closed = std::mem::take(&mut self.scratch);
        self.worker.take_closed(&mut closed);
        for &token in &closed {
            if !self.worker.conns.contains(token) || self.ops[token].closing {
                continue;
            }
            let ops = &mut self.ops[token];
            ops.closing = true;
            if ops.receiving || ops.sending || ops.zerocopy_unnotified > 0 {
                // Shutting the socket down ends its receive (end of stream) and a send blocked on a
                // peer that does not read (EPIPE), even one the cancel below cannot reach.
                if let Some(socket) = &ops.socket {
                    let _ = SockRef::from(socket).shutdown(Shutdown::Both);
                }
                let fd = self.worker.conns[token].socket;
                let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
                    .build()
                    .user_data(user_data(Op::Cancel, token));
                self.push(entry);
                self.in_flight += 1;
                // Submitted now, while `fd` still names this socket: a multishot accept may reuse
                // the number as soon as it is closed.
                if let Err(error) = self.ring.submit() {
                    tracing::warn!(%error, "io_uring submit of a cancel failed");
                }
                let ops = &mut self.ops[token];
                if ops.zerocopy_unnotified > 0
                    && let Some(socket) = ops.socket.take()
                {
                    // Zero-copy notifications come only once the kernel frees the pages, which an
                    // unread send buffer never does: a reset purges it.
                    let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
                }
            } else {
                self.finish_if_idle(token);
            }
        }
        self.scratch = closed;
    }

    /// Drops closing connection `token` once neither its receive nor its send is in flight.
    fn finish_if_idle(&mut self, token: usize) {
        let ops = &self.ops[token];
        let idle = !ops.receiving && !ops.sending && ops.zerocopy_unnotified == 0;
        if ops.closing && idle && self.worker.conns.contains(token) {
            self.ops[token].socket = None;
            let conn = self.worker.remove(token);
            self.ops[token].closing = false;
            tracing::trace!(peer = %conn.peer, "closed");
        }
    }

    fn stop_accepting(&mut self) {
        self.stopped_accepting = true;
        if self.accept_armed {
            let entry = opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data(Op::Accept, 0)))
                .build()
                .user_data(user_data(Op::Cancel, 0));
            self.push(entry);
            self.in_flight += 1;
        } else {
            self.listener = None;
        }
    }
}

/// Shuts the write side of a connection's socket (after its last frame went out).
fn shut_write(ops: &ConnOps) {
    if let Some(socket) = &ops.socket {
        let _ = SockRef::from(socket).shutdown(Shutdown::Write);
    }
}

impl<G: Game> Drop for UringLoop<G> {
    /// Cancels whatever is still in flight and waits (boundedly) for the kernel to let go of every
    /// buffer before the pool chunks and the buffer ring go back.
    fn drop(&mut self) {
        let entry =
            opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(user_data(Op::Cancel, 0));
        self.push(entry);
        self.in_flight += 1;
        let deadline = Instant::now() + CANCEL_WAIT;
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.submit_and_wait(Duration::from_millis(10)).is_err() {
                break;
            }
            for cqe in self.ring.completion() {
                if !cqueue::more(cqe.flags()) {
                    self.in_flight -= 1;
                }
            }
        }
        if self.in_flight > 0 {
            tracing::warn!(in_flight = self.in_flight, "io_uring operations still in flight at exit");
        }
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
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
