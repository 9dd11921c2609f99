//! Echo mode: raw bytes come back unchanged, in order, per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gamewire_net::{Server, ServerConfig};

#[test]
fn echo_mode_returns_every_byte_in_order() {
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        pool_bytes: 1 << 20,
        echo: true,
        ..ServerConfig::default()
    };
    let server = Server::bind(config).expect("bind");
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
                assert!(received == sent, "client {seed}: echoed bytes differ");
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
    stop.shutdown();
    let stats = thread.join().unwrap().unwrap();
    assert_eq!(stats.accepted, 4);
}
