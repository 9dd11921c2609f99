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

    /// The wire value, as a header's `player_id` or an ATTACK's target carries it.
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

/// Hands out [`PlayerId`]s: a freed slot before a new one, each reuse of a slot with the next generation,
/// so that a stale id never names the slot's next occupant (until the 12-bit generation wraps). O(1)
/// per call; a steady population allocates nothing.
///
/// # Examples
///
/// ```
/// use gamewire_world::PlayerIds;
///
/// let mut ids = PlayerIds::new(1000);
/// let alice = ids.allocate().unwrap();
/// let bob = ids.allocate().unwrap();
/// assert_eq!((alice.get(), bob.get()), (1, 2));
/// assert!(ids.release(alice));
/// assert!(!ids.release(alice), "released once");
/// let carol = ids.allocate().unwrap();
/// assert_eq!(carol.index(), alice.index(), "the slot is reused ...");
/// assert_ne!(carol, alice, "... under a new id");
/// assert!(!ids.contains(alice) && ids.contains(carol));
/// ```
#[derive(Clone, Debug)]
pub struct PlayerIds {
    /// `generations[slot]`: the slot's current generation.
    generations: Vec<u32>,
    /// `live[slot]`: whether the slot's id is handed out.
    live: Vec<bool>,
    /// Freed slots, the next to reuse last.
    free: Vec<usize>,
    limit: usize,
    count: usize,
}

impl PlayerIds {
    /// An allocator of at most `limit` ids at once (capped at [`PlayerId::MAX_PLAYERS`]).
    pub fn new(limit: usize) -> Self {
        PlayerIds {
            generations: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            limit: limit.min(PlayerId::MAX_PLAYERS),
            count: 0,
        }
    }

    /// A new id, or `None` when `limit` ids are handed out.
    pub fn allocate(&mut self) -> Option<PlayerId> {
        if self.count >= self.limit {
            return None;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.generations.push(0);
                self.live.push(false);
                self.generations.len() - 1
            }
        };
        self.live[slot] = true;
        self.count += 1;
        Some(PlayerId::new(slot, self.generations[slot]))
    }

    /// Gives `id` back; its slot's next id has the next generation. Returns whether `id` was handed
    /// out (a stale or foreign id is ignored).
    pub fn release(&mut self, id: PlayerId) -> bool {
        if !self.contains(id) {
            return false;
        }
        let slot = id.index();
        self.live[slot] = false;
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        self.free.push(slot);
        self.count -= 1;
        true
    }

    /// Whether `id` is handed out now.
    pub fn contains(&self, id: PlayerId) -> bool {
        let slot = id.index();
        self.live.get(slot).copied().unwrap_or(false) && PlayerId::new(slot, self.generations[slot]) == id
    }

    /// Ids handed out now.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no id is handed out.
    pub fn is_empty(&self) -> bool {
        self.count == 0
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
