//! Streaming frame decoder: bytes in at any split, zero-copy frames out.

use zerocopy::FromBytes;

use crate::{DecodeError, HEADER_LEN, Header, Packet, PacketSet, ParseError};

/// Which side of the connection the decoder reads for; it decides which packet ids are accepted.
///
/// # Examples
///
/// A client's decoder refuses a HELLO, which only clients send, from its header alone:
///
/// ```
/// use gamewire_proto::{DecodeError, Direction, FrameDecoder, Packet, PacketKind, encode_frame_to_vec};
///
/// assert!(Direction::ToServer.v1_packets().contains(PacketKind::Hello.id()));
/// assert!(!Direction::ToClient.v1_packets().contains(PacketKind::Hello.id()));
///
/// let mut client = FrameDecoder::new(Direction::ToClient, 1024);
/// let hello = encode_frame_to_vec(0, &Packet::Hello { name: "mallory" });
/// assert_eq!(client.next_frame(&mut &hello[..]), Err(DecodeError::UnknownPacket { packet_id: 1 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A server reading what a client sends: HELLO, MOVE, ATTACK, CHAT, PING.
    ToServer,
    /// A client reading what a server sends: everything but HELLO, ATTACK and PING.
    ToClient,
}

impl Direction {
    /// Protocol v1's packets in this direction: the set [`FrameDecoder::new`] accepts.
    pub const fn v1_packets(self) -> PacketSet {
        match self {
            Direction::ToServer => PacketSet::V1_FROM_CLIENT,
            Direction::ToClient => PacketSet::V1_FROM_SERVER,
        }
    }
}

/// One complete frame: a header and its payload, both borrowed.
///
/// What [`FrameDecoder::next_frame`] yields: read its header fields, [parse](RawFrame::packet) its
/// payload, or hand its bytes on untouched. [`RawFrame::split_from`] cuts one off a buffer known to
/// hold whole frames, for tests and tools.
///
/// # Examples
///
/// ```
/// use gamewire_proto::{Packet, PacketKind, RawFrame, encode_frame_to_vec};
///
/// let mut bytes = encode_frame_to_vec(0, &Packet::Ping { payload: b"t=1" });
/// bytes.extend(encode_frame_to_vec(3, &Packet::Chat { text: "hi" }));
///
/// let (ping, rest) = RawFrame::split_from(&bytes).unwrap();
/// assert_eq!(ping.packet_id(), PacketKind::Ping.id());
/// assert_eq!(ping.payload(), b"t=1");
/// assert_eq!(ping.packet(), Ok(Packet::Ping { payload: b"t=1" }));
///
/// let (chat, rest) = RawFrame::split_from(rest).unwrap();
/// assert_eq!((chat.player_id(), chat.packet()), (3, Ok(Packet::Chat { text: "hi" })));
/// assert!(rest.is_empty());
/// assert!(RawFrame::split_from(&bytes[..14]).is_none(), "less than a whole frame");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    header: &'a Header,
    payload: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Splits a complete frame off the front of `bytes`, without checking the packet id or any limit:
    /// for tests and tools. Returns `None` if `bytes` holds less than a whole frame.
    pub fn split_from(bytes: &'a [u8]) -> Option<(RawFrame<'a>, &'a [u8])> {
        let (header, rest) = Header::ref_from_prefix(bytes).ok()?;
        let len = header.data_length.get() as usize;
        if rest.len() < len {
            return None;
        }
        let (payload, rest) = rest.split_at(len);
        Some((RawFrame { header, payload }, rest))
    }

    /// The header as it lies on the wire.
    pub fn header(&self) -> &'a Header {
        self.header
    }

    /// The header's 12 bytes as they lie on the wire.
    pub fn header_bytes(&self) -> &'a [u8] {
        zerocopy::IntoBytes::as_bytes(self.header)
    }

    /// The header's `packet_id`: which packet the payload is.
    pub fn packet_id(&self) -> u32 {
        self.header.packet_id.get()
    }

    /// The header's `player_id`: the player the frame is about (from a server), or 0 or the sender's
    /// own id (from a client).
    pub fn player_id(&self) -> u32 {
        self.header.player_id.get()
    }

    /// The payload bytes, unparsed (as [`RawFrame::header`]'s `data_length` counts them).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Parses the payload; see [`Packet::parse`].
    ///
    /// # Errors
    ///
    /// As [`Packet::parse`].
    pub fn packet(&self) -> Result<Packet<'a>, ParseError> {
        Packet::parse(self.packet_id(), self.payload)
    }
}

/// Reassembles frames from a byte stream delivered in arbitrary pieces.
///
/// Call [`FrameDecoder::next_frame`] in a loop with whatever one read returned until it yields `None`,
/// then read again. A frame that lies whole inside the input is returned as a view into the input: no
/// copy. Only the bytes of a frame that straddles two reads are copied, into a buffer the decoder owns;
/// that buffer is sized from the header after the header passed its checks, and never exceeds
/// `12 + max_payload` bytes.
///
/// The header is checked as soon as its 12 bytes are in, before waiting for the payload: a
/// `data_length` above `max_payload` is [`DecodeError::TooLarge`], then a packet id outside the accepted
/// [`PacketSet`] is [`DecodeError::UnknownPacket`], then (reading a client) a `player_id` other than 0 and
/// the one given to [`FrameDecoder::set_player_id`] is [`DecodeError::SpoofedId`] (the protocol's
/// order). After an error the stream cannot
/// be resynchronised: every later call returns the same error, and the connection should be closed.
///
/// # Examples
///
/// A server's read loop: two frames and the first 7 bytes of a third come in one read, the rest of the
/// third in the next.
///
/// ```
/// use gamewire_proto::{DEFAULT_MAX_PAYLOAD, Direction, FrameDecoder, Move, Packet, encode_frame_to_vec};
///
/// let mut stream = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
/// stream.extend(encode_frame_to_vec(0, &Packet::Ping { payload: b"1" }));
/// stream.extend(encode_frame_to_vec(0, &Packet::Move(&Move::new(1.0, 0.0, 2.0, 0.0, 7))));
/// let reads = stream.split_at(stream.len() - 25); // the MOVE frame is 32 bytes
///
/// let mut decoder = FrameDecoder::new(Direction::ToServer, DEFAULT_MAX_PAYLOAD);
/// let (mut received, mut held) = (Vec::new(), Vec::new());
/// for read in [reads.0, reads.1] {
///     let mut input = read;
///     while let Some(frame) = decoder.next_frame(&mut input)? {
///         received.push(frame.packet()?.kind().name());
///     }
///     // `None`: the read is used up, and an unfinished frame is kept for the next one.
///     assert!(input.is_empty());
///     held.push(decoder.buffered_len());
/// }
/// assert_eq!(received, ["HELLO", "PING", "MOVE"]);
/// assert_eq!(held, [7, 0]);
/// assert!(!decoder.is_mid_frame());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    direction: Direction,
    /// The packet ids accepted; any other is UNKNOWN_PACKET from the header alone.
    accepted: PacketSet,
    max_payload: u32,
    /// Bytes of the frame that straddles reads: its header first.
    partial: Vec<u8>,
    /// `partial` holds a complete frame that was already returned; drop it on the next call.
    partial_returned: bool,
    failed: Option<DecodeError>,
    /// For [`Direction::ToServer`]: the only non-zero `player_id` a header may carry (the session's
    /// id, once WELCOMEd; 0 before, so that only 0 is accepted).
    own_player_id: u32,
    /// Whether the header's `player_id` is checked here (SPOOFED_ID at header time).
    checks_player_id: bool,
}

/// A buffer that grew beyond this for one large frame is released rather than kept per connection.
const RETAINED_PARTIAL_CAPACITY: usize = 2048;

impl FrameDecoder {
    /// A decoder of protocol v1's packets in `direction` that refuses payloads above `max_payload`
    /// bytes: [`FrameDecoder::with_packets`] with [`Direction::v1_packets`].
    pub fn new(direction: Direction, max_payload: u32) -> Self {
        FrameDecoder::with_packets(direction, direction.v1_packets(), max_payload)
    }

    /// A decoder for `direction` that accepts the packet ids in `accepted` (a game's own, with the
    /// core's session frames) and refuses payloads above `max_payload` bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_proto::{DecodeError, Direction, FrameDecoder, PacketSet, RawFrame};
    ///
    /// let mut decoder =
    ///     FrameDecoder::with_packets(Direction::ToServer, PacketSet::SESSION_FROM_CLIENT.with(32), 1024);
    /// let frame = |id: u32| [id.to_le_bytes(), 0u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
    /// let mut input = &frame(32)[..];
    /// assert_eq!(decoder.next_frame(&mut input).unwrap().unwrap().packet_id(), 32);
    /// let mut input = &frame(33)[..];
    /// assert_eq!(decoder.next_frame(&mut input), Err(DecodeError::UnknownPacket { packet_id: 33 }));
    /// ```
    pub fn with_packets(direction: Direction, accepted: PacketSet, max_payload: u32) -> Self {
        FrameDecoder {
            direction,
            accepted,
            max_payload,
            partial: Vec::new(),
            partial_returned: false,
            failed: None,
            own_player_id: 0,
            checks_player_id: true,
        }
    }

    /// Sets the id the server assigned to this connection's player: from now on a header may carry 0 or
    /// this id, anything else is [`DecodeError::SpoofedId`]. Only for [`Direction::ToServer`].
    ///
    /// # Errors
    ///
    /// [`DecodeError::SpoofedId`] when the header of an unfinished frame, buffered while the check was
    /// off ([`Self::skip_player_id_check`]), carries another id: the frame is refused now, from its
    /// header, as it would have been had the id been known when the header came (its payload may
    /// never come). The error is sticky, like every decoding error.
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_proto::{DecodeError, Direction, FrameDecoder, Packet, encode_frame_to_vec};
    ///
    /// let ping = |player_id: u32| encode_frame_to_vec(player_id, &Packet::Ping { payload: &[] });
    /// let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
    /// // WELCOME gave this connection player 5: headers may now say 0 or 5.
    /// decoder.set_player_id(5)?;
    /// assert!(decoder.next_frame(&mut &ping(5)[..])?.is_some());
    /// assert!(decoder.next_frame(&mut &ping(0)[..])?.is_some());
    /// assert_eq!(decoder.next_frame(&mut &ping(6)[..]), Err(DecodeError::SpoofedId { player_id: 6 }));
    /// # Ok::<(), DecodeError>(())
    /// ```
    pub fn set_player_id(&mut self, player_id: u32) -> Result<(), DecodeError> {
        let was_checking = self.checks_player_id;
        self.own_player_id = player_id;
        self.checks_player_id = true;
        if !was_checking && self.failed.is_none() && self.buffered_len() >= HEADER_LEN {
            let header = *Header::ref_from_bytes(&self.partial[..HEADER_LEN])
                .expect("the first 12 bytes form a header");
            self.check(&header)?;
        }
        Ok(())
    }

    /// Leaves the header's `player_id` unchecked until [`Self::set_player_id`]: for a caller that
    /// learns the connection's id only later (a world on another thread) and meanwhile relies on a
    /// check once the frame is complete (`World::handle` makes it).
    ///
    /// # Examples
    ///
    /// ```
    /// use gamewire_proto::{DecodeError, Direction, FrameDecoder, Packet, encode_frame_to_vec};
    ///
    /// let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
    /// decoder.skip_player_id_check();
    /// // The id is not known here yet: a header naming player 9 passes, for the game to judge.
    /// let ping = encode_frame_to_vec(9, &Packet::Ping { payload: &[] });
    /// assert_eq!(decoder.next_frame(&mut &ping[..])?.map(|frame| frame.player_id()), Some(9));
    /// // The game answered that this connection plays 5: the check is on again.
    /// decoder.set_player_id(5)?;
    /// assert_eq!(decoder.next_frame(&mut &ping[..]), Err(DecodeError::SpoofedId { player_id: 9 }));
    /// # Ok::<(), DecodeError>(())
    /// ```
    pub fn skip_player_id_check(&mut self) {
        self.checks_player_id = false;
    }

    /// The configured payload limit: a header with a larger `data_length` is [`DecodeError::TooLarge`].
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Whether bytes of an unfinished frame are buffered (the protocol's partial-frame timeout runs
    /// while this is true).
    pub fn is_mid_frame(&self) -> bool {
        !self.partial_returned && !self.partial.is_empty()
    }

    /// Bytes currently held for an unfinished frame.
    pub fn buffered_len(&self) -> usize {
        if self.partial_returned { 0 } else { self.partial.len() }
    }

    fn check(&mut self, header: &Header) -> Result<usize, DecodeError> {
        let length = header.data_length.get();
        let packet_id = header.packet_id.get();
        let result = if length > self.max_payload {
            Err(DecodeError::TooLarge { length, max: self.max_payload })
        } else if !self.accepted.contains(packet_id) {
            Err(DecodeError::UnknownPacket { packet_id })
        } else if self.direction == Direction::ToServer
            && self.checks_player_id
            && header.player_id.get() != 0
            && header.player_id.get() != self.own_player_id
        {
            Err(DecodeError::SpoofedId { player_id: header.player_id.get() })
        } else {
            Ok(length as usize)
        };
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    /// Takes bytes from the front of `input` and returns the next complete frame, or `None` once
    /// `input` is used up without completing one (the bytes of an unfinished frame are kept).
    ///
    /// The frame borrows `input` or the decoder, so it must be dropped before the next call. See the
    /// type's documentation for the read loop.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when a header breaks the contract; see the type's documentation.
    pub fn next_frame<'s, 'b: 's>(
        &'s mut self,
        input: &mut &'b [u8],
    ) -> Result<Option<RawFrame<'s>>, DecodeError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.partial_returned {
            self.partial_returned = false;
            self.partial.clear();
            if self.partial.capacity() > RETAINED_PARTIAL_CAPACITY {
                self.partial = Vec::new();
            }
        }
        if !self.partial.is_empty() {
            return self.continue_partial(input);
        }
        let Ok((header, rest)) = Header::ref_from_prefix(input) else {
            // Fewer than 12 bytes: keep them until the header is whole.
            self.partial.extend_from_slice(input);
            *input = &[];
            return Ok(None);
        };
        let length = self.check(header)?;
        if rest.len() >= length {
            let (payload, rest) = rest.split_at(length);
            *input = rest;
            return Ok(Some(RawFrame { header, payload }));
        }
        self.partial.reserve_exact(HEADER_LEN + length);
        self.partial.extend_from_slice(input);
        *input = &[];
        Ok(None)
    }

    fn continue_partial<'s>(&'s mut self, input: &mut &[u8]) -> Result<Option<RawFrame<'s>>, DecodeError> {
        if self.partial.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            *input = &input[take..];
            if self.partial.len() < HEADER_LEN {
                return Ok(None);
            }
            let header = *Header::ref_from_bytes(&self.partial[..HEADER_LEN])
                .expect("the first 12 bytes form a header");
            let length = self.check(&header)?;
            // Only now, with the length checked, is room for the payload reserved.
            self.partial.reserve_exact(length);
        }
        let length = {
            let (header, _) = Header::ref_from_prefix(&self.partial).expect("header is whole");
            header.data_length.get() as usize
        };
        let take = (HEADER_LEN + length - self.partial.len()).min(input.len());
        self.partial.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if self.partial.len() < HEADER_LEN + length {
            return Ok(None);
        }
        self.partial_returned = true;
        let (frame, rest) = RawFrame::split_from(&self.partial).expect("frame is whole");
        debug_assert!(rest.is_empty());
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, Move, encode_frame_to_vec};
    use proptest::prelude::*;

    /// Decodes `chunks` one after the other, returning (packet_id, player_id, payload) per frame.
    fn decode_all(
        decoder: &mut FrameDecoder,
        chunks: &[&[u8]],
    ) -> Result<Vec<(u32, u32, Vec<u8>)>, DecodeError> {
        let mut frames = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(frame) = decoder.next_frame(&mut input)? {
                frames.push((frame.packet_id(), frame.player_id(), frame.payload().to_vec()));
            }
            assert!(input.is_empty(), "next_frame returned None before using up its input");
        }
        Ok(frames)
    }

    /// A server-side decoder for a session whose player id is 1.
    fn session_decoder(max_payload: u32) -> FrameDecoder {
        let mut decoder = FrameDecoder::new(Direction::ToServer, max_payload);
        decoder.set_player_id(1).unwrap();
        decoder
    }

    fn sample_stream() -> Vec<u8> {
        let mut bytes = encode_frame_to_vec(0, &Packet::Hello { name: "ada" });
        bytes.extend(encode_frame_to_vec(1, &Packet::Move(&Move::new(1.0, 2.0, 3.0, 4.0, 99))));
        bytes.extend(encode_frame_to_vec(0, &Packet::Ping { payload: &[] }));
        bytes.extend(encode_frame_to_vec(1, &Packet::Chat { text: "hi there" }));
        bytes
    }

    #[test]
    fn whole_frames_are_views_into_the_input() {
        let bytes = sample_stream();
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        let mut input = &bytes[..];
        let frame = decoder.next_frame(&mut input).unwrap().unwrap();
        let range = bytes.as_ptr_range();
        assert!(range.contains(&frame.payload().as_ptr()), "payload must borrow the input");
        assert_eq!(frame.packet().unwrap(), Packet::Hello { name: "ada" });
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let bytes = sample_stream();
        let whole = decode_all(&mut session_decoder(1024), &[&bytes]).unwrap();
        assert_eq!(whole.len(), 4);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let mut decoder = session_decoder(1024);
            assert_eq!(decode_all(&mut decoder, &[a, b]).unwrap(), whole, "cut at {cut}");
            assert!(!decoder.is_mid_frame());
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let mut decoder = session_decoder(1024);
        assert_eq!(decode_all(&mut decoder, &singles).unwrap(), whole);
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        let header = crate::Header::new(5, 0, 1025);
        let mut input = zerocopy::IntoBytes::as_bytes(&header);
        let err = decoder.next_frame(&mut input).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { length: 1025, max: 1024 });
        assert_eq!(err.error_code(), ErrorCode::TooLarge);
        assert_eq!(decoder.partial.capacity(), 0, "nothing reserved for a refused frame");
        // Poisoned: the same error again.
        assert_eq!(decoder.next_frame(&mut &[0u8; 4][..]).unwrap_err(), err);
    }

    #[test]
    fn oversized_length_split_inside_the_header_reserves_only_the_header() {
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        let header = crate::Header::new(5, 0, u32::MAX);
        let bytes = zerocopy::IntoBytes::as_bytes(&header);
        assert!(decoder.next_frame(&mut &bytes[..7]).unwrap().is_none());
        assert!(decoder.is_mid_frame());
        let err = decoder.next_frame(&mut &bytes[7..]).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::TooLarge);
        assert!(decoder.partial.capacity() < 64);
    }

    #[test]
    fn too_large_wins_over_unknown_packet() {
        let header = crate::Header::new(99, 0, 5000);
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        let err = decoder.next_frame(&mut zerocopy::IntoBytes::as_bytes(&header)).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::TooLarge);
    }

    #[test]
    fn packets_of_the_other_direction_are_unknown() {
        for id in [0, 2, 6, 7, 9, 10, 11, 12, u32::MAX] {
            let header = crate::Header::new(id, 0, 0);
            let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
            let err = decoder.next_frame(&mut zerocopy::IntoBytes::as_bytes(&header)).unwrap_err();
            assert_eq!(err, DecodeError::UnknownPacket { packet_id: id });
        }
        for id in [1, 4, 8] {
            let header = crate::Header::new(id, 0, 0);
            let mut decoder = FrameDecoder::new(Direction::ToClient, 1024);
            assert!(decoder.next_frame(&mut zerocopy::IntoBytes::as_bytes(&header)).is_err());
        }
    }

    #[test]
    fn spoofed_ids_are_refused_from_the_header_alone() {
        let header = crate::Header::new(3, 7, 20);
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        let err = decoder.next_frame(&mut zerocopy::IntoBytes::as_bytes(&header)).unwrap_err();
        assert_eq!(err, DecodeError::SpoofedId { player_id: 7 });
        assert_eq!(err.error_code(), ErrorCode::SpoofedId);
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        decoder.set_player_id(7).unwrap();
        let mut bytes = encode_frame_to_vec(7, &Packet::Ping { payload: &[] });
        bytes.extend(encode_frame_to_vec(0, &Packet::Ping { payload: &[] }));
        bytes.extend_from_slice(zerocopy::IntoBytes::as_bytes(&crate::Header::new(3, 8, 20)));
        let mut input = &bytes[..];
        assert!(decoder.next_frame(&mut input).unwrap().is_some());
        assert!(decoder.next_frame(&mut input).unwrap().is_some());
        assert_eq!(decoder.next_frame(&mut input).unwrap_err(), DecodeError::SpoofedId { player_id: 8 });
        // Unknown packet wins over a spoofed id; a client reading a server needs no id.
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        let unknown = crate::Header::new(2, 9, 0);
        let err = decoder.next_frame(&mut zerocopy::IntoBytes::as_bytes(&unknown)).unwrap_err();
        assert_eq!(err.error_code(), ErrorCode::UnknownPacket);
        let mut decoder = FrameDecoder::new(Direction::ToClient, 1024);
        assert!(decoder.next_frame(&mut &encode_frame_to_vec(9, &Packet::Leave)[..]).unwrap().is_some());
    }

    #[test]
    fn a_header_buffered_while_the_check_was_off_is_checked_when_the_id_comes() {
        for (header_id, expected) in
            [(8, Err(DecodeError::SpoofedId { player_id: 8 })), (7, Ok(())), (0, Ok(()))]
        {
            let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
            decoder.skip_player_id_check();
            // A header whose payload has not come (and may never).
            let header = crate::Header::new(3, header_id, 20);
            assert!(decoder.next_frame(&mut zerocopy::IntoBytes::as_bytes(&header)).unwrap().is_none());
            assert_eq!(decoder.set_player_id(7), expected, "header id {header_id}");
            if let Err(error) = expected {
                assert_eq!(decoder.next_frame(&mut &[0u8; 20][..]).unwrap_err(), error, "sticky");
            }
        }
        // Part of a header is not a header yet: checked when it completes, as always.
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        decoder.skip_player_id_check();
        let header = crate::Header::new(3, 8, 20);
        let bytes = zerocopy::IntoBytes::as_bytes(&header);
        assert!(decoder.next_frame(&mut &bytes[..5]).unwrap().is_none());
        assert_eq!(decoder.set_player_id(7), Ok(()));
        assert_eq!(
            decoder.next_frame(&mut &bytes[5..]).unwrap_err(),
            DecodeError::SpoofedId { player_id: 8 }
        );
    }

    #[test]
    fn a_skipped_id_check_lets_any_id_through_until_the_id_is_set() {
        let mut decoder = FrameDecoder::new(Direction::ToServer, 1024);
        decoder.skip_player_id_check();
        let mut bytes = encode_frame_to_vec(42, &Packet::Ping { payload: b"x" });
        let frame_len = bytes.len();
        bytes.extend(encode_frame_to_vec(7, &Packet::Ping { payload: &[] }));
        let mut input = &bytes[..];
        let frame = decoder.next_frame(&mut input).unwrap().expect("unchecked id");
        assert_eq!(frame.player_id(), 42);
        assert_eq!(frame.header_bytes(), &bytes[..12], "the header as it came");
        assert_eq!(frame.payload(), b"x");
        assert_eq!(input.len(), bytes.len() - frame_len);
        decoder.set_player_id(7).unwrap(); // checks again, against 7
        assert!(decoder.next_frame(&mut input).unwrap().is_some());
        let spoofed = encode_frame_to_vec(42, &Packet::Ping { payload: &[] });
        assert_eq!(
            decoder.next_frame(&mut &spoofed[..]).unwrap_err(),
            DecodeError::SpoofedId { player_id: 42 }
        );
    }

    #[test]
    fn straddling_buffer_is_released_after_a_large_frame() {
        let text = "x".repeat(256);
        let bytes = encode_frame_to_vec(0, &Packet::Chat { text: &text });
        let mut decoder = FrameDecoder::new(Direction::ToServer, 65536);
        assert!(decoder.next_frame(&mut &bytes[..100]).unwrap().is_none());
        assert!(decoder.next_frame(&mut &bytes[100..]).unwrap().is_some());
        assert!(decoder.next_frame(&mut &[][..]).unwrap().is_none());
        assert!(decoder.partial.capacity() <= RETAINED_PARTIAL_CAPACITY);
    }

    fn arb_packet_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-z]{1,32}".prop_map(|name| encode_frame_to_vec(0, &Packet::Hello { name: &name })),
            (any::<[f32; 4]>(), any::<u32>(), 0u32..=1).prop_map(|(f, t, id)| {
                encode_frame_to_vec(id, &Packet::Move(&Move::new(f[0], f[1], f[2], f[3], t)))
            }),
            any::<u32>().prop_map(|target_id| encode_frame_to_vec(1, &Packet::Attack { target_id })),
            "\\PC{1,60}".prop_map(|text| {
                let text: String = text.chars().take(64).collect();
                encode_frame_to_vec(1, &Packet::Chat { text: &text })
            }),
            prop::collection::vec(any::<u8>(), 0..=64)
                .prop_map(|payload| encode_frame_to_vec(1, &Packet::Ping { payload: &payload })),
        ]
    }

    proptest! {
        #[test]
        fn valid_frames_decode_identically_under_any_split(
            frames in prop::collection::vec(arb_packet_bytes(), 1..20),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let stream: Vec<u8> = frames.concat();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for point in points {
                chunks.push(&stream[start..point]);
                start = point;
            }
            chunks.push(&stream[start..]);
            let mut decoder = session_decoder(1024);
            let decoded = decode_all(&mut decoder, &chunks).unwrap();
            prop_assert_eq!(decoded.len(), frames.len());
            for (frame, original) in decoded.iter().zip(&frames) {
                let (expected, rest) = RawFrame::split_from(original).unwrap();
                prop_assert!(rest.is_empty());
                prop_assert_eq!(frame.0, expected.packet_id());
                prop_assert_eq!(frame.1, expected.player_id());
                prop_assert_eq!(&frame.2[..], expected.payload());
                // Re-encoding the parsed packet gives back the original bytes.
                let packet = Packet::parse(frame.0, &frame.2).unwrap();
                prop_assert_eq!(&encode_frame_to_vec(frame.1, &packet), original);
            }
            prop_assert!(!decoder.is_mid_frame());
        }

        #[test]
        fn garbage_never_panics_and_stays_bounded(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
            max_payload in 0u32..2048,
        ) {
            let mut decoder = FrameDecoder::new(Direction::ToServer, max_payload);
            'outer: for chunk in &chunks {
                let mut input = &chunk[..];
                loop {
                    match decoder.next_frame(&mut input) {
                        Ok(Some(frame)) => {
                            prop_assert!(frame.payload().len() <= max_payload as usize);
                            let _ = frame.packet();
                        }
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
                prop_assert!(decoder.buffered_len() <= HEADER_LEN + max_payload as usize);
            }
        }
    }
}
