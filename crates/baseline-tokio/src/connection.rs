//! One client connection: a task reading frames into the world's channel, a task writing its channel of
//! frames to the socket, and the closing rules that make a fatal ERROR the last thing the client reads.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gamewire_proto::ErrorCode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::codec::{BytesCodec, FramedRead, FramedWrite};

use crate::cli::ConnectionSettings;
use crate::codec::{CodecError, FrameCodec};
use crate::world_task::{Command, ConnId};

/// Frames the writer takes from its channel at once: they are copied into one write buffer and go out
/// in one `write` when the socket takes them.
const WRITE_BATCH: usize = 256;
/// After a fatal ERROR is flushed and the write side shut, how long to keep reading (and dropping)
/// what the peer still sends while waiting for it to close. Closing a socket with unread bytes sends
/// a RST, which can destroy the ERROR before the client reads it. Same linger as gamewire.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How the writer task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriterEnd {
    /// The world closed the channel; everything queued was written and the write side shut down.
    Finished,
    /// The socket failed, or a write took longer than the write deadline.
    Failed,
}

/// How reading ended.
#[derive(Clone, Copy, Debug)]
enum ReadEnd {
    /// End of stream or a read error.
    PeerClosed,
    /// The client broke the protocol in a way the codec or the partial-frame timer sees.
    Violation(ErrorCode),
    /// The writer ended first (the world closed the session, or the socket failed).
    WriterEnded(WriterEnd),
    /// The world task is gone: the server is shutting down.
    ServerGone,
}

/// Serves one client from accept to close. `_permit` is its slot under `--max-connections`, held until
/// the socket is dropped.
pub(crate) async fn serve(
    stream: TcpStream,
    conn: ConnId,
    world: mpsc::Sender<Command>,
    settings: ConnectionSettings,
    _permit: OwnedSemaphorePermit,
) {
    let (read_half, write_half) = stream.into_split();
    let (frames_tx, frames_rx) = mpsc::channel(settings.send_queue);
    if world.send(Command::Connected { conn, frames: frames_tx }).await.is_err() {
        // Accepted while the server was stopping: the world is gone.
        return;
    }
    // A task of its own, so that a client that does not read never stalls reading it (and the other
    // way round), and writes proceed on another worker thread in parallel with reads.
    let mut writer = tokio::spawn(write_frames(write_half, frames_rx, settings.write_deadline));
    let mut frames = FramedRead::new(read_half, FrameCodec::new(settings.max_payload));

    let end = read_frames(&mut frames, conn, &world, &mut writer, settings.partial_frame_timeout).await;
    let writer_end = match end {
        ReadEnd::PeerClosed => {
            let _ = world.send(Command::Closed { conn }).await;
            // The world closed the channel: the writer sends what was queued (the peer may have only
            // half-closed) and ends, within its write deadline.
            finish(writer).await;
            return;
        }
        ReadEnd::Violation(code) => {
            // The world queues the ERROR behind what is already queued and closes the channel.
            let _ = world.send(Command::Fail { conn, code }).await;
            finish(writer).await
        }
        ReadEnd::WriterEnded(end) => end,
        ReadEnd::ServerGone => finish(writer).await,
    };
    match writer_end {
        WriterEnd::Finished => linger(frames.into_inner()).await,
        // The world may still think the client is there: make its player leave.
        WriterEnd::Failed => {
            let _ = world.send(Command::Closed { conn }).await;
        }
    }
}

/// Reads frames and passes them to the world until the connection must stop reading.
async fn read_frames(
    frames: &mut FramedRead<OwnedReadHalf, FrameCodec>,
    conn: ConnId,
    world: &mpsc::Sender<Command>,
    writer: &mut JoinHandle<WriterEnd>,
    partial_frame_timeout: Duration,
) -> ReadEnd {
    // One timer for the partial-frame deadline, re-armed only when it fires, rather than one per
    // read: it checks since when the codec has held an unfinished frame and sleeps until that frame's
    // deadline, or a whole period if there is none.
    let partial_check = sleep(partial_frame_timeout);
    tokio::pin!(partial_check);
    loop {
        tokio::select! {
            item = frames.next() => match item {
                Some(Ok(frame)) => {
                    // Waits while the world's channel is full: backpressure reaches the client
                    // through TCP instead of growing a queue.
                    if world.send(Command::Frame { conn, frame }).await.is_err() {
                        return ReadEnd::ServerGone;
                    }
                }
                Some(Err(CodecError::Protocol(error))) => return ReadEnd::Violation(error.error_code()),
                Some(Err(CodecError::Io(_))) | None => return ReadEnd::PeerClosed,
            },
            () = &mut partial_check => {
                let now = Instant::now();
                match frames.decoder().partial_since() {
                    Some(since) if now >= since + partial_frame_timeout => {
                        return ReadEnd::Violation(ErrorCode::Timeout);
                    }
                    Some(since) => partial_check.as_mut().reset(since + partial_frame_timeout),
                    None => partial_check.as_mut().reset(now + partial_frame_timeout),
                }
            }
            end = &mut *writer => return ReadEnd::WriterEnded(end.unwrap_or(WriterEnd::Failed)),
        }
    }
}

/// Waits for the writer to end (it does once the world has closed its channel, within the deadline).
async fn finish(writer: JoinHandle<WriterEnd>) -> WriterEnd {
    writer.await.unwrap_or(WriterEnd::Failed)
}

/// Writes the frames the world queues, batching what is ready into one write, until the world closes
/// the channel; then flushes and shuts the write side down so the client sees end of stream right
/// after the last frame.
async fn write_frames(
    half: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    write_deadline: Duration,
) -> WriterEnd {
    let mut sink = FramedWrite::new(half, BytesCodec::new());
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let write = async {
            for frame in batch.drain(..) {
                sink.feed(frame).await?;
            }
            // `BytesCodec` encodes both `Bytes` and `BytesMut`: name the item type.
            SinkExt::<Bytes>::flush(&mut sink).await
        };
        // A client that stops reading fills its socket buffer and stalls the write: after the deadline
        // it is dropped (and its channel, now unread, fills and marks it a slow consumer meanwhile).
        match timeout(write_deadline, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return WriterEnd::Failed,
        }
    }
    match timeout(write_deadline, SinkExt::<Bytes>::close(&mut sink)).await {
        Ok(Ok(())) => WriterEnd::Finished,
        Ok(Err(_)) | Err(_) => WriterEnd::Failed,
    }
}

/// Reads and drops whatever the peer still sends until it closes or [`CLOSE_LINGER`] passes.
async fn linger(mut half: OwnedReadHalf) {
    let mut sink = [0u8; 1024];
    let _ = timeout(CLOSE_LINGER, async {
        while let Ok(n) = half.read(&mut sink).await
            && n > 0
        {}
    })
    .await;
}
