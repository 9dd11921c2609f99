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
use crate::{ConfigError, IoBackend, ServerConfig};

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
    waker: LoopWaker,
}

/// How another thread interrupts the loop's wait.
#[derive(Debug)]
enum LoopWaker {
    Mio(Waker),
    /// An eventfd the io_uring loop keeps a read posted on.
    #[cfg(target_os = "linux")]
    EventFd(std::os::fd::OwnedFd),
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
        let woken = match &self.0.waker {
            LoopWaker::Mio(waker) => waker.wake(),
            #[cfg(target_os = "linux")]
            LoopWaker::EventFd(fd) => crate::sys::uring::wake(fd),
        };
        if let Err(error) = woken {
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
    backend: IoBackend,
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
        let local_addr =
            listener.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
        let backend = choose_backend(&config)?;
        let new_shutdown =
            |waker| ShutdownHandle(Arc::new(ShutdownState { requests: AtomicUsize::new(0), waker }));
        let (event_loop, shutdown) = match backend {
            #[cfg(target_os = "linux")]
            IoBackend::Uring => {
                // Blocking descriptors: io_uring waits inside the kernel, never in this thread.
                listener.set_nonblocking(false)?;
                let wake_fd = crate::sys::uring::new_wake_fd()?;
                let shutdown = new_shutdown(LoopWaker::EventFd(wake_fd));
                let listener = listener.into();
                let parts = if config.echo {
                    UringParts::Echo { listener, pool }
                } else {
                    let worker = Box::new(Worker::new(config, world, pool, Instant::now()));
                    UringParts::Game { listener, worker }
                };
                (Loop::Uring(parts), shutdown)
            }
            _ => {
                let listener = mio::net::TcpListener::from_std(listener.into());
                let poll = Poll::new()?;
                let shutdown = new_shutdown(LoopWaker::Mio(Waker::new(poll.registry(), WAKER_TOKEN)?));
                let event_loop = if config.echo {
                    Loop::Echo(EchoLoop::new(poll, listener, pool, shutdown.0.clone())?)
                } else {
                    let worker = Worker::new(config, world, pool, Instant::now());
                    Loop::Game(Box::new(EventLoop::new(poll, listener, worker, shutdown.0.clone())?))
                };
                (event_loop, shutdown)
            }
        };
        Ok(Server { event_loop, local_addr, shutdown, backend })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The event loop chosen (never [`IoBackend::Auto`]).
    pub fn io_backend(&self) -> IoBackend {
        self.backend
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
            #[cfg(target_os = "linux")]
            Loop::Uring(parts) => {
                let wake_fd = match &self.shutdown.0.waker {
                    LoopWaker::EventFd(fd) => std::os::fd::AsRawFd::as_raw_fd(fd),
                    LoopWaker::Mio(_) => unreachable!("the io_uring loop is built with an eventfd waker"),
                };
                let shutdown = self.shutdown.0.clone();
                // The ring is made here, on the thread that runs it: a single-issuer ring belongs to it.
                match parts {
                    UringParts::Game { listener, worker } => {
                        crate::sys::uring::UringLoop::new(listener, *worker, shutdown, wake_fd)?.run()?
                    }
                    UringParts::Echo { listener, pool } => {
                        crate::sys::uring_echo::UringEchoLoop::new(listener, &pool, shutdown, wake_fd)?
                            .run()?
                    }
                }
            }
        })
    }
}

/// What the server runs: the game (on mio or io_uring), or the raw echo of `ServerConfig::echo`.
#[derive(Debug)]
enum Loop {
    Game(Box<EventLoop>),
    Echo(EchoLoop),
    /// The io_uring loop's parts; its ring is made by the thread that runs it.
    #[cfg(target_os = "linux")]
    Uring(UringParts),
}

#[cfg(target_os = "linux")]
#[derive(Debug)]
enum UringParts {
    Game { listener: std::net::TcpListener, worker: Box<Worker<std::os::fd::RawFd>> },
    Echo { listener: std::net::TcpListener, pool: Pool },
}

/// Resolves `config.io` to the backend that will run, logging the choice of `Auto` and why.
fn choose_backend(config: &ServerConfig) -> Result<IoBackend, ServerError> {
    let unsupported = |reason: String| ServerError::Io(io::Error::new(io::ErrorKind::Unsupported, reason));
    match (config.io, config.echo) {
        (IoBackend::Mio, _) => Ok(IoBackend::Mio),
        #[cfg(target_os = "linux")]
        (IoBackend::Uring, _) => match crate::sys::uring::probe() {
            Ok(()) => Ok(IoBackend::Uring),
            Err(error) => Err(unsupported(format!("--io uring: {error}"))),
        },
        #[cfg(not(target_os = "linux"))]
        (IoBackend::Uring, _) => Err(unsupported("--io uring: io_uring exists on Linux only".into())),
        #[cfg(target_os = "linux")]
        (IoBackend::Auto, _) => match crate::sys::uring::probe() {
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
        (IoBackend::Auto, _) => Ok(IoBackend::Mio),
    }
}

fn bind_listener(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // The kernel caps this at net.core.somaxconn; ask for plenty so bursts of connects are not refused.
    socket.listen(4096)?;
    Ok(socket)
}
