//! Game rules of gamewire protocol v1 as a sans-IO state machine: players, sessions, movement checks,
//! combat, chat and the area-of-interest grid.
//!
//! Nothing here touches a socket or reads a clock ("quinn-proto style"): the I/O layer owns a
//! [`Session`] per connection, passes every complete frame to [`World::handle`] with the current time,
//! and receives the frames to send through an [`Outbox`] it implements. Tests drive the same calls
//! with a fake clock.
//!
//! Who sees whom is decided by one predicate, [`Position::within`] the `aoi_radius`, answered through
//! a uniform grid whose cells are as wide as the radius. Visibility is not stored: it is a function of
//! positions, and every position change sends exactly the ENTER / MOVE / LEAVE frames that keep each
//! client's view equal to it.
//!
//! Steady-state handling of MOVE, CHAT, ATTACK and PING allocates nothing: recipient lists are
//! scratch vectors that keep their capacity.
#![warn(missing_docs)]

mod aoi;
mod config;
mod game;
mod geometry;
mod id;
mod rate;
mod world;

pub use aoi::{AoiError, AoiGrid};
pub use config::{Config, ConfigError, MAX_TIMEOUT, Rate, RateLimits};
pub use game::{Game, Outbox, Recipients, Verdict};
pub use geometry::Position;
pub use id::{PlayerId, PlayerIds};
pub use world::{MAX_HEIGHT, PlayerInfo, Session, World, error_message};
