//! `gamewire bots`: many simulated players over real TCP from one thread, open-loop; with `--chaos`,
//! some of them misbehave at random and reconnect.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use gamewire_proto::{
    Direction, ErrorCode, FrameDecoder, Move, Packet, PacketKind, RawFrame, SERVER_PAYLOAD_MAX,
    encode_frame_to_vec,
};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

mod args;

use crate::bench::report::LatencySummary;
use crate::chaos::{Answer, ChaosSummary, Expected, Misdeed};
use crate::clock::{client_time, latency_micros, monotonic_micros};
use args::check_args;
pub(crate) use args::{BotsArgs, MAX_BOTS, check_seconds};

/// What one run measured (after the warm-up). With --chaos, everything but `frames_received`,
/// `received` and `sent` (the server's work) is about the honest bots only; `chaos` is about the others.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) bots: usize,
    /// Bots whose connection was established at least once.
    pub(crate) connected: usize,
    /// Bots that received a WELCOME at least once.
    pub(crate) welcomed: usize,
    pub(crate) duration_seconds: f64,
    pub(crate) sent: BTreeMap<&'static str, u64>,
    pub(crate) received: BTreeMap<&'static str, u64>,
    pub(crate) frames_received: u64,
    pub(crate) frames_per_second: f64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) error_total: u64,
    pub(crate) disconnects: u64,
    /// Connections of honest bots that could not be made (refused, unreachable), over the whole run:
    /// warm-up included, when the bots connect.
    pub(crate) connect_failures: u64,
    /// Sends skipped because the server had stopped reading and 1 MiB was already waiting.
    pub(crate) send_stalls: u64,
    /// MOVEs about another player whose `client_time` was not after the previous one received about
    /// that player (since its ENTER): delivered out of order, or twice.
    pub(crate) moves_reordered: u64,
    /// MOVEs about another player that never arrived, inferred from gaps in its `client_time`s: every
    /// bot sends one each period, so a gap of n periods means n - 1 lost.
    pub(crate) moves_missing: u64,
    /// Corrections received: MOVEs of the bots themselves the server refused. A refused MOVE is not
    /// relayed, so each also shows up in `moves_missing` at the bots that see the mover.
    pub(crate) corrections: u64,
    pub(crate) latency_us: LatencySummary,
    /// With --chaos: what the misbehaving bots did and how the server answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) chaos: Option<ChaosSummary>,
}

/// Name prefix of honest bots. A bot tells from the name in ENTER whether another player's MOVEs
/// count in the delivery figures (a chaos bot's bursts and refused MOVEs would spoil them).
const HONEST_PREFIX: &str = "bot";
/// Name prefix of chaos bots.
const CHAOS_PREFIX: &str = "chaos";
/// Protocol v1 sends RATE_LIMITED at most once a second per player; µs, with 10 % to spare.
const RATE_ERROR_INTERVAL_US: u64 = 1_100_000;
/// How long a chaos bot waits after a fatal ERROR for the server to close the connection, µs.
const CLOSE_WAIT_US: u64 = 5_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
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
}

/// Actions by due time: (due µs, action, bot index, the bot's session the action belongs to).
type Schedule = BinaryHeap<Reverse<(u64, Action, usize, u32)>>;

#[derive(Debug, PartialEq)]
enum State {
    Idle,
    Connecting,
    Playing,
    /// A chaos bot's session that the server must end (a fatal misdeed sent or a fatal ERROR
    /// received): nothing more is sent on it.
    Finished,
    Gone,
}

#[derive(Debug)]
struct Bot {
    stream: Option<TcpStream>,
    state: State,
    decoder: FrameDecoder,
    /// Bytes the kernel did not take yet: open-loop sends queue here rather than wait.
    pending: Vec<u8>,
    id: u32,
    x: f32,
    z: f32,
    home: (f32, f32),
    heading: f32,
    /// Players in view, in ENTER order (a handful each: a linear search beats hashing).
    seen: Vec<Seen>,
    /// Connections opened so far: a scheduled action of an earlier one is void.
    session: u32,
    /// A connection of this bot was established at least once.
    connected_once: bool,
    welcomed_once: bool,
    /// `Some` for a chaos bot.
    chaos: Option<ChaosState>,
}

impl Bot {
    fn new(heading: f32) -> Bot {
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

    fn is_stalled(&self) -> bool {
        self.chaos.as_ref().is_some_and(|chaos| chaos.stalled)
    }

    /// Forgets everything about the previous connection, before a new one.
    fn start_session(&mut self) {
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
struct Seen {
    id: u32,
    x: f32,
    z: f32,
    /// `client_time` of the last MOVE received about it since its ENTER.
    last_client_time: Option<u32>,
    /// An honest bot of this process (by its name): its MOVEs count in the delivery figures.
    honest: bool,
}

/// The misbehaviour of a chaos bot in its current session.
#[derive(Debug, Default)]
struct ChaosState {
    /// The misdeed whose answer is awaited.
    pending: Option<Pending>,
    /// Not reading (a slow consumer) until its Resume action.
    stalled: bool,
    /// A fatal ERROR arrived: the server must send nothing more and close.
    fatal_received: bool,
    /// When the last RATE_LIMITED arrived, µs.
    rate_limited_at: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    misdeed: Misdeed,
    /// The client_time of its MOVE, which a correction carries back.
    stamp: u32,
    /// When its AnswerDeadline (or, for a stall, its Resume) is due.
    deadline: u64,
}

/// What a MOVE's `client_time` says about delivery, against the previous one about the same player.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// The next one, a period later (give or take half a period).
    InOrder,
    /// Not after the previous one: out of order, or a duplicate.
    Reordered,
    /// After the previous one by this many periods too many: that many MOVEs never arrived.
    Missing(u64),
}

/// Classifies a MOVE stamped `current` that follows one stamped `previous` from a sender that stamps
/// one every `period_us`. Stamps are CLOCK_MONOTONIC µs truncated to u32, so they are compared modulo
/// 2^32 (a difference of up to 35 minutes either way is read correctly).
fn classify_delivery(previous: u32, current: u32, period_us: u64) -> Delivery {
    let gap = current.wrapping_sub(previous);
    if gap as i32 <= 0 {
        return Delivery::Reordered;
    }
    let (gap, period) = (u64::from(gap), period_us.max(1));
    // More than 1.5 periods: rounding to whole periods absorbs the jitter of the sender's clock reads.
    if 2 * gap > 3 * period { Delivery::Missing((gap + period / 2) / period - 1) } else { Delivery::InOrder }
}

/// Parameters learned from WELCOME.
#[derive(Clone, Copy, Debug, Default)]
struct WorldInfo {
    world_w: f32,
    world_h: f32,
    max_speed: f32,
}

/// Largest backlog a bot keeps for a server that stopped reading; past it the bot counts a stall and
/// drops the send (the server is overloaded: that is what is being measured).
const MAX_PENDING: usize = 1 << 20;

struct Counters {
    sent: [u64; 12],
    received: [u64; 12],
    errors: BTreeMap<u32, u64>,
    disconnects: u64,
    connect_failures: u64,
    send_stalls: u64,
    moves_reordered: u64,
    moves_missing: u64,
    corrections: u64,
    latency: Histogram<u64>,
    chaos: ChaosSummary,
}

impl Counters {
    fn new() -> Self {
        Counters {
            sent: [0; 12],
            received: [0; 12],
            errors: BTreeMap::new(),
            disconnects: 0,
            connect_failures: 0,
            send_stalls: 0,
            moves_reordered: 0,
            moves_missing: 0,
            corrections: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            chaos: ChaosSummary::default(),
        }
    }
}

pub(crate) fn run(args: BotsArgs) -> anyhow::Result<()> {
    let summary = simulate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_human(&summary);
    }
    if summary.welcomed == 0 {
        anyhow::bail!("no bot was welcomed: {}", why_nobody_played(&summary, args.addr));
    }
    Ok(())
}

/// Why a run in which no bot received a WELCOME measured nothing, from its summary.
fn why_nobody_played(summary: &Summary, addr: SocketAddr) -> String {
    if summary.connected == 0 && summary.connect_failures > 0 {
        format!(
            "{} of {} connections failed (refused or unreachable): is a gamewire server listening on {addr}?",
            summary.connect_failures, summary.bots
        )
    } else if summary.connected == 0 {
        format!("no connection to {addr} was established before the run ended (try a longer --warmup)")
    } else {
        format!(
            "{} bots connected to {addr} but none received WELCOME (errors {:?}, disconnects {}): is it a \
             gamewire server, and not full?",
            summary.connected, summary.errors, summary.disconnects
        )
    }
}

fn print_human(summary: &Summary) {
    println!(
        "bots {} (connected {}, welcomed {}) over {:.1} s",
        summary.bots, summary.connected, summary.welcomed, summary.duration_seconds
    );
    println!(
        "received {} frames ({:.0}/s): {:?}",
        summary.frames_received, summary.frames_per_second, summary.received
    );
    println!("sent {:?}", summary.sent);
    if let Some(chaos) = &summary.chaos {
        println!("honest bots ({} of {}):", summary.bots - chaos.bots, summary.bots);
    }
    let l = &summary.latency_us;
    println!(
        "MOVE delivery latency: p50 {} us, p99 {} us, p99.9 {} us, max {} us ({} samples)",
        l.p50, l.p99, l.p999, l.max, l.samples
    );
    println!(
        "MOVEs about others: {} reordered, {} missing; corrections received {}",
        summary.moves_reordered, summary.moves_missing, summary.corrections
    );
    println!(
        "errors {} {:?}, disconnects {}, connect failures {}",
        summary.error_total, summary.errors, summary.disconnects, summary.connect_failures
    );
    if let Some(chaos) = &summary.chaos {
        println!("chaos bots ({}): {} misdeeds {:?}", chaos.bots, chaos.action_total, chaos.actions);
        println!("answers {:?} ({} not as protocol v1 says)", chaos.answers, chaos.unexpected_answers);
        println!(
            "ERRORs {} {:?}; closed after a fatal ERROR {}, not closed {}, frames after a fatal ERROR {}, \
             unexplained closes {}, reconnects {}, connect failures {}",
            chaos.error_total,
            chaos.errors,
            chaos.closed_after_error,
            chaos.not_closed_after_error,
            chaos.frames_after_fatal,
            chaos.unexplained_closes,
            chaos.reconnects,
            chaos.connect_failures
        );
    }
}

/// Runs the bots and returns what was measured after the warm-up.
pub(crate) fn simulate(args: &BotsArgs) -> anyhow::Result<Summary> {
    check_args(args)?;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut bots: Vec<Bot> = (0..args.bots).map(|_| Bot::new(rng.f32() * std::f32::consts::TAU)).collect();
    let chaos_bots = if args.chaos {
        ((args.bots as f64 * args.chaos_fraction).round() as usize).min(args.bots)
    } else {
        0
    };
    if chaos_bots > 0 {
        // A random subset: chaos bots connect throughout the ramp, like the others.
        let mut order: Vec<usize> = (0..args.bots).collect();
        rng.shuffle(&mut order);
        for &index in &order[..chaos_bots] {
            bots[index].chaos = Some(ChaosState::default());
        }
    }
    let mut sim = Sim {
        args,
        poll: Poll::new()?,
        rng,
        schedule: Schedule::new(),
        counters: Counters::new(),
        world: WorldInfo::default(),
        period: (1e6 / args.move_hz) as u64,
        buffer: vec![0u8; 64 << 10],
    };
    let mut events = Events::with_capacity(4096);
    let start = monotonic_micros();
    for index in 0..args.bots {
        sim.at(start + (index as f64 / args.ramp * 1e6) as u64, Action::Connect, index, 0);
    }
    let warmup_end = start + (args.warmup * 1e6) as u64;
    let end = warmup_end + (args.duration * 1e6) as u64;
    let mut measuring = false;
    let progress = progress_bar(args);
    let read_interval = (args.read_interval.max(0.0) * 1e6) as u64;
    let mut last_read = 0u64;

    loop {
        let now = monotonic_micros();
        if !measuring && now >= warmup_end {
            measuring = true;
            // Connect failures are kept: bots connect during the warm-up, so that is when they fail.
            let connect_failures = sim.counters.connect_failures;
            sim.counters = Counters { connect_failures, ..Counters::new() };
        }
        if now >= end {
            break;
        }
        // Send everything that is due: open loop, whatever the server is doing.
        while let Some(&Reverse((due, action, index, session))) = sim.schedule.peek() {
            if due > now {
                break;
            }
            sim.schedule.pop();
            let bot = &mut bots[index];
            if session == bot.session {
                sim.act(bot, index, action, due)?;
            }
        }
        let wait = sim.schedule.peek().map_or(end, |Reverse((due, ..))| (*due).min(end)).saturating_sub(now);
        let too_soon = (last_read + read_interval).saturating_sub(now);
        if too_soon > 0 {
            // Not time to read yet: sleep until then or the next send, whichever comes first.
            std::thread::sleep(Duration::from_micros(too_soon.min(wait.max(1))));
            continue;
        }
        let polled = sim.poll.poll(&mut events, Some(Duration::from_micros(wait.max(100))));
        last_read = monotonic_micros();
        match polled {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
        for event in events.iter() {
            let index = event.token().0;
            let bot = &mut bots[index];
            if bot.state == State::Connecting && (event.is_writable() || event.is_error()) {
                sim.finish_connect(bot, index);
            }
            if event.is_writable() {
                sim.flush(bot, index);
            }
            if (event.is_readable() || event.is_read_closed()) && !bot.is_stalled() {
                sim.read(bot, index);
            }
        }
        if let Some(bar) = &progress {
            let elapsed = monotonic_micros().saturating_sub(start);
            bar.set_position(elapsed / 1_000_000);
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let counters = sim.counters;
    let duration_seconds = args.duration;
    let frames_received: u64 = counters.received.iter().sum();
    let kind_name = |i: usize| PacketKind::from_id(i as u32).map_or("?", PacketKind::name);
    let counted = |array: &[u64; 12]| -> BTreeMap<&'static str, u64> {
        array.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (kind_name(i), *n)).collect()
    };
    let errors: BTreeMap<String, u64> =
        counters.errors.iter().map(|(code, n)| (crate::chaos::error_name(*code), *n)).collect();
    Ok(Summary {
        bots: args.bots,
        connected: bots.iter().filter(|b| b.connected_once).count(),
        welcomed: bots.iter().filter(|b| b.welcomed_once).count(),
        duration_seconds,
        sent: counted(&counters.sent),
        received: counted(&counters.received),
        frames_received,
        frames_per_second: frames_received as f64 / duration_seconds.max(1e-9),
        error_total: counters.errors.values().sum(),
        errors,
        disconnects: counters.disconnects,
        connect_failures: counters.connect_failures,
        send_stalls: counters.send_stalls,
        moves_reordered: counters.moves_reordered,
        moves_missing: counters.moves_missing,
        corrections: counters.corrections,
        latency_us: LatencySummary::from_histogram(&counters.latency),
        chaos: args.chaos.then_some(ChaosSummary { bots: chaos_bots, ..counters.chaos }),
    })
}

fn progress_bar(args: &BotsArgs) -> Option<indicatif::ProgressBar> {
    if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new((args.warmup + args.duration).ceil() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} [{bar:40}] {pos}/{len} s {msg}")
            .expect("valid template"),
    );
    Some(bar)
}

/// Everything the bots share: the poller, the schedule, the counters.
struct Sim<'a> {
    args: &'a BotsArgs,
    poll: Poll,
    rng: fastrand::Rng,
    schedule: Schedule,
    counters: Counters,
    world: WorldInfo,
    /// The MOVE period of every bot of this process, µs: the gap expected between two MOVEs of one
    /// sender.
    period: u64,
    /// Where reads land (taken out while frames borrow it).
    buffer: Vec<u8>,
}

/// What a bot acts on in a frame it received, copied out of the frame (which borrows the decoder).
#[derive(Clone, Copy, Debug)]
enum Received {
    Welcome { id: u32, x: f32, z: f32, world: WorldInfo },
    Enter { about: u32, x: f32, z: f32, honest: bool },
    Leave { about: u32 },
    Move { about: u32, x: f32, z: f32, stamp: u32 },
    Error { code: u32 },
    Other,
}

impl Received {
    fn from_frame(frame: &RawFrame<'_>) -> Received {
        let about = frame.player_id();
        match frame.packet() {
            Ok(Packet::Welcome(w)) => Received::Welcome {
                id: about,
                x: w.x.get(),
                z: w.z.get(),
                world: WorldInfo {
                    world_w: w.world_w.get(),
                    world_h: w.world_h.get(),
                    max_speed: w.max_speed.get(),
                },
            },
            Ok(Packet::Enter { head, name }) => Received::Enter {
                about,
                x: head.x.get(),
                z: head.z.get(),
                honest: name.starts_with(HONEST_PREFIX),
            },
            Ok(Packet::Leave) => Received::Leave { about },
            Ok(Packet::Move(m)) => {
                Received::Move { about, x: m.x.get(), z: m.z.get(), stamp: m.client_time.get() }
            }
            Ok(Packet::Error { code, .. }) => Received::Error { code },
            _ => Received::Other,
        }
    }
}

impl Sim<'_> {
    fn at(&mut self, due: u64, action: Action, index: usize, session: u32) {
        self.schedule.push(Reverse((due, action, index, session)));
    }

    /// Performs `action` for bot `index`, due at `due`.
    fn act(&mut self, bot: &mut Bot, index: usize, action: Action, due: u64) -> anyhow::Result<()> {
        match action {
            Action::Connect => self.connect(bot, index)?,
            Action::Misbehave => self.misbehave(bot, index, due),
            Action::Resume => self.resume(bot, index),
            Action::AnswerDeadline => self.answer_deadline(bot, index, due),
            Action::CloseDeadline => self.close_deadline(bot, index),
            _ if bot.state != State::Playing || bot.id == 0 => {}
            Action::Move => {
                step(self.args, bot, &self.world, &mut self.rng);
                let speed = self.world.max_speed * self.args.speed_factor;
                let frame = encode_frame_to_vec(
                    0,
                    &Packet::Move(&Move::new(bot.x, 0.0, bot.z, speed, client_time(due))),
                );
                self.send(bot, index, &frame, PacketKind::Move);
                self.at(due + self.period, action, index, bot.session);
            }
            Action::Chat => {
                let text = format!("hello from bot {index}");
                let frame = encode_frame_to_vec(0, &Packet::Chat { text: &text });
                self.send(bot, index, &frame, PacketKind::Chat);
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
                    let frame = encode_frame_to_vec(0, &Packet::Attack { target_id });
                    self.send(bot, index, &frame, PacketKind::Attack);
                }
                self.at(due + (1e6 / self.args.attack_hz) as u64, action, index, bot.session);
            }
        }
        Ok(())
    }

    /// Opens a new connection for bot `index` (its first, or a chaos bot's next).
    fn connect(&mut self, bot: &mut Bot, index: usize) -> anyhow::Result<()> {
        bot.start_session();
        match TcpStream::connect(self.args.addr) {
            Ok(mut stream) => {
                self.poll.registry().register(
                    &mut stream,
                    Token(index),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                bot.stream = Some(stream);
                bot.state = State::Connecting;
            }
            Err(_) => self.connect_failed(bot, index),
        }
        Ok(())
    }

    fn connect_failed(&mut self, bot: &mut Bot, index: usize) {
        self.drop_stream(bot);
        bot.state = State::Gone;
        if bot.chaos.is_some() {
            self.counters.chaos.connect_failures += 1;
            self.reconnect_later(bot, index);
        } else {
            self.counters.connect_failures += 1;
        }
    }

    fn finish_connect(&mut self, bot: &mut Bot, index: usize) {
        let Some(stream) = &bot.stream else { return };
        match stream.peer_addr() {
            Ok(_) => {
                let _ = stream.set_nodelay(true);
                bot.state = State::Playing;
                bot.connected_once = true;
                let prefix = if bot.chaos.is_some() { CHAOS_PREFIX } else { HONEST_PREFIX };
                let name = format!("{prefix}{index}-{}", self.rng.u16(..));
                let frame = encode_frame_to_vec(0, &Packet::Hello { name: &name });
                self.send(bot, index, &frame, PacketKind::Hello);
            }
            Err(error) if error.kind() == io::ErrorKind::NotConnected => {
                if let Ok(Some(_)) | Err(_) = stream.take_error() {
                    self.connect_failed(bot, index);
                }
            }
            Err(_) => self.connect_failed(bot, index),
        }
    }

    /// Deregisters and closes the bot's socket, if it has one.
    fn drop_stream(&mut self, bot: &mut Bot) {
        if let Some(mut stream) = bot.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    /// A chaos bot comes back after a random pause, as a player whose game crashed would.
    fn reconnect_later(&mut self, bot: &Bot, index: usize) {
        let delay = self.rng.u64(200_000..3_000_000);
        self.at(monotonic_micros() + delay, Action::Connect, index, bot.session);
    }

    /// The connection ended without the bot closing it (end of stream or an error).
    fn lose_connection(&mut self, bot: &mut Bot, index: usize) {
        self.drop_stream(bot);
        let previous = std::mem::replace(&mut bot.state, State::Gone);
        let Some(chaos) = &mut bot.chaos else {
            if previous == State::Playing {
                self.counters.disconnects += 1;
            }
            return;
        };
        if chaos.fatal_received {
            self.counters.chaos.closed_after_error += 1;
        } else if let Some(pending) = chaos.pending.take() {
            self.counters.chaos.record_answer(Some(pending.misdeed), Answer::ClosedWithoutError);
        } else if previous == State::Playing {
            self.counters.chaos.unexplained_closes += 1;
        }
        self.reconnect_later(bot, index);
    }

    fn send(&mut self, bot: &mut Bot, index: usize, frame: &[u8], kind: PacketKind) {
        if bot.pending.len() + frame.len() > MAX_PENDING {
            self.counters.send_stalls += 1;
            return;
        }
        self.counters.sent[kind.id() as usize] += 1;
        bot.pending.extend_from_slice(frame);
        self.flush(bot, index);
    }

    fn flush(&mut self, bot: &mut Bot, index: usize) {
        let Some(stream) = &mut bot.stream else { return };
        if bot.state == State::Connecting {
            return;
        }
        let mut written = 0;
        let mut failed = false;
        while written < bot.pending.len() {
            match stream.write(&bot.pending[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        // Edge-triggered: WRITABLE is registered from the start, so a full socket reports again when it
        // drains; nothing to re-register.
        bot.pending.drain(..written);
        if failed {
            // Whatever the server said before it closed (an ERROR) is still there to read.
            self.read(bot, index);
            if bot.stream.is_some() {
                self.lose_connection(bot, index);
            }
        }
    }

    /// Reads everything available and acts on it.
    fn read(&mut self, bot: &mut Bot, index: usize) {
        let mut buffer = std::mem::take(&mut self.buffer);
        self.read_into(bot, index, &mut buffer);
        self.buffer = buffer;
    }

    fn read_into(&mut self, bot: &mut Bot, index: usize, buffer: &mut [u8]) {
        loop {
            let Some(stream) = &mut bot.stream else { return };
            let n = match stream.read(buffer) {
                Ok(0) => return self.lose_connection(bot, index),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.lose_connection(bot, index),
            };
            let now = monotonic_micros();
            let mut input = &buffer[..n];
            loop {
                let received = match bot.decoder.next_frame(&mut input) {
                    Ok(Some(frame)) => {
                        // Protocol v1's kinds by id; anything else (another game's packet) under 0, "?".
                        let id = frame.packet_id() as usize;
                        self.counters.received[if id < self.counters.received.len() { id } else { 0 }] += 1;
                        Received::from_frame(&frame)
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // Bytes protocol v1 does not let a server send: counted as an error of its own.
                        *self.counters.errors.entry(u32::MAX).or_default() += 1;
                        return self.lose_connection(bot, index);
                    }
                };
                self.handle(bot, index, received, now);
            }
        }
    }

    fn handle(&mut self, bot: &mut Bot, index: usize, received: Received, now: u64) {
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
            Received::Move { about, x, z, stamp } => {
                let honest_receiver = bot.chaos.is_none();
                let entry = bot.seen.iter_mut().find(|seen| seen.id == about);
                let honest_mover = entry.as_ref().is_none_or(|seen| seen.honest);
                if let Some(entry) = entry {
                    entry.x = x;
                    entry.z = z;
                    if stamp == 0 {
                        // The server's own MOVE (a respawn): the sender's sequence starts afresh.
                        entry.last_client_time = None;
                    } else if let Some(previous) = entry.last_client_time.replace(stamp)
                        && honest_receiver
                        && entry.honest
                    {
                        match classify_delivery(previous, stamp, self.period) {
                            Delivery::Reordered => self.counters.moves_reordered += 1,
                            Delivery::Missing(n) => self.counters.moves_missing += n,
                            Delivery::InOrder => {}
                        }
                    }
                }
                // A stalled chaos bot reads late, and a chaos bot's bursts share one client_time
                // sequence: neither says anything about the server's delivery latency.
                if stamp != 0 && honest_receiver && honest_mover {
                    let _ = self.counters.latency.record(u64::from(latency_micros(stamp, now)).max(1));
                }
            }
            Received::Error { code } => self.handle_error(bot, index, code, now),
            Received::Other => {}
        }
    }

    /// The server refused a MOVE of the bot's, the one stamped `stamp`.
    fn handle_correction(&mut self, bot: &mut Bot, index: usize, stamp: u32, now: u64) {
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

    fn handle_error(&mut self, bot: &mut Bot, index: usize, code: u32, now: u64) {
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

    fn schedule_misdeed(&mut self, index: usize, session: u32, now: u64) {
        let delay = self.args.chaos_interval * 1e6 * (0.5 + self.rng.f64());
        self.at(now + delay as u64, Action::Misbehave, index, session);
    }

    /// A chaos bot's next misdeed, picked at random.
    fn misbehave(&mut self, bot: &mut Bot, index: usize, now: u64) {
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
                    && let Some(stream) = &bot.stream
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
    fn resume(&mut self, bot: &mut Bot, index: usize) {
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
    fn answer_deadline(&mut self, bot: &mut Bot, index: usize, due: u64) {
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
    fn close_deadline(&mut self, bot: &mut Bot, index: usize) {
        if !bot.chaos.as_ref().is_some_and(|chaos| chaos.fatal_received) || bot.stream.is_none() {
            return;
        }
        self.counters.chaos.not_closed_after_error += 1;
        self.drop_stream(bot);
        bot.state = State::Gone;
        self.reconnect_later(bot, index);
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

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: u64 = 100_000;

    #[test]
    fn consecutive_moves_are_in_order() {
        assert_eq!(classify_delivery(1_000, 101_000, PERIOD), Delivery::InOrder);
        // The sender's stamps are exact multiples of the period apart; anything up to 1.5 is one.
        assert_eq!(classify_delivery(1_000, 151_000, PERIOD), Delivery::InOrder);
        assert_eq!(classify_delivery(1_000, 1_001, PERIOD), Delivery::InOrder);
    }

    #[test]
    fn gaps_count_the_moves_lost() {
        assert_eq!(classify_delivery(1_000, 151_001, PERIOD), Delivery::Missing(1));
        assert_eq!(classify_delivery(1_000, 201_000, PERIOD), Delivery::Missing(1));
        assert_eq!(classify_delivery(1_000, 301_000, PERIOD), Delivery::Missing(2));
        assert_eq!(classify_delivery(0, 1_000_000, PERIOD), Delivery::Missing(9));
        // Rounded to the nearest period.
        assert_eq!(classify_delivery(0, 249_999, PERIOD), Delivery::Missing(1));
        assert_eq!(classify_delivery(0, 250_000, PERIOD), Delivery::Missing(2));
    }

    #[test]
    fn stamps_not_after_the_previous_are_reordered() {
        assert_eq!(classify_delivery(500_000, 400_000, PERIOD), Delivery::Reordered);
        assert_eq!(classify_delivery(500_000, 500_000, PERIOD), Delivery::Reordered, "a duplicate");
        assert_eq!(classify_delivery(500_000, 0, PERIOD), Delivery::Reordered);
    }

    #[test]
    fn the_u32_wrap_is_not_a_reorder() {
        let before_wrap = u32::MAX - 30_000;
        let after_wrap = before_wrap.wrapping_add(100_000);
        assert!(after_wrap < before_wrap);
        assert_eq!(classify_delivery(before_wrap, after_wrap, PERIOD), Delivery::InOrder);
        assert_eq!(
            classify_delivery(before_wrap, before_wrap.wrapping_add(300_000), PERIOD),
            Delivery::Missing(2)
        );
        assert_eq!(classify_delivery(after_wrap, before_wrap, PERIOD), Delivery::Reordered);
    }
}
