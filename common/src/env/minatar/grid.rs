//! A 10x10 board of booleans in one `u128` (bit `y * 10 + x`), with the numpy operations the games use on their
//! 10x10 arrays: indexing, counting, row and column tests, `np.roll` by one cell, and writing observations.

/// Cells per side.
pub(super) const SIDE: usize = 10;
/// Bits of all 100 cells.
const ALL: u128 = (1u128 << (SIDE * SIDE)) - 1;
/// Bits of column 0.
const COLUMN_0: u128 = {
    let mut bits = 0u128;
    let mut y = 0;
    while y < SIDE {
        bits |= 1u128 << (y * SIDE);
        y += 1;
    }
    bits
};
/// Bits of row 0.
const ROW_0: u128 = (1u128 << SIDE) - 1;

/// Bit `i` alone, for each cell `i = y * 10 + x`.
static CELL_BITS: [u128; SIDE * SIDE] = {
    let mut bits = [0u128; SIDE * SIDE];
    let mut i = 0;
    while i < SIDE * SIDE {
        bits[i] = 1u128 << i;
        i += 1;
    }
    bits
};

/// A 10x10 boolean board, row-major.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Grid(u128);

impl Grid {
    /// The cells with `y` in `rows` and `x` in `columns` set (numpy's `a[rows, columns] = 1` on an empty board).
    pub(super) const fn rect(rows: std::ops::Range<usize>, columns: std::ops::Range<usize>) -> Grid {
        let row_bits = ((1u128 << columns.end) - 1) & !((1u128 << columns.start) - 1);
        let mut bits = 0u128;
        let mut y = rows.start;
        while y < rows.end {
            bits |= row_bits << (y * SIDE);
            y += 1;
        }
        Grid(bits)
    }

    /// One cell's bit, or none outside the board: a load from [`CELL_BITS`], fewer instructions than a 128-bit
    /// shift by a variable.
    #[inline]
    fn bit(y: i32, x: i32) -> u128 {
        if (0..SIDE as i32).contains(&y) && (0..SIDE as i32).contains(&x) {
            CELL_BITS[(y * SIDE as i32 + x) as usize]
        } else {
            0
        }
    }

    /// Whether cell `(y, x)` is set (false outside the board).
    #[inline]
    pub(super) fn get(self, y: i32, x: i32) -> bool {
        self.0 & Self::bit(y, x) != 0
    }

    /// Sets cell `(y, x)` (nothing outside the board).
    #[inline]
    pub(super) fn set(&mut self, y: i32, x: i32) {
        self.0 |= Self::bit(y, x);
    }

    /// Clears cell `(y, x)`.
    #[inline]
    pub(super) fn clear(&mut self, y: i32, x: i32) {
        self.0 &= !Self::bit(y, x);
    }

    /// Set cells (`np.count_nonzero`).
    #[inline]
    pub(super) fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// No cell set.
    #[inline]
    pub(super) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Any cell of column `x` set.
    #[inline]
    pub(super) fn column_any(self, x: usize) -> bool {
        self.0 & (COLUMN_0 << x) != 0
    }

    /// Any cell of row `y` set.
    #[inline]
    pub(super) fn row_any(self, y: usize) -> bool {
        self.0 & (ROW_0 << (y * SIDE)) != 0
    }

    /// The largest `y` with `(y, x)` set, if any.
    pub(super) fn lowest_in_column(self, x: usize) -> Option<usize> {
        let column = self.0 & (COLUMN_0 << x);
        (column != 0).then(|| (127 - column.leading_zeros() as usize) / SIDE)
    }

    /// `np.roll(a, 1, axis=0)`: every row moves down one, the last row wraps to the top.
    #[inline]
    pub(super) fn roll_down(self) -> Grid {
        Grid(((self.0 << SIDE) & ALL) | (self.0 >> (SIDE * (SIDE - 1))))
    }

    /// `np.roll(a, -1, axis=0)`: every row moves up one, the first row wraps to the bottom.
    #[inline]
    pub(super) fn roll_up(self) -> Grid {
        Grid((self.0 >> SIDE) | ((self.0 & ROW_0) << (SIDE * (SIDE - 1))))
    }

    /// `np.roll(a, shift, axis=1)` for `shift` of `1` (right) or `-1` (left), wrapping within each row; any other
    /// shift leaves the board as it is.
    #[inline]
    pub(super) fn roll_columns(self, shift: i32) -> Grid {
        let last = COLUMN_0 << (SIDE - 1);
        match shift {
            1 => Grid(((self.0 & !last) << 1) | ((self.0 & last) >> (SIDE - 1))),
            -1 => Grid(((self.0 & !COLUMN_0) >> 1) | ((self.0 & COLUMN_0) << (SIDE - 1))),
            _ => self,
        }
    }

    /// Keeps only the cells also set in `other`.
    #[inline]
    pub(super) fn and(self, other: Grid) -> Grid {
        Grid(self.0 & other.0)
    }

    /// Clears the cells set in `other`.
    #[inline]
    pub(super) fn without(self, other: Grid) -> Grid {
        Grid(self.0 & !other.0)
    }
}

/// Floats zeroed by one `fill` in [`write_observation`]: 1 KiB, below the 2 KiB from which glibc's `memset` uses
/// `rep stosb`. That instruction's start-up made zeroing an observation of 6 to 10 channels (2.4-4 KB) about twice
/// as slow as vector stores on the AMD EPYC VM this was measured on (2,800 bytes: 79 ns, against 37 ns in
/// 1 KiB pieces), a third of a Freeway step.
const ZERO_PIECE: usize = 256;

/// Writes the first `C` of `channels` as a `10 x 10 x C` observation (row-major `[y][x][c]`) of 0.0 and 1.0: zeros,
/// then a 1.0 for each set bit (observations are sparse). Values past `obs.len()` are left out.
#[inline]
pub(super) fn write_observation<const C: usize>(channels: &[Grid], obs: &mut [f32]) {
    for piece in obs.chunks_mut(ZERO_PIECE) {
        piece.fill(0.0);
    }
    for (c, grid) in channels.iter().take(C).enumerate() {
        // Two 64-bit halves: cheaper bit scans than on the u128.
        for (base, mut bits) in [(0, grid.0 as u64), (64, (grid.0 >> 64) as u64)] {
            while bits != 0 {
                let cell = base + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(o) = obs.get_mut(cell * C + c) {
                    *o = 1.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The board as `[y][x]` booleans.
    fn cells(g: Grid) -> [[bool; SIDE]; SIDE] {
        std::array::from_fn(|y| std::array::from_fn(|x| g.get(y as i32, x as i32)))
    }

    /// A board with a few scattered cells on every edge.
    fn sample() -> Grid {
        let mut g = Grid::default();
        for (y, x) in [(0, 0), (0, 9), (9, 0), (9, 9), (3, 4), (5, 9), (7, 0)] {
            g.set(y, x);
        }
        g
    }

    #[test]
    fn rolls_match_numpy_roll() {
        let (g, c) = (sample(), cells(sample()));
        let rolled = |dy: i32, dx: i32| -> [[bool; SIDE]; SIDE] {
            std::array::from_fn(|y| {
                std::array::from_fn(|x| {
                    c[(y as i32 - dy).rem_euclid(10) as usize][(x as i32 - dx).rem_euclid(10) as usize]
                })
            })
        };
        assert_eq!(cells(g.roll_down()), rolled(1, 0));
        assert_eq!(cells(g.roll_up()), rolled(-1, 0));
        assert_eq!(cells(g.roll_columns(1)), rolled(0, 1));
        assert_eq!(cells(g.roll_columns(-1)), rolled(0, -1));
    }

    #[test]
    fn cells_rows_columns_and_rect() {
        let mut g = sample();
        assert_eq!(g.count(), 7);
        assert!(g.column_any(4) && !g.column_any(5) && g.row_any(7) && !g.row_any(8));
        assert_eq!((g.lowest_in_column(0), g.lowest_in_column(4), g.lowest_in_column(1)), (Some(9), Some(3), None));
        g.clear(9, 0);
        assert_eq!(g.lowest_in_column(0), Some(7));
        assert!(!g.get(-1, 0) && !g.get(0, 10));
        g.set(10, 3);
        assert_eq!(g.count(), 6, "outside the board is ignored");
        let r = Grid::rect(1..4, 2..8);
        assert_eq!(r.count(), 18);
        assert!(r.get(1, 2) && r.get(3, 7) && !r.get(0, 2) && !r.get(1, 8) && !r.get(4, 5));
    }

    #[test]
    fn observation_layout_is_y_x_channel() {
        let (mut a, mut b) = (Grid::default(), Grid::default());
        a.set(2, 3);
        b.set(9, 9);
        let mut obs = [0.5f32; 200];
        write_observation::<2>(&[a, b], &mut obs);
        assert_eq!(obs[(2 * 10 + 3) * 2], 1.0);
        assert_eq!(obs[(9 * 10 + 9) * 2 + 1], 1.0);
        assert_eq!(obs.iter().filter(|&&v| v == 1.0).count(), 2);
        assert!(obs.iter().all(|&v| v == 0.0 || v == 1.0));
        // Seaquest's depth: zeroed in several pieces, the last cell of the last channel set.
        let mut channels = [Grid::default(); 10];
        channels[9].set(9, 9);
        let mut obs = [0.5f32; 1000];
        write_observation::<10>(&channels, &mut obs);
        assert_eq!(obs[999], 1.0);
        assert!(obs[..999].iter().all(|&v| v == 0.0));
    }
}
