//! Echo mode on mio: every byte read is sent back, unframed, for comparing the bare I/O core with other
//! runtimes under a standard echo client. The bytes are read into a pool chunk and that same chunk is
//! queued back: an echo costs no copy.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use gamewire_pool::Pool;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::{ACCEPT_RETRY, READS_PER_TURN};
use crate::send_queue::SendQueue;
use crate::server::ShutdownState;
use crate::worker::RunStats;

const LISTENER: Token = Token(usize::MAX - 1);

/// Most bytes queued per echo client before reading from it pauses (TCP then slows the client down).
const MAX_QUEUED: usize = 1 << 20;

struct EchoConn {
    stream: TcpStream,
    queue: SendQueue,
    wants_writable: bool,
    /// Reading stopped because the queue is full or the pool is empty; resumed after a flush.
    read_paused: bool,
    /// The peer's FIN (or an error) was reported: read until end of stream, no edge will follow.
    until_eof: bool,
}

/// The echo event loop.
pub(crate) struct EchoLoop {
    poll: Poll,
    listener: TcpListener,
    pool: Pool,
    conns: Slab<EchoConn>,
    shutdown: Arc<ShutdownState>,
    stats: RunStats,
    /// Connections served at once; more are closed as they come.
    max_connections: usize,
    /// Accepting failed (out of descriptors): retried at `accept_retry_at`, or as soon as a connection
    /// closes (the listener's edge will not fire again for connections already waiting).
    accept_paused: bool,
    accept_retry_at: Instant,
}

impl std::fmt::Debug for EchoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoLoop").field("connections", &self.conns.len()).finish_non_exhaustive()
    }
}

impl EchoLoop {
    pub(crate) fn new(
        poll: Poll,
        mut listener: TcpListener,
        pool: Pool,
        shutdown: Arc<ShutdownState>,
        max_connections: usize,
    ) -> io::Result<Self> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(EchoLoop {
            poll,
            listener,
            pool,
            conns: Slab::new(),
            shutdown,
            stats: RunStats::default(),
            max_connections,
            accept_paused: false,
            accept_retry_at: Instant::now(),
        })
    }

    pub(crate) fn run(mut self) -> io::Result<RunStats> {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<usize> = Vec::new();
        while self.shutdown.requests() == 0 {
            let timeout = if !ready.is_empty() {
                Some(std::time::Duration::ZERO)
            } else if self.accept_paused {
                Some(ACCEPT_RETRY)
            } else {
                None
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            let mut turn = std::mem::take(&mut ready);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all()?,
                    Token(token) if self.conns.contains(token) => {
                        if event.is_read_closed() || event.is_error() {
                            self.conns[token].until_eof = true;
                        }
                        turn.push(token);
                    }
                    _ => {}
                }
            }
            turn.sort_unstable();
            turn.dedup();
            for &token in &turn {
                if self.serve(token) {
                    ready.push(token);
                }
            }
            turn.clear();
            if self.accept_paused && Instant::now() >= self.accept_retry_at {
                self.accept_paused = false;
                self.accept_all()?;
            }
        }
        Ok(self.stats)
    }

    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    self.stats.accepted += 1;
                    if self.conns.len() >= self.max_connections {
                        drop(stream); // Echo mode has no protocol to say SERVER_FULL with.
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    self.poll.registry().register(&mut stream, token, Interest::READABLE)?;
                    entry.insert(EchoConn {
                        stream,
                        queue: SendQueue::default(),
                        wants_writable: false,
                        read_paused: false,
                        until_eof: false,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, "accept failed; paused");
                    self.accept_paused = true;
                    self.accept_retry_at = Instant::now() + ACCEPT_RETRY;
                    return Ok(());
                }
            }
        }
    }

    /// Reads and echoes `token`; returns whether it must be served again next turn without an event
    /// (its read budget ran out while bytes may remain).
    fn serve(&mut self, token: usize) -> bool {
        let mut again = false;
        let mut closed = false;
        let conn = &mut self.conns[token];
        conn.read_paused = false;
        for turn in 0..=READS_PER_TURN {
            if turn == READS_PER_TURN {
                again = true;
                break;
            }
            if conn.queue.queued_bytes() >= MAX_QUEUED {
                conn.read_paused = true;
                break;
            }
            let Some(mut chunk) = self.pool.try_alloc() else {
                conn.read_paused = true;
                break;
            };
            match conn.stream.read(chunk.spare_mut()) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    // A short read emptied the receive queue: the next byte raises a new edge (see
                    // `sys::mio`), so no extra read just to see WouldBlock.
                    let drained = n < chunk.remaining();
                    chunk.advance(n);
                    self.stats.frames_in += 1;
                    conn.queue.push(chunk.freeze(), usize::MAX, Instant::now());
                    if drained && !conn.until_eof {
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let stream = &conn.stream;
        match conn.queue.flush_with(usize::MAX, |slices| (&*stream).write_vectored(slices)) {
            Ok(true) => {
                if conn.wants_writable {
                    conn.wants_writable = false;
                    let _ =
                        self.poll.registry().reregister(&mut conn.stream, Token(token), Interest::READABLE);
                }
                // Room again: a paused reader may have bytes waiting that no new edge will announce.
                again |= conn.read_paused;
            }
            Ok(false) => {
                if !conn.wants_writable {
                    conn.wants_writable = true;
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    let _ = self.poll.registry().reregister(&mut conn.stream, Token(token), interest);
                }
            }
            Err(_) => closed = true,
        }
        if closed {
            let mut conn = self.conns.remove(token);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            // Its descriptor is back: a paused accept may go on at once.
            self.accept_retry_at = Instant::now();
            return false;
        }
        again
    }
}
