//! Echo mode: raw bytes come back unchanged, in order, per connection, on every backend.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use gamewire_net::{IoBackend, Server, ServerConfig, ServerError};

/// An echo server on `io` with a 1 MiB pool, or `None` (with the reason printed) where the machine
/// cannot run that backend.
fn start(io: IoBackend) -> Option<Server> {
    start_with(io, ServerConfig::default().max_connections)
}

fn start_with(io: IoBackend, max_connections: usize) -> Option<Server> {
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        pool_bytes: 1 << 20,
        echo: true,
        io,
        max_connections,
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

#[test]
fn echo_mode_closes_connections_beyond_the_cap_and_keeps_echoing() {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let Some(server) = start_with(io, 3) else { continue };
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let echoes = |stream: &mut TcpStream, bytes: &[u8]| {
            stream.write_all(bytes).unwrap();
            let mut back = vec![0; bytes.len()];
            stream.read_exact(&mut back).is_ok() && back == bytes
        };
        let mut served: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        for (i, stream) in served.iter_mut().enumerate() {
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert!(echoes(stream, format!("client {i}").as_bytes()), "{io:?}: client {i} is echoed");
        }
        let mut fourth = TcpStream::connect(addr).unwrap();
        fourth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = fourth.write_all(b"over the cap");
        let mut buffer = [0u8; 16];
        assert!(
            matches!(fourth.read(&mut buffer), Ok(0) | Err(_)),
            "{io:?}: a connection beyond the cap is closed, not echoed"
        );
        // One leaves: a newcomer takes its place, and the others were never disturbed.
        drop(served.pop());
        std::thread::sleep(Duration::from_millis(100));
        let mut newcomer = TcpStream::connect(addr).unwrap();
        newcomer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(echoes(&mut newcomer, b"newcomer"), "{io:?}: a place that came back is served");
        for stream in &mut served {
            assert!(echoes(stream, b"still here"), "{io:?}");
        }
        stop.shutdown();
        thread.join().unwrap().unwrap();
    }
}
