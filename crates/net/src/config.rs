//! Server parameters: the world's rules plus everything about connections, memory and deadlines.

use std::net::SocketAddr;
use std::time::Duration;

use gamewire_proto::{DEFAULT_MAX_PAYLOAD, MAX_PAYLOAD_LIMIT};

/// Everything a [`crate::Server`] needs. [`ServerConfig::default`] is protocol v1's defaults on
/// `127.0.0.1:7777`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Game rules.
    pub world: gamewire_world::Config,
    /// Largest client payload accepted (`data_length`); bigger is TOO_LARGE.
    pub max_payload: u32,
    /// Size of the buffer pool's one mapped region, in bytes.
    pub pool_bytes: usize,
    /// Size of one pool chunk (a multiple of 64); one read fills at most one chunk.
    pub chunk_size: usize,
    /// Connections served at once; one more is answered SERVER_FULL and closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address; one more from it is answered SERVER_FULL and
    /// closed. 0 (the default) means no per-IP cap: players behind one NAT, and load tests from one
    /// host, legitimately open many connections from one address.
    pub max_connections_per_ip: usize,
    /// Queued bytes per client above which the write deadline starts.
    pub send_soft_limit: usize,
    /// Queued bytes per client above which it is cut off at once (SLOW_CONSUMER).
    pub send_hard_limit: usize,
    /// How long a client may stay above the soft limit.
    pub write_deadline: Duration,
    /// The kernel send buffer of each game connection (SO_SNDBUF; the kernel doubles it for its
    /// bookkeeping). 0 leaves it to the kernel's autotuning, which on Linux grows a buffer to 4 MiB for a
    /// peer that stops reading: minutes of a game's traffic hidden from the send limits above, and up to
    /// gigabytes of kernel memory across thousands of connections. TCP keeps no more unacknowledged bytes
    /// in flight than this buffer holds, so it also caps one connection's rate near 2 x the size per round
    /// trip: with the default, 64 KiB, about 1.3 MB/s at 100 ms (less with many small writes, whose
    /// bookkeeping counts too), far above the tens of KB/s a player receives. Raise it for distant clients
    /// that receive a lot: one that cannot keep up stays over the soft limit and is cut off.
    pub socket_send_buffer: usize,
    /// How long the bytes of an unfinished frame may wait for the rest (TIMEOUT).
    pub partial_frame_timeout: Duration,
    /// On shutdown, how long to keep flushing queued frames before exiting anyway.
    pub drain_timeout: Duration,
    /// After a fatal ERROR is flushed, how long to wait for the peer to close before dropping it.
    pub close_linger: Duration,
    /// Longest a client's queued frame waits for others to share its write. Zero (the default) flushes
    /// at the end of every loop turn, for the lowest latency; tens of milliseconds let frames of several
    /// turns leave in one write per client, for fewer syscalls per frame (what a game server's network
    /// tick gives, with each client's clock started by its own first frame so flushes stay spread).
    pub flush_interval: Duration,
    /// Touch every page of the pool at start. Off by default: untouched pages cost no memory, and the
    /// pool's last-in-first-out free list keeps reusing the same hot chunks, so resident memory follows
    /// what is really in use. On, the whole pool is resident from the start and no page fault happens
    /// later.
    pub prefault_pool: bool,
    /// Which event loop moves the bytes.
    pub io: IoBackend,
    /// Event loops (workers), each with its own listener (SO_REUSEPORT), connections and pool. With
    /// more than one, the world runs on a thread of its own, linked to every worker by SPSC rings.
    pub workers: usize,
    /// Pin worker `i` to the `i`-th CPU the process may run on (in turn).
    pub pin_workers: bool,
    /// io_uring only: pool chunks lent to the kernel's provided-buffer ring for receiving (0: a quarter
    /// of the pool, at most 1,024; never more than half the pool). Each receive takes a whole chunk, so a ring
    /// smaller than the number of connections that send between two loop turns runs dry.
    pub receive_buffers: usize,
    /// Slots in each ring between a worker and the world thread (rounded up to a power of two). A full
    /// ring is backpressure: what does not fit waits, and the sender takes no new input meanwhile.
    pub ring_slots: usize,
    /// io_uring only: a flush of at least this many queued bytes goes out as a zero-copy send
    /// (`SendMsgZc`: the kernel pins the pages instead of copying them, and reports when it let go).
    /// 0, the default, never does: the kernel documentation puts the gain above about 10 KB, and on
    /// loopback it never pays (see docs/BENCHMARKS.md).
    pub send_zerocopy_threshold: usize,
    /// Echo raw bytes instead of playing the game (no framing, no world): for comparing the I/O core
    /// with other runtimes under a standard echo client.
    pub echo: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7777)),
            world: gamewire_world::Config::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            pool_bytes: 64 << 20,
            chunk_size: 4096,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            send_soft_limit: 256 << 10,
            send_hard_limit: 1 << 20,
            write_deadline: Duration::from_secs(5),
            socket_send_buffer: 64 << 10,
            partial_frame_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            close_linger: Duration::from_secs(2),
            flush_interval: Duration::ZERO,
            prefault_pool: false,
            echo: false,
            io: IoBackend::Auto,
            send_zerocopy_threshold: 0,
            workers: 1,
            pin_workers: false,
            ring_slots: 1 << 14,
            receive_buffers: 0,
        }
    }
}

/// The event loop a [`crate::Server`] runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring where the kernel offers what it needs (Linux 6.0+, io_uring permitted), else mio; the
    /// log says which was chosen and why.
    #[default]
    Auto,
    /// Readiness-based: mio (epoll on Linux, kqueue on BSD/macOS).
    Mio,
    /// Completion-based: io_uring (Linux only); an error where the kernel lacks it.
    Uring,
}

/// Why a [`ServerConfig`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The world's parameters.
    #[error(transparent)]
    World(#[from] gamewire_world::ConfigError),
    /// `max_payload` outside 256..=65536.
    #[error("max_payload must be in 256..={MAX_PAYLOAD_LIMIT}, got {0}")]
    MaxPayload(u32),
    /// Pool sizes that cannot work.
    #[error("pool of {pool_bytes} bytes in chunks of {chunk_size}: {reason}")]
    Pool {
        /// Pool size.
        pool_bytes: usize,
        /// Chunk size.
        chunk_size: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Limits that contradict each other.
    #[error("{0}")]
    Limits(&'static str),
}

/// Most workers a server runs.
pub const MAX_WORKERS: usize = 256;

/// Smallest `max_payload`: every valid client packet (a 256-byte CHAT at most) fits.
pub const MIN_MAX_PAYLOAD: u32 = 256;

impl ServerConfig {
    /// Checks every parameter.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.world.validate()?;
        if !(MIN_MAX_PAYLOAD..=MAX_PAYLOAD_LIMIT).contains(&self.max_payload) {
            return Err(ConfigError::MaxPayload(self.max_payload));
        }
        let pool_error =
            |reason| ConfigError::Pool { pool_bytes: self.pool_bytes, chunk_size: self.chunk_size, reason };
        if self.chunk_size < 1024 || !self.chunk_size.is_multiple_of(64) {
            return Err(pool_error("chunk size must be a multiple of 64, at least 1024"));
        }
        if self.pool_bytes / self.chunk_size < 64 {
            return Err(pool_error("the pool must hold at least 64 chunks"));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(ConfigError::Limits("workers must be in 1..=256"));
        }
        if !(2..=1 << 24).contains(&self.ring_slots) {
            return Err(ConfigError::Limits("ring_slots must be in 2..=16777216"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Limits("max_connections must be at least 1"));
        }
        let durations =
            [self.write_deadline, self.partial_frame_timeout, self.drain_timeout, self.close_linger];
        if durations.iter().any(|d| *d > gamewire_world::MAX_TIMEOUT) {
            return Err(ConfigError::Limits("deadlines and timeouts must not exceed one year"));
        }
        if self.send_soft_limit > self.send_hard_limit {
            return Err(ConfigError::Limits("send_soft_limit must not exceed send_hard_limit"));
        }
        Ok(())
    }

    /// Chunks in the pool.
    pub fn chunk_count(&self) -> usize {
        self.pool_bytes / self.chunk_size
    }
}
