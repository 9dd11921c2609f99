//! gamewire's I/O layer: connections, per-client send queues and the event loops that move bytes
//! between sockets and the sans-IO world.
//!
//! One [`Server`] runs one event loop that owns its listener, its connections, a buffer pool and the
//! world. Bytes are read straight into a pool chunk and decoded in place; every frame the world
//! produces is encoded once into pooled memory and queued, as a shared reference, for each recipient;
//! each client is flushed once per loop turn with vectored writes. The backends live under `sys/`;
//! see `sys/mod.rs` for the contract they all meet.
#![warn(missing_docs)]

mod config;
mod outbound;
mod send_queue;
mod server;
mod sys;
/// NUMA nodes and CPU pinning, for running one worker per core on memory local to it.
pub mod topology;
mod worker;
mod world_thread;

pub use config::{ConfigError, IoBackend, MAX_WORKERS, MIN_MAX_PAYLOAD, ServerConfig};
pub use server::{Server, ServerError, ShutdownHandle};
pub use worker::RunStats;
