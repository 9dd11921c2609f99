//! [`PacketSet`]: the packet ids a decoder accepts, decided before any payload is read.

use std::fmt;

/// A set of packet ids, each below [`PacketSet::ID_LIMIT`]: those a [`crate::FrameDecoder`] accepts.
/// Any other id is refused from the header alone (UNKNOWN_PACKET), before the payload is read and
/// before any game code runs.
///
/// 128 bytes, `Copy`; `contains` is O(1).
///
/// # Examples
///
/// ```
/// use gamewire_proto::PacketSet;
///
/// // A game whose clients send its packets 32 and 33 besides the core's session frames.
/// let accepted = PacketSet::SESSION_FROM_CLIENT.with(32).with(33);
/// assert!(accepted.contains(32));
/// assert!(accepted.contains(1)); // HELLO
/// assert!(!accepted.contains(3)); // protocol v1's MOVE is v1's, not this game's
/// assert!(!accepted.contains(70_000));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketSet {
    bits: [u64; 16],
}

impl PacketSet {
    /// Ids a set can hold are `0..ID_LIMIT`.
    pub const ID_LIMIT: u32 = 1024;

    /// No id.
    pub const EMPTY: PacketSet = PacketSet { bits: [0; 16] };

    /// The core's session frames a client sends: HELLO (1) and PING (8).
    pub const SESSION_FROM_CLIENT: PacketSet = PacketSet::EMPTY.with(1).with(8);

    /// The core's session frames a server sends: WELCOME (2), PONG (9) and ERROR (10).
    pub const SESSION_FROM_SERVER: PacketSet = PacketSet::EMPTY.with(2).with(9).with(10);

    /// Protocol v1's client packets: HELLO, MOVE, ATTACK, CHAT, PING.
    pub const V1_FROM_CLIENT: PacketSet = PacketSet::SESSION_FROM_CLIENT.with(3).with(4).with(5);

    /// Protocol v1's server packets: everything but HELLO, ATTACK and PING.
    pub const V1_FROM_SERVER: PacketSet =
        PacketSet::SESSION_FROM_SERVER.with(3).with(5).with(6).with(7).with(11);

    /// This set and `id`.
    ///
    /// # Panics
    ///
    /// If `id` is not below [`PacketSet::ID_LIMIT`] (at compile time in a `const`).
    pub const fn with(mut self, id: u32) -> PacketSet {
        assert!(id < PacketSet::ID_LIMIT, "packet ids in a PacketSet are below 1024");
        self.bits[(id / 64) as usize] |= 1 << (id % 64);
        self
    }

    /// Every id of `self` and of `other`.
    pub const fn union(mut self, other: PacketSet) -> PacketSet {
        let mut word = 0;
        while word < 16 {
            self.bits[word] |= other.bits[word];
            word += 1;
        }
        self
    }

    /// Whether `id` is in the set. O(1).
    pub const fn contains(&self, id: u32) -> bool {
        id < PacketSet::ID_LIMIT && self.bits[(id / 64) as usize] & (1 << (id % 64)) != 0
    }

    /// Whether the set shares an id with `other`.
    pub const fn intersects(&self, other: &PacketSet) -> bool {
        let mut word = 0;
        while word < 16 {
            if self.bits[word] & other.bits[word] != 0 {
                return true;
            }
            word += 1;
        }
        false
    }

    /// The ids in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..PacketSet::ID_LIMIT).filter(|&id| self.contains(id))
    }
}

impl Default for PacketSet {
    fn default() -> Self {
        PacketSet::EMPTY
    }
}

impl FromIterator<u32> for PacketSet {
    /// # Panics
    ///
    /// If an id is not below [`PacketSet::ID_LIMIT`].
    fn from_iter<I: IntoIterator<Item = u32>>(ids: I) -> Self {
        ids.into_iter().fold(PacketSet::EMPTY, PacketSet::with)
    }
}

impl fmt::Debug for PacketSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PacketKind;

    #[test]
    fn the_v1_sets_are_the_kinds_each_side_sends() {
        for kind in PacketKind::ALL {
            assert_eq!(PacketSet::V1_FROM_CLIENT.contains(kind.id()), kind.is_client_sendable(), "{kind:?}");
            assert_eq!(PacketSet::V1_FROM_SERVER.contains(kind.id()), kind.is_server_sendable(), "{kind:?}");
        }
        assert!(!PacketSet::V1_FROM_CLIENT.contains(0));
        assert!(!PacketSet::V1_FROM_CLIENT.contains(12));
    }

    #[test]
    fn ids_at_the_limit_and_beyond_are_never_contained() {
        let all: PacketSet = (0..PacketSet::ID_LIMIT).collect();
        assert_eq!(all.iter().count(), 1024);
        assert!(all.contains(1023));
        assert!(!all.contains(1024));
        assert!(!all.contains(u32::MAX));
        assert!(all.intersects(&PacketSet::EMPTY.with(512)));
        assert!(!PacketSet::EMPTY.intersects(&all));
    }
}
