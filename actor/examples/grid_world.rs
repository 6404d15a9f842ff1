//! A user's own Rust environment run as an actor against a stock learner, without forking proxima.
//!
//! `GridWorld-v0`: a 5 x 5 grid, start in one corner, goal in the opposite one; observation `[x / 4, y / 4]`, or
//! with `--pixels` a 5 x 5 x 1 uint8 image with the walker's cell at 255 (row y, column x); actions Discrete(4)
//! (up, down, left, right; walls stop the walker), reward -0.01 per step and +1 on reaching the goal (terminated),
//! truncated after 50 steps. The optimal return is 1 - 8 * 0.01 = 0.92.
//!
//! ```sh
//! learner serve --config grid_world.toml   # [env] id = "GridWorld-v0", observation_space = "Box(0, 1, (2,))"
//!                                          #       (with --pixels: "Box(0, 255, (5, 5, 1), uint8)"),
//!                                          #       action_space = "Discrete(4)"
//! cargo run --release -p actor --example grid_world -- --learner http://127.0.0.1:50051
//! ```

use actor::client::{ActorOptions, run_env};
use clap::Parser;
use common::env::{Dtype, Env, EnvFactory, Space, TimeLimit, Transition};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The id the learner's `[env]` must name.
const ID: &str = "GridWorld-v0";
const SIZE: i32 = 5;

/// The walker's cell, and how it is seen.
struct GridWorld {
    x: i32,
    y: i32,
    /// An image of the grid instead of the coordinates.
    pixels: bool,
}

impl GridWorld {
    fn observe(&self, obs: &mut [f32]) {
        if self.pixels {
            obs.fill(0.0);
            obs[(self.y * SIZE + self.x) as usize] = 255.0;
        } else {
            let last = (SIZE - 1) as f32;
            obs[0] = self.x as f32 / last;
            obs[1] = self.y as f32 / last;
        }
    }
}

impl Env for GridWorld {
    fn id(&self) -> &'static str {
        ID
    }

    fn observation_space(&self) -> Space {
        let side = SIZE as usize;
        if self.pixels {
            Space::shaped(vec![0.0], vec![255.0], vec![side, side, 1], Dtype::Uint8)
                .unwrap_or_else(|e| unreachable!("a valid image space: {e}"))
        } else {
            Space::vector(vec![0.0; 2], vec![1.0; 2])
        }
    }

    fn action_space(&self) -> Space {
        Space::Discrete { n: 4 }
    }

    fn reset(&mut self, _rng: &mut ChaCha8Rng, obs: &mut [f32]) {
        (self.x, self.y) = (0, 0);
        self.observe(obs);
    }

    fn step(&mut self, action: &[f32], obs: &mut [f32]) -> Transition {
        let (dx, dy) = match action.first().map(|a| *a as u8) {
            Some(0) => (0, 1),
            Some(1) => (0, -1),
            Some(2) => (-1, 0),
            _ => (1, 0),
        };
        self.x = (self.x + dx).clamp(0, SIZE - 1);
        self.y = (self.y + dy).clamp(0, SIZE - 1);
        self.observe(obs);
        let done = self.x == SIZE - 1 && self.y == SIZE - 1;
        Transition { reward: if done { 0.99 } else { -0.01 }, terminated: done, truncated: false }
    }
}

/// The actor's usual flags (`--learner`, `--num-envs`, `--token`, ...); `--env` is always `GridWorld-v0`.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: ActorOptions,
    /// Observe a 5 x 5 x 1 uint8 image of the grid instead of the coordinates.
    #[arg(long)]
    pixels: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (mut opts, pixels) = (cli.settings, cli.pixels);
    opts.env = ID.into();
    let factory: EnvFactory = Arc::new(move || Ok(TimeLimit::custom(GridWorld { x: 0, y: 0, pixels }, 50)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(common::shutdown::shut_down_on_signals(move || token.cancel()));
        run_env(opts, factory, shutdown).await
    })?;
    Ok(())
}
