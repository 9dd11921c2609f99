//! Server parameters: everything about connections, memory and deadlines (a game's rules are the
//! game's: protocol v1's go to `Server::bind`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use gamewire_proto::{DEFAULT_MAX_PAYLOAD, MAX_PAYLOAD_LIMIT};

/// Everything a [`crate::Server`] needs besides its game. [`ServerConfig::default`] is protocol v1's
/// defaults on `127.0.0.1:7777`. The game's rules are not here: protocol v1's
/// ([`gamewire_world::Config`]) are passed to [`crate::Server::bind`] beside this, and another game
/// takes its own when it is built.
///
/// Built from the default with one setter per field (each named after it; the fields stay readable and
/// assignable), so that a field added later breaks no caller (`#[non_exhaustive]`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use gamewire_net::{IoBackend, ServerConfig};
///
/// let config = ServerConfig::default()
///     .addr("127.0.0.1:0".parse().unwrap())
///     .workers(2)
///     .io(IoBackend::Mio)
///     .flush_interval(Duration::from_millis(30));
/// assert_eq!(config.workers, 2);
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Address to serve the UDP transport on (docs/protocol.md section 10), beside TCP and into the
    /// same world; `None` (the default) serves TCP only. Each worker binds its own socket there
    /// (SO_REUSEPORT with several). A UDP session takes a place like a TCP connection
    /// (`max_connections`, `max_connections_per_ip`). mio backend only, for now.
    pub udp_addr: Option<SocketAddr>,
    /// Largest client payload accepted (`data_length`); bigger is TOO_LARGE.
    pub max_payload: u32,
    /// Size of the buffer pool's one mapped region, in bytes.
    pub pool_bytes: usize,
    /// Size of one pool chunk (a multiple of 64); one read fills at most one chunk.
    pub chunk_size: usize,
    /// Connections served at once; one more is answered SERVER_FULL and closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address; one more from it is answered SERVER_FULL and
    /// closed. The default, 64, keeps one host from holding every place of a public server (by
    /// reconnecting every few seconds, or pinging every 29) while leaving room for a household or a
    /// small NAT; 0 means no per-IP cap. Loopback peers are exempt unless [`Self::cap_loopback`]:
    /// load tests run from the server's own host. See [`Self::per_ip_cap`].
    pub max_connections_per_ip: usize,
    /// Apply `max_connections_per_ip` to loopback peers (127.0.0.0/8, ::1) too. Off by default: a
    /// peer on loopback is this host itself (a load test, a local proxy), not a stranger.
    pub cap_loopback: bool,
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
    /// more than one, the game runs on a thread of its own, linked to every worker by SPSC rings.
    pub workers: usize,
    /// Join whatever already listens on `addr` with SO_REUSEPORT (another server started with this
    /// set, or with several workers), the kernel spreading new connections over both, each with a
    /// game of its own. Off by default: binding then fails with "address in use" when anything
    /// listens on `addr`, so a second server started by mistake cannot silently take half the
    /// players. (The workers of one server share the port either way.)
    pub reuse_port: bool,
    /// Pin worker `i` to the `i`-th CPU the process may run on (in turn).
    pub pin_workers: bool,
    /// io_uring only: the most pool chunks lent to the kernel's provided-buffer ring for receiving (0: a
    /// quarter of the pool, at most 1,024; never more than half the pool). The ring starts with 32 and
    /// grows by 2 per connection up to this, so a server with few clients does not hold the rest. Each
    /// receive takes a whole chunk, so a ring smaller than the number of connections that send between
    /// two loop turns runs dry.
    pub receive_buffers: usize,
    /// Slots in each ring between a worker and the game's thread (rounded up to a power of two). A full
    /// ring is backpressure: what does not fit waits, and the sender takes no new input meanwhile.
    pub ring_slots: usize,
    /// io_uring only: a flush of at least this many queued bytes goes out as a zero-copy send
    /// (`SendMsgZc`: the kernel pins the pages instead of copying them, and reports when it let go).
    /// 0, the default, never does: the kernel documentation puts the gain above about 10 KB, and on
    /// loopback it never pays (see docs/BENCHMARKS.md).
    pub send_zerocopy_threshold: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7777)),
            udp_addr: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            pool_bytes: 64 << 20,
            chunk_size: 4096,
            max_connections: 10_000,
            max_connections_per_ip: 64,
            cap_loopback: false,
            send_soft_limit: 256 << 10,
            send_hard_limit: 1 << 20,
            write_deadline: Duration::from_secs(5),
            socket_send_buffer: 64 << 10,
            partial_frame_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            close_linger: Duration::from_secs(2),
            flush_interval: Duration::ZERO,
            prefault_pool: false,
            io: IoBackend::Auto,
            send_zerocopy_threshold: 0,
            workers: 1,
            reuse_port: false,
            pin_workers: false,
            ring_slots: 1 << 14,
            receive_buffers: 0,
        }
    }
}

/// One setter per field, for building a configuration from the default.
impl ServerConfig {
    /// Sets [`ServerConfig::addr`].
    pub fn addr(mut self, value: SocketAddr) -> Self {
        self.addr = value;
        self
    }

    /// Sets [`ServerConfig::udp_addr`].
    pub fn udp_addr(mut self, value: Option<SocketAddr>) -> Self {
        self.udp_addr = value;
        self
    }

    /// Sets [`ServerConfig::max_payload`].
    pub fn max_payload(mut self, value: u32) -> Self {
        self.max_payload = value;
        self
    }

    /// Sets [`ServerConfig::pool_bytes`].
    pub fn pool_bytes(mut self, value: usize) -> Self {
        self.pool_bytes = value;
        self
    }

    /// Sets [`ServerConfig::chunk_size`].
    pub fn chunk_size(mut self, value: usize) -> Self {
        self.chunk_size = value;
        self
    }

    /// Sets [`ServerConfig::max_connections`].
    pub fn max_connections(mut self, value: usize) -> Self {
        self.max_connections = value;
        self
    }

    /// Sets [`ServerConfig::max_connections_per_ip`].
    pub fn max_connections_per_ip(mut self, value: usize) -> Self {
        self.max_connections_per_ip = value;
        self
    }

    /// Sets [`ServerConfig::cap_loopback`].
    pub fn cap_loopback(mut self, value: bool) -> Self {
        self.cap_loopback = value;
        self
    }

    /// Sets [`ServerConfig::send_soft_limit`].
    pub fn send_soft_limit(mut self, value: usize) -> Self {
        self.send_soft_limit = value;
        self
    }

    /// Sets [`ServerConfig::send_hard_limit`].
    pub fn send_hard_limit(mut self, value: usize) -> Self {
        self.send_hard_limit = value;
        self
    }

    /// Sets [`ServerConfig::write_deadline`].
    pub fn write_deadline(mut self, value: Duration) -> Self {
        self.write_deadline = value;
        self
    }

    /// Sets [`ServerConfig::socket_send_buffer`].
    pub fn socket_send_buffer(mut self, value: usize) -> Self {
        self.socket_send_buffer = value;
        self
    }

    /// Sets [`ServerConfig::partial_frame_timeout`].
    pub fn partial_frame_timeout(mut self, value: Duration) -> Self {
        self.partial_frame_timeout = value;
        self
    }

    /// Sets [`ServerConfig::drain_timeout`].
    pub fn drain_timeout(mut self, value: Duration) -> Self {
        self.drain_timeout = value;
        self
    }

    /// Sets [`ServerConfig::close_linger`].
    pub fn close_linger(mut self, value: Duration) -> Self {
        self.close_linger = value;
        self
    }

    /// Sets [`ServerConfig::flush_interval`].
    pub fn flush_interval(mut self, value: Duration) -> Self {
        self.flush_interval = value;
        self
    }

    /// Sets [`ServerConfig::prefault_pool`].
    pub fn prefault_pool(mut self, value: bool) -> Self {
        self.prefault_pool = value;
        self
    }

    /// Sets [`ServerConfig::io`].
    pub fn io(mut self, value: IoBackend) -> Self {
        self.io = value;
        self
    }

    /// Sets [`ServerConfig::workers`].
    pub fn workers(mut self, value: usize) -> Self {
        self.workers = value;
        self
    }

    /// Sets [`ServerConfig::reuse_port`].
    pub fn reuse_port(mut self, value: bool) -> Self {
        self.reuse_port = value;
        self
    }

    /// Sets [`ServerConfig::pin_workers`].
    pub fn pin_workers(mut self, value: bool) -> Self {
        self.pin_workers = value;
        self
    }

    /// Sets [`ServerConfig::receive_buffers`].
    pub fn receive_buffers(mut self, value: usize) -> Self {
        self.receive_buffers = value;
        self
    }

    /// Sets [`ServerConfig::ring_slots`].
    pub fn ring_slots(mut self, value: usize) -> Self {
        self.ring_slots = value;
        self
    }

    /// Sets [`ServerConfig::send_zerocopy_threshold`].
    pub fn send_zerocopy_threshold(mut self, value: usize) -> Self {
        self.send_zerocopy_threshold = value;
        self
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

impl IoBackend {
    /// Every backend, in the order a command line lists them.
    pub const ALL: [IoBackend; 3] = [IoBackend::Auto, IoBackend::Mio, IoBackend::Uring];

    /// The backend's name on a command line: `auto`, `mio` or `uring` (what [`str::parse`] takes).
    pub fn name(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::Mio => "mio",
            IoBackend::Uring => "uring",
        }
    }
}

impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name [`IoBackend`]'s `parse` does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownIoBackend(pub String);

impl fmt::Display for UnknownIoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown I/O backend {:?} (expected auto, mio or uring)", self.0)
    }
}

impl std::error::Error for UnknownIoBackend {}

/// Parses `auto`, `mio`, `uring` (or `io_uring`), ignoring ASCII case, so that a program embedding
/// the server can take the backend as a flag (clap parses any `FromStr` type):
///
/// ```
/// use gamewire_net::IoBackend;
///
/// assert_eq!("uring".parse::<IoBackend>(), Ok(IoBackend::Uring));
/// assert_eq!("io_uring".parse::<IoBackend>(), Ok(IoBackend::Uring));
/// assert!("epoll".parse::<IoBackend>().unwrap_err().to_string().contains("expected auto, mio or uring"));
/// assert_eq!(IoBackend::Mio.to_string(), "mio");
/// ```
impl std::str::FromStr for IoBackend {
    type Err = UnknownIoBackend;

    fn from_str(name: &str) -> Result<IoBackend, UnknownIoBackend> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Ok(IoBackend::Auto),
            "mio" => Ok(IoBackend::Mio),
            "uring" | "io_uring" | "io-uring" => Ok(IoBackend::Uring),
            _ => Err(UnknownIoBackend(name.to_owned())),
        }
    }
}

/// Why a [`ServerConfig`] was refused.
///
/// Each message names the parameters at fault by their field names in [`ServerConfig`]
/// (`max_connections`) or in protocol v1's rules (`aoi_radius`, for [`crate::Server::bind`]);
/// [`ConfigError::describe`] names them otherwise, as a command line's flags.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// Protocol v1's rules, refused by [`crate::Server::bind`].
    World(gamewire_world::ConfigError),
    /// A number outside the values it may take.
    OutOfRange {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: u64,
        /// What it must be, completing "`name` must ...".
        expected: &'static str,
    },
    /// A pool too small for the chunks it is cut into.
    PoolTooSmall {
        /// Pool size in bytes.
        pool_bytes: usize,
        /// Chunk size in bytes.
        chunk_size: usize,
    },
    /// A deadline or interval so long that instants computed from it could overflow the clock.
    TimeoutTooLong {
        /// The parameter.
        name: &'static str,
        /// Its value in seconds.
        seconds: u64,
    },
    /// Two settings that do not go together.
    Conflict {
        /// The parameter set.
        name: &'static str,
        /// Why it cannot be, completing "`name` ...".
        reason: &'static str,
    },
    /// Two limits in the wrong order.
    Exceeds {
        /// The parameter that is too large.
        name: &'static str,
        /// The one it must not exceed.
        limit: &'static str,
    },
}

impl ConfigError {
    /// The message, with each parameter called what `name` returns for its field name: the
    /// [`Display`](std::fmt::Display) text is `describe(&|field| field.to_string())`, and a command
    /// line passes the flag that sets the field instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_net::ServerConfig;
    ///
    /// let error = ServerConfig::default().max_connections(0).validate().unwrap_err();
    /// assert_eq!(error.to_string(), "max_connections must be at least 1, got 0");
    /// let flag = |field: &'static str| format!("--{}", field.replace('_', "-"));
    /// assert_eq!(error.describe(&flag), "--max-connections must be at least 1, got 0");
    /// ```
    pub fn describe(&self, name: &dyn Fn(&'static str) -> String) -> String {
        match *self {
            ConfigError::World(ref error) => error.describe(name),
            ConfigError::OutOfRange { name: field, value, expected } => {
                format!("{} must {expected}, got {value}", name(field))
            }
            ConfigError::PoolTooSmall { pool_bytes, chunk_size } => format!(
                "{} must hold at least {MIN_CHUNKS} chunks of {}, got {pool_bytes} bytes in chunks of {chunk_size}",
                name("pool_bytes"),
                name("chunk_size")
            ),
            ConfigError::TimeoutTooLong { name: field, seconds } => {
                format!("{} of {seconds} s exceeds the limit of one year", name(field))
            }
            ConfigError::Conflict { name: field, reason } => format!("{} {reason}", name(field)),
            ConfigError::Exceeds { name: field, limit } => {
                format!("{} must not exceed {}", name(field), name(limit))
            }
        }
    }
}

// Display by hand rather than thiserror's: every message is built by `describe`, so that a caller
// that names parameters otherwise gets the same words. No `source()`: the text already says it all,
// and an error that both shows and returns its cause is printed twice by reporters that walk the
// chain (anyhow's `{:#}`, `Caused by:`).
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(&|field| field.to_string()))
    }
}

impl std::error::Error for ConfigError {}

impl From<gamewire_world::ConfigError> for ConfigError {
    fn from(error: gamewire_world::ConfigError) -> Self {
        ConfigError::World(error)
    }
}

/// Most workers a server runs.
pub const MAX_WORKERS: usize = 256;

/// Smallest `max_payload`: every valid client packet (a 256-byte CHAT at most) fits.
pub const MIN_MAX_PAYLOAD: u32 = 256;

/// Fewest chunks a pool may have.
const MIN_CHUNKS: usize = 64;

/// Largest chunk: one read fills at most one chunk, and a frame is at most 12 + 65,536 bytes, so
/// bigger chunks only waste memory (and io_uring's buffer lengths are 32-bit).
const MAX_CHUNK_SIZE: usize = 1 << 20;

impl ServerConfig {
    /// Checks every parameter (a game's rules are the game's to check: protocol v1's are checked by
    /// [`crate::Server::bind`]).
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let out_of_range =
            |name, value: usize, expected| ConfigError::OutOfRange { name, value: value as u64, expected };
        if self.max_connections == 0 {
            return Err(out_of_range("max_connections", 0, "be at least 1"));
        }
        if !(MIN_MAX_PAYLOAD..=MAX_PAYLOAD_LIMIT).contains(&self.max_payload) {
            return Err(out_of_range("max_payload", self.max_payload as usize, "be in 256..=65536"));
        }
        if !(1024..=MAX_CHUNK_SIZE).contains(&self.chunk_size) || !self.chunk_size.is_multiple_of(64) {
            return Err(out_of_range("chunk_size", self.chunk_size, "be a multiple of 64 in 1024..=1048576"));
        }
        if self.pool_bytes / self.chunk_size < MIN_CHUNKS {
            return Err(ConfigError::PoolTooSmall {
                pool_bytes: self.pool_bytes,
                chunk_size: self.chunk_size,
            });
        }
        if self.chunk_count() > gamewire_pool::MAX_CHUNKS {
            return Err(out_of_range("pool_bytes", self.pool_bytes, "hold at most 2^32 - 1 chunks"));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(out_of_range("workers", self.workers, "be in 1..=256"));
        }
        if !(2..=1 << 24).contains(&self.ring_slots) {
            return Err(out_of_range("ring_slots", self.ring_slots, "be in 2..=16777216"));
        }
        if self.send_hard_limit == 0 {
            return Err(out_of_range("send_hard_limit", 0, "be at least 1 (no frame would ever be sent)"));
        }
        if self.send_soft_limit > self.send_hard_limit {
            return Err(ConfigError::Exceeds { name: "send_soft_limit", limit: "send_hard_limit" });
        }
        // setsockopt takes an int, which the kernel doubles.
        if self.socket_send_buffer > i32::MAX as usize / 2 {
            return Err(out_of_range("socket_send_buffer", self.socket_send_buffer, "be at most 1 GiB"));
        }
        let durations = [
            ("write_deadline", self.write_deadline),
            ("partial_frame_timeout", self.partial_frame_timeout),
            ("drain_timeout", self.drain_timeout),
            ("close_linger", self.close_linger),
            ("flush_interval", self.flush_interval),
        ];
        for (name, duration) in durations {
            if duration > gamewire_world::MAX_TIMEOUT {
                return Err(ConfigError::TimeoutTooLong { name, seconds: duration.as_secs() });
            }
        }
        if self.partial_frame_timeout.is_zero() {
            // Every frame split over two reads would be cut off at the next check.
            return Err(out_of_range("partial_frame_timeout", 0, "be above 0 seconds"));
        }
        if self.udp_addr.is_some() && cfg!(any(not(target_os = "linux"), gamewire_udp_stub)) {
            // The batched UDP socket is Linux's (recvmmsg/sendmmsg); the portable one comes with the
            // Windows port (issue 14).
            let reason = "needs Linux for now (the UDP transport batches with recvmmsg/sendmmsg)";
            return Err(ConfigError::Conflict { name: "udp_addr", reason });
        }
        if self.udp_addr.is_some() && self.io == IoBackend::Uring {
            // `IoBackend::Auto` picks mio when UDP is on; an explicit io_uring cannot serve it yet.
            let reason = "is not served by the io_uring backend yet: use the mio one";
            return Err(ConfigError::Conflict { name: "udp_addr", reason });
        }
        Ok(())
    }

    /// The per-IP cap that applies to a peer at `ip`: `None` when `max_connections_per_ip` is 0, or
    /// when `ip` is a loopback address (127.0.0.0/8, ::1, or 127.x mapped into IPv6) and
    /// `cap_loopback` is off. Decided from the configuration alone, so a connection's accept and its
    /// removal always agree on whether it is counted.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    /// use gamewire_net::ServerConfig;
    ///
    /// let config = ServerConfig::default();
    /// assert_eq!(config.per_ip_cap(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))), Some(64));
    /// assert_eq!(config.per_ip_cap(IpAddr::V4(Ipv4Addr::LOCALHOST)), None);
    /// ```
    pub fn per_ip_cap(&self, ip: IpAddr) -> Option<usize> {
        let exempt = !self.cap_loopback && ip.to_canonical().is_loopback();
        (self.max_connections_per_ip > 0 && !exempt).then_some(self.max_connections_per_ip)
    }

    /// Chunks in the pool.
    pub fn chunk_count(&self) -> usize {
        self.pool_bytes / self.chunk_size
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_default_per_ip_cap_spares_loopback_only() {
        let config = ServerConfig::default();
        let public = [
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(128, 0, 0, 1)),
            IpAddr::V6("2001:db8::1".parse().expect("an IPv6 address")),
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
        ];
        for ip in public {
            assert_eq!(config.per_ip_cap(ip), Some(64), "{ip}");
        }
        let loopback = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(127, 255, 0, 9)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        ];
        for ip in loopback {
            assert_eq!(config.per_ip_cap(ip), None, "{ip}");
        }
        let capped = ServerConfig { cap_loopback: true, ..ServerConfig::default() };
        for ip in loopback.into_iter().chain(public) {
            assert_eq!(capped.per_ip_cap(ip), Some(64), "{ip}");
        }
        let uncapped =
            ServerConfig { max_connections_per_ip: 0, cap_loopback: true, ..ServerConfig::default() };
        assert_eq!(uncapped.per_ip_cap(public[0]), None);
    }

    #[test]
    fn every_duration_is_capped_at_a_year_by_name() {
        let too_long = gamewire_world::MAX_TIMEOUT + Duration::from_secs(1);
        let huge = Duration::from_secs_f64(1e19);
        for (name, config) in [
            ("flush_interval", ServerConfig { flush_interval: huge, ..ServerConfig::default() }),
            ("write_deadline", ServerConfig { write_deadline: too_long, ..ServerConfig::default() }),
            ("drain_timeout", ServerConfig { drain_timeout: too_long, ..ServerConfig::default() }),
            ("close_linger", ServerConfig { close_linger: too_long, ..ServerConfig::default() }),
            (
                "partial_frame_timeout",
                ServerConfig { partial_frame_timeout: too_long, ..ServerConfig::default() },
            ),
        ] {
            let error = config.validate().expect_err(name);
            assert!(matches!(error, ConfigError::TimeoutTooLong { name: n, .. } if n == name), "{error}");
            assert!(error.to_string().starts_with(name), "{error}");
        }
        let year = ServerConfig { flush_interval: gamewire_world::MAX_TIMEOUT, ..ServerConfig::default() };
        assert!(year.validate().is_ok());
    }

    #[test]
    fn absurd_sizes_are_refused_by_name() {
        let cases = [
            (
                ServerConfig { max_connections: 0, ..ServerConfig::default() },
                "max_connections must be at least 1, got 0",
            ),
            (
                ServerConfig { chunk_size: 1 << 40, pool_bytes: 1 << 46, ..ServerConfig::default() },
                "chunk_size must be",
            ),
            (
                ServerConfig { pool_bytes: 4096, ..ServerConfig::default() },
                "pool_bytes must hold at least 64 chunks of chunk_size",
            ),
            (
                ServerConfig { send_hard_limit: 0, send_soft_limit: 0, ..ServerConfig::default() },
                "send_hard_limit must be at least 1",
            ),
            (
                ServerConfig { send_soft_limit: 2 << 20, ..ServerConfig::default() },
                "send_soft_limit must not exceed send_hard_limit",
            ),
            (
                ServerConfig { socket_send_buffer: usize::MAX, ..ServerConfig::default() },
                "socket_send_buffer must be at most 1 GiB",
            ),
            (ServerConfig { workers: 0, ..ServerConfig::default() }, "workers must be in 1..=256, got 0"),
            (
                ServerConfig { partial_frame_timeout: Duration::ZERO, ..ServerConfig::default() },
                "partial_frame_timeout must be above 0 seconds",
            ),
        ];
        for (config, message) in cases {
            let error = config.validate().expect_err(message);
            assert!(error.to_string().starts_with(message), "{error} does not start with {message}");
        }
    }
}
