//! `--echo`: a raw byte echo server, the benchmark's floor for what tokio costs without any game.

use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::server::Signals;

/// Echoes every connection's bytes back until SIGINT or SIGTERM.
pub(crate) async fn run(listener: TcpListener, mut signals: Signals) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(echo(stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            () = signals.recv() => break,
        }
    }
    // Echo clients hold no state worth draining: stop at once (the runtime drops the tasks).
    tracing::info!(connections = connections.len(), "stopped");
}

/// The echo of tokio's own examples: copy the read half into the write half until end of stream.
async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
        // Pass the client's end of stream on, so it sees everything echoed and then EOF.
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
    }
}
