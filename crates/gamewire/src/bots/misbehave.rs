//! The chaos bots of `gamewire bots --chaos`: a misdeed now and then, and the check of the server's answer
//! to each against what protocol v1 prescribes (the misdeeds themselves are in crate::chaos).

use std::time::Duration;

use gamewire_proto::ErrorCode;

use super::engine::{MAX_PENDING, Sim};
use super::play::{Action, Bot, Link, State};
use crate::chaos::{Answer, Expected, Misdeed};
use crate::clock::{client_time, monotonic_micros};

/// Protocol v1 sends RATE_LIMITED at most once a second per player; µs, with 10 % to spare.
const RATE_ERROR_INTERVAL_US: u64 = 1_100_000;

/// How long a chaos bot waits after a fatal ERROR for the server to close the connection, µs.
const CLOSE_WAIT_US: u64 = 5_000_000;

/// The misbehaviour of a chaos bot in its current session.
#[derive(Debug, Default)]
pub(super) struct ChaosState {
    /// The misdeed whose answer is awaited.
    pub(super) pending: Option<Pending>,
    /// Not reading (a slow consumer) until its Resume action.
    pub(super) stalled: bool,
    /// A fatal ERROR arrived: the server must send nothing more and close.
    pub(super) fatal_received: bool,
    /// When the last RATE_LIMITED arrived, µs.
    rate_limited_at: Option<u64>,
}

/// A misdeed whose answer is awaited.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub(super) misdeed: Misdeed,
    /// The client_time of its MOVE, which a correction carries back.
    stamp: u32,
    /// When its AnswerDeadline (or, for a stall, its Resume) is due.
    deadline: u64,
}

impl Sim<'_> {
    /// The server refused a MOVE of the bot's, the one stamped `stamp`.
    pub(super) fn handle_correction(&mut self, bot: &mut Bot, index: usize, stamp: u32, now: u64) {
        let Some(chaos) = &mut bot.chaos else {
            self.counters.corrections += 1;
            return;
        };
        let answered =
            chaos.pending.filter(|p| p.stamp == stamp && p.misdeed.expected() == Expected::Correction);
        if let Some(pending) = answered {
            chaos.pending = None;
            self.counters.chaos.record_answer(Some(pending.misdeed), Answer::Correction);
            self.schedule_misdeed(index, bot.session, now);
        } else {
            self.counters.chaos.record_answer(None, Answer::Correction);
        }
    }

    /// An ERROR arrived: an honest bot counts it; to a chaos bot it may be the answer it awaits.
    pub(super) fn handle_error(&mut self, bot: &mut Bot, index: usize, code: u32, now: u64) {
        let Some(chaos) = &mut bot.chaos else {
            *self.counters.errors.entry(code).or_default() += 1;
            return;
        };
        self.counters.chaos.record_error(code);
        if code == ErrorCode::RateLimited.code() {
            chaos.rate_limited_at = Some(now);
        }
        let fatal = ErrorCode::from_u32(code).is_none_or(ErrorCode::is_fatal);
        // A fatal ERROR answers whatever is pending; a non-fatal one only a burst (INVALID_TARGET, say,
        // answers an ATTACK, not the misdeed).
        let answers_pending =
            chaos.pending.is_some_and(|p| fatal || p.misdeed.expected() == Expected::RateLimited);
        if answers_pending && let Some(pending) = chaos.pending.take() {
            self.counters.chaos.record_answer(Some(pending.misdeed), Answer::Error(code));
            if !fatal {
                self.schedule_misdeed(index, bot.session, now);
            }
        } else {
            self.counters.chaos.record_answer(None, Answer::Error(code));
        }
        if fatal && !chaos.fatal_received {
            chaos.fatal_received = true;
            bot.state = State::Finished;
            self.at(now + CLOSE_WAIT_US, Action::CloseDeadline, index, bot.session);
        }
    }

    pub(super) fn schedule_misdeed(&mut self, index: usize, session: u32, now: u64) {
        let delay = self.args.chaos_interval * 1e6 * (0.5 + self.rng.f64());
        self.at(now + delay as u64, Action::Misbehave, index, session);
    }

    /// A chaos bot's next misdeed, picked at random.
    pub(super) fn misbehave(&mut self, bot: &mut Bot, index: usize, now: u64) {
        let Some(chaos) = &mut bot.chaos else { return };
        if bot.state != State::Playing || bot.id == 0 || chaos.pending.is_some() || chaos.stalled {
            return;
        }
        let misdeed = Misdeed::ALL[self.rng.usize(..Misdeed::ALL.len())];
        if misdeed == Misdeed::Burst
            && let Some(at) = chaos.rate_limited_at
            && now < at + RATE_ERROR_INTERVAL_US
        {
            // The server sends RATE_LIMITED at most once a second: a burst now could go unanswered
            // by right. It arrived here after the server sent it, so a second on this clock is at
            // least one on the server's.
            self.at(at + RATE_ERROR_INTERVAL_US, Action::Misbehave, index, bot.session);
            return;
        }
        self.counters.chaos.record_action(misdeed);
        match misdeed {
            Misdeed::Close | Misdeed::Reset => {
                if misdeed == Misdeed::Reset
                    && let Some(Link::Tcp(stream)) = &bot.stream
                {
                    // SO_LINGER 0: close() sends RST, discarding whatever either side still had queued.
                    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                }
                self.drop_stream(bot);
                bot.state = State::Gone;
                self.reconnect_later(bot, index);
            }
            Misdeed::Stall => {
                let resume = now + self.rng.u64(2_000_000..8_000_000);
                chaos.stalled = true;
                chaos.pending = Some(Pending { misdeed, stamp: 0, deadline: resume });
                self.at(resume, Action::Resume, index, bot.session);
            }
            _ => {
                let stamp = client_time(now);
                let area = (self.world.world_w, self.world.world_h);
                let bytes = misdeed.bytes(bot.id, (bot.x, bot.z), area, stamp, &mut self.rng);
                let deadline = now + misdeed.answer_within_us();
                chaos.pending = Some(Pending { misdeed, stamp, deadline });
                if misdeed.ends_session() {
                    bot.state = State::Finished;
                }
                self.at(deadline, Action::AnswerDeadline, index, bot.session);
                if bot.pending.len() + bytes.len() <= MAX_PENDING {
                    bot.pending.extend_from_slice(&bytes);
                    self.flush(bot, index);
                }
            }
        }
    }

    /// A stalled chaos bot reads again.
    pub(super) fn resume(&mut self, bot: &mut Bot, index: usize) {
        let Some(chaos) = &mut bot.chaos else { return };
        if !chaos.stalled {
            return;
        }
        chaos.stalled = false;
        // Edge-triggered readiness will not report again what arrived meanwhile: read it now.
        self.read(bot, index);
        if bot.stream.is_none() {
            return;
        }
        let Some(chaos) = &mut bot.chaos else { return };
        if let Some(pending) = chaos.pending.filter(|p| p.misdeed == Misdeed::Stall) {
            chaos.pending = None;
            self.counters.chaos.record_answer(Some(pending.misdeed), Answer::Resumed);
            self.schedule_misdeed(index, bot.session, monotonic_micros());
        }
    }

    /// The answer to a chaos bot's misdeed is late (`due` names which misdeed's deadline this is).
    pub(super) fn answer_deadline(&mut self, bot: &mut Bot, index: usize, due: u64) {
        let Some(chaos) = &mut bot.chaos else { return };
        let Some(pending) = chaos.pending.filter(|p| p.deadline == due && p.misdeed != Misdeed::Stall) else {
            return;
        };
        chaos.pending = None;
        self.counters.chaos.record_answer(Some(pending.misdeed), Answer::Silence);
        if pending.misdeed.ends_session() {
            // The server never answered: give up on the connection and come back.
            self.drop_stream(bot);
            bot.state = State::Gone;
            self.reconnect_later(bot, index);
        } else {
            self.schedule_misdeed(index, bot.session, due);
        }
    }

    /// The server still has not closed a chaos bot's connection after its fatal ERROR.
    pub(super) fn close_deadline(&mut self, bot: &mut Bot, index: usize) {
        if !bot.chaos.as_ref().is_some_and(|chaos| chaos.fatal_received) || bot.stream.is_none() {
            return;
        }
        self.counters.chaos.not_closed_after_error += 1;
        self.drop_stream(bot);
        bot.state = State::Gone;
        self.reconnect_later(bot, index);
    }
}
