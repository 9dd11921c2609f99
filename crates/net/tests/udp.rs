//! The UDP transport over real sockets on 127.0.0.1, beside TCP in one world: the handshake and
//! WELCOME, UDP and TCP players seeing each other (ENTER, MOVE relayed both ways, CHAT), and strangers'
//! datagrams changing nothing; draining for shutdown ends UDP players and refuses new ones.
// The UDP transport is served on Linux only for now (`ServerConfig::validate` refuses it elsewhere).
#![cfg(all(target_os = "linux", not(gamewire_udp_stub)))]

mod util;

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gamewire_net::{IoBackend, RunStats, Server, ServerConfig, ServerError, ShutdownHandle};
use gamewire_proto::{ErrorCode, Move, Packet, PacketKind, encode_frame_to_vec};
use gamewire_udp::client::{Channel, Client, Close, Config, Event, State};
use gamewire_udp::datagram::MAX_DATAGRAM;
use util::{Client as TcpClient, SPAWN, WAIT, base_config, base_rules};

/// A v1 server serving TCP and UDP on 127.0.0.1, on its own thread; stopped at once when dropped.
struct UdpServer {
    tcp: SocketAddr,
    udp: SocketAddr,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<Result<RunStats, ServerError>>>,
}

impl UdpServer {
    fn start(workers: usize) -> UdpServer {
        UdpServer::start_with(base_config().workers(workers))
    }

    /// [`UdpServer::start`] with `config` (mio, UDP on 127.0.0.1 added).
    fn start_with(config: ServerConfig) -> UdpServer {
        let config = config.io(IoBackend::Mio).udp_addr(Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        let server = Server::bind(config, base_rules()).expect("bind");
        let udp = server.udp_local_addr().expect("a UDP address");
        assert_ne!(udp.port(), 0);
        let (tcp, stop) = (server.local_addr(), server.shutdown_handle());
        let thread = std::thread::spawn(move || server.run());
        UdpServer { tcp, udp, stop, thread: Some(thread) }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        // Two requests: stop without draining.
        self.stop.shutdown();
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() && !std::thread::panicking() {
                thread.join().expect("server thread").expect("server run");
            }
        }
    }
}

/// A frame a UDP player received.
#[derive(Debug)]
struct Got {
    kind: PacketKind,
    player_id: u32,
    payload: Vec<u8>,
    channel: Channel,
}

/// A player over UDP: the sans-IO client over a blocking std socket with short read timeouts.
struct UdpPlayer {
    socket: UdpSocket,
    client: Client,
    got: VecDeque<Got>,
    id: u32,
}

impl UdpPlayer {
    /// Connects with HELLO `name` and waits for the WELCOME.
    fn join(server: SocketAddr, name: &str) -> UdpPlayer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
        socket.set_read_timeout(Some(Duration::from_millis(5))).expect("read timeout");
        let hello = encode_frame_to_vec(0, &Packet::Hello { name });
        let client = Client::new(server, &hello, Config::default(), Instant::now()).expect("client");
        let mut player = UdpPlayer { socket, client, got: VecDeque::new(), id: 0 };
        let welcome = player.recv_until(|got| got.kind == PacketKind::Welcome);
        assert_eq!(welcome.channel, Channel::Reliable);
        player.id = welcome.player_id;
        assert_ne!(player.id, 0);
        player
    }

    /// Sends what is due, waits a little for one datagram and handles it.
    fn pump(&mut self) {
        let now = Instant::now();
        if self.client.poll_timeout().is_some_and(|at| at <= now) {
            let _ = self.client.handle_timeout(now);
        }
        let mut buf = [0; MAX_DATAGRAM];
        while let Some(len) = self.client.poll_transmit(Instant::now(), &mut buf) {
            self.socket.send_to(&buf[..len], self.client.server()).expect("send");
        }
        let mut datagram = [0; 2048];
        if let Ok((len, from)) = self.socket.recv_from(&mut datagram) {
            let got = &mut self.got;
            self.client.receive(Instant::now(), from, &datagram[..len], |event| {
                if let Event::Frame { frame, channel } = event {
                    got.push_back(Got {
                        kind: PacketKind::from_id(frame.packet_id()).expect("a known packet"),
                        player_id: frame.player_id(),
                        payload: frame.payload().to_vec(),
                        channel,
                    });
                }
            });
        }
    }

    /// The first frame `wanted` accepts (those before it are dropped), within [`WAIT`].
    fn recv_until(&mut self, mut wanted: impl FnMut(&Got) -> bool) -> Got {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            while let Some(got) = self.got.pop_front() {
                if wanted(&got) {
                    return got;
                }
            }
            self.pump();
        }
        panic!("no wanted frame within {WAIT:?}; state {:?}", self.client.state());
    }

    fn send(&mut self, packet: &Packet<'_>) {
        let frame = encode_frame_to_vec(self.id, packet);
        let channel = if matches!(packet, Packet::Move(_)) { Channel::Unreliable } else { Channel::Reliable };
        self.client.send(&frame, channel).expect("queued");
        self.pump();
    }
}

fn payload_of(packet: &Packet<'_>) -> Vec<u8> {
    encode_frame_to_vec(0, packet)[12..].to_vec()
}

#[test]
fn a_udp_client_is_welcomed() {
    for workers in [1, 2] {
        let server = UdpServer::start(workers);
        let player = UdpPlayer::join(server.udp, "ada");
        assert!(player.client.state().is_connected());
    }
}

#[test]
fn udp_and_tcp_players_see_each_other() {
    for workers in [1, 2] {
        eprintln!("--- {workers} worker(s)");
        let server = UdpServer::start(workers);
        let mut alice = TcpClient::connect(server.tcp, "alice");
        let (alice_id, _) = alice.hello("alice");
        let mut bob = UdpPlayer::join(server.udp, "bob");
        // Both spawn at the same point: each sees the other come in.
        let enter = bob.recv_until(|got| got.kind == PacketKind::Enter);
        assert_eq!((enter.player_id, enter.channel), (alice_id, Channel::Reliable));
        alice.recv_until(|frame| frame.is(PacketKind::Enter, bob.id));

        // MOVE, UDP to TCP: sent unreliable, relayed to the TCP player.
        let step = Move::new(SPAWN.0 + 1.0, 0.0, SPAWN.1, 0.0, 1);
        bob.send(&Packet::Move(&step));
        let relayed = alice.recv_until(|frame| frame.is(PacketKind::Move, bob.id));
        assert_eq!(relayed.payload, payload_of(&Packet::Move(&step)));

        // MOVE, TCP to UDP: arrives on the unreliable channel.
        let step = Move::new(SPAWN.0, 0.0, SPAWN.1 + 1.0, 0.0, 1);
        alice.send_move(step);
        let relayed = bob.recv_until(|got| got.kind == PacketKind::Move && got.player_id == alice_id);
        assert_eq!(relayed.channel, Channel::Unreliable);
        assert_eq!(relayed.payload, payload_of(&Packet::Move(&step)));

        // CHAT both ways, reliable over UDP.
        bob.send(&Packet::Chat { text: "hi from udp" });
        let chat = alice.recv_until(|frame| frame.is(PacketKind::Chat, bob.id));
        assert_eq!(chat.as_chat(), "hi from udp");
        alice.send_chat("hi from tcp");
        let chat = bob.recv_until(|got| got.kind == PacketKind::Chat && got.player_id == alice_id);
        assert_eq!(chat.channel, Channel::Reliable);
        assert_eq!(chat.payload, payload_of(&Packet::Chat { text: "hi from tcp" }));
    }
}

#[test]
fn garbage_and_forged_tokens_get_nothing_and_others_carry_on() {
    for workers in [1, 2] {
        let server = UdpServer::start(workers);
        let mut bob = UdpPlayer::join(server.udp, "bob");
        let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
        stranger.set_read_timeout(Some(Duration::from_millis(300))).expect("read timeout");
        // Garbage, an empty datagram, and a DATA-looking datagram with a made-up token.
        let mut forged = [0u8; 64];
        forged[0] = 0x13; // not a version the server speaks
        for datagram in [&b"\xde\xad\xbe\xef garbage"[..], &[], &forged[..], &[1, 3, 0xff, 0xff, 0xff, 0xff]]
        {
            stranger.send_to(datagram, server.udp).expect("send");
        }
        let mut buf = [0; 2048];
        assert!(stranger.recv_from(&mut buf).is_err(), "a stranger got an answer");
        // The session goes on: a CHAT of bob's reaches a newcomer, who joins fine.
        let mut carol = UdpPlayer::join(server.udp, "carol");
        bob.send(&Packet::Chat { text: "still here" });
        let chat = carol.recv_until(|got| got.kind == PacketKind::Chat && got.player_id == bob.id);
        assert_eq!(chat.payload, payload_of(&Packet::Chat { text: "still here" }));
    }
}

#[test]
fn draining_ends_udp_players_and_refuses_new_handshakes_with_shutting_down() {
    for workers in [1, 2] {
        // A TCP player that does not close keeps the drain going for the linger: long enough here
        // for a handshake on a busy machine.
        let linger = Duration::from_secs(10);
        let server =
            UdpServer::start_with(base_config().workers(workers).close_linger(linger).drain_timeout(linger));
        let mut alice = TcpClient::connect(server.tcp, "alice");
        alice.hello("alice");
        let mut bob = UdpPlayer::join(server.udp, "bob");
        server.stop.shutdown();
        // The player already in gets SHUTTING_DOWN, as over TCP.
        let closed = bob.closed_within(WAIT);
        assert_eq!(
            closed,
            Close::Disconnected { code: ErrorCode::ShuttingDown.code() },
            "{workers} worker(s)"
        );
        // A handshake that completes while the server drains is refused with the reason, not welcomed.
        let hello = encode_frame_to_vec(0, &Packet::Hello { name: "late" });
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
        socket.set_read_timeout(Some(Duration::from_millis(5))).expect("read timeout");
        let client = Client::new(server.udp, &hello, Config::default(), Instant::now()).expect("client");
        let mut carol = UdpPlayer { socket, client, got: VecDeque::new(), id: 0 };
        let closed = carol.closed_within(WAIT);
        assert_eq!(
            closed,
            Close::Disconnected { code: ErrorCode::ShuttingDown.code() },
            "{workers} worker(s)"
        );
        assert!(carol.got.iter().all(|got| got.kind != PacketKind::Welcome), "welcomed while draining");
    }
}

impl UdpPlayer {
    /// Pumps until the client is closed, within `within`, and says why.
    fn closed_within(&mut self, within: Duration) -> Close {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let State::Closed(close) = self.client.state() {
                return close;
            }
            self.pump();
        }
        panic!("not closed within {within:?}: {:?}", self.client.state());
    }
}
