//! `FrameDecoder` against a byte stream split at arbitrary points.
//!
//! The stream is either raw bytes or a list of pieces (well-formed frames of any packet id and header
//! `player_id`, and raw bytes between them), fed in chunks whose lengths also come from the input.
//! Invariants:
//! - no panic;
//! - the frames yielded, and the error or the bytes left buffered at the end, are those of a simple
//!   reference reading of the whole stream (feeding it at once gives the same as any split);
//! - every frame yielded is, header and payload, exactly the stream's bytes at its place, and
//!   re-encodes from its parsed packet to those bytes;
//! - an error is fatal: every later call returns the same error, whatever it is fed;
//! - `buffered_len` never exceeds `12 + max_payload` and always equals the bytes fed so far minus the
//!   bytes of the frames yielded (nothing is lost or held twice); `Ok(None)` means the input is used up.
#![no_main]

use arbitrary::Arbitrary;
use gamewire_proto::{
    DecodeError, Direction, FrameDecoder, HEADER_LEN, MAX_PAYLOAD_LIMIT, PacketKind, encode_frame_to_vec,
};
use libfuzzer_sys::fuzz_target;

/// Smallest legal `max_payload` (docs/protocol.md §2).
const MIN_MAX_PAYLOAD: u32 = 256;

#[derive(Arbitrary, Debug)]
enum IdCheck {
    /// A fresh decoder: only 0 is accepted from a client before `set_player_id`.
    Fresh,
    /// `set_player_id(id)`.
    Set(u32),
    /// `skip_player_id_check()`.
    Skip,
}

#[derive(Arbitrary, Debug)]
enum Piece {
    /// A frame whose `data_length` is its payload's length.
    Frame { packet_id: u8, player_id: PieceId, payload: Vec<u8> },
    /// Anything.
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum PieceId {
    Zero,
    Small(u8),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Stream {
    Raw(Vec<u8>),
    Pieces(Vec<Piece>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    to_client: bool,
    max_payload: u32,
    id_check: IdCheck,
    /// Lengths of the successive chunks (each taken modulo what is left, plus one); the rest of the
    /// stream is the last chunk.
    chunks: Vec<u16>,
    stream: Stream,
}

/// What the reference reading found: frames as (offset, length) in the stream, then the end.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<(usize, usize)>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// No error; this many bytes of an unfinished frame are left.
    Buffered(usize),
    Failed(DecodeError),
}

/// The decoder's contract, read plainly off docs/protocol.md and the decoder's documentation.
fn reference(stream: &[u8], direction: Direction, max_payload: u32, allowed_id: Option<u32>) -> Outcome {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        if rest.len() < HEADER_LEN {
            return Outcome { frames, end: End::Buffered(rest.len()) };
        }
        let word = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().unwrap());
        let (packet_id, player_id, length) = (word(0), word(4), word(8));
        let accepted = PacketKind::from_id(packet_id).is_some_and(|kind| match direction {
            Direction::ToServer => kind.is_client_sendable(),
            Direction::ToClient => kind.is_server_sendable(),
        });
        let error = if length > max_payload {
            Some(DecodeError::TooLarge { length, max: max_payload })
        } else if !accepted {
            Some(DecodeError::UnknownPacket { packet_id })
        } else if direction == Direction::ToServer
            && allowed_id.is_some_and(|own| player_id != 0 && player_id != own)
        {
            Some(DecodeError::SpoofedId { player_id })
        } else {
            None
        };
        if let Some(error) = error {
            return Outcome { frames, end: End::Failed(error) };
        }
        let total = HEADER_LEN + length as usize;
        if rest.len() < total {
            return Outcome { frames, end: End::Buffered(rest.len()) };
        }
        frames.push((at, total));
        at += total;
    }
}

fn build_stream(stream: Stream) -> Vec<u8> {
    match stream {
        Stream::Raw(bytes) => bytes,
        Stream::Pieces(pieces) => {
            let mut out = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Frame { packet_id, player_id, payload } => {
                        let player_id = match player_id {
                            PieceId::Zero => 0,
                            PieceId::Small(id) => u32::from(id),
                            PieceId::Any(id) => id,
                        };
                        out.extend_from_slice(&u32::from(packet_id % 13).to_le_bytes());
                        out.extend_from_slice(&player_id.to_le_bytes());
                        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                        out.extend_from_slice(&payload);
                    }
                    Piece::Raw(bytes) => out.extend_from_slice(&bytes),
                }
            }
            out
        }
    }
}

fn make_decoder(direction: Direction, max_payload: u32, id_check: &IdCheck) -> FrameDecoder {
    let mut decoder = FrameDecoder::new(direction, max_payload);
    match *id_check {
        IdCheck::Fresh => {}
        IdCheck::Set(id) => decoder.set_player_id(id).expect("nothing is buffered yet"),
        IdCheck::Skip => decoder.skip_player_id_check(),
    }
    assert_eq!(decoder.max_payload(), max_payload);
    decoder
}

/// Feeds `stream` in `chunks` and checks every call; returns what it read.
fn run(stream: &[u8], chunks: &[usize], mut decoder: FrameDecoder, max_payload: u32) -> Outcome {
    let bound = HEADER_LEN + max_payload as usize;
    let mut frames = Vec::new();
    let mut fed = 0; // bytes handed to the decoder so far
    let mut yielded = 0; // bytes of the frames it returned
    let mut failed = None;
    for &len in chunks {
        let chunk = &stream[fed..fed + len];
        fed += len;
        let mut input = chunk;
        loop {
            let before = input.len();
            match decoder.next_frame(&mut input) {
                Ok(Some(frame)) => {
                    let consumed = before - input.len();
                    let bytes: Vec<u8> = [frame.header_bytes(), frame.payload()].concat();
                    let start = yielded;
                    assert_eq!(bytes.len(), HEADER_LEN + frame.header().data_length.get() as usize);
                    assert!(frame.payload().len() <= max_payload as usize, "payload over max_payload");
                    assert_eq!(
                        &stream[start..start + bytes.len()],
                        &bytes[..],
                        "frame at {start} is not the stream's bytes"
                    );
                    assert!(consumed <= bytes.len(), "consumed more than the frame");
                    if let Ok(packet) = frame.packet() {
                        assert_eq!(encode_frame_to_vec(frame.player_id(), &packet), bytes, "re-encoding");
                    }
                    yielded += bytes.len();
                    frames.push((start, bytes.len()));
                }
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) with {} bytes of input left", input.len());
                    break;
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
            let consumed_total = fed - input.len();
            assert!(decoder.buffered_len() <= bound, "buffered {} > {bound}", decoder.buffered_len());
            assert_eq!(decoder.buffered_len(), consumed_total - yielded, "bytes lost or held twice");
            assert_eq!(decoder.is_mid_frame(), decoder.buffered_len() > 0);
        }
        assert!(decoder.buffered_len() <= bound, "buffered {} > {bound}", decoder.buffered_len());
        if let Some(error) = failed {
            // Fatal: the same error whatever comes next, the rest of the stream included.
            assert_eq!(decoder.next_frame(&mut &[][..]).unwrap_err(), error);
            let mut rest = &stream[fed..];
            assert_eq!(decoder.next_frame(&mut rest).unwrap_err(), error);
            assert_eq!(decoder.next_frame(&mut &chunk[..]).unwrap_err(), error);
            assert_eq!(decoder.next_frame(&mut &[0u8; HEADER_LEN][..]).unwrap_err(), error);
            assert!(decoder.buffered_len() <= bound);
            return Outcome { frames, end: End::Failed(error) };
        }
        assert_eq!(decoder.buffered_len(), fed - yielded);
    }
    assert_eq!(fed, stream.len());
    Outcome { frames, end: End::Buffered(decoder.buffered_len()) }
}

fuzz_target!(|input: Input| {
    let direction = if input.to_client { Direction::ToClient } else { Direction::ToServer };
    let max_payload = MIN_MAX_PAYLOAD + input.max_payload % (MAX_PAYLOAD_LIMIT - MIN_MAX_PAYLOAD + 1);
    let allowed_id = match input.id_check {
        IdCheck::Fresh => Some(0),
        IdCheck::Set(id) => Some(id),
        IdCheck::Skip => None,
    };
    let stream = build_stream(input.stream);

    let mut chunks = Vec::new();
    let mut left = stream.len();
    for &len in &input.chunks {
        let len = usize::from(len) % (left + 1);
        chunks.push(len);
        left -= len;
    }
    chunks.push(left);

    let expected = reference(&stream, direction, max_payload, allowed_id);
    let whole =
        run(&stream, &[stream.len()], make_decoder(direction, max_payload, &input.id_check), max_payload);
    assert_eq!(whole, expected, "fed at once vs the reference reading");
    let split = run(&stream, &chunks, make_decoder(direction, max_payload, &input.id_check), max_payload);
    assert_eq!(split, whole, "split at {chunks:?} vs fed at once");
    let bytes = stream.len();
    let singles = vec![1; bytes];
    if bytes <= 512 {
        let one_by_one =
            run(&stream, &singles, make_decoder(direction, max_payload, &input.id_check), max_payload);
        assert_eq!(one_by_one, whole, "byte by byte vs fed at once");
    }
});
