//! One client connection as every thread sees it: the socket, its write lock, and its queued frames.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex whose data cannot be left half-updated by a panic (a queue of whole frames, or
/// nothing at all), so poisoning carries no information and is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A client connection, shared (in an `Arc`) by its own thread, the registry of players, and every
/// thread that delivers a frame to it.
///
/// One socket serves all three uses: its thread reads through `&TcpStream`, a deliverer writes through
/// `&TcpStream` while holding `write_lock`, and anyone may `shutdown` it. Sharing one descriptor rather
/// than `try_clone`-ing keeps 10 000 connections at 10 000 descriptors.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Held for the whole of a flush, so that the frames of two flushes never interleave on the wire.
    write_lock: Mutex<()>,
    /// Frames waiting for a writer, in the order the world produced them. They are pushed while the
    /// world lock is held and written after it is released: see [`crate::server`] for why.
    pending: Mutex<VecDeque<Vec<u8>>>,
    /// Set when a write failed or the connection ended: frames for it are dropped, not written.
    dead: AtomicBool,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Conn {
            stream,
            peer,
            write_lock: Mutex::new(()),
            pending: Mutex::new(VecDeque::new()),
            dead: AtomicBool::new(false),
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Queues one frame. Called only with the world lock held, so each queue is in world order.
    pub(crate) fn enqueue(&self, frame: Vec<u8>) {
        lock(&self.pending).push_back(frame);
    }

    /// Writes every queued frame, oldest first, each with a blocking `write_all`.
    ///
    /// Whoever holds the write lock drains the whole queue, including frames other threads queued
    /// meanwhile; a thread that waited for the lock then finds its frames already written. A stuck
    /// client holds the lock for at most the socket's write timeout, after which it is cut off.
    pub(crate) fn flush(&self) {
        let _writer = lock(&self.write_lock);
        loop {
            // The queue lock is a leaf, held only to pop: never across the write.
            let Some(frame) = lock(&self.pending).pop_front() else { break };
            if self.dead.load(Ordering::Relaxed) {
                lock(&self.pending).clear();
                break;
            }
            if let Err(error) = (&self.stream).write_all(&frame) {
                // A timeout may have left half a frame on the wire: the stream cannot continue.
                tracing::debug!(peer = %self.peer, %error, "write failed; disconnecting");
                self.kill();
                break;
            }
        }
    }

    /// Cuts the connection off: later frames are dropped, and shutting the socket down wakes its own
    /// thread (its read returns end-of-stream), which then removes the player from the world.
    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(Shutdown::Both);
        lock(&self.pending).clear();
    }
}
