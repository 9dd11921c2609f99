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
//!
//! # Building blocks
//!
//! - [`World`] and its [`Session`]s: protocol v1's reference game, built from a [`Config`]; its
//!   documentation shows it driven sans-IO.
//! - [`Game`], [`Outbox`], [`Recipients`] and [`Verdict`]: what any game implements and is driven
//!   through (`gamewire_net::Server` runs a `Game`).
//! - [`AoiGrid`] and [`Position`]: who sees whom, for any game.
//! - [`PlayerIds`] and [`PlayerId`]: ids that are dense slot indices, with a generation so that a stale
//!   id never names the next player in its slot.
//!
//! # Examples
//!
//! A game of one's own, from the pieces: ids for the players, a grid for who sees whom, and an
//! [`Outbox`] that sends each frame, encoded once, to everyone who should get it (here, one that
//! records them).
//!
//! ```
//! use gamewire_proto::{Encode, Packet, encode_frame_to_vec};
//! use gamewire_world::{AoiGrid, Outbox, PlayerId, PlayerIds, Position, Recipients};
//!
//! /// Records each frame with its recipients.
//! #[derive(Default)]
//! struct Sent(Vec<(Vec<PlayerId>, Vec<u8>)>);
//!
//! impl Outbox for Sent {
//!     fn send<P: Encode + ?Sized>(&mut self, to: Recipients<'_>, player_id: u32, packet: &P) {
//!         let to = match to {
//!             Recipients::Sender => Vec::new(), // the connection being handled: none here
//!             Recipients::One(id) => vec![id],
//!             Recipients::Many(ids) => ids.to_vec(),
//!         };
//!         self.0.push((to, encode_frame_to_vec(player_id, packet)));
//!     }
//!     fn end(&mut self, _player: PlayerId) {} // this example ends no session
//! }
//!
//! let mut ids = PlayerIds::new(100);
//! let mut grid = AoiGrid::new(1000.0, 1000.0, 50.0)?;
//! let (ada, bob, eve) = (ids.allocate().unwrap(), ids.allocate().unwrap(), ids.allocate().unwrap());
//! grid.insert(ada, Position::new(100.0, 0.0, 100.0));
//! grid.insert(bob, Position::new(120.0, 0.0, 130.0));
//! grid.insert(eve, Position::new(800.0, 0.0, 800.0));
//!
//! // Ada says something: it goes to everyone who sees her.
//! let mut viewers = Vec::new();
//! grid.viewers_of(ada, &mut viewers);
//! let mut out = Sent::default();
//! out.send(Recipients::Many(&viewers), ada.get(), &Packet::Chat { text: "hi" });
//! assert_eq!(out.0[0], (vec![bob], encode_frame_to_vec(ada.get(), &Packet::Chat { text: "hi" })));
//!
//! // Eve walks over: now she sees Ada too.
//! grid.move_to(eve, Position::new(110.0, 0.0, 90.0));
//! viewers.clear();
//! grid.viewers_of(ada, &mut viewers);
//! viewers.sort();
//! assert_eq!(viewers, [bob, eve]);
//! # Ok::<(), gamewire_world::AoiError>(())
//! ```
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
