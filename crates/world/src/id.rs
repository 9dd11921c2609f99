//! Player ids: dense slot indices with a generation, never 0.

use std::fmt;
use std::num::NonZeroU32;

/// A player's id, as carried in frame headers.
///
/// The low 20 bits are the player's slot plus one (so an id is never 0), the high 12 bits a generation
/// that changes each time the slot is reused, so a stale id from an ATTACK on a player who left does
/// not hit the next occupant. [`PlayerId::index`] is dense, below [`PlayerId::MAX_PLAYERS`]: the I/O
/// layer maps ids to connections with a plain vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlayerId(NonZeroU32);

const SLOT_BITS: u32 = 20;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

impl PlayerId {
    /// Most players one world can hold.
    pub const MAX_PLAYERS: usize = SLOT_MASK as usize;

    pub(crate) fn new(index: usize, generation: u32) -> Self {
        debug_assert!(index < Self::MAX_PLAYERS);
        let raw = ((generation & 0xFFF) << SLOT_BITS) | (index as u32 + 1);
        PlayerId(NonZeroU32::new(raw).expect("slot bits are at least 1"))
    }

    /// The id as it appears on the wire, if `raw` could be one (not 0).
    pub fn from_wire(raw: u32) -> Option<Self> {
        NonZeroU32::new(raw).filter(|raw| raw.get() & SLOT_MASK != 0).map(PlayerId)
    }

    /// The wire value.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The dense slot index, below [`PlayerId::MAX_PLAYERS`].
    pub fn index(self) -> usize {
        ((self.0.get() & SLOT_MASK) - 1) as usize
    }
}

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_and_carry_their_slot() {
        let id = PlayerId::new(0, 0);
        assert_eq!(id.get(), 1);
        assert_eq!(id.index(), 0);
        let id = PlayerId::new(12345, 7);
        assert_eq!(id.index(), 12345);
        assert_eq!(PlayerId::from_wire(id.get()), Some(id));
        assert_ne!(PlayerId::new(12345, 8), id);
        assert_eq!(PlayerId::from_wire(0), None);
        assert_eq!(PlayerId::from_wire(1 << SLOT_BITS), None);
    }
}
