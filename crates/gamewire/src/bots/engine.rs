//! The client engine of `gamewire bots`: one mio poll over every bot's socket, a schedule of due actions,
//! connecting, sending with a backlog, reading and decoding frames, and the counters.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use gamewire_proto::{Channel, Packet, PacketKind, RawFrame, encode_frame_to_vec};
use gamewire_udp::datagram::MAX_DATAGRAM;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::BotsArgs;
use super::args::Transport;
use super::play::{Action, Bot, Link, State, WorldInfo};
use super::udp::UdpCounters;
use crate::chaos::{Answer, ChaosSummary};
use crate::clock::monotonic_micros;

/// Name prefix of honest bots. A bot tells from the name in ENTER whether another player's MOVEs
/// count in the delivery figures (a chaos bot's bursts and refused MOVEs would spoil them).
const HONEST_PREFIX: &str = "bot";

/// Name prefix of chaos bots.
const CHAOS_PREFIX: &str = "chaos";

/// Actions by due time: (due µs, action, bot index, the bot's session the action belongs to).
type Schedule = BinaryHeap<Reverse<(u64, Action, usize, u32)>>;

/// Largest backlog a bot keeps for a server that stopped reading; past it the bot counts a stall and
/// drops the send (the server is overloaded: that is what is being measured).
pub(super) const MAX_PENDING: usize = 1 << 20;

/// Slots of the per-kind counters: one per protocol v1 packet id (1..=11), slot 0 for any other id
/// (counted as "?", never a panic: a server may send what the bots do not know).
pub(super) const KIND_SLOTS: usize = PacketKind::ALL.len() + 1;

/// What the run counts; the warm-up's counts are dropped when it ends (all but connect failures).
pub(super) struct Counters {
    pub(super) sent: [u64; KIND_SLOTS],
    pub(super) received: [u64; KIND_SLOTS],
    pub(super) errors: BTreeMap<u32, u64>,
    pub(super) disconnects: u64,
    pub(super) connect_failures: u64,
    pub(super) send_stalls: u64,
    pub(super) moves_reordered: u64,
    pub(super) moves_missing: u64,
    pub(super) moves_lost_unreliable: u64,
    pub(super) corrections: u64,
    pub(super) latency: Histogram<u64>,
    pub(super) chaos: ChaosSummary,
    /// UDP clients' counters, over the whole run (kept at the end of the warm-up, like connect
    /// failures: a client's counters cannot be split at an instant).
    pub(super) udp: UdpCounters,
}

impl Counters {
    pub(super) fn new() -> Self {
        Counters {
            sent: [0; KIND_SLOTS],
            received: [0; KIND_SLOTS],
            errors: BTreeMap::new(),
            disconnects: 0,
            connect_failures: 0,
            send_stalls: 0,
            moves_reordered: 0,
            moves_missing: 0,
            moves_lost_unreliable: 0,
            corrections: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            chaos: ChaosSummary::default(),
            udp: UdpCounters::default(),
        }
    }
}

/// Runs `bots` from now until the warm-up and the measurement are over, ticking `progress` by the
/// second, and returns the counters of the measurement (connect failures: of the whole run).
pub(super) fn drive(
    args: &BotsArgs,
    bots: &mut [Bot],
    rng: fastrand::Rng,
    progress: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<Counters> {
    let mut sim = Sim {
        args,
        poll: Poll::new()?,
        rng,
        schedule: Schedule::new(),
        counters: Counters::new(),
        world: WorldInfo::default(),
        period: (1e6 / args.move_hz) as u64,
        buffer: vec![0u8; 64 << 10],
        epoch: (Instant::now(), monotonic_micros()),
        datagram: Box::new([0; MAX_DATAGRAM]),
        inbound: Vec::new(),
    };
    let mut events = Events::with_capacity(4096);
    let start = monotonic_micros();
    for index in 0..args.bots {
        sim.at(start + (index as f64 / args.ramp * 1e6) as u64, Action::Connect, index, 0);
    }
    let warmup_end = start + (args.warmup * 1e6) as u64;
    let end = warmup_end + (args.duration * 1e6) as u64;
    let mut measuring = false;
    let read_interval = (args.read_interval.max(0.0) * 1e6) as u64;
    let mut last_read = 0u64;

    loop {
        let now = monotonic_micros();
        if !measuring && now >= warmup_end {
            measuring = true;
            // Connect failures are kept: bots connect during the warm-up, so that is when they fail.
            let connect_failures = sim.counters.connect_failures;
            let udp = std::mem::take(&mut sim.counters.udp);
            sim.counters = Counters { connect_failures, udp, ..Counters::new() };
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
            if let Some(Link::Udp(_)) = bot.stream {
                // Registered for reading only: datagrams go out as soon as they are due.
                sim.read_udp(bot, index);
                continue;
            }
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
        if let Some(bar) = progress {
            let elapsed = monotonic_micros().saturating_sub(start);
            bar.set_position(elapsed / 1_000_000);
        }
    }
    for bot in bots.iter_mut() {
        sim.leave_udp(bot);
    }
    Ok(sim.counters)
}

/// Everything the bots share: the poller, the schedule, the counters.
pub(super) struct Sim<'a> {
    pub(super) args: &'a BotsArgs,
    poll: Poll,
    pub(super) rng: fastrand::Rng,
    schedule: Schedule,
    pub(super) counters: Counters,
    pub(super) world: WorldInfo,
    /// The MOVE period of every bot of this process, µs: the gap expected between two MOVEs of one
    /// sender.
    pub(super) period: u64,
    /// Where reads land (taken out while frames borrow it).
    pub(super) buffer: Vec<u8>,
    /// The same instant on the two clocks, for the UDP clients' `Instant`s: (Instant, µs).
    pub(super) epoch: (Instant, u64),
    /// Where UDP clients write their datagrams.
    pub(super) datagram: Box<[u8; MAX_DATAGRAM]>,
    /// Frames a UDP client handed over, held until its `receive` returns (reused: no allocation
    /// per frame once it has grown).
    pub(super) inbound: Vec<Received>,
}

/// What a bot acts on in a frame it received, copied out of the frame (which borrows the decoder).
#[derive(Clone, Copy, Debug)]
pub(super) enum Received {
    Welcome { id: u32, x: f32, z: f32, world: WorldInfo },
    Enter { about: u32, x: f32, z: f32, honest: bool },
    Leave { about: u32 },
    Move { about: u32, x: f32, z: f32, stamp: u32 },
    Error { code: u32 },
    Other,
}

impl Received {
    pub(super) fn from_frame(frame: &RawFrame<'_>) -> Received {
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
    pub(super) fn at(&mut self, due: u64, action: Action, index: usize, session: u32) {
        self.schedule.push(Reverse((due, action, index, session)));
    }

    /// Opens a new connection for bot `index` (its first, or a chaos bot's next).
    pub(super) fn connect(&mut self, bot: &mut Bot, index: usize) -> anyhow::Result<()> {
        bot.start_session();
        if self.args.transport == Transport::Udp {
            return self.connect_udp(bot, index);
        }
        match TcpStream::connect(self.args.addr) {
            Ok(mut stream) => {
                self.poll.registry().register(
                    &mut stream,
                    Token(index),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                bot.stream = Some(Link::Tcp(stream));
                bot.state = State::Connecting;
            }
            Err(_) => self.connect_failed(bot, index),
        }
        Ok(())
    }

    pub(super) fn connect_failed(&mut self, bot: &mut Bot, index: usize) {
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
        let Some(Link::Tcp(stream)) = &bot.stream else { return };
        match stream.peer_addr() {
            Ok(_) => {
                let _ = stream.set_nodelay(true);
                bot.state = State::Playing;
                bot.connected_once = true;
                let frame = self.hello(bot, index);
                self.send(bot, index, &frame, PacketKind::Hello, Channel::Reliable);
            }
            Err(error) if error.kind() == io::ErrorKind::NotConnected => {
                if let Ok(Some(_)) | Err(_) = stream.take_error() {
                    self.connect_failed(bot, index);
                }
            }
            Err(_) => self.connect_failed(bot, index),
        }
    }

    /// The HELLO frame of a bot's new session, under a name that says whether it is honest.
    pub(super) fn hello(&mut self, bot: &Bot, index: usize) -> Vec<u8> {
        let prefix = if bot.chaos.is_some() { CHAOS_PREFIX } else { HONEST_PREFIX };
        let name = format!("{prefix}{index}-{}", self.rng.u16(..));
        encode_frame_to_vec(0, &Packet::Hello { name: &name })
    }

    /// Deregisters and closes the bot's socket, if it has one.
    pub(super) fn drop_stream(&mut self, bot: &mut Bot) {
        match bot.stream.take() {
            Some(Link::Tcp(mut stream)) => {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            Some(Link::Udp(mut link)) => {
                let _ = self.poll.registry().deregister(&mut link.socket);
                self.counters.udp.add(&link);
            }
            None => {}
        }
    }

    pub(super) fn poll(&self) -> &Poll {
        &self.poll
    }

    /// A chaos bot comes back after a random pause, as a player whose game crashed would.
    pub(super) fn reconnect_later(&mut self, bot: &Bot, index: usize) {
        let delay = self.rng.u64(200_000..3_000_000);
        self.at(monotonic_micros() + delay, Action::Connect, index, bot.session);
    }

    /// The connection ended without the bot closing it (end of stream or an error).
    pub(super) fn lose_connection(&mut self, bot: &mut Bot, index: usize) {
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

    /// Sends `frame`, of `kind`, on `channel` where the transport has channels (UDP).
    pub(super) fn send(
        &mut self,
        bot: &mut Bot,
        index: usize,
        frame: &[u8],
        kind: PacketKind,
        channel: Channel,
    ) {
        if let Some(Link::Udp(_)) = bot.stream {
            return self.send_udp(bot, index, frame, kind, channel);
        }
        if bot.pending.len() + frame.len() > MAX_PENDING {
            self.counters.send_stalls += 1;
            return;
        }
        self.counters.sent[kind.id() as usize] += 1;
        bot.pending.extend_from_slice(frame);
        self.flush(bot, index);
    }

    pub(super) fn flush(&mut self, bot: &mut Bot, index: usize) {
        let stream = match &mut bot.stream {
            Some(Link::Tcp(stream)) => stream,
            Some(Link::Udp(_)) => return self.transmit_udp(bot, index),
            None => return,
        };
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
    pub(super) fn read(&mut self, bot: &mut Bot, index: usize) {
        if let Some(Link::Udp(_)) = bot.stream {
            return self.read_udp(bot, index);
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        self.read_into(bot, index, &mut buffer);
        self.buffer = buffer;
    }

    fn read_into(&mut self, bot: &mut Bot, index: usize, buffer: &mut [u8]) {
        loop {
            let Some(Link::Tcp(stream)) = &mut bot.stream else { return };
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
}
