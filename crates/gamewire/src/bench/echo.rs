//! The echo scenario's client: N connections from one thread (mio), each in a closed loop: send a
//! fixed 64-byte message, wait for all 64 bytes back, repeat. Round trips are counted and their
//! latency recorded in an HdrHistogram.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::report::{ClientReport, LatencySummary};
use crate::clock::monotonic_micros;

/// Size of the message each connection bounces.
pub(crate) const MESSAGE_SIZE: usize = 64;

#[derive(Debug, PartialEq)]
enum State {
    Idle,
    Connecting,
    Running,
    Gone,
}

#[derive(Debug)]
struct Connection {
    stream: Option<TcpStream>,
    state: State,
    /// Bytes of the current message written so far.
    written: usize,
    /// Bytes of the current message echoed back so far.
    received: usize,
    /// When the current round trip started.
    started: u64,
}

/// What the client counts; reset when the warm-up ends.
struct Counters {
    round_trips: u64,
    errors: BTreeMap<String, u64>,
    disconnects: u64,
    connect_failures: u64,
    latency: Histogram<u64>,
}

impl Counters {
    fn new() -> Self {
        Counters {
            round_trips: 0,
            errors: BTreeMap::new(),
            disconnects: 0,
            connect_failures: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }

    fn error(&mut self, name: &str) {
        *self.errors.entry(name.to_string()).or_default() += 1;
    }
}

/// The message: recognisable bytes, so that an echo that mixes up data is caught.
fn message() -> [u8; MESSAGE_SIZE] {
    let mut message = [0u8; MESSAGE_SIZE];
    for (i, byte) in message.iter_mut().enumerate() {
        *byte = b'A' + (i % 26) as u8;
    }
    message
}

/// Runs `connections` closed-loop echo connections against `addr` for `warmup + duration` seconds,
/// connecting at `ramp` per second; returns what was measured after the warm-up.
pub(crate) fn run_client(
    addr: SocketAddr,
    connections: usize,
    warmup: f64,
    duration: f64,
    ramp: f64,
) -> anyhow::Result<ClientReport> {
    anyhow::ensure!(connections > 0, "--bots must be at least 1");
    let message = message();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut conns: Vec<Connection> = (0..connections)
        .map(|_| Connection { stream: None, state: State::Idle, written: 0, received: 0, started: 0 })
        .collect();
    let start = monotonic_micros();
    let warmup_end = start + (warmup * 1e6) as u64;
    let end = warmup_end + (duration * 1e6) as u64;
    let connect_at = |index: usize| start + (index as f64 / ramp * 1e6) as u64;
    let mut next_connect = 0;
    let mut counters = Counters::new();
    let mut measuring = false;
    let mut buffer = vec![0u8; 4096];

    loop {
        let now = monotonic_micros();
        if !measuring && now >= warmup_end {
            measuring = true;
            counters = Counters::new();
        }
        if now >= end {
            break;
        }
        while next_connect < connections && connect_at(next_connect) <= now {
            let conn = &mut conns[next_connect];
            match TcpStream::connect(addr) {
                Ok(mut stream) => {
                    poll.registry().register(
                        &mut stream,
                        Token(next_connect),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conn.stream = Some(stream);
                    conn.state = State::Connecting;
                }
                Err(_) => {
                    counters.connect_failures += 1;
                    conn.state = State::Gone;
                }
            }
            next_connect += 1;
        }
        let due = if next_connect < connections { connect_at(next_connect).min(end) } else { end };
        let wait = due.saturating_sub(now).clamp(100, 100_000);
        match poll.poll(&mut events, Some(Duration::from_micros(wait))) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if conn.state == State::Connecting && (event.is_writable() || event.is_error()) {
                finish_connect(conn, &message, &mut counters);
            }
            if conn.state == State::Running && event.is_writable() {
                write(conn, &message, &mut counters);
            }
            if conn.state == State::Running && (event.is_readable() || event.is_read_closed()) {
                read(conn, &message, &mut buffer, measuring, &mut counters);
            }
        }
    }
    let running = conns.iter().filter(|c| c.state == State::Running).count();
    drop(conns);
    Ok(ClientReport {
        bots: connections,
        connected: running,
        welcomed: running,
        duration_seconds: duration,
        frames_received: counters.round_trips,
        frames_per_second: counters.round_trips as f64 / duration.max(1e-9),
        error_total: counters.errors.values().sum(),
        errors: counters.errors,
        disconnects: counters.disconnects,
        connect_failures: counters.connect_failures,
        send_stalls: 0,
        latency_us: LatencySummary::from_histogram(&counters.latency),
        // Echo has no MOVE and no chaos.
        ..ClientReport::default()
    })
}

fn finish_connect(conn: &mut Connection, message: &[u8], counters: &mut Counters) {
    let Some(stream) = &conn.stream else { return };
    match stream.peer_addr() {
        Ok(_) => {
            let _ = stream.set_nodelay(true);
            conn.state = State::Running;
            start_round_trip(conn, message, counters);
        }
        Err(error) if error.kind() == io::ErrorKind::NotConnected => {
            // Still connecting, unless the socket holds an error.
            if let Ok(Some(_)) | Err(_) = stream.take_error() {
                counters.connect_failures += 1;
                conn.stream = None;
                conn.state = State::Gone;
            }
        }
        Err(_) => {
            counters.connect_failures += 1;
            conn.stream = None;
            conn.state = State::Gone;
        }
    }
}

fn start_round_trip(conn: &mut Connection, message: &[u8], counters: &mut Counters) {
    conn.started = monotonic_micros();
    conn.written = 0;
    conn.received = 0;
    write(conn, message, counters);
}

/// Writes what is left of the current message (edge-triggered: WRITABLE reports again when the
/// socket drains).
fn write(conn: &mut Connection, message: &[u8], counters: &mut Counters) {
    while conn.written < message.len() {
        let Some(stream) = &mut conn.stream else { return };
        match stream.write(&message[conn.written..]) {
            Ok(0) => return lose(conn, counters),
            Ok(n) => conn.written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return lose(conn, counters),
        }
    }
}

fn lose(conn: &mut Connection, counters: &mut Counters) {
    conn.stream = None;
    conn.state = State::Gone;
    counters.disconnects += 1;
}

/// Reads until WouldBlock; each complete echo ends a round trip and starts the next.
fn read(conn: &mut Connection, message: &[u8], buffer: &mut [u8], measuring: bool, counters: &mut Counters) {
    loop {
        let Some(stream) = &mut conn.stream else { return };
        let n = match stream.read(buffer) {
            Ok(0) => return lose(conn, counters),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return lose(conn, counters),
        };
        let expected = message.get(conn.received..conn.received + n);
        if expected != Some(&buffer[..n]) {
            // More than was sent, or other bytes than were sent: the echo is broken.
            counters.error(if expected.is_none() { "EXTRA_BYTES" } else { "MISMATCH" });
            conn.stream = None;
            conn.state = State::Gone;
            return;
        }
        conn.received += n;
        if conn.received == message.len() {
            if measuring {
                let rtt = monotonic_micros().saturating_sub(conn.started).max(1);
                let _ = counters.latency.record(rtt);
            }
            counters.round_trips += 1;
            start_round_trip(conn, message, counters);
            // The whole echo is in: the peer has nothing more to send until it gets the next
            // message, whose echo arrives after this read and so raises a fresh edge. Skipping the
            // read that would only say WouldBlock saves the client a syscall per round trip.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection echo server on a thread, enough to check the client's loop.
    #[test]
    fn round_trips_against_a_local_echo() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(2) {
                let mut stream = stream.unwrap();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n @ 1..) = stream.read(&mut buffer) {
                        if stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let report = run_client(addr, 2, 0.1, 0.4, 1000.0).unwrap();
        assert_eq!(report.welcomed, 2);
        assert!(report.frames_received > 10, "{report:?}");
        assert_eq!(report.latency_us.samples, report.frames_received);
        assert_eq!((report.error_total, report.disconnects, report.connect_failures), (0, 0, 0));
    }
}
