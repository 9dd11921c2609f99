//! The settings of a [`Client`](super::Client), with the defaults docs/protocol.md section 10 gives.

use std::time::Duration;

use crate::datagram::MAX_FRAME_PAYLOAD;
use crate::reliable;

/// Timers and limits of a [`Client`](super::Client); [`Config::default`] follows docs/protocol.md
/// section 10.
///
/// Setters take `&mut self` and return it, so settings chain; a setting added later breaks no caller.
///
/// # Examples
///
/// A bot that gives up on a silent server after 10 s instead of 30 s:
///
/// ```
/// use std::time::Duration;
/// use gamewire_udp::client::Config;
/// use gamewire_udp::reliable;
///
/// let mut reliability = reliable::Config::default();
/// reliability.idle_timeout(Duration::from_secs(10));
/// let mut config = Config::default();
/// config.reliable(reliability).max_unreliable_bytes(8 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(super) reliable: reliable::Config,
    pub(super) handshake_resend: Duration,
    pub(super) handshake_timeout: Duration,
    pub(super) max_payload: u32,
    pub(super) max_unreliable_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reliable: reliable::Config::default(),
            handshake_resend: Duration::from_millis(250),
            handshake_timeout: Duration::from_secs(5),
            max_payload: MAX_FRAME_PAYLOAD as u32,
            max_unreliable_bytes: 64 * 1024,
        }
    }
}

impl Config {
    /// The reliability layer's settings for the session: resend timeouts, ack delay, keepalive
    /// interval (1 s by default) and idle timeout (30 s: the server is gone after this long without a
    /// datagram from it). Its [`max_message_size`](reliable::Config::max_message_size) is replaced
    /// by the largest reliable item a DATA holds, since [`Client::send`](super::Client::send) accepts
    /// every frame the transport can carry.
    pub fn reliable(&mut self, config: reliable::Config) -> &mut Self {
        self.reliable = config;
        self
    }

    /// How long the client waits for an answer to its first CONNECT, and then to its first RESPONSE,
    /// before sending it again; the wait doubles with each resend. Default 250 ms (§10.3).
    ///
    /// # Panics
    ///
    /// When `wait` is zero: the handshake would be resent on every poll.
    pub fn handshake_resend(&mut self, wait: Duration) -> &mut Self {
        assert!(!wait.is_zero(), "handshake_resend must be more than zero");
        self.handshake_resend = wait;
        self
    }

    /// How long the client keeps sending CONNECT without a CHALLENGE, and then RESPONSE without a
    /// DATA, before it gives up ([`Close::HandshakeTimeout`](super::Close::HandshakeTimeout)). Each
    /// of the two steps has this long. Default 5 s (§10.3: the HELLO deadline of TCP).
    pub fn handshake_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The largest frame payload accepted from the server: a datagram holding a larger frame is
    /// dropped whole (§10.2). Default [`MAX_FRAME_PAYLOAD`], anything the transport carries (protocol
    /// v1's server never sends more than 256 bytes).
    pub fn max_payload(&mut self, bytes: u32) -> &mut Self {
        self.max_payload = bytes;
        self
    }

    /// Most bytes of unreliable frames waiting for a datagram; past them
    /// [`Client::send`](super::Client::send) refuses unreliable frames. Default 64 KiB. Frames wait
    /// only between a `send` and the next [`poll_transmit`](super::Client::poll_transmit), or until
    /// the session starts.
    pub fn max_unreliable_bytes(&mut self, bytes: usize) -> &mut Self {
        self.max_unreliable_bytes = bytes;
        self
    }
}
