//! gamewire's I/O layer: connections, per-client send queues and the event loops that move bytes
//! between sockets and the sans-IO world.
//!
//! A [`Server`] runs one event loop per worker (`ServerConfig::workers`), on io_uring or mio
//! ([`IoBackend`]); each owns its listener, its connections and a buffer pool. With one worker the world
//! lives inside its loop; with several it runs on a thread of its own, linked to every worker by SPSC
//! rings (`world_thread`). Bytes are received straight into pool chunks and decoded in place; every
//! frame the world produces is encoded once into pooled memory and queued, as a shared reference, for
//! each recipient; each client is flushed with one vectored write or send per loop turn (or per
//! `flush_interval`). The backends live under `sys/`; see `sys/mod.rs` for the contract they all meet.
#![warn(missing_docs)]

mod config;
mod control;
mod game;
mod outbound;
mod send_queue;
mod server;
mod sys;
/// NUMA nodes and CPU pinning, for running one worker per core on memory local to it.
pub mod topology;
mod worker;
mod world_thread;

pub use config::{ConfigError, IoBackend, MAX_WORKERS, MIN_MAX_PAYLOAD, ServerConfig, UnknownIoBackend};
pub use control::ShutdownHandle;
pub use game::ServerHandle;
pub use server::{EchoServer, Server, ServerError};
pub use worker::RunStats;
