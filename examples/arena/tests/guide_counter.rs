//! The minimal game of `docs/build-your-game.md`, compiled and run here so the guide's snippets stay
//! true: a shared counter. A client joins with HELLO, sends ADD (16) with a `u32`, and every player
//! receives TOTAL (17) with the new sum.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gamewire_net::{IoBackend, Server, ServerConfig};
use gamewire_proto::{Direction, Encode, ErrorCode, FrameDecoder, PacketSet, RawFrame, encode_frame_to_vec};
use gamewire_world::{Game, Outbox, PlayerId, PlayerIds, Recipients, Verdict, error_message};

// ANCHOR: packets
/// ADD (client): a `u32` to add to the counter.
const ADD: u32 = 16;
/// TOTAL (server): the counter's new value, a `u64`; header `player_id` who added.
const TOTAL: u32 = 17;

/// The server's packets: WELCOME (empty payload), TOTAL, and the core's ERROR.
enum Out {
    Welcome,
    Total(u64),
    Error(ErrorCode),
}

impl Encode for Out {
    fn packet_id(&self) -> u32 {
        match self {
            Out::Welcome => 2, // WELCOME, the core's reserved id
            Out::Total(_) => TOTAL,
            Out::Error(_) => 10, // ERROR, the core's reserved id and format
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Out::Welcome => 0,
            Out::Total(_) => 8,
            Out::Error(code) => 4 + error_message(*code).len(),
        }
    }

    fn write_payload(&self, out: &mut [u8]) {
        match self {
            Out::Welcome => {}
            Out::Total(total) => out.copy_from_slice(&total.to_le_bytes()),
            Out::Error(code) => {
                out[..4].copy_from_slice(&code.code().to_le_bytes());
                out[4..].copy_from_slice(error_message(*code).as_bytes());
            }
        }
    }

    fn is_fatal(&self) -> bool {
        matches!(self, Out::Error(code) if code.is_fatal())
    }
}
// ANCHOR_END: packets

// ANCHOR: game
/// The counter game: every player adds to one shared total.
#[derive(Debug)]
struct Counter {
    ids: PlayerIds,
    total: u64,
    /// Every player, to broadcast to; kept, so a frame allocates nothing.
    players: Vec<PlayerId>,
}

/// Per connection: `None` until HELLO, then the player.
#[derive(Debug)]
struct CounterSession {
    player: Option<PlayerId>,
    opened_at: Instant,
    closed: bool,
}

impl Game for Counter {
    type Session = CounterSession;
    /// The embedding program can reset the counter.
    type Command = u64;

    fn client_packets(&self) -> PacketSet {
        // HELLO (1) and PING (8), plus ours; the core refuses any other id with UNKNOWN_PACKET.
        PacketSet::SESSION_FROM_CLIENT.with(ADD)
    }

    fn open(&mut self, now: Instant) -> CounterSession {
        CounterSession { player: None, opened_at: now, closed: false }
    }

    fn handle(
        &mut self,
        _now: Instant,
        _completed_at: Instant,
        session: &mut CounterSession,
        frame: RawFrame<'_>,
        out: &mut impl Outbox,
    ) -> Verdict {
        match (session.player, frame.packet_id()) {
            // HELLO: any payload will do here. WELCOME's header carries the new id.
            (None, 1) => {
                let Some(id) = self.ids.allocate() else {
                    return self.fail(session, ErrorCode::ServerFull, out);
                };
                session.player = Some(id);
                self.players.push(id);
                out.send(Recipients::Sender, id.get(), &Out::Welcome);
                Verdict::Continue
            }
            (Some(id), ADD) => {
                // Parse, don't trust: exactly four bytes, or the session ends with MALFORMED.
                let Ok(bytes) = <[u8; 4]>::try_from(frame.payload()) else {
                    return self.fail(session, ErrorCode::Malformed, out);
                };
                self.total += u64::from(u32::from_le_bytes(bytes));
                out.send(Recipients::Many(&self.players), id.get(), &Out::Total(self.total));
                Verdict::Continue
            }
            // PING before HELLO, ADD before HELLO, a second HELLO: out of order.
            _ => self.fail(session, ErrorCode::BadState, out),
        }
    }

    fn deadline(&self, session: &CounterSession) -> Option<Instant> {
        // HELLO within five seconds; no idle timeout after.
        (session.player.is_none() && !session.closed).then(|| session.opened_at + Duration::from_secs(5))
    }

    fn poll_timeout(&mut self, now: Instant, session: &mut CounterSession, out: &mut impl Outbox) -> Verdict {
        match self.deadline(session) {
            Some(deadline) if now >= deadline => self.fail(session, ErrorCode::Timeout, out),
            _ => Verdict::Continue,
        }
    }

    fn fail(&mut self, session: &mut CounterSession, code: ErrorCode, out: &mut impl Outbox) -> Verdict {
        if !session.closed {
            let header = session.player.map_or(0, PlayerId::get);
            out.send(Recipients::Sender, header, &Out::Error(code));
            self.close(session, out);
        }
        Verdict::Close
    }

    fn close(&mut self, session: &mut CounterSession, _out: &mut impl Outbox) {
        if let Some(id) = session.player.take() {
            self.ids.release(id);
            self.players.retain(|&player| player != id);
        }
        session.closed = true;
    }

    fn player(&self, session: &CounterSession) -> Option<PlayerId> {
        session.player
    }

    fn player_count(&self) -> usize {
        self.players.len()
    }

    fn command(&mut self, _now: Instant, reset_to: u64, out: &mut impl Outbox) {
        self.total = reset_to;
        out.send(Recipients::Many(&self.players), 0, &Out::Total(self.total));
    }
}
// ANCHOR_END: game

// ANCHOR: client
/// Reads frames until one with `packet_id` arrives; returns its header player id and payload.
fn wait_for(stream: &mut TcpStream, decoder: &mut FrameDecoder, packet_id: u32) -> (u32, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buffer = [0; 4096];
    loop {
        assert!(Instant::now() < deadline, "no frame {packet_id} in time");
        let n = stream.read(&mut buffer).expect("read");
        assert!(n > 0, "the server closed the connection");
        let mut input = &buffer[..n];
        while let Some(frame) = decoder.next_frame(&mut input).expect("valid frames") {
            if frame.packet_id() == packet_id {
                return (frame.player_id(), frame.payload().to_vec());
            }
        }
    }
}

/// A frame with our own id and payload, built by hand: header (id, player 0, length), payload.
fn add_frame(amount: u32) -> Vec<u8> {
    [ADD.to_le_bytes(), 0u32.to_le_bytes(), 4u32.to_le_bytes(), amount.to_le_bytes()].concat()
}

#[test]
fn two_players_share_one_counter() {
    let config =
        ServerConfig::default().addr("127.0.0.1:0".parse().unwrap()).io(IoBackend::Mio).pool_bytes(4 << 20);
    let game = Counter { ids: PlayerIds::new(100), total: 0, players: Vec::new() };
    let server = Server::with_game(config, game).expect("server starts");
    let (addr, handle, stop) = (server.local_addr(), server.handle(), server.shutdown_handle());
    let running = std::thread::spawn(move || server.run());

    // What a client's decoder accepts: the server's session frames and TOTAL.
    let server_packets = PacketSet::SESSION_FROM_SERVER.with(TOTAL);
    let mut players = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut decoder = FrameDecoder::with_packets(Direction::ToClient, server_packets, 1024);
        // HELLO is the core's id 1; its payload is the game's (empty here).
        stream.write_all(&[1u32.to_le_bytes(), 0u32.to_le_bytes(), 0u32.to_le_bytes()].concat()).unwrap();
        let (id, _) = wait_for(&mut stream, &mut decoder, 2);
        assert_ne!(id, 0, "WELCOME's header is the player id");
        players.push((stream, decoder, id));
    }

    players[0].0.write_all(&add_frame(40)).unwrap();
    for (stream, decoder, _) in &mut players {
        let (adder, total) = wait_for(stream, decoder, TOTAL);
        assert_eq!(u64::from_le_bytes(total.try_into().unwrap()), 40);
        assert_ne!(adder, 0);
    }
    // A command from the embedding program, from another thread.
    std::thread::spawn(move || handle.command(1000)).join().unwrap().unwrap();
    let (stream, decoder, _) = &mut players[1];
    let (_, total) = wait_for(stream, decoder, TOTAL);
    assert_eq!(u64::from_le_bytes(total.try_into().unwrap()), 1000);
    // Protocol v1's MOVE (3) is not this game's: ERROR(UNKNOWN_PACKET) from the core.
    stream.write_all(&[3u32.to_le_bytes(), 0u32.to_le_bytes(), 0u32.to_le_bytes()].concat()).unwrap();
    let (_, error) = wait_for(stream, decoder, 10);
    assert_eq!(error[..4], ErrorCode::UnknownPacket.code().to_le_bytes());

    stop.shutdown();
    running.join().unwrap().expect("clean stop");
}
// ANCHOR_END: client

/// Keeps `encode_frame_to_vec` in the guide honest: it writes the same bytes as `add_frame`.
#[test]
fn encode_frame_to_vec_writes_what_add_frame_builds_by_hand() {
    struct Add(u32);
    impl Encode for Add {
        fn packet_id(&self) -> u32 {
            ADD
        }
        fn payload_len(&self) -> usize {
            4
        }
        fn write_payload(&self, out: &mut [u8]) {
            out.copy_from_slice(&self.0.to_le_bytes());
        }
    }
    assert_eq!(encode_frame_to_vec(0, &Add(40)), add_frame(40));
}
