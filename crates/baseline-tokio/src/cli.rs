//! Command-line flags, named as `gamewire serve` names them, and the settings they resolve to.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use gamewire_world::{PlayerId, Rate, RateLimits};

/// Smallest `--max-payload`: every valid client packet (a 256-byte CHAT at most) fits. Same bound as
/// `gamewire serve`, so both servers refuse the same configurations.
const MIN_MAX_PAYLOAD: u32 = 256;

/// Two numbers separated by a comma, as in `--world 1000,1000`.
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

/// Longest timeout accepted: deadlines are computed as `Instant + timeout`, which panics on overflow, so
/// absurd values are refused here rather than crash the server later.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if value > MAX_SECONDS {
        return Err(format!("{text:?}: at most {MAX_SECONDS} seconds (one year)"));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("{text:?}: {e}"))
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
    #[arg(long, default_value_t = gamewire_proto::DEFAULT_MAX_PAYLOAD, value_parser = max_payload)]
    pub(crate) max_payload: u32,
    /// Connections served at once; more are answered SERVER_FULL.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
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
    /// Seed for spawn points and session tokens (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
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
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let max_connections = self.max_connections as usize;
        Settings {
            addr: self.addr,
            world: gamewire_world::Config {
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
            },
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
    use super::*;

    #[test]
    fn pairs_limits_and_seconds_parse() {
        assert_eq!("500,250.5".parse::<Pair>(), Ok(Pair(500.0, 250.5)));
        assert!("500".parse::<Pair>().is_err());
        assert_eq!("60/30".parse::<Limit>(), Ok(Limit(Rate::new(60.0, 30.0))));
        assert!("60".parse::<Limit>().is_err());
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
