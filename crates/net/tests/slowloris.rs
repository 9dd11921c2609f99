//! Slowloris: a thousand connections that send nothing, or a byte now and then, are all closed by their
//! deadline (plus a second), and a real player who arrives meanwhile is served at once.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gamewire_proto::{Direction, ErrorCode, FrameDecoder, Packet, PacketKind, encode_frame_to_vec};
use util::{TestServer, base_rules, each_backend};

/// Attackers of each kind.
const SILENT: usize = 500;
const TRICKLING: usize = 500;
/// The HELLO deadline and the partial-frame deadline of the test server.
const DEADLINE: Duration = Duration::from_secs(2);

/// Reads what the server sent to `stream` without blocking: `Some(bytes)` once it closed the
/// connection (end of stream or reset), `None` while it is open.
fn closed_with(stream: &mut TcpStream) -> Option<Vec<u8>> {
    stream.set_nonblocking(true).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(received),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return None,
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return Some(received),
            Err(error) => panic!("reading an attacker's socket: {error}"),
        }
    }
}

/// The ERROR code of the only frame in `bytes`.
fn only_error(bytes: &[u8]) -> Option<u32> {
    let mut decoder = FrameDecoder::new(Direction::ToClient, 65536);
    let mut input = bytes;
    let frame = decoder.next_frame(&mut input).ok()??;
    if !input.is_empty() || frame.packet_id() != PacketKind::Error as u32 {
        return None;
    }
    match frame.packet().ok()? {
        Packet::Error { code, .. } => Some(code),
        _ => None,
    }
}

#[test]
fn a_thousand_idle_or_trickling_connections_are_closed_by_their_deadline_and_a_player_is_served() {
    each_backend(|mut config| {
        let mut rules = base_rules();
        rules.hello_timeout = DEADLINE;
        config.partial_frame_timeout = DEADLINE;
        config.max_connections = SILENT + TRICKLING + 10;
        rules.max_players = config.max_connections;
        let server = TestServer::start_with(config, rules);
        let started = Instant::now();
        let mut silent: Vec<TcpStream> =
            (0..SILENT).map(|_| TcpStream::connect(server.addr()).expect("connect")).collect();
        let mut trickling: Vec<TcpStream> =
            (0..TRICKLING).map(|_| TcpStream::connect(server.addr()).expect("connect")).collect();
        let connected = started.elapsed();
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "slowloris" });
        // The first byte of a HELLO from each trickler: its partial-frame clock starts now.
        for stream in &mut trickling {
            stream.write_all(&hello[..1]).unwrap();
        }

        // A real player arrives in the middle of it and is served before any attacker is cut off.
        let mut player = server.join("player");
        assert!(player.sync().is_empty());
        let served = started.elapsed();
        assert!(
            served < DEADLINE,
            "the player was served only after {served:?}, when the attackers' deadline had come"
        );

        // One more byte every 400 ms keeps each trickler's frame unfinished, never complete.
        let cut_off_by = started + connected + DEADLINE + Duration::from_secs(1);
        let mut next = 1;
        while Instant::now() < cut_off_by {
            std::thread::sleep(Duration::from_millis(400));
            if next < hello.len() - 1 {
                for stream in &mut trickling {
                    let _ = stream.write_all(&hello[next..next + 1]); // refused once closed: fine
                }
                next += 1;
            }
        }
        for (kind, streams) in [("silent", &mut silent), ("trickling", &mut trickling)] {
            for (i, stream) in streams.iter_mut().enumerate() {
                let bytes = closed_with(stream).unwrap_or_else(|| {
                    panic!(
                        "{kind} attacker {i} still open {:?} after its deadline",
                        DEADLINE + Duration::from_secs(1)
                    )
                });
                // A reset may destroy the ERROR in flight; what did arrive is exactly ERROR(TIMEOUT).
                if !bytes.is_empty() {
                    assert_eq!(only_error(&bytes), Some(ErrorCode::Timeout.code()), "{kind} attacker {i}");
                }
            }
        }
        // The player is still served, and saw none of it.
        assert!(player.sync().is_empty());
        player.assert_served();
    });
}
