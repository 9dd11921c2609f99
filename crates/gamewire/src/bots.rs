//! `gamewire bots`: many simulated players over real TCP from one thread, open-loop.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use gamewire_proto::{
    Direction, ErrorCode, FrameDecoder, Move, Packet, PacketKind, SERVER_PAYLOAD_MAX, encode_frame_to_vec,
};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::bench::report::LatencySummary;
use crate::clock::{client_time, latency_micros, monotonic_micros};

#[derive(Debug, Clone, Args)]
pub(crate) struct BotsArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub(crate) addr: SocketAddr,
    /// Number of bots.
    #[arg(long, default_value_t = 100)]
    pub(crate) bots: usize,
    /// Seconds of measurement, after the warm-up.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) duration: f64,
    /// Seconds before measuring starts (connections ramp up meanwhile).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) warmup: f64,
    /// MOVEs per second per bot.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) move_hz: f64,
    /// CHATs per second per bot.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) chat_hz: f64,
    /// ATTACKs per second per bot (on a player it sees within --attack-range; skipped when none is).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) attack_hz: f64,
    /// The server's attack range (not announced in WELCOME).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) attack_range: f32,
    /// New connections per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) ramp: f64,
    /// Keep each bot within this distance of where it spawned (the `crowd` scenario keeps everyone in
    /// everyone's view this way). Default: roam the whole world.
    #[arg(long)]
    pub(crate) stay_within: Option<f32>,
    /// Fraction of max_speed bots walk at: below 1 so that MOVEs bunched by the network stay legal.
    #[arg(long, default_value_t = 0.4)]
    pub(crate) speed_factor: f32,
    /// Print a JSON summary on stdout instead of the human one.
    #[arg(long)]
    pub(crate) json: bool,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

/// What one run measured (after the warm-up).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) bots: usize,
    pub(crate) connected: usize,
    pub(crate) welcomed: usize,
    pub(crate) duration_seconds: f64,
    pub(crate) sent: BTreeMap<&'static str, u64>,
    pub(crate) received: BTreeMap<&'static str, u64>,
    pub(crate) frames_received: u64,
    pub(crate) frames_per_second: f64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) error_total: u64,
    pub(crate) disconnects: u64,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Connect,
    Move,
    Chat,
    Attack,
}

#[derive(Debug, PartialEq)]
enum State {
    Idle,
    Connecting,
    Playing,
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
}

/// A player in a bot's view.
#[derive(Clone, Copy, Debug)]
struct Seen {
    id: u32,
    x: f32,
    z: f32,
    /// `client_time` of the last MOVE received about it since its ENTER.
    last_client_time: Option<u32>,
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
    Ok(())
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
}

/// Runs the bots and returns what was measured after the warm-up.
pub(crate) fn simulate(args: &BotsArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.bots > 0, "--bots must be at least 1");
    anyhow::ensure!(args.move_hz > 0.0 && args.ramp > 0.0, "--move-hz and --ramp must be positive");
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut bots: Vec<Bot> = (0..args.bots)
        .map(|_| Bot {
            stream: None,
            state: State::Idle,
            decoder: FrameDecoder::new(Direction::ToClient, SERVER_PAYLOAD_MAX),
            pending: Vec::new(),
            id: 0,
            x: 0.0,
            z: 0.0,
            home: (0.0, 0.0),
            heading: rng.f32() * std::f32::consts::TAU,
            seen: Vec::new(),
        })
        .collect();
    let mut world = WorldInfo::default();
    let mut schedule: BinaryHeap<Reverse<(u64, Action, usize)>> = BinaryHeap::new();
    let start = monotonic_micros();
    for index in 0..args.bots {
        let at = start + (index as f64 / args.ramp * 1e6) as u64;
        schedule.push(Reverse((at, Action::Connect, index)));
    }
    let warmup_end = start + (args.warmup * 1e6) as u64;
    let end = warmup_end + (args.duration * 1e6) as u64;
    let mut counters = Counters::new();
    let mut measuring = false;
    let mut buffer = vec![0u8; 64 << 10];
    // The MOVE period of every bot of this process: the gap expected between two MOVEs of one sender.
    let period = (1e6 / args.move_hz) as u64;
    let progress = progress_bar(args);

    loop {
        let now = monotonic_micros();
        if !measuring && now >= warmup_end {
            measuring = true;
            counters = Counters::new();
        }
        if now >= end {
            break;
        }
        // Send everything that is due: open loop, whatever the server is doing.
        while let Some(&Reverse((due, action, index))) = schedule.peek() {
            if due > now {
                break;
            }
            schedule.pop();
            let next =
                act(args, &mut bots[index], index, action, due, &world, &mut rng, &poll, &mut counters)?;
            if let Some(period) = next {
                schedule.push(Reverse((due + period, action, index)));
            }
        }
        let wait = schedule.peek().map_or(end, |Reverse((due, ..))| (*due).min(end)).saturating_sub(now);
        match poll.poll(&mut events, Some(Duration::from_micros(wait.max(100)))) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        }
        for event in events.iter() {
            let index = event.token().0;
            let bot = &mut bots[index];
            if bot.state == State::Connecting && (event.is_writable() || event.is_error()) {
                finish_connect(bot, index, &mut rng, &poll, &mut counters)?;
            }
            if event.is_writable() {
                flush(bot, &poll, &mut counters);
            }
            if event.is_readable() || event.is_read_closed() {
                let welcomed = read(bot, &mut buffer, &mut world, period, &mut counters);
                if welcomed {
                    schedule_play(args, index, monotonic_micros(), &mut rng, &mut schedule);
                }
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
    let duration_seconds = args.duration;
    let frames_received: u64 = counters.received.iter().sum();
    let kind_name = |i: usize| PacketKind::from_id(i as u32).map_or("?", PacketKind::name);
    let counted = |array: &[u64; 12]| -> BTreeMap<&'static str, u64> {
        array.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (kind_name(i), *n)).collect()
    };
    let errors: BTreeMap<String, u64> = counters
        .errors
        .iter()
        .map(|(code, n)| {
            (ErrorCode::from_u32(*code).map_or_else(|| format!("CODE_{code}"), |c| c.name().to_string()), *n)
        })
        .collect();
    Ok(Summary {
        bots: args.bots,
        connected: bots.iter().filter(|b| b.state != State::Idle && b.state != State::Connecting).count(),
        welcomed: bots.iter().filter(|b| b.id != 0).count(),
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

fn schedule_play(
    args: &BotsArgs,
    index: usize,
    now: u64,
    rng: &mut fastrand::Rng,
    schedule: &mut BinaryHeap<Reverse<(u64, Action, usize)>>,
) {
    for (hz, action) in
        [(args.move_hz, Action::Move), (args.chat_hz, Action::Chat), (args.attack_hz, Action::Attack)]
    {
        if hz > 0.0 {
            // A random phase spreads the bots' sends evenly over the period.
            let period = (1e6 / hz) as u64;
            schedule.push(Reverse((now + rng.u64(0..period.max(1)), action, index)));
        }
    }
}

/// Performs `action` for bot `index`; returns the period after which it repeats, if it does.
#[allow(clippy::too_many_arguments)]
fn act(
    args: &BotsArgs,
    bot: &mut Bot,
    index: usize,
    action: Action,
    due: u64,
    world: &WorldInfo,
    rng: &mut fastrand::Rng,
    poll: &Poll,
    counters: &mut Counters,
) -> anyhow::Result<Option<u64>> {
    match action {
        Action::Connect => {
            match TcpStream::connect(args.addr) {
                Ok(mut stream) => {
                    poll.registry().register(
                        &mut stream,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    bot.stream = Some(stream);
                    bot.state = State::Connecting;
                }
                Err(_) => {
                    counters.connect_failures += 1;
                    bot.state = State::Gone;
                }
            }
            Ok(None)
        }
        _ if bot.state != State::Playing || bot.id == 0 => Ok(None),
        Action::Move => {
            step(args, bot, world, rng);
            let speed = world.max_speed * args.speed_factor;
            let frame =
                encode_frame_to_vec(0, &Packet::Move(&Move::new(bot.x, 0.0, bot.z, speed, client_time(due))));
            send(bot, &frame, PacketKind::Move, poll, counters);
            Ok(Some((1e6 / args.move_hz) as u64))
        }
        Action::Chat => {
            let text = format!("hello from bot {index}");
            let frame = encode_frame_to_vec(0, &Packet::Chat { text: &text });
            send(bot, &frame, PacketKind::Chat, poll, counters);
            Ok(Some((1e6 / args.chat_hz) as u64))
        }
        Action::Attack => {
            let origin = (bot.x, bot.z);
            let range = args.attack_range * 0.9;
            let in_range: Vec<u32> = bot
                .seen
                .iter()
                .filter(|seen| (seen.x - origin.0).hypot(seen.z - origin.1) <= range)
                .map(|seen| seen.id)
                .collect();
            if !in_range.is_empty() {
                let target_id = in_range[rng.usize(..in_range.len())];
                let frame = encode_frame_to_vec(0, &Packet::Attack { target_id });
                send(bot, &frame, PacketKind::Attack, poll, counters);
            }
            Ok(Some((1e6 / args.attack_hz) as u64))
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

fn send(bot: &mut Bot, frame: &[u8], kind: PacketKind, poll: &Poll, counters: &mut Counters) {
    if bot.pending.len() + frame.len() > MAX_PENDING {
        counters.send_stalls += 1;
        return;
    }
    counters.sent[kind.id() as usize] += 1;
    bot.pending.extend_from_slice(frame);
    flush(bot, poll, counters);
}

fn flush(bot: &mut Bot, poll: &Poll, counters: &mut Counters) {
    let Some(stream) = &mut bot.stream else { return };
    if bot.state == State::Connecting {
        return;
    }
    let mut written = 0;
    while written < bot.pending.len() {
        match stream.write(&bot.pending[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                disconnect(bot, poll, counters);
                return;
            }
        }
    }
    // Edge-triggered: WRITABLE is registered from the start, so a full socket reports again when it
    // drains; nothing to re-register.
    bot.pending.drain(..written);
}

fn finish_connect(
    bot: &mut Bot,
    index: usize,
    rng: &mut fastrand::Rng,
    poll: &Poll,
    counters: &mut Counters,
) -> anyhow::Result<()> {
    let Some(stream) = &bot.stream else { return Ok(()) };
    match stream.peer_addr() {
        Ok(_) => {
            let _ = stream.set_nodelay(true);
            bot.state = State::Playing;
            let name = format!("bot{index}-{}", rng.u16(..));
            let frame = encode_frame_to_vec(0, &Packet::Hello { name: &name });
            send(bot, &frame, PacketKind::Hello, poll, counters);
        }
        Err(error) if error.kind() == io::ErrorKind::NotConnected => {
            if let Ok(Some(_)) | Err(_) = stream.take_error() {
                counters.connect_failures += 1;
                disconnect(bot, poll, counters);
            }
        }
        Err(_) => {
            counters.connect_failures += 1;
            disconnect(bot, poll, counters);
        }
    }
    Ok(())
}

fn disconnect(bot: &mut Bot, poll: &Poll, counters: &mut Counters) {
    if let Some(mut stream) = bot.stream.take() {
        let _ = poll.registry().deregister(&mut stream);
        if bot.state == State::Playing {
            counters.disconnects += 1;
        }
    }
    bot.state = State::Gone;
}

/// Reads everything available; returns whether this read brought the bot's WELCOME. `period` is the
/// senders' MOVE period, µs.
fn read(
    bot: &mut Bot,
    buffer: &mut [u8],
    world: &mut WorldInfo,
    period: u64,
    counters: &mut Counters,
) -> bool {
    let mut welcomed = false;
    loop {
        let Some(stream) = &mut bot.stream else { return welcomed };
        let n = match stream.read(buffer) {
            Ok(0) => {
                bot.stream = None;
                if bot.state == State::Playing {
                    counters.disconnects += 1;
                }
                bot.state = State::Gone;
                return welcomed;
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return welcomed,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                bot.stream = None;
                if bot.state == State::Playing {
                    counters.disconnects += 1;
                }
                bot.state = State::Gone;
                return welcomed;
            }
        };
        let now = monotonic_micros();
        let mut input = &buffer[..n];
        loop {
            let frame = match bot.decoder.next_frame(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    counters.errors.entry(u32::MAX).and_modify(|n| *n += 1).or_insert(1);
                    bot.stream = None;
                    bot.state = State::Gone;
                    return welcomed;
                }
            };
            let about = frame.player_id();
            let id = frame.packet_id() as usize;
            counters.received[id.min(11)] += 1;
            match frame.packet() {
                Ok(Packet::Welcome(w)) => {
                    bot.id = about;
                    bot.x = w.x.get();
                    bot.z = w.z.get();
                    bot.home = (bot.x, bot.z);
                    *world = WorldInfo {
                        world_w: w.world_w.get(),
                        world_h: w.world_h.get(),
                        max_speed: w.max_speed.get(),
                    };
                    welcomed = true;
                }
                Ok(Packet::Enter { head, .. }) => bot.seen.push(Seen {
                    id: about,
                    x: head.x.get(),
                    z: head.z.get(),
                    last_client_time: None,
                }),
                Ok(Packet::Leave) => bot.seen.retain(|seen| seen.id != about),
                Ok(Packet::Move(m)) if about == bot.id => {
                    // A correction (or a respawn, client_time 0): the server's position is the truth.
                    if m.client_time.get() != 0 {
                        counters.corrections += 1;
                    }
                    bot.x = m.x.get();
                    bot.z = m.z.get();
                }
                Ok(Packet::Move(m)) => {
                    let stamp = m.client_time.get();
                    if let Some(entry) = bot.seen.iter_mut().find(|seen| seen.id == about) {
                        entry.x = m.x.get();
                        entry.z = m.z.get();
                        if stamp == 0 {
                            // The server's own MOVE (a respawn): the sender's sequence starts afresh.
                            entry.last_client_time = None;
                        } else if let Some(previous) = entry.last_client_time.replace(stamp) {
                            match classify_delivery(previous, stamp, period) {
                                Delivery::Reordered => counters.moves_reordered += 1,
                                Delivery::Missing(n) => counters.moves_missing += n,
                                Delivery::InOrder => {}
                            }
                        }
                    }
                    if stamp != 0 {
                        let _ = counters.latency.record(u64::from(latency_micros(stamp, now)).max(1));
                    }
                }
                Ok(Packet::Error { code, .. }) => {
                    *counters.errors.entry(code).or_default() += 1;
                }
                _ => {}
            }
        }
    }
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
