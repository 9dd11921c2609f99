//! [`AoiGrid`]: who sees whom, for any game: players at positions on a plane, found through a uniform
//! grid whose cells are as wide as the area-of-interest radius.

use crate::PlayerId;
use crate::config::MAX_CELLS;
use crate::geometry::{Grid, GridSlot, Position};

/// The players of a game at their positions, and the one question a server asks of them at every
/// frame: who sees this point, or this player? "Sees" is [`Position::within`] the radius (x and z
/// only, inclusive), the same rule protocol v1's world uses.
///
/// Backed by a uniform grid of cells as wide as the radius, so a query visits at most 4 x 4 cells
/// whatever the population; insert, move and remove are O(1), and a steady population allocates
/// nothing. Positions outside the world are kept in its border cells (they are still found).
///
/// # Examples
///
/// ```
/// use gamewire_world::{AoiGrid, PlayerIds, Position};
///
/// let mut ids = PlayerIds::new(100);
/// let mut grid = AoiGrid::new(1000.0, 1000.0, 50.0).unwrap();
/// let (alice, bob, carol) = (ids.allocate().unwrap(), ids.allocate().unwrap(), ids.allocate().unwrap());
/// grid.insert(alice, Position::new(100.0, 0.0, 100.0));
/// grid.insert(bob, Position::new(130.0, 0.0, 140.0)); // 50 away: seen (inclusive)
/// grid.insert(carol, Position::new(500.0, 0.0, 500.0));
///
/// let mut viewers = Vec::new();
/// grid.viewers_of(alice, &mut viewers);
/// assert_eq!(viewers, [bob]);
///
/// // An explosion at a point: everyone who sees it.
/// viewers.clear();
/// grid.viewers_of_point(Position::new(480.0, 0.0, 500.0), &mut viewers);
/// assert_eq!(viewers, [carol]);
/// ```
#[derive(Debug)]
pub struct AoiGrid {
    grid: Grid,
    radius: f32,
    /// `entries[id.index()]`: the player in that slot, its position and where it is in the grid.
    entries: Vec<Option<Entry>>,
    len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: PlayerId,
    position: Position,
    slot: GridSlot,
}

/// Why an [`AoiGrid`] cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AoiError {
    /// The radius or a world side is not a positive, finite number.
    #[error("the world ({world_w} x {world_h}) and the radius ({radius}) must be positive and finite")]
    NotPositive {
        /// The world's x extent.
        world_w: f32,
        /// The world's z extent.
        world_h: f32,
        /// The radius.
        radius: f32,
    },
    /// The grid would have more cells than the limit (a radius far smaller than the world).
    #[error("a {world_w} x {world_h} world in cells of {radius} has more than {limit} cells")]
    TooManyCells {
        /// The world's x extent.
        world_w: f32,
        /// The world's z extent.
        world_h: f32,
        /// The radius.
        radius: f32,
        /// The most cells a grid may have.
        limit: usize,
    },
}

impl AoiGrid {
    /// An empty grid over a `world_w` x `world_h` world (x and z from 0) where players see each other
    /// within `radius`.
    ///
    /// # Errors
    ///
    /// [`AoiError`] if a size is not positive and finite, or the grid would exceed 4 M cells.
    pub fn new(world_w: f32, world_h: f32, radius: f32) -> Result<Self, AoiError> {
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !(positive(world_w) && positive(world_h) && positive(radius)) {
            return Err(AoiError::NotPositive { world_w, world_h, radius });
        }
        let cells = (world_w as f64 / radius as f64).ceil() * (world_h as f64 / radius as f64).ceil();
        if cells > MAX_CELLS as f64 {
            return Err(AoiError::TooManyCells { world_w, world_h, radius, limit: MAX_CELLS });
        }
        Ok(AoiGrid { grid: Grid::new(world_w, world_h, radius), radius, entries: Vec::new(), len: 0 })
    }

    /// The visibility radius.
    pub fn radius(&self) -> f32 {
        self.radius
    }

    /// Players in the grid.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the grid holds no player.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts `id` at `position` (moving it there if it is already in). O(1).
    pub fn insert(&mut self, id: PlayerId, position: Position) {
        if self.entry(id).is_some() {
            self.move_to(id, position);
            return;
        }
        let index = id.index();
        if self.entries.len() <= index {
            self.entries.resize(index + 1, None);
        }
        // A stale id of the same slot is replaced.
        if self.entries[index].is_some() {
            self.remove_slot(index);
        }
        let slot = self.grid.insert(self.grid.cell_of(position), index as u32);
        self.entries[index] = Some(Entry { id, position, slot });
        self.len += 1;
    }

    /// Moves `id` to `position`; returns whether it is in the grid. O(1).
    pub fn move_to(&mut self, id: PlayerId, position: Position) -> bool {
        let Some(entry) = self.entry(id) else { return false };
        let index = id.index();
        let cell = self.grid.cell_of(position);
        if cell != entry.slot.cell {
            self.unlink(entry.slot);
            let slot = self.grid.insert(cell, index as u32);
            self.entries[index] = Some(Entry { id, position, slot });
        } else if let Some(entry) = &mut self.entries[index] {
            entry.position = position;
        }
        true
    }

    /// Takes `id` out; returns where it was. O(1).
    pub fn remove(&mut self, id: PlayerId) -> Option<Position> {
        let position = self.entry(id)?.position;
        self.remove_slot(id.index());
        Some(position)
    }

    /// Where `id` is, if it is in the grid.
    pub fn position(&self, id: PlayerId) -> Option<Position> {
        self.entry(id).map(|entry| entry.position)
    }

    /// Appends to `out` every player within the radius of `point`, in no particular order.
    pub fn viewers_of_point(&self, point: Position, out: &mut Vec<PlayerId>) {
        self.collect(point, None, out);
    }

    /// Appends to `out` every player within the radius of `id`, `id` itself excepted (nothing if it
    /// is not in the grid), in no particular order.
    pub fn viewers_of(&self, id: PlayerId, out: &mut Vec<PlayerId>) {
        if let Some(entry) = self.entry(id) {
            self.collect(entry.position, Some(id), out);
        }
    }

    fn collect(&self, point: Position, except: Option<PlayerId>, out: &mut Vec<PlayerId>) {
        self.grid.for_each_in(self.grid.block_around(point), |index, _| {
            if let Some(entry) = &self.entries[index as usize]
                && Some(entry.id) != except
                && entry.position.within(point, self.radius)
            {
                out.push(entry.id);
            }
        });
    }

    fn entry(&self, id: PlayerId) -> Option<Entry> {
        self.entries.get(id.index()).copied().flatten().filter(|entry| entry.id == id)
    }

    fn remove_slot(&mut self, index: usize) {
        if let Some(entry) = self.entries[index].take() {
            self.unlink(entry.slot);
            self.len -= 1;
        }
    }

    /// Takes the entry at `slot` out of its cell, fixing the slot of the entry moved into its place.
    fn unlink(&mut self, slot: GridSlot) {
        if let Some(moved) = self.grid.remove(slot)
            && let Some(entry) = &mut self.entries[moved as usize]
        {
            entry.slot = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PlayerIds;

    #[test]
    fn moves_across_cells_keep_every_query_exact() {
        let mut ids = PlayerIds::new(64);
        let mut grid = AoiGrid::new(200.0, 200.0, 20.0).unwrap();
        let players: Vec<PlayerId> = (0..40).map(|_| ids.allocate().unwrap()).collect();
        let mut rng = 12345u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 40) as f32 / (1u64 << 24) as f32 * 200.0
        };
        for &id in &players {
            grid.insert(id, Position::new(next(), 0.0, next()));
        }
        for round in 0..200 {
            let id = players[round % players.len()];
            if round % 7 == 0 {
                grid.remove(id);
            } else {
                grid.insert(id, Position::new(next(), 0.0, next()));
            }
            for &viewer in &players {
                let Some(at) = grid.position(viewer) else { continue };
                let mut found = Vec::new();
                grid.viewers_of(viewer, &mut found);
                found.sort();
                let mut expected: Vec<PlayerId> = players
                    .iter()
                    .copied()
                    .filter(|&other| other != viewer)
                    .filter(|&other| grid.position(other).is_some_and(|p| p.within(at, 20.0)))
                    .collect();
                expected.sort();
                assert_eq!(found, expected, "round {round}");
            }
        }
        assert_eq!(grid.len(), players.iter().filter(|&&id| grid.position(id).is_some()).count());
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(matches!(AoiGrid::new(0.0, 10.0, 1.0), Err(AoiError::NotPositive { .. })));
        assert!(matches!(AoiGrid::new(10.0, 10.0, f32::NAN), Err(AoiError::NotPositive { .. })));
        assert!(matches!(AoiGrid::new(1e6, 1e6, 1.0), Err(AoiError::TooManyCells { .. })));
    }
}
