//! MinAtar Space Invaders (`minatar/environments/space_invaders.py`): a cannon on the bottom row shoots at a block
//! of aliens that sweeps sideways and steps down at the edges, faster as it thins out, and shoots back; +1 per
//! alien, a new (faster) wave when one is cleared, game over when an alien or a bullet reaches the cannon. The
//! game itself draws nothing at random.

use super::grid::Grid;
use super::{Action, Game, MAX_CHANNELS, Mt19937};

/// Channels: cannon, alien, alien moving left, alien moving right, friendly bullet, enemy bullet.
const CANNON: usize = 0;
const ALIEN: usize = 1;
const ALIEN_LEFT: usize = 2;
const ALIEN_RIGHT: usize = 3;
const FRIENDLY_BULLET: usize = 4;
const ENEMY_BULLET: usize = 5;
const SHOT_COOL_DOWN: i32 = 5;
/// Frames between alien moves in the first wave (one fewer per wave down to 6, with ramping).
const ENEMY_MOVE_INTERVAL: i32 = 12;
const ENEMY_SHOT_INTERVAL: i32 = 10;
/// A wave: rows 0 to 3, columns 2 to 7.
const WAVE: Grid = Grid::rect(0..4, 2..8);

/// Space Invaders' state.
#[derive(Debug, Clone, Default)]
pub struct SpaceInvaders {
    /// The cannon's column.
    pos: i32,
    friendly_bullets: Grid,
    enemy_bullets: Grid,
    aliens: Grid,
    /// -1 (left) or 1 (right).
    alien_dir: i32,
    enemy_move_interval: i32,
    alien_move_timer: i32,
    alien_shot_timer: i32,
    ramp_index: i32,
    shot_timer: i32,
    terminal: bool,
}

impl SpaceInvaders {
    /// The alien that shoots: in the nearest column to the cannon that has one (the left one on a tie), the
    /// lowest.
    fn nearest_alien(&self) -> Option<(i32, i32)> {
        let pos = self.pos;
        (0..10)
            .flat_map(|d| [pos - d, pos + d])
            .filter(|x| (0..10).contains(x))
            .find_map(|x| self.aliens.lowest_in_column(x as usize).map(|y| (y as i32, x)))
    }

    /// The cannon is on an alien's or a bullet's cell in `grid`.
    fn cannon_hit(&self, grid: Grid) -> bool {
        grid.get(9, self.pos)
    }
}

impl Game for SpaceInvaders {
    const ID: &'static str = "MinAtar/SpaceInvaders-v1";
    const CHANNELS: usize = 6;
    const ACTIONS: &'static [Action] = &[Action::Noop, Action::Left, Action::Right, Action::Fire];

    fn reset(&mut self, _rng: &mut Mt19937) {
        *self = SpaceInvaders {
            pos: 5,
            friendly_bullets: Grid::default(),
            enemy_bullets: Grid::default(),
            aliens: WAVE,
            alien_dir: -1,
            enemy_move_interval: ENEMY_MOVE_INTERVAL,
            alien_move_timer: ENEMY_MOVE_INTERVAL,
            alien_shot_timer: ENEMY_SHOT_INTERVAL,
            ramp_index: 0,
            shot_timer: 0,
            terminal: false,
        };
    }

    fn act(&mut self, action: Action, _rng: &mut Mt19937) -> (i32, bool) {
        if self.terminal {
            return (0, true);
        }
        if action == Action::Fire && self.shot_timer == 0 {
            self.friendly_bullets.set(9, self.pos);
            self.shot_timer = SHOT_COOL_DOWN;
        } else if action == Action::Left {
            self.pos = (self.pos - 1).max(0);
        } else if action == Action::Right {
            self.pos = (self.pos + 1).min(9);
        }

        // Friendly bullets rise (a bullet leaving the top does not come back), enemy bullets fall.
        self.friendly_bullets = self.friendly_bullets.roll_up().without(Grid::rect(9..10, 0..10));
        self.enemy_bullets = self.enemy_bullets.roll_down().without(Grid::rect(0..1, 0..10));
        if self.cannon_hit(self.enemy_bullets) || self.cannon_hit(self.aliens) {
            self.terminal = true;
        }
        if self.alien_move_timer == 0 {
            self.alien_move_timer = (self.aliens.count() as i32).min(self.enemy_move_interval);
            let at_edge =
                (self.aliens.column_any(0) && self.alien_dir < 0) || (self.aliens.column_any(9) && self.alien_dir > 0);
            if at_edge {
                self.alien_dir = -self.alien_dir;
                if self.aliens.row_any(9) {
                    self.terminal = true;
                }
                self.aliens = self.aliens.roll_down();
            } else {
                self.aliens = self.aliens.roll_columns(self.alien_dir);
            }
            if self.cannon_hit(self.aliens) {
                self.terminal = true;
            }
        }
        if self.alien_shot_timer == 0 {
            self.alien_shot_timer = ENEMY_SHOT_INTERVAL;
            // There is always an alien here: a cleared wave is replaced at the end of the frame.
            if let Some((y, x)) = self.nearest_alien() {
                self.enemy_bullets.set(y, x);
            }
        }

        let kills = self.aliens.and(self.friendly_bullets);
        let reward = kills.count() as i32;
        self.aliens = self.aliens.without(kills);
        self.friendly_bullets = self.friendly_bullets.without(kills);

        if self.shot_timer > 0 {
            self.shot_timer -= 1;
        }
        self.alien_move_timer -= 1;
        self.alien_shot_timer -= 1;
        if self.aliens.is_empty() {
            if self.enemy_move_interval > 6 {
                self.enemy_move_interval -= 1;
                self.ramp_index += 1;
            }
            self.aliens = WAVE;
        }
        (reward, self.terminal)
    }

    fn channels(&self, out: &mut [Grid; MAX_CHANNELS]) {
        out[CANNON].set(9, self.pos);
        out[ALIEN] = self.aliens;
        out[if self.alien_dir < 0 { ALIEN_LEFT } else { ALIEN_RIGHT }] = self.aliens;
        out[FRIENDLY_BULLET] = self.friendly_bullets;
        out[ENEMY_BULLET] = self.enemy_bullets;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> SpaceInvaders {
        let mut game = SpaceInvaders::default();
        game.reset(&mut Mt19937::new(0));
        game
    }

    #[test]
    fn a_shot_kills_an_alien() {
        let mut rng = Mt19937::new(0);
        let mut game = started();
        game.alien_move_timer = 1000;
        game.alien_shot_timer = 1000;
        let mut total = 0;
        game.act(Action::Fire, &mut rng);
        for _ in 0..8 {
            total += game.act(Action::Noop, &mut rng).0;
        }
        assert_eq!(total, 1);
        assert!(!game.aliens.get(3, 5) && game.aliens.count() == 23 && game.friendly_bullets.is_empty());
    }

    #[test]
    fn the_nearest_column_shoots_from_its_lowest_alien() {
        let mut game = started();
        game.pos = 0;
        assert_eq!(game.nearest_alien(), Some((3, 2)));
        game.pos = 9;
        assert_eq!(game.nearest_alien(), Some((3, 7)));
        game.aliens = Grid::default();
        game.aliens.set(1, 3);
        game.aliens.set(4, 7);
        game.pos = 5;
        assert_eq!(game.nearest_alien(), Some((1, 3)), "a tie goes left");
    }

    #[test]
    fn the_wave_steps_down_at_the_edge() {
        let mut rng = Mt19937::new(0);
        let mut game = started();
        game.alien_shot_timer = 1000;
        game.alien_move_timer = 0;
        game.act(Action::Noop, &mut rng);
        assert_eq!(game.aliens, WAVE.roll_columns(-1));
        game.aliens = Grid::rect(0..4, 0..6);
        game.alien_move_timer = 0;
        game.act(Action::Noop, &mut rng);
        assert_eq!((game.aliens, game.alien_dir), (Grid::rect(1..5, 0..6), 1));
    }
}
