//! Shared harness of the server's integration tests: a server on a background thread, and a blocking
//! client over a real socket that checks protocol v1's session rules on every frame it receives.
//!
//! Every wait is bounded ([`WAIT`] unless a test says otherwise): a server that stays silent makes a
//! test fail, never hang.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gamewire_net::{IoBackend, RunStats, Server, ServerConfig, ServerError, ShutdownHandle};
use gamewire_proto::{
    Direction, EnterHead, ErrorCode, FrameDecoder, HEADER_LEN, Hit, Move, Packet, PacketKind,
    encode_frame_to_vec,
};
use gamewire_world::{Rate, RateLimits};

/// The longest any single wait lasts.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// The fixed spawn point of [`base_rules`].
pub(crate) const SPAWN: (f32, f32) = (500.0, 500.0);

/// The event-loop backends a server can run on. Adding one is one line in [`Backend::ALL`] and one arm
/// in [`Backend::configure`]; every test runs on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Readiness on mio (epoll / kqueue).
    Mio,
    /// Completions on io_uring (Linux 6.0+).
    Uring,
    /// io_uring with every send zero-copy (`send_zerocopy_threshold = 1`): the buffers must outlive
    /// the kernel's notification, not only the send's completion.
    UringZerocopy,
}

impl Backend {
    pub(crate) const ALL: &'static [Backend] = &[Backend::Mio, Backend::Uring, Backend::UringZerocopy];

    /// Selects this backend in `config`.
    fn configure(self, config: &mut ServerConfig) {
        config.io = match self {
            Backend::Mio => IoBackend::Mio,
            Backend::Uring | Backend::UringZerocopy => IoBackend::Uring,
        };
        if self == Backend::UringZerocopy {
            config.send_zerocopy_threshold = 1;
        }
    }

    /// Whether this machine can run the backend; if not, why (the tests for it are skipped, saying so).
    fn unavailable(self) -> Option<&'static str> {
        static URING: OnceLock<Option<String>> = OnceLock::new();
        match self {
            Backend::Mio => None,
            Backend::Uring | Backend::UringZerocopy => URING
                .get_or_init(|| {
                    let mut config = base_config();
                    config.io = IoBackend::Uring;
                    match Server::bind(config, base_rules()) {
                        Err(ServerError::Io(error)) if error.kind() == io::ErrorKind::Unsupported => {
                            Some(error.to_string())
                        }
                        _ => None,
                    }
                })
                .as_deref(),
        }
    }
}

/// The configuration every test starts from: protocol v1's defaults on `127.0.0.1:0`, a small pool,
/// short drain and linger.
pub(crate) fn base_config() -> ServerConfig {
    ServerConfig::default()
        .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .pool_bytes(4 << 20)
        .drain_timeout(Duration::from_secs(3))
        .close_linger(Duration::from_secs(1))
}

/// The rules every test starts from ([`TestServer::start`]'s): protocol v1's defaults with a fixed
/// spawn point at [`SPAWN`] and a generous PING rate (tests use PING round trips as barriers; its
/// limit is not what they test).
pub(crate) fn base_rules() -> gamewire_world::Config {
    gamewire_world::Config {
        spawn: Some(SPAWN),
        limits: RateLimits { pings: Rate::new(1000.0, 1000.0), ..RateLimits::default() },
        ..gamewire_world::Config::default()
    }
}

/// Workers the suite runs with, on each backend: one (the world inside the worker) and several (the
/// world on its own thread, clients spread over the workers by SO_REUSEPORT).
pub(crate) const WORKER_COUNTS: &[usize] = &[1, 2, 4];

/// Runs `test` once per backend and worker count with [`base_config`] set up for it (zero-copy sends
/// with one worker only: they change nothing the workers do).
pub(crate) fn each_backend(mut test: impl FnMut(ServerConfig)) {
    for &workers in WORKER_COUNTS {
        for &backend in Backend::ALL {
            if workers > 1 && backend == Backend::UringZerocopy {
                continue;
            }
            if let Some(reason) = backend.unavailable() {
                eprintln!("--- backend {backend:?}: SKIPPED, {reason}");
                continue;
            }
            eprintln!("--- backend {backend:?}, {workers} worker(s)");
            let mut config = base_config();
            backend.configure(&mut config);
            config.workers = workers;
            test(config);
        }
    }
}

/// A server running on its own thread; stopped (at once) and joined, within a bound, when dropped.
pub(crate) struct TestServer {
    addr: SocketAddr,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<Result<RunStats, ServerError>>>,
}

impl TestServer {
    /// Binds a server with `config` and [`base_rules`] and runs it on a new thread.
    pub(crate) fn start(config: ServerConfig) -> TestServer {
        TestServer::start_with(config, base_rules())
    }

    /// Binds a server with `config` and protocol v1's `rules` and runs it on a new thread.
    pub(crate) fn start_with(config: ServerConfig, rules: gamewire_world::Config) -> TestServer {
        let server = Server::bind(config, rules).expect("bind the test server");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("gamewire-server".into())
            .spawn(move || server.run())
            .expect("spawn the server thread");
        TestServer { addr, stop, thread: Some(thread) }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// A connected client that has not sent anything yet.
    pub(crate) fn connect(&self, label: &str) -> Client {
        Client::connect(self.addr, label)
    }

    /// A client that sent HELLO `name` and received its WELCOME.
    pub(crate) fn join(&self, name: &str) -> Client {
        let mut client = Client::connect(self.addr, name);
        client.hello(name);
        client
    }

    /// Waits at most `within` for [`Server::run`] to return after a shutdown request, and returns its
    /// result.
    pub(crate) fn wait_stopped(&mut self, within: Duration) -> Result<RunStats, ServerError> {
        let thread = self.thread.take().expect("the server was already joined");
        let deadline = Instant::now() + within;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the server did not stop within {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().expect("the server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        // Twice: the second request makes `run` return without draining.
        self.stop.shutdown();
        self.stop.shutdown();
        let deadline = Instant::now() + WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if std::thread::panicking() {
            return; // The test already failed; do not turn it into an abort.
        }
        assert!(thread.is_finished(), "the server did not stop within {WAIT:?} of a forced shutdown");
        let result = thread.join().expect("the server thread panicked");
        result.expect("the server's run() failed");
    }
}

/// One frame received from the server, owned.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) packet_id: u32,
    /// The header's `player_id`: the player the frame is about.
    pub(crate) player_id: u32,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    pub(crate) fn kind(&self) -> PacketKind {
        PacketKind::from_id(self.packet_id).expect("checked on arrival")
    }

    /// The parsed payload (checked on arrival, so this cannot fail).
    pub(crate) fn packet(&self) -> Packet<'_> {
        Packet::parse(self.packet_id, &self.payload).expect("checked on arrival")
    }

    /// Whether this is a `kind` frame about player `player_id`.
    pub(crate) fn is(&self, kind: PacketKind, player_id: u32) -> bool {
        self.kind() == kind && self.player_id == player_id
    }

    pub(crate) fn as_move(&self) -> Move {
        match self.packet() {
            Packet::Move(m) => *m,
            other => panic!("expected MOVE, got {other:?}"),
        }
    }

    pub(crate) fn as_enter(&self) -> (EnterHead, String) {
        match self.packet() {
            Packet::Enter { head, name } => (*head, name.to_owned()),
            other => panic!("expected ENTER, got {other:?}"),
        }
    }

    pub(crate) fn as_hit(&self) -> Hit {
        match self.packet() {
            Packet::Hit(hit) => *hit,
            other => panic!("expected HIT, got {other:?}"),
        }
    }

    pub(crate) fn as_chat(&self) -> &str {
        match self.packet() {
            Packet::Chat { text } => text,
            other => panic!("expected CHAT, got {other:?}"),
        }
    }

    /// The code of an ERROR frame, `None` for any other frame.
    pub(crate) fn error_code(&self) -> Option<u32> {
        match self.packet() {
            Packet::Error { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Packet::parse(self.packet_id, &self.payload) {
            Ok(packet) => write!(f, "{} about {}: {packet:?}", self.kind().name(), self.player_id),
            Err(_) => write!(f, "frame id {} about {}: {:?}", self.packet_id, self.player_id, self.payload),
        }
    }
}

/// What WELCOME said, in native values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct WelcomeInfo {
    pub(crate) token: u64,
    pub(crate) x: f32,
    pub(crate) y: f32,
    pub(crate) z: f32,
    pub(crate) hp: u32,
    pub(crate) world_w: f32,
    pub(crate) world_h: f32,
    pub(crate) aoi_radius: f32,
    pub(crate) max_speed: f32,
}

/// How a connection ended, as seen by the client.
#[derive(Debug)]
pub(crate) enum End {
    /// A clean close (FIN): `read` returned 0.
    Eof,
    /// The connection was reset or failed.
    Reset(io::Error),
}

enum ReadOutcome {
    Data,
    Timeout,
    Ended,
}

/// A blocking client over a real socket.
///
/// Every frame it receives is checked on arrival, whatever the test then does with it: it must be a
/// frame a server may send, parse, and keep protocol v1's session rules (WELCOME first, ERROR carries
/// the recipient's id or 0 before WELCOME, PONG the recipient's, nothing after a fatal ERROR) and the
/// visibility window (§Session 7): ENTER only about a player not seen, LEAVE only about one seen, MOVE /
/// CHAT / HIT about another player only while it is seen. A violation panics at once.
pub(crate) struct Client {
    label: String,
    stream: TcpStream,
    decoder: FrameDecoder,
    read_buffer: Vec<u8>,
    inbox: VecDeque<Frame>,
    id: Option<u32>,
    welcome: Option<WelcomeInfo>,
    seen: BTreeSet<u32>,
    fatal: Option<u32>,
    ended: Option<End>,
    ping_counter: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("label", &self.label).field("id", &self.id).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr`; `label` names the client in failure messages.
    pub(crate) fn connect(addr: SocketAddr, label: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{label}: connect {addr}: {e}"));
        Client::from_stream(stream, label)
    }

    /// Connects with a receive buffer of about `bytes` and a small MSS, both set before the handshake,
    /// so that the kernels on both sides absorb little of what the server sends a client that does not
    /// read. (On loopback the MSS is 64 KiB, and the server's send buffer autotunes to megabytes from
    /// it; an MSS of 536 keeps it to tens of KiB, so send queues fill after kilobytes, not megabytes.)
    pub(crate) fn connect_with_receive_buffer(addr: SocketAddr, label: &str, bytes: usize) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.set_tcp_mss(536).unwrap();
        socket.connect(&addr.into()).unwrap_or_else(|e| panic!("{label}: connect {addr}: {e}"));
        Client::from_stream(socket.into(), label)
    }

    fn from_stream(stream: TcpStream, label: &str) -> Client {
        stream.set_nodelay(true).unwrap();
        Client {
            label: label.to_owned(),
            stream,
            decoder: FrameDecoder::new(Direction::ToClient, 65536),
            read_buffer: vec![0; 64 << 10],
            inbox: VecDeque::new(),
            id: None,
            welcome: None,
            seen: BTreeSet::new(),
            fatal: None,
            ended: None,
            ping_counter: 0,
        }
    }

    /// The id WELCOME assigned.
    ///
    /// # Panics
    ///
    /// Before WELCOME.
    pub(crate) fn id(&self) -> u32 {
        self.id.unwrap_or_else(|| panic!("{}: no WELCOME yet", self.label))
    }

    /// The id the server must put in frames addressed to this client itself: its id, 0 before WELCOME.
    pub(crate) fn own_header_id(&self) -> u32 {
        self.id.unwrap_or(0)
    }

    pub(crate) fn welcome(&self) -> WelcomeInfo {
        self.welcome.unwrap_or_else(|| panic!("{}: no WELCOME yet", self.label))
    }

    /// The players this client currently sees, from the ENTER and LEAVE frames received so far.
    pub(crate) fn seen(&self) -> &BTreeSet<u32> {
        &self.seen
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends the frame `packet` with header `player_id`.
    pub(crate) fn send(&mut self, player_id: u32, packet: &Packet<'_>) {
        self.send_raw(&encode_frame_to_vec(player_id, packet));
    }

    /// Writes `bytes` as they are.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("{}: write: {e}", self.label));
    }

    /// Writes `bytes` one byte per write, pausing `pause` after each.
    pub(crate) fn send_byte_by_byte(&mut self, bytes: &[u8], pause: Duration) {
        for byte in bytes {
            self.send_raw(std::slice::from_ref(byte));
            std::thread::sleep(pause);
        }
    }

    pub(crate) fn send_move(&mut self, m: Move) {
        self.send(0, &Packet::Move(&m));
    }

    pub(crate) fn send_chat(&mut self, text: &str) {
        self.send(0, &Packet::Chat { text });
    }

    /// Sends HELLO `name` and returns the WELCOME, which must be the first frame received.
    pub(crate) fn hello(&mut self, name: &str) -> (u32, WelcomeInfo) {
        self.label = name.to_owned();
        self.send(0, &Packet::Hello { name });
        let first = self.recv();
        assert_eq!(first.kind(), PacketKind::Welcome, "{name}: the first frame after HELLO: {first:?}");
        (self.id(), self.welcome())
    }

    /// The next frame; panics if none arrives within [`WAIT`] or the connection ends.
    pub(crate) fn recv(&mut self) -> Frame {
        self.recv_within(WAIT).unwrap_or_else(|| panic!("{}: no frame within {WAIT:?}", self.label))
    }

    /// The next frame if one arrives within `wait`; panics if the connection ends.
    pub(crate) fn recv_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.inbox.pop_front() {
                return Some(frame);
            }
            match self.read_some(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Timeout => return None,
                ReadOutcome::Ended => {
                    panic!(
                        "{}: the connection ended ({:?}) while waiting for a frame",
                        self.label, self.ended
                    )
                }
            }
        }
    }

    /// Skips frames until one satisfies `wanted` (within [`WAIT`] in all) and returns it.
    pub(crate) fn recv_until(&mut self, mut wanted: impl FnMut(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left) {
                Some(frame) if wanted(&frame) => return frame,
                Some(frame) => skipped.push(frame),
                None => panic!(
                    "{}: the awaited frame did not arrive within {WAIT:?}; skipped {skipped:?}",
                    self.label
                ),
            }
        }
    }

    /// Sends a PING with a fresh payload and returns every frame received before its PONG, which must
    /// be addressed to this client and echo the payload. Everything the server queued for this client
    /// before it handled the PING has then arrived.
    pub(crate) fn sync(&mut self) -> Vec<Frame> {
        self.ping_counter += 1;
        let payload = format!("sync {} {}", self.label, self.ping_counter);
        let payload = &payload.as_bytes()[..payload.len().min(64)];
        self.send(0, &Packet::Ping { payload });
        let mut before = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self
                .recv_within(left)
                .unwrap_or_else(|| panic!("{}: no PONG within {WAIT:?}; got {before:?}", self.label));
            if frame.kind() == PacketKind::Pong && frame.payload == payload {
                return before;
            }
            before.push(frame);
        }
    }

    /// [`Client::sync`], asserting that nothing else was received.
    pub(crate) fn assert_served(&mut self) {
        let frames = self.sync();
        assert!(frames.is_empty(), "{}: unexpected frames {frames:?}", self.label);
    }

    /// Skips non-ERROR frames until an ERROR arrives, and asserts it is `code` addressed to this client
    /// (header player_id: its id, or 0 before WELCOME).
    pub(crate) fn expect_error(&mut self, code: ErrorCode) -> Frame {
        let frame = self.recv_until(|frame| frame.kind() == PacketKind::Error);
        assert_eq!(
            frame.error_code(),
            Some(code.code()),
            "{}: expected ERROR({code}), got {frame:?}",
            self.label
        );
        assert_eq!(frame.player_id, self.own_header_id(), "{}: ERROR header player_id", self.label);
        frame
    }

    /// Asserts the next frame is ERROR `code` addressed to this client, with nothing before it.
    pub(crate) fn expect_next_error(&mut self, code: ErrorCode) -> Frame {
        let frame = self.recv();
        assert_eq!(
            frame.error_code(),
            Some(code.code()),
            "{}: expected ERROR({code}) next, got {frame:?}",
            self.label
        );
        assert_eq!(frame.player_id, self.own_header_id(), "{}: ERROR header player_id", self.label);
        frame
    }

    /// Asserts the server closes the connection cleanly (EOF) within [`WAIT`] and sends nothing more.
    pub(crate) fn expect_eof(&mut self) {
        match self.expect_end() {
            End::Eof => {}
            End::Reset(error) => panic!("{}: expected a clean close, got {error}", self.label),
        }
    }

    /// Asserts the connection ends, cleanly or by a reset, within [`WAIT`] with no frame before.
    pub(crate) fn expect_end(&mut self) -> End {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(frame) = self.inbox.pop_front() {
                panic!("{}: expected the connection to end, got {frame:?}", self.label);
            }
            match self.read_some(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Timeout => panic!("{}: the connection did not end within {WAIT:?}", self.label),
                ReadOutcome::Ended => return self.ended.take().expect("set when ended"),
            }
        }
    }

    /// Reads every frame until the connection ends (within [`WAIT`]).
    pub(crate) fn recv_to_end(&mut self) -> (Vec<Frame>, End) {
        let deadline = Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            frames.extend(self.inbox.drain(..));
            match self.read_some(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Timeout => panic!(
                    "{}: the connection did not end within {WAIT:?} ({} frames read)",
                    self.label,
                    frames.len()
                ),
                ReadOutcome::Ended => {
                    frames.extend(self.inbox.drain(..));
                    return (frames, self.ended.take().expect("set when ended"));
                }
            }
        }
    }

    /// Every frame that arrives within `wait`, without failing if the connection ends meanwhile (see
    /// [`Client::has_ended`]).
    pub(crate) fn recv_for(&mut self, wait: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            frames.extend(self.inbox.drain(..));
            match self.read_some(deadline) {
                ReadOutcome::Data => {}
                ReadOutcome::Timeout | ReadOutcome::Ended => {
                    frames.extend(self.inbox.drain(..));
                    return frames;
                }
            }
        }
    }

    /// Whether the connection has ended (a read returned end of stream or an error).
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Asserts that nothing arrives (no frame, no close) within `wait`.
    pub(crate) fn expect_silence(&mut self, wait: Duration) {
        if let Some(frame) = self.recv_within(wait) {
            panic!("{}: expected silence for {wait:?}, got {frame:?}", self.label);
        }
    }

    /// Closes the write side (the server reads end of stream).
    pub(crate) fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads once, waiting until `deadline` at most; decodes and checks what arrived.
    fn read_some(&mut self, deadline: Instant) -> ReadOutcome {
        if self.ended.is_some() {
            return ReadOutcome::Ended;
        }
        loop {
            // A zero timeout is refused by `set_read_timeout`; 1 ms still collects what is already there.
            let timeout = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(timeout)).unwrap();
            let mut buffer = std::mem::take(&mut self.read_buffer);
            let result = self.stream.read(&mut buffer);
            let outcome = match result {
                Ok(0) => {
                    assert!(
                        !self.decoder.is_mid_frame(),
                        "{}: the connection closed inside a frame ({} bytes of it received)",
                        self.label,
                        self.decoder.buffered_len()
                    );
                    self.ended = Some(End::Eof);
                    Some(ReadOutcome::Ended)
                }
                Ok(n) => {
                    self.absorb(&buffer[..n]);
                    Some(ReadOutcome::Data)
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    (Instant::now() >= deadline).then_some(ReadOutcome::Timeout)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(e) => {
                    self.ended = Some(End::Reset(e));
                    Some(ReadOutcome::Ended)
                }
            };
            self.read_buffer = buffer;
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    fn absorb(&mut self, mut input: &[u8]) {
        loop {
            let frame = match self.decoder.next_frame(&mut input) {
                Ok(Some(raw)) => Frame {
                    packet_id: raw.packet_id(),
                    player_id: raw.player_id(),
                    payload: raw.payload().to_vec(),
                },
                Ok(None) => return,
                Err(error) => panic!("{}: the server sent an invalid frame header: {error}", self.label),
            };
            self.check(&frame);
            self.inbox.push_back(frame);
        }
    }

    /// The session rules and the visibility window, checked on every frame.
    fn check(&mut self, frame: &Frame) {
        let label = &self.label;
        let packet = Packet::parse(frame.packet_id, &frame.payload)
            .unwrap_or_else(|e| panic!("{label}: the server sent a malformed payload ({e}): {frame:?}"));
        if let Some(code) = self.fatal {
            panic!("{label}: a frame after the fatal ERROR({code}): {frame:?}");
        }
        let about = frame.player_id;
        let Some(me) = self.id else {
            // Before WELCOME, only WELCOME itself or an ERROR addressed to player 0.
            match packet {
                Packet::Welcome(w) => {
                    assert_ne!(about, 0, "{label}: WELCOME must carry the new id, never 0");
                    self.id = Some(about);
                    self.welcome = Some(WelcomeInfo {
                        token: w.token.get(),
                        x: w.x.get(),
                        y: w.y.get(),
                        z: w.z.get(),
                        hp: w.hp.get(),
                        world_w: w.world_w.get(),
                        world_h: w.world_h.get(),
                        aoi_radius: w.aoi_radius.get(),
                        max_speed: w.max_speed.get(),
                    });
                }
                Packet::Error { code, .. } => {
                    assert_eq!(
                        about, 0,
                        "{label}: an ERROR before WELCOME must carry player_id 0: {frame:?}"
                    );
                    self.note_error(code);
                }
                _ => panic!("{label}: a frame before WELCOME: {frame:?}"),
            }
            return;
        };
        match packet {
            Packet::Welcome(_) => panic!("{label}: a second WELCOME: {frame:?}"),
            Packet::Error { code, .. } => {
                assert_eq!(about, me, "{label}: an ERROR must carry the recipient's id: {frame:?}");
                self.note_error(code);
            }
            Packet::Pong { .. } => {
                assert_eq!(about, me, "{label}: a PONG must carry the recipient's id: {frame:?}")
            }
            Packet::Enter { .. } => {
                assert_ne!(about, me, "{label}: ENTER about itself: {frame:?}");
                assert!(self.seen.insert(about), "{label}: ENTER about {about}, already seen: {frame:?}");
            }
            Packet::Leave => {
                assert_ne!(about, me, "{label}: LEAVE about itself: {frame:?}");
                assert!(self.seen.remove(&about), "{label}: LEAVE about {about}, not seen: {frame:?}");
            }
            Packet::Move(_) | Packet::Chat { .. } | Packet::Hit(_) => {
                assert!(
                    about == me || self.seen.contains(&about),
                    "{label}: {} about {about}, who is not in view (seen: {:?}): {frame:?}",
                    frame.kind().name(),
                    self.seen
                );
            }
            Packet::Hello { .. } | Packet::Attack { .. } | Packet::Ping { .. } => {
                unreachable!("the ToClient decoder refuses client-only ids")
            }
        }
    }

    fn note_error(&mut self, code: u32) {
        let known = ErrorCode::from_u32(code)
            .unwrap_or_else(|| panic!("{}: ERROR with an unknown code {code}", self.label));
        if known.is_fatal() {
            self.fatal = Some(code);
        }
    }
}

/// A frame header alone: `packet_id`, `player_id`, `data_length`, with no payload behind it.
pub(crate) fn header_bytes(packet_id: u32, player_id: u32, data_length: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    for field in [packet_id, player_id, data_length] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    bytes
}

/// A whole frame with any id and payload, valid or not.
pub(crate) fn raw_frame(packet_id: u32, player_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header_bytes(packet_id, player_id, payload.len() as u32);
    bytes.extend_from_slice(payload);
    bytes
}

/// Whether two points see each other: protocol v1's predicate (x–z plane, inclusive), computed in
/// `f64` from the `f32` positions the wire carries.
pub(crate) fn sees(a: (f32, f32), b: (f32, f32), radius: f32) -> bool {
    let dx = a.0 as f64 - b.0 as f64;
    let dz = a.1 as f64 - b.1 as f64;
    let radius = radius as f64;
    dx * dx + dz * dz <= radius * radius
}

/// A small deterministic generator (xorshift64*), so that runs are reproducible from their seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[low, high)`.
    pub(crate) fn range_f32(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

impl TestServer {
    /// [`TestServer::start_with`], with every event the server logs on its thread sent to `dispatch`,
    /// so that a test can check what the server warned about.
    pub(crate) fn start_logging_to(
        config: ServerConfig,
        rules: gamewire_world::Config,
        dispatch: tracing::Dispatch,
    ) -> TestServer {
        let server = Server::bind(config, rules).expect("bind the test server");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("gamewire-server".into())
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || server.run()))
            .expect("spawn the server thread");
        TestServer { addr, stop, thread: Some(thread) }
    }
}

/// [`base_config`] set up for one `backend` and worker count, or `None` (saying why on stderr) when this
/// machine cannot run the backend: for tests too slow to run over the whole matrix of [`each_backend`].
pub(crate) fn backend_config(backend: Backend, workers: usize) -> Option<ServerConfig> {
    if let Some(reason) = backend.unavailable() {
        eprintln!("--- backend {backend:?}: SKIPPED, {reason}");
        return None;
    }
    let mut config = base_config();
    backend.configure(&mut config);
    config.workers = workers;
    Some(config)
}
