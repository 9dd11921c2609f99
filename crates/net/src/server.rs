//! The public entry point: bind a listener, run the event loop, stop it from another thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gamewire_pool::{Pool, PoolConfig, PoolError};
use gamewire_proto::PacketSet;
use gamewire_world::{Game, Verdict, World};
use mio::{Poll, Waker};

use crate::control::{LoopWaker, ShutdownHandle, ShutdownState};
use crate::game::{GameWaker, ServerHandle};
use crate::sys::mio::{EventLoop, WAKER_TOKEN};
use crate::sys::mio_echo::EchoLoop;
use crate::sys::udp_batch::{BatchedUdpSocket, UdpSocketOptions};
use crate::worker::listener_config;
use crate::worker::{Places, RunStats, Worker, WorldLink};
use crate::world_thread;
use crate::{ConfigError, IoBackend, ServerConfig};

/// Why a server could not start or stopped with an error.
///
/// Each message includes its cause, and `source()` is `None`: an error that both shows its cause and
/// returns it is printed twice by reporters that walk the chain (anyhow's `Caused by:`).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration was refused.
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// The buffer pool could not be mapped.
    #[error("buffer pool: {0}")]
    Pool(PoolError),
    /// Binding the listener failed: `error` is [`io::ErrorKind::AddrInUse`] when something already
    /// listens on `addr` (see `ServerConfig::reuse_port`).
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        error: io::Error,
    },
    /// The event loop failed.
    #[error("event loop: {0}")]
    Io(io::Error),
}

impl From<ConfigError> for ServerError {
    fn from(error: ConfigError) -> Self {
        ServerError::Config(error)
    }
}

impl From<PoolError> for ServerError {
    fn from(error: PoolError) -> Self {
        ServerError::Pool(error)
    }
}

impl From<io::Error> for ServerError {
    fn from(error: io::Error) -> Self {
        ServerError::Io(error)
    }
}

/// A gamewire server: one event loop per worker, each owning a listener (SO_REUSEPORT when there are
/// several), its connections and a buffer pool; the world inside the one worker, or on a thread of its
/// own linked to every worker by SPSC rings.
///
/// # Examples
///
/// ```no_run
/// use gamewire_net::{Server, ServerConfig};
///
/// let server = Server::bind(ServerConfig::default(), gamewire_world::Config::default())?;
/// println!("listening on {}", server.local_addr());
/// let stop = server.shutdown_handle();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(60));
///     stop.shutdown();
/// });
/// let stats = server.run()?;
/// println!("served {} connections", stats.accepted);
/// # Ok::<(), gamewire_net::ServerError>(())
/// ```
#[derive(Debug)]
pub struct Server<G: Game = World> {
    workers: Vec<WorkerParts<G>>,
    world_thread: Option<std::thread::JoinHandle<u64>>,
    local_addr: SocketAddr,
    /// Where the UDP sockets are bound, when the server serves UDP.
    udp_local_addr: Option<SocketAddr>,
    shutdown: ShutdownHandle,
    backend: IoBackend,
    pin: bool,
    prefault: bool,
    /// Echo mode: what the echo loops take besides `config` (unread when a game runs).
    echo: EchoSettings,
    /// The configuration in force (the echo loops read their limits from it).
    config: ServerConfig,
    /// The embedding program's way in.
    handle: ServerHandle<G>,
}

impl Server<World> {
    /// A server of protocol v1: a [`World`] with `rules` (the game), served as `config` says (the
    /// server); see [`Server::with_game`].
    ///
    /// # Errors
    ///
    /// [`ServerError`] if `config` is invalid, `rules` are ([`ConfigError::World`]; checked after
    /// `config`), a pool cannot be mapped or the address cannot be bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_net::{IoBackend, Server, ServerConfig};
    ///
    /// let config = ServerConfig::default().addr("127.0.0.1:0".parse().unwrap()).io(IoBackend::Mio);
    /// let rules = gamewire_world::Config { max_speed: 30.0, ..gamewire_world::Config::default() };
    /// let server = Server::bind(config, rules)?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok::<(), gamewire_net::ServerError>(())
    /// ```
    pub fn bind(config: ServerConfig, rules: gamewire_world::Config) -> Result<Server<World>, ServerError> {
        config.validate()?;
        let world = World::new(rules).map_err(ConfigError::from)?;
        Server::with_game(config, world)
    }
}

impl<G: Game> Server<G> {
    /// Validates `config`, maps the buffer pools, binds the listeners and (with several workers) starts
    /// the thread that runs `game`; with one worker the game runs inside it. The game's rules are the
    /// game's own, set when it was built.
    ///
    /// # Errors
    ///
    /// [`ServerError`] if the configuration is invalid, a pool cannot be mapped or the address cannot
    /// be bound.
    pub fn with_game(config: ServerConfig, game: G) -> Result<Server<G>, ServerError> {
        Server::build(config, Some(game))
    }

    /// [`Server::with_game`], or with `None` the loops of an [`EchoServer`].
    fn build(config: ServerConfig, game: Option<G>) -> Result<Server<G>, ServerError> {
        config.validate()?;
        let client_packets = game.as_ref().map_or(PacketSet::EMPTY, Game::client_packets);
        let count = config.workers;
        let new_pool =
            || Pool::new(PoolConfig { chunk_size: config.chunk_size, chunk_count: config.chunk_count() });
        let pools = (0..count).map(|_| new_pool()).collect::<Result<Vec<_>, _>>()?;
        let backend = choose_backend(&config)?;
        let listeners = bind_listeners(config.addr, count, config.reuse_port)
            .map_err(|error| ServerError::Bind { addr: config.addr, error })?;
        let local_addr =
            listeners[0].local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
        // One UDP socket per worker, game servers only (the echo loops serve TCP).
        let mut udp_sockets = match (config.udp_addr, &game) {
            (Some(addr), Some(_)) => bind_udp_sockets(addr, count, config.reuse_port)
                .map_err(|error| ServerError::Bind { addr, error })?,
            _ => Vec::new(),
        };
        let udp_local_addr = udp_sockets.first().map(|socket| socket.local_addr()).transpose()?;
        // Each worker's way to be woken, before anything that may need to wake it.
        let mut wakers = Vec::with_capacity(count);
        let mut polls = Vec::with_capacity(count);
        // io_uring: each loop's eventfd, which it reads (the waker writes to it and keeps it open).
        #[cfg(target_os = "linux")]
        let mut wake_fds = Vec::with_capacity(count);
        for _ in 0..count {
            match backend {
                #[cfg(target_os = "linux")]
                IoBackend::Uring => {
                    let fd = crate::sys::uring_ring::new_wake_fd()?;
                    wake_fds.push(std::os::fd::AsRawFd::as_raw_fd(&fd));
                    wakers.push(LoopWaker::EventFd(std::fs::File::from(fd)));
                }
                _ => {
                    let poll = Poll::new()?;
                    wakers.push(LoopWaker::Mio(Waker::new(poll.registry(), WAKER_TOKEN)?));
                    polls.push(poll);
                }
            }
        }
        let shutdown = ShutdownHandle(Arc::new(ShutdownState::new(wakers)));
        let now = Instant::now();
        // The world: inside the one worker, or on its own thread with its own pool for the frames it
        // encodes. None in echo mode.
        let (links, world_thread, handle): (Vec<(WorldLink<G>, Pool)>, _, _) = if let Some(game) = game {
            if count == 1 {
                let (inbox, handle) = crate::game::channel(GameWaker::Worker(shutdown.0.clone()));
                (vec![(WorldLink::Inline(game, inbox), pools[0].clone())], None, handle)
            } else {
                let world_pool = new_pool()?;
                let (remotes, thread, handle) = world_thread::start(
                    game,
                    world_pool.clone(),
                    &pools,
                    config.ring_slots,
                    shutdown.0.clone(),
                )?;
                let links = remotes.into_iter().map(|remote| (WorldLink::Remote(remote), world_pool.clone()));
                (links.collect(), Some(thread), handle)
            }
        } else {
            // Echo: no game runs; the handle's commands go nowhere.
            let (_, handle) = crate::game::channel(GameWaker::Worker(shutdown.0.clone()));
            (Vec::new(), None, handle)
        };
        let mut links = links.into_iter();
        let mut polls = polls.into_iter();
        let open = Arc::new(Places::default());
        let mut workers = Vec::with_capacity(count);
        for (index, (listener, pool)) in listeners.into_iter().zip(pools).enumerate() {
            let link = links.next();
            let parts = match backend {
                #[cfg(target_os = "linux")]
                IoBackend::Uring => {
                    // Blocking descriptors: io_uring waits inside the kernel, never in this thread.
                    listener.set_nonblocking(false)?;
                    let worker = link.map(|(link, frame_pool)| {
                        new_worker(&config, link, client_packets, &pool, frame_pool, &open, now)
                    });
                    WorkerParts::Uring { listener: listener.into(), pool, worker, wake_fd: wake_fds[index] }
                }
                _ => {
                    let listener = mio::net::TcpListener::from_std(listener.into());
                    let poll = polls.next().expect("one poll per worker");
                    let mut worker = link.map(|(link, frame_pool)| {
                        new_worker(&config, link, client_packets, &pool, frame_pool, &open, now)
                    });
                    let udp = if udp_sockets.is_empty() { None } else { Some(udp_sockets.remove(0)) };
                    if let (Some(worker), Some(_)) = (&mut worker, &udp) {
                        // A cookie secret per worker: the kernel hashes a client's addresses to one
                        // socket, so its CONNECT and RESPONSE reach the same worker.
                        let listener =
                            gamewire_udp::listener::Listener::new(listener_config(&config), now)
                                .map_err(|error| io::Error::other(format!("cookie secret: {error}")))?;
                        worker.enable_udp(listener);
                    }
                    WorkerParts::Mio { poll, listener, pool, worker, udp }
                }
            };
            workers.push(parts);
        }
        Ok(Server {
            workers,
            world_thread,
            local_addr,
            udp_local_addr,
            shutdown,
            backend,
            pin: config.pin_workers,
            prefault: config.prefault_pool,
            echo: EchoSettings {
                cap: config.max_connections.div_ceil(config.workers),
                idle_timeout: EchoServer::DEFAULT_IDLE_TIMEOUT,
            },
            config,
            handle,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the UDP sockets are bound to, when the server serves UDP
    /// ([`ServerConfig::udp_addr`]; useful with port 0).
    pub fn udp_local_addr(&self) -> Option<SocketAddr> {
        self.udp_local_addr
    }

    /// The event loop chosen (never [`IoBackend::Auto`]).
    pub fn io_backend(&self) -> IoBackend {
        self.backend
    }

    /// A handle that stops [`Server::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A handle that sends the game commands and reads live counts, from any thread.
    pub fn handle(&self) -> ServerHandle<G> {
        self.handle.clone()
    }

    /// The number of workers (event loops).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Serves until shut down through a [`ShutdownHandle`]. One worker runs on the calling thread;
    /// several run on threads of their own (pinned to the process's CPUs in turn with
    /// `ServerConfig::pin_workers`), and the counters of all are summed.
    ///
    /// # Errors
    ///
    /// An I/O error of an event loop itself (not of a connection: those only close the connection).
    pub fn run(self) -> Result<RunStats, ServerError> {
        let Server { mut workers, world_thread, shutdown, pin, prefault, echo, config, .. } = self;
        let cpus = if pin { crate::topology::current_cpus().unwrap_or_default() } else { Vec::new() };
        let settings = Arc::new(WorkerSettings { cpus, prefault, shutdown: shutdown.0, echo, config });
        let mut stats = if workers.len() == 1 {
            run_worker(0, workers.pop().expect("one worker"), &settings)?
        } else {
            let threads = workers
                .into_iter()
                .enumerate()
                .map(|(index, parts)| {
                    let settings = Arc::clone(&settings);
                    std::thread::Builder::new()
                        .name(format!("gamewire-worker-{index}"))
                        .spawn(move || run_worker(index, parts, &settings))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut total = RunStats::default();
            let mut first_error = None;
            for thread in threads {
                match thread.join().map_err(|_| io::Error::other("a worker thread panicked"))? {
                    Ok(stats) => total.add(&stats),
                    Err(error) => first_error = first_error.or(Some(error)),
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
            total
        };
        drop(settings);
        if let Some(world_thread) = world_thread {
            stats.heap_fallbacks +=
                world_thread.join().map_err(|_| io::Error::other("the world thread panicked"))?;
        }
        Ok(stats)
    }
}

/// A server that echoes raw bytes back (no framing, no game): the same event loops, pools, limits and
/// deadlines as a game server, for comparing the I/O core with other runtimes under a standard echo
/// client. A connection's backlog is bounded in pool chunks (see `sys/echo.rs`), and one through which
/// nothing moved either way for the idle timeout is closed ([`EchoServer::DEFAULT_IDLE_TIMEOUT`], or
/// the one given to [`EchoServer::with_idle_timeout`]).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use gamewire_net::{EchoServer, ServerConfig};
///
/// let config = ServerConfig::default().addr("127.0.0.1:7000".parse().unwrap());
/// let server = EchoServer::with_idle_timeout(config, Duration::from_secs(60))?;
/// server.shutdown_handle().stop_on_signals()?;
/// server.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct EchoServer(Server<NoGame>);

impl EchoServer {
    /// The idle timeout of [`EchoServer::bind`]: 30 s, protocol v1's (`gamewire_world::Config`'s
    /// `idle_timeout`).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

    /// [`EchoServer::with_idle_timeout`] with [`EchoServer::DEFAULT_IDLE_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// As [`Server::with_game`].
    pub fn bind(config: ServerConfig) -> Result<EchoServer, ServerError> {
        EchoServer::with_idle_timeout(config, EchoServer::DEFAULT_IDLE_TIMEOUT)
    }

    /// Validates `config` and `idle_timeout` (how long a connection through which nothing moved either
    /// way stays open), maps the pools and binds the listeners.
    ///
    /// # Errors
    ///
    /// As [`Server::with_game`]; [`ConfigError`] names `idle_timeout` if it is zero or longer than
    /// a year.
    pub fn with_idle_timeout(
        config: ServerConfig,
        idle_timeout: Duration,
    ) -> Result<EchoServer, ServerError> {
        config.validate()?;
        if idle_timeout.is_zero() {
            let expected = "be above 0 seconds";
            return Err(ConfigError::OutOfRange { name: "idle_timeout", value: 0, expected }.into());
        }
        if idle_timeout > gamewire_world::MAX_TIMEOUT {
            let seconds = idle_timeout.as_secs();
            return Err(ConfigError::TimeoutTooLong { name: "idle_timeout", seconds }.into());
        }
        let mut server = Server::build(config, None)?;
        server.echo.idle_timeout = idle_timeout;
        Ok(EchoServer(server))
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// The event loop chosen (never [`IoBackend::Auto`]).
    pub fn io_backend(&self) -> IoBackend {
        self.0.io_backend()
    }

    /// A handle that stops [`EchoServer::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.0.shutdown_handle()
    }

    /// The number of workers (event loops).
    pub fn workers(&self) -> usize {
        self.0.workers()
    }

    /// Echoes until shut down; as [`Server::run`].
    ///
    /// # Errors
    ///
    /// As [`Server::run`].
    pub fn run(self) -> Result<RunStats, ServerError> {
        self.0.run()
    }
}

/// The game type of an [`EchoServer`]'s inner server: none runs (the echo loops carry no game), so
/// its calls are never made; they answer as a game that accepts no packet would.
#[derive(Debug)]
pub(crate) struct NoGame;

impl Game for NoGame {
    type Session = ();
    type Command = std::convert::Infallible;

    fn client_packets(&self) -> PacketSet {
        PacketSet::EMPTY
    }

    fn open(&mut self, _now: Instant) {}

    fn handle(
        &mut self,
        _now: Instant,
        _completed_at: Instant,
        _session: &mut (),
        _frame: gamewire_proto::RawFrame<'_>,
        _out: &mut impl gamewire_world::Outbox,
    ) -> Verdict {
        Verdict::Close
    }

    fn deadline(&self, _session: &()) -> Option<Instant> {
        None
    }

    fn poll_timeout(
        &mut self,
        _now: Instant,
        _session: &mut (),
        _out: &mut impl gamewire_world::Outbox,
    ) -> Verdict {
        Verdict::Continue
    }

    fn fail(
        &mut self,
        _session: &mut (),
        _code: gamewire_proto::ErrorCode,
        _out: &mut impl gamewire_world::Outbox,
    ) -> Verdict {
        Verdict::Close
    }

    fn close(&mut self, _session: &mut (), _out: &mut impl gamewire_world::Outbox) {}

    fn player(&self, _session: &()) -> Option<gamewire_world::PlayerId> {
        None
    }

    fn player_count(&self) -> usize {
        0
    }
}

/// What every worker thread needs to start.
#[derive(Debug)]
struct WorkerSettings {
    /// CPUs to pin workers to, in turn (none: no pinning).
    cpus: Vec<usize>,
    prefault: bool,
    shutdown: Arc<ShutdownState>,
    echo: EchoSettings,
    /// The configuration, for the echo loops (a game loop's worker holds its own).
    config: ServerConfig,
}

/// What the echo loops take besides the configuration.
#[derive(Clone, Copy, Debug)]
struct EchoSettings {
    /// Connections each echo loop serves at once (they share no state, so each takes its part of
    /// `max_connections`).
    cap: usize,
    /// How long a connection through which nothing moved either way stays open.
    idle_timeout: Duration,
}

/// Pins the calling thread (if asked), touches its pool, builds worker `index`'s loop and runs it.
fn run_worker<G: Game>(
    index: usize,
    parts: WorkerParts<G>,
    settings: &WorkerSettings,
) -> Result<RunStats, ServerError> {
    if !settings.cpus.is_empty() {
        let cpu = settings.cpus[index % settings.cpus.len()];
        match crate::topology::pin_current_thread(cpu) {
            Ok(()) => {
                let node = crate::topology::node_of_cpu(&crate::topology::nodes(), cpu);
                tracing::info!(worker = index, cpu, numa_node = ?node, "worker pinned");
            }
            Err(error) => tracing::warn!(%error, worker = index, cpu, "cannot pin the worker"),
        }
    }
    let pool = match &parts {
        WorkerParts::Mio { pool, .. } => pool,
        #[cfg(target_os = "linux")]
        WorkerParts::Uring { pool, .. } => pool,
    };
    if settings.prefault {
        // First touch from the (pinned) worker itself: the pages land on its NUMA node.
        pool.prefault();
    }
    let shutdown = Arc::clone(&settings.shutdown);
    let EchoSettings { cap: echo_cap, idle_timeout } = settings.echo;
    Ok(match parts {
        WorkerParts::Mio { poll, listener, pool, worker, udp } => match worker {
            Some(worker) => EventLoop::new(poll, listener, *worker, shutdown, udp)?.run()?,
            None => EchoLoop::new(poll, listener, pool, &settings.config, idle_timeout, shutdown, echo_cap)?
                .run()?,
        },
        #[cfg(target_os = "linux")]
        WorkerParts::Uring { listener, pool, worker, wake_fd } => {
            // The ring is made here, on the thread that runs it: a single-issuer ring belongs to it.
            match worker {
                Some(worker) => {
                    crate::sys::uring::UringLoop::new(listener, *worker, shutdown, wake_fd)?.run()?
                }
                None => crate::sys::uring_echo::UringEchoLoop::new(
                    listener,
                    &pool,
                    &settings.config,
                    idle_timeout,
                    shutdown,
                    wake_fd,
                    echo_cap,
                )?
                .run()?,
            }
        }
    })
}

/// A worker for a game loop (boxed: it is large and moves to its thread).
fn new_worker<S, G: Game>(
    config: &ServerConfig,
    link: WorldLink<G>,
    client_packets: gamewire_proto::PacketSet,
    pool: &Pool,
    frame_pool: Pool,
    places: &Arc<Places>,
    now: Instant,
) -> Box<Worker<S, G>> {
    Box::new(Worker::new(
        config.clone(),
        link,
        client_packets,
        pool.clone(),
        frame_pool,
        Arc::clone(places),
        now,
    ))
}

/// One worker's parts before its loop runs (no worker in echo mode).
#[derive(Debug)]
enum WorkerParts<G: Game> {
    Mio {
        poll: Poll,
        listener: mio::net::TcpListener,
        pool: Pool,
        worker: Option<Box<Worker<mio::net::TcpStream, G>>>,
        /// The worker's UDP socket, when the server serves UDP.
        udp: Option<BatchedUdpSocket>,
    },
    #[cfg(target_os = "linux")]
    Uring {
        listener: std::net::TcpListener,
        pool: Pool,
        worker: Option<Box<Worker<std::os::fd::RawFd, G>>>,
        /// The loop's eventfd (its `LoopWaker` keeps it open for as long as the loop runs).
        wake_fd: std::os::fd::RawFd,
    },
}

/// Resolves `config.io` to the backend that will run, logging the choice of `Auto` and why.
fn choose_backend(config: &ServerConfig) -> Result<IoBackend, ServerError> {
    let unsupported = |reason: String| ServerError::Io(io::Error::new(io::ErrorKind::Unsupported, reason));
    match config.io {
        IoBackend::Mio => Ok(IoBackend::Mio),
        // Only the mio loop serves UDP so far.
        IoBackend::Auto if config.udp_addr.is_some() => Ok(IoBackend::Mio),
        #[cfg(target_os = "linux")]
        IoBackend::Uring => match crate::sys::uring_ring::probe() {
            Ok(()) => Ok(IoBackend::Uring),
            Err(error) => Err(unsupported(format!("--io uring: {error}"))),
        },
        #[cfg(not(target_os = "linux"))]
        IoBackend::Uring => Err(unsupported("--io uring: io_uring exists on Linux only".into())),
        #[cfg(target_os = "linux")]
        IoBackend::Auto => match crate::sys::uring_ring::probe() {
            Ok(()) => {
                tracing::info!("io backend: io_uring (multishot accept and receive, provided-buffer ring)");
                Ok(IoBackend::Uring)
            }
            Err(error) => {
                tracing::warn!(%error, "io backend: mio, because io_uring is unavailable");
                Ok(IoBackend::Mio)
            }
        },
        #[cfg(not(target_os = "linux"))]
        IoBackend::Auto => Ok(IoBackend::Mio),
    }
}

/// Binds `count` listeners on `addr`: several share it with SO_REUSEPORT (the kernel spreads incoming
/// connections over them by a hash of the addresses), all on the port the first one got.
///
/// Unless `join`, nothing else may listen on `addr`: SO_REUSEPORT would let a second server's listeners
/// bind beside the first's, and the kernel would split new players between two separate worlds
/// without a word. So a probe socket without SO_REUSEPORT binds `addr` first (it fails with
/// EADDRINUSE if anything listens there, and picks the port when `addr`'s is 0) and is closed before
/// the listeners bind. A server that binds between the probe's close and the listeners' bind is not
/// seen: the window is a few system calls, and closing it would need a socket held across the bind
/// that itself blocks the listeners. With `join`, every listener (even a lone one) sets SO_REUSEPORT
/// and no probe is made: the caller asked to share the port.
fn bind_listeners(addr: SocketAddr, count: usize, join: bool) -> io::Result<Vec<socket2::Socket>> {
    let reuse_port = count > 1 || join;
    let mut addr = addr;
    if reuse_port && !join {
        let probe = new_socket(addr)?;
        probe.bind(&addr.into())?;
        if let Some(bound) = probe.local_addr()?.as_socket() {
            addr = bound;
        }
    }
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = bind_listener(addr, reuse_port)?;
        if let Some(bound) = listener.local_addr()?.as_socket() {
            addr = bound;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// A TCP socket for `addr` with SO_REUSEADDR, so that connections of an earlier run still in
/// TIME_WAIT do not keep the port (it does not let two sockets listen on one port).
/// Binds `count` UDP sockets on `addr`, SO_REUSEPORT when there are several (or `join`): with port
/// 0, the first one's port for the others.
fn bind_udp_sockets(addr: SocketAddr, count: usize, join: bool) -> io::Result<Vec<BatchedUdpSocket>> {
    // GRO stays off: the receive slots hold one datagram each.
    let options = UdpSocketOptions { reuse_port: count > 1 || join, ..UdpSocketOptions::default() };
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = BatchedUdpSocket::bind(addr, &options)?;
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

fn new_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    let socket = new_socket(addr)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    if reuse_port {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "several workers need SO_REUSEPORT (Unix)"));
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn; ask for plenty so bursts of connects are not refused.
    socket.listen(4096)?;
    Ok(socket)
}
