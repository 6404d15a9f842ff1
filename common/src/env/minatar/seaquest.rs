//! MinAtar Seaquest (`minatar/environments/seaquest.py`): a two-cell submarine shoots enemy fish and subs
//! (which shoot back) entering rows 1 to 8 from the sides, picks up divers and must surface before its oxygen
//! runs out; +1 per enemy, and on surfacing with six divers a bonus of the oxygen left (in tenths). Game over on
//! contact with an enemy or a bullet, when the oxygen is gone, or when surfacing without a diver. Every surfacing
//! speeds the enemies up (difficulty ramping).
//!
//! The package keeps its objects in Python lists, iterates some of them backwards while removing from them, and
//! removes by value (`list.remove`, the first equal element). Those semantics decide which objects survive when
//! two are equal, so they are reproduced exactly by [`remove_first`] and the index-driven loops of `act`. Lists
//! are `Vec`s whose capacity is reserved once, so a step does not allocate.

use super::grid::Grid;
use super::{Action, Game, MAX_CHANNELS, Mt19937, off_board, step_x};

/// Channels, in the package's order.
const SUB_FRONT: usize = 0;
const SUB_BACK: usize = 1;
const FRIENDLY_BULLET: usize = 2;
const TRAIL: usize = 3;
const ENEMY_BULLET: usize = 4;
const ENEMY_FISH: usize = 5;
const ENEMY_SUB: usize = 6;
const OXYGEN_GAUGE: usize = 7;
const DIVER_GAUGE: usize = 8;
const DIVER: usize = 9;

const MAX_OXYGEN: i32 = 200;
const INIT_SPAWN_SPEED: i32 = 20;
const DIVER_SPAWN_SPEED: i32 = 30;
const INIT_MOVE_INTERVAL: i32 = 5;
const SHOT_COOL_DOWN: i32 = 5;
const ENEMY_SHOT_INTERVAL: i32 = 10;
const DIVER_MOVE_INTERVAL: i32 = 5;
/// Divers the submarine can carry.
const MAX_DIVERS: i32 = 6;
/// Capacity reserved for each list: more than the game can hold at once (an enemy lives at most 60 frames).
const CAPACITY: usize = 128;

/// A bullet `[x, y, right]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bullet {
    x: i32,
    y: i32,
    right: bool,
}

/// A fish or a diver `[x, y, right, move_timer]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Swimmer {
    x: i32,
    y: i32,
    right: bool,
    move_timer: i32,
}

/// An enemy sub `[x, y, right, move_timer, shot_timer]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct EnemySub {
    x: i32,
    y: i32,
    right: bool,
    move_timer: i32,
    shot_timer: i32,
}

/// Seaquest's state.
#[derive(Debug, Clone, Default)]
pub struct Seaquest {
    oxygen: i32,
    /// Divers on board; -1 and below after a six-diver surfacing (the package subtracts one after emptying).
    diver_count: i32,
    sub_x: i32,
    sub_y: i32,
    /// Facing right.
    sub_or: bool,
    f_bullets: Vec<Bullet>,
    e_bullets: Vec<Bullet>,
    e_fish: Vec<Swimmer>,
    e_subs: Vec<EnemySub>,
    divers: Vec<Swimmer>,
    e_spawn_speed: i32,
    e_spawn_timer: i32,
    d_spawn_timer: i32,
    move_speed: i32,
    ramp_index: i32,
    shot_timer: i32,
    /// At the surface since the last dive.
    surface: bool,
    terminal: bool,
}

/// Python's `list.remove(value)`: removes the first element equal to `value`; returns its index.
fn remove_first<T: PartialEq>(list: &mut Vec<T>, value: &T) -> Option<usize> {
    let i = list.iter().position(|x| x == value)?;
    list.remove(i);
    Some(i)
}

/// Where the object at `at` is after removing the element at `removed`: gone (`None`) or shifted.
fn after_removal(at: usize, removed: Option<usize>) -> Option<usize> {
    match removed {
        Some(r) if r == at => None,
        Some(r) if r < at => Some(at - 1),
        _ => Some(at),
    }
}

/// Python's reverse iteration over a list that shrinks meanwhile: the index of the next element, if any.
fn next_reversed(index: &mut isize, len: usize) -> Option<usize> {
    let i = *index;
    if i >= 0 && (i as usize) < len {
        *index -= 1;
        Some(i as usize)
    } else {
        *index = -1;
        None
    }
}

/// numpy's `a[y, x] = 1` for a column index that may be negative (counted from the right); beyond the board,
/// nothing (the package would raise, which the game never makes it do).
fn set_wrapped(grid: &mut Grid, y: i32, x: i32) {
    grid.set(y, if (-10..0).contains(&x) { x + 10 } else { x });
}

impl Seaquest {
    /// The submarine is on `(x, y)`.
    fn at_sub(&self, x: i32, y: i32) -> bool {
        (x, y) == (self.sub_x, self.sub_y)
    }

    /// Draws a side, a kind and a row; spawns nothing when an enemy in that row moves the other way.
    fn spawn_enemy(&mut self, rng: &mut Mt19937) {
        let right = rng.rand() < 1.0 / 2.0;
        let is_sub = rng.rand() < 1.0 / 3.0;
        let x = if right { 0 } else { 9 };
        let y = rng.randint(1, 9) as i32;
        let blocked = self.e_subs.iter().any(|s| s.y == y && s.right != right)
            || self.e_fish.iter().any(|f| f.y == y && f.right != right);
        if blocked {
            return;
        }
        if is_sub {
            let sub = EnemySub { x, y, right, move_timer: self.move_speed, shot_timer: ENEMY_SHOT_INTERVAL };
            self.e_subs.push(sub);
        } else {
            self.e_fish.push(Swimmer { x, y, right, move_timer: self.move_speed });
        }
    }

    fn spawn_diver(&mut self, rng: &mut Mt19937) {
        let right = rng.rand() < 1.0 / 2.0;
        let x = if right { 0 } else { 9 };
        let y = rng.randint(1, 9) as i32;
        self.divers.push(Swimmer { x, y, right, move_timer: DIVER_MOVE_INTERVAL });
    }

    /// Surfacing with at least one diver (or with a negative count): the bonus, full oxygen, one diver fewer and a
    /// difficulty step.
    fn surface(&mut self) -> i32 {
        self.surface = true;
        let reward = if self.diver_count == MAX_DIVERS {
            self.diver_count = 0;
            (self.oxygen * 10).div_euclid(MAX_OXYGEN)
        } else {
            0
        };
        self.oxygen = MAX_OXYGEN;
        self.diver_count -= 1;
        if self.e_spawn_speed > 1 || self.move_speed > 2 {
            if self.move_speed > 2 && self.ramp_index % 2 == 1 {
                self.move_speed -= 1;
            }
            if self.e_spawn_speed > 1 {
                self.e_spawn_speed -= 1;
            }
            self.ramp_index += 1;
        }
        reward
    }

    fn update_friendly_bullets(&mut self, reward: &mut i32) {
        let mut index = self.f_bullets.len() as isize - 1;
        while let Some(i) = next_reversed(&mut index, self.f_bullets.len()) {
            let b = &mut self.f_bullets[i];
            b.x = step_x(b.x, b.right);
            let bullet = *b;
            if off_board(bullet.x) {
                remove_first(&mut self.f_bullets, &bullet);
                continue;
            }
            if let Some(fish) = self.e_fish.iter().copied().find(|f| (f.x, f.y) == (bullet.x, bullet.y)) {
                remove_first(&mut self.e_fish, &fish);
                remove_first(&mut self.f_bullets, &bullet);
                *reward += 1;
            } else if let Some(sub) = self.e_subs.iter().copied().find(|s| (s.x, s.y) == (bullet.x, bullet.y)) {
                remove_first(&mut self.e_subs, &sub);
                remove_first(&mut self.f_bullets, &bullet);
                *reward += 1;
            }
        }
    }

    fn update_divers(&mut self) {
        let mut index = self.divers.len() as isize - 1;
        while let Some(i) = next_reversed(&mut index, self.divers.len()) {
            let diver = self.divers[i];
            if self.at_sub(diver.x, diver.y) && self.diver_count < MAX_DIVERS {
                remove_first(&mut self.divers, &diver);
                self.diver_count += 1;
            } else if diver.move_timer == 0 {
                let d = &mut self.divers[i];
                d.move_timer = DIVER_MOVE_INTERVAL;
                d.x = step_x(d.x, d.right);
                let moved = *d;
                if off_board(moved.x) {
                    remove_first(&mut self.divers, &moved);
                } else if self.at_sub(moved.x, moved.y) && self.diver_count < MAX_DIVERS {
                    remove_first(&mut self.divers, &moved);
                    self.diver_count += 1;
                }
            } else {
                self.divers[i].move_timer -= 1;
            }
        }
    }

    fn update_enemy_subs(&mut self, reward: &mut i32) {
        let mut index = self.e_subs.len() as isize - 1;
        while let Some(i) = next_reversed(&mut index, self.e_subs.len()) {
            // The loop's object, and where it is in the list (None once removed; the package keeps using it).
            let mut sub = self.e_subs[i];
            let mut at = Some(i);
            if self.at_sub(sub.x, sub.y) {
                self.terminal = true;
            }
            if sub.move_timer == 0 {
                sub.move_timer = self.move_speed;
                sub.x = step_x(sub.x, sub.right);
                self.e_subs[i] = sub;
                if off_board(sub.x) {
                    at = after_removal(i, remove_first(&mut self.e_subs, &sub));
                } else if self.at_sub(sub.x, sub.y) {
                    self.terminal = true;
                } else if let Some(b) = self.f_bullets.iter().copied().find(|b| (b.x, b.y) == (sub.x, sub.y)) {
                    at = after_removal(i, remove_first(&mut self.e_subs, &sub));
                    remove_first(&mut self.f_bullets, &b);
                    *reward += 1;
                }
            } else {
                sub.move_timer -= 1;
            }
            if sub.shot_timer == 0 {
                sub.shot_timer = ENEMY_SHOT_INTERVAL;
                self.e_bullets.push(Bullet { x: sub.x, y: sub.y, right: sub.right });
            } else {
                sub.shot_timer -= 1;
            }
            if let Some(at) = at {
                self.e_subs[at] = sub;
            }
        }
    }

    fn update_enemy_bullets(&mut self) {
        let mut index = self.e_bullets.len() as isize - 1;
        while let Some(i) = next_reversed(&mut index, self.e_bullets.len()) {
            if self.at_sub(self.e_bullets[i].x, self.e_bullets[i].y) {
                self.terminal = true;
            }
            let b = &mut self.e_bullets[i];
            b.x = step_x(b.x, b.right);
            let bullet = *b;
            if off_board(bullet.x) {
                remove_first(&mut self.e_bullets, &bullet);
            } else if self.at_sub(bullet.x, bullet.y) {
                self.terminal = true;
            }
        }
    }

    fn update_enemy_fish(&mut self, reward: &mut i32) {
        let mut index = self.e_fish.len() as isize - 1;
        while let Some(i) = next_reversed(&mut index, self.e_fish.len()) {
            let fish = self.e_fish[i];
            if self.at_sub(fish.x, fish.y) {
                self.terminal = true;
            }
            if fish.move_timer != 0 {
                self.e_fish[i].move_timer -= 1;
                continue;
            }
            let f = &mut self.e_fish[i];
            f.move_timer = self.move_speed;
            f.x = step_x(f.x, f.right);
            let fish = *f;
            if off_board(fish.x) {
                remove_first(&mut self.e_fish, &fish);
            } else if self.at_sub(fish.x, fish.y) {
                self.terminal = true;
            } else if let Some(b) = self.f_bullets.iter().copied().find(|b| (b.x, b.y) == (fish.x, fish.y)) {
                remove_first(&mut self.e_fish, &fish);
                remove_first(&mut self.f_bullets, &b);
                *reward += 1;
            }
        }
    }
}

impl Game for Seaquest {
    const ID: &'static str = "MinAtar/Seaquest-v1";
    const CHANNELS: usize = 10;
    const ACTIONS: &'static [Action] =
        &[Action::Noop, Action::Left, Action::Up, Action::Right, Action::Down, Action::Fire];

    fn reset(&mut self, _rng: &mut Mt19937) {
        for list in [&mut self.f_bullets, &mut self.e_bullets] {
            list.clear();
            list.reserve(CAPACITY);
        }
        for list in [&mut self.e_fish, &mut self.divers] {
            list.clear();
            list.reserve(CAPACITY);
        }
        self.e_subs.clear();
        self.e_subs.reserve(CAPACITY);
        self.oxygen = MAX_OXYGEN;
        self.diver_count = 0;
        self.sub_x = 5;
        self.sub_y = 0;
        self.sub_or = false;
        self.e_spawn_speed = INIT_SPAWN_SPEED;
        self.e_spawn_timer = INIT_SPAWN_SPEED;
        self.d_spawn_timer = DIVER_SPAWN_SPEED;
        self.move_speed = INIT_MOVE_INTERVAL;
        self.ramp_index = 0;
        self.shot_timer = 0;
        self.surface = true;
        self.terminal = false;
    }

    fn act(&mut self, action: Action, rng: &mut Mt19937) -> (i32, bool) {
        if self.terminal {
            return (0, true);
        }
        let mut reward = 0;
        if self.e_spawn_timer == 0 {
            self.spawn_enemy(rng);
            self.e_spawn_timer = self.e_spawn_speed;
        }
        if self.d_spawn_timer == 0 {
            self.spawn_diver(rng);
            self.d_spawn_timer = DIVER_SPAWN_SPEED;
        }
        match action {
            Action::Fire if self.shot_timer == 0 => {
                self.f_bullets.push(Bullet { x: self.sub_x, y: self.sub_y, right: self.sub_or });
                self.shot_timer = SHOT_COOL_DOWN;
            }
            Action::Left => {
                self.sub_x = (self.sub_x - 1).max(0);
                self.sub_or = false;
            }
            Action::Right => {
                self.sub_x = (self.sub_x + 1).min(9);
                self.sub_or = true;
            }
            Action::Up => self.sub_y = (self.sub_y - 1).max(0),
            Action::Down => self.sub_y = (self.sub_y + 1).min(8),
            _ => {}
        }

        self.update_friendly_bullets(&mut reward);
        self.update_divers();
        self.update_enemy_subs(&mut reward);
        self.update_enemy_bullets();
        self.update_enemy_fish(&mut reward);

        for timer in [&mut self.e_spawn_timer, &mut self.d_spawn_timer, &mut self.shot_timer] {
            if *timer > 0 {
                *timer -= 1;
            }
        }
        if self.oxygen <= 0 {
            self.terminal = true;
        }
        if self.sub_y > 0 {
            self.oxygen -= 1;
            self.surface = false;
        } else if !self.surface {
            if self.diver_count == 0 {
                self.terminal = true;
            } else {
                reward += self.surface();
            }
        }
        (reward, self.terminal)
    }

    fn channels(&self, out: &mut [Grid; MAX_CHANNELS]) {
        out[SUB_FRONT].set(self.sub_y, self.sub_x);
        set_wrapped(&mut out[SUB_BACK], self.sub_y, step_x(self.sub_x, !self.sub_or));
        let oxygen_cells = (self.oxygen.max(0) * 10).div_euclid(MAX_OXYGEN).clamp(0, 10) as usize;
        out[OXYGEN_GAUGE] = Grid::rect(9..10, 0..oxygen_cells);
        // The slice `9 - diver_count : 9`: empty for a negative count.
        let first = 9 - self.diver_count;
        if (0..9).contains(&first) {
            out[DIVER_GAUGE] = Grid::rect(9..10, first as usize..9);
        }
        for b in &self.f_bullets {
            set_wrapped(&mut out[FRIENDLY_BULLET], b.y, b.x);
        }
        for b in &self.e_bullets {
            set_wrapped(&mut out[ENEMY_BULLET], b.y, b.x);
        }
        let trail = |out: &mut [Grid; MAX_CHANNELS], y: i32, x: i32, right: bool| {
            // Only on the board, as the package checks.
            out[TRAIL].set(y, step_x(x, !right));
        };
        for f in &self.e_fish {
            set_wrapped(&mut out[ENEMY_FISH], f.y, f.x);
            trail(out, f.y, f.x, f.right);
        }
        for s in &self.e_subs {
            set_wrapped(&mut out[ENEMY_SUB], s.y, s.x);
            trail(out, s.y, s.x, s.right);
        }
        for d in &self.divers {
            set_wrapped(&mut out[DIVER], d.y, d.x);
            trail(out, d.y, d.x, d.right);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> (Seaquest, Mt19937) {
        let mut rng = Mt19937::new(0);
        let mut game = Seaquest::default();
        game.reset(&mut rng);
        (game, rng)
    }

    #[test]
    fn python_list_removal_and_reverse_iteration() {
        let mut v = vec![1, 2, 1, 3];
        assert_eq!(remove_first(&mut v, &1), Some(0));
        assert_eq!(v, [2, 1, 3]);
        assert_eq!(remove_first(&mut v, &7), None);
        // Removing an earlier equal element revisits the current one, as Python's reversed() does.
        let (mut v, mut seen) = (vec![5, 5], Vec::new());
        let mut index = v.len() as isize - 1;
        while let Some(i) = next_reversed(&mut index, v.len()) {
            seen.push(i);
            if seen.len() == 1 {
                remove_first(&mut v, &5);
            }
        }
        assert_eq!(seen, [1, 0]);
        assert_eq!(
            (after_removal(3, Some(3)), after_removal(3, Some(1)), after_removal(3, None)),
            (None, Some(2), Some(3))
        );
    }

    #[test]
    fn surfacing_without_divers_ends_the_game() {
        let (mut game, mut rng) = started();
        assert_eq!(game.act(Action::Down, &mut rng), (0, false));
        assert_eq!(game.oxygen, 199);
        assert_eq!(game.act(Action::Up, &mut rng), (0, true));
    }

    #[test]
    fn six_divers_give_the_oxygen_bonus_and_a_negative_count() {
        let (mut game, mut rng) = started();
        game.act(Action::Down, &mut rng);
        game.diver_count = 6;
        game.oxygen = 150;
        assert_eq!(game.act(Action::Up, &mut rng), (7, false));
        assert_eq!((game.diver_count, game.oxygen, game.ramp_index, game.e_spawn_speed), (-1, 200, 1, 19));
        // A negative count surfaces without ending the game.
        game.act(Action::Down, &mut rng);
        assert_eq!(game.act(Action::Up, &mut rng), (0, false));
        assert_eq!(game.diver_count, -2);
    }

    #[test]
    fn a_bullet_hits_a_fish() {
        let (mut game, mut rng) = started();
        game.sub_y = 3;
        game.surface = false;
        game.e_fish.push(Swimmer { x: 8, y: 3, right: false, move_timer: 100 });
        game.act(Action::Right, &mut rng);
        assert_eq!(game.act(Action::Fire, &mut rng), (0, false));
        assert_eq!(game.act(Action::Noop, &mut rng), (1, false));
        assert!(game.e_fish.is_empty() && game.f_bullets.is_empty());
    }
}
