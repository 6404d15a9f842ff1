"""A continuous-control env that gymnasium does not know, for the bring-your-own-env tests: move a point to a target.

Observation ``[position, target]`` (Box in [-1, 1]), action Box(-1, 1, (1,)) moving the point by ``0.25 * action``,
reward ``-|position - target|`` per step, truncated after 20 steps (never terminated). The target is drawn from
the env's seeded generator at each reset. Standing still returns about -10 on average; a policy that heads for the
target at full speed returns about -1.2.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

STEP = 0.25


class Reach(gym.Env[np.ndarray, np.ndarray]):
    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.position, self.target = 0.0, 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.position, self.target], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position, self.target = 0.0, float(self.np_random.uniform(-1.0, 1.0))
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = float(np.clip(np.asarray(action, np.float64).reshape(-1)[0], -1.0, 1.0))
        self.position = float(np.clip(self.position + STEP * move, -1.0, 1.0))
        return self._obs(), -abs(self.position - self.target), False, False, {}


def make() -> gym.Env:
    """The reach task with its 20-step time limit."""
    return gym.wrappers.TimeLimit(Reach(), max_episode_steps=20)
