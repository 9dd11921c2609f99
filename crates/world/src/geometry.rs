//! Positions, the visibility predicate, and the uniform grid that answers "who is near" in O(nearby).

/// A position: `x` and `z` span the world's floor, `y` is height.
///
/// Where a player stands, in [`crate::AoiGrid`] and [`crate::World`]; [`Position::within`] is the one
/// rule for who sees whom.
///
/// # Examples
///
/// ```
/// use gamewire_world::Position;
///
/// let ada = Position::new(0.0, 0.0, 0.0);
/// let bob = Position::new(30.0, 500.0, 40.0); // 50 away on the floor, high above it
/// assert_eq!(ada.distance_squared_xz(bob), 2500.0);
/// assert!(ada.within(bob, 50.0), "inclusive, and height plays no part");
/// assert!(!ada.within(bob, 49.9));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Position {
    /// Along the world's width.
    pub x: f32,
    /// Height; plays no part in distances.
    pub y: f32,
    /// Along the world's height.
    pub z: f32,
}

impl Position {
    /// The position at `x`, height `y`, `z`.
    pub const fn new(x: f32, y: f32, z: f32) -> Self {
        Position { x, y, z }
    }

    /// Squared distance on the x–z plane, computed in `f64` so that comparisons against a radius are
    /// exact for every pair of `f32` positions a world holds.
    pub fn distance_squared_xz(self, other: Position) -> f64 {
        let dx = self.x as f64 - other.x as f64;
        let dz = self.z as f64 - other.z as f64;
        dx * dx + dz * dz
    }

    /// Whether `other` is within `radius` of `self` on the x–z plane (inclusive). This is the one
    /// definition of "sees" and of "in range" everywhere in gamewire.
    pub fn within(self, other: Position, radius: f32) -> bool {
        let radius = radius as f64;
        self.distance_squared_xz(other) <= radius * radius
    }
}

/// A uniform grid over the world with cells as wide as the area-of-interest radius, so everything a
/// player can see lies in the cells that overlap the square of side `2 * radius` around it: at most
/// 3 x 3 cells, 4 x 4 when the square meets cell borders exactly.
///
/// Cells hold dense indices (player slots); each entry knows its position in its cell, so moving and
/// removing are O(1) `swap_remove`s. Cell vectors keep their capacity, so a steady population
/// allocates nothing.
#[derive(Debug)]
pub(crate) struct Grid {
    cell_size: f64,
    columns: usize,
    rows: usize,
    radius: f64,
    cells: Vec<Vec<u32>>,
}

/// Where a grid entry lives: its cell and its index inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GridSlot {
    pub(crate) cell: u32,
    pub(crate) index: u32,
}

/// The block of cells `[columns] x [rows]` to scan around a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CellBlock {
    column_min: usize,
    column_max: usize,
    row_min: usize,
    row_max: usize,
}

impl CellBlock {
    pub(crate) fn contains_cell(&self, cell: u32, columns: usize) -> bool {
        let (column, row) = (cell as usize % columns, cell as usize / columns);
        (self.column_min..=self.column_max).contains(&column) && (self.row_min..=self.row_max).contains(&row)
    }
}

impl Grid {
    pub(crate) fn new(world_w: f32, world_h: f32, radius: f32) -> Self {
        let cell_size = radius as f64;
        let columns = ((world_w as f64 / cell_size).ceil() as usize).max(1);
        let rows = ((world_h as f64 / cell_size).ceil() as usize).max(1);
        Grid { cell_size, columns, rows, radius: radius as f64, cells: vec![Vec::new(); columns * rows] }
    }

    pub(crate) fn columns(&self) -> usize {
        self.columns
    }

    fn column_of(&self, x: f64) -> usize {
        ((x / self.cell_size).floor().max(0.0) as usize).min(self.columns - 1)
    }

    fn row_of(&self, z: f64) -> usize {
        ((z / self.cell_size).floor().max(0.0) as usize).min(self.rows - 1)
    }

    pub(crate) fn cell_of(&self, position: Position) -> u32 {
        (self.row_of(position.z as f64) * self.columns + self.column_of(position.x as f64)) as u32
    }

    /// The cells that can hold a player within the radius of `position`. The square is widened by a
    /// hair so that rounding in the division can never leave out a cell holding a visible player:
    /// extra candidates cost a distance check, a missing one would break the protocol.
    pub(crate) fn block_around(&self, position: Position) -> CellBlock {
        let reach = self.radius * (1.0 + 1e-9) + 1e-6;
        let (x, z) = (position.x as f64, position.z as f64);
        CellBlock {
            column_min: self.column_of(x - reach),
            column_max: self.column_of(x + reach),
            row_min: self.row_of(z - reach),
            row_max: self.row_of(z + reach),
        }
    }

    /// Calls `visit` with every entry in the cells of `block`.
    pub(crate) fn for_each_in(&self, block: CellBlock, mut visit: impl FnMut(u32, u32)) {
        for row in block.row_min..=block.row_max {
            for column in block.column_min..=block.column_max {
                let cell = row * self.columns + column;
                for &entry in &self.cells[cell] {
                    visit(entry, cell as u32);
                }
            }
        }
    }

    /// Adds `entry` to `cell` and returns where it went.
    pub(crate) fn insert(&mut self, cell: u32, entry: u32) -> GridSlot {
        let members = &mut self.cells[cell as usize];
        members.push(entry);
        GridSlot { cell, index: (members.len() - 1) as u32 }
    }

    /// Removes the entry at `slot`. Returns the entry that was moved into its place, if any, so the
    /// caller can update that entry's stored index to `slot.index`.
    pub(crate) fn remove(&mut self, slot: GridSlot) -> Option<u32> {
        let members = &mut self.cells[slot.cell as usize];
        members.swap_remove(slot.index as usize);
        members.get(slot.index as usize).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_is_inclusive_and_ignores_height() {
        let a = Position::new(0.0, 0.0, 0.0);
        assert!(a.within(Position::new(30.0, 9999.0, 40.0), 50.0));
        assert!(!a.within(Position::new(30.0, 0.0, 40.001), 50.0));
    }

    #[test]
    fn cells_clamp_to_the_world() {
        let grid = Grid::new(1000.0, 500.0, 50.0);
        assert_eq!(grid.columns, 20);
        assert_eq!(grid.rows, 10);
        assert_eq!(grid.cell_of(Position::new(0.0, 0.0, 0.0)), 0);
        assert_eq!(grid.cell_of(Position::new(999.99, 0.0, 499.99)), 199);
        let block = grid.block_around(Position::new(0.0, 0.0, 0.0));
        assert_eq!((block.column_min, block.column_max, block.row_min, block.row_max), (0, 1, 0, 1));
        let block = grid.block_around(Position::new(75.0, 0.0, 75.0));
        assert_eq!((block.column_min, block.column_max, block.row_min, block.row_max), (0, 2, 0, 2));
    }

    #[test]
    fn remove_reports_the_entry_that_took_the_place() {
        let mut grid = Grid::new(100.0, 100.0, 50.0);
        let a = grid.insert(0, 10);
        grid.insert(0, 11);
        grid.insert(0, 12);
        assert_eq!(grid.remove(a), Some(12));
        let mut seen = Vec::new();
        grid.for_each_in(grid.block_around(Position::default()), |entry, _| seen.push(entry));
        assert_eq!(seen, [12, 11]);
    }
}
