//! Event-loop backends. Each one moves bytes between sockets and a [`crate::worker::Worker`]; none
//! changes what the world sees.
//!
//! Every backend must:
//! 1. accept until the kernel has no more pending connections, refuse beyond `max_connections` with
//!    ERROR(SERVER_FULL), and set up every accepted socket with [`configure_accepted`];
//! 2. receive into pool chunks and pass the bytes to `Worker::receive` in the order they arrived, and
//!    stop receiving (backpressure, not loss) while the pool is low, resuming by itself once chunks
//!    return (mio: stops reading; io_uring: holds consumed ring buffers back, which starves the ring);
//! 3. call `Worker::peer_closed` on end of stream or a socket error;
//! 4. after each batch of events: `Worker::settle`, then flush each connection whose frames have waited
//!    `flush_interval` (`Outbound::take_due`; all of them when it is zero), with one vectored write or
//!    send of its queued frames, resuming partial writes exactly where they stopped; the frames a send
//!    reads stay queued (alive) until the kernel is done with them;
//! 5. shut the write side of a draining connection once its queue is empty, and drop the connections
//!    `Worker::take_closed` names (a completion backend after their operations have completed);
//! 6. call `Worker::sweep` at least every [`SWEEP_INTERVAL`];
//! 7. on the shutdown signal stop accepting, call `Worker::shut_down_all` and keep serving until every
//!    connection is gone or the drain deadline passes; on a second signal return at once;
//! 8. with the world on its own thread: ask `Worker::may_wait` before blocking (and `Worker::woke`
//!    after), `Worker::apply_deliveries` after each batch of events, `Worker::end_turn` at the end of
//!    every turn, and pause reading while `Worker::reads_blocked`.
//!
//! The echo loops (`mio_echo`, `uring_echo`) have no worker; they hold to the limits of [`echo`]
//! instead: each connection's unsent bytes bounded by its share of the pool, the write deadline, the
//! idle timeout and the send buffer of game connections.

use std::time::Duration;

use socket2::SockRef;

use crate::ServerConfig;

mod echo;
pub(crate) mod mio;
pub(crate) mod mio_echo;
// Batched UDP sockets for the UDP transport (issue 13): the mio loop uses them; some probes and
// counters only the tests read so far.
#[cfg(all(target_os = "linux", not(gamewire_udp_stub)))]
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "the io_uring loop and the UDP stats do not use every part yet")
)]
pub(crate) mod udp_batch;
// Elsewhere (and on Linux with `--cfg gamewire_udp_stub`, to check it compiles): a socket that cannot
// be bound, so that the mio loop builds everywhere; `ServerConfig::validate` refuses `udp_addr` there.
#[cfg(any(not(target_os = "linux"), gamewire_udp_stub))]
#[path = "udp_unsupported.rs"]
#[allow(dead_code, reason = "mirrors the Linux module's API; only part of it is reachable")]
pub(crate) mod udp_batch;
#[cfg(target_os = "linux")]
pub(crate) mod uring;
#[cfg(target_os = "linux")]
pub(crate) mod uring_echo;
#[cfg(target_os = "linux")]
pub(crate) mod uring_ring;

/// How often deadlines are checked; also bounds how late a timeout fires.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// How long accepting stays paused after it failed (out of descriptors) before an echo loop tries again;
/// the game loops retry at their sweep, as often.
pub(crate) const ACCEPT_RETRY: Duration = SWEEP_INTERVAL;

/// Reads one connection may take per loop turn before others get their turn: fairness under floods.
pub(crate) const READS_PER_TURN: usize = 16;

/// Socket options of an accepted game connection: TCP_NODELAY (frames are small and latency matters;
/// the send queues already batch what can be batched) and the configured send buffer.
pub(crate) fn configure_accepted(socket: SockRef<'_>, config: &ServerConfig, peer: std::net::SocketAddr) {
    configure_socket(socket, config.socket_send_buffer, peer);
}

/// TCP_NODELAY and a send buffer of `send_buffer` bytes (0: the kernel's autotuning), for game and
/// echo connections alike: an echo peer that stops reading must not park megabytes in the kernel
/// either.
pub(crate) fn configure_socket(socket: SockRef<'_>, send_buffer: usize, peer: std::net::SocketAddr) {
    if let Err(error) = socket.set_tcp_nodelay(true) {
        tracing::debug!(%error, %peer, "set_nodelay failed");
    }
    if send_buffer > 0
        && let Err(error) = socket.set_send_buffer_size(send_buffer)
    {
        tracing::debug!(%error, %peer, "setting SO_SNDBUF failed");
    }
}
