//! Command-line flags: the subset of `gamewire serve` that applies to a blocking server, same names.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use gamewire_proto::MAX_PAYLOAD_LIMIT;
use gamewire_world::{Config, PlayerId, Rate, RateLimits};

/// Two numbers separated by a comma, as in `--world 1000,1000` (parsed exactly as `gamewire serve` does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pair(pub(crate) f32, pub(crate) f32);

impl FromStr for Pair {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (a, b) =
            text.split_once(',').ok_or_else(|| format!("expected two numbers as A,B, got {text:?}"))?;
        let parse = |part: &str| part.trim().parse::<f32>().map_err(|e| format!("{part:?}: {e}"));
        Ok(Pair(parse(a)?, parse(b)?))
    }
}

/// A token-bucket rate written `PER_SECOND/BURST`, as in `--move-limit 60/60`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Limit(pub(crate) Rate);

impl FromStr for Limit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (rate, burst) =
            text.split_once('/').ok_or_else(|| format!("expected RATE/BURST, got {text:?}"))?;
        let parse = |part: &str| part.trim().parse::<f32>().map_err(|e| format!("{part:?}: {e}"));
        Ok(Limit(Rate::new(parse(rate)?, parse(burst)?)))
    }
}

/// Seconds as a decimal number, as in `--hello-timeout 0.5`.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    Duration::try_from_secs_f64(value).map_err(|e| format!("{text:?}: {e}"))
}

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
    /// World size W,H (x extent, z extent).
    #[arg(long, default_value = "1000,1000", value_name = "W,H")]
    world: Pair,
    /// Area-of-interest radius: players see each other within this distance.
    #[arg(long, default_value_t = 50.0)]
    aoi_radius: f32,
    /// Largest legal speed, units per second.
    #[arg(long, default_value_t = 20.0)]
    max_speed: f32,
    /// Fixed spawn point X,Z (default: uniformly random in the world).
    #[arg(long, value_name = "X,Z")]
    spawn: Option<Pair>,
    /// Attack range.
    #[arg(long, default_value_t = 10.0)]
    attack_range: f32,
    /// Damage per hit.
    #[arg(long, default_value_t = 10)]
    damage: u32,
    /// Hit points at spawn.
    #[arg(long, default_value_t = 100)]
    max_hp: u32,
    /// Largest client payload in bytes (256..=65536); bigger is TOO_LARGE.
    #[arg(long, default_value_t = gamewire_proto::DEFAULT_MAX_PAYLOAD)]
    pub(crate) max_payload: u32,
    /// Connections served at once; more are answered SERVER_FULL.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// MOVE rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "60/60", value_name = "RATE/BURST")]
    move_limit: Limit,
    /// CHAT rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "5/10", value_name = "RATE/BURST")]
    chat_limit: Limit,
    /// ATTACK rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "4/4", value_name = "RATE/BURST")]
    attack_limit: Limit,
    /// PING rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "10/10", value_name = "RATE/BURST")]
    ping_limit: Limit,
    /// Seconds a new connection has to send HELLO.
    #[arg(long, default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    hello_timeout: Duration,
    /// Seconds without a packet before a player is disconnected.
    #[arg(long, default_value = "30", value_parser = seconds, value_name = "SECONDS")]
    idle_timeout: Duration,
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
    /// Seed for spawn points and session tokens (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

impl Args {
    /// The world's rules, built exactly as `gamewire serve` builds them.
    pub(crate) fn world_config(&self) -> Config {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Config {
            world_w: self.world.0,
            world_h: self.world.1,
            aoi_radius: self.aoi_radius,
            max_speed: self.max_speed,
            attack_range: self.attack_range,
            damage: self.damage,
            max_hp: self.max_hp,
            spawn: self.spawn.map(|Pair(x, z)| (x, z)),
            limits: RateLimits {
                moves: self.move_limit.0,
                chats: self.chat_limit.0,
                attacks: self.attack_limit.0,
                pings: self.ping_limit.0,
            },
            hello_timeout: self.hello_timeout,
            idle_timeout: self.idle_timeout,
            max_players: self.max_connections.min(PlayerId::MAX_PLAYERS),
            seed,
        }
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
    use super::*;

    #[test]
    fn pairs_limits_and_seconds_parse_like_gamewire_serve() {
        assert_eq!("500,250.5".parse::<Pair>(), Ok(Pair(500.0, 250.5)));
        assert!("500".parse::<Pair>().is_err());
        assert_eq!("60/30".parse::<Limit>(), Ok(Limit(Rate::new(60.0, 30.0))));
        assert!("60".parse::<Limit>().is_err());
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
    }

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
