//! The settings of a [`Listener`](super::Listener), with the defaults of `docs/protocol.md` §6 and §10.7.

use std::net::IpAddr;
use std::time::Duration;

use crate::cookie::ROTATION_INTERVAL;
use crate::datagram::MAX_FRAME_PAYLOAD;
use crate::reliable;

/// Limits, deadlines and reliability settings of a [`Listener`](super::Listener);
/// [`ListenerConfig::default`] holds the protocol's defaults.
///
/// Setters take `&mut self` and return it, so settings chain; the fields are private, so a setting
/// added later breaks no caller.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use gamewire_udp::listener::{Listener, ListenerConfig};
///
/// let mut config = ListenerConfig::default();
/// config.max_sessions(500).max_sessions_per_ip(8).cap_loopback(true).idle_timeout(Duration::from_secs(10));
/// config.reliability_mut().ack_delay(Duration::from_millis(10));
/// let listener = Listener::<Vec<u8>>::new(config, std::time::Instant::now())?;
/// assert_eq!(listener.session_count(), 0);
/// # Ok::<(), getrandom::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub(super) max_sessions: usize,
    pub(super) max_sessions_per_ip: usize,
    pub(super) cap_loopback: bool,
    pub(super) send_soft_limit: usize,
    pub(super) send_hard_limit: usize,
    pub(super) write_deadline: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) max_payload: u32,
    pub(super) max_unreliable_frames: usize,
    pub(super) cookie_rotation: Duration,
    pub(super) reliability: reliable::Config,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_sessions: 10_000,
            max_sessions_per_ip: 64,
            cap_loopback: false,
            send_soft_limit: 256 * 1024,
            send_hard_limit: 1024 * 1024,
            write_deadline: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_payload: 1024,
            max_unreliable_frames: 256,
            cookie_rotation: ROTATION_INTERVAL,
            reliability: reliable::Config::default(),
        }
    }
}

impl ListenerConfig {
    /// Most sessions at once (`--max-connections`); one more handshake is refused with DISCONNECT
    /// (SERVER_FULL). Default 10,000.
    pub fn max_sessions(&mut self, sessions: usize) -> &mut Self {
        self.max_sessions = sessions;
        self
    }

    /// Most sessions at once from one IP address (`--max-connections-per-ip`); 0 for no cap.
    /// Default 64. Loopback peers are exempt, and not counted, unless
    /// [`cap_loopback`](Self::cap_loopback).
    pub fn max_sessions_per_ip(&mut self, sessions: usize) -> &mut Self {
        self.max_sessions_per_ip = sessions;
        self
    }

    /// Whether the per-IP cap applies to loopback peers (127.0.0.0/8, ::1, 127.x mapped into IPv6)
    /// too (`--cap-loopback`). Default off: a loopback peer is this host (a load test), not a stranger.
    pub fn cap_loopback(&mut self, cap: bool) -> &mut Self {
        self.cap_loopback = cap;
        self
    }

    /// Bytes of reliable frames queued for a client and not acknowledged, above which the write
    /// deadline runs (`--send-soft-limit`). Default 256 KiB.
    pub fn send_soft_limit(&mut self, bytes: usize) -> &mut Self {
        self.send_soft_limit = bytes;
        self
    }

    /// Bytes of reliable frames queued for a client and not acknowledged that
    /// [`Listener::send`](super::Listener::send) refuses to exceed (`--send-hard-limit`): the client
    /// is then cut off with SLOW_CONSUMER. Default 1 MiB.
    pub fn send_hard_limit(&mut self, bytes: usize) -> &mut Self {
        self.send_hard_limit = bytes;
        self
    }

    /// How long a client may stay above the soft limit before it is cut off with SLOW_CONSUMER
    /// (`--write-deadline`). Default 5 s.
    pub fn write_deadline(&mut self, deadline: Duration) -> &mut Self {
        self.write_deadline = deadline;
        self
    }

    /// A session that sends no frame for this long ends with TIMEOUT (`--idle-timeout`); keepalives
    /// and pure acknowledgements do not count. Also the reliability layer's
    /// [`idle_timeout`](reliable::Config::idle_timeout) (silence, or nothing acknowledged), which this
    /// replaces. Default 30 s.
    pub fn idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.idle_timeout = timeout;
        self
    }

    /// Largest frame payload accepted from a client (`--max-payload`); a datagram holding a larger
    /// frame is dropped. At most [`MAX_FRAME_PAYLOAD`] (1154) take effect, whatever is set: a frame
    /// never spans datagrams. Default 1024.
    pub fn max_payload(&mut self, bytes: u32) -> &mut Self {
        self.max_payload = bytes;
        self
    }

    /// Most unreliable frames waiting for the next datagram to a client; one more drops the oldest
    /// (a newer MOVE supersedes it anyway). Default 256.
    ///
    /// # Panics
    ///
    /// When `frames` is 0.
    pub fn max_unreliable_frames(&mut self, frames: usize) -> &mut Self {
        assert!(frames > 0, "max_unreliable_frames must be at least 1");
        self.max_unreliable_frames = frames;
        self
    }

    /// How often the cookie secret is replaced by a fresh one (docs/protocol.md §10.3). Default 60 s.
    ///
    /// # Panics
    ///
    /// When `interval` is shorter than the cookies' 15 s lifetime: cookies would die before they
    /// expire.
    pub fn cookie_rotation(&mut self, interval: Duration) -> &mut Self {
        assert!(
            interval >= crate::cookie::DEFAULT_LIFETIME,
            "cookie_rotation must be at least the cookie lifetime"
        );
        self.cookie_rotation = interval;
        self
    }

    /// The reliability settings of every session (resend timers, ack delay, keepalive, in-flight
    /// window). The listener sets their [`max_message_size`](reliable::Config::max_message_size) to
    /// what one DATA holds and their idle timeout to [`idle_timeout`](Self::idle_timeout). Reliable
    /// frames beyond the in-flight window ([`max_unacked_messages`](reliable::Config::max_unacked_messages),
    /// [`max_unacked_bytes`](reliable::Config::max_unacked_bytes)) wait in the session's send queue,
    /// within the send limits.
    pub fn reliability(&mut self, config: reliable::Config) -> &mut Self {
        self.reliability = config;
        self
    }

    /// The reliability settings, to change in place.
    pub fn reliability_mut(&mut self) -> &mut reliable::Config {
        &mut self.reliability
    }

    /// The payload limit the parser applies: [`max_payload`](Self::max_payload), at most
    /// [`MAX_FRAME_PAYLOAD`].
    pub(super) fn parse_limit(&self) -> u32 {
        self.max_payload.min(MAX_FRAME_PAYLOAD as u32)
    }

    /// The per-IP cap that applies to a peer at `ip`, if any: `None` with no cap, and for loopback
    /// peers unless they are capped. Decided from the configuration alone, so that a session's
    /// creation and its end always agree on whether it is counted.
    pub(super) fn per_ip_cap(&self, ip: IpAddr) -> Option<usize> {
        let exempt = !self.cap_loopback && ip.to_canonical().is_loopback();
        (self.max_sessions_per_ip > 0 && !exempt).then_some(self.max_sessions_per_ip)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn loopback_is_exempt_from_the_per_ip_cap_unless_capped() {
        let mut config = ListenerConfig::default();
        let stranger = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 9).to_ipv6_mapped());
        assert_eq!(config.per_ip_cap(stranger), Some(64));
        assert_eq!(config.per_ip_cap(IpAddr::V4(Ipv4Addr::LOCALHOST)), None);
        assert_eq!(config.per_ip_cap(IpAddr::V6(Ipv6Addr::LOCALHOST)), None);
        assert_eq!(config.per_ip_cap(mapped), None);
        config.cap_loopback(true);
        assert_eq!(config.per_ip_cap(mapped), Some(64));
        config.max_sessions_per_ip(0);
        assert_eq!(config.per_ip_cap(stranger), None, "0: no cap");
    }

    #[test]
    fn the_payload_limit_never_exceeds_what_a_datagram_holds() {
        let mut config = ListenerConfig::default();
        assert_eq!(config.parse_limit(), 1024);
        config.max_payload(65536);
        assert_eq!(config.parse_limit(), MAX_FRAME_PAYLOAD as u32);
    }
}
