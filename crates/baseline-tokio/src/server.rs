//! The game server: listener, accept loop, connection limit, signals and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gamewire_proto::{ErrorCode, Packet, encode_frame_to_vec};
use gamewire_world::{World, error_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::Settings;
use crate::connection;
use crate::world_task::{self, ConnId};

/// Commands queued from all connections to the world task. When it is full, readers wait, and so
/// clients are slowed by TCP flow control rather than by an unbounded queue.
const COMMAND_QUEUE: usize = 16 * 1024;
/// Pending connections the kernel may hold; it caps this at `net.core.somaxconn`. Same as gamewire,
/// so bursts of connects are not refused by one server and accepted by the other.
const LISTEN_BACKLOG: u32 = 4096;
/// How long a refused connection gets to receive its ERROR.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` with the same socket options as gamewire (SO_REUSEADDR, a deep backlog).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves protocol v1 on `listener` with `world` until SIGINT or SIGTERM, then shuts down gracefully.
///
/// # Errors
///
/// A world task that died.
pub(crate) async fn run(
    listener: TcpListener,
    mut signals: Signals,
    world: World,
    settings: Settings,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (commands, command_queue) = mpsc::channel(COMMAND_QUEUE);
    let mut world_task = tokio::spawn(world_task::run(world, command_queue, shutdown.clone()));
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let server_full = error_frame(ErrorCode::ServerFull);
    let mut next_id = 0u64;

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE/ENFILE/ENOBUFS: the connection stays in the backlog; retry shortly
                    // rather than spin on a listener that stays readable.
                    tracing::warn!(%error, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = signals.recv() => break,
            // Only a bug ends the world before a signal; serving on without it would be pointless.
            ended = &mut world_task => anyhow::bail!("the world task ended unexpectedly: {ended:?}"),
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "set_nodelay failed");
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "refused: server full");
            connections.spawn(refuse(stream, server_full.clone()));
            continue;
        };
        let conn = ConnId(next_id);
        next_id += 1;
        connections.spawn(connection::serve(stream, conn, commands.clone(), settings.connection, permit));
    }

    // Graceful stop: no new connections; the world sends every client ERROR(SHUTTING_DOWN) and closes
    // their channels; each writer flushes and shuts its socket; the connection tasks end as clients
    // close. A second signal, or the drain deadline, cuts it short.
    drop(listener);
    drop(commands);
    shutdown.cancel();
    connections.close();
    let stats = world_task.await.context("world task failed")?;
    tokio::select! {
        drained = timeout(settings.drain_timeout, connections.wait()) => {
            if drained.is_err() {
                tracing::warn!(connections = connections.len(), "drain deadline passed");
            }
        }
        () = signals.recv() => tracing::warn!("second signal: stopping without draining"),
    }
    tracing::info!(
        connections = stats.connections,
        frames_in = stats.frames_in,
        frames_out = stats.frames_out,
        slow_consumers = stats.slow_consumers,
        "stopped"
    );
    Ok(())
}

/// The bytes of an ERROR frame sent before WELCOME (header `player_id` 0).
fn error_frame(code: ErrorCode) -> Bytes {
    let packet = Packet::Error { code: code.code(), message: error_message(code) };
    Bytes::from(encode_frame_to_vec(0, &packet))
}

/// Answers a connection beyond `--max-connections` with `frame` (SERVER_FULL) and closes it, reading
/// what the client already sent so that the close does not turn into a RST that destroys the ERROR.
async fn refuse(mut stream: TcpStream, frame: Bytes) {
    let _ = timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(&frame).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// SIGINT and SIGTERM, as one stream of stop requests.
#[derive(Debug)]
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers now, so that a signal arriving before the first `recv` is not lost.
    pub(crate) fn new() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next SIGINT or SIGTERM (Ctrl-C elsewhere).
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let signal = tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            };
            tracing::info!(signal, "signal received");
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}
