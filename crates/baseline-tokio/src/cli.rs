//! Command-line flags, named as `gamewire serve` names them, and the settings they resolve to.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use gamewire_cli::WorldArgs;

/// Smallest `--max-payload`: every valid client packet (a 256-byte CHAT at most) fits. Same bound as
/// `gamewire serve`, so both servers refuse the same configurations.
const MIN_MAX_PAYLOAD: u32 = 256;

/// Longest timeout accepted: deadlines are computed as `Instant + timeout`, which panics on overflow, so
/// absurd values are refused here rather than crash the server later. Applies to this server's own
/// timeouts; `--hello-timeout` and `--idle-timeout` are bounded the same way by `World::new`.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// [`gamewire_cli::seconds`], at most [`MAX_SECONDS`].
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if value > MAX_SECONDS {
        return Err(format!("{text:?}: at most {MAX_SECONDS} seconds (one year)"));
    }
    gamewire_cli::seconds(text)
}

fn max_payload(text: &str) -> Result<u32, String> {
    let value: u32 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let range = MIN_MAX_PAYLOAD..=gamewire_proto::MAX_PAYLOAD_LIMIT;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be in {}..={}", range.start(), range.end()))
    }
}

/// Baseline game server for gamewire's benchmark: protocol v1 served the way tokio's documentation
/// teaches (a task per connection, codecs, channels, one task owning the world).
#[derive(Debug, Parser)]
#[command(name = "gamewire-baseline-tokio", version, about)]
pub(crate) struct Args {
    /// Address to listen on (port 0 picks a free port; the `listening on` log line names it).
    #[arg(long, default_value = "127.0.0.1:7778")]
    pub(crate) addr: SocketAddr,
    /// Runtime worker threads (default: tokio's default, one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
    /// Serve a raw byte echo instead of the game: every connection gets back what it sends.
    #[arg(long)]
    pub(crate) echo: bool,
    #[command(flatten)]
    world: WorldArgs,
    /// Largest client payload in bytes (256..=65536); bigger is TOO_LARGE.
    #[arg(long, default_value_t = gamewire_proto::DEFAULT_MAX_PAYLOAD, value_parser = max_payload)]
    pub(crate) max_payload: u32,
    /// Connections served at once; more are answered SERVER_FULL.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds the rest of a started frame may take to arrive.
    #[arg(long, default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    partial_frame_timeout: Duration,
    /// Frames queued per client (its bounded channel); a client whose channel is full is disconnected
    /// (SLOW_CONSUMER). 32768 frames of MOVE size are gamewire's 1 MiB hard limit.
    #[arg(long, default_value_t = 32_768, value_name = "FRAMES", value_parser = clap::value_parser!(u32).range(1..))]
    send_queue: u32,
    /// Seconds one batch of writes to a client may take before it is disconnected.
    #[arg(long, default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    write_deadline: Duration,
    /// Seconds to keep flushing to clients after SIGINT/SIGTERM before exiting anyway.
    #[arg(long, default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    drain_timeout: Duration,
}

/// What every connection task needs to know, copied into each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionSettings {
    /// Largest `data_length` accepted.
    pub(crate) max_payload: u32,
    /// Capacity, in frames, of each connection's outgoing channel.
    pub(crate) send_queue: usize,
    /// How long one batch of writes may take.
    pub(crate) write_deadline: Duration,
    /// How long an unfinished frame may wait for its remaining bytes.
    pub(crate) partial_frame_timeout: Duration,
}

/// The server's settings, resolved from [`Args`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) addr: SocketAddr,
    pub(crate) world: gamewire_world::Config,
    pub(crate) connection: ConnectionSettings,
    pub(crate) max_connections: usize,
    pub(crate) drain_timeout: Duration,
}

impl Args {
    /// The settings these flags ask for (validated later, by `World::new`).
    pub(crate) fn settings(&self) -> Settings {
        let max_connections = self.max_connections as usize;
        Settings {
            addr: self.addr,
            world: self.world.to_config(max_connections),
            connection: ConnectionSettings {
                max_payload: self.max_payload,
                send_queue: self.send_queue as usize,
                write_deadline: self.write_deadline,
                partial_frame_timeout: self.partial_frame_timeout,
            },
            max_connections,
            drain_timeout: self.drain_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use gamewire_world::Rate;

    use super::*;

    #[test]
    fn seconds_and_max_payload_parse() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
        assert!(seconds("1e30").is_err(), "would overflow an Instant");
        assert_eq!(max_payload("1024"), Ok(1024));
        assert!(max_payload("100").is_err());
        assert!(max_payload("70000").is_err());
    }

    #[test]
    fn defaults_match_protocol_v1() {
        let args = Args::parse_from(["gamewire-baseline-tokio", "--seed", "7"]);
        let settings = args.settings();
        let defaults = gamewire_world::Config::default();
        assert_eq!(settings.addr, "127.0.0.1:7778".parse().unwrap());
        assert_eq!(settings.world, gamewire_world::Config { max_players: 10_000, seed: 7, ..defaults });
        assert_eq!(settings.connection.max_payload, 1024);
        assert_eq!(settings.max_connections, 10_000);
    }

    #[test]
    fn flags_reach_the_world() {
        let args = Args::parse_from([
            "gamewire-baseline-tokio",
            "--world",
            "200,100",
            "--spawn",
            "5,6",
            "--move-limit",
            "30/15",
            "--idle-timeout",
            "2.5",
        ]);
        let world = args.settings().world;
        assert_eq!((world.world_w, world.world_h), (200.0, 100.0));
        assert_eq!(world.spawn, Some((5.0, 6.0)));
        assert_eq!(world.limits.moves, Rate::new(30.0, 15.0));
        assert_eq!(world.idle_timeout, Duration::from_millis(2500));
    }
}
