//! gamewire's UDP transport without I/O: what a datagram holds, the stateless handshake, and the
//! reliable and unreliable channels, as plain state machines driven with bytes and a clock.
//!
//! Nothing here opens a socket or reads the time: the server's event loops (in `gamewire-net`) and the
//! bots feed datagrams in and take datagrams out, so every rule of the transport can be tested over
//! in-memory links with seeded loss, duplication and reordering. The wire format is specified in
//! `docs/protocol.md`, section 10.
//!
//! - [`seq`]: wrapping 16-bit sequence numbers (datagrams and reliable messages).
//! - [`datagram`]: the datagram format: checked zero-copy views of every kind, writers into caller buffers.
//! - [`cookie`]: stateless handshake cookies, a keyed MAC under a rotating secret.
//! - [`reliable`]: acknowledgements, resends and in-order delivery of reliable messages, and which
//!   unreliable frames are stale: one [`reliable::Endpoint`] per connection.
//! - [`client`]: the client side of the transport: handshake, session token checks, channels,
//!   keepalives and timeouts of one connection, for bots, tests and Rust clients.
//! - [`listener`]: the server side of one socket: handshakes, sessions, and datagrams out as iovecs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod cookie;
pub mod datagram;
pub mod listener;
pub mod reliable;
pub mod seq;
