//! The discipline both echo loops hold to: a connection's unsent bytes live in pool chunks and are
//! bounded by its share of the pool, and deadlines close a connection that stops reading or goes silent.
//!
//! Echo has no frames, so the game's limits translate as follows:
//! - the send limits count pool chunks held, not bytes: reading from a connection pauses once its
//!   backlog holds its share (an equal part of the pool, at most `send_soft_limit`'s worth), so that
//!   only its own TCP window fills; one that holds more than `send_hard_limit`'s worth is closed;
//! - the write deadline: a connection whose backlog stayed at its share that long is closed;
//! - the idle timeout is the `EchoServer`'s own (30 s by default, as protocol v1's), counted from the
//!   last byte moved either way;
//! - the partial-frame timeout has no meaning for raw bytes.
//!
//! Small reads are packed into the tail chunk of the backlog instead of pinning one chunk each.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use gamewire_pool::{ChunkMut, Pool};

use super::SWEEP_INTERVAL;
use crate::ServerConfig;
use crate::worker::pool_reserve;

/// The limits of one echo loop, derived from the server's configuration and its pool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EchoLimits {
    /// Chunks the backlogs may hold together: the pool less its reserve and what the loop set aside.
    usable_chunks: usize,
    /// Most chunks one backlog holds before reading pauses, however few connections are open.
    most_chunks: usize,
    /// Chunks above which a connection is closed at once.
    hard_chunks: usize,
    pub(crate) write_deadline: Duration,
    pub(crate) idle_timeout: Duration,
    /// SO_SNDBUF of every echo connection, as for game connections (0: the kernel's autotuning).
    pub(crate) socket_send_buffer: usize,
}

/// What a sweep closes, of the connections `conns` yields (token, timers, chunks held): each whose
/// timers say so and, while `pool_is_low`, the one holding the most beyond its share of `open`
/// connections (counted in `pressure_cuts`). Both echo loops sweep with it.
pub(crate) fn sweep_verdicts<'a>(
    conns: impl Iterator<Item = (usize, &'a EchoTimers, usize)> + Clone,
    limits: &EchoLimits,
    pool_is_low: bool,
    open: usize,
    now: Instant,
    pressure_cuts: &mut u64,
) -> Vec<(usize, CloseReason)> {
    let mut doomed: Vec<(usize, CloseReason)> = conns
        .clone()
        .filter_map(|(token, timers, held)| timers.verdict(held, limits, now).map(|reason| (token, reason)))
        .collect();
    if pool_is_low {
        let victim = conns
            .filter(|&(_, timers, held)| limits.is_pressure_victim(held, timers.full_for(now), open))
            .max_by_key(|&(_, _, held)| held);
        if let Some((token, _, _)) = victim
            && doomed.iter().all(|(doomed, _)| *doomed != token)
        {
            *pressure_cuts += 1;
            doomed.push((token, CloseReason::PoolPressure));
        }
    }
    doomed
}

impl EchoLimits {
    /// The limits for a loop on `pool` that keeps `set_aside` chunks for itself (io_uring: its
    /// receive ring at full size) besides the pool's reserve, closing connections idle for
    /// `idle_timeout`.
    pub(crate) fn new(
        config: &ServerConfig,
        idle_timeout: Duration,
        pool: &Pool,
        set_aside: usize,
    ) -> EchoLimits {
        let chunk_size = pool.chunk_size();
        let usable_chunks = pool.chunk_count().saturating_sub(pool_reserve(pool) + set_aside).max(1);
        let most_chunks = config.send_soft_limit.div_ceil(chunk_size).clamp(1, usable_chunks);
        EchoLimits {
            usable_chunks,
            most_chunks,
            hard_chunks: config.send_hard_limit.div_ceil(chunk_size).max(most_chunks),
            write_deadline: config.write_deadline,
            idle_timeout,
            socket_send_buffer: config.socket_send_buffer,
        }
    }

    /// The chunks one backlog may hold while `open` connections are served: an equal part of the
    /// usable pool, at least one, at most `send_soft_limit`'s worth. It shrinks as connections come,
    /// so that the ones already stuck leave room for newcomers (over their share, they are cut first
    /// when the pool runs low; see [`EchoLimits::is_pressure_victim`]).
    pub(crate) fn share(&self, open: usize) -> usize {
        (self.usable_chunks / open.max(1)).clamp(1, self.most_chunks)
    }

    /// Whether a connection whose backlog holds `held` chunks, at its share for `full_for`, may be
    /// cut to relieve a low pool with `open` connections: it holds more than its share now (it filled
    /// up while fewer connections were open, or completions overshot it) and has not been draining
    /// for a sweep interval. A burst that is being echoed is left alone.
    pub(crate) fn is_pressure_victim(&self, held: usize, full_for: Duration, open: usize) -> bool {
        held > self.share(open) && full_for >= SWEEP_INTERVAL
    }
}

/// Why an echo connection is closed by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// Its backlog stayed at its share for the write deadline: the peer does not read.
    Stuck,
    /// Its backlog holds more than the hard limit.
    OverHardLimit,
    /// The pool ran low while it held more than its share and was not draining.
    PoolPressure,
}

/// One connection's clocks: when bytes last moved, and since when its backlog has been full.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EchoTimers {
    last_activity: Instant,
    full_since: Option<Instant>,
}

impl EchoTimers {
    /// Clocks of a connection opened at `now`.
    pub(crate) fn new(now: Instant) -> EchoTimers {
        EchoTimers { last_activity: now, full_since: None }
    }

    /// Call when bytes were received from or sent to the peer.
    pub(crate) fn moved(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Call after the backlog grew or shrank: `held` chunks against a share of `share`. The write
    /// deadline runs while the backlog is at its share (reading paused) and restarts once it falls
    /// below.
    pub(crate) fn backlog_is(&mut self, held: usize, share: usize, now: Instant) {
        if held >= share {
            self.full_since.get_or_insert(now);
        } else {
            self.full_since = None;
        }
    }

    /// How long the backlog has been at its share (reading paused) at `now`; zero while below.
    pub(crate) fn full_for(&self, now: Instant) -> Duration {
        self.full_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// Whether the connection must be closed at `now` with a backlog of `held` chunks, and why.
    pub(crate) fn verdict(&self, held: usize, limits: &EchoLimits, now: Instant) -> Option<CloseReason> {
        if held > limits.hard_chunks {
            Some(CloseReason::OverHardLimit)
        } else if self
            .full_since
            .is_some_and(|since| now.saturating_duration_since(since) >= limits.write_deadline)
        {
            Some(CloseReason::Stuck)
        } else if now.saturating_duration_since(self.last_activity) >= limits.idle_timeout {
            Some(CloseReason::Idle)
        } else {
            None
        }
    }
}

/// The bytes received from one connection and not yet echoed, oldest first, in pool chunks: the first
/// `sent` bytes of the front chunk are gone already; the tail chunk takes the next bytes.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    chunks: VecDeque<ChunkMut>,
    sent: usize,
}

impl Backlog {
    /// Pool chunks held.
    pub(crate) fn held(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no byte waits to be echoed.
    pub(crate) fn is_empty(&self) -> bool {
        self.front_unsent().is_empty()
    }

    /// Room for the next bytes: the tail chunk's spare bytes, else those of a new chunk from `pool`;
    /// `None` when the pool has none. Call [`Backlog::commit`] with what was written, then
    /// [`Backlog::trim`] if nothing was.
    pub(crate) fn spare(&mut self, pool: &Pool) -> Option<&mut [u8]> {
        if self.chunks.back().is_none_or(|tail| tail.remaining() == 0) {
            self.chunks.push_back(pool.try_alloc()?);
        }
        self.chunks.back_mut().map(ChunkMut::spare_mut)
    }

    /// Marks `n` bytes of what [`Backlog::spare`] returned as received.
    pub(crate) fn commit(&mut self, n: usize) {
        if let Some(tail) = self.chunks.back_mut() {
            tail.advance(n);
        }
    }

    /// Gives back a tail chunk that received nothing: an idle connection holds no chunk.
    pub(crate) fn trim(&mut self) {
        // Only a tail that was never written is empty: a front chunk with bytes sent still holds
        // unsent ones (`consume` gives back what is fully sent).
        if self.chunks.back().is_some_and(|tail| tail.filled().is_empty()) {
            self.chunks.pop_back();
        }
    }

    /// Spare bytes of the tail chunk (0 without one).
    pub(crate) fn tail_room(&self) -> usize {
        self.chunks.back().map_or(0, ChunkMut::remaining)
    }

    /// Copies `bytes` behind the others; they must fit in [`Backlog::tail_room`].
    pub(crate) fn copy_in(&mut self, bytes: &[u8]) {
        let tail = self.chunks.back_mut().expect("room in a tail chunk");
        tail.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        tail.advance(bytes.len());
    }

    /// Queues a chunk filled elsewhere (a receive buffer) behind the others, without copying.
    pub(crate) fn push_chunk(&mut self, chunk: ChunkMut) {
        if self.chunks.back().is_some_and(|tail| tail.filled().is_empty()) {
            self.chunks.pop_back();
        }
        self.chunks.push_back(chunk);
    }

    /// The unsent bytes of the front chunk: what a send of one buffer takes next.
    pub(crate) fn front_unsent(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |front| &front.filled()[self.sent..])
    }

    /// Fills `slices` with the unsent bytes, oldest first, for one vectored write; returns how many.
    pub(crate) fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for (k, chunk) in self.chunks.iter().enumerate() {
            if count == slices.len() {
                break;
            }
            let bytes = if k == 0 { &chunk.filled()[self.sent..] } else { chunk.filled() };
            if !bytes.is_empty() {
                slices[count] = IoSlice::new(bytes);
                count += 1;
            }
        }
        count
    }

    /// Forgets the oldest `n` unsent bytes (they were sent); chunks fully sent go back to the pool.
    pub(crate) fn consume(&mut self, mut n: usize) {
        while let Some(front) = self.chunks.front() {
            let unsent = front.filled().len() - self.sent;
            if n < unsent {
                self.sent += n;
                return;
            }
            n -= unsent;
            self.sent = 0;
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use gamewire_pool::PoolConfig;

    use super::*;

    /// The echo server's default idle timeout, 30 s.
    const IDLE: Duration = crate::EchoServer::DEFAULT_IDLE_TIMEOUT;

    fn pool(chunk_count: usize) -> Pool {
        Pool::new(PoolConfig { chunk_size: 1024, chunk_count }).unwrap()
    }

    #[test]
    fn the_default_idle_timeout_is_protocol_v1s() {
        assert_eq!(IDLE, gamewire_world::Config::default().idle_timeout);
    }

    #[test]
    fn the_share_is_an_equal_part_of_the_pool_capped_by_the_soft_limit() {
        let pool = pool(256); // reserve 16: 240 usable
        let config = ServerConfig { send_soft_limit: 64 << 10, ..ServerConfig::default() };
        let limits = EchoLimits::new(&config, IDLE, &pool, 0);
        assert_eq!(limits.share(1), 64, "one connection: the soft limit's worth");
        assert_eq!(limits.share(10), 24);
        assert_eq!(limits.share(1000), 1, "never less than one chunk");
        // 10 connections at their share leave the pool's reserve untouched.
        assert!(10 * limits.share(10) <= 256 - 16);
        let stalled = Duration::from_millis(100);
        assert!(limits.is_pressure_victim(64, stalled, 10));
        assert!(!limits.is_pressure_victim(24, stalled, 10), "at its share");
        assert!(!limits.is_pressure_victim(64, Duration::from_millis(10), 10), "being echoed");
        let with_ring = EchoLimits::new(&config, IDLE, &pool, 64);
        assert_eq!(with_ring.share(8), 22, "the ring's chunks are not shared out");
    }

    #[test]
    fn a_full_backlog_is_closed_after_the_write_deadline_an_idle_one_after_the_idle_timeout() {
        let pool = pool(256);
        let config = ServerConfig::default();
        let limits = EchoLimits::new(&config, IDLE, &pool, 0);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut timers = EchoTimers::new(start);
        timers.backlog_is(24, 24, at(1000));
        assert_eq!(timers.verdict(24, &limits, at(5999)), None);
        assert_eq!(timers.verdict(24, &limits, at(6000)), Some(CloseReason::Stuck));
        // Falling below the share (the peer read some) restarts the deadline.
        timers.backlog_is(23, 24, at(6100));
        timers.backlog_is(24, 24, at(6200));
        assert_eq!(timers.verdict(24, &limits, at(11_199)), None);
        assert_eq!(timers.verdict(24, &limits, at(11_200)), Some(CloseReason::Stuck));
        // Over the hard limit (1 MiB of 1 KiB chunks): at once.
        assert_eq!(timers.verdict(1025, &limits, at(6200)), Some(CloseReason::OverHardLimit));

        let mut idle = EchoTimers::new(start);
        idle.moved(at(10_000));
        assert_eq!(idle.verdict(0, &limits, at(39_999)), None);
        assert_eq!(idle.verdict(0, &limits, at(40_000)), Some(CloseReason::Idle));
    }

    #[test]
    fn small_reads_share_a_chunk_and_sent_chunks_go_back_to_the_pool() {
        let pool = pool(64);
        let mut backlog = Backlog::default();
        for k in 0..10u8 {
            let spare = backlog.spare(&pool).unwrap();
            spare[..100].fill(k);
            backlog.commit(100);
        }
        assert_eq!(backlog.held(), 1, "ten reads of 100 bytes in one 1 KiB chunk");
        let spare = backlog.spare(&pool).unwrap();
        assert_eq!(spare.len(), 24);
        spare.fill(10);
        backlog.commit(24);
        backlog.spare(&pool).unwrap()[..1000].fill(11);
        backlog.commit(1000);
        assert_eq!((backlog.held(), pool.free_chunks()), (2, 62));
        let mut slices = [IoSlice::new(&[]); 4];
        assert_eq!(backlog.io_slices(&mut slices), 2);
        assert_eq!(slices[0].len() + slices[1].len(), 2024);
        backlog.consume(1500);
        assert_eq!((backlog.held(), pool.free_chunks()), (1, 63));
        assert_eq!(backlog.front_unsent(), &[11; 524][..]);
        // A read that got nothing leaves no chunk behind.
        backlog.consume(524);
        assert!(backlog.is_empty());
        let _ = backlog.spare(&pool).unwrap();
        backlog.trim();
        assert_eq!((backlog.held(), pool.free_chunks()), (0, 64));
    }

    #[test]
    fn received_chunks_queue_without_a_copy_and_small_ones_are_copied_behind() {
        let pool = pool(64);
        let mut backlog = Backlog::default();
        let mut received = pool.try_alloc().unwrap();
        received.spare_mut()[..300].fill(1);
        received.advance(300);
        backlog.push_chunk(received);
        assert_eq!(backlog.tail_room(), 724);
        backlog.copy_in(&[2; 500]);
        assert_eq!(backlog.held(), 1);
        backlog.consume(800);
        assert!(backlog.is_empty());
        assert_eq!(pool.free_chunks(), 64);
    }
}
