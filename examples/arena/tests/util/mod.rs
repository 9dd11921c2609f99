//! Shared harness of the arena's integration tests: an arena server on a background thread, and a
//! blocking client over a real socket on 127.0.0.1.
//!
//! Every wait is bounded ([`WAIT`]): a server that stays silent makes a test fail, never hang.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gamewire_arena::protocol::{self, ClientPacket, SERVER_PACKETS, SERVER_PAYLOAD_MAX, ServerPacket};
use gamewire_arena::{Arena, ArenaConfig};
use gamewire_net::{IoBackend, RunStats, Server, ServerConfig, ServerError, ServerHandle, ShutdownHandle};
use gamewire_proto::{Direction, Encode, FrameDecoder, encode_frame_to_vec};

/// The longest any single wait lasts.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// An arena where players spawn where a test says, in join order.
pub(crate) fn config_with_spawns(spawns: &[(f32, f32)]) -> ArenaConfig {
    let mut config = ArenaConfig::default();
    config.spawns = spawns.to_vec();
    config
}

/// A running arena server; shut down and joined on drop.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: ServerHandle<Arena>,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<Result<RunStats, ServerError>>>,
}

impl Running {
    /// Starts an arena with `arena`'s rules on 127.0.0.1, port 0. `None` (saying why) if `io` cannot
    /// run on this machine.
    pub(crate) fn start(arena: ArenaConfig, io: IoBackend, workers: usize) -> Option<Running> {
        let config = ServerConfig::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .pool_bytes(4 << 20)
            .io(io)
            .workers(workers);
        let server = match Server::with_game(config, Arena::new(arena).expect("valid arena")) {
            Err(ServerError::Io(error)) if error.kind() == io::ErrorKind::Unsupported => {
                eprintln!("--- backend {io:?}: SKIPPED, {error}");
                return None;
            }
            started => started.expect("server starts"),
        };
        let (addr, handle, stop) = (server.local_addr(), server.handle(), server.shutdown_handle());
        let thread = std::thread::spawn(move || server.run());
        Some(Running { addr, handle, stop, thread: Some(thread) })
    }

    /// A client that sent HELLO and read its WELCOME.
    pub(crate) fn join(&self, name: &str) -> Client {
        let mut client = Client::connect(self.addr);
        client.send(&ClientPacket::Hello { name });
        let welcome = client.wait_for("WELCOME", |frame| frame.packet_id == protocol::WELCOME);
        client.id = welcome.player_id;
        assert_ne!(client.id, 0, "WELCOME's header carries the player id");
        client
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            let stopped = thread.join().expect("server thread");
            if !std::thread::panicking() {
                stopped.expect("server stops cleanly");
            }
        }
    }
}

/// A frame a client received, owned.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) packet_id: u32,
    pub(crate) player_id: u32,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    /// The parsed packet; panics on a frame the arena would never send.
    pub(crate) fn packet(&self) -> ServerPacket<'_> {
        ServerPacket::parse(self.packet_id, &self.payload).expect("a valid arena frame")
    }
}

/// A blocking arena client.
pub(crate) struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
    /// Frames read but not yet taken by a wait.
    pub(crate) inbox: Vec<Frame>,
    /// Its player id, once WELCOMEd.
    pub(crate) id: u32,
}

impl Client {
    pub(crate) fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            decoder: FrameDecoder::with_packets(Direction::ToClient, SERVER_PACKETS, SERVER_PAYLOAD_MAX),
            buffer: vec![0; 64 << 10],
            inbox: Vec::new(),
            id: 0,
        }
    }

    pub(crate) fn send<P: Encode>(&mut self, packet: &P) {
        self.stream.write_all(&encode_frame_to_vec(0, packet)).expect("send");
    }

    /// Sends raw bytes (a frame the arena does not accept, say).
    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads what arrives within `timeout` into the inbox; returns whether the server closed.
    pub(crate) fn read_for(&mut self, timeout: Duration) -> bool {
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
                        self.inbox.push(Frame {
                            packet_id: frame.packet_id(),
                            player_id: frame.player_id(),
                            payload: frame.payload().to_vec(),
                        });
                    }
                }
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return false;
                }
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(error) => panic!("read: {error}"),
            }
        }
    }

    /// Takes the first frame matching `wanted` out of the inbox, reading until one arrives (at most
    /// [`WAIT`]). Frames before it stay in the inbox.
    pub(crate) fn wait_for(&mut self, what: &str, wanted: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = self.inbox.iter().position(&wanted) {
                return self.inbox.remove(at);
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; inbox {:?}", self.inbox);
            let closed = self.read_for(Duration::from_millis(50));
            if closed && !self.inbox.iter().any(&wanted) {
                panic!("connection closed before {what}; inbox {:?}", self.inbox);
            }
        }
    }

    /// Reads until the server closes the connection (at most [`WAIT`]); returns the frames that came.
    pub(crate) fn until_closed(&mut self) -> Vec<Frame> {
        let deadline = Instant::now() + WAIT;
        while !self.read_for(Duration::from_millis(50)) {
            assert!(Instant::now() < deadline, "the server kept the connection open; inbox {:?}", self.inbox);
        }
        std::mem::take(&mut self.inbox)
    }
}
