//! MinAtar Asterix (`minatar/environments/asterix.py`): the player moves in four directions while enemies and
//! gold enter rows 1 to 8 from the sides; +1 per gold picked up, game over on touching an enemy. Spawning and
//! movement speed up every 100 frames (difficulty ramping).

use super::grid::Grid;
use super::{Action, Game, MAX_CHANNELS, Mt19937, off_board, step_x};

/// Channels: player, enemy, trail (an entity's previous cell), gold.
const PLAYER: usize = 0;
const ENEMY: usize = 1;
const TRAIL: usize = 2;
const GOLD: usize = 3;
/// Frames between difficulty steps.
const RAMP_INTERVAL: i32 = 100;
const INIT_SPAWN_SPEED: i32 = 10;
const INIT_MOVE_INTERVAL: i32 = 5;
/// Entity slots; slot `i` lives on row `i + 1`.
const SLOTS: usize = 8;

/// An enemy or a piece of gold.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entity {
    x: i32,
    y: i32,
    /// Moving right.
    right: bool,
    gold: bool,
}

/// Asterix's state.
#[derive(Debug, Clone, Default)]
pub struct Asterix {
    player_x: i32,
    player_y: i32,
    entities: [Option<Entity>; SLOTS],
    spawn_speed: i32,
    spawn_timer: i32,
    move_speed: i32,
    move_timer: i32,
    ramp_timer: i32,
    ramp_index: i32,
    terminal: bool,
}

impl Asterix {
    /// Draws a side and a kind, then a free slot (nothing when all are taken, after the first two draws).
    fn spawn_entity(&mut self, rng: &mut Mt19937) {
        let right = rng.rand() < 1.0 / 2.0;
        let gold = rng.rand() < 1.0 / 3.0;
        let free = self.entities.iter().filter(|e| e.is_none()).count();
        if free == 0 {
            return;
        }
        let pick = rng.randint(0, free as i64) as usize;
        if let Some(slot) = (0..SLOTS).filter(|&i| self.entities[i].is_none()).nth(pick) {
            let x = if right { 0 } else { 9 };
            self.entities[slot] = Some(Entity { x, y: slot as i32 + 1, right, gold });
        }
    }

    /// Resolves contact between the entity in `slot` and the player: gold is collected, an enemy ends the game.
    fn touch(&mut self, slot: usize, reward: &mut i32) {
        if let Some(e) = self.entities[slot]
            && (e.x, e.y) == (self.player_x, self.player_y)
        {
            if e.gold {
                self.entities[slot] = None;
                *reward += 1;
            } else {
                self.terminal = true;
            }
        }
    }
}

impl Game for Asterix {
    const ID: &'static str = "MinAtar/Asterix-v1";
    const CHANNELS: usize = 4;
    const ACTIONS: &'static [Action] = &[Action::Noop, Action::Left, Action::Up, Action::Right, Action::Down];

    fn reset(&mut self, _rng: &mut Mt19937) {
        *self = Asterix {
            player_x: 5,
            player_y: 5,
            entities: [None; SLOTS],
            spawn_speed: INIT_SPAWN_SPEED,
            spawn_timer: INIT_SPAWN_SPEED,
            move_speed: INIT_MOVE_INTERVAL,
            move_timer: INIT_MOVE_INTERVAL,
            ramp_timer: RAMP_INTERVAL,
            ramp_index: 0,
            terminal: false,
        };
    }

    fn act(&mut self, action: Action, rng: &mut Mt19937) -> (i32, bool) {
        if self.terminal {
            return (0, true);
        }
        let mut reward = 0;
        if self.spawn_timer == 0 {
            self.spawn_entity(rng);
            self.spawn_timer = self.spawn_speed;
        }
        match action {
            Action::Left => self.player_x = (self.player_x - 1).max(0),
            Action::Right => self.player_x = (self.player_x + 1).min(9),
            Action::Up => self.player_y = (self.player_y - 1).max(1),
            Action::Down => self.player_y = (self.player_y + 1).min(8),
            _ => {}
        }

        for slot in 0..SLOTS {
            self.touch(slot, &mut reward);
        }
        if self.move_timer == 0 {
            self.move_timer = self.move_speed;
            for slot in 0..SLOTS {
                if let Some(e) = &mut self.entities[slot] {
                    e.x = step_x(e.x, e.right);
                    if off_board(e.x) {
                        self.entities[slot] = None;
                    }
                    self.touch(slot, &mut reward);
                }
            }
        }

        self.spawn_timer -= 1;
        self.move_timer -= 1;
        if self.spawn_speed > 1 || self.move_speed > 1 {
            if self.ramp_timer >= 0 {
                self.ramp_timer -= 1;
            } else {
                if self.move_speed > 1 && self.ramp_index % 2 == 1 {
                    self.move_speed -= 1;
                }
                if self.spawn_speed > 1 {
                    self.spawn_speed -= 1;
                }
                self.ramp_index += 1;
                self.ramp_timer = RAMP_INTERVAL;
            }
        }
        (reward, self.terminal)
    }

    fn channels(&self, out: &mut [Grid; MAX_CHANNELS]) {
        out[PLAYER].set(self.player_y, self.player_x);
        for e in self.entities.iter().flatten() {
            out[if e.gold { GOLD } else { ENEMY }].set(e.y, e.x);
            // The trail cell is behind the entity; off the board, none.
            out[TRAIL].set(e.y, step_x(e.x, !e.right));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> Asterix {
        let mut game = Asterix::default();
        game.reset(&mut Mt19937::new(0));
        game
    }

    #[test]
    fn the_first_spawn_comes_after_ten_frames() {
        let mut rng = Mt19937::new(1);
        let mut game = started();
        for _ in 0..10 {
            game.act(Action::Noop, &mut rng);
        }
        assert!(game.entities.iter().all(Option::is_none));
        game.act(Action::Noop, &mut rng);
        assert_eq!(game.entities.iter().flatten().count(), 1);
    }

    #[test]
    fn gold_scores_and_enemies_end_the_game() {
        let mut rng = Mt19937::new(0);
        let mut game = started();
        game.entities[3] = Some(Entity { x: 6, y: 4, right: false, gold: true });
        game.entities[4] = Some(Entity { x: 6, y: 5, right: false, gold: false });
        assert_eq!(game.act(Action::Up, &mut rng), (0, false));
        assert_eq!(game.player_y, 4);
        assert_eq!(game.act(Action::Right, &mut rng), (1, false));
        assert!(game.entities[3].is_none());
        assert_eq!(game.act(Action::Down, &mut rng), (0, true));
        assert_eq!(game.act(Action::Down, &mut rng), (0, true));
    }

    #[test]
    fn difficulty_ramps_every_hundred_frames() {
        let mut rng = Mt19937::new(0);
        let mut game = started();
        game.player_y = 1;
        let mut ramps = 0;
        for _ in 0..102 {
            // Keep the board clear so nothing ends the game.
            game.entities = [None; SLOTS];
            game.act(Action::Noop, &mut rng);
            ramps = game.ramp_index;
        }
        assert_eq!((ramps, game.spawn_speed, game.move_speed), (1, 9, 5));
    }
}
