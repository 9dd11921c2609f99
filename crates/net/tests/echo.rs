//! Echo mode: raw bytes come back unchanged, in order, per connection, on every backend.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use gamewire_net::{IoBackend, Server, ServerConfig, ServerError};

/// An echo server on `io` with a 1 MiB pool, or `None` (with the reason printed) where the machine
/// cannot run that backend.
fn start(io: IoBackend) -> Option<Server> {
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        pool_bytes: 1 << 20,
        echo: true,
        io,
        ..ServerConfig::default()
    };
    match Server::bind(config) {
        Err(ServerError::Io(error)) if error.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!("--- backend {io:?}: SKIPPED, {error}");
            None
        }
        bound => Some(bound.expect("bind")),
    }
}

#[test]
fn echo_mode_returns_every_byte_in_order() {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let Some(server) = start(io) else { continue };
        eprintln!("--- backend {io:?}");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let clients: Vec<_> = (0..4u8)
            .map(|seed| {
                std::thread::spawn(move || {
                    let mut stream = TcpStream::connect(addr).unwrap();
                    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    // More than the pool holds at once (1 MiB): echoing must recycle chunks, not grow.
                    let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i as u8).wrapping_mul(seed + 3)).collect();
                    let mut writer = stream.try_clone().unwrap();
                    let payload = sent.clone();
                    let write = std::thread::spawn(move || writer.write_all(&payload).unwrap());
                    let mut received = vec![0; sent.len()];
                    stream.read_exact(&mut received).unwrap();
                    write.join().unwrap();
                    assert!(received == sent, "{io:?}: client {seed}: echoed bytes differ");
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client");
        }
        stop.shutdown();
        let stats = thread.join().unwrap().unwrap();
        assert_eq!(stats.accepted, 4, "{io:?}");
    }
}

#[test]
fn a_client_that_half_closes_gets_the_rest_of_its_echo_then_end_of_stream() {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let Some(server) = start(io) else { continue };
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sent: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        stream.write_all(&sent).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).expect("the server closes after echoing everything");
        assert!(
            received == sent,
            "{io:?}: {} of {} bytes echoed before the close",
            received.len(),
            sent.len()
        );
        stop.shutdown();
        thread.join().unwrap().unwrap();
    }
}
