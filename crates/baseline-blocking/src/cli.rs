//! Command-line flags: the subset of `gamewire serve` that applies to a blocking server, same names.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use gamewire_cli::{WorldArgs, seconds};
use gamewire_proto::MAX_PAYLOAD_LIMIT;
use gamewire_world::Config;

/// Naive blocking baseline for gamewire's benchmark: a thread per connection, one world behind one
/// mutex, a fresh copy of every broadcast frame per recipient. Speaks protocol v1.
#[derive(Debug, Parser)]
#[command(name = "gamewire-baseline-blocking", version, about)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7779")]
    pub(crate) addr: SocketAddr,
    /// Raw byte echo instead of the game protocol (measures the I/O architecture alone).
    #[arg(long)]
    pub(crate) echo: bool,
    #[command(flatten)]
    world: WorldArgs,
    /// Largest client payload in bytes (256..=65536); bigger is TOO_LARGE.
    #[arg(long, default_value_t = gamewire_proto::DEFAULT_MAX_PAYLOAD)]
    pub(crate) max_payload: u32,
    /// Connections served at once; more are answered SERVER_FULL.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Seconds the rest of a started frame may take to arrive.
    #[arg(long, default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    pub(crate) partial_frame_timeout: Duration,
    /// Seconds one blocking write may stall before its client is disconnected (the socket's send
    /// timeout).
    #[arg(long, default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    pub(crate) write_deadline: Duration,
    /// Seconds to let connections say goodbye after SIGINT/SIGTERM before exiting anyway.
    #[arg(long, default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    pub(crate) drain_timeout: Duration,
}

impl Args {
    /// The world's rules, built exactly as `gamewire serve` builds them.
    pub(crate) fn world_config(&self) -> Config {
        self.world.to_config(self.max_connections)
    }

    /// Refuses the limits the server itself enforces (the world validates its own).
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        // Same bounds as gamewire's ServerConfig, so both servers accept the same command lines.
        anyhow::ensure!(
            (256..=MAX_PAYLOAD_LIMIT).contains(&self.max_payload),
            "max_payload must be in 256..={MAX_PAYLOAD_LIMIT}, got {}",
            self.max_payload
        );
        anyhow::ensure!(self.max_connections > 0, "max_connections must be positive");
        anyhow::ensure!(!self.write_deadline.is_zero(), "write_deadline must be positive");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use gamewire_world::Rate;

    use super::*;

    #[test]
    fn flags_build_the_world_config() {
        let args = Args::parse_from([
            "x",
            "--world",
            "200,100",
            "--spawn",
            "5,6",
            "--move-limit",
            "30/15",
            "--hello-timeout",
            "0.5",
            "--max-connections",
            "7",
            "--seed",
            "9",
        ]);
        assert_eq!(args.addr.to_string(), "127.0.0.1:7779");
        let config = args.world_config();
        assert_eq!((config.world_w, config.world_h), (200.0, 100.0));
        assert_eq!(config.spawn, Some((5.0, 6.0)));
        assert_eq!(config.limits.moves, Rate::new(30.0, 15.0));
        assert_eq!(config.hello_timeout, Duration::from_millis(500));
        assert_eq!(config.max_players, 7);
        assert_eq!(config.seed, 9);
        assert!(config.validate().is_ok());
        assert!(args.validate().is_ok());
        assert!(Args::parse_from(["x", "--max-payload", "100"]).validate().is_err());
    }
}
