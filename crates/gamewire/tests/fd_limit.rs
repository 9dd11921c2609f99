//! Accepting keeps working at the file-descriptor limit: `gamewire serve` started with `ulimit -n 64`
//! serves what fits, leaves the rest in the listen backlog (no crash, no spin), and accepts them as soon
//! as descriptors come back. Both backends, game and echo mode; only 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gamewire_proto::{Direction, FrameDecoder, Packet, PacketKind, encode_frame_to_vec};

mod common;

use common::{GAMEWIRE, Killed, free_addr, start_listening};

const CLIENTS: usize = 100;

/// A client that sent HELLO and watches for its WELCOME without blocking.
struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    welcomed: bool,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let mut stream = TcpStream::connect(addr).expect("connect (the backlog takes it even unaccepted)");
        stream.write_all(&encode_frame_to_vec(0, &Packet::Hello { name: "fd" })).unwrap();
        stream.set_nonblocking(true).unwrap();
        Client { stream, decoder: FrameDecoder::new(Direction::ToClient, 65536), welcomed: false }
    }

    /// Reads what has arrived; returns whether the WELCOME has.
    fn poll(&mut self) -> bool {
        let mut buffer = [0u8; 4096];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => panic!("the server closed a client at the descriptor limit"),
                Ok(n) => {
                    let mut input = &buffer[..n];
                    while let Some(frame) = self.decoder.next_frame(&mut input).expect("valid frames") {
                        self.welcomed |= frame.packet_id() == PacketKind::Welcome as u32;
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return self.welcomed,
                Err(error) => panic!("client read: {error}"),
            }
        }
    }
}

fn start(io: &str) -> Option<(Killed, SocketAddr)> {
    start_with(io, "--world 200,200 --spawn 100,100")
}

fn start_with(io: &str, flags: &str) -> Option<(Killed, SocketAddr)> {
    let addr = free_addr();
    let command =
        format!("ulimit -n 64 && exec {GAMEWIRE} serve --io {io} --workers 1 --addr {addr} {flags}");
    match start_listening("sh".as_ref(), &["-c", &command], addr, Stdio::null()) {
        Ok(server) => Some((server, addr)),
        Err(status) => {
            // `--io uring` where the kernel lacks it: nothing to test on that backend here.
            eprintln!("--- {io}: SKIPPED, the server exited at start ({status})");
            None
        }
    }
}

/// Polls every client until `enough` holds or `within` passes; returns the welcomed count.
fn poll_until(clients: &mut [Client], within: Duration, enough: impl Fn(usize) -> bool) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let welcomed = clients.iter_mut().map(Client::poll).filter(|&w| w).count();
        if enough(welcomed) || Instant::now() >= deadline {
            return welcomed;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn accepting_resumes_once_descriptors_come_back() {
    for io in ["mio", "uring"] {
        let Some((mut server, addr)) = start(io) else { continue };
        let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::connect(addr)).collect();
        // What fits under 64 descriptors is served; the rest waits in the backlog, not refused.
        let served = poll_until(&mut clients, Duration::from_secs(5), |_| false);
        assert!(
            (10..CLIENTS).contains(&served),
            "{io}: {served} of {CLIENTS} served under `ulimit -n 64` (expected some, not all)"
        );
        assert!(server.0.try_wait().unwrap().is_none(), "{io}: the server died at the descriptor limit");

        // Twenty served clients leave: their descriptors come back, and waiting clients get in.
        let mut leaving = 0;
        clients.retain(|client| {
            let leave = client.welcomed && leaving < 20;
            leaving += usize::from(leave);
            !leave
        });
        let before = served - leaving;
        let after = poll_until(&mut clients, Duration::from_secs(10), |w| w >= before + 10);
        assert!(
            after >= before + 10,
            "{io}: accepting did not resume: {after} welcomed after 20 left (had {before})"
        );
        assert!(server.0.try_wait().unwrap().is_none(), "{io}: the server died");
        eprintln!("--- {io}: {served} served at the limit, {after} after 20 left");
    }
}

/// Echo mode: what waits in the backlog while descriptors are out is accepted once they come back, even
/// if no connection of the loop closes (descriptors freed elsewhere count too: accepting is retried).
#[test]
fn echo_mode_accepts_again_after_running_out_of_descriptors() {
    for io in ["mio", "uring"] {
        let Some((mut server, addr)) = start_with(io, "--echo") else { continue };
        let mut clients: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| {
                let mut stream = TcpStream::connect(addr).expect("connect (the backlog takes it)");
                stream.write_all(b"x").unwrap();
                stream.set_nonblocking(true).unwrap();
                stream
            })
            .collect();
        let echoed = |clients: &mut [TcpStream], done: &mut Vec<bool>| {
            for (client, done) in clients.iter_mut().zip(done.iter_mut()) {
                let mut byte = [0u8; 1];
                if let Ok(1) = client.read(&mut byte) {
                    *done = true;
                }
            }
            done.iter().filter(|&&d| d).count()
        };
        let mut done = vec![false; CLIENTS];
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            echoed(&mut clients, &mut done);
            std::thread::sleep(Duration::from_millis(50));
        }
        let served = done.iter().filter(|&&d| d).count();
        assert!((10..CLIENTS).contains(&served), "{io}: {served} of {CLIENTS} echoed under `ulimit -n 64`");
        assert!(server.0.try_wait().unwrap().is_none(), "{io}: the echo server died at the descriptor limit");
        // Twenty echoed clients leave; waiting ones get in and are echoed.
        let mut left = 0;
        let mut kept = Vec::new();
        let mut kept_done = Vec::new();
        for (client, was_done) in clients.into_iter().zip(done) {
            if was_done && left < 20 {
                left += 1;
                drop(client);
            } else {
                kept.push(client);
                kept_done.push(was_done);
            }
        }
        let before = served - left;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut after = echoed(&mut kept, &mut kept_done);
        while after < before + 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            after = echoed(&mut kept, &mut kept_done);
        }
        assert!(
            after >= before + 10,
            "{io}: accepting did not resume: {after} echoed after 20 left (had {before})"
        );
        eprintln!("--- {io} echo: {served} echoed at the limit, {after} after 20 left");
    }
}
