"""A small env with MultiDiscrete actions that gymnasium does not know: set two dials to the targets shown.

Observation ``[target 0 / 2, target 1]`` (Box in [0, 1]), actions MultiDiscrete([3, 2]) (one setting per dial),
reward +1 per dial on its target, new targets from the env's seeded generator every step, truncated after 10
steps. A random policy earns 5/6 per step; the optimal one 2. The env keeps every action it received, for tests.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

NVEC = (3, 2)


class Dials(gym.Env[np.ndarray, np.ndarray]):
    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.MultiDiscrete(NVEC)
        self.targets = np.zeros(2, np.int64)
        self.received: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        self.targets = np.array([self.np_random.integers(n) for n in NVEC], np.int64)
        return (self.targets / (np.array(NVEC) - 1)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self.action_space.contains(action), f"{action!r} is not in {self.action_space}"
        self.received.append(np.array(action))
        reward = float(np.sum(np.asarray(action) == self.targets))
        return self._obs(), reward, False, False, {}


def make() -> gym.Env:
    """The dials with their 10-step time limit."""
    return gym.wrappers.TimeLimit(Dials(), max_episode_steps=10)
