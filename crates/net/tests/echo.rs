//! Echo mode: raw bytes come back unchanged, in order, per connection, on every backend.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gamewire_net::{EchoServer, IoBackend, ServerConfig, ServerError};

/// An echo server on `io` with a 1 MiB pool, or `None` (with the reason printed) where the machine
/// cannot run that backend.
fn start(io: IoBackend) -> Option<EchoServer> {
    start_with(io, ServerConfig::default().max_connections)
}

fn start_with(io: IoBackend, max_connections: usize) -> Option<EchoServer> {
    let config = ServerConfig::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .pool_bytes(1 << 20)
        .io(io)
        .max_connections(max_connections);
    match EchoServer::bind(config) {
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

/// How a client that never reads ended.
#[derive(Debug)]
struct NonReaderEnd {
    /// Bytes the kernel took from it (printed: how much the kernel's buffers absorbed).
    #[allow(dead_code)]
    written: usize,
    /// How long after it started the server closed its connection (its writes failed), if it did.
    closed_after: Option<Duration>,
}

/// A client that writes up to `flood` bytes and never reads, until the server closes it, `stop` is
/// set, or `within` passes (every write waits 100 ms at most, so the flag and the bound are seen).
fn non_reader(
    addr: SocketAddr,
    flood: usize,
    stop: Arc<AtomicBool>,
    within: Duration,
) -> JoinHandle<NonReaderEnd> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
        let piece = vec![0x5a; 64 << 10];
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < within {
            if written >= flood {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let end = piece.len().min(flood - written);
            match stream.write(&piece[..end]) {
                Ok(n) => written += n,
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return NonReaderEnd { written, closed_after: Some(started.elapsed()) },
            }
        }
        NonReaderEnd { written, closed_after: None }
    })
}

/// One echo round trip of `bytes` on `stream` (whose read timeout bounds it): whether it came back
/// whole and unchanged.
fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    if stream.write_all(bytes).is_err() {
        return false;
    }
    let mut back = vec![0; bytes.len()];
    stream.read_exact(&mut back).is_ok() && back == bytes
}

/// Nine clients flood 6 MB each and never read, into a 1 MiB pool: more than the kernel's buffers
/// absorb (they fill, then the server's backlogs), and, on io_uring, nine times the eighth of the
/// receive ring one connection could hold before. A well-behaved client that connected first keeps
/// getting every echo within a second, all along: each stuck client is held to its share of the pool,
/// the rest stays for the others.
#[test]
fn clients_that_never_read_do_not_stop_the_others() {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let Some(server) = start(io) else { continue };
        eprintln!("--- backend {io:?}");
        let addr = server.local_addr();
        let stop_server = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let mut good = TcpStream::connect(addr).unwrap();
        good.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        assert!(round_trip(&mut good, b"before"), "{io:?}: echoed before the flood");

        let stop = Arc::new(AtomicBool::new(false));
        // Well within the write deadline (5 s by default): the stuck clients are still open below.
        let within = Duration::from_secs(4);
        let stuck: Vec<_> = (0..9).map(|_| non_reader(addr, 6_000_000, Arc::clone(&stop), within)).collect();
        // Time to fill the kernel's buffers and their shares of the server.
        std::thread::sleep(Duration::from_millis(1500));

        let started = Instant::now();
        for round in 0..40u32 {
            let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 + round) as u8).collect();
            let sent_at = Instant::now();
            assert!(round_trip(&mut good, &bytes), "{io:?}: round {round} was not echoed within 1 s");
            assert!(sent_at.elapsed() < Duration::from_secs(1), "{io:?}: round {round}");
        }
        eprintln!(
            "{io:?}: 40 round trips of 4 KiB in {:?} beside 9 clients that never read",
            started.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
        let ends: Vec<NonReaderEnd> = stuck.into_iter().map(|t| t.join().unwrap()).collect();
        eprintln!("{io:?}: {ends:?}");
        stop_server.shutdown();
        thread.join().unwrap().unwrap();
    }
}

/// A client that floods and never reads is held to its share, then closed once it stayed stuck for
/// the write deadline (5 s by default): what it holds goes back to the pool.
#[test]
fn a_client_that_never_reads_is_closed_after_the_write_deadline() {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let Some(server) = start(io) else { continue };
        eprintln!("--- backend {io:?}");
        let addr = server.local_addr();
        let stop_server = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let stop = Arc::new(AtomicBool::new(false));
        let end = non_reader(addr, usize::MAX, stop, Duration::from_secs(12)).join().unwrap();
        eprintln!("{io:?}: {end:?}");
        let closed_after = end.closed_after.expect("closed within 12 s");
        assert!(
            closed_after >= Duration::from_secs(4),
            "{io:?}: closed after {closed_after:?}, before the write deadline"
        );
        // The place it held is free again: a newcomer is served.
        let mut newcomer = TcpStream::connect(addr).unwrap();
        newcomer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert!(round_trip(&mut newcomer, b"after"), "{io:?}");
        stop_server.shutdown();
        thread.join().unwrap().unwrap();
    }
}

/// 300 clients each write 16 KB in one go, all before any reads back, into a server with a 16 MiB pool:
/// on io_uring its receive ring starts with 32 buffers and grows as they connect (2 per connection, up
/// to 1,024). Every client gets its bytes back, in order.
#[test]
fn hundreds_of_clients_sending_at_once_are_all_echoed() {
    const CLIENTS: usize = 300;
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let config = ServerConfig::default().addr("127.0.0.1:0".parse().unwrap()).pool_bytes(16 << 20).io(io);
        let server = match EchoServer::bind(config) {
            Err(ServerError::Io(error)) if error.kind() == ErrorKind::Unsupported => {
                eprintln!("--- backend {io:?}: SKIPPED, {error}");
                continue;
            }
            bound => bound.expect("bind"),
        };
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let payload = |c: usize| -> Vec<u8> { (0..16_000).map(|i| (i * 31 + c * 7) as u8).collect() };
        let started = Instant::now();
        for (c, client) in clients.iter_mut().enumerate() {
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            client.write_all(&payload(c)).unwrap();
        }
        for (c, client) in clients.iter_mut().enumerate() {
            let mut back = vec![0; 16_000];
            client.read_exact(&mut back).unwrap_or_else(|e| panic!("{io:?}: client {c}: {e}"));
            assert!(back == payload(c), "{io:?}: client {c}: echoed bytes differ");
        }
        eprintln!("{io:?}: {CLIENTS} x 16 KB echoed in {:?}", started.elapsed());
        drop(clients);
        stop.shutdown();
        let stats = thread.join().unwrap().unwrap();
        assert_eq!(stats.accepted, CLIENTS as u64, "{io:?}");
    }
}

/// The idle timeout is the echo server's own: with 600 ms, a connection through which nothing moves
/// is closed after about that long, while one that sends every 150 ms is still echoed. Zero and more
/// than a year are refused by name before anything is bound.
#[test]
fn an_idle_connection_is_closed_after_the_echo_servers_idle_timeout() {
    const IDLE: Duration = Duration::from_millis(600);
    let config = || ServerConfig::default().addr("127.0.0.1:0".parse().unwrap()).pool_bytes(1 << 20);
    for (idle_timeout, message) in [
        (Duration::ZERO, "invalid configuration: idle_timeout must be above 0 seconds, got 0"),
        (Duration::from_secs(400 * 24 * 3600), "invalid configuration: idle_timeout of 34560000 s exceeds"),
    ] {
        let error = EchoServer::with_idle_timeout(config(), idle_timeout).expect_err("refused");
        assert!(error.to_string().starts_with(message), "{error}");
    }
    for io in [IoBackend::Mio, IoBackend::Uring] {
        let server = match EchoServer::with_idle_timeout(config().io(io), IDLE) {
            Err(ServerError::Io(error)) if error.kind() == ErrorKind::Unsupported => {
                eprintln!("--- backend {io:?}: SKIPPED, {error}");
                continue;
            }
            bound => bound.expect("bind"),
        };
        eprintln!("--- backend {io:?}");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        let mut idler = TcpStream::connect(addr).unwrap();
        let mut talker = TcpStream::connect(addr).unwrap();
        talker.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let opened = Instant::now();
        let reader = std::thread::spawn(move || {
            idler.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut byte = [0; 1];
            let end = idler.read(&mut byte);
            (opened.elapsed(), end.map_err(|error| error.kind()))
        });
        // Traffic until the idler is closed, for twice the idle timeout at least: the talker is never
        // idle for long (the idler's read timeout bounds the wait).
        while opened.elapsed() < 2 * IDLE || !reader.is_finished() {
            assert!(round_trip(&mut talker, b"still here"), "{io:?}: the talker was not echoed");
            std::thread::sleep(Duration::from_millis(150));
        }
        let (closed_after, end) = reader.join().unwrap();
        eprintln!("{io:?}: the idler's read ended with {end:?} after {closed_after:?}");
        assert!(matches!(end, Ok(0) | Err(ErrorKind::ConnectionReset)), "{io:?}: {end:?}");
        assert!(
            (IDLE..Duration::from_secs(5)).contains(&closed_after),
            "{io:?}: closed after {closed_after:?}, idle timeout {IDLE:?}"
        );
        assert!(round_trip(&mut talker, b"still"), "{io:?}: the talker was closed");
        drop(talker);
        stop.shutdown();
        thread.join().unwrap().unwrap();
    }
}
