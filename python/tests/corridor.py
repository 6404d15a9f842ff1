"""A small env that gymnasium does not know, for the bring-your-own-env tests: walk right along a corridor.

Observation ``[position in 0..1, 1]`` (Box), actions Discrete(2) (left, right), reward -0.01 per step and +1 on
reaching the right end (terminated), truncated after 40 steps. A random walk arrives in time in about three
episodes of five (mean return 0.33); the optimal return is 1 - 6 * 0.01 = 0.94. (With 10 cells a random walk
arrives in one episode of five, and about one training run of five drifted to always walking left.)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

CELLS = 6


class Corridor(gym.Env[np.ndarray, np.int64]):
    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.cell = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.cell / CELLS, 1.0], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.cell = 0
        return self._obs(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.cell = max(self.cell + (1 if int(action) == 1 else -1), 0)
        done = self.cell >= CELLS
        return self._obs(), (1.0 if done else 0.0) - 0.01, done, False, {}


def make(**kwargs: Any) -> gym.Env:
    """The corridor with its 40-step time limit."""
    return gym.wrappers.TimeLimit(Corridor(**kwargs), max_episode_steps=40)
