//! Reads one frame at a time from a blocking socket with a read timeout, keeping partial frames.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Instant;

use gamewire_proto::{ErrorCode, HEADER_LEN, PacketKind};

/// What one call to [`FrameReader::poll`] produced.
#[derive(Debug)]
pub(crate) enum ReadEvent {
    /// A whole frame, header and payload, in a `Vec` allocated for it alone.
    Frame(Vec<u8>),
    /// The header breaks a rule decided from the header alone: answer with this ERROR and close.
    Invalid(ErrorCode),
    /// Nothing complete yet (the read timed out, or brought part of a frame): check the deadlines and
    /// call again.
    Pending,
    /// The peer closed, reset, or the socket failed (or was shut down by a writer that gave up on it).
    Closed,
}

/// How one `read` into the unfilled tail of a buffer went.
enum Step {
    /// The buffer is full.
    Complete,
    /// Some bytes arrived, or none before the read timeout: not full yet.
    Incomplete,
    /// End of stream or an error.
    Closed,
}

/// One `read` into `buf[*filled..]`.
///
/// This is `read_exact` cut into resumable steps: `std`'s `read_exact` returns a timeout error having
/// consumed an unknown number of bytes, which would desynchronise the stream on the first slow frame.
/// Here every byte read is counted in `filled`, so a frame survives any number of read timeouts.
fn read_step(stream: &TcpStream, buf: &mut [u8], filled: &mut usize) -> Step {
    if *filled == buf.len() {
        return Step::Complete;
    }
    loop {
        match (&*stream).read(&mut buf[*filled..]) {
            Ok(0) => return Step::Closed,
            Ok(n) => {
                *filled += n;
                return if *filled == buf.len() { Step::Complete } else { Step::Incomplete };
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // SO_RCVTIMEO expiry shows up as EAGAIN (WouldBlock) on Unix and TimedOut on Windows.
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Step::Incomplete;
            }
            Err(_) => return Step::Closed,
        }
    }
}

/// Reassembles client frames from a blocking socket: the 12-byte header into a fixed array, then a
/// fresh `Vec` for the whole frame, every packet (that allocation is what this baseline measures).
#[derive(Debug)]
pub(crate) struct FrameReader {
    max_payload: u32,
    header: [u8; HEADER_LEN],
    /// The frame being read once its header passed its checks.
    frame: Option<Vec<u8>>,
    /// Bytes of the header (while `frame` is `None`) or of the frame read so far.
    filled: usize,
    /// When the first byte of the unfinished frame arrived.
    partial_since: Option<Instant>,
}

impl FrameReader {
    pub(crate) fn new(max_payload: u32) -> Self {
        FrameReader { max_payload, header: [0; HEADER_LEN], frame: None, filled: 0, partial_since: None }
    }

    /// Since when an unfinished frame has been waiting for its remaining bytes, if one is.
    pub(crate) fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// Reads until a frame is complete, the header is refused, or a read returns without completing
    /// the part being read (so that the caller gets to check its deadlines even against a client that
    /// trickles one byte at a time).
    pub(crate) fn poll(&mut self, stream: &TcpStream) -> ReadEvent {
        loop {
            let Some(frame) = &mut self.frame else {
                let before = self.filled;
                let step = read_step(stream, &mut self.header, &mut self.filled);
                if before == 0 && self.filled > 0 {
                    self.partial_since = Some(Instant::now());
                }
                match step {
                    Step::Complete => {}
                    Step::Incomplete => return ReadEvent::Pending,
                    Step::Closed => return ReadEvent::Closed,
                }
                // The header is checked before a byte is reserved for the payload, in the protocol's
                // order: TOO_LARGE, then UNKNOWN_PACKET. (SPOOFED_ID is the world's.)
                let field =
                    |at: usize| u32::from_le_bytes(self.header[at..at + 4].try_into().expect("4-byte field"));
                let (packet_id, data_length) = (field(0), field(8));
                if data_length > self.max_payload {
                    return ReadEvent::Invalid(ErrorCode::TooLarge);
                }
                if !PacketKind::from_id(packet_id).is_some_and(PacketKind::is_client_sendable) {
                    return ReadEvent::Invalid(ErrorCode::UnknownPacket);
                }
                // The naive part, on purpose: one heap allocation per packet, header copied in front.
                let mut frame = Vec::with_capacity(HEADER_LEN + data_length as usize);
                frame.extend_from_slice(&self.header);
                frame.resize(HEADER_LEN + data_length as usize, 0);
                self.frame = Some(frame);
                continue;
            };
            match read_step(stream, frame, &mut self.filled) {
                Step::Complete => {
                    self.filled = 0;
                    self.partial_since = None;
                    return ReadEvent::Frame(self.frame.take().expect("frame being read"));
                }
                Step::Incomplete => return ReadEvent::Pending,
                Step::Closed => return ReadEvent::Closed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Duration;

    use gamewire_proto::{Packet, encode_frame_to_vec};

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        (client, server)
    }

    /// Polls until something other than `Pending` comes out, within a bound.
    fn next(reader: &mut FrameReader, stream: &TcpStream) -> ReadEvent {
        for _ in 0..200 {
            match reader.poll(stream) {
                ReadEvent::Pending => {}
                event => return event,
            }
        }
        panic!("no event within the bound");
    }

    #[test]
    fn a_frame_split_across_read_timeouts_survives() {
        let (mut client, server) = pair();
        let mut reader = FrameReader::new(1024);
        let bytes = encode_frame_to_vec(0, &Packet::Hello { name: "ada lovelace" });
        // Part of the header, then the rest of it and part of the payload, each followed by several
        // read timeouts.
        for piece in [&bytes[..5], &bytes[5..14]] {
            client.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(60));
            assert!(matches!(reader.poll(&server), ReadEvent::Pending));
            assert!(matches!(reader.poll(&server), ReadEvent::Pending));
            assert!(reader.partial_since().is_some());
        }
        client.write_all(&bytes[14..]).unwrap();
        match next(&mut reader, &server) {
            ReadEvent::Frame(frame) => assert_eq!(frame, bytes),
            other => panic!("expected a frame, got {other:?}"),
        }
        assert!(reader.partial_since().is_none());
        // Two frames in one write come out one after the other.
        let ping = encode_frame_to_vec(0, &Packet::Ping { payload: &[] });
        client.write_all(&[ping.clone(), bytes.clone()].concat()).unwrap();
        assert!(matches!(next(&mut reader, &server), ReadEvent::Frame(f) if f == ping));
        assert!(matches!(next(&mut reader, &server), ReadEvent::Frame(f) if f == bytes));
        drop(client);
        assert!(matches!(next(&mut reader, &server), ReadEvent::Closed));
    }

    #[test]
    fn headers_are_refused_in_the_protocol_order() {
        let (mut client, server) = pair();
        let mut reader = FrameReader::new(1024);
        // Both too large and not client-sendable: TOO_LARGE wins.
        client.write_all(&[2, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x04, 0, 0]).unwrap();
        assert!(matches!(next(&mut reader, &server), ReadEvent::Invalid(ErrorCode::TooLarge)));

        let (mut client, server) = pair();
        let mut reader = FrameReader::new(1024);
        client.write_all(&[99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(matches!(next(&mut reader, &server), ReadEvent::Invalid(ErrorCode::UnknownPacket)));
    }
}
