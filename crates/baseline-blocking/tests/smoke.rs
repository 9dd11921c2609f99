//! End-to-end smoke tests: the built binary on 127.0.0.1, real sockets, bounded timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gamewire_proto::{ErrorCode, HEADER_LEN, Move, Packet, PacketKind, encode_frame_to_vec};

/// Bound on every wait in these tests.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The server process; killed when the test ends, however it ends.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on an ephemeral port and reads the bound address from its `listening on` line.
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gamewire-baseline-blocking"))
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr after the address is found: a full pipe would block the server's logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[server] {line}");
                if let Some((_, addr)) = line.split_once("listening on ") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().expect("address after `listening on`"));
                }
            }
        });
        // The guard owns the child from here, so a missing line still kills it.
        let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        server.addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server printed `listening on`");
        server
    }

    /// Waits (bounded) for the process to exit on its own.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A frame as received: packet id, header player id, payload.
#[derive(Debug, PartialEq)]
struct Frame {
    packet_id: u32,
    player_id: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn error_code(&self) -> u32 {
        assert_eq!(self.packet_id, PacketKind::Error.id(), "expected ERROR, got {self:?}");
        u32::from_le_bytes(self.payload[..4].try_into().unwrap())
    }
}

struct Client {
    stream: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn send(&mut self, player_id: u32, packet: &Packet<'_>) {
        self.send_raw(&encode_frame_to_vec(player_id, packet));
    }

    /// The next frame's bytes, header included.
    fn recv_bytes(&mut self) -> Vec<u8> {
        let mut frame = vec![0; HEADER_LEN];
        self.stream.read_exact(&mut frame).expect("a frame header within the timeout");
        let len = u32::from_le_bytes(frame[8..12].try_into().unwrap()) as usize;
        frame.resize(HEADER_LEN + len, 0);
        self.stream.read_exact(&mut frame[HEADER_LEN..]).expect("a frame payload within the timeout");
        frame
    }

    fn recv(&mut self) -> Frame {
        let bytes = self.recv_bytes();
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        Frame { packet_id: word(0), player_id: word(4), payload: bytes[HEADER_LEN..].to_vec() }
    }

    fn recv_kind(&mut self, kind: PacketKind) -> Frame {
        let frame = self.recv();
        assert_eq!(frame.packet_id, kind.id(), "expected {kind:?}, got {frame:?}");
        frame
    }

    /// HELLO, then WELCOME; returns the id the server assigned.
    fn join(&mut self, name: &str) -> u32 {
        self.send(0, &Packet::Hello { name });
        let welcome = self.recv_kind(PacketKind::Welcome);
        assert_ne!(welcome.player_id, 0);
        welcome.player_id
    }

    /// The server closed the connection cleanly, with nothing more sent.
    fn expect_eof(&mut self) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            other => panic!("expected end of stream, got {other:?} (byte {byte:?})"),
        }
    }
}

fn enter_name(frame: &Frame) -> &str {
    std::str::from_utf8(&frame.payload[16..]).unwrap()
}

#[test]
fn two_players_meet_move_chat_ping_and_a_bad_header_ends_only_its_sender() {
    let server = Server::start(&["--spawn", "500,500"]);

    let mut alice = Client::connect(server.addr);
    let alice_id = alice.join("alice");
    let mut bob = Client::connect(server.addr);
    let bob_id = bob.join("bob");
    assert_ne!(alice_id, bob_id);

    // Same spawn point: each sees the other.
    let enter = bob.recv_kind(PacketKind::Enter);
    assert_eq!((enter.player_id, enter_name(&enter)), (alice_id, "alice"));
    let enter = alice.recv_kind(PacketKind::Enter);
    assert_eq!((enter.player_id, enter_name(&enter)), (bob_id, "bob"));

    // MOVE is relayed byte for byte (alice puts her own id in the header, so even it matches).
    let step = Move::new(501.0, 2.5, 500.5, 5.0, 0xDEAD_BEEF);
    let sent = encode_frame_to_vec(alice_id, &Packet::Move(&step));
    alice.send_raw(&sent);
    assert_eq!(bob.recv_bytes(), sent);

    // CHAT is relayed to the viewer, with the speaker's id.
    alice.send(0, &Packet::Chat { text: "hello bob" });
    let chat = bob.recv_kind(PacketKind::Chat);
    assert_eq!((chat.player_id, chat.payload.as_slice()), (alice_id, "hello bob".as_bytes()));

    // PING -> PONG, same payload, to the sender alone.
    bob.send(0, &Packet::Ping { payload: &[1, 2, 3] });
    let pong = bob.recv_kind(PacketKind::Pong);
    assert_eq!((pong.player_id, pong.payload.as_slice()), (bob_id, &[1u8, 2, 3][..]));

    // A packet id a client may not send (WELCOME) before HELLO: ERROR(UNKNOWN_PACKET), id 0, then EOF.
    let mut carol = Client::connect(server.addr);
    carol.send_raw(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let error = carol.recv();
    assert_eq!((error.error_code(), error.player_id), (ErrorCode::UnknownPacket.code(), 0));
    carol.expect_eof();

    // An unknown id from a playing client: ERROR(3) is the last frame it gets; its viewer sees LEAVE.
    alice.send_raw(&[99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let error = alice.recv();
    assert_eq!((error.error_code(), error.player_id), (ErrorCode::UnknownPacket.code(), alice_id));
    alice.expect_eof();
    let leave = bob.recv_kind(PacketKind::Leave);
    assert_eq!(leave.player_id, alice_id);

    // Bob carries on.
    bob.send(bob_id, &Packet::Ping { payload: b"still here" });
    let pong = bob.recv_kind(PacketKind::Pong);
    assert_eq!(pong.payload, b"still here");
}

#[test]
fn a_frame_split_across_read_timeouts_is_reassembled() {
    let server = Server::start(&["--spawn", "500,500"]);
    let mut client = Client::connect(server.addr);
    let hello = encode_frame_to_vec(0, &Packet::Hello { name: "slow typist" });
    // Each pause spans several of the server's 100 ms read timeouts.
    for piece in [&hello[..3], &hello[3..13], &hello[13..]] {
        client.send_raw(piece);
        std::thread::sleep(Duration::from_millis(250));
    }
    client.recv_kind(PacketKind::Welcome);
    client.send(0, &Packet::Ping { payload: b"ok" });
    assert_eq!(client.recv_kind(PacketKind::Pong).payload, b"ok");
}

#[test]
fn oversized_header_is_too_large_and_late_hello_is_timeout() {
    let server = Server::start(&["--hello-timeout", "0.3", "--max-payload", "256"]);
    let mut client = Client::connect(server.addr);
    // data_length 257 with max_payload 256, and an id a client may not send: TOO_LARGE wins.
    client.send_raw(&[7, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]);
    assert_eq!(client.recv().error_code(), ErrorCode::TooLarge.code());
    client.expect_eof();

    let mut silent = Client::connect(server.addr);
    let started = Instant::now();
    assert_eq!(silent.recv().error_code(), ErrorCode::Timeout.code());
    silent.expect_eof();
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn over_max_connections_is_server_full() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut first = Client::connect(server.addr);
    first.join("first");
    let mut second = Client::connect(server.addr);
    let error = second.recv();
    assert_eq!((error.error_code(), error.player_id), (ErrorCode::ServerFull.code(), 0));
    second.expect_eof();
    // The first is unaffected.
    first.send(0, &Packet::Ping { payload: &[] });
    first.recv_kind(PacketKind::Pong);
}

#[cfg(unix)]
#[test]
fn sigterm_says_shutting_down_and_exits_zero() {
    let mut server = Server::start(&[]);
    let mut client = Client::connect(server.addr);
    client.join("leaving");
    let status =
        Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("run kill");
    assert!(status.success());
    let error = client.recv();
    assert_eq!(error.error_code(), ErrorCode::ShuttingDown.code());
    client.expect_eof();
    drop(client);
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn echo_mode_echoes_bytes() {
    let server = Server::start(&["--echo"]);
    let mut client = Client::connect(server.addr);
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client.send_raw(&sent);
    let mut echoed = vec![0; sent.len()];
    client.stream.read_exact(&mut echoed).expect("echo within the timeout");
    assert_eq!(echoed, sent);
    client.send_raw(b"again");
    let mut echoed = [0; 5];
    client.stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"again");
}
