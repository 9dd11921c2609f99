//! Command-line flags for the world and its rules, and logging setup, shared by `gamewire serve` and the baseline servers.
#![warn(missing_docs)]

use std::str::FromStr;
use std::time::Duration;

use gamewire_world::{Config, PlayerId, Rate, RateLimits};

/// Two numbers separated by a comma, as in `--world 1000,1000`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair(pub f32, pub f32);

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
pub struct Limit(pub Rate);

impl FromStr for Limit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (rate, burst) =
            text.split_once('/').ok_or_else(|| format!("expected RATE/BURST, got {text:?}"))?;
        let parse = |part: &str| part.trim().parse::<f32>().map_err(|e| format!("{part:?}: {e}"));
        Ok(Limit(Rate::new(parse(rate)?, parse(burst)?)))
    }
}

/// Seconds as a decimal number, as in `--hello-timeout 0.5`: a clap `value_parser` for durations.
pub fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    Duration::try_from_secs_f64(value).map_err(|e| format!("{text:?}: {e}"))
}

/// The world and rules flags every gamewire server takes, same names and defaults everywhere; include
/// them with `#[command(flatten)]`.
#[derive(Clone, Debug, clap::Args)]
pub struct WorldArgs {
    /// World size W,H (x extent, z extent).
    #[arg(long, default_value = "1000,1000", value_name = "W,H")]
    pub world: Pair,
    /// Area-of-interest radius: players see each other within this distance.
    #[arg(long, default_value_t = 50.0)]
    pub aoi_radius: f32,
    /// Largest legal speed, units per second.
    #[arg(long, default_value_t = 20.0)]
    pub max_speed: f32,
    /// Fixed spawn point X,Z (default: uniformly random in the world).
    #[arg(long, value_name = "X,Z")]
    pub spawn: Option<Pair>,
    /// Attack range.
    #[arg(long, default_value_t = 10.0)]
    pub attack_range: f32,
    /// Damage per hit.
    #[arg(long, default_value_t = 10)]
    pub damage: u32,
    /// Hit points at spawn.
    #[arg(long, default_value_t = 100)]
    pub max_hp: u32,
    /// MOVE rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "60/60", value_name = "RATE/BURST")]
    pub move_limit: Limit,
    /// CHAT rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "5/10", value_name = "RATE/BURST")]
    pub chat_limit: Limit,
    /// ATTACK rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "4/4", value_name = "RATE/BURST")]
    pub attack_limit: Limit,
    /// PING rate limit, PER_SECOND/BURST.
    #[arg(long, default_value = "10/10", value_name = "RATE/BURST")]
    pub ping_limit: Limit,
    /// Seconds a new connection has to send HELLO.
    #[arg(long, default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    pub hello_timeout: Duration,
    /// Seconds without a packet before a player is disconnected.
    #[arg(long, default_value = "30", value_parser = seconds, value_name = "SECONDS")]
    pub idle_timeout: Duration,
    /// Seed for spawn points and session tokens (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl WorldArgs {
    /// The world's rules these flags ask for, for a server that takes at most `max_connections`
    /// connections (so at most that many players, capped at [`PlayerId::MAX_PLAYERS`]). Without
    /// `--seed`, the seed comes from the clock. Not validated: `World::new` does that.
    pub fn to_config(&self, max_connections: usize) -> Config {
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
            max_players: max_connections.min(PlayerId::MAX_PLAYERS),
            seed,
        }
    }
}

/// The command-line flag that sets the configuration field `field` (as the configuration errors of
/// `gamewire_world` and `gamewire_net` name their parameters), for error messages in the user's own
/// words: `max_connections` is `--max-connections`, `world_w` is `--world`, `limits.moves` is
/// `--move-limit`, and the world's `max_players`, which `--max-connections` sets, is
/// `--max-connections`.
///
/// # Examples
///
/// ```
/// assert_eq!(gamewire_cli::flag_name("aoi_radius"), "--aoi-radius");
/// assert_eq!(gamewire_cli::flag_name("limits.chats"), "--chat-limit");
/// ```
pub fn flag_name(field: &'static str) -> String {
    let flag = match field {
        "world_w" | "world_h" => "world",
        "limits.moves" => "move-limit",
        "limits.chats" => "chat-limit",
        "limits.attacks" => "attack-limit",
        "limits.pings" => "ping-limit",
        "max_players" => "max-connections",
        "pool_bytes" => "pool-mib",
        "prefault_pool" => "prefault",
        other => return format!("--{}", other.replace('_', "-")),
    };
    format!("--{flag}")
}

/// Logs to stderr through `tracing`, at `info` unless `RUST_LOG` says otherwise, with colours only on a
/// terminal: the same for every server under test, so their logs read alike.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        world: WorldArgs,
    }

    fn parse(args: &[&str]) -> WorldArgs {
        Flags::parse_from(std::iter::once("x").chain(args.iter().copied())).world
    }

    #[test]
    fn pairs_limits_and_seconds_parse() {
        assert_eq!("500,250.5".parse::<Pair>(), Ok(Pair(500.0, 250.5)));
        assert_eq!(" 1 , 2 ".parse::<Pair>(), Ok(Pair(1.0, 2.0)));
        assert!("500".parse::<Pair>().is_err());
        assert!("a,1".parse::<Pair>().is_err());
        assert_eq!("60/30".parse::<Limit>(), Ok(Limit(Rate::new(60.0, 30.0))));
        assert!("60".parse::<Limit>().is_err());
        assert!("60/x".parse::<Limit>().is_err());
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
        assert!(seconds("1e30").is_err(), "beyond Duration");
        assert!(seconds("soon").is_err());
    }

    #[test]
    fn defaults_are_the_world_defaults() {
        let config = parse(&["--seed", "7"]).to_config(10_000);
        assert_eq!(config, Config { max_players: 10_000, seed: 7, ..Config::default() });
        assert!(config.validate().is_ok());
    }

    #[test]
    fn flags_reach_the_config() {
        let config = parse(&[
            "--world",
            "200,100",
            "--aoi-radius",
            "25",
            "--max-speed",
            "12.5",
            "--spawn",
            "5,6",
            "--attack-range",
            "3",
            "--damage",
            "7",
            "--max-hp",
            "70",
            "--move-limit",
            "30/15",
            "--chat-limit",
            "1/2",
            "--attack-limit",
            "2/3",
            "--ping-limit",
            "4/5",
            "--hello-timeout",
            "0.5",
            "--idle-timeout",
            "2.5",
            "--seed",
            "9",
        ])
        .to_config(7);
        assert_eq!((config.world_w, config.world_h), (200.0, 100.0));
        assert_eq!((config.aoi_radius, config.max_speed), (25.0, 12.5));
        assert_eq!(config.spawn, Some((5.0, 6.0)));
        assert_eq!((config.attack_range, config.damage, config.max_hp), (3.0, 7, 70));
        assert_eq!(config.limits.moves, Rate::new(30.0, 15.0));
        assert_eq!(config.limits.chats, Rate::new(1.0, 2.0));
        assert_eq!(config.limits.attacks, Rate::new(2.0, 3.0));
        assert_eq!(config.limits.pings, Rate::new(4.0, 5.0));
        assert_eq!(config.hello_timeout, Duration::from_millis(500));
        assert_eq!(config.idle_timeout, Duration::from_millis(2500));
        assert_eq!((config.max_players, config.seed), (7, 9));
    }

    #[test]
    fn world_errors_name_the_flags() {
        let error = parse(&["--aoi-radius", "0"]).to_config(10).validate().unwrap_err();
        assert_eq!(error.describe(&flag_name), "--aoi-radius must be a positive finite number, got 0");
        let error = parse(&["--ping-limit", "0/5"]).to_config(10).validate().unwrap_err();
        assert!(error.describe(&flag_name).starts_with("--ping-limit must be"), "{error}");
        let error = parse(&["--idle-timeout", "0"]).to_config(10).validate().unwrap_err();
        assert_eq!(error.describe(&flag_name), "--idle-timeout must be above 0 seconds");
        assert_eq!(flag_name("world_h"), "--world");
        assert_eq!(flag_name("max_players"), "--max-connections");
    }

    #[test]
    fn players_capped_by_connections_and_ids() {
        let args = parse(&[]);
        assert_eq!(args.to_config(3).max_players, 3);
        assert_eq!(args.to_config(usize::MAX).max_players, PlayerId::MAX_PLAYERS);
    }
}
