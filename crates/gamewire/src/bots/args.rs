//! `gamewire bots`'s flags, and the checks every number gets before a run starts.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use serde::Serialize;

/// How the bots reach the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// One TCP connection per bot (protocol v1's stream).
    #[default]
    Tcp,
    /// One UDP socket per bot, speaking docs/protocol.md section 10: handshake, then MOVEs on the
    /// unreliable channel and everything else on the reliable one.
    Udp,
}

impl Transport {
    /// The flag's value, as the JSON summary spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub(crate) struct BotsArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub(crate) addr: SocketAddr,
    /// Transport: tcp, or udp (docs/protocol.md section 10; not with --chaos yet).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub(crate) transport: Transport,
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
    /// Least seconds between two rounds of reads: 0 reads as soon as data arrives. A millisecond or two
    /// lets each socket gather several of the server's writes, taken with one receive call (and one
    /// ACK) instead of one each: the bots' own kernel cost per frame falls, so one core of bots can
    /// load a faster server. Adds at most this much to the latency measured.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub(crate) read_interval: f64,
    /// Soak mode: --chaos-fraction of the bots play like the others but, every --chaos-interval
    /// seconds on average, misbehave: disconnect abruptly (FIN or RST), stop reading for a while, or
    /// send what protocol v1 refuses (a malformed, spoofed, oversized or unknown frame, garbage, a
    /// second HELLO, half a frame, a teleport, NaN, a burst over the rate limit), then reconnect once
    /// the server has answered and closed. The summary's other figures are the honest bots' alone.
    #[arg(long)]
    pub(crate) chaos: bool,
    /// Fraction of the bots that misbehave with --chaos.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) chaos_fraction: f64,
    /// Mean seconds between two misdeeds of one chaos bot (each waits uniformly 0.5-1.5 times this
    /// after the server answered the previous one, or after it came back).
    #[arg(long, default_value_t = 3.0)]
    pub(crate) chaos_interval: f64,
}

/// Most bots one run simulates: as many players as one server can hold
/// ([`gamewire_world::PlayerId::MAX_PLAYERS`]); far more than one process has file descriptors for.
pub(crate) const MAX_BOTS: usize = gamewire_world::PlayerId::MAX_PLAYERS;

/// Highest per-bot rate of a kind of packet, per second: a period of a millisecond. Sixteen times
/// protocol v1's MOVE limit, so rate limiting can still be tested; above it the schedule's periods
/// round to nothing (at a million a second, to zero: an endless loop).
const MAX_HZ: f64 = 1000.0;

/// Checks every numeric flag: a clear error naming it, rather than a panic, an endless loop or a
/// silently meaningless run.
pub(crate) fn check_args(args: &BotsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_BOTS).contains(&args.bots),
        "--bots must be in 1..={MAX_BOTS}, got {}",
        args.bots
    );
    // The misdeeds are written for a byte stream (half a frame, RST, a stalled reader): over UDP most
    // mean something else, so the combination is refused rather than measured wrongly.
    anyhow::ensure!(
        !(args.chaos && args.transport == Transport::Udp),
        "--chaos is TCP-only for now: drop --chaos, or use --transport tcp"
    );
    check_seconds("--duration", args.duration, false)?;
    check_seconds("--warmup", args.warmup, true)?;
    check_seconds("--read-interval", args.read_interval, true)?;
    check_seconds("--chaos-interval", args.chaos_interval, false)?;
    for (flag, hz, zero_allowed) in [
        ("--move-hz", args.move_hz, false),
        ("--chat-hz", args.chat_hz, true),
        ("--attack-hz", args.attack_hz, true),
    ] {
        let low_ok = if zero_allowed { hz >= 0.0 } else { hz > 0.0 };
        anyhow::ensure!(
            low_ok && hz <= MAX_HZ,
            "{flag} must be {} and at most {MAX_HZ} per second, got {hz}",
            if zero_allowed { "0 or more" } else { "above 0" }
        );
    }
    anyhow::ensure!(
        args.ramp.is_finite() && args.ramp > 0.0,
        "--ramp must be a positive number of connections per second, got {}",
        args.ramp
    );
    anyhow::ensure!(
        args.attack_range.is_finite() && args.attack_range > 0.0,
        "--attack-range must be a positive finite number, got {}",
        args.attack_range
    );
    if let Some(radius) = args.stay_within {
        anyhow::ensure!(
            radius.is_finite() && radius > 0.0,
            "--stay-within must be a positive finite number, got {radius}"
        );
    }
    anyhow::ensure!(
        (0.0..=10.0).contains(&args.speed_factor),
        "--speed-factor must be in 0..=10, got {}",
        args.speed_factor
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.chaos_fraction),
        "--chaos-fraction must be in 0..=1, got {}",
        args.chaos_fraction
    );
    Ok(())
}

/// Checks a `flag` of `seconds`: a finite number, not negative, above 0 unless `zero_allowed`, and at
/// most a year ([`gamewire_world::MAX_TIMEOUT`], the servers' cap too), so that every instant computed
/// from it stays representable.
pub(crate) fn check_seconds(flag: &str, seconds: f64, zero_allowed: bool) -> anyhow::Result<()> {
    let year = gamewire_world::MAX_TIMEOUT.as_secs_f64();
    let low_ok = if zero_allowed { seconds >= 0.0 } else { seconds > 0.0 };
    anyhow::ensure!(
        low_ok && seconds <= year,
        "{flag} must be {} and at most a year ({year} s), got {seconds}",
        if zero_allowed { "0 or more seconds" } else { "above 0 seconds" }
    );
    Ok(())
}
