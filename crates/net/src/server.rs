//! The public entry point: bind a listener, run the event loop, stop it from another thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use gamewire_pool::{Pool, PoolConfig, PoolError};
use gamewire_world::World;
use mio::{Poll, Waker};

use crate::sys::mio::{EventLoop, WAKER_TOKEN};
use crate::sys::mio_echo::EchoLoop;
use crate::worker::{RunStats, Worker};
use crate::{ConfigError, ServerConfig};

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration was refused.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The buffer pool could not be mapped.
    #[error("buffer pool: {0}")]
    Pool(#[from] PoolError),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The event loop failed.
    #[error("event loop: {0}")]
    Io(#[from] io::Error),
}

/// Shutdown requests shared between a [`ShutdownHandle`] and the loop.
#[derive(Debug)]
pub(crate) struct ShutdownState {
    requests: AtomicUsize,
    waker: Waker,
}

impl ShutdownState {
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

/// Stops a running [`Server`] from any thread (a signal handler thread, a test).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<ShutdownState>);

impl ShutdownHandle {
    /// The first call starts a graceful stop: no more connections are accepted, every client gets what
    /// is queued for it and then ERROR(SHUTTING_DOWN), and [`Server::run`] returns once all are closed
    /// or the drain deadline passes. A second call makes it return at once.
    pub fn shutdown(&self) {
        self.0.requests.fetch_add(1, Ordering::AcqRel);
        if let Err(error) = self.0.waker.wake() {
            tracing::error!(%error, "cannot wake the event loop");
        }
    }
}

/// A gamewire server: one event loop owning a listener, its connections, a buffer pool and the world.
///
/// # Examples
///
/// ```no_run
/// use gamewire_net::{Server, ServerConfig};
///
/// let server = Server::bind(ServerConfig::default())?;
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
pub struct Server {
    event_loop: Loop,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
}

impl Server {
    /// Validates `config`, maps the buffer pool (pre-faulting it if asked), builds the world and binds the listener.
    ///
    /// # Errors
    ///
    /// [`ServerError`] if the configuration is invalid, the pool cannot be mapped or the address cannot
    /// be bound.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let pool =
            Pool::new(PoolConfig { chunk_size: config.chunk_size, chunk_count: config.chunk_count() })?;
        if config.prefault_pool {
            // Fault every page in now, on this thread, rather than during the first busy seconds.
            pool.prefault();
        }
        let world = World::new(config.world.clone()).map_err(ConfigError::from)?;
        let listener =
            bind_listener(config.addr).map_err(|source| ServerError::Bind { addr: config.addr, source })?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER_TOKEN)?;
        let shutdown = ShutdownHandle(Arc::new(ShutdownState { requests: AtomicUsize::new(0), waker }));
        let event_loop = if config.echo {
            Loop::Echo(EchoLoop::new(poll, listener, pool, shutdown.0.clone())?)
        } else {
            let worker = Worker::new(config, world, pool, Instant::now());
            Loop::Game(Box::new(EventLoop::new(poll, listener, worker, shutdown.0.clone())?))
        };
        Ok(Server { event_loop, local_addr, shutdown })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops [`Server::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shut down through a [`ShutdownHandle`].
    ///
    /// # Errors
    ///
    /// An I/O error of the event loop itself (not of a connection: those only close the connection).
    pub fn run(self) -> Result<RunStats, ServerError> {
        Ok(match self.event_loop {
            Loop::Game(event_loop) => event_loop.run()?,
            Loop::Echo(event_loop) => event_loop.run()?,
        })
    }
}

/// What the server runs: the game, or the raw echo of `ServerConfig::echo`.
#[derive(Debug)]
enum Loop {
    Game(Box<EventLoop>),
    Echo(EchoLoop),
}

fn bind_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn; ask for plenty so bursts of connects are not refused.
    socket.listen(4096)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}
