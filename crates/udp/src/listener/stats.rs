//! Counters of what a listener received, refused and sent, for the server's logs and tests.

/// What a [`Listener`](super::Listener) has seen and done since it started. Plain counters; the
/// caller reads them when it likes ([`Listener::stats`](super::Listener::stats)).
///
/// # Examples
///
/// ```
/// use gamewire_udp::listener::{Inbox, Listener, ListenerConfig};
///
/// let now = std::time::Instant::now();
/// let mut listener = Listener::<Vec<u8>>::new(ListenerConfig::default(), now)?;
/// listener.receive(now, "192.0.2.1:9".parse().unwrap(), b"not a datagram", &mut Inbox::new());
/// assert_eq!(listener.stats().dropped_malformed, 1);
/// # Ok::<(), getrandom::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// Datagrams passed to `receive`.
    pub datagrams_received: u64,
    /// Datagrams `poll_transmit` filled.
    pub datagrams_sent: u64,
    /// Dropped without a reply: did not parse (docs/protocol.md §10.2), a CHALLENGE, a RESPONSE whose
    /// first item is not message 0, a client DATA with the nonce echo.
    pub dropped_malformed: u64,
    /// Dropped without a reply: DATA or DISCONNECT whose address and token match no session and no
    /// lingering one.
    pub dropped_unmatched: u64,
    /// Dropped without a reply: RESPONSE with a cookie expired, forged or made for another address.
    pub dropped_cookie: u64,
    /// RESPONSEs dropped because the operating system gave no random token.
    pub dropped_no_token: u64,
    /// Replies dropped because too many waited to be sent.
    pub dropped_replies: u64,
    /// CHALLENGEs queued (one per CONNECT accepted).
    pub challenges: u64,
    /// Handshakes refused with DISCONNECT (SERVER_FULL): full, or the IP at its cap.
    pub refused_full: u64,
    /// RESPONSEs of an existing session received again, each answered with one DATA.
    pub resent_responses: u64,
    /// DISCONNECTs sent again to the client of a lingering session.
    pub linger_replies: u64,
    /// Sessions created.
    pub sessions_opened: u64,
    /// Sessions ended, for any reason.
    pub sessions_closed: u64,
}
