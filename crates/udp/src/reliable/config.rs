//! The settings of a reliability endpoint, with the defaults the issue asks for.

use std::time::Duration;

use super::RECEIVE_WINDOW;

/// Limits and timers of an [`Endpoint`](super::Endpoint); [`Config::default`] is a sensible start.
///
/// Setters take `&mut self` and return it, so settings chain; a setting added later breaks no
/// caller. Both ends of a connection need the same [`RECEIVE_WINDOW`], which is a constant for that
/// reason; everything here may differ between the two ends.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use gamewire_udp::reliable::{Config, Endpoint};
///
/// let mut config = Config::default();
/// config.max_unacked_bytes(16 * 1024).ack_delay(Duration::from_millis(10));
/// let endpoint = Endpoint::<Vec<u8>>::new(config, std::time::Instant::now());
/// assert_eq!(endpoint.unacked_bytes(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(super) max_unacked_messages: usize,
    pub(super) max_unacked_bytes: usize,
    pub(super) max_message_size: usize,
    pub(super) max_messages_per_datagram: usize,
    pub(super) initial_rtt: Duration,
    pub(super) min_resend_timeout: Duration,
    pub(super) max_resend_timeout: Duration,
    pub(super) ack_delay: Duration,
    pub(super) keepalive_interval: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) tracked_datagrams: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_unacked_messages: RECEIVE_WINDOW,
            max_unacked_bytes: 64 * 1024,
            max_message_size: 1024,
            max_messages_per_datagram: 32,
            initial_rtt: Duration::from_millis(200),
            min_resend_timeout: Duration::from_millis(50),
            max_resend_timeout: Duration::from_secs(1),
            ack_delay: Duration::from_millis(20),
            keepalive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            tracked_datagrams: 256,
        }
    }
}

impl Config {
    /// Most reliable messages in flight, counted as message ids from the oldest unacknowledged one
    /// to the newest queued one (acknowledged ones in between count: the receiver must be able to
    /// buffer them all). Default and most: [`RECEIVE_WINDOW`] (256).
    ///
    /// # Panics
    ///
    /// When `messages` is 0 or more than [`RECEIVE_WINDOW`].
    pub fn max_unacked_messages(&mut self, messages: usize) -> &mut Self {
        assert!(
            (1..=RECEIVE_WINDOW).contains(&messages),
            "max_unacked_messages must be 1..={RECEIVE_WINDOW}"
        );
        self.max_unacked_messages = messages;
        self
    }

    /// Most bytes of reliable messages queued and not yet acknowledged, as the sizes given to
    /// [`Endpoint::queue`](super::Endpoint::queue) add up. Default 64 KiB. A peer that lets this fill
    /// up cannot keep up; the server cuts it with SLOW_CONSUMER.
    pub fn max_unacked_bytes(&mut self, bytes: usize) -> &mut Self {
        self.max_unacked_bytes = bytes;
        self
    }

    /// Largest size [`Endpoint::queue`](super::Endpoint::queue) accepts for one message. Default
    /// 1024. Set it to the room one item has in an otherwise empty datagram: a bigger message could
    /// never be sent.
    pub fn max_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_message_size = bytes;
        self
    }

    /// Most reliable messages in one datagram. Default 32.
    ///
    /// # Panics
    ///
    /// When `messages` is 0 or more than 64 (the cap keeps the record of what each datagram carried
    /// small, and far from the 65536 ids after which a message id comes round again).
    pub fn max_messages_per_datagram(&mut self, messages: usize) -> &mut Self {
        assert!((1..=64).contains(&messages), "max_messages_per_datagram must be 1..=64");
        self.max_messages_per_datagram = messages;
        self
    }

    /// The round-trip time assumed before the first measurement. Default 200 ms, so a message lost
    /// before any measurement is resent after 250 ms (RFC 6298 says 1 s, too slow for a game; a resend
    /// that was not needed costs one duplicate the receiver drops).
    pub fn initial_rtt(&mut self, rtt: Duration) -> &mut Self {
        self.initial_rtt = rtt;
        self
    }

    /// Shortest resend timeout, whatever the RTT. Default 50 ms (`docs/protocol.md` 10.5): well above
    /// the peer's ack delay (20 ms) and timer granularity, which would make shorter resends spurious
    /// on a fast link where the peer acknowledges only when its ack delay runs out.
    pub fn min_resend_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.min_resend_timeout = timeout;
        self
    }

    /// Longest resend timeout, also the cap of the exponential backoff. Default 1 s.
    pub fn max_resend_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.max_resend_timeout = timeout;
        self
    }

    /// How long after receiving a reliable message an acknowledgement may wait for a datagram that
    /// goes out anyway, before [`Endpoint::poll_datagram`](super::Endpoint::poll_datagram) asks for
    /// a pure ack. Default 20 ms. The peer's RTT samples include this wait.
    pub fn ack_delay(&mut self, delay: Duration) -> &mut Self {
        self.ack_delay = delay;
        self
    }

    /// After this long without sending anything, a keepalive (an empty datagram) is due. Default 1 s.
    pub fn keepalive_interval(&mut self, interval: Duration) -> &mut Self {
        self.keepalive_interval = interval;
        self
    }

    /// The peer is [gone](super::Gone) after this long without a datagram from it, or with reliable
    /// messages sent and no acknowledgement of any. Default 30 s, protocol v1's idle timeout.
    pub fn idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.idle_timeout = timeout;
        self
    }

    /// How many sent datagrams are remembered for acknowledgement. Default 256, more than a second of
    /// datagrams at 200 per second. An ack for a datagram already forgotten is ignored: the messages
    /// it carried are resent and freed by the ack of the resend.
    ///
    /// # Panics
    ///
    /// When `datagrams` is less than 33 (one ack covers 33 datagrams) or more than 16384 (the range
    /// must stay far below half the sequence circle).
    pub fn tracked_datagrams(&mut self, datagrams: usize) -> &mut Self {
        assert!((33..=16384).contains(&datagrams), "tracked_datagrams must be 33..=16384");
        self.tracked_datagrams = datagrams;
        self
    }
}
