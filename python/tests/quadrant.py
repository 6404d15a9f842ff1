"""A small image env that gymnasium does not know: name the lit quadrant of a 6x6 picture.

Observation ``Box(0, 255, (6, 6, 1), uint8)``: one of the four 3x3 quadrants (0 top left, 1 top right, 2 bottom
left, 3 bottom right), drawn with the env's seeded generator every step, has its 9 pixels at 255; every other pixel
is noise in 0..=63 from the same generator. Actions Discrete(4); reward 1 when the action is the quadrant lit in the
observation it was chosen on, else 0; never terminates, truncated after 16 steps. A random policy earns 4 per
episode, the optimal one 16.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SIZE = 6
HALF = SIZE // 2
#: Brightest value of the noise outside the lit quadrant.
NOISE_MAX = 63


def lit_quadrant(obs: np.ndarray) -> int:
    """The quadrant whose pixels are all 255 in ``obs`` (``[6, 6, 1]``)."""
    return next(q for q in range(4) if np.all(quadrant(obs, q) == 255))


def quadrant(obs: np.ndarray, q: int) -> np.ndarray:
    """The 3x3 pixels of quadrant ``q`` in ``obs`` (a view)."""
    row, col = divmod(q, 2)
    return obs[row * HALF : (row + 1) * HALF, col * HALF : (col + 1) * HALF]


class Quadrant(gym.Env[np.ndarray, int]):
    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 1), np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.lit = 0

    def _obs(self) -> np.ndarray:
        self.lit = int(self.np_random.integers(4))
        obs = self.np_random.integers(0, NOISE_MAX, (SIZE, SIZE, 1), dtype=np.uint8, endpoint=True)
        quadrant(obs, self.lit)[...] = 255
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self.action_space.contains(action), f"{action!r} is not in {self.action_space}"
        reward = 1.0 if int(action) == self.lit else 0.0
        return self._obs(), reward, False, False, {}


def make() -> gym.Env:
    """The quadrant with its 16-step time limit."""
    return gym.wrappers.TimeLimit(Quadrant(), max_episode_steps=16)
