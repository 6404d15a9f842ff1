//! MinAtar Freeway (`minatar/environments/freeway.py`): a chicken in column 4 crosses eight lanes of cars that
//! wrap around the screen; +1 per crossing (which redraws the cars' speeds), back to the bottom when hit; the
//! game ends after 2500 frames.

use super::grid::Grid;
use super::{Action, Game, MAX_CHANNELS, Mt19937};

/// Channels: chicken, car, then the trail of a car that moves every 1, 2, 3, 4 or 5 frames.
const CHICKEN: usize = 0;
const CAR: usize = 1;
const SPEED_1: usize = 2;
/// Frames between the chicken's moves.
const PLAYER_SPEED: i32 = 3;
/// Frames before the game ends (it ends on frame `TIME_LIMIT + 1`).
const TIME_LIMIT: i32 = 2500;
/// The chicken's column.
const CHICKEN_X: i32 = 4;
const LANES: usize = 8;

/// A car in lane `y = index + 1`.
#[derive(Debug, Clone, Copy, Default)]
struct Car {
    x: i32,
    /// Frames until the next move.
    timer: i32,
    /// Signed speed: the sign is the direction (right when positive), the magnitude the frames per move.
    speed: i32,
}

/// Freeway's state.
#[derive(Debug, Clone, Default)]
pub struct Freeway {
    cars: [Car; LANES],
    /// The chicken's row.
    pos: i32,
    move_timer: i32,
    terminate_timer: i32,
    terminal: bool,
}

impl Freeway {
    /// New speeds and directions for every car: `randint(1, 6, 8)`, then `sign(rand(8) - 0.5)` (zero, for a draw
    /// of exactly one half, stops nothing: a car of speed 0 moves left every frame, as in the package).
    fn randomize_cars(&mut self, rng: &mut Mt19937) {
        let mut speeds = [0i32; LANES];
        for s in &mut speeds {
            *s = rng.randint(1, 6) as i32;
        }
        for s in &mut speeds {
            let d = rng.rand() - 0.5;
            *s *= if d > 0.0 {
                1
            } else if d < 0.0 {
                -1
            } else {
                0
            };
        }
        for (car, speed) in self.cars.iter_mut().zip(speeds) {
            car.timer = speed.abs();
            car.speed = speed;
        }
    }

    /// Sends the chicken back to the bottom if a car is on its cell.
    fn hit(&mut self, car: usize) {
        if self.cars[car].x == CHICKEN_X && car as i32 + 1 == self.pos {
            self.pos = 9;
        }
    }
}

impl Game for Freeway {
    const ID: &'static str = "MinAtar/Freeway-v1";
    const CHANNELS: usize = 7;
    const ACTIONS: &'static [Action] = &[Action::Noop, Action::Up, Action::Down];

    fn reset(&mut self, rng: &mut Mt19937) {
        self.cars = [Car::default(); LANES];
        self.randomize_cars(rng);
        self.pos = 9;
        self.move_timer = PLAYER_SPEED;
        self.terminate_timer = TIME_LIMIT;
        self.terminal = false;
    }

    fn act(&mut self, action: Action, rng: &mut Mt19937) -> (i32, bool) {
        if self.terminal {
            return (0, true);
        }
        let mut reward = 0;
        if action == Action::Up && self.move_timer == 0 {
            self.move_timer = PLAYER_SPEED;
            self.pos = (self.pos - 1).max(0);
        } else if action == Action::Down && self.move_timer == 0 {
            self.move_timer = PLAYER_SPEED;
            self.pos = (self.pos + 1).min(9);
        }
        if self.pos == 0 {
            reward += 1;
            self.randomize_cars(rng);
            self.pos = 9;
        }
        for i in 0..LANES {
            self.hit(i);
            let car = &mut self.cars[i];
            if car.timer == 0 {
                car.timer = car.speed.abs();
                car.x += if car.speed > 0 { 1 } else { -1 };
                if car.x < 0 {
                    car.x = 9;
                } else if car.x > 9 {
                    car.x = 0;
                }
                self.hit(i);
            } else {
                car.timer -= 1;
            }
        }
        if self.move_timer > 0 {
            self.move_timer -= 1;
        }
        self.terminate_timer -= 1;
        if self.terminate_timer < 0 {
            self.terminal = true;
        }
        (reward, self.terminal)
    }

    fn channels(&self, out: &mut [Grid; MAX_CHANNELS]) {
        out[CHICKEN].set(self.pos, CHICKEN_X);
        // A speed-0 car (see `randomize_cars`) keeps the previous car's trail channel, as the package's loop
        // variable does; the first car falls back to speed 1's (the package raises there).
        let mut trail = SPEED_1;
        for (i, car) in self.cars.iter().enumerate() {
            let y = i as i32 + 1;
            out[CAR].set(y, car.x);
            let back_x = match car.x + if car.speed > 0 { -1 } else { 1 } {
                x if x < 0 => 9,
                x if x > 9 => 0,
                x => x,
            };
            if (1..=5).contains(&car.speed.abs()) {
                trail = SPEED_1 + car.speed.unsigned_abs() as usize - 1;
            }
            out[trail].set(y, back_x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(seed: u64) -> (Freeway, Mt19937) {
        let mut rng = Mt19937::new(seed);
        let mut game = Freeway::default();
        game.reset(&mut rng);
        (game, rng)
    }

    #[test]
    fn reset_draws_speeds_and_directions() {
        let (game, _) = started(3);
        for car in game.cars {
            assert_eq!(car.x, 0);
            assert!((1..=5).contains(&car.speed.abs()) && car.timer == car.speed.abs(), "{car:?}");
        }
        assert_eq!((game.pos, game.move_timer, game.terminate_timer), (9, 3, 2500));
    }

    #[test]
    fn the_game_ends_on_frame_2501() {
        let (mut game, mut rng) = started(0);
        for frame in 1..=2501 {
            let (_, over) = game.act(Action::Noop, &mut rng);
            assert_eq!(over, frame == 2501, "frame {frame}");
        }
    }

    #[test]
    fn crossing_scores_and_restarts_at_the_bottom() {
        let (mut game, mut rng) = started(0);
        // Park every car far from the chicken's column.
        for car in &mut game.cars {
            *car = Car { x: 9, timer: 1000, speed: 5 };
        }
        game.pos = 1;
        game.move_timer = 0;
        assert_eq!(game.act(Action::Up, &mut rng), (1, false));
        assert_eq!(game.pos, 9);
        assert!(game.cars.iter().all(|c| c.x == 9 && c.timer == c.speed.abs() - 1));
    }
}
