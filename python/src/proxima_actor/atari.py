"""Atari 2600 games (the Arcade Learning Environment's ``ALE/*`` ids) with the standard DQN preprocessing, as
CleanRL's PPO and DQN run them (``proxima-actor --atari``, ``pip install "./python[atari]"``).

:func:`make_atari` wraps ``gym.make(id, frameskip=1)`` (v5's other defaults kept: sticky actions with probability
0.25, the minimal action set, at most 108,000 frames a game), from the inside out, in:

1. :class:`GameScore`: the game's score, the sum of the raw rewards of every frame since the game began;
2. ``gymnasium.wrappers.AtariPreprocessing``: up to 30 no-ops after a reset, each action repeated for 4 frames
   with the last two frames max-pooled, grayscale, resized to 84x84, uint8;
3. :class:`EpisodicLife`: a lost life ends the episode (``terminated``) but not the game;
4. :class:`FireOnReset`: in games with a FIRE action, FIRE (then action 2) on every reset, so after each lost life;
5. :class:`ClipRewardSign`: rewards clipped to their sign, -1, 0 or 1;
6. ``gymnasium.wrappers.FrameStackObservation``: the last 4 frames, ``Box(0, 255, (4, 84, 84), uint8)``, the stack
   refilled with the first frame after each reset (so after each lost life);
7. :class:`GameLength`: counts the agent's steps and marks the env as one that reports game scores.

The learner trains on the clipped rewards and the per-life terminations, and reports games: at the step a game
ends (game over, or ALE's frame limit, a truncation), the info holds ``game_score`` (unclipped, all lives) and
``game_length`` (the agent's steps over all lives; the hidden no-op and FIRE steps of resets are not counted),
which :class:`~proxima_actor.sampler.Sampler` and ``proxima-actor eval`` report instead of the per-life returns.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from .sampler import GAME_LENGTH, GAME_SCORE, GAME_SCORES, EnvError

#: Agent steps per ALE frame: each action is repeated for this many frames.
FRAME_SKIP = 4
#: Side of the square grayscale frames the agent sees.
SCREEN_SIZE = 84
#: Frames stacked into one observation.
STACK = 4
#: Most no-op actions after a reset (their number is drawn from 1 to this).
NOOP_MAX = 30

Step = tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]


def _ale(env: gym.Env[Any, Any]) -> Any:
    """The ``ale_py.ALEInterface`` under ``env``."""
    return env.unwrapped.ale  # type: ignore[attr-defined]


class GameScore(gym.Wrapper[Any, Any, Any, Any]):
    """Wraps the raw game (innermost, so every frame's reward counts, also those of the no-op and FIRE steps that
    resets take): at the step the game ends, terminated (game over) or truncated (ALE's frame limit), adds
    ``info["game_score"]``, the sum of the raw rewards since the game was reset, and ``info["game_length"]``, the
    agent's steps counted by :class:`GameLength` (0 without one)."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.score = 0.0
        #: Agent steps of this game; :class:`GameLength` adds to it.
        self.agent_steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self.score, self.agent_steps = 0.0, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> Step:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        if terminated or truncated:
            info = {**info, GAME_SCORE: self.score, GAME_LENGTH: self.agent_steps}
        return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper[Any, Any, Any, Any]):
    """A lost life ends the episode: the step reports ``terminated=True``, and the next :meth:`reset` continues the
    game with one no-op step instead of resetting it. Only a game over, a truncation, or a reset with a seed or
    options resets the game. A life lost as the count reaches 0 is not a termination of its own: the game over that
    comes with it is."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> Step:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = int(_ale(self.env).lives())
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self.game_over or seed is not None or options is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the game ended on the no-op (no game does that, but never go on after)
                obs, info = self.env.reset()
        self.game_over = False
        self.lives = int(_ale(self.env).lives())
        return obs, info


class FireOnReset(gym.Wrapper[Any, Any, Any, Any]):
    """For games that wait for FIRE to start (or to serve a ball after a lost life): every reset presses FIRE and
    then takes action 2, as the DQN preprocessing does, resetting again should either step end the episode."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        meanings: list[str] = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
        if "FIRE" not in meanings or len(meanings) < 3:
            raise EnvError(f"{env.spec.id if env.spec else env}: FireOnReset needs FIRE and 3 actions, has {meanings}")
        self.actions = (meanings.index("FIRE"), 2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        for action in self.actions:
            obs, _, terminated, truncated, _ = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class ClipRewardSign(gym.RewardWrapper[Any, Any]):
    """Rewards clipped to their sign: -1.0, 0.0 or 1.0."""

    def reward(self, reward: SupportsFloat) -> float:
        return float(np.sign(float(reward)))


class GameLength(gym.Wrapper[Any, Any, Any, Any]):
    """Outermost: counts each step the agent takes into the game's length kept by ``game`` (the
    :class:`GameScore` below), and sets ``metadata["game_scores"]``, which tells the sampler and ``eval`` to report
    the ``game_score`` and ``game_length`` of its infos as the episodes."""

    def __init__(self, env: gym.Env[Any, Any], game: GameScore) -> None:
        super().__init__(env)
        self.game = game
        self.metadata = {**env.metadata, GAME_SCORES: True}

    def step(self, action: Any) -> Step:
        self.game.agent_steps += 1
        return self.env.step(action)


def make_atari(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """The ALE game ``env_id`` (``ALE/<Game>-v5``) with the standard DQN preprocessing (see the module). ``kwargs``
    go to ``gym.make`` (as ``render_mode``); ``frameskip`` is 1 there, as the preprocessing skips frames itself."""
    if not env_id.startswith("ALE/"):
        raise EnvError(f"--atari takes ALE ids such as ALE/Pong-v5, not {env_id!r}")
    if "frameskip" in kwargs:
        raise EnvError("--atari skips frames itself (4 a step): the env's frameskip stays 1")
    if env_id not in gym.registry:
        try:
            import ale_py
        except ImportError as e:
            raise EnvError(f'{env_id} needs the ale-py package: pip install "./python[atari]" ({e})') from e
        gym.register_envs(ale_py)
    game = GameScore(gym.make(env_id, frameskip=1, **kwargs))
    env: gym.Env[Any, Any] = gym.wrappers.AtariPreprocessing(
        game,
        noop_max=NOOP_MAX,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        grayscale_obs=True,
        terminal_on_life_loss=False,
        scale_obs=False,
    )
    env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings():  # type: ignore[attr-defined]
        env = FireOnReset(env)
    env = ClipRewardSign(env)
    env = gym.wrappers.FrameStackObservation(env, stack_size=STACK)
    return GameLength(env, game)
