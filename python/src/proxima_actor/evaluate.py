"""Playing saved policies in gymnasium: ``proxima-actor eval`` and ``proxima-actor render``."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from .policy import Policy
from .sampler import GAME_LENGTH, GAME_SCORE, GAME_SCORES, EnvFactory, check_policy


@dataclass
class EvalReport:
    """Returns and lengths of the episodes played (the same fields as ``learner eval``'s JSON line)."""

    env: str
    episodes: int
    deterministic: bool
    mean_return: float
    std_return: float
    min_return: float
    max_return: float
    mean_length: float
    min_length: int
    max_length: int
    returns: list[float]
    lengths: list[int]

    @classmethod
    def of(cls, env: str, deterministic: bool, returns: list[float], lengths: list[int]) -> EvalReport:
        return cls(
            env=env,
            episodes=len(returns),
            deterministic=deterministic,
            mean_return=statistics.fmean(returns),
            std_return=statistics.pstdev(returns),
            min_return=min(returns),
            max_return=max(returns),
            mean_length=statistics.fmean(lengths),
            min_length=min(lengths),
            max_length=max(lengths),
            returns=returns,
            lengths=lengths,
        )

    def human(self) -> str:
        mode = "deterministic" if self.deterministic else "sampled"
        return (
            f"{self.env} over {self.episodes} episodes ({mode}): return {self.mean_return:.2f} ± {self.std_return:.2f}"
            f" (min {self.min_return:.2f}, max {self.max_return:.2f}), length {self.mean_length:.1f}"
            f" (min {self.min_length}, max {self.max_length})"
        )

    def json(self) -> str:
        return json.dumps(asdict(self))


def _env_action(space: gym.Space, action: np.ndarray) -> Any:
    """One action as the env takes it: the index, the indices as integers, or clipped to the Box."""
    if isinstance(space, gym.spaces.Discrete):
        return int(action[0])
    if isinstance(space, gym.spaces.MultiDiscrete):
        return action.astype(space.dtype)
    assert isinstance(space, gym.spaces.Box)
    return np.clip(action, space.low, space.high).astype(space.dtype or np.float32)


def play_episode(
    policy: Policy,
    env: gym.Env,
    seed: int,
    rng: np.random.Generator,
    deterministic: bool,
    on_step: Callable[[gym.Env], None] = lambda _: None,
) -> tuple[float, int]:
    """One episode from ``reset(seed=seed)`` until it terminates or is truncated, its return and length; Box
    actions clipped. An env that reports games (``metadata["game_scores"]``, as the Atari ones) plays one game
    instead, resetting after each episode (a lost life) that does not end it, and gives the game's score and length
    from the info of its last step. A recurrent policy's state starts at zero with every episode (each life of a
    game too, as the sampler's). Raises :class:`EnvError` if the policy does not fit the env."""
    check_policy(policy, env.observation_space, env.action_space)
    games = bool(env.metadata.get(GAME_SCORES, False))
    obs, _ = env.reset(seed=seed)
    on_step(env)
    total, length = 0.0, 0
    state = policy.initial_state(1)
    while True:
        # One row of obs_dim values in the env's dtype (the policy scales or normalises it).
        out = policy.act(np.asarray(obs).reshape(1, -1), rng, deterministic, state=state)
        if out.state is not None:
            state = out.state
        obs, reward, terminated, truncated, info = env.step(_env_action(env.action_space, out.actions[0]))
        total += float(reward)
        length += 1
        on_step(env)
        if not (terminated or truncated):
            continue
        if not games:
            return total, length
        if GAME_SCORE in info:
            return float(info[GAME_SCORE]), int(info[GAME_LENGTH])
        obs, _ = env.reset()
        state = policy.initial_state(1)
        on_step(env)


def evaluate(
    policy: Policy, make_env: EnvFactory, env_id: str, episodes: int, deterministic: bool, seed: int
) -> EvalReport:
    """Plays ``episodes`` episodes (episode ``i`` reset with ``seed + i``; games for an env that reports them) and
    reports their returns."""
    if episodes < 1:
        raise ValueError("--episodes must be at least 1")
    env = make_env()
    try:
        rng = np.random.default_rng(seed)
        results = [play_episode(policy, env, seed + i, rng, deterministic) for i in range(episodes)]
    finally:
        env.close()
    return EvalReport.of(env_id, deterministic, [r for r, _ in results], [n for _, n in results])


def render(
    policy: Policy, make_env: EnvFactory, out: Path, seed: int, max_frames: int, fps: int = 30
) -> tuple[float, int, int]:
    """Writes one deterministic episode as an animated GIF (needs Pillow) or MP4 (needs imageio with ffmpeg);
    returns (return, length, frames)."""
    frames: list[np.ndarray] = []

    def grab(env: gym.Env) -> None:
        if len(frames) < max_frames:
            frame = env.render()
            if not isinstance(frame, np.ndarray):
                raise ValueError("the env does not render rgb_array frames (make it with render_mode='rgb_array')")
            frames.append(frame)

    env = make_env()
    try:
        ret, length = play_episode(policy, env, seed, np.random.default_rng(seed), True, grab)
    finally:
        env.close()
    if out.suffix.lower() == ".mp4":
        import imageio.v3 as iio  # optional: pip install "imageio[ffmpeg]"

        iio.imwrite(out, np.stack(frames), fps=fps)
    else:
        from PIL import Image  # optional: pip install pillow (the `render` extra)

        images = [Image.fromarray(f) for f in frames]
        images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return ret, length, len(frames)
