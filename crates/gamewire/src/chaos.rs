//! Misdeeds of `gamewire bots --chaos`: the bytes each one sends and the answer protocol v1 prescribes.

use std::collections::BTreeMap;

use gamewire_proto::{ErrorCode, HEADER_LEN, Move, Packet, PacketKind, encode_frame_to_vec};
use serde::{Deserialize, Serialize};

/// Something a chaos bot does that an honest client never would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Misdeed {
    /// Closes its socket without a word (FIN).
    Close,
    /// Aborts its connection (SO_LINGER 0: RST, whatever the server was sending).
    Reset,
    /// Stops reading for a few seconds while still sending (a slow consumer).
    Stall,
    /// A MOVE one byte short.
    Malformed,
    /// A MOVE whose header names another player.
    SpoofedId,
    /// A header announcing 1 MiB of payload.
    TooLarge,
    /// A WELCOME, which only the server sends.
    UnknownPacket,
    /// 64 random bytes.
    Garbage,
    /// A second HELLO.
    HelloTwice,
    /// The first 20 bytes of a MOVE, then silence (until the partial-frame timeout).
    PartialFrame,
    /// A MOVE to the far side of the world.
    Teleport,
    /// A MOVE whose x is NaN.
    NotANumber,
    /// 100 legal MOVEs at once, over the 60/s limit (burst 60).
    Burst,
}

/// What protocol v1 has the server answer to a misdeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expected {
    /// Nothing to answer: the bot went away by itself.
    Nothing,
    /// This ERROR, then the server closes.
    Fatal(ErrorCode),
    /// Some fatal ERROR (random bytes decide which check fails first), then the server closes.
    AnyFatal,
    /// The stream goes on once the bot reads again (or SLOW_CONSUMER, should the queue outgrow the
    /// server's limits meanwhile).
    Resumed,
    /// A correction: a MOVE about the bot itself, with the refused MOVE's client_time.
    Correction,
    /// ERROR(RATE_LIMITED), and the connection stays open.
    RateLimited,
}

/// How many MOVEs a [`Misdeed::Burst`] sends at once.
pub(crate) const BURST_MOVES: u32 = 100;

impl Misdeed {
    /// Every misdeed; a chaos bot picks one uniformly each time.
    pub(crate) const ALL: [Misdeed; 13] = [
        Misdeed::Close,
        Misdeed::Reset,
        Misdeed::Stall,
        Misdeed::Malformed,
        Misdeed::SpoofedId,
        Misdeed::TooLarge,
        Misdeed::UnknownPacket,
        Misdeed::Garbage,
        Misdeed::HelloTwice,
        Misdeed::PartialFrame,
        Misdeed::Teleport,
        Misdeed::NotANumber,
        Misdeed::Burst,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Misdeed::Close => "close",
            Misdeed::Reset => "reset",
            Misdeed::Stall => "stall",
            Misdeed::Malformed => "malformed",
            Misdeed::SpoofedId => "spoofed_id",
            Misdeed::TooLarge => "too_large",
            Misdeed::UnknownPacket => "unknown_packet",
            Misdeed::Garbage => "garbage",
            Misdeed::HelloTwice => "hello_twice",
            Misdeed::PartialFrame => "partial_frame",
            Misdeed::Teleport => "teleport",
            Misdeed::NotANumber => "nan",
            Misdeed::Burst => "burst",
        }
    }

    pub(crate) fn expected(self) -> Expected {
        match self {
            Misdeed::Close | Misdeed::Reset => Expected::Nothing,
            Misdeed::Stall => Expected::Resumed,
            Misdeed::Malformed => Expected::Fatal(ErrorCode::Malformed),
            Misdeed::SpoofedId => Expected::Fatal(ErrorCode::SpoofedId),
            Misdeed::TooLarge => Expected::Fatal(ErrorCode::TooLarge),
            Misdeed::UnknownPacket => Expected::Fatal(ErrorCode::UnknownPacket),
            Misdeed::Garbage => Expected::AnyFatal,
            Misdeed::HelloTwice => Expected::Fatal(ErrorCode::BadState),
            Misdeed::PartialFrame => Expected::Fatal(ErrorCode::Timeout),
            Misdeed::Teleport | Misdeed::NotANumber => Expected::Correction,
            Misdeed::Burst => Expected::RateLimited,
        }
    }

    /// Whether the bytes of this misdeed end the session: the server must close, so the bot sends
    /// nothing more on the connection (it would only be read and dropped, or, after a partial frame,
    /// complete it).
    pub(crate) fn ends_session(self) -> bool {
        matches!(self.expected(), Expected::Fatal(_) | Expected::AnyFatal)
    }

    /// How long the answer may take, µs: the partial-frame timeout (5 s by default) plus slack for
    /// the partial frame, a few seconds for the rest.
    pub(crate) fn answer_within_us(self) -> u64 {
        match self {
            Misdeed::PartialFrame => 10_000_000,
            _ => 5_000_000,
        }
    }

    /// The bytes of the misdeed for a bot with id `own_id` at (`x`, `z`) in a `world_w` × `world_h`
    /// world; MOVEs carry `stamp` as client_time (a burst: `stamp`, `stamp + 1`, ...). Empty for the
    /// misdeeds that send nothing.
    pub(crate) fn bytes(
        self,
        own_id: u32,
        (x, z): (f32, f32),
        (world_w, world_h): (f32, f32),
        stamp: u32,
        rng: &mut fastrand::Rng,
    ) -> Vec<u8> {
        let legal_move = Move::new(x, 0.0, z, 0.0, stamp);
        match self {
            Misdeed::Close | Misdeed::Reset | Misdeed::Stall => Vec::new(),
            Misdeed::Malformed => {
                let mut frame = encode_frame_to_vec(0, &Packet::Move(&legal_move));
                frame.pop();
                let length = (frame.len() - HEADER_LEN) as u32;
                frame[8..12].copy_from_slice(&length.to_le_bytes());
                frame
            }
            Misdeed::SpoofedId => {
                let other = if own_id == u32::MAX { 1 } else { own_id + 1 };
                encode_frame_to_vec(other, &Packet::Move(&legal_move))
            }
            Misdeed::TooLarge => header(PacketKind::Move.id(), 0, 1 << 20).to_vec(),
            Misdeed::UnknownPacket => {
                let mut frame = header(PacketKind::Welcome.id(), 0, 40).to_vec();
                frame.resize(HEADER_LEN + 40, 0);
                frame
            }
            Misdeed::Garbage => (0..64).map(|_| rng.u8(..)).collect(),
            Misdeed::HelloTwice => encode_frame_to_vec(0, &Packet::Hello { name: "twice" }),
            Misdeed::PartialFrame => {
                let mut frame = encode_frame_to_vec(0, &Packet::Move(&legal_move));
                frame.truncate(HEADER_LEN + 8);
                frame
            }
            Misdeed::Teleport => {
                // Half the world away in both directions: far beyond what one period's walk reaches.
                let far =
                    Move::new((x + world_w / 2.0) % world_w, 0.0, (z + world_h / 2.0) % world_h, 0.0, stamp);
                encode_frame_to_vec(0, &Packet::Move(&far))
            }
            Misdeed::NotANumber => {
                encode_frame_to_vec(0, &Packet::Move(&Move::new(f32::NAN, 0.0, z, 0.0, stamp)))
            }
            Misdeed::Burst => (0..BURST_MOVES)
                .flat_map(|i| {
                    encode_frame_to_vec(0, &Packet::Move(&Move::new(x, 0.0, z, 0.0, stamp.wrapping_add(i))))
                })
                .collect(),
        }
    }
}

/// A frame header from native values, as the wire lays it out.
fn header(packet_id: u32, player_id: u32, data_length: u32) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[0..4].copy_from_slice(&packet_id.to_le_bytes());
    out[4..8].copy_from_slice(&player_id.to_le_bytes());
    out[8..12].copy_from_slice(&data_length.to_le_bytes());
    out
}

/// What the server did after a misdeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// An ERROR with this wire code.
    Error(u32),
    /// A correction carrying the misdeed's client_time.
    Correction,
    /// The bot read again and the connection was still there.
    Resumed,
    /// The server closed (or reset) the connection without an ERROR first.
    ClosedWithoutError,
    /// Nothing within the misdeed's time.
    Silence,
}

impl Answer {
    pub(crate) fn name(self) -> String {
        match self {
            Answer::Error(code) => error_name(code),
            Answer::Correction => "correction".to_string(),
            Answer::Resumed => "resumed".to_string(),
            Answer::ClosedWithoutError => "closed without ERROR".to_string(),
            Answer::Silence => "no answer".to_string(),
        }
    }
}

/// The protocol's name of an ERROR code (`CODE_n` for one it does not define).
pub(crate) fn error_name(code: u32) -> String {
    ErrorCode::from_u32(code).map_or_else(|| format!("CODE_{code}"), |c| c.name().to_string())
}

/// Whether `answer` is what protocol v1 prescribes for `misdeed`.
pub(crate) fn is_expected(misdeed: Misdeed, answer: Answer) -> bool {
    let fatal = |code| ErrorCode::from_u32(code).is_some_and(ErrorCode::is_fatal);
    match (misdeed.expected(), answer) {
        (Expected::Fatal(want), Answer::Error(code)) => code == want.code(),
        (Expected::AnyFatal, Answer::Error(code)) => fatal(code),
        (Expected::Resumed, Answer::Resumed) => true,
        (Expected::Resumed, Answer::Error(code)) => code == ErrorCode::SlowConsumer.code(),
        (Expected::Correction, Answer::Correction) => true,
        (Expected::RateLimited, Answer::Error(code)) => code == ErrorCode::RateLimited.code(),
        _ => false,
    }
}

/// What the chaos bots did and what the server answered, after the warm-up: `gamewire bots --json`
/// prints it under `chaos`, the bench reads it back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ChaosSummary {
    /// Chaos bots (the others are the honest ones the rest of the summary is about).
    pub(crate) bots: usize,
    /// Misdeeds done, by kind.
    pub(crate) actions: BTreeMap<String, u64>,
    pub(crate) action_total: u64,
    /// The server's answer to each misdeed: misdeed → answer → count. Answers to no misdeed (an
    /// ERROR or a correction out of the blue) are under `unprompted`.
    pub(crate) answers: BTreeMap<String, BTreeMap<String, u64>>,
    /// Answers that are not what protocol v1 prescribes (counted in `answers` too).
    pub(crate) unexpected_answers: u64,
    /// ERRORs the chaos bots received, by code.
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) error_total: u64,
    /// Connections the server closed after its fatal ERROR, as protocol v1 prescribes.
    pub(crate) closed_after_error: u64,
    /// Connections still open 5 s after a fatal ERROR (the bot then closed them itself).
    pub(crate) not_closed_after_error: u64,
    /// Frames the server sent after a fatal ERROR (protocol v1: none).
    pub(crate) frames_after_fatal: u64,
    /// Connections the server closed while no misdeed was pending and without a fatal ERROR.
    pub(crate) unexplained_closes: u64,
    /// Sessions welcomed again after a disconnect.
    pub(crate) reconnects: u64,
    pub(crate) connect_failures: u64,
}

impl ChaosSummary {
    pub(crate) fn record_action(&mut self, misdeed: Misdeed) {
        *self.actions.entry(misdeed.name().to_string()).or_default() += 1;
        self.action_total += 1;
    }

    /// Records the answer to `misdeed` (`None`: an answer to nothing the bot did).
    pub(crate) fn record_answer(&mut self, misdeed: Option<Misdeed>, answer: Answer) {
        let name = misdeed.map_or("unprompted", Misdeed::name);
        *self.answers.entry(name.to_string()).or_default().entry(answer.name()).or_default() += 1;
        if !misdeed.is_some_and(|m| is_expected(m, answer)) {
            self.unexpected_answers += 1;
        }
    }

    pub(crate) fn record_error(&mut self, code: u32) {
        *self.errors.entry(error_name(code)).or_default() += 1;
        self.error_total += 1;
    }

    /// Adds another run's figures (the bench sums its runs).
    pub(crate) fn add(&mut self, other: &ChaosSummary) {
        fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
            for (key, n) in from {
                *into.entry(key.clone()).or_default() += n;
            }
        }
        self.bots = self.bots.max(other.bots);
        add_map(&mut self.actions, &other.actions);
        self.action_total += other.action_total;
        for (misdeed, answers) in &other.answers {
            add_map(self.answers.entry(misdeed.clone()).or_default(), answers);
        }
        self.unexpected_answers += other.unexpected_answers;
        add_map(&mut self.errors, &other.errors);
        self.error_total += other.error_total;
        self.closed_after_error += other.closed_after_error;
        self.not_closed_after_error += other.not_closed_after_error;
        self.frames_after_fatal += other.frames_after_fatal;
        self.unexplained_closes += other.unexplained_closes;
        self.reconnects += other.reconnects;
        self.connect_failures += other.connect_failures;
    }
}

#[cfg(test)]
mod tests {
    use gamewire_proto::{Direction, FrameDecoder};

    use super::*;

    /// What a server's decoder and parser make of `bytes` from the session with id `own_id`: the
    /// error code of the first frame refused, or the packets accepted.
    fn server_view(bytes: &[u8], own_id: u32) -> Result<Vec<PacketKind>, ErrorCode> {
        let mut decoder = FrameDecoder::new(Direction::ToServer, gamewire_proto::DEFAULT_MAX_PAYLOAD);
        decoder.set_player_id(own_id).expect("a fresh decoder holds no header");
        let mut input = bytes;
        let mut kinds = Vec::new();
        loop {
            match decoder.next_frame(&mut input) {
                Ok(Some(frame)) => kinds.push(frame.packet().map_err(|e| e.error_code())?.kind()),
                Ok(None) => return Ok(kinds),
                Err(error) => return Err(error.error_code()),
            }
        }
    }

    fn bytes(misdeed: Misdeed) -> Vec<u8> {
        misdeed.bytes(7, (10.0, 20.0), (200.0, 200.0), 1234, &mut fastrand::Rng::with_seed(3))
    }

    #[test]
    fn frames_refused_by_the_decoder_carry_the_expected_code() {
        for misdeed in Misdeed::ALL {
            if let Expected::Fatal(code) = misdeed.expected()
                && code != ErrorCode::BadState
                && code != ErrorCode::Timeout
            {
                assert_eq!(server_view(&bytes(misdeed), 7), Err(code), "{}", misdeed.name());
            }
        }
        for seed in 0..50 {
            let garbage =
                Misdeed::Garbage.bytes(7, (1.0, 1.0), (9.0, 9.0), 0, &mut fastrand::Rng::with_seed(seed));
            let refused = server_view(&garbage, 7).expect_err("random bytes are refused");
            assert!(refused.is_fatal(), "{refused:?}");
        }
    }

    #[test]
    fn the_rest_decode_and_the_world_refuses_them() {
        // A second HELLO is well-formed: the session's state refuses it.
        assert_eq!(server_view(&bytes(Misdeed::HelloTwice), 7), Ok(vec![PacketKind::Hello]));
        // A partial frame is nothing yet: the server waits for the rest until its timeout.
        let partial = bytes(Misdeed::PartialFrame);
        assert_eq!(server_view(&partial, 7), Ok(vec![]));
        assert!(partial.len() < HEADER_LEN + 20);
        let burst = server_view(&bytes(Misdeed::Burst), 7).unwrap();
        assert_eq!(burst, vec![PacketKind::Move; BURST_MOVES as usize]);
        for misdeed in [Misdeed::Teleport, Misdeed::NotANumber] {
            let frame = bytes(misdeed);
            assert_eq!(server_view(&frame, 7), Ok(vec![PacketKind::Move]));
            let claimed = Packet::parse(PacketKind::Move.id(), &frame[HEADER_LEN..]).unwrap();
            let Packet::Move(m) = claimed else { panic!("a MOVE") };
            assert_eq!(m.client_time.get(), 1234);
            let (x, z) = (m.x.get(), m.z.get());
            let legal = x.is_finite() && (x - 10.0).hypot(z - 20.0) < 50.0;
            assert!(!legal, "{}: ({x}, {z}) must be refused", misdeed.name());
        }
        for misdeed in [Misdeed::Close, Misdeed::Reset, Misdeed::Stall] {
            assert!(bytes(misdeed).is_empty());
        }
    }

    #[test]
    fn answers_are_checked_against_the_protocol() {
        assert!(is_expected(Misdeed::TooLarge, Answer::Error(2)));
        assert!(!is_expected(Misdeed::TooLarge, Answer::Error(1)));
        assert!(is_expected(Misdeed::Garbage, Answer::Error(3)));
        assert!(!is_expected(Misdeed::Garbage, Answer::Error(6)), "RATE_LIMITED is not fatal");
        assert!(is_expected(Misdeed::Stall, Answer::Resumed));
        assert!(is_expected(Misdeed::Stall, Answer::Error(9)));
        assert!(!is_expected(Misdeed::Teleport, Answer::Silence));
        assert!(is_expected(Misdeed::Burst, Answer::Error(6)));
        assert!(!is_expected(Misdeed::Malformed, Answer::ClosedWithoutError));
        let mut summary = ChaosSummary::default();
        summary.record_action(Misdeed::Burst);
        summary.record_answer(Some(Misdeed::Burst), Answer::Error(6));
        summary.record_answer(None, Answer::Error(10));
        summary.record_error(6);
        assert_eq!(summary.answers["burst"]["RATE_LIMITED"], 1);
        assert_eq!(summary.answers["unprompted"]["TIMEOUT"], 1);
        assert_eq!(summary.unexpected_answers, 1);
        let mut total = summary.clone();
        total.add(&summary);
        assert_eq!((total.action_total, total.error_total, total.unexpected_answers), (2, 2, 2));
        assert_eq!(total.answers["burst"]["RATE_LIMITED"], 2);
    }
}
