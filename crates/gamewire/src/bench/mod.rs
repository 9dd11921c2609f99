//! `gamewire bench`: every server under test as its own process, one after another in the same run,
//! pinned apart from the load client; server CPU, peak RSS, delivered frames/s and latency for each,
//! written to `results.json`, `results.md` and SVG plots.
//!
//! A run of one server: pick a free port on 127.0.0.1, start the server with the scenario's world
//! flags, wait until it accepts a TCP connection, start the load client (`gamewire bots --json`, or the
//! echo client of [`echo`]) pinned to the other CPU, sample the server's utime+stime when the
//! client's warm-up ends and again when the client exits (so CPU covers the measured window only),
//! read VmHWM, then SIGTERM the server (SIGKILL after 10 s).

mod child;
mod echo;
mod plot;
mod proc;
pub(crate) mod report;
mod stats;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use child::{Guard, Pin};
use report::{CapacityStep, ClientReport, Failure, Pinning, Results, RssTrend, RunMeasure, ServerResult};

/// Players each bot should have in view in the `mmo` scenario.
const MMO_IN_VIEW: f64 = 8.0;
/// Area-of-interest radius of the `mmo` and `crowd` scenarios.
const AOI_RADIUS: f64 = 50.0;
/// How long a server may take to accept its first connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Bots spread at constant density, about 8 players in view each; MOVE 10 Hz, CHAT 0.2 Hz.
    Mmo,
    /// Everyone at one spawn point, staying within 20 units: fan-out = N; MOVE 10 Hz.
    Crowd,
    /// Servers in `--echo` mode; closed-loop 64-byte round trips.
    Echo,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Mmo => "mmo",
            Scenario::Crowd => "crowd",
            Scenario::Echo => "echo",
        }
    }
}

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServerKind {
    /// This executable's `serve` with its default `--io auto` (io_uring where available).
    Gamewire,
    /// `serve --io uring`.
    GamewireUring,
    /// `serve --io mio`.
    GamewireMio,
    /// `gamewire-baseline-tokio`, next to this executable.
    Tokio,
    /// `gamewire-baseline-blocking`, next to this executable.
    Blocking,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Gamewire => "gamewire",
            ServerKind::GamewireUring => "gamewire-uring",
            ServerKind::GamewireMio => "gamewire-mio",
            ServerKind::Tokio => "tokio",
            ServerKind::Blocking => "blocking",
        }
    }

    fn binary(self) -> Option<&'static str> {
        match self {
            ServerKind::Gamewire | ServerKind::GamewireUring | ServerKind::GamewireMio => None,
            ServerKind::Tokio => Some("gamewire-baseline-tokio"),
            ServerKind::Blocking => Some("gamewire-baseline-blocking"),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Servers to measure, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "gamewire,tokio,blocking")]
    servers: Vec<ServerKind>,
    /// Load scenario.
    #[arg(long, value_enum, default_value_t = Scenario::Mmo)]
    scenario: Scenario,
    /// Bots (echo: connections) [default: 2000; with --quick: 1000].
    #[arg(long)]
    bots: Option<usize>,
    /// Seconds measured per run, after the warm-up [default: 30; with --quick: 3].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up per run (clients connect meanwhile) [default: 5; with --quick: 1].
    #[arg(long)]
    warmup: Option<f64>,
    /// Directory for results.json, results.md, the plots and the children's logs.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// A short run (about 15 s for three servers): 1,000 bots, 1 s of warm-up and 3 s measured each.
    /// Enough players that the architectures differ as in a full run; too short for stable figures.
    #[arg(long)]
    quick: bool,
    /// Also ramp the bots per server (×--capacity-factor from --capacity-start, short runs) until p99
    /// exceeds --p99-ms or an ERROR/disconnect shows, and report the most bots held.
    #[arg(long)]
    find_capacity: bool,
    /// The p99 latency limit of --find-capacity, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    p99_ms: f64,
    /// First step of --find-capacity.
    #[arg(long, default_value_t = 250)]
    capacity_start: usize,
    /// Growth of each --find-capacity step.
    #[arg(long, default_value_t = 1.5)]
    capacity_factor: f64,
    /// Largest step of --find-capacity (file descriptors of the bots' process bound it).
    #[arg(long, default_value_t = 15_000)]
    capacity_max: usize,
    /// Once a --find-capacity step breaks, bisect between the last step held and the one that broke
    /// until they are closer than this fraction of the held one (0: no bisection).
    #[arg(long, default_value_t = 0.1)]
    capacity_resolution: f64,
    /// CPU the server is pinned to (taskset -c).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU the load client is pinned to (taskset -c).
    #[arg(long, default_value_t = 1)]
    bots_cpu: usize,
    /// Runs per server; the figures reported are medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// `--pool-mib` of `gamewire serve`.
    #[arg(long, default_value_t = 64)]
    pool_mib: usize,
    /// `--flush-interval` of `gamewire serve`, seconds (0: flush every loop turn, its default).
    #[arg(long, default_value_t = 0.0)]
    flush_interval: f64,
    /// `--workers` of `gamewire serve` (its workers run unpinned inside the server's CPU set).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// `--send-zerocopy-threshold` of `gamewire serve` (io_uring zero-copy sends; 0: off).
    #[arg(long, default_value_t = 0)]
    send_zerocopy_threshold: usize,
    /// Soak: a fraction (--chaos-fraction) of the bots misbehave at random and reconnect (`gamewire
    /// bots --chaos`); the other figures are the honest bots'. With the RSS sampled every second, this
    /// shows whether the server's memory stays flat over a long run.
    #[arg(long)]
    chaos: bool,
    /// Fraction of the bots that misbehave with --chaos.
    #[arg(long, default_value_t = 0.1)]
    chaos_fraction: f64,
    /// `--read-interval` of `gamewire bots`: least seconds between two rounds of reads (0: read as soon
    /// as data arrives). A millisecond lightens the load generator's kernel work per frame.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    bots_read_interval: f64,
    /// Internal: run the echo client against this address and print its JSON summary.
    #[arg(long, hide = true)]
    echo_client: Option<SocketAddr>,
}

/// Everything a bench run needs, resolved from the flags.
#[derive(Debug)]
struct Plan {
    scenario: Scenario,
    servers: Vec<(ServerKind, PathBuf)>,
    exe: PathBuf,
    bots: usize,
    duration: f64,
    warmup: f64,
    runs: usize,
    quick: bool,
    out: PathBuf,
    logs: PathBuf,
    server_pin: Pin,
    client_pin: Pin,
    pool_mib: usize,
    flush_interval: f64,
    send_zerocopy_threshold: usize,
    workers: usize,
    bots_options: BotsOptions,
}

/// What the bench passes on to `gamewire bots` besides the scenario's load.
#[derive(Clone, Copy, Debug, Default)]
struct BotsOptions {
    /// `Some(fraction)` with --chaos.
    chaos: Option<f64>,
    /// `--read-interval`, in seconds (0: not passed).
    read_interval: f64,
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (bots, duration, warmup) = resolve_load(&args);
    check_args(&args, bots, duration, warmup)?;
    if let Some(addr) = args.echo_client {
        let report = echo::run_client(addr, bots, warmup, duration, stats::ramp_for(bots, warmup))?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    anyhow::ensure!(!args.servers.is_empty(), "--servers names no server");
    anyhow::ensure!(
        !args.chaos || args.scenario != Scenario::Echo,
        "--chaos needs game bots: scenario mmo or crowd, not echo"
    );
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut servers = Vec::new();
    for &kind in &args.servers {
        if servers.iter().any(|(k, _)| *k == kind) {
            continue;
        }
        servers.push((kind, server_program(&exe, kind)?));
    }
    if args.server_cpu == args.bots_cpu {
        tracing::warn!(cpu = args.server_cpu, "server and load client pinned to the same CPU");
    }
    let (server_pin, client_pin) = match (child::probe_pin(args.server_cpu), child::probe_pin(args.bots_cpu))
    {
        (Pin::Cpu(s), Pin::Cpu(b)) => (Pin::Cpu(s), Pin::Cpu(b)),
        _ => (Pin::Unpinned, Pin::Unpinned),
    };
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let plan = Plan {
        scenario: args.scenario,
        servers,
        exe,
        bots,
        duration,
        warmup,
        runs: args.runs,
        quick: args.quick,
        out: args.out.clone(),
        logs,
        server_pin,
        client_pin,
        pool_mib: args.pool_mib,
        flush_interval: args.flush_interval,
        send_zerocopy_threshold: args.send_zerocopy_threshold,
        workers: args.workers,
        bots_options: BotsOptions {
            chaos: args.chaos.then_some(args.chaos_fraction),
            read_interval: args.bots_read_interval,
        },
    };

    let mut measured: Vec<ServerResult> = Vec::new();
    let mut failures = Vec::new();
    for &(kind, _) in &plan.servers {
        let mut runs = Vec::new();
        for run in 1..=plan.runs {
            tracing::info!(
                "{}: run {run}/{}: {} {} clients, {} s warm-up, {} s measured",
                kind.name(),
                plan.runs,
                plan.bots,
                plan.scenario.name(),
                plan.warmup,
                plan.duration
            );
            match measure(
                &plan,
                kind,
                plan.bots,
                plan.warmup,
                plan.duration,
                run as u64,
                &format!("run{run}"),
            ) {
                Ok(m) => {
                    report_run(kind, &m, plan.bots, plan.duration);
                    runs.push(m);
                }
                Err(error) => {
                    tracing::error!("{}: run {run} failed: {error:#}", kind.name());
                    failures.push(Failure {
                        name: kind.name().to_string(),
                        error: format!("run {run}: {error:#}"),
                    });
                    break;
                }
            }
        }
        if !runs.is_empty() {
            measured.push(report::aggregate(kind.name(), &runs));
        }
    }

    let (capacity, capacity_steps) = if args.find_capacity {
        let (held, steps) = find_capacity(&plan, &args);
        (Some(held), Some(steps))
    } else {
        (None, None)
    };

    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let results = Results {
        scenario: plan.scenario.name().to_string(),
        bots: plan.bots,
        duration: plan.duration,
        warmup: plan.warmup,
        runs: plan.runs,
        chaos_fraction: plan.bots_options.chaos,
        machine: proc::Machine::detect(),
        date: stats::format_utc(now),
        command: std::env::args().collect(),
        pinning: match (plan.server_pin, plan.client_pin) {
            (Pin::Cpu(s), Pin::Cpu(b)) => Pinning { server_cpu: Some(s), bots_cpu: Some(b) },
            _ => Pinning { server_cpu: None, bots_cpu: None },
        },
        server_flags: scenario_flags(plan.scenario, plan.bots),
        servers: measured,
        failures,
        capacity,
        capacity_p99_ms: args.find_capacity.then_some(args.p99_ms),
        capacity_steps,
    };
    write_outputs(&plan.out, &results)?;
    println!("{}", report::markdown_table(&results));
    println!("{}", report::method_line(&results));
    println!(
        "\nWritten to {}: results.json, results.md, latency_cdf.svg, cpu_per_million_frames.svg, rss.svg, logs/",
        plan.out.display()
    );
    if results.servers.is_empty() {
        bail!("no server could be measured");
    }
    Ok(())
}

/// Most runs per server: a run takes seconds to minutes, so more is a typo rather than a plan.
const MAX_RUNS: usize = 1000;

/// Checks every numeric flag (and the resolved `bots`, `duration` and `warmup`) before anything
/// starts: a clear error naming the flag, never a panic, an endless run or a server that refuses
/// what it is passed after the first servers were measured.
fn check_args(args: &BenchArgs, bots: usize, duration: f64, warmup: f64) -> anyhow::Result<()> {
    let max_bots = crate::bots::MAX_BOTS;
    anyhow::ensure!((1..=max_bots).contains(&bots), "--bots must be in 1..={max_bots}, got {bots}");
    crate::bots::check_seconds("--duration", duration, false)?;
    crate::bots::check_seconds("--warmup", warmup, true)?;
    crate::bots::check_seconds("--flush-interval", args.flush_interval, true)?;
    crate::bots::check_seconds("--bots-read-interval", args.bots_read_interval, true)?;
    anyhow::ensure!(
        (1..=MAX_RUNS).contains(&args.runs),
        "--runs must be in 1..={MAX_RUNS}, got {}",
        args.runs
    );
    anyhow::ensure!(
        args.capacity_factor.is_finite() && args.capacity_factor > 1.0,
        "--capacity-factor must be a finite number above 1, got {}",
        args.capacity_factor
    );
    anyhow::ensure!(
        args.capacity_resolution.is_finite() && args.capacity_resolution >= 0.0,
        "--capacity-resolution must be a finite number, 0 or more, got {}",
        args.capacity_resolution
    );
    anyhow::ensure!(
        args.p99_ms.is_finite() && args.p99_ms > 0.0,
        "--p99-ms must be a positive finite number of milliseconds, got {}",
        args.p99_ms
    );
    anyhow::ensure!(
        (1..=max_bots).contains(&args.capacity_max),
        "--capacity-max must be in 1..={max_bots}, got {}",
        args.capacity_max
    );
    anyhow::ensure!(
        args.capacity_start <= args.capacity_max,
        "--capacity-start ({}) must not exceed --capacity-max ({})",
        args.capacity_start,
        args.capacity_max
    );
    anyhow::ensure!(
        (1..=gamewire_net::MAX_WORKERS).contains(&args.workers),
        "--workers must be in 1..={}, got {}",
        gamewire_net::MAX_WORKERS,
        args.workers
    );
    anyhow::ensure!(
        args.pool_mib > 0 && args.pool_mib.checked_mul(1 << 20).is_some(),
        "--pool-mib must be at least 1 and fit in memory, got {}",
        args.pool_mib
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.chaos_fraction),
        "--chaos-fraction must be in 0..=1, got {}",
        args.chaos_fraction
    );
    Ok(())
}

/// Bots, duration and warm-up: the flags, else the defaults of a full or a `--quick` run.
fn resolve_load(args: &BenchArgs) -> (usize, f64, f64) {
    // 1,000 bots for --quick, not a handful: at 100 every server idles and fixed costs (a receive ring
    // resident from the start, a runtime's threads) decide RSS and p99, the opposite of what a full
    // run shows; at 1,000 the per-connection costs dominate, as they do at 2,000.
    let (bots, duration, warmup) = if args.quick { (1000, 3.0, 1.0) } else { (2000, 30.0, 5.0) };
    (args.bots.unwrap_or(bots), args.duration.unwrap_or(duration), args.warmup.unwrap_or(warmup))
}

/// The executable of a server: this one for gamewire, a sibling for the baselines.
fn server_program(exe: &Path, kind: ServerKind) -> anyhow::Result<PathBuf> {
    let Some(binary) = kind.binary() else { return Ok(exe.to_path_buf()) };
    let path = exe.with_file_name(format!("{binary}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return Ok(path);
    }
    let release = exe.parent().and_then(Path::file_name).is_some_and(|dir| dir == "release");
    bail!(
        "{binary} (for --servers {}) is not next to this executable: no {}. Build it with `cargo build{} \
         --workspace` (or `cargo build{} -p {binary}`), or leave it out of --servers",
        kind.name(),
        path.display(),
        if release { " --release" } else { "" },
        if release { " --release" } else { "" },
    )
}

/// World flags of a scenario for `bots` players, as every server takes them.
fn scenario_flags(scenario: Scenario, bots: usize) -> Vec<String> {
    match scenario {
        Scenario::Mmo => {
            let side = stats::mmo_world_side(bots, AOI_RADIUS, MMO_IN_VIEW).ceil().max(1.0);
            vec!["--world".into(), format!("{side},{side}"), "--aoi-radius".into(), AOI_RADIUS.to_string()]
        }
        Scenario::Crowd => vec![
            "--world".into(),
            "1000,1000".into(),
            "--aoi-radius".into(),
            AOI_RADIUS.to_string(),
            "--spawn".into(),
            "500,500".into(),
        ],
        Scenario::Echo => vec!["--echo".into()],
    }
}

/// The full argument list of a server.
fn server_args(plan: &Plan, kind: ServerKind, bots: usize, addr: SocketAddr) -> Vec<String> {
    let mut args = Vec::new();
    let io = match kind {
        ServerKind::Gamewire => Some("auto"),
        ServerKind::GamewireUring => Some("uring"),
        ServerKind::GamewireMio => Some("mio"),
        ServerKind::Tokio | ServerKind::Blocking => None,
    };
    if let Some(io) = io {
        args.extend(["serve".to_string(), "--pool-mib".to_string(), plan.pool_mib.to_string()]);
        args.extend(["--flush-interval".to_string(), plan.flush_interval.to_string()]);
        args.extend(["--io".to_string(), io.to_string()]);
        args.extend(["--workers".to_string(), plan.workers.to_string(), "--no-pin".to_string()]);
        if plan.send_zerocopy_threshold > 0 {
            let threshold = plan.send_zerocopy_threshold.to_string();
            args.extend(["--send-zerocopy-threshold".to_string(), threshold]);
        }
    }
    args.extend(["--addr".to_string(), addr.to_string()]);
    args.extend(scenario_flags(plan.scenario, bots));
    args.extend([
        "--max-connections".to_string(),
        (bots + 100).max(10_000).to_string(),
        "--drain-timeout".to_string(),
        "2".to_string(),
        "--seed".to_string(),
        "1".to_string(),
    ]);
    args
}

/// The argument list of the load client (this executable), with `options` passed on to `gamewire bots`.
fn client_args(
    scenario: Scenario,
    bots: usize,
    warmup: f64,
    duration: f64,
    addr: SocketAddr,
    seed: u64,
    options: BotsOptions,
) -> Vec<String> {
    let common = [
        "--addr".to_string(),
        addr.to_string(),
        "--bots".to_string(),
        bots.to_string(),
        "--warmup".to_string(),
        warmup.to_string(),
        "--duration".to_string(),
        duration.to_string(),
    ];
    let mut args = Vec::new();
    match scenario {
        Scenario::Echo => {
            args.extend(["bench".to_string(), "--echo-client".to_string(), addr.to_string()]);
            args.extend(common.into_iter().skip(2));
        }
        Scenario::Mmo | Scenario::Crowd => {
            args.extend(["bots".to_string(), "--json".to_string()]);
            args.extend(common);
            args.extend([
                "--ramp".to_string(),
                stats::ramp_for(bots, warmup).to_string(),
                "--seed".to_string(),
                seed.to_string(),
                "--move-hz".to_string(),
                "10".to_string(),
            ]);
            if scenario == Scenario::Mmo {
                args.extend(["--chat-hz".to_string(), "0.2".to_string()]);
            } else {
                args.extend(["--stay-within".to_string(), "20".to_string()]);
            }
            if let Some(fraction) = options.chaos {
                args.extend(["--chaos".to_string(), "--chaos-fraction".to_string(), fraction.to_string()]);
            }
            if options.read_interval > 0.0 {
                args.extend(["--read-interval".to_string(), options.read_interval.to_string()]);
            }
        }
    }
    args
}

/// One run of one server with `bots` clients.
fn measure(
    plan: &Plan,
    kind: ServerKind,
    bots: usize,
    warmup: f64,
    duration: f64,
    seed: u64,
    label: &str,
) -> anyhow::Result<RunMeasure> {
    let program = &plan.servers.iter().find(|(k, _)| *k == kind).expect("planned server").1;
    let addr = SocketAddr::from(([127, 0, 0, 1], child::free_port()?));
    let server_log = plan.logs.join(format!("{}-{label}.server.log", kind.name()));
    let command = child::command(plan.server_pin, program, &server_args(plan, kind, bots, addr));
    let mut server = Guard::spawn(kind.name(), command, server_log, false)?;
    child::wait_ready(&mut server, addr, READY_TIMEOUT)?;
    let server_pid = server.pid();

    let client_log = plan.logs.join(format!("{}-{label}.client.log", kind.name()));
    let args = client_args(plan.scenario, bots, warmup, duration, addr, seed, plan.bots_options);
    let command = child::command(plan.client_pin, &plan.exe, &args);
    let mut client = Guard::spawn("load client", command, client_log, true)?;
    let started = Instant::now();
    let mut stdout = client.child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let ticks = proc::ticks_per_second();
    let mut rss = RssSampler::default();

    // Sample both CPUs when the client's warm-up ends.
    let warmup_end = started + Duration::from_secs_f64(warmup);
    while Instant::now() < warmup_end {
        rss.sample(server_pid, started);
        if let Some(status) = client.exited() {
            bail!("the load client exited during the warm-up ({status}); its log:\n{}", client.log_tail());
        }
        if let Some(status) = server.exited() {
            bail!("{} exited during the warm-up ({status}); its log:\n{}", kind.name(), server.log_tail());
        }
        std::thread::sleep(
            Duration::from_millis(10).min(warmup_end.saturating_duration_since(Instant::now())),
        );
    }
    let server_before = proc::cpu_ticks(server_pid).context("cannot read the server's CPU time")?;
    let client_before = proc::cpu_ticks(client.pid()).unwrap_or_default();
    let mut client_last = client_before;

    // Wait for the client, following its CPU time until it exits.
    let deadline = warmup_end + Duration::from_secs_f64(duration) + Duration::from_secs(60);
    let status = loop {
        rss.sample(server_pid, started);
        if let Ok(ticks) = proc::cpu_ticks(client.pid()) {
            client_last = ticks;
        }
        if let Some(status) = client.exited() {
            break status;
        }
        if Instant::now() > deadline {
            bail!(
                "the load client did not finish within a minute of its end; its log:\n{}",
                client.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let server_after = proc::cpu_ticks(server_pid).context("cannot read the server's CPU time")?;
    if let Some(status) = server.exited() {
        bail!("{} exited during the run ({status}); its log:\n{}", kind.name(), server.log_tail());
    }
    let peak_rss_bytes = proc::peak_rss_bytes(server_pid).context("cannot read the server's VmHWM")?;
    if server.stop(STOP_GRACE).is_none() {
        tracing::warn!("{} had to be killed", kind.name());
    }
    let output = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("the load client failed ({status}); its log:\n{}", client.log_tail());
    }
    let client_report: ClientReport = serde_json::from_str(&output)
        .with_context(|| format!("cannot parse the load client's JSON: {output:?}"))?;
    Ok(RunMeasure {
        cpu_seconds: stats::cpu_seconds(server_before.total(), server_after.total(), ticks),
        peak_rss_bytes,
        client_cpu_seconds: stats::cpu_seconds(client_before.total(), client_last.total(), ticks),
        client: client_report,
        rss: RssTrend::from_samples(rss.samples, warmup, duration),
    })
}

/// VmRSS of the server once a second, for [`RssTrend`].
#[derive(Debug, Default)]
struct RssSampler {
    samples: Vec<(f64, u64)>,
    last: Option<Instant>,
}

impl RssSampler {
    /// Takes a sample of `pid` if a second has passed since the last one; times are from `started`.
    fn sample(&mut self, pid: u32, started: Instant) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            return;
        }
        self.last = Some(now);
        if let Ok(bytes) = proc::rss_bytes(pid) {
            self.samples.push((now.duration_since(started).as_secs_f64(), bytes));
        }
    }
}

/// One line per run on stderr, with warnings when the run is suspect.
fn report_run(kind: ServerKind, m: &RunMeasure, bots: usize, duration: f64) {
    let c = &m.client;
    tracing::info!(
        "{}: {:.0} frames/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, CPU {:.2} s, RSS {:.1} MiB, ERRORs {}, disconnects {}",
        kind.name(),
        c.frames_per_second,
        c.latency_us.p50 as f64 / 1e3,
        c.latency_us.p99 as f64 / 1e3,
        c.latency_us.p999 as f64 / 1e3,
        m.cpu_seconds,
        m.peak_rss_bytes as f64 / (1 << 20) as f64,
        c.error_total,
        c.disconnects
    );
    if let Some(rss) = &m.rss {
        tracing::info!(
            "{}: RSS median {:.1} MiB over the first {:.0} s of the window, {:.1} MiB over the last ({}), max \
             sampled {:.1} MiB",
            kind.name(),
            rss.first_window_median_bytes as f64 / (1 << 20) as f64,
            rss.window_seconds,
            rss.last_window_median_bytes as f64 / (1 << 20) as f64,
            rss.growth.map_or_else(|| "n/a".to_string(), |g| format!("{g:.3}×")),
            rss.max_sampled_bytes as f64 / (1 << 20) as f64,
        );
    }
    if c.moves_reordered > 0 || c.moves_missing > 0 {
        tracing::warn!("{}: MOVEs out of order {}, lost {}", kind.name(), c.moves_reordered, c.moves_missing);
    }
    if let Some(chaos) = &c.chaos {
        tracing::info!("{}", report::chaos_paragraph(kind.name(), chaos).trim());
    }
    if c.welcomed < bots {
        tracing::warn!("{}: only {} of {bots} clients were playing at the end", kind.name(), c.welcomed);
    }
    if m.client_cpu_seconds > 0.9 * duration {
        tracing::warn!(
            "{}: the load client used {:.0}% of its CPU: the figures may measure the client, not the server",
            kind.name(),
            100.0 * m.client_cpu_seconds / duration
        );
    }
    if c.error_total > 0 || c.disconnects > 0 || c.connect_failures > 0 || c.send_stalls > 0 {
        tracing::warn!(
            "{}: errors {:?}, disconnects {}, connect failures {}, stalled sends {}",
            kind.name(),
            c.errors,
            c.disconnects,
            c.connect_failures,
            c.send_stalls
        );
    }
}

/// Ramps the clients per server until a step breaks; returns the most held per server and the steps.
#[allow(clippy::type_complexity)]
fn find_capacity(
    plan: &Plan,
    args: &BenchArgs,
) -> (BTreeMap<String, Option<usize>>, BTreeMap<String, Vec<CapacityStep>>) {
    let (warmup, duration) = if plan.quick { (1.5, 3.0) } else { (5.0, 10.0) };
    let limit_us = (args.p99_ms * 1e3) as u64;
    let mut held = BTreeMap::new();
    let mut all_steps = BTreeMap::new();
    for &(kind, _) in &plan.servers {
        let mut best = None;
        let mut broke = None;
        let mut steps = Vec::new();
        let mut bots = args.capacity_start.max(1);
        // Geometric steps up to the first that breaks, then bisection between the last held and it.
        loop {
            let step = capacity_step(plan, kind, bots, warmup, duration, limit_us, args.p99_ms);
            if step.held {
                best = Some(bots);
            } else {
                broke = Some(bots);
            }
            steps.push(step);
            let next = match broke {
                None => Some(stats::next_capacity_step(bots, args.capacity_factor)),
                Some(broke) => {
                    best.and_then(|held| stats::bisect_step(held, broke, args.capacity_resolution))
                }
            };
            match next {
                Some(next) if next <= args.capacity_max => bots = next,
                _ => break,
            }
        }
        if broke.is_none() {
            tracing::warn!("{}: held every step up to --capacity-max {}", kind.name(), args.capacity_max);
        }
        tracing::info!("{}: capacity {:?} clients at p99 <= {} ms", kind.name(), best, args.p99_ms);
        held.insert(kind.name().to_string(), best);
        all_steps.insert(kind.name().to_string(), steps);
    }
    (held, all_steps)
}

fn write_outputs(out: &Path, results: &Results) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(out.join("results.json"), json + "\n").context("cannot write results.json")?;
    std::fs::write(out.join("results.md"), report::markdown(results)).context("cannot write results.md")?;
    plot::all(out, &results.servers, results.scenario == "echo")?;
    Ok(())
}

/// Measures one --find-capacity step of `bots` clients against `kind`.
fn capacity_step(
    plan: &Plan,
    kind: ServerKind,
    bots: usize,
    warmup: f64,
    duration: f64,
    limit_us: u64,
    p99_ms: f64,
) -> CapacityStep {
    tracing::info!("{}: capacity step: {bots} clients (p99 limit {p99_ms} ms)", kind.name());
    match measure(plan, kind, bots, warmup, duration, 1, &format!("cap{bots}")) {
        Ok(m) => {
            let c = &m.client;
            let ok = report::step_held(c, bots, limit_us);
            tracing::info!(
                "{}: {bots} clients: p99 {:.2} ms, {:.0} frames/s, ERRORs {}, disconnects {}, playing {}: {}",
                kind.name(),
                c.latency_us.p99 as f64 / 1e3,
                c.frames_per_second,
                c.error_total,
                c.disconnects,
                c.welcomed,
                if ok { "held" } else { "broke" }
            );
            CapacityStep {
                bots,
                held: ok,
                p99_us: Some(c.latency_us.p99),
                frames_per_second: Some(c.frames_per_second),
                errors: Some(c.error_total),
                disconnects: Some(c.disconnects),
                welcomed: Some(c.welcomed),
                failure: None,
            }
        }
        Err(error) => {
            tracing::warn!("{}: {bots} clients: could not be measured: {error:#}", kind.name());
            CapacityStep {
                bots,
                held: false,
                p99_us: None,
                frames_per_second: None,
                errors: None,
                disconnects: None,
                welcomed: None,
                failure: Some(format!("{error:#}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_flags_set_the_density() {
        assert_eq!(scenario_flags(Scenario::Mmo, 2000), ["--world", "1402,1402", "--aoi-radius", "50"]);
        assert_eq!(scenario_flags(Scenario::Crowd, 10)[4..], ["--spawn", "500,500"]);
        assert_eq!(scenario_flags(Scenario::Echo, 10), ["--echo"]);
    }

    #[test]
    fn client_arguments() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mmo = client_args(Scenario::Mmo, 50, 1.0, 3.0, addr, 7, BotsOptions::default()).join(" ");
        assert!(mmo.starts_with("bots --json --addr 127.0.0.1:9 --bots 50 --warmup 1 --duration 3"), "{mmo}");
        assert!(mmo.contains("--chat-hz 0.2") && mmo.contains("--move-hz 10") && mmo.contains("--seed 7"));
        assert!(!mmo.contains("--chaos"), "{mmo}");
        let crowd = client_args(Scenario::Crowd, 50, 1.0, 3.0, addr, 7, BotsOptions::default()).join(" ");
        assert!(crowd.contains("--stay-within 20"), "{crowd}");
        let options = BotsOptions { chaos: Some(0.25), read_interval: 0.001 };
        let soak = client_args(Scenario::Mmo, 50, 1.0, 3.0, addr, 7, options).join(" ");
        assert!(soak.ends_with("--chaos --chaos-fraction 0.25 --read-interval 0.001"), "{soak}");
        let echo = client_args(Scenario::Echo, 50, 1.0, 3.0, addr, 7, BotsOptions::default()).join(" ");
        assert_eq!(echo, "bench --echo-client 127.0.0.1:9 --bots 50 --warmup 1 --duration 3");
    }

    #[test]
    fn a_missing_baseline_names_the_cargo_command() {
        let exe = Path::new("/nonexistent/target/release/gamewire");
        let error = server_program(exe, ServerKind::Tokio).unwrap_err().to_string();
        assert!(error.contains("cargo build --release --workspace"), "{error}");
        assert_eq!(server_program(exe, ServerKind::Gamewire).unwrap(), exe);
    }
}
