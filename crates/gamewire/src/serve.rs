//! `gamewire serve`: flags, the settings in force, signals, and the server's run.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gamewire_net::{Server, ServerConfig};
use gamewire_world::{Rate, RateLimits};

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

fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    Duration::try_from_secs_f64(value).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7777")]
    addr: SocketAddr,
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
    max_payload: u32,
    /// Size of the buffer pool in MiB (one mapped region, pre-faulted at start).
    #[arg(long, default_value_t = 64)]
    pool_mib: usize,
    /// Size of a pool chunk in bytes (multiple of 64, at least 1024); one read fills at most one.
    #[arg(long, default_value_t = 4096)]
    chunk_size: usize,
    /// Connections served at once; more are answered SERVER_FULL.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
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
    /// Send queue bytes per client above which the write deadline runs.
    #[arg(long, default_value_t = 256 << 10)]
    send_soft_limit: usize,
    /// Send queue bytes per client above which it is disconnected at once (SLOW_CONSUMER).
    #[arg(long, default_value_t = 1 << 20)]
    send_hard_limit: usize,
    /// Seconds a client may stay above the soft limit.
    #[arg(long, default_value = "5", value_parser = seconds, value_name = "SECONDS")]
    write_deadline: Duration,
    /// Seconds to keep flushing to clients after SIGINT/SIGTERM before exiting anyway.
    #[arg(long, default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    drain_timeout: Duration,
    /// Seed for spawn points and session tokens (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Echo raw bytes back instead of playing (no framing): for comparing the I/O core with other
    /// runtimes under a standard echo client.
    #[arg(long)]
    echo: bool,
}

impl ServeArgs {
    fn into_config(self) -> ServerConfig {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let defaults = ServerConfig::default();
        ServerConfig {
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
                max_players: self.max_connections.min(gamewire_world::PlayerId::MAX_PLAYERS),
                seed,
            },
            max_payload: self.max_payload,
            pool_bytes: self.pool_mib << 20,
            chunk_size: self.chunk_size,
            max_connections: self.max_connections,
            send_soft_limit: self.send_soft_limit,
            send_hard_limit: self.send_hard_limit,
            write_deadline: self.write_deadline,
            partial_frame_timeout: self.partial_frame_timeout,
            drain_timeout: self.drain_timeout,
            close_linger: defaults.close_linger,
            echo: self.echo,
        }
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config();
    let world = &config.world;
    let limits = &world.limits;
    let server = Server::bind(config.clone()).context("cannot start the server")?;
    if config.echo {
        tracing::info!(addr = %server.local_addr(), "gamewire listening (raw echo, backend mio)");
    } else {
        tracing::info!(addr = %server.local_addr(), "gamewire listening (protocol v1, backend mio)");
    }
    tracing::info!(
        world = format_args!("{}x{}", world.world_w, world.world_h),
        aoi_radius = world.aoi_radius,
        max_speed = world.max_speed,
        attack_range = world.attack_range,
        damage = world.damage,
        max_hp = world.max_hp,
        spawn = ?world.spawn,
        "world"
    );
    tracing::info!(
        max_payload = config.max_payload,
        pool_mib = config.pool_bytes >> 20,
        chunk_size = config.chunk_size,
        max_connections = config.max_connections,
        send_soft_limit = config.send_soft_limit,
        send_hard_limit = config.send_hard_limit,
        "limits"
    );
    tracing::info!(
        moves = format_args!("{}/s burst {}", limits.moves.per_second, limits.moves.burst),
        chats = format_args!("{}/s burst {}", limits.chats.per_second, limits.chats.burst),
        attacks = format_args!("{}/s burst {}", limits.attacks.per_second, limits.attacks.burst),
        pings = format_args!("{}/s burst {}", limits.pings.per_second, limits.pings.burst),
        hello_timeout = ?world.hello_timeout,
        idle_timeout = ?world.idle_timeout,
        partial_frame_timeout = ?config.partial_frame_timeout,
        write_deadline = ?config.write_deadline,
        "rate limits and deadlines"
    );

    let stop = server.shutdown_handle();
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
            .context("cannot install signal handlers")?;
    // A thread that only waits for signals: the event loop itself never blocks on anything but epoll.
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            tracing::info!(signal, "signal received");
            stop.shutdown();
        }
    })?;

    let stats = server.run().context("server failed")?;
    tracing::info!(
        accepted = stats.accepted,
        frames_in = stats.frames_in,
        frames_out = stats.frames_out,
        heap_fallbacks = stats.heap_fallbacks,
        read_pauses = stats.read_pauses,
        "stopped"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_limits_parse() {
        assert_eq!("500,250.5".parse::<Pair>(), Ok(Pair(500.0, 250.5)));
        assert!("500".parse::<Pair>().is_err());
        assert_eq!("60/30".parse::<Limit>(), Ok(Limit(Rate::new(60.0, 30.0))));
        assert!("60".parse::<Limit>().is_err());
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
    }
}
