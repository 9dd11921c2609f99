//! What a run measured, the results of a whole bench, and the Markdown table made of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::proc::Machine;
use super::stats::{cpu_us_per_frame, format_ratio, median, median_index, ratio, window_medians};
use crate::chaos::ChaosSummary;

/// Latency figures of a load client (relayed MOVEs for the bots, round trips for the echo client),
/// microseconds: the same summary `gamewire bots --json` prints and the bench reads back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct LatencySummary {
    pub(crate) samples: u64,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
    /// (latency_us, cumulative fraction) points of the CDF.
    pub(crate) cdf: Vec<(u64, f64)>,
}

impl LatencySummary {
    pub(crate) fn from_histogram(histogram: &hdrhistogram::Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let quantiles = [
            0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999,
            0.9995, 0.9999, 1.0,
        ];
        LatencySummary {
            samples: histogram.len(),
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
            cdf: quantiles.iter().map(|&q| (histogram.value_at_quantile(q), q)).collect(),
        }
    }
}

/// The JSON summary a load client prints: `gamewire bots --json`, or the bench's echo client (same
/// shape). Only the fields the bench uses are read; missing ones default to zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ClientReport {
    pub(crate) bots: usize,
    pub(crate) connected: usize,
    pub(crate) welcomed: usize,
    pub(crate) duration_seconds: f64,
    pub(crate) frames_received: u64,
    pub(crate) frames_per_second: f64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) error_total: u64,
    pub(crate) disconnects: u64,
    pub(crate) connect_failures: u64,
    pub(crate) send_stalls: u64,
    pub(crate) moves_reordered: u64,
    pub(crate) moves_missing: u64,
    pub(crate) latency_us: LatencySummary,
    /// With --chaos: what the misbehaving bots did (the fields above are then the honest bots').
    pub(crate) chaos: Option<ChaosSummary>,
}

/// The server's resident memory over a run, VmRSS sampled once a second: whether it stays flat.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct RssTrend {
    /// Length of the first and of the last part of the measured window compared, seconds: a minute,
    /// or a third of a shorter window.
    pub(crate) window_seconds: f64,
    pub(crate) first_window_median_bytes: u64,
    pub(crate) last_window_median_bytes: u64,
    /// Last window's median over the first's.
    pub(crate) growth: Option<f64>,
    /// The largest sample of the measured window.
    pub(crate) max_sampled_bytes: u64,
    /// Every sample: (seconds since the load client started, bytes), the warm-up included.
    pub(crate) samples: Vec<(f64, u64)>,
}

impl RssTrend {
    /// The trend of `samples` over the measured window `[warmup, warmup + duration]`; `None` when too
    /// few samples fall in it.
    pub(crate) fn from_samples(samples: Vec<(f64, u64)>, warmup: f64, duration: f64) -> Option<RssTrend> {
        let window = (duration / 3.0).min(60.0);
        let values: Vec<(f64, f64)> = samples.iter().map(|&(t, bytes)| (t, bytes as f64)).collect();
        let (first, last, max) = window_medians(&values, warmup, warmup + duration, window)?;
        Some(RssTrend {
            window_seconds: window,
            first_window_median_bytes: first.round() as u64,
            last_window_median_bytes: last.round() as u64,
            growth: ratio(last, first),
            max_sampled_bytes: max.round() as u64,
            samples,
        })
    }
}

/// One run of one server.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RunMeasure {
    /// Server utime+stime over the measured window.
    pub(crate) cpu_seconds: f64,
    pub(crate) peak_rss_bytes: u64,
    /// Load client utime+stime over (about) the measured window: near the window's length means the
    /// client, not the server, was the limit.
    pub(crate) client_cpu_seconds: f64,
    pub(crate) client: ClientReport,
    /// RSS sampled over the run (`None`: too few samples in the measured window).
    pub(crate) rss: Option<RssTrend>,
}

/// Latency percentiles in a server's results, microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct LatencyFigures {
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    pub(crate) samples: u64,
}

/// One server's figures: medians over its runs (error counts: the largest of any run).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ServerResult {
    pub(crate) name: String,
    pub(crate) runs: usize,
    pub(crate) cpu_seconds: f64,
    pub(crate) peak_rss_bytes: u64,
    pub(crate) frames_delivered: u64,
    pub(crate) frames_per_second: f64,
    /// Server CPU µs per delivered frame, which is also CPU seconds per million frames.
    pub(crate) cpu_us_per_frame: Option<f64>,
    pub(crate) latency_us: LatencyFigures,
    /// Protocol ERRORs the clients received (the largest count of any run).
    pub(crate) errors: u64,
    /// ERRORs by code, summed over the runs.
    pub(crate) error_codes: BTreeMap<String, u64>,
    pub(crate) disconnects: u64,
    pub(crate) connect_failures: u64,
    pub(crate) send_stalls: u64,
    /// MOVEs the bots received out of order, and MOVEs lost (the largest count of any run).
    pub(crate) moves_reordered: u64,
    pub(crate) moves_missing: u64,
    /// RSS over time of the run whose RSS grew most (last window over first).
    pub(crate) rss: Option<RssTrend>,
    /// With --chaos: the misbehaving bots' actions and the answers they got, summed over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) chaos: Option<ChaosSummary>,
    /// Bots that got their WELCOME (echo: connections established), the fewest of any run.
    pub(crate) welcomed: usize,
    pub(crate) client_cpu_seconds: f64,
    /// CDF of the run with the median p99: (latency_us, fraction).
    pub(crate) latency_cdf: Vec<(u64, f64)>,
}

fn median_of(runs: &[RunMeasure], figure: impl Fn(&RunMeasure) -> f64) -> f64 {
    median(&runs.iter().map(figure).collect::<Vec<_>>()).unwrap_or(0.0)
}

fn median_u64(runs: &[RunMeasure], figure: impl Fn(&RunMeasure) -> u64) -> u64 {
    median_of(runs, |run| figure(run) as f64).round() as u64
}

/// Combines the runs of one server: medians of the performance figures, the worst of the error counts.
pub(crate) fn aggregate(name: &str, runs: &[RunMeasure]) -> ServerResult {
    let per_frame: Vec<f64> =
        runs.iter().filter_map(|r| cpu_us_per_frame(r.cpu_seconds, r.client.frames_received)).collect();
    let p99s: Vec<f64> = runs.iter().map(|r| r.client.latency_us.p99 as f64).collect();
    let mut error_codes = BTreeMap::new();
    for run in runs {
        for (code, n) in &run.client.errors {
            *error_codes.entry(code.clone()).or_default() += n;
        }
    }
    let worst = |figure: fn(&RunMeasure) -> u64| runs.iter().map(figure).max().unwrap_or(0);
    let rss = runs
        .iter()
        .filter_map(|r| r.rss.as_ref())
        .max_by(|a, b| a.growth.unwrap_or(0.0).total_cmp(&b.growth.unwrap_or(0.0)))
        .cloned();
    let chaos =
        runs.iter().filter_map(|r| r.client.chaos.as_ref()).fold(None, |sum: Option<ChaosSummary>, run| {
            let mut sum = sum.unwrap_or_default();
            sum.add(run);
            Some(sum)
        });
    ServerResult {
        name: name.to_string(),
        runs: runs.len(),
        cpu_seconds: median_of(runs, |r| r.cpu_seconds),
        peak_rss_bytes: median_u64(runs, |r| r.peak_rss_bytes),
        frames_delivered: median_u64(runs, |r| r.client.frames_received),
        frames_per_second: median_of(runs, |r| r.client.frames_per_second),
        cpu_us_per_frame: median(&per_frame),
        latency_us: LatencyFigures {
            p50: median_u64(runs, |r| r.client.latency_us.p50),
            p99: median_u64(runs, |r| r.client.latency_us.p99),
            p999: median_u64(runs, |r| r.client.latency_us.p999),
            max: median_u64(runs, |r| r.client.latency_us.max),
            samples: median_u64(runs, |r| r.client.latency_us.samples),
        },
        errors: worst(|r| r.client.error_total),
        error_codes,
        disconnects: worst(|r| r.client.disconnects),
        connect_failures: worst(|r| r.client.connect_failures),
        send_stalls: worst(|r| r.client.send_stalls),
        moves_reordered: worst(|r| r.client.moves_reordered),
        moves_missing: worst(|r| r.client.moves_missing),
        rss,
        chaos,
        welcomed: runs.iter().map(|r| r.client.welcomed).min().unwrap_or(0),
        client_cpu_seconds: median_of(runs, |r| r.client_cpu_seconds),
        latency_cdf: median_index(&p99s).map(|i| runs[i].client.latency_us.cdf.clone()).unwrap_or_default(),
    }
}

/// Whether a capacity step held: every bot playing, no ERROR, no disconnect, no stalled send, and p99
/// within the limit.
pub(crate) fn step_held(client: &ClientReport, bots: usize, p99_limit_us: u64) -> bool {
    client.welcomed >= bots
        && client.error_total == 0
        && client.disconnects == 0
        && client.connect_failures == 0
        && client.send_stalls == 0
        && client.latency_us.samples > 0
        && client.latency_us.p99 <= p99_limit_us
}

/// One step of a capacity search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct CapacityStep {
    pub(crate) bots: usize,
    pub(crate) held: bool,
    pub(crate) p99_us: Option<u64>,
    pub(crate) frames_per_second: Option<f64>,
    pub(crate) errors: Option<u64>,
    pub(crate) disconnects: Option<u64>,
    pub(crate) welcomed: Option<usize>,
    /// Why the step could not be measured at all.
    pub(crate) failure: Option<String>,
}

/// A server that could not be measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Failure {
    pub(crate) name: String,
    pub(crate) error: String,
}

/// The pinning in force.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Pinning {
    pub(crate) server_cpu: Option<usize>,
    pub(crate) bots_cpu: Option<usize>,
}

/// Everything `results.json` holds.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) scenario: String,
    pub(crate) bots: usize,
    pub(crate) duration: f64,
    pub(crate) warmup: f64,
    pub(crate) runs: usize,
    /// With --chaos: the fraction of the bots that misbehaved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) chaos_fraction: Option<f64>,
    pub(crate) machine: Machine,
    pub(crate) date: String,
    pub(crate) command: Vec<String>,
    pub(crate) pinning: Pinning,
    /// Server flags of the scenario (besides --addr).
    pub(crate) server_flags: Vec<String>,
    pub(crate) servers: Vec<ServerResult>,
    pub(crate) failures: Vec<Failure>,
    /// With --find-capacity: per server, the most bots held (null: not even the first step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) capacity: Option<BTreeMap<String, Option<usize>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) capacity_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) capacity_steps: Option<BTreeMap<String, Vec<CapacityStep>>>,
}

/// A figure as the table prints it.
fn format_number(value: f64) -> String {
    if !value.is_finite() {
        "n/a".to_string()
    } else if value == 0.0 {
        "0".to_string()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else if value.abs() >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

type Figure = (&'static str, fn(&ServerResult) -> Option<f64>);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

const FIGURES: [Figure; 15] = [
    ("server CPU (s)", |s| Some(s.cpu_seconds)),
    ("CPU per million frames (s) = µs/frame", |s| s.cpu_us_per_frame),
    ("peak RSS (MiB)", |s| Some(mib(s.peak_rss_bytes))),
    ("RSS median, start of window (MiB)", |s| s.rss.as_ref().map(|r| mib(r.first_window_median_bytes))),
    ("RSS median, end of window (MiB)", |s| s.rss.as_ref().map(|r| mib(r.last_window_median_bytes))),
    ("frames delivered", |s| Some(s.frames_delivered as f64)),
    ("frames/s", |s| Some(s.frames_per_second)),
    ("latency p50 (ms)", |s| (s.latency_us.samples > 0).then(|| s.latency_us.p50 as f64 / 1e3)),
    ("latency p99 (ms)", |s| (s.latency_us.samples > 0).then(|| s.latency_us.p99 as f64 / 1e3)),
    ("latency p99.9 (ms)", |s| (s.latency_us.samples > 0).then(|| s.latency_us.p999 as f64 / 1e3)),
    ("ERRORs", |s| Some(s.errors as f64)),
    ("disconnects", |s| Some(s.disconnects as f64)),
    ("MOVEs out of order", |s| Some(s.moves_reordered as f64)),
    ("MOVEs lost", |s| Some(s.moves_missing as f64)),
    ("load client CPU (s)", |s| Some(s.client_cpu_seconds)),
];

/// The Markdown table: one row per figure, one column per server, then one ratio column
/// gamewire/baseline per baseline (when gamewire was measured).
pub(crate) fn markdown_table(results: &Results) -> String {
    let servers = &results.servers;
    // Ratios put the first server listed over each of the others (`--servers gamewire,tokio`:
    // gamewire/tokio; `--servers gamewire-uring,gamewire-mio`: uring/mio).
    let subject = servers.first();
    let baselines: Vec<&ServerResult> = servers.iter().skip(1).collect();
    let mut out = String::new();
    out.push_str("| figure |");
    for server in servers {
        out.push_str(&format!(" {} |", server.name));
    }
    if let Some(subject) = subject {
        for baseline in &baselines {
            out.push_str(&format!(" {}/{} |", subject.name, baseline.name));
        }
    }
    out.push_str("\n|---|");
    for _ in 0..servers.len() + baselines.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    let cell = |value: Option<f64>| value.map_or_else(|| "n/a".to_string(), format_number);
    for (label, figure) in FIGURES {
        out.push_str(&format!("| {label} |"));
        for server in servers {
            out.push_str(&format!(" {} |", cell(figure(server))));
        }
        if let Some(subject) = subject {
            for baseline in &baselines {
                let r = figure(subject).zip(figure(baseline)).and_then(|(g, b)| ratio(g, b));
                out.push_str(&format!(" {} |", format_ratio(r)));
            }
        }
        out.push('\n');
    }
    if let (Some(capacity), Some(limit)) = (&results.capacity, results.capacity_p99_ms) {
        let held = |name: &str| capacity.get(name).copied().flatten().map(|n| n as f64);
        out.push_str(&format!("| capacity at p99 ≤ {limit} ms (bots) |"));
        for server in servers {
            out.push_str(&format!(" {} |", cell(held(&server.name))));
        }
        if let Some(subject) = subject {
            for baseline in &baselines {
                let r = held(&subject.name).zip(held(&baseline.name)).and_then(|(g, b)| ratio(g, b));
                out.push_str(&format!(" {} |", format_ratio(r)));
            }
        }
        out.push('\n');
    }
    out
}

/// How the figures were taken, in one paragraph.
pub(crate) fn method_line(results: &Results) -> String {
    let pinning = match (&results.pinning.server_cpu, &results.pinning.bots_cpu) {
        (Some(s), Some(b)) => format!("server pinned to CPU {s} and load client to CPU {b} (taskset)"),
        _ => "unpinned (taskset unavailable or refused)".to_string(),
    };
    let latency = if results.scenario == "echo" {
        "latency = round trip of a 64-byte message, closed loop per connection"
    } else {
        "latency = MOVE delivery latency from the client_time the sending bot stamps (open loop)"
    };
    let chaos = results.chaos_fraction.map_or_else(String::new, |fraction| {
        format!(
            " With --chaos: {:.0} % of the clients misbehave at random and reconnect; ERRORs, disconnects, \
             latency and MOVE counts are the other clients'.",
            fraction * 100.0
        )
    });
    format!(
        "Method: scenario `{}`, {} clients, {} s warm-up then {} s measured, each server its own process, one after \
         another, {pinning}; server CPU = utime+stime from /proc/PID/stat over the measured window; peak RSS = \
         VmHWM; RSS start/end = medians of VmRSS, sampled every second, over the first and the last minute of \
         the window (a third of it if shorter); frames = frames the clients received in the window; {latency}; \
         MOVEs out of order / lost = from the gaps in each sender's client_time; {} run(s) per server, medians \
         (ERRORs/disconnects/MOVE counts: worst run).{chaos} Machine: {} × {}, Linux {}, {}.",
        results.scenario,
        results.bots,
        results.warmup,
        results.duration,
        results.runs,
        results.machine.cores,
        results.machine.cpu_model,
        results.machine.kernel,
        results.date,
    )
}

/// `results.md`: title, table, method, failures.
pub(crate) fn markdown(results: &Results) -> String {
    let mut out = format!(
        "# gamewire bench: `{}`, {} clients, {} s\n\n",
        results.scenario, results.bots, results.duration
    );
    out.push_str(&markdown_table(results));
    out.push('\n');
    out.push_str(&method_line(results));
    out.push_str("\n\nCommand: `");
    out.push_str(&results.command.join(" "));
    out.push_str("`\n");
    if !results.failures.is_empty() {
        out.push_str("\nNot measured:\n");
        for failure in &results.failures {
            out.push_str(&format!("- {}: {}\n", failure.name, failure.error));
        }
    }
    for server in &results.servers {
        if let Some(chaos) = &server.chaos {
            out.push_str(&chaos_paragraph(&server.name, chaos));
        }
    }
    if let Some(steps) = &results.capacity_steps {
        out.push_str("\nCapacity search (bots: p99 ms, held?):\n");
        for (name, steps) in steps {
            let line: Vec<String> = steps
                .iter()
                .map(|s| {
                    let p99 = s.p99_us.map_or_else(|| "-".to_string(), |p| format_number(p as f64 / 1e3));
                    format!("{}: {} {}", s.bots, p99, if s.held { "ok" } else { "broke" })
                })
                .collect();
            let bound = if steps.iter().all(|s| s.held) { " (held every step: a lower bound)" } else { "" };
            out.push_str(&format!("- {name}: {}{bound}\n", line.join(", ")));
        }
    }
    out.push_str("\nPlots: `latency_cdf.svg`, `cpu_per_million_frames.svg`, `rss.svg`.\n");
    out
}

/// What the chaos clients of one server did and what it answered, as a Markdown paragraph.
pub(crate) fn chaos_paragraph(name: &str, chaos: &ChaosSummary) -> String {
    let listed = |map: &BTreeMap<String, u64>| -> String {
        map.iter().map(|(key, n)| format!("{key} {n}")).collect::<Vec<_>>().join(", ")
    };
    let answers: Vec<String> =
        chaos.answers.iter().map(|(misdeed, answers)| format!("{misdeed} → {}", listed(answers))).collect();
    format!(
        "\nChaos on {name}: {} misbehaving clients, {} misdeeds ({}). Answers: {}; {} not as protocol v1 \
         prescribes. ERRORs by code: {}. Connections closed by the server after its fatal ERROR: {}, left open \
         5 s after it: {}, frames sent after it: {}; closed for no reason: {}; reconnects: {}; failed \
         connects: {}.\n",
        chaos.bots,
        chaos.action_total,
        listed(&chaos.actions),
        answers.join("; "),
        chaos.unexpected_answers,
        listed(&chaos.errors),
        chaos.closed_after_error,
        chaos.not_closed_after_error,
        chaos.frames_after_fatal,
        chaos.unexplained_closes,
        chaos.reconnects,
        chaos.connect_failures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cpu: f64, frames: u64, p99: u64, errors: u64) -> RunMeasure {
        RunMeasure {
            cpu_seconds: cpu,
            peak_rss_bytes: 10 << 20,
            client_cpu_seconds: 1.0,
            client: ClientReport {
                bots: 10,
                welcomed: 10,
                frames_received: frames,
                frames_per_second: frames as f64 / 10.0,
                error_total: errors,
                latency_us: LatencySummary {
                    samples: 5,
                    p50: p99 / 2,
                    p99,
                    p999: p99 * 2,
                    cdf: vec![(p99, 0.99)],
                    ..Default::default()
                },
                ..Default::default()
            },
            rss: RssTrend::from_samples((0..=12).map(|t| (t as f64, 8 << 20)).collect(), 2.0, 10.0),
        }
    }

    #[test]
    fn runs_combine_into_medians_and_worst_errors() {
        let runs = [run(1.0, 1000, 300, 0), run(3.0, 3000, 100, 2), run(2.0, 2000, 200, 0)];
        let result = aggregate("gamewire", &runs);
        assert_eq!(result.runs, 3);
        assert_eq!(result.cpu_seconds, 2.0);
        assert_eq!(result.frames_delivered, 2000);
        assert_eq!(result.cpu_us_per_frame, Some(1000.0));
        assert_eq!(result.latency_us.p99, 200);
        assert_eq!(result.errors, 2);
        assert_eq!(result.latency_cdf, vec![(200, 0.99)]);
        assert_eq!(aggregate("x", &[run(1.0, 0, 0, 0)]).cpu_us_per_frame, None);
    }

    #[test]
    fn client_reports_parse_from_bots_json() {
        let json = r#"{"bots": 3, "connected": 3, "welcomed": 3, "duration_seconds": 2.0,
            "sent": {"MOVE": 10}, "received": {"MOVE": 20}, "frames_received": 20, "frames_per_second": 10.0,
            "errors": {"RATE_LIMITED": 1}, "error_total": 1, "disconnects": 0, "connect_failures": 0,
            "send_stalls": 0, "latency_us": {"samples": 20, "p50": 100, "p99": 900, "p999": 950, "max": 990,
            "mean": 150.5, "cdf": [[80, 0.0], [990, 1.0]]}}"#;
        let report: ClientReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.frames_received, 20);
        assert_eq!(report.errors.get("RATE_LIMITED"), Some(&1));
        assert_eq!(report.latency_us.cdf, vec![(80, 0.0), (990, 1.0)]);
        assert!(step_held(&ClientReport { error_total: 0, ..report.clone() }, 3, 1000));
        assert!(!step_held(&report, 3, 1000), "an ERROR breaks the step");
        assert!(!step_held(&ClientReport { error_total: 0, ..report.clone() }, 3, 800), "p99 over the limit");
        assert!(
            !step_held(&ClientReport { error_total: 0, ..report.clone() }, 4, 1000),
            "a bot never played"
        );
    }

    #[test]
    fn chaos_runs_report_both_kinds_of_client() {
        let json = r#"{"bots": 10, "welcomed": 10, "frames_received": 50, "moves_reordered": 0,
            "moves_missing": 2, "chaos": {"bots": 1, "actions": {"burst": 2, "reset": 1}, "action_total": 3,
            "answers": {"burst": {"RATE_LIMITED": 2}}, "errors": {"RATE_LIMITED": 2}, "error_total": 2,
            "reconnects": 1}}"#;
        let report: ClientReport = serde_json::from_str(json).unwrap();
        assert_eq!(report.moves_missing, 2);
        let chaos = report.chaos.clone().expect("the chaos section");
        assert_eq!((chaos.bots, chaos.action_total, chaos.reconnects), (1, 3, 1));
        let mut first = run(1.0, 1000, 100, 0);
        first.client = report.clone();
        let mut second = first.clone();
        second.client.moves_missing = 0;
        // A run whose RSS grew by an eighth: the worst, so the one reported.
        second.rss =
            RssTrend::from_samples((0..=12).map(|t| (t as f64, (8 + t / 6) << 20)).collect(), 0.0, 12.0);
        let result = aggregate("gamewire", &[first, second]);
        assert_eq!(result.moves_missing, 2);
        let summed = result.chaos.as_ref().unwrap();
        assert_eq!((summed.action_total, summed.answers["burst"]["RATE_LIMITED"]), (6, 4));
        let rss = result.rss.as_ref().unwrap();
        assert_eq!((rss.first_window_median_bytes, rss.last_window_median_bytes), (8 << 20, 9 << 20));
        assert_eq!(rss.growth, Some(1.125));
        let paragraph = chaos_paragraph("gamewire", summed);
        assert!(paragraph.contains("6 misdeeds (burst 4, reset 2)"), "{paragraph}");
        assert!(paragraph.contains("burst → RATE_LIMITED 4; 0 not as protocol v1"), "{paragraph}");
    }

    #[test]
    fn the_table_has_ratios_and_na() {
        let mut gamewire = aggregate("gamewire", &[run(1.0, 1000, 100, 0)]);
        gamewire.peak_rss_bytes = 5 << 20;
        let tokio = aggregate("tokio", &[run(4.0, 1000, 400, 0)]);
        let results = Results {
            scenario: "mmo".into(),
            bots: 10,
            duration: 10.0,
            warmup: 1.0,
            runs: 1,
            chaos_fraction: None,
            machine: Machine { cores: 2, kernel: "6.1".into(), cpu_model: "test".into() },
            date: "2024-01-01T00:00:00Z".into(),
            command: vec!["gamewire".into(), "bench".into()],
            pinning: Pinning { server_cpu: Some(0), bots_cpu: Some(1) },
            server_flags: vec![],
            servers: vec![gamewire, tokio],
            failures: vec![],
            capacity: Some([("gamewire".to_string(), Some(3000)), ("tokio".to_string(), None)].into()),
            capacity_p99_ms: Some(50.0),
            capacity_steps: None,
        };
        let table = markdown_table(&results);
        assert!(table.starts_with("| figure | gamewire | tokio | gamewire/tokio |\n|---|---:|---:|---:|\n"));
        assert!(table.contains("| server CPU (s) | 1.00 | 4.00 | 0.25× |"), "{table}");
        assert!(table.contains("| peak RSS (MiB) | 5.00 | 10.0 | 0.50× |"), "{table}");
        assert!(table.contains("| ERRORs | 0 | 0 | n/a |"), "{table}");
        assert!(table.contains("| capacity at p99 ≤ 50 ms (bots) | 3000 | n/a | n/a |"), "{table}");
        assert!(table.contains("| RSS median, end of window (MiB) | 8.00 | 8.00 | 1.00× |"), "{table}");
        assert!(table.contains("| MOVEs lost | 0 | 0 | n/a |"), "{table}");
        let md = markdown(&results);
        assert!(md.contains("Method:") && md.contains("pinned to CPU 0"));
    }
}
