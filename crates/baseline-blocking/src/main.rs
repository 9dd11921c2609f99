//! `gamewire-baseline-blocking`: the naive "before" server of gamewire's benchmark, done correctly.
//!
//! A thread per connection with blocking reads and writes, one `Mutex<World>` shared by all of them,
//! one heap allocation per packet received and one per frame per recipient sent. Same world, same
//! rules and same flags as `gamewire serve`: only the I/O architecture differs.

mod cli;
mod conn;
mod echo;
mod outbox;
mod reader;
mod server;

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> anyhow::Result<()> {
    gamewire_cli::init_logging();
    // A panic in one connection thread would leave the world lock poisoned and the server half alive,
    // still accepting connections it can no longer serve: fail fast instead, so a benchmark notices.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));

    let args = cli::Args::parse();
    args.validate()?;
    // Installed before the listening line is printed, so that a harness that signals as soon as it
    // reads the line gets the graceful stop, not the default action.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let listener = TcpListener::bind(args.addr).with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;

    if args.echo {
        let (max_connections, write_deadline) = (args.max_connections, args.write_deadline);
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || echo::accept_loop(listener, max_connections, write_deadline))?;
        eprintln!("gamewire-baseline-blocking (echo, thread per connection) listening on {addr}");
        let signal = signals.forever().next();
        tracing::info!(?signal, "signal received; exiting");
        return Ok(());
    }

    let shared = Arc::new(server::Shared::new(&args)?);
    let world = args.world_config();
    tracing::info!(
        world = format_args!("{}x{}", world.world_w, world.world_h),
        aoi_radius = world.aoi_radius,
        max_speed = world.max_speed,
        spawn = ?world.spawn,
        max_payload = args.max_payload,
        max_connections = args.max_connections,
        "world"
    );
    let accept_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || server::accept_loop(listener, accept_shared))?;
    // Printed, not logged, so that it appears whatever RUST_LOG says: harnesses and tests parse it.
    eprintln!("gamewire-baseline-blocking (thread per connection) listening on {addr}");

    let signal = signals.forever().next();
    tracing::info!(?signal, "signal received; telling every client SHUTTING_DOWN");
    shared.shut_down(args.drain_timeout);
    tracing::info!("stopped");
    // Returning ends the process, and with it the accept thread blocked in accept().
    Ok(())
}
