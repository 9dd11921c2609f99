//! The game server: accept loop, one thread per connection, one world behind one mutex.
//!
//! # Locks, and why delivery happens after the world lock is released
//!
//! There are three kinds of lock: the world lock ([`Core`]: the world and the registry of players),
//! each connection's write lock, and each connection's queue lock (a leaf, held only to push or pop).
//! A thread holding the world lock never waits for a write lock, and a thread holding a write lock
//! never takes the world lock or a second write lock. With no lock ever waited for in the opposite
//! order, the server cannot deadlock. Writing while holding the world lock would also be deadlock-free
//! inside the process, but one client with a full receive window would then freeze every other
//! player for the whole write timeout, and every `write_all` of the server would be serialised.
//!
//! Writing after the lock is released, though, lets two threads' frames for one client overtake each
//! other (a MOVE computed first could be written after a LEAVE computed later, breaking the protocol's
//! visibility window). So frames are *queued* on their recipients while the world lock is held (a
//! push, in world order) and *written* after it is released by whoever then holds the recipient's
//! write lock. The same lock also keeps a fatal ERROR last: the player is unregistered in the call that
//! queues it, so no later frame can reach that connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gamewire_proto::{ErrorCode, Packet, RawFrame, encode_frame_to_vec};
use gamewire_world::{Config, PlayerId, Session, Verdict, World, error_message};

use crate::cli::Args;
use crate::conn::Conn;
use crate::outbox::NaiveOutbox;
use crate::reader::{FrameReader, ReadEvent};

/// How often a connection thread wakes up without input, to enforce the HELLO, idle and partial-frame
/// deadlines and to notice a shutdown.
pub(crate) const READ_TICK: Duration = Duration::from_millis(100);
/// After a fatal ERROR is written and the write side shut, how long to keep reading (and dropping) what
/// the client still sends: closing with unread bytes makes the kernel send a RST, which can destroy
/// the ERROR before the client reads it.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Stack of a connection thread. The default 2 MiB would reserve 20 GiB of address space for 10 000
/// connections; what the thread really touches is a few KiB.
pub(crate) const THREAD_STACK: usize = 256 << 10;

/// Everything behind the one world lock.
#[derive(Debug)]
struct Core {
    world: World,
    /// Where frames addressed to a player go. Changed only together with the world (same lock), so it
    /// always holds exactly the players in the world.
    players: HashMap<PlayerId, Arc<Conn>>,
}

/// State shared by the accept loop and every connection thread.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Mutex<Core>,
    /// A copy of the world's rules, to check a session's deadline without taking the world lock.
    world_config: Config,
    max_payload: u32,
    max_connections: usize,
    partial_frame_timeout: Duration,
    write_deadline: Duration,
    /// Connections being served (refused ones are not counted).
    open: AtomicUsize,
    /// Set on SIGINT/SIGTERM: every connection thread says SHUTTING_DOWN and ends.
    stopping: AtomicBool,
}

impl Shared {
    pub(crate) fn new(args: &Args) -> anyhow::Result<Self> {
        let world_config = args.world_config();
        let world = World::new(world_config.clone()).context("invalid world parameters")?;
        Ok(Shared {
            core: Mutex::new(Core { world, players: HashMap::new() }),
            world_config,
            max_payload: args.max_payload,
            max_connections: args.max_connections,
            partial_frame_timeout: args.partial_frame_timeout,
            write_deadline: args.write_deadline,
            open: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// Runs `f` on the world for `conn`'s session with the world lock held, keeps the registry in step
    /// with the session, queues the frames produced, then writes them once the lock is released.
    fn call(
        &self,
        conn: &Arc<Conn>,
        session: &mut Session,
        f: impl FnOnce(&mut World, Instant, &mut Session, &mut NaiveOutbox<'_>) -> Verdict,
    ) -> Verdict {
        let mut recipients = Vec::new();
        let verdict = {
            // A panic inside the world leaves it in an unknown state: the panic hook ends the process,
            // so a poisoned lock is never seen in practice.
            let mut core = self.core.lock().expect("world lock poisoned");
            let Core { world, players } = &mut *core;
            let before = session.player();
            let mut out = NaiveOutbox::new(players, conn);
            // The clock is read under the lock so that the world sees time advance in the order its
            // calls are made, whichever thread makes them.
            let verdict = f(world, Instant::now(), session, &mut out);
            out.enqueue(&mut recipients);
            let after = session.player();
            if before != after {
                if let Some(id) = before {
                    players.remove(&id);
                }
                if let Some(id) = after {
                    players.insert(id, Arc::clone(conn));
                }
            }
            verdict
        };
        // The world lock is released: deliver (see the module comment).
        for recipient in &recipients {
            recipient.flush();
        }
        verdict
    }

    /// Enforces the session's HELLO/idle deadline and the partial-frame deadline, taking the world lock
    /// only when one has passed.
    fn check_deadlines(&self, conn: &Arc<Conn>, session: &mut Session, reader: &FrameReader) -> Verdict {
        let now = Instant::now();
        if now >= session.deadline(&self.world_config) {
            return self
                .call(conn, session, |world, now, session, out| world.poll_timeout(now, session, out));
        }
        if reader.partial_since().is_some_and(|since| now.duration_since(since) >= self.partial_frame_timeout)
        {
            return self
                .call(conn, session, |world, _, session, out| world.fail(session, ErrorCode::Timeout, out));
        }
        Verdict::Continue
    }

    /// Begins the graceful stop and waits, at most `drain_timeout`, for every connection thread to
    /// send its ERROR(SHUTTING_DOWN) and finish.
    pub(crate) fn shut_down(&self, drain_timeout: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + drain_timeout;
        while self.open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.open.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(left, "drain timeout: exiting with connections still open");
        }
    }

    /// Takes a connection slot, unless `max_connections` are open.
    fn try_open(&self) -> bool {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max_connections).then_some(open + 1)
            })
            .is_ok()
    }
}

/// Releases a connection slot when its thread ends, however it ends.
struct OpenSlot(Arc<Shared>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Applies the socket options every connection needs.
pub(crate) fn configure(
    stream: &TcpStream,
    read_timeout: Option<Duration>,
    write_timeout: Duration,
) -> io::Result<()> {
    // Frames are small and latency is measured: Nagle's algorithm would hold them back (up to the
    // peer's delayed ACK) and measure the wrong thing. gamewire and the bots set it too.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(read_timeout)?;
    // No write may block a thread forever: a client that stops reading is cut off after this.
    stream.set_write_timeout(Some(write_timeout))
}

/// Accepts connections forever, one thread each. Returns only if the listener fails for good.
pub(crate) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id: u64 = 0;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                // Typically EMFILE or ECONNABORTED: back off a little instead of spinning on it.
                tracing::warn!(%error, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        if shared.stopping.load(Ordering::Relaxed) {
            refuse(stream, peer, ErrorCode::ShuttingDown, shared.write_deadline);
            continue;
        }
        if !shared.try_open() {
            refuse(stream, peer, ErrorCode::ServerFull, shared.write_deadline);
            continue;
        }
        let slot = OpenSlot(Arc::clone(&shared));
        if let Err(error) = configure(&stream, Some(READ_TICK), shared.write_deadline) {
            tracing::debug!(%peer, %error, "cannot configure socket");
            continue;
        }
        next_id += 1;
        let conn = Arc::new(Conn::new(stream, peer));
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{next_id}"))
            .stack_size(THREAD_STACK)
            .spawn(move || serve(&slot.0, conn));
        if let Err(error) = spawned {
            // The closure (and with it the socket and the slot) was dropped: the client sees EOF.
            tracing::warn!(%peer, %error, "cannot spawn a connection thread");
        }
    }
}

/// Answers a connection that will not be served with a fatal ERROR and closes it, on a short-lived
/// thread so that the accept loop does not wait for the write or the linger.
fn refuse(stream: TcpStream, peer: SocketAddr, code: ErrorCode, write_timeout: Duration) {
    tracing::debug!(%peer, %code, "refusing connection");
    let spawned = std::thread::Builder::new().name("refuse".into()).stack_size(64 << 10).spawn(move || {
        if configure(&stream, Some(READ_TICK), write_timeout).is_err() {
            return;
        }
        // Before any HELLO, so header player_id 0.
        let frame =
            encode_frame_to_vec(0, &Packet::Error { code: code.code(), message: error_message(code) });
        if (&stream).write_all(&frame).is_ok() {
            linger_close(&stream);
        }
    });
    if let Err(error) = spawned {
        tracing::debug!(%peer, %error, "cannot spawn a thread to refuse a connection; dropping it");
    }
}

/// Shuts the write side (the client reads end-of-stream after the last frame), then reads and drops
/// whatever the client still sends until it closes or [`CLOSE_LINGER`] passes.
fn linger_close(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + CLOSE_LINGER;
    let mut sink = [0u8; 1024];
    while Instant::now() < until {
        match (&*stream).read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
}

/// One connection's thread: blocking reads, one frame at a time, each handed to the world.
fn serve(shared: &Shared, conn: Arc<Conn>) {
    let peer = conn.peer();
    tracing::debug!(%peer, "connected");
    let mut session = Session::new(Instant::now());
    let mut reader = FrameReader::new(shared.max_payload);
    loop {
        let verdict = if shared.stopping.load(Ordering::Relaxed) {
            shared.call(&conn, &mut session, |world, _, session, out| {
                world.fail(session, ErrorCode::ShuttingDown, out)
            })
        } else {
            match reader.poll(conn.stream()) {
                ReadEvent::Frame(bytes) => {
                    let (frame, _) = RawFrame::split_from(&bytes).expect("the reader yields whole frames");
                    shared.call(&conn, &mut session, |world, now, session, out| {
                        world.handle(now, session, frame, out)
                    })
                }
                ReadEvent::Invalid(code) => {
                    shared.call(&conn, &mut session, |world, _, session, out| world.fail(session, code, out))
                }
                ReadEvent::Pending => shared.check_deadlines(&conn, &mut session, &reader),
                ReadEvent::Closed => {
                    // The peer left (or a writer gave up on it): no ERROR, just LEAVE to its viewers.
                    let _ = shared.call(&conn, &mut session, |world, _, session, out| {
                        world.close(session, out);
                        Verdict::Close
                    });
                    conn.kill();
                    tracing::debug!(%peer, "disconnected");
                    return;
                }
            }
        };
        if verdict == Verdict::Close {
            break;
        }
    }
    // A fatal ERROR was queued last and `call` flushed it; nothing can be queued after it, because the
    // player left the registry in the same locked call.
    linger_close(conn.stream());
    conn.kill();
    tracing::debug!(%peer, "closed after a fatal error");
}
