//! MinAtar Breakout (`minatar/environments/breakout.py`): a paddle on the bottom row bounces a ball that moves
//! along diagonals into three rows of bricks; +1 per brick, a new wall once all are gone and the ball reaches the
//! bottom row, game over when the paddle misses.

use super::grid::Grid;
use super::{Action, Game, MAX_CHANNELS, Mt19937};

/// Channels: paddle, ball, trail (the ball's previous cell), brick.
const PADDLE: usize = 0;
const BALL: usize = 1;
const TRAIL: usize = 2;
const BRICK: usize = 3;
/// The wall: rows 1 to 3, every column.
const WALL: Grid = Grid::rect(1..4, 0..10);

/// Ball directions: 0 up-left, 1 up-right, 2 down-right, 3 down-left; what each becomes on hitting a side wall,
/// on a vertical bounce (top, brick, paddle under the ball) and on the paddle's corner.
const SIDE_BOUNCE: [u8; 4] = [1, 0, 3, 2];
const VERTICAL_BOUNCE: [u8; 4] = [3, 2, 1, 0];
const CORNER_BOUNCE: [u8; 4] = [2, 3, 0, 1];

/// Breakout's state.
#[derive(Debug, Clone, Default)]
pub struct Breakout {
    ball_x: i32,
    ball_y: i32,
    ball_dir: u8,
    /// The paddle's column.
    pos: i32,
    last_x: i32,
    last_y: i32,
    bricks: Grid,
    /// The ball hit a brick on the previous frame (it passes through a brick met right after another).
    strike: bool,
    terminal: bool,
}

impl Game for Breakout {
    const ID: &'static str = "MinAtar/Breakout-v1";
    const CHANNELS: usize = 4;
    const ACTIONS: &'static [Action] = &[Action::Noop, Action::Left, Action::Right];

    fn reset(&mut self, rng: &mut Mt19937) {
        let (x, dir) = if rng.randint(0, 2) == 0 { (0, 2) } else { (9, 3) };
        *self = Breakout {
            ball_x: x,
            ball_y: 3,
            ball_dir: dir,
            pos: 4,
            last_x: x,
            last_y: 3,
            bricks: WALL,
            strike: false,
            terminal: false,
        };
    }

    fn act(&mut self, action: Action, _rng: &mut Mt19937) -> (i32, bool) {
        if self.terminal {
            return (0, true);
        }
        let mut reward = 0;
        match action {
            Action::Left => self.pos = (self.pos - 1).max(0),
            Action::Right => self.pos = (self.pos + 1).min(9),
            _ => {}
        }

        self.last_x = self.ball_x;
        self.last_y = self.ball_y;
        let dir = usize::from(self.ball_dir);
        let mut new_x = self.ball_x + if dir == 1 || dir == 2 { 1 } else { -1 };
        let mut new_y = self.ball_y + if dir < 2 { -1 } else { 1 };

        let mut strike_toggle = false;
        if !(0..=9).contains(&new_x) {
            new_x = new_x.clamp(0, 9);
            self.ball_dir = SIDE_BOUNCE[usize::from(self.ball_dir)];
        }
        if new_y < 0 {
            new_y = 0;
            self.ball_dir = VERTICAL_BOUNCE[usize::from(self.ball_dir)];
        } else if self.bricks.get(new_y, new_x) {
            strike_toggle = true;
            if !self.strike {
                reward += 1;
                self.strike = true;
                self.bricks.clear(new_y, new_x);
                new_y = self.last_y;
                self.ball_dir = VERTICAL_BOUNCE[usize::from(self.ball_dir)];
            }
        } else if new_y == 9 {
            if self.bricks.is_empty() {
                self.bricks = WALL;
            }
            if self.ball_x == self.pos {
                self.ball_dir = VERTICAL_BOUNCE[usize::from(self.ball_dir)];
                new_y = self.last_y;
            } else if new_x == self.pos {
                self.ball_dir = CORNER_BOUNCE[usize::from(self.ball_dir)];
                new_y = self.last_y;
            } else {
                self.terminal = true;
            }
        }
        if !strike_toggle {
            self.strike = false;
        }
        self.ball_x = new_x;
        self.ball_y = new_y;
        (reward, self.terminal)
    }

    fn channels(&self, out: &mut [Grid; MAX_CHANNELS]) {
        out[BALL].set(self.ball_y, self.ball_x);
        out[PADDLE].set(9, self.pos);
        out[TRAIL].set(self.last_y, self.last_x);
        out[BRICK] = self.bricks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(ball_x: i32, ball_y: i32, ball_dir: u8, pos: i32) -> Breakout {
        Breakout { ball_x, ball_y, ball_dir, pos, last_x: ball_x, last_y: ball_y, bricks: WALL, ..Breakout::default() }
    }

    #[test]
    fn reset_puts_the_ball_in_a_top_corner() {
        let mut rng = Mt19937::new(0);
        let mut seen = [false; 2];
        for _ in 0..20 {
            let mut game = Breakout::default();
            game.reset(&mut rng);
            assert_eq!((game.ball_y, game.pos, game.bricks.count()), (3, 4, 30));
            match (game.ball_x, game.ball_dir) {
                (0, 2) => seen[0] = true,
                (9, 3) => seen[1] = true,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn a_brick_scores_and_bounces_back() {
        let mut rng = Mt19937::new(0);
        let mut game = start(5, 5, 0, 4);
        game.act(Action::Noop, &mut rng);
        assert_eq!((game.ball_x, game.ball_y), (4, 4));
        assert_eq!(game.act(Action::Noop, &mut rng), (1, false));
        assert_eq!((game.ball_x, game.ball_y, game.ball_dir), (3, 4, 3));
        assert!(!game.bricks.get(3, 3) && game.strike);
    }

    #[test]
    fn missing_the_ball_ends_the_game_for_good() {
        let mut rng = Mt19937::new(0);
        let mut game = start(5, 8, 2, 0);
        assert_eq!(game.act(Action::Noop, &mut rng), (0, true));
        assert_eq!(game.ball_y, 9);
        let before = game.clone();
        assert_eq!(game.act(Action::Right, &mut rng), (0, true));
        assert_eq!(game.pos, before.pos);
    }

    #[test]
    fn the_paddle_returns_the_ball() {
        let mut rng = Mt19937::new(0);
        // Straight under the ball: a vertical bounce.
        let mut game = start(5, 8, 2, 5);
        assert_eq!(game.act(Action::Noop, &mut rng), (0, false));
        assert_eq!((game.ball_x, game.ball_y, game.ball_dir), (6, 8, 1));
        // Where the ball lands: back the way it came.
        let mut game = start(5, 8, 2, 5);
        assert_eq!(game.act(Action::Right, &mut rng), (0, false));
        assert_eq!((game.ball_x, game.ball_y, game.ball_dir), (6, 8, 0));
    }
}
