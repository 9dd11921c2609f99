//! `gamewire serve`: flags, the settings in force, signals, and the server's run.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use gamewire_cli::{WorldArgs, seconds};
use gamewire_net::{
    ConfigError, EchoServer, IoBackend, RunStats, Server, ServerConfig, ServerError, ShutdownHandle,
};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7777")]
    addr: SocketAddr,
    /// Also serve the UDP transport (docs/protocol.md section 10) on --addr's IP and port. Linux and
    /// the mio backend for now: with --io auto this picks mio.
    #[arg(long)]
    udp: bool,
    /// Serve the UDP transport on this address instead of --addr's (implies --udp).
    #[arg(long, value_name = "ADDR")]
    udp_addr: Option<SocketAddr>,
    #[command(flatten)]
    world: WorldArgs,
    /// Largest client payload in bytes (256..=65536); bigger is TOO_LARGE.
    #[arg(long, default_value_t = gamewire_proto::DEFAULT_MAX_PAYLOAD)]
    max_payload: u32,
    /// Size of the buffer pool in MiB (one mapped region; pages become resident as they are used).
    #[arg(long, default_value_t = 64)]
    pool_mib: usize,
    /// Size of a pool chunk in bytes (multiple of 64, at least 1024); one read fills at most one.
    #[arg(long, default_value_t = 4096)]
    chunk_size: usize,
    /// Connections served at once; more are answered SERVER_FULL.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections served at once from one IP address; more from it are answered SERVER_FULL. 0 = no
    /// per-IP cap. Loopback peers (127.0.0.0/8, ::1: load tests on this host) are exempt unless
    /// --cap-loopback.
    #[arg(long, default_value_t = 64)]
    max_connections_per_ip: usize,
    /// Apply --max-connections-per-ip to loopback peers too.
    #[arg(long)]
    cap_loopback: bool,
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
    /// Kernel send buffer per game connection (SO_SNDBUF), in bytes; 0 leaves it to the kernel's
    /// autotuning (up to 4 MiB per connection that stops reading, unseen by the send limits).
    #[arg(long, default_value_t = 64 << 10, value_name = "BYTES")]
    socket_send_buffer: usize,
    /// Seconds to keep flushing to clients after SIGINT/SIGTERM before exiting anyway.
    #[arg(long, default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    drain_timeout: Duration,
    /// Echo raw bytes back instead of playing (no framing): for comparing the I/O core with other
    /// runtimes under a standard echo client. A connection through which nothing moves for
    /// --idle-timeout is closed.
    #[arg(long)]
    echo: bool,
    /// Longest seconds a client's queued frame waits for others to share its write: 0 flushes every
    /// loop turn (lowest latency); tens of milliseconds batch several turns' frames into one write
    /// per client (less CPU per frame).
    #[arg(long, default_value = "0", value_parser = gamewire_cli::seconds, value_name = "SECONDS")]
    flush_interval: Duration,
    /// Event loop: io_uring where the kernel offers it (Linux 6.0+), else mio (auto); or either one.
    #[arg(long, value_enum, default_value_t = Io::Auto)]
    io: Io,
    /// Event loops, each pinned to a CPU with its own listener (SO_REUSEPORT), connections and pool;
    /// with more than one, the world runs on a thread of its own [default: the CPUs this process may
    /// use].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Do not pin the workers to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Join a server already listening on --addr (SO_REUSEPORT): the kernel splits new players
    /// between the two, each with a world of its own. Without it, a taken address is an error. The
    /// joined server must have set SO_REUSEPORT too (this flag, or several workers).
    #[arg(long)]
    reuse_port: bool,
    /// Print the NUMA nodes found (from /sys/devices/system/node) and where each worker and its pool
    /// will sit, then serve.
    #[arg(long)]
    numa: bool,
    /// With --io uring: the most pool chunks lent to the kernel for receiving, as connections come (0:
    /// a quarter of the pool, at most 1024).
    #[arg(long, default_value_t = 0, value_name = "CHUNKS")]
    receive_buffers: usize,
    /// With --io uring: flushes of at least this many queued bytes use zero-copy sends (0: never).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    send_zerocopy_threshold: usize,
    /// Touch every page of the buffer pool at start (whole pool resident at once, no page faults
    /// later). By default pages become resident as the pool is first used.
    #[arg(long)]
    prefault: bool,
}

/// `--io`: which event loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Io {
    /// io_uring where available, else mio; the log says which and why.
    Auto,
    /// Readiness-based (epoll).
    Mio,
    /// Completion-based (io_uring); an error where the kernel lacks it.
    Uring,
}

impl From<Io> for IoBackend {
    fn from(io: Io) -> IoBackend {
        match io {
            Io::Auto => IoBackend::Auto,
            Io::Mio => IoBackend::Mio,
            Io::Uring => IoBackend::Uring,
        }
    }
}

impl ServeArgs {
    /// The server's configuration and protocol v1's rules these flags ask for, not validated yet.
    ///
    /// # Errors
    ///
    /// `--pool-mib` beyond the address space.
    fn into_config(self) -> anyhow::Result<(ServerConfig, gamewire_world::Config)> {
        let Some(pool_bytes) = self.pool_mib.checked_mul(1 << 20) else {
            anyhow::bail!(
                "invalid configuration: --pool-mib {} is more memory than can exist",
                self.pool_mib
            );
        };
        let rules = self.world.to_config(self.max_connections);
        // With port 0 the TCP listener's port is not known yet: the UDP sockets take their own.
        let udp_addr = self.udp_addr.or(self.udp.then_some(self.addr));
        let config = ServerConfig::default()
            .addr(self.addr)
            .udp_addr(udp_addr)
            .max_payload(self.max_payload)
            .pool_bytes(pool_bytes)
            .chunk_size(self.chunk_size)
            .max_connections(self.max_connections)
            .max_connections_per_ip(self.max_connections_per_ip)
            .cap_loopback(self.cap_loopback)
            .send_soft_limit(self.send_soft_limit)
            .send_hard_limit(self.send_hard_limit)
            .write_deadline(self.write_deadline)
            .socket_send_buffer(self.socket_send_buffer)
            .partial_frame_timeout(self.partial_frame_timeout)
            .drain_timeout(self.drain_timeout)
            .flush_interval(self.flush_interval)
            .prefault_pool(self.prefault)
            .io(self.io.into())
            .send_zerocopy_threshold(self.send_zerocopy_threshold)
            .workers(self.workers.unwrap_or_else(default_workers))
            .reuse_port(self.reuse_port)
            .pin_workers(!self.no_pin)
            .receive_buffers(self.receive_buffers);
        Ok((config, rules))
    }
}

/// One worker per CPU this process may run on.
fn default_workers() -> usize {
    gamewire_net::topology::current_cpus()
        .map(|cpus| cpus.len())
        .or_else(|_| std::thread::available_parallelism().map(usize::from))
        .unwrap_or(1)
        .clamp(1, gamewire_net::MAX_WORKERS)
}

/// Prints the NUMA nodes and where each of `workers` pinned workers (and the pool it touches first)
/// will sit.
fn print_numa(workers: usize, pinned: bool) {
    let nodes = gamewire_net::topology::nodes();
    println!("NUMA nodes (from /sys/devices/system/node):");
    for node in &nodes {
        println!("  node {}: CPUs {:?}", node.id, node.cpus);
    }
    let cpus = gamewire_net::topology::current_cpus().unwrap_or_default();
    for worker in 0..workers {
        if pinned && !cpus.is_empty() {
            let cpu = cpus[worker % cpus.len()];
            let node = gamewire_net::topology::node_of_cpu(&nodes, cpu);
            let node = node.map_or_else(|| "?".to_string(), |n| n.to_string());
            println!(
                "  worker {worker}: CPU {cpu}, node {node}; its pool is first touched there (local pages)"
            );
        } else {
            println!("  worker {worker}: unpinned; its pool's pages land where the scheduler runs it first");
        }
    }
}

/// What `serve` runs: protocol v1's game, or raw echo (`--echo`).
enum Serving {
    Game(Server),
    Echo(EchoServer),
}

impl Serving {
    /// Raw echo closes a connection idle for the rules' `idle_timeout` (`--idle-timeout`), as
    /// protocol v1 closes an idle player.
    fn bind(config: ServerConfig, rules: gamewire_world::Config, echo: bool) -> Result<Serving, ServerError> {
        match echo {
            true => EchoServer::with_idle_timeout(config, rules.idle_timeout).map(Serving::Echo),
            false => Server::bind(config, rules).map(Serving::Game),
        }
    }

    fn io_backend(&self) -> IoBackend {
        match self {
            Serving::Game(server) => server.io_backend(),
            Serving::Echo(server) => server.io_backend(),
        }
    }

    fn workers(&self) -> usize {
        match self {
            Serving::Game(server) => server.workers(),
            Serving::Echo(server) => server.workers(),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match self {
            Serving::Game(server) => server.local_addr(),
            Serving::Echo(server) => server.local_addr(),
        }
    }

    fn udp_local_addr(&self) -> Option<SocketAddr> {
        match self {
            Serving::Game(server) => server.udp_local_addr(),
            Serving::Echo(_) => None,
        }
    }

    fn shutdown_handle(&self) -> ShutdownHandle {
        match self {
            Serving::Game(server) => server.shutdown_handle(),
            Serving::Echo(server) => server.shutdown_handle(),
        }
    }

    fn run(self) -> Result<RunStats, ServerError> {
        match self {
            Serving::Game(server) => server.run(),
            Serving::Echo(server) => server.run(),
        }
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (numa, echo) = (args.numa, args.echo);
    let (config, rules) = args.into_config()?;
    if echo && config.udp_addr.is_some() {
        anyhow::bail!("invalid configuration: --echo serves TCP only; drop --udp/--udp-addr");
    }
    // Checked here rather than left to `Server::bind`, to name each parameter by its flag, in one
    // line: the server's first (`--max-connections 0` is its fault, not that of the world's
    // `max_players` derived from it), then the rules (with --echo too: they hold its idle timeout).
    let valid = config.validate().and_then(|()| rules.validate().map_err(ConfigError::from));
    if let Err(error) = valid {
        anyhow::bail!("invalid configuration: {}", error.describe(&gamewire_cli::flag_name));
    }
    if numa {
        print_numa(config.workers, config.pin_workers);
    }
    let limits = &rules.limits;
    let server = match Serving::bind(config.clone(), rules.clone(), echo) {
        Ok(server) => server,
        Err(ServerError::Bind { addr, error }) if error.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::bail!(
                "cannot start the server: {addr} is already in use ({error}); another server may be \
                 listening there: stop it, choose another --addr, or pass --reuse-port on both to share it"
            );
        }
        Err(error) => return Err(anyhow::Error::new(error).context("cannot start the server")),
    };
    let backend = match server.io_backend() {
        IoBackend::Uring => "io_uring",
        _ => "mio",
    };
    let mode = if echo { "raw echo" } else { "protocol v1" };
    let workers = server.workers();
    tracing::info!(addr = %server.local_addr(), workers, "gamewire listening ({mode}, backend {backend})");
    if let Some(udp) = server.udp_local_addr() {
        tracing::info!(addr = %udp, "UDP transport on (docs/protocol.md section 10)");
    }
    tracing::info!(
        world = format_args!("{}x{}", rules.world_w, rules.world_h),
        aoi_radius = rules.aoi_radius,
        max_speed = rules.max_speed,
        attack_range = rules.attack_range,
        damage = rules.damage,
        max_hp = rules.max_hp,
        spawn = ?rules.spawn,
        "world"
    );
    tracing::info!(
        max_payload = config.max_payload,
        pool_mib = config.pool_bytes >> 20,
        chunk_size = config.chunk_size,
        max_connections = config.max_connections,
        max_connections_per_ip = config.max_connections_per_ip,
        cap_loopback = config.cap_loopback,
        send_soft_limit = config.send_soft_limit,
        send_hard_limit = config.send_hard_limit,
        socket_send_buffer = config.socket_send_buffer,
        "limits"
    );
    tracing::info!(
        moves = format_args!("{}/s burst {}", limits.moves.per_second, limits.moves.burst),
        chats = format_args!("{}/s burst {}", limits.chats.per_second, limits.chats.burst),
        attacks = format_args!("{}/s burst {}", limits.attacks.per_second, limits.attacks.burst),
        pings = format_args!("{}/s burst {}", limits.pings.per_second, limits.pings.burst),
        hello_timeout = ?rules.hello_timeout,
        idle_timeout = ?rules.idle_timeout,
        partial_frame_timeout = ?config.partial_frame_timeout,
        write_deadline = ?config.write_deadline,
        "rate limits and deadlines"
    );

    server.shutdown_handle().stop_on_signals().context("cannot install signal handlers")?;

    let stats = server.run().context("server failed")?;
    tracing::info!(
        accepted = stats.accepted,
        frames_in = stats.frames_in,
        frames_out = stats.frames_out,
        writes = stats.writes,
        heap_fallbacks = stats.heap_fallbacks,
        read_pauses = stats.read_pauses,
        "stopped"
    );
    Ok(())
}
