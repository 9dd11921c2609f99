//! At steady state a client allocates nothing per frame: sending reliable and unreliable frames,
//! resending, receiving in and out of order, acknowledging, over a link that loses, duplicates and
//! reorders. Only the client's own calls are counted (the test server allocates freely).

mod client_sim;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client_sim::{Impairment, Link, PING_FRAME_MAX, TestServer, ping, ping_number, step, step_time};
use gamewire_pool::alloc_counter::{self, CountingAllocator, allocations};
use gamewire_proto::{Packet, encode_frame_to_vec};
use gamewire_udp::client::{Channel, Client, Config, Event};
use gamewire_udp::datagram::MAX_DATAGRAM;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const TICK: Duration = Duration::from_millis(5);

/// What the client's side of the test checks, in counters only (the checks run inside `receive`,
/// where an allocation would count against the client).
#[derive(Default)]
struct Checks {
    next_echo: u64,
    last_step: u32,
    steps: u64,
}

#[test]
fn a_client_at_steady_state_allocates_nothing() {
    // Counted on this thread, but summed only around the client's own calls (`client_call!`).
    alloc_counter::count_this_thread();
    let server_addr: SocketAddr = "10.0.0.1:7777".parse().unwrap();
    let client_addr: SocketAddr = "10.0.0.2:50000".parse().unwrap();
    let mut now = Instant::now();
    let hello = encode_frame_to_vec(0, &Packet::Hello { name: "bot" });
    let mut client = Client::new(server_addr, &hello, Config::default(), now).unwrap();
    let mut server = TestServer::new(server_addr, now);
    // A pattern rather than draws, so that the worst case (a loss, a late datagram, a duplicate)
    // comes round within the warm-up and the buffers reach their high-water mark there.
    let mut link = Link::new(
        Impairment::Periodic {
            lose_every: 9,
            duplicate_every: 13,
            late_every: 7,
            delay: Duration::from_millis(15),
            late: Duration::from_millis(12),
        },
        0,
    );
    let mut checks = Checks::default();
    let mut next_ping = 0u64;
    let mut next_step = 0u32;
    let mut counted = 0u64;
    let mut measuring;
    let mut buf = [0; MAX_DATAGRAM];

    // Runs `call`, counting its allocations once measuring.
    macro_rules! client_call {
        ($call:expr) => {{
            let before = allocations();
            let result = $call;
            if measuring {
                counted += allocations() - before;
            }
            result
        }};
    }

    let warm_up = 3_000; // 15 s
    let ticks = warm_up + 8_000; // then 40 s
    for tick in 0..ticks {
        measuring = tick >= warm_up;
        now += TICK;
        if client.state().is_connected() {
            let mut frame = [0; PING_FRAME_MAX];
            if tick % 2 == 0 {
                let frame = ping(next_ping, (next_ping % 57) as usize, &mut frame);
                client_call!(client.send(frame, Channel::Reliable)).unwrap();
                next_ping += 1;
            }
            let mut moved = [0; 32];
            next_step += 1;
            client_call!(client.send(step(next_step, &mut moved), Channel::Unreliable)).unwrap();
        }
        if client.poll_timeout().is_some_and(|at| at <= now) {
            assert_eq!(client_call!(client.handle_timeout(now)), None);
        }
        while let Some(len) = client_call!(client.poll_transmit(now, &mut buf)) {
            link.send(now, client_addr, server_addr, &buf[..len]);
        }
        while let Some((to, bytes)) = server.poll_transmit(now) {
            link.send(now, server_addr, to, &bytes);
        }
        while let Some(datagram) = link.pop_due(now) {
            if datagram.to == server_addr {
                server.receive(now, datagram.from, &datagram.bytes);
                continue;
            }
            let checks = &mut checks;
            client_call!(client.receive(now, datagram.from, &datagram.bytes, |event| match event {
                Event::Frame { frame, channel: Channel::Reliable } => {
                    // The echoes: the HELLO, then the PINGs in order.
                    if let Some(n) = ping_number(frame).filter(|_| frame.packet_id() == 8) {
                        assert_eq!(n, checks.next_echo);
                        checks.next_echo += 1;
                    }
                }
                Event::Frame { frame, channel: Channel::Unreliable } => {
                    let time = step_time(frame).unwrap();
                    assert!(time > checks.last_step);
                    checks.last_step = time;
                    checks.steps += 1;
                }
                _ => {}
            }));
        }
    }

    assert_eq!(counted, 0, "allocations by the client at steady state");
    // The traffic did flow, lossy and reordered, meanwhile.
    assert!(
        checks.next_echo > 4_000 && checks.steps > 4_000,
        "{} echoes, {} moves",
        checks.next_echo,
        checks.steps
    );
    let stats = client.stats();
    assert!(stats.reliable_resends > 0 && stats.stale_unreliable > 0 && stats.duplicates > 0, "{stats:?}");
}
