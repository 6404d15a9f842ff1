"""``--atari``: ALE games with the DQN preprocessing; games (all lives, unclipped) reported as the episodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import pytest
from test_policy import image_spec, state_dict, with_spec

from proxima_actor import Policy, wire
from proxima_actor.atari import ClipRewardSign, GameLength, GameScore, make_atari
from proxima_actor.cli import env_factory
from proxima_actor.evaluate import evaluate
from proxima_actor.sampler import EnvError, Sampler, make_vector_env

pytest.importorskip("ale_py", reason='the ale-py package: pip install "./python[atari]"')
pytest.importorskip("cv2", reason='opencv-python-headless: pip install "./python[atari]"')


@dataclass
class Game:
    """One game as the raw ALE env played it: every frame's reward, and the agent steps taken when it began."""

    started_at_step: int
    rewards: list[float] = field(default_factory=list)
    over: bool = False


class Tape(gym.Wrapper[Any, Any, Any, Any]):
    """Put between the raw env and :class:`GameScore`: records each real reset (a new game) and the raw reward of
    every frame, hidden reset steps included, and counts the agent's steps (``agent_steps``, bumped by
    :class:`Steps` outermost)."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        self.games: list[Game] = []
        self.agent_steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self.games.append(Game(self.agent_steps))
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.games[-1].rewards.append(float(reward))
        self.games[-1].over = bool(terminated or truncated)
        return obs, reward, terminated, truncated, info

    def finished(self) -> list[tuple[float, int]]:
        """(raw score, agent steps) of each game that ended, in order."""
        ends = [g.started_at_step for g in self.games[1:]] + [self.agent_steps]
        return [(sum(g.rewards), end - g.started_at_step) for g, end in zip(self.games, ends, strict=True) if g.over]


class Steps(gym.Wrapper[Any, Any, Any, Any]):
    """Outermost: counts the agent's steps into the tape."""

    def __init__(self, env: gym.Env[Any, Any], tape: Tape) -> None:
        super().__init__(env)
        self.tape = tape

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self.tape.agent_steps += 1
        return self.env.step(action)


def taped(env_id: str) -> Steps:
    """``make_atari(env_id)`` with a :class:`Tape` under its :class:`GameScore`."""
    env = make_atari(env_id)
    assert isinstance(env, GameLength) and isinstance(env.game, GameScore)
    tape = Tape(env.game.env)
    env.game.env = tape
    return Steps(env, tape)


def ale(env: gym.Env[Any, Any]) -> Any:
    return env.unwrapped.ale  # type: ignore[attr-defined]


def uniform_policy(n: int) -> Policy:
    """Zero weights: every action equally likely, on (4, 84, 84) byte observations."""
    t = {k: np.zeros_like(v) for k, v in state_dict(4 * 84 * 84, n, (1,), box=False).items()}
    return Policy(with_spec(t, image_spec((4, 84, 84), {"kind": "categorical", "n": n}, (1,))))


def test_observations_are_four_stacked_84x84_byte_frames() -> None:
    env = make_atari("ALE/Pong-v5")
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    assert (space.shape, space.dtype, space.low.min(), space.high.max()) == ((4, 84, 84), np.uint8, 0, 255)
    # v5's defaults: sticky actions, the minimal action set; frames skipped by the preprocessing only.
    assert np.isclose(ale(env).getFloat("repeat_action_probability"), 0.25) and env.action_space == gym.spaces.Discrete(
        6
    )
    assert env.unwrapped._frameskip == 1  # type: ignore[attr-defined]
    registered = wire.space(space)
    assert (list(registered.box.shape), registered.box.dtype) == ([4, 84, 84], wire.pb.DTYPE_UINT8)
    obs, _ = env.reset(seed=2**40 + 1)  # the learner's seeds are 64-bit
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    # After a reset the stack holds the first frame four times; steps push new frames in.
    assert all((obs[i] == obs[0]).all() for i in range(4))
    for _ in range(30):
        obs, *_ = env.step(0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and obs.any()
    env.close()


def test_rewards_are_clipped_to_their_sign() -> None:
    class Raw(gym.Env[np.ndarray, int]):
        observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
        action_space = gym.spaces.Discrete(1)

        def __init__(self) -> None:
            self.rewards = iter([7.0, -3.5, 0.0, 1.0, 0.25])

        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
            return np.zeros(1, np.float32), next(self.rewards), False, False, {}

    clipped = ClipRewardSign(Raw())
    assert [clipped.step(0)[1] for _ in range(5)] == [1.0, -1.0, 0.0, 1.0, 1.0]


def test_breakout_lost_lives_end_episodes_and_the_game_score_sums_every_raw_reward() -> None:
    env = taped("ALE/Breakout-v5")
    assert env.metadata["game_scores"] is True
    tape = env.tape
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    lives, life_losses, steps, clipped = int(ale(env).lives()), 0, 0, set()
    assert lives == 5
    while True:
        before = sum(tape.games[-1].rewards)
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        steps += 1
        assert reward == np.sign(sum(tape.games[-1].rewards) - before), "the reward is not the raw one's sign"
        clipped.add(reward)
        if "game_score" in info:
            break
        assert not truncated
        if terminated:
            # A life was lost: the episode ends, the game goes on.
            assert 0 < ale(env).lives() < lives and not ale(env).game_over()
            lives, life_losses = int(ale(env).lives()), life_losses + 1
            frame = info["episode_frame_number"]
            obs, _ = env.reset()
            assert len(tape.games) == 1, "the reset after a lost life reset the game"
            assert ale(env).getEpisodeFrameNumber() > frame and ale(env).lives() == lives
            assert all((obs[i] == obs[0]).all() for i in range(4)), "the frame stack does not restart after a lost life"
        assert steps < 5000
    assert terminated and ale(env).game_over() and life_losses == 4
    assert clipped <= {-1.0, 0.0, 1.0}
    assert tape.finished() == [(info["game_score"], info["game_length"])]
    assert info["game_length"] == steps and isinstance(info["game_score"], float)
    # The next reset starts a new game.
    env.reset()
    assert len(tape.games) == 2 and ale(env).lives() == 5
    env.close()


def test_pong_has_no_lives_so_an_episode_is_a_game() -> None:
    env = taped("ALE/Pong-v5")
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    clipped_total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        clipped_total += float(reward)
        steps += 1
        assert reward in (-1.0, 0.0, 1.0)
        assert ("game_score" in info) == (terminated or truncated)
        if terminated or truncated:
            break
        assert steps < 5000
    score, length = info["game_score"], info["game_length"]
    assert (score, length) == (tape_score := env.tape.finished()[0][0], steps) and tape_score == clipped_total
    assert score <= -15  # a random player loses; the game ends when one side has 21 points
    env.close()


def test_the_sampler_reports_one_episode_a_game_with_its_score() -> None:
    tapes: list[Tape] = []

    def make() -> gym.Env[Any, Any]:
        env = taped("ALE/Breakout-v5")
        tapes.append(env.tape)
        return env

    envs = make_vector_env(make, 2)
    sampler = Sampler(envs, rollout_steps=250, seed=11)
    policy = uniform_policy(4)
    rollouts = [sampler.collect(policy), sampler.collect(policy)]
    # The rollout carries the clipped rewards and a termination per lost life (4 a game before the last).
    rewards = np.concatenate([r.rewards for r in rollouts])
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
    terminated = np.concatenate([r.terminated for r in rollouts])
    for e, tape in enumerate(tapes):
        games = [(ep.episode_return, ep.length) for r in rollouts for ep in r.episodes if ep.env_index == e]
        assert games, "no game ended in 500 steps"
        assert games == tape.finished()
        assert terminated[:, e].sum() >= 5 * len(games) > len(games), "lost lives are not terminations"
        assert sum(length for _, length in games) <= 500
    messages = [wire.rollout(r, actor_id=1) for r in rollouts]
    assert [(m.env_index, m.episode_return, m.length) for msg in messages for m in msg.episodes] == [
        (ep.env_index, ep.episode_return, ep.length) for r in rollouts for ep in r.episodes
    ]
    sampler.close()


def test_eval_plays_whole_games_and_reports_their_scores() -> None:
    tapes: list[Tape] = []

    def make() -> gym.Env[Any, Any]:
        env = taped("ALE/Breakout-v5")
        tapes.append(env.tape)
        return env

    report = evaluate(uniform_policy(4), make, "ALE/Breakout-v5", episodes=2, deterministic=False, seed=5)
    assert len(tapes) == 1 and len(report.returns) == 2
    assert list(zip(report.returns, report.lengths, strict=True)) == tapes[0].finished()


def test_atari_takes_ale_ids_only() -> None:
    with pytest.raises(ValueError, match="ALE ids"):
        env_factory("CartPole-v1", None, None, atari=True)
    with pytest.raises(ValueError, match="--make"):
        env_factory("ALE/Pong-v5", "some.module:make", None, atari=True)
    with pytest.raises(EnvError, match="ALE ids"):
        make_atari("MinAtar/Breakout-v1")
    env = env_factory("ALE/Pong-v5", None, '{"repeat_action_probability": 0.0}', atari=True)()
    assert env.observation_space.shape == (4, 84, 84)
    assert ale(env).getFloat("repeat_action_probability") == 0.0
    env.close()
