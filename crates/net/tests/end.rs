//! `Outbox::end` over real sockets: a game ends a player from a command, its tick or a frame.
//!
//! The ended player gets the frame sent just before its end, then EOF; `close` runs once for it, so
//! the others hear it leave; they carry on. Each test runs on mio and io_uring (skipped only where
//! io_uring is unavailable), with one worker (the game inside the event loop) and two (the game on
//! the world thread).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gamewire_net::{IoBackend, RunStats, Server, ServerConfig, ServerError, ServerHandle, ShutdownHandle};
use gamewire_proto::{Direction, Encode, ErrorCode, FrameDecoder, PacketSet, RawFrame};
use gamewire_world::{Game, Outbox, PlayerId, PlayerIds, Recipients, Verdict, error_message};

/// The longest any single wait lasts.
const WAIT: Duration = Duration::from_secs(5);

const HELLO: u32 = 1;
const WELCOME: u32 = 2;
const PING: u32 = 8;
const PONG: u32 = 9;
const ERROR: u32 = 10;
/// BYE (server): the last frame of an ended player; payload the way it was ended, as text.
const BYE: u32 = 16;
/// KICK (client): payload the `u32` id of a player to end (the sender itself, if it likes).
const KICK: u32 = 17;
/// LEAVE (server): header the player who left, sent to everyone else from `close`.
const LEAVE: u32 = 18;

const SERVER_PACKETS: PacketSet = PacketSet::SESSION_FROM_SERVER.with(BYE).with(LEAVE);

/// What the test's game sends.
enum Out<'a> {
    Welcome,
    Pong(&'a [u8]),
    Bye(&'static str),
    Leave,
    Error(ErrorCode),
}

impl Encode for Out<'_> {
    fn packet_id(&self) -> u32 {
        match self {
            Out::Welcome => WELCOME,
            Out::Pong(_) => PONG,
            Out::Bye(_) => BYE,
            Out::Leave => LEAVE,
            Out::Error(_) => ERROR,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Out::Welcome | Out::Leave => 0,
            Out::Pong(payload) => payload.len(),
            Out::Bye(how) => how.len(),
            Out::Error(code) => 4 + error_message(*code).len(),
        }
    }

    fn write_payload(&self, out: &mut [u8]) {
        match self {
            Out::Welcome | Out::Leave => {}
            Out::Pong(payload) => out.copy_from_slice(payload),
            Out::Bye(how) => out.copy_from_slice(how.as_bytes()),
            Out::Error(code) => {
                out[..4].copy_from_slice(&code.code().to_le_bytes());
                out[4..].copy_from_slice(error_message(*code).as_bytes());
            }
        }
    }

    fn is_fatal(&self) -> bool {
        matches!(self, Out::Error(code) if code.is_fatal())
    }
}

/// Commands from the test.
#[derive(Debug)]
enum Command {
    /// End this player now, from the command.
    Kick(PlayerId),
    /// End this player at the next tick.
    KickAtTick(PlayerId),
}

/// What the test reads once the server has stopped.
#[derive(Debug, Default)]
struct Log {
    /// Every `close` call, by player.
    closes: Mutex<Vec<PlayerId>>,
    /// `handle` calls for a session the game had already ended: must stay 0.
    handled_after_end: AtomicUsize,
    /// Calls into the game made while a session it ended had not been closed yet: must stay 0.
    calls_before_close: AtomicUsize,
}

/// A lobby: players join with HELLO, PING, and KICK one another; the test kicks them by command or at
/// a tick.
#[derive(Debug)]
struct Lobby {
    ids: PlayerIds,
    players: Vec<PlayerId>,
    /// Players to end at the next tick.
    doomed: Vec<PlayerId>,
    /// Players this game ended (`Outbox::end`).
    ended: Vec<PlayerId>,
    log: Arc<Log>,
}

#[derive(Debug)]
struct LobbySession {
    player: Option<PlayerId>,
    closed: bool,
}

impl Lobby {
    fn new(log: Arc<Log>) -> Self {
        Lobby { ids: PlayerIds::new(100), players: Vec::new(), doomed: Vec::new(), ended: Vec::new(), log }
    }

    /// Counts a call into the game made while a player it ended is still in (its `close` is due first).
    fn check_closed(&self) {
        if self.ended.iter().any(|id| self.players.contains(id)) {
            self.log.calls_before_close.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// BYE to `id`, then the end of its session; nothing for a player not in the lobby.
    fn end(&mut self, id: PlayerId, how: &'static str, out: &mut impl Outbox) {
        if self.players.contains(&id) && !self.ended.contains(&id) {
            out.send(Recipients::One(id), id.get(), &Out::Bye(how));
            self.ended.push(id);
        }
        // Called whatever the lobby thinks: for an unknown or already-ended player, the core does
        // nothing.
        out.end(id);
    }
}

impl Game for Lobby {
    type Session = LobbySession;
    type Command = Command;

    fn client_packets(&self) -> PacketSet {
        PacketSet::SESSION_FROM_CLIENT.with(KICK)
    }

    fn open(&mut self, _now: Instant) -> LobbySession {
        LobbySession { player: None, closed: false }
    }

    fn handle(
        &mut self,
        _now: Instant,
        _completed_at: Instant,
        session: &mut LobbySession,
        frame: RawFrame<'_>,
        out: &mut impl Outbox,
    ) -> Verdict {
        self.check_closed();
        if session.player.is_some_and(|id| self.ended.contains(&id)) {
            self.log.handled_after_end.fetch_add(1, Ordering::Relaxed);
        }
        match (session.player, frame.packet_id()) {
            (None, HELLO) => {
                let Some(id) = self.ids.allocate() else {
                    return self.fail(session, ErrorCode::ServerFull, out);
                };
                session.player = Some(id);
                self.players.push(id);
                out.send(Recipients::Sender, id.get(), &Out::Welcome);
            }
            (Some(id), PING) => out.send(Recipients::Sender, id.get(), &Out::Pong(frame.payload())),
            (Some(_), KICK) => {
                let Some(target) = <[u8; 4]>::try_from(frame.payload())
                    .ok()
                    .and_then(|bytes| PlayerId::from_wire(u32::from_le_bytes(bytes)))
                else {
                    return self.fail(session, ErrorCode::Malformed, out);
                };
                self.end(target, "frame", out);
            }
            _ => return self.fail(session, ErrorCode::BadState, out),
        }
        Verdict::Continue
    }

    fn deadline(&self, _session: &LobbySession) -> Option<Instant> {
        None
    }

    fn poll_timeout(
        &mut self,
        _now: Instant,
        _session: &mut LobbySession,
        _out: &mut impl Outbox,
    ) -> Verdict {
        Verdict::Continue
    }

    fn fail(&mut self, session: &mut LobbySession, code: ErrorCode, out: &mut impl Outbox) -> Verdict {
        if !session.closed {
            let header = session.player.map_or(0, PlayerId::get);
            out.send(Recipients::Sender, header, &Out::Error(code));
            self.close(session, out);
        }
        Verdict::Close
    }

    fn close(&mut self, session: &mut LobbySession, out: &mut impl Outbox) {
        session.closed = true;
        let Some(id) = session.player.take() else { return };
        self.log.closes.lock().unwrap().push(id);
        self.players.retain(|&player| player != id);
        self.ids.release(id);
        out.send(Recipients::Many(&self.players), id.get(), &Out::Leave);
    }

    fn player(&self, session: &LobbySession) -> Option<PlayerId> {
        session.player
    }

    fn player_count(&self) -> usize {
        self.players.len()
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(10))
    }

    fn tick(&mut self, _now: Instant, out: &mut impl Outbox) {
        self.check_closed();
        let doomed = std::mem::take(&mut self.doomed);
        for &id in &doomed {
            self.end(id, "tick", out);
        }
        self.doomed = doomed;
        self.doomed.clear();
    }

    fn command(&mut self, _now: Instant, command: Command, out: &mut impl Outbox) {
        self.check_closed();
        match command {
            Command::Kick(id) => self.end(id, "command", out),
            Command::KickAtTick(id) => self.doomed.push(id),
        }
    }
}

/// A lobby server on its own thread.
struct Running {
    addr: SocketAddr,
    handle: ServerHandle<Lobby>,
    log: Arc<Log>,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<Result<RunStats, ServerError>>>,
}

impl Running {
    /// Starts a lobby on 127.0.0.1 with `io` and `workers`; `None` (saying why) if `io` cannot run on
    /// this machine.
    fn start(io: IoBackend, workers: usize) -> Option<Running> {
        let config = ServerConfig::default()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .pool_bytes(4 << 20)
            .drain_timeout(Duration::from_secs(3))
            .close_linger(Duration::from_secs(1))
            .io(io)
            .workers(workers);
        let log = Arc::new(Log::default());
        let server = match Server::with_game(config, Lobby::new(Arc::clone(&log))) {
            Err(ServerError::Io(error))
                if io == IoBackend::Uring && error.kind() == io::ErrorKind::Unsupported =>
            {
                eprintln!("--- {io:?}: SKIPPED, {error}");
                return None;
            }
            started => started.expect("the server starts"),
        };
        let (addr, handle, stop) = (server.local_addr(), server.handle(), server.shutdown_handle());
        let thread = std::thread::spawn(move || server.run());
        Some(Running { addr, handle, log, stop, thread: Some(thread) })
    }

    fn join(&self) -> Client {
        let mut client = Client::connect(self.addr);
        client.send(HELLO, &[]);
        client.id = client.wait_for("WELCOME", |frame| frame.packet_id == WELCOME).player_id;
        assert_ne!(client.id, 0, "WELCOME's header is the player id");
        client
    }

    /// Stops the server (gracefully) and returns what the game logged: every call into it is over.
    fn stop(mut self) -> Arc<Log> {
        self.stop.shutdown();
        let stopped = self.thread.take().expect("running").join().expect("server thread");
        stopped.expect("the server stops cleanly");
        Arc::clone(&self.log)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test: stop at once, without hiding its panic behind another.
        if let Some(thread) = self.thread.take() {
            self.stop.shutdown();
            self.stop.shutdown();
            let _ = thread.join();
        }
    }
}

/// Runs `test` on each backend (io_uring skipped only where it is unavailable), with 1 and 2 workers.
fn each_config(mut test: impl FnMut(Running)) {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        for workers in [1, 2] {
            eprintln!("--- {io:?}, {workers} worker(s)");
            if let Some(server) = Running::start(io, workers) {
                test(server);
            }
        }
    }
}

#[derive(Debug)]
struct Frame {
    packet_id: u32,
    player_id: u32,
    payload: Vec<u8>,
}

/// A blocking client on 127.0.0.1.
struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
    /// Frames read and not yet taken by a wait, in arrival order.
    inbox: Vec<Frame>,
    id: u32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let decoder = FrameDecoder::with_packets(Direction::ToClient, SERVER_PACKETS, 1024);
        Client { stream, decoder, buffer: vec![0; 16 << 10], inbox: Vec::new(), id: 0 }
    }

    fn frame(packet_id: u32, payload: &[u8]) -> Vec<u8> {
        [&packet_id.to_le_bytes()[..], &0u32.to_le_bytes(), &(payload.len() as u32).to_le_bytes(), payload]
            .concat()
    }

    fn send(&mut self, packet_id: u32, payload: &[u8]) {
        self.stream.write_all(&Self::frame(packet_id, payload)).expect("send");
    }

    /// Reads what arrives within `timeout` into the inbox; returns whether the server closed (EOF).
    fn read_for(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut self.buffer) {
                Ok(0) => return true,
                Ok(n) => {
                    let mut input = &self.buffer[..n];
                    while let Some(frame) = self.decoder.next_frame(&mut input).expect("valid server frames")
                    {
                        let (packet_id, player_id) = (frame.packet_id(), frame.player_id());
                        self.inbox.push(Frame { packet_id, player_id, payload: frame.payload().to_vec() });
                    }
                }
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return false;
                }
                // A reset could destroy frames queued before it: the close must be a clean EOF.
                Err(error) => panic!("read: {error}; inbox {:?}", self.inbox),
            }
        }
    }

    /// Takes the first frame matching `wanted` out of the inbox, reading until one arrives (at most
    /// [`WAIT`]). Frames before it stay in the inbox.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = self.inbox.iter().position(&wanted) {
                return self.inbox.remove(at);
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; inbox {:?}", self.inbox);
            if self.read_for(Duration::from_millis(50)) && !self.inbox.iter().any(&wanted) {
                panic!("connection closed before {what}; inbox {:?}", self.inbox);
            }
        }
    }

    /// Reads until the server closes the connection (at most [`WAIT`]); returns every frame not taken
    /// yet, in arrival order.
    fn until_closed(&mut self) -> Vec<Frame> {
        let deadline = Instant::now() + WAIT;
        while !self.read_for(Duration::from_millis(50)) {
            assert!(Instant::now() < deadline, "the server kept the connection open; inbox {:?}", self.inbox);
        }
        std::mem::take(&mut self.inbox)
    }

    /// A PING round trip: the server still serves this client.
    fn ping(&mut self, payload: &[u8]) {
        self.send(PING, payload);
        let pong = self.wait_for("PONG", |frame| frame.packet_id == PONG && frame.payload == payload);
        assert_eq!(pong.player_id, self.id);
    }

    fn player(&self) -> PlayerId {
        PlayerId::from_wire(self.id).expect("a player id")
    }
}

/// `ended` got BYE(`how`) as its last frame, then EOF; each of `others` got its LEAVE and is still
/// served.
fn assert_ended(ended: &mut Client, how: &str, others: &mut [&mut Client]) {
    let frames = ended.until_closed();
    let last = frames.last().unwrap_or_else(|| panic!("no BYE before the close"));
    assert_eq!((last.packet_id, last.player_id), (BYE, ended.id), "{frames:?}");
    assert_eq!(last.payload, how.as_bytes(), "{frames:?}");
    assert_eq!(frames.iter().filter(|frame| frame.packet_id == BYE).count(), 1, "{frames:?}");
    for other in others {
        other.wait_for("LEAVE", |frame| frame.packet_id == LEAVE && frame.player_id == ended.id);
        other.ping(b"still here");
    }
}

/// Stops the server, then checks what the game saw: `close` once for each of `ended`, before any
/// other call, and no frame of theirs handled after their end.
fn assert_closed_once(server: Running, ended: &[PlayerId]) {
    let log = server.stop();
    let closes = log.closes.lock().unwrap();
    for id in ended {
        assert_eq!(
            closes.iter().filter(|&closed| closed == id).count(),
            1,
            "close calls for {id}: {closes:?}"
        );
    }
    assert_eq!(log.handled_after_end.load(Ordering::Relaxed), 0, "frames handled after their session ended");
    assert_eq!(log.calls_before_close.load(Ordering::Relaxed), 0, "calls between an end and its close");
}

#[test]
fn a_command_ends_a_player_and_the_others_carry_on() {
    each_config(|server| {
        let mut a = server.join();
        let mut b = server.join();
        let mut c = server.join();
        // A keeps sending while it is ended: frames of its still on the way must not reach the game.
        for round in 0..20u8 {
            a.send(PING, &[round]);
        }
        let command = |command| server.handle.command(command).expect("the server runs");
        command(Command::Kick(a.player()));
        assert_ended(&mut a, "command", &mut [&mut b, &mut c]);
        // Ending A again, or a player who never was, changes nothing; the kick of C behind them (the
        // commands run in order) shows when they have run.
        command(Command::Kick(a.player()));
        command(Command::Kick(PlayerId::from_wire(0xFFFF).unwrap()));
        command(Command::Kick(c.player()));
        assert_ended(&mut c, "command", &mut [&mut b]);
        assert!(!b.inbox.iter().any(|frame| frame.packet_id == LEAVE), "a second LEAVE: {:?}", b.inbox);
        let ended = [a.player(), c.player()];
        drop((a, b, c));
        assert_closed_once(server, &ended);
    });
}

#[test]
fn a_tick_ends_a_player_and_the_others_carry_on() {
    each_config(|server| {
        let mut a = server.join();
        let mut b = server.join();
        server.handle.command(Command::KickAtTick(a.player())).expect("the server runs");
        assert_ended(&mut a, "tick", &mut [&mut b]);
        let ended = [a.player()];
        drop((a, b));
        assert_closed_once(server, &ended);
    });
}

#[test]
fn a_frame_of_one_player_ends_another() {
    each_config(|server| {
        let mut a = server.join();
        let mut b = server.join();
        let mut c = server.join();
        // One write: the KICK, and a PING the game must get only after A's `close`.
        let bytes = [Client::frame(KICK, &a.id.to_le_bytes()), Client::frame(PING, b"next")].concat();
        b.stream.write_all(&bytes).expect("send");
        assert_ended(&mut a, "frame", &mut [&mut b, &mut c]);
        b.wait_for("PONG", |frame| frame.packet_id == PONG && frame.payload == b"next");
        let ended = [a.player()];
        drop((a, b, c));
        assert_closed_once(server, &ended);
    });
}

#[test]
fn a_player_ended_by_its_own_frame_gets_nothing_for_the_frames_behind_it() {
    each_config(|server| {
        let mut a = server.join();
        let mut b = server.join();
        // One write: KICK of itself, then a PING the game must never see (no PONG).
        let bytes = [Client::frame(KICK, &a.id.to_le_bytes()), Client::frame(PING, b"late")].concat();
        a.stream.write_all(&bytes).expect("send");
        assert_ended(&mut a, "frame", &mut [&mut b]);
        let ended = [a.player()];
        drop((a, b));
        assert_closed_once(server, &ended);
    });
}
