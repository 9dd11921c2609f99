//! A `tokio_util::codec::Decoder` for protocol v1 client frames: header checked first, whole frames out.

use std::io;

use bytes::{Buf, BytesMut};
use gamewire_proto::{DecodeError, HEADER_LEN, PacketKind};
use tokio::time::Instant;
use tokio_util::codec::Decoder;

/// Read-ahead room the decoder keeps in the read buffer. `FramedRead` only grows its buffer by one byte
/// when it is full, so after frames are split off the front, reads would shrink to whatever tail of the
/// 8 KiB block is left; asking for this much keeps each read large enough to carry many frames.
const READ_AHEAD: usize = 4096;

/// Why reading frames stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    /// A header broke the contract (TOO_LARGE or UNKNOWN_PACKET): answer with ERROR and close.
    #[error(transparent)]
    Protocol(#[from] DecodeError),
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Splits a client's byte stream into whole frames (header and payload, as they arrived).
///
/// The header is checked as soon as its 12 bytes are buffered: a `data_length` above `max_payload` is
/// TOO_LARGE, then a packet id a client may not send is UNKNOWN_PACKET, in the protocol's order. Room
/// for the payload is reserved only after that check, so a hostile length never allocates.
///
/// It also remembers since when it has been holding an unfinished frame, for the partial-frame timeout.
#[derive(Debug)]
pub(crate) struct FrameCodec {
    max_payload: u32,
    /// When the decoder first saw the bytes of the frame it is still waiting to complete.
    partial_since: Option<Instant>,
}

impl FrameCodec {
    pub(crate) fn new(max_payload: u32) -> Self {
        FrameCodec { max_payload, partial_since: None }
    }

    /// Since when an unfinished frame has been waiting for the rest of its bytes, if one is.
    pub(crate) fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// Checks a complete header and returns the frame's total length.
    fn check_header(&self, header: &[u8]) -> Result<usize, DecodeError> {
        let mut header = header;
        let packet_id = header.get_u32_le();
        let _player_id = header.get_u32_le();
        let length = header.get_u32_le();
        if length > self.max_payload {
            return Err(DecodeError::TooLarge { length, max: self.max_payload });
        }
        if !PacketKind::from_id(packet_id).is_some_and(PacketKind::is_client_sendable) {
            return Err(DecodeError::UnknownPacket { packet_id });
        }
        Ok(HEADER_LEN + length as usize)
    }

    /// Records that `src` holds an unfinished frame needing `missing` more bytes, and makes room.
    fn wait_for(&mut self, src: &mut BytesMut, missing: usize) {
        if !src.is_empty() && self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        src.reserve(missing.max(READ_AHEAD));
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        if src.len() < HEADER_LEN {
            self.wait_for(src, HEADER_LEN - src.len());
            return Ok(None);
        }
        // Checked on every call while the payload trickles in: 12 bytes of arithmetic, cheaper than
        // remembering the result.
        let total = self.check_header(&src[..HEADER_LEN])?;
        if src.len() < total {
            self.wait_for(src, total - src.len());
            return Ok(None);
        }
        self.partial_since = None;
        // The frame shares the read buffer's allocation: no copy.
        Ok(Some(src.split_to(total)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        // A frame cut short by the peer closing is not an error to answer: there is nobody left to
        // answer. Drop the bytes instead of failing like the default implementation.
        let frame = self.decode(src)?;
        if frame.is_none() {
            src.clear();
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gamewire_proto::{ErrorCode, Header, Move, Packet, encode_frame_to_vec};

    fn header_bytes(packet_id: u32, player_id: u32, data_length: u32) -> Vec<u8> {
        let header = Header::new(packet_id, player_id, data_length);
        [header.packet_id.get(), header.player_id.get(), header.data_length.get()]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn sample_stream() -> Vec<u8> {
        let mut bytes = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
        bytes.extend(encode_frame_to_vec(5, &Packet::Move(&Move::new(1.0, 2.0, 3.0, 4.0, 99))));
        bytes.extend(encode_frame_to_vec(5, &Packet::Ping { payload: &[] }));
        bytes.extend(encode_frame_to_vec(5, &Packet::Chat { text: "hi there" }));
        bytes
    }

    /// Feeds `chunks` one after the other, as `FramedRead` would, and collects the frames.
    fn decode_chunks(codec: &mut FrameCodec, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, CodecError> {
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buffer)? {
                frames.push(frame.to_vec());
            }
        }
        Ok(frames)
    }

    #[tokio::test]
    async fn every_split_point_yields_the_same_frames() {
        let bytes = sample_stream();
        let whole = decode_chunks(&mut FrameCodec::new(1024), &[&bytes]).unwrap();
        assert_eq!(whole.len(), 4);
        assert_eq!(whole.concat(), bytes);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let mut codec = FrameCodec::new(1024);
            assert_eq!(decode_chunks(&mut codec, &[a, b]).unwrap(), whole, "cut at {cut}");
            assert_eq!(codec.partial_since(), None, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&mut FrameCodec::new(1024), &singles).unwrap(), whole);
    }

    #[tokio::test]
    async fn an_unfinished_frame_is_timed_from_its_first_bytes() {
        let bytes = sample_stream();
        let mut codec = FrameCodec::new(1024);
        let mut buffer = BytesMut::new();
        assert!(codec.decode(&mut buffer).unwrap().is_none());
        assert_eq!(codec.partial_since(), None, "an empty buffer is not a partial frame");
        buffer.extend_from_slice(&bytes[..5]);
        assert!(codec.decode(&mut buffer).unwrap().is_none());
        let since = codec.partial_since().expect("five bytes of a header are a partial frame");
        buffer.extend_from_slice(&bytes[5..10]);
        assert!(codec.decode(&mut buffer).unwrap().is_none());
        assert_eq!(codec.partial_since(), Some(since), "more bytes of the same frame keep the start");
    }

    #[test]
    fn oversized_length_is_refused_before_reserving() {
        let mut codec = FrameCodec::new(1024);
        let mut buffer = BytesMut::from(&header_bytes(5, 0, u32::MAX)[..]);
        let capacity = buffer.capacity();
        match codec.decode(&mut buffer) {
            Err(CodecError::Protocol(error)) => {
                assert_eq!(error, DecodeError::TooLarge { length: u32::MAX, max: 1024 });
                assert_eq!(error.error_code(), ErrorCode::TooLarge);
            }
            other => panic!("expected TOO_LARGE, got {other:?}"),
        }
        assert_eq!(buffer.capacity(), capacity, "nothing reserved for a refused frame");
    }

    #[test]
    fn too_large_wins_over_unknown_packet() {
        let mut buffer = BytesMut::from(&header_bytes(99, 0, 5000)[..]);
        let error = FrameCodec::new(1024).decode(&mut buffer).unwrap_err();
        assert!(matches!(error, CodecError::Protocol(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn ids_a_client_may_not_send_are_unknown() {
        for id in [0, 2, 6, 7, 9, 10, 11, 12, u32::MAX] {
            let mut buffer = BytesMut::from(&header_bytes(id, 0, 0)[..]);
            let error = FrameCodec::new(1024).decode(&mut buffer).unwrap_err();
            assert!(
                matches!(error, CodecError::Protocol(DecodeError::UnknownPacket { packet_id }) if packet_id == id)
            );
        }
        for id in [1, 3, 4, 5, 8] {
            let mut buffer = BytesMut::from(&header_bytes(id, 0, 0)[..]);
            assert!(FrameCodec::new(1024).decode(&mut buffer).is_ok());
        }
    }

    #[tokio::test]
    async fn a_frame_cut_by_end_of_stream_is_dropped_quietly() {
        let bytes = sample_stream();
        let mut codec = FrameCodec::new(1024);
        let mut buffer = BytesMut::from(&bytes[..bytes.len() - 1]);
        let mut frames = 0;
        while codec.decode_eof(&mut buffer).unwrap().is_some() {
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert!(buffer.is_empty());
    }
}
