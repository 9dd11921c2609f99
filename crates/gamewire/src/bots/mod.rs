//! `gamewire bots`: many simulated players over real TCP (or UDP, `--transport udp`) from one thread,
//! open-loop; with `--chaos` (TCP only), some of them misbehave at random and reconnect. This file is the
//! entry point and the summary; args.rs holds the flags, engine.rs the socket loop, udp.rs the UDP
//! clients in it, play.rs the honest bots' play, misbehave.rs the chaos bots' misdeeds and the answers
//! they await, checks.rs what MOVE stamps say about delivery.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use gamewire_proto::PacketKind;
use serde::Serialize;

mod args;
mod checks;
mod engine;
mod misbehave;
mod play;
mod udp;

use crate::bench::report::LatencySummary;
use crate::chaos::ChaosSummary;
pub(crate) use args::{BotsArgs, MAX_BOTS, check_seconds};
use args::{Transport, check_args};
use misbehave::ChaosState;
use play::Bot;
use udp::UdpCounters;

/// What one run measured (after the warm-up). With --chaos, everything but `frames_received`,
/// `received` and `sent` (the server's work) is about the honest bots only; `chaos` is about the others.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) transport: Transport,
    pub(crate) bots: usize,
    /// Bots whose connection was established at least once (over UDP: whose session started).
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
    /// Over UDP, where MOVE travels unreliable: MOVEs about another player lost on the way, inferred as
    /// `moves_missing` is (which stays 0 over UDP). Loss, not an error; a MOVE older than one already
    /// received still counts in `moves_reordered`, an error on either transport.
    pub(crate) moves_lost_unreliable: u64,
    /// Corrections received: MOVEs of the bots themselves the server refused. A refused MOVE is not
    /// relayed, so each also shows up in `moves_missing` at the bots that see the mover.
    pub(crate) corrections: u64,
    pub(crate) latency_us: LatencySummary,
    /// With --transport udp: the clients' transport counters, over the whole run (warm-up included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) udp: Option<UdpCounters>,
    /// With --chaos: what the misbehaving bots did and how the server answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) chaos: Option<ChaosSummary>,
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
    if summary.transport == Transport::Udp && summary.connected == 0 {
        // UDP has no connection to refuse: a missing server shows only as handshakes never answered.
        let timeouts = summary.udp.map_or(0, |udp| udp.handshake_timeouts);
        return format!(
            "no UDP session with {addr} started ({timeouts} handshakes timed out, {} refused): is a server \
             listening for UDP there? (`gamewire serve` does not speak UDP yet)",
            summary.connect_failures.saturating_sub(timeouts)
        );
    }
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
        "bots {} over {} (connected {}, welcomed {}) over {:.1} s",
        summary.bots,
        summary.transport.name(),
        summary.connected,
        summary.welcomed,
        summary.duration_seconds
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
    if let Some(udp) = &summary.udp {
        println!(
            "UDP: MOVEs lost (unreliable) {}; datagrams sent {}, received {}; resends {} reliable, {} \
             handshake; dropped {}, duplicates {}, stale unreliable {}, send drops {}, handshake timeouts {}",
            summary.moves_lost_unreliable,
            udp.datagrams_sent,
            udp.datagrams_received,
            udp.reliable_resends,
            udp.handshake_resends,
            udp.dropped,
            udp.duplicates,
            udp.stale_unreliable,
            udp.send_drops,
            udp.handshake_timeouts
        );
    }
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
    let progress = progress_bar(args);
    let counters = engine::drive(args, &mut bots, rng, progress.as_ref())?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let duration_seconds = args.duration;
    let frames_received: u64 = counters.received.iter().sum();
    let kind_name = |i: usize| PacketKind::from_id(i as u32).map_or("?", PacketKind::name);
    let counted = |array: &[u64; engine::KIND_SLOTS]| -> BTreeMap<&'static str, u64> {
        array.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (kind_name(i), *n)).collect()
    };
    let errors: BTreeMap<String, u64> =
        counters.errors.iter().map(|(code, n)| (crate::chaos::error_name(*code), *n)).collect();
    Ok(Summary {
        transport: args.transport,
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
        moves_lost_unreliable: counters.moves_lost_unreliable,
        corrections: counters.corrections,
        latency_us: LatencySummary::from_histogram(&counters.latency),
        udp: (args.transport == Transport::Udp).then_some(counters.udp),
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
