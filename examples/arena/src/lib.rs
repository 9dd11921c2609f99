//! The arena: a second game on gamewire's public [`gamewire_world::Game`] API, unlike protocol v1's.
//!
//! Players steer ships (STEER) and fire projectiles (FIRE); the server moves ships and projectiles
//! on its own fixed-rate tick, with no client frame, resolves hits, scores and respawns, and sends
//! each update only to the players who see where it happens (an [`gamewire_world::AoiGrid`]). The
//! embedding program talks to a running arena through [`ArenaCommand`]s (announce, kick).
//!
//! - [`protocol`]: packet ids and payloads, both directions (the contract is `docs/arena.md`).
//! - [`Arena`]: the rules, as a sans-IO [`gamewire_world::Game`].
//! - [`ArenaConfig`]: sizes, speeds, rates and timeouts.
//!
//! The `arena` binary serves it: `cargo run -p gamewire-arena -- --addr 127.0.0.1:7780`.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

mod arena;
mod config;
pub mod protocol;

pub use arena::{Arena, ArenaCommand, ArenaSession};
pub use config::{ArenaConfig, ConfigError};
