//! `gamewire-baseline-tokio`: protocol v1 served the idiomatic tokio way, as the benchmark's baseline.
//!
//! It is what a Rust developer would write from tokio's documentation instead of gamewire, built as
//! well as that style allows, and it reuses gamewire's wire format (`gamewire-proto`) and game rules
//! (`gamewire-world`) unchanged, so that only the I/O architecture differs:
//!
//! - a multi-thread runtime; one task per connection reading through `FramedRead` with a protocol v1
//!   [`codec::FrameCodec`], plus one writer task per connection draining a bounded `mpsc` channel of
//!   `Bytes` into a `FramedWrite`;
//! - one task owning the `World`, fed by an `mpsc` channel of commands from every connection; each
//!   outgoing frame is encoded once and a `Bytes` clone is `try_send`-ed to each recipient (a full
//!   channel is a slow consumer, cut off);
//! - SIGINT/SIGTERM: ERROR(SHUTTING_DOWN) to every client, a bounded drain, exit 0.
//!
//! `--echo` turns it into a plain byte echo server for the benchmark's echo scenario.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]

mod cli;
mod codec;
mod connection;
mod echo;
mod server;
mod world_task;

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    gamewire_cli::init_logging();
    let args = cli::Args::parse();
    // What `#[tokio::main]` expands to, spelled out so that `--threads` can set the worker count.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.into());
    }
    let runtime = runtime.build().context("cannot start the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: cli::Args) -> anyhow::Result<()> {
    let settings = args.settings();
    // Refuse a bad configuration before listening: a harness takes the `listening on` line as ready.
    let world = (!args.echo)
        .then(|| gamewire_world::World::new(settings.world.clone()))
        .transpose()
        .context("invalid world configuration")?;
    let listener =
        server::bind(settings.addr).with_context(|| format!("cannot listen on {}", settings.addr))?;
    let addr = listener.local_addr()?;
    // Installed before announcing the address, so that a harness's SIGINT right after the line is a
    // graceful stop, not the default kill.
    let signals = server::Signals::new().context("cannot install signal handlers")?;
    let Some(world) = world else {
        tracing::info!("listening on {addr} (echo)");
        echo::run(listener, signals).await;
        return Ok(());
    };
    // The harness waits for this line and reads the port from it (the address may be port 0).
    tracing::info!("listening on {addr} (protocol v1, tokio baseline)");
    let config = &settings.world;
    tracing::info!(
        world = format_args!("{}x{}", config.world_w, config.world_h),
        aoi_radius = config.aoi_radius,
        max_speed = config.max_speed,
        spawn = ?config.spawn,
        max_payload = settings.connection.max_payload,
        max_connections = settings.max_connections,
        send_queue = settings.connection.send_queue,
        "settings"
    );
    server::run(listener, signals, world, settings).await
}
