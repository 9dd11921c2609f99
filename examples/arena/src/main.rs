//! `arena`: serves the arena game on one address until SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use gamewire_arena::{Arena, ArenaConfig};
use gamewire_net::{IoBackend, Server, ServerConfig};

/// Serve the arena: ships, projectiles on a server tick, scores.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7780")]
    addr: SocketAddr,
    /// Event loops; 1 runs the game inside the loop, 2 or more on a thread of its own.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Event-loop backend: auto, mio or uring.
    #[arg(long, default_value_t = IoBackend::Auto)]
    io: IoBackend,
    /// Server ticks per second.
    #[arg(long, default_value_t = 20)]
    tick_hz: u32,
    /// Most players at once.
    #[arg(long, default_value_t = 1000)]
    max_players: usize,
    /// The arena's side (it is square).
    #[arg(long, default_value_t = 1000.0)]
    size: f32,
    /// How far a ship sees.
    #[arg(long, default_value_t = 150.0)]
    aoi_radius: f32,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let mut arena = ArenaConfig::default();
    arena.tick_hz = args.tick_hz;
    arena.max_players = args.max_players;
    arena.world_w = args.size;
    arena.world_h = args.size;
    arena.aoi_radius = args.aoi_radius;
    let game = Arena::new(arena).context("arena settings")?;

    // The core's connection cap follows the game's player cap (plus room for those still in HELLO).
    let max_connections = args.max_players + args.max_players / 10 + 16;
    let config = ServerConfig::default()
        .addr(args.addr)
        .workers(args.workers)
        .io(args.io)
        .max_connections(max_connections);
    let server = Server::with_game(config, game).context("cannot start the server")?;
    tracing::info!(addr = %server.local_addr(), io = ?server.io_backend(), workers = server.workers(), tick_hz = args.tick_hz, "arena serving");

    // The first SIGINT/SIGTERM stops gracefully, a second at once.
    server.shutdown_handle().stop_on_signals().context("cannot install signal handlers")?;
    let stats = server.run().context("server stopped with an error")?;
    tracing::info!(accepted = stats.accepted, "stopped");
    Ok(())
}
