//! What an honest bot does in `gamewire bots`: its state, the actions it schedules (MOVE, CHAT, ATTACK),
//! its random walk, and how it follows the frames it receives.

use gamewire_proto::Encode;
use gamewire_proto::{
    Direction, FrameDecoder, Move, Packet, PacketKind, SERVER_PAYLOAD_MAX, encode_frame_to_vec,
};
use mio::net::TcpStream;

use super::BotsArgs;
use super::engine::{Received, Sim};
use super::misbehave::ChaosState;
use super::udp::UdpLink;
use crate::clock::client_time;

/// What a bot does when an entry of the schedule comes due (ordered: the schedule's tuples compare it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Action {
    Connect,
    Move,
    Chat,
    Attack,
    /// A chaos bot's next misdeed.
    Misbehave,
    /// A stalled chaos bot reads again.
    Resume,
    /// The answer to a chaos bot's misdeed is late.
    AnswerDeadline,
    /// The server has not closed a chaos bot's connection after a fatal ERROR.
    CloseDeadline,
    /// A UDP bot's client has timers due (resends, acknowledgements, keepalives, timeouts).
    UdpTimer,
}

/// A bot's connection, by transport: an enum rather than a trait object, so that the TCP path stays
/// a direct call.
#[derive(Debug)]
pub(super) enum Link {
    Tcp(TcpStream),
    /// Boxed: a client's state is far larger than a stream, and most runs have no UDP bot at all.
    Udp(Box<UdpLink>),
}

/// Where a bot's current connection stands.
#[derive(Debug, PartialEq)]
pub(super) enum State {
    Idle,
    Connecting,
    Playing,
    /// A chaos bot's session that the server must end (a fatal misdeed sent or a fatal ERROR
    /// received): nothing more is sent on it.
    Finished,
    Gone,
}

/// One simulated player: its connection, where it is, whom it sees, and its misbehaviour if a chaos bot.
#[derive(Debug)]
pub(super) struct Bot {
    pub(super) stream: Option<Link>,
    pub(super) state: State,
    pub(super) decoder: FrameDecoder,
    /// Bytes the kernel did not take yet: open-loop sends queue here rather than wait.
    pub(super) pending: Vec<u8>,
    pub(super) id: u32,
    pub(super) x: f32,
    pub(super) z: f32,
    home: (f32, f32),
    heading: f32,
    /// Players in view, in ENTER order (a handful each: a linear search beats hashing).
    pub(super) seen: Vec<Seen>,
    /// Connections opened so far: a scheduled action of an earlier one is void.
    pub(super) session: u32,
    /// A connection of this bot was established at least once.
    pub(super) connected_once: bool,
    pub(super) welcomed_once: bool,
    /// `Some` for a chaos bot.
    pub(super) chaos: Option<ChaosState>,
}

impl Bot {
    pub(super) fn new(heading: f32) -> Bot {
        Bot {
            stream: None,
            state: State::Idle,
            decoder: FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX),
            pending: Vec::new(),
            id: 0,
            x: 0.0,
            z: 0.0,
            home: (0.0, 0.0),
            heading,
            seen: Vec::new(),
            session: 0,
            connected_once: false,
            welcomed_once: false,
            chaos: None,
        }
    }

    pub(super) fn is_stalled(&self) -> bool {
        self.chaos.as_ref().is_some_and(|chaos| chaos.stalled)
    }

    /// Forgets everything about the previous connection, before a new one.
    pub(super) fn start_session(&mut self) {
        self.session += 1;
        self.decoder = FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX);
        self.pending.clear();
        self.id = 0;
        self.seen.clear();
        if let Some(chaos) = &mut self.chaos {
            *chaos = ChaosState::default();
        }
    }
}

/// A player in a bot's view.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    pub(super) id: u32,
    pub(super) x: f32,
    pub(super) z: f32,
    /// `client_time` of the last MOVE received about it since its ENTER.
    pub(super) last_client_time: Option<u32>,
    /// An honest bot of this process (by its name): its MOVEs count in the delivery figures.
    pub(super) honest: bool,
}

/// Parameters learned from WELCOME.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WorldInfo {
    pub(super) world_w: f32,
    pub(super) world_h: f32,
    pub(super) max_speed: f32,
}

impl Sim<'_> {
    /// Performs `action` for bot `index`, due at `due`.
    pub(super) fn act(
        &mut self,
        bot: &mut Bot,
        index: usize,
        action: Action,
        due: u64,
    ) -> anyhow::Result<()> {
        match action {
            Action::Connect => self.connect(bot, index)?,
            Action::Misbehave => self.misbehave(bot, index, due),
            Action::Resume => self.resume(bot, index),
            Action::AnswerDeadline => self.answer_deadline(bot, index, due),
            Action::CloseDeadline => self.close_deadline(bot, index),
            Action::UdpTimer => self.udp_timer(bot, index, due),
            _ if bot.state != State::Playing || bot.id == 0 => {}
            Action::Move => {
                step(self.args, bot, &self.world, &mut self.rng);
                let speed = self.world.max_speed * self.args.speed_factor;
                let step = Move::new(bot.x, 0.0, bot.z, speed, client_time(due));
                let packet = Packet::Move(&step);
                let frame = encode_frame_to_vec(0, &packet);
                self.send(bot, index, &frame, PacketKind::Move, packet.channel());
                self.at(due + self.period, action, index, bot.session);
            }
            Action::Chat => {
                let text = format!("hello from bot {index}");
                let packet = Packet::Chat { text: &text };
                let frame = encode_frame_to_vec(0, &packet);
                self.send(bot, index, &frame, PacketKind::Chat, packet.channel());
                self.at(due + (1e6 / self.args.chat_hz) as u64, action, index, bot.session);
            }
            Action::Attack => {
                let origin = (bot.x, bot.z);
                let range = self.args.attack_range * 0.9;
                let in_range: Vec<u32> = bot
                    .seen
                    .iter()
                    .filter(|seen| (seen.x - origin.0).hypot(seen.z - origin.1) <= range)
                    .map(|seen| seen.id)
                    .collect();
                if !in_range.is_empty() {
                    let target_id = in_range[self.rng.usize(..in_range.len())];
                    let packet = Packet::Attack { target_id };
                    let frame = encode_frame_to_vec(0, &packet);
                    self.send(bot, index, &frame, PacketKind::Attack, packet.channel());
                }
                self.at(due + (1e6 / self.args.attack_hz) as u64, action, index, bot.session);
            }
        }
        Ok(())
    }

    /// Acts on a frame bot `index` received at `now`.
    pub(super) fn handle(&mut self, bot: &mut Bot, index: usize, received: Received, now: u64) {
        if bot.chaos.as_ref().is_some_and(|chaos| chaos.fatal_received) {
            // Protocol v1: after a fatal ERROR the server sends nothing more on the connection.
            self.counters.chaos.frames_after_fatal += 1;
        }
        match received {
            Received::Welcome { id, x, z, world } => {
                bot.id = id;
                bot.x = x;
                bot.z = z;
                bot.home = (x, z);
                self.world = world;
                if bot.chaos.is_some() && bot.welcomed_once {
                    self.counters.chaos.reconnects += 1;
                }
                bot.welcomed_once = true;
                self.schedule_play(index, bot.session, now);
                if bot.chaos.is_some() {
                    self.schedule_misdeed(index, bot.session, now);
                }
            }
            Received::Enter { about, x, z, honest } => {
                bot.seen.push(Seen { id: about, x, z, last_client_time: None, honest })
            }
            Received::Leave { about } => bot.seen.retain(|seen| seen.id != about),
            Received::Move { about, x, z, stamp } if about == bot.id => {
                // A correction (or a respawn, client_time 0): the server's position is the truth.
                bot.x = x;
                bot.z = z;
                if stamp != 0 {
                    self.handle_correction(bot, index, stamp, now);
                }
            }
            Received::Move { about, x, z, stamp } => self.check_move(bot, about, (x, z), stamp, now),
            Received::Error { code } => self.handle_error(bot, index, code, now),
            Received::Other => {}
        }
    }

    fn schedule_play(&mut self, index: usize, session: u32, now: u64) {
        for (hz, action) in [
            (self.args.move_hz, Action::Move),
            (self.args.chat_hz, Action::Chat),
            (self.args.attack_hz, Action::Attack),
        ] {
            if hz > 0.0 {
                // A random phase spreads the bots' sends evenly over the period.
                let period = (1e6 / hz) as u64;
                let due = now + self.rng.u64(0..period.max(1));
                self.at(due, action, index, session);
            }
        }
    }
}

/// One step of a random walk that stays inside the world (and near home with --stay-within).
fn step(args: &BotsArgs, bot: &mut Bot, world: &WorldInfo, rng: &mut fastrand::Rng) {
    let distance = world.max_speed * args.speed_factor / args.move_hz as f32;
    bot.heading += (rng.f32() - 0.5) * 0.8;
    let mut x = bot.x + bot.heading.cos() * distance;
    let mut z = bot.z + bot.heading.sin() * distance;
    let margin = 1.0f32.min(world.world_w / 4.0).min(world.world_h / 4.0);
    let outside_world = x < margin || x > world.world_w - margin || z < margin || z > world.world_h - margin;
    let too_far = args.stay_within.is_some_and(|r| (x - bot.home.0).hypot(z - bot.home.1) > r);
    if outside_world || too_far {
        // Turn back towards home (inside the world by construction) and step that way.
        bot.heading = (bot.home.1 - bot.z).atan2(bot.home.0 - bot.x) + (rng.f32() - 0.5) * 0.5;
        x = bot.x + bot.heading.cos() * distance;
        z = bot.z + bot.heading.sin() * distance;
    }
    bot.x = x.clamp(0.0, world.world_w.next_down());
    bot.z = z.clamp(0.0, world.world_h.next_down());
}
