//! `--echo`: raw byte echo, a thread per connection, to measure the I/O architecture without a world.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::server::{THREAD_STACK, configure};

/// Size of the one buffer each connection reads into.
const BUFFER: usize = 4096;

/// Accepts connections forever; each thread reads what arrives and writes it back with `write_all`.
/// Over `max_connections` a connection is closed at once (echo has no protocol to say why).
pub(crate) fn accept_loop(listener: TcpListener, max_connections: usize, write_timeout: Duration) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let admitted = open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max_connections).then_some(n + 1))
            .is_ok();
        if !admitted {
            continue;
        }
        // No read timeout: an echo connection has no deadline to enforce.
        if configure(&stream, None, write_timeout).is_err() {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let counter = Arc::clone(&open);
        let spawned =
            std::thread::Builder::new().name("echo".into()).stack_size(THREAD_STACK).spawn(move || {
                let _ = echo(&stream);
                counter.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(error) = spawned {
            // The closure never ran, so its decrement did not either.
            open.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%error, "cannot spawn an echo thread");
        }
    }
}

/// Echoes until the peer closes or a write fails (the write timeout cuts off a client that stops
/// reading).
fn echo(mut stream: &std::net::TcpStream) -> io::Result<()> {
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        stream.write_all(&buffer[..n])?;
    }
}
