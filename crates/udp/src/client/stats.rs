//! What a client counts, for a load test's report.

/// Counters of one [`Client`](super::Client), from its creation; see
/// [`Client::stats`](super::Client::stats).
///
/// # Examples
///
/// Adding up the clients of a load test:
///
/// ```
/// use gamewire_udp::client::Stats;
///
/// let per_client = [Stats::default(), Stats::default()];
/// let total = per_client.iter().fold(Stats::default(), |total, stats| total + *stats);
/// assert_eq!(total.dropped, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams [`poll_transmit`](super::Client::poll_transmit) returned.
    pub datagrams_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Datagrams passed to [`receive`](super::Client::receive), whatever became of them.
    pub datagrams_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Received datagrams dropped without a look inside: from another address than the server's,
    /// malformed (docs/protocol.md §10.2), of a kind or for a nonce or token that is not this client's
    /// in its current state, or arriving after it closed.
    pub dropped: u64,
    /// Received DATAs that were copies of one received before (the link duplicated them, or the
    /// server resent): dropped whole.
    pub duplicates: u64,
    /// CONNECTs and RESPONSEs sent again because no answer came.
    pub handshake_resends: u64,
    /// Reliable frames sent again because no acknowledgement came in time.
    pub reliable_resends: u64,
    /// Unreliable frames from the server dropped because a newer DATA had arrived before theirs
    /// (unreliable-sequenced, §10.5).
    pub stale_unreliable: u64,
    /// Reliable frames from the server dropped: copies of one received before (a resend whose
    /// acknowledgement was lost), or, from a server that breaks the in-flight limit, 256 or more ids
    /// ahead of the next expected one.
    pub dropped_reliable: u64,
}

impl std::ops::Add for Stats {
    type Output = Stats;

    fn add(self, other: Stats) -> Stats {
        Stats {
            datagrams_sent: self.datagrams_sent + other.datagrams_sent,
            bytes_sent: self.bytes_sent + other.bytes_sent,
            datagrams_received: self.datagrams_received + other.datagrams_received,
            bytes_received: self.bytes_received + other.bytes_received,
            dropped: self.dropped + other.dropped,
            duplicates: self.duplicates + other.duplicates,
            handshake_resends: self.handshake_resends + other.handshake_resends,
            reliable_resends: self.reliable_resends + other.reliable_resends,
            stale_unreliable: self.stale_unreliable + other.stale_unreliable,
            dropped_reliable: self.dropped_reliable + other.dropped_reliable,
        }
    }
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        *self = *self + other;
    }
}
