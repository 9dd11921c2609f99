//! Steady-state MOVE relaying allocates nothing on the server's thread: counted by a global allocator.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gamewire_net::{IoBackend, Server, ServerConfig, ServerError};
use gamewire_pool::alloc_counter::{self, CountingAllocator};
use gamewire_proto::{Direction, FrameDecoder, Move, Packet, PacketKind, encode_frame_to_vec};
use gamewire_world::{Rate, RateLimits};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

struct Client {
    stream: TcpStream,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
    id: u32,
    position: (f32, f32),
    entered: usize,
}

impl Client {
    fn connect(addr: std::net::SocketAddr, name: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Client {
            stream,
            decoder: FrameDecoder::new(Direction::ToClient, 65536),
            buffer: vec![0; 64 << 10],
            id: 0,
            position: (500.0, 500.0),
            entered: 0,
        };
        client.stream.write_all(&encode_frame_to_vec(0, &Packet::Hello { name })).unwrap();
        client.id = client.wait_for(1, |kind, _| kind == PacketKind::Welcome)[0];
        client
    }

    /// Reads until `count` frames matching `wanted` arrived; returns their header player ids. Counts
    /// every ENTER on the way, whatever `wanted` is.
    fn wait_for(&mut self, count: usize, wanted: impl Fn(PacketKind, &[u8]) -> bool) -> Vec<u32> {
        let mut matched = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matched.len() < count {
            assert!(Instant::now() < deadline, "timed out waiting for frames");
            let n = self.stream.read(&mut self.buffer).expect("read");
            assert!(n > 0, "server closed the connection");
            let mut input = &self.buffer[..n];
            while let Some(frame) = self.decoder.next_frame(&mut input).expect("valid server frames") {
                let kind = PacketKind::from_id(frame.packet_id()).unwrap();
                assert_ne!(kind, PacketKind::Error, "unexpected ERROR: {:?}", frame.packet());
                if kind == PacketKind::Enter {
                    self.entered += 1;
                }
                if wanted(kind, frame.payload()) {
                    matched.push(frame.player_id());
                }
            }
        }
        matched
    }

    /// Reads until ENTER frames about `total` players have arrived since connecting.
    fn wait_for_enters(&mut self, total: usize) {
        let missing = total - self.entered.min(total);
        if missing > 0 {
            self.wait_for(missing, |kind, _| kind == PacketKind::Enter);
        }
        assert_eq!(self.entered, total);
    }

    fn send_move(&mut self, step: u32) {
        // A small legal step around the spawn point keeps everyone in everyone's view.
        let angle = (step as f32) * 0.7 + self.id as f32;
        self.position = (500.0 + 5.0 * angle.cos(), 500.0 + 5.0 * angle.sin());
        let frame = encode_frame_to_vec(
            0,
            &Packet::Move(&Move::new(self.position.0, 0.0, self.position.1, 1.0, step)),
        );
        self.stream.write_all(&frame).unwrap();
    }
}

/// One round: every client moves once, then every client reads the MOVE of every other client.
fn round(clients: &mut [Client], step: u32) {
    for client in clients.iter_mut() {
        client.send_move(step);
    }
    let others = clients.len() - 1;
    for client in clients.iter_mut() {
        let movers = client.wait_for(others, |kind, _| kind == PacketKind::Move);
        assert!(!movers.contains(&client.id), "a mover never receives its own accepted MOVE");
    }
}

#[test]
fn relaying_moves_in_steady_state_allocates_nothing_on_the_server() {
    for io in [IoBackend::Mio, IoBackend::Uring] {
        eprintln!("--- backend {io:?}, 1 worker");
        relay_and_count_allocations(io, 1);
    }
    // With several workers, every thread of the server counts: the workers and the world thread.
    // This thread (the clients) opts out; this test is alone in its binary, so nothing else runs.
    alloc_counter::exclude_this_thread();
    alloc_counter::count_all_threads();
    for io in [IoBackend::Mio, IoBackend::Uring] {
        eprintln!("--- backend {io:?}, 2 workers");
        relay_and_count_allocations(io, 2);
    }
}

fn relay_and_count_allocations(io: IoBackend, workers: usize) {
    let limits = RateLimits { moves: Rate::new(10_000.0, 10_000.0), ..RateLimits::default() };
    let config = ServerConfig::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .pool_bytes(4 << 20)
        .io(io)
        .workers(workers);
    let rules = gamewire_world::Config {
        spawn: Some((500.0, 500.0)),
        max_speed: 1000.0,
        limits,
        ..gamewire_world::Config::default()
    };
    let server = match Server::bind(config, rules) {
        Err(ServerError::Io(error)) if error.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!("--- backend {io:?}: SKIPPED, {error}");
            return;
        }
        bound => bound.expect("bind"),
    };
    let addr = server.local_addr();
    let stop = server.shutdown_handle();
    let server_thread = std::thread::spawn(move || {
        alloc_counter::count_this_thread();
        server.run()
    });

    const CLIENTS: usize = 16;
    let mut clients: Vec<Client> = (0..CLIENTS).map(|i| Client::connect(addr, &format!("p{i}"))).collect();
    // Everyone spawned at one point, so everyone sees everyone: ENTERs about every other player.
    for client in &mut clients {
        client.wait_for_enters(CLIENTS - 1);
    }

    // Warm-up: queues, scratch lists and pool chunks reach their steady-state sizes.
    for step in 0..200 {
        round(&mut clients, step);
    }
    let before = alloc_counter::allocations();
    const ROUNDS: u32 = 300;
    for step in 200..200 + ROUNDS {
        round(&mut clients, step);
    }
    let allocations = alloc_counter::allocations() - before;
    let relayed = ROUNDS as usize * CLIENTS * (CLIENTS - 1);

    stop.shutdown();
    drop(clients);
    server_thread.join().expect("server thread").expect("server run");
    assert_eq!(
        allocations, 0,
        "{io:?}: {allocations} heap allocations on the server thread while relaying {relayed} MOVEs"
    );
}
