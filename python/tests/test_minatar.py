"""MinAtar ids: registered on first use and seeded with any 64-bit seed, as the learner hands seeds out."""

from __future__ import annotations

import numpy as np
import pytest

from proxima_actor import wire
from proxima_actor.cli import env_factory

pytest.importorskip("minatar", reason="the minatar package (scripts/test.sh installs it)")


def rollout_of(env_id: str, seed: int, steps: int = 200) -> list[np.ndarray]:
    env = env_factory(env_id, None, None)()
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
        seen.append(obs)
    return seen


def test_minatar_ids_make_their_games_with_wide_seeds() -> None:
    env = env_factory("MinAtar/Breakout-v1", None, None)()
    space = wire.space(env.observation_space)
    assert (list(space.box.shape), space.box.dtype) == ([10, 10, 4], wire.pb.DTYPE_UINT8)
    wide = 2**40 + 5
    same = rollout_of("MinAtar/Breakout-v1", wide)
    assert all((a == b).all() for a, b in zip(same, rollout_of("MinAtar/Breakout-v1", wide), strict=True))
    other = rollout_of("MinAtar/Breakout-v1", 2**41 + 5)
    assert any((a != b).any() for a, b in zip(same, other, strict=True)), "the high seed bits are ignored"
