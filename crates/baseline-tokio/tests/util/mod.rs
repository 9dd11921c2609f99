//! Shared helpers of the integration tests: the server binary as a child process, and a blocking
//! protocol v1 client on 127.0.0.1 with bounded timeouts.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gamewire_proto::{HEADER_LEN, Packet, encode_frame_to_vec};

/// How long any single wait of a test may take before it counts as a failure.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The server binary running as a child; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the binary on a free port with `args` and waits for its `listening on` line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gamewire-baseline-tokio"))
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr_tx, addr_rx) = mpsc::channel();
        // Keep reading stderr for the whole run: a full pipe would block the server's logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[server] {line}");
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(addr) = rest.split_whitespace().next()
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                {
                    let _ = addr_tx.send(addr);
                }
            }
        });
        let mut server = Server { child, addr: "0.0.0.0:0".parse().unwrap() };
        server.addr = addr_rx.recv_timeout(TIMEOUT).expect("the server logs `listening on <addr>`");
        server
    }

    /// Sends the signal `name` (e.g. "INT") to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the server to exit on its own, within [`TIMEOUT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub packet_id: u32,
    pub player_id: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's bytes as they were on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.payload.len());
        bytes.extend_from_slice(&self.packet_id.to_le_bytes());
        bytes.extend_from_slice(&self.player_id.to_le_bytes());
        bytes.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// The code of an ERROR frame.
    pub fn error_code(&self) -> u32 {
        assert_eq!(self.packet_id, 10, "expected an ERROR, got {self:?}");
        u32::from_le_bytes(self.payload[..4].try_into().unwrap())
    }
}

/// A blocking protocol v1 client.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, player_id: u32, packet: &Packet<'_>) {
        self.send_raw(&encode_frame_to_vec(player_id, packet));
    }

    /// The next frame; panics on timeout or end of stream.
    pub fn recv(&mut self) -> Frame {
        read_frame(&mut self.stream).expect("a frame")
    }

    /// Sends HELLO and returns the id the WELCOME assigns.
    pub fn hello(&mut self, name: &str) -> u32 {
        self.send(0, &Packet::Hello { name });
        let welcome = self.recv();
        assert_eq!(welcome.packet_id, 2, "expected WELCOME, got {welcome:?}");
        assert_ne!(welcome.player_id, 0);
        welcome.player_id
    }

    /// Asserts the next frame is an ENTER about `player_id` named `name`.
    pub fn expect_enter(&mut self, player_id: u32, name: &str) {
        let enter = self.recv();
        assert_eq!((enter.packet_id, enter.player_id), (6, player_id), "expected ENTER, got {enter:?}");
        assert_eq!(&enter.payload[16..], name.as_bytes());
    }

    /// Asserts the server closed the stream cleanly (no more bytes, then end of stream).
    pub fn expect_eof(&mut self) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("expected end of stream, got more bytes"),
            Err(error) => panic!("expected end of stream, got {error}"),
        }
    }

    /// Closes the sending side, as a client that is done talking.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }
}

/// Reads one frame from `stream`: `None` at end of stream.
pub fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => return None,
        Err(error) => panic!("reading a frame header: {error}"),
    }
    let field = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
    let mut payload = vec![0; field(8) as usize];
    stream.read_exact(&mut payload).expect("reading a payload");
    Some(Frame { packet_id: field(0), player_id: field(4), payload })
}
