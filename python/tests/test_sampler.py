"""The sampler's semantics: final observations of truncated steps, episode records, unclipped actions,
MultiDiscrete actions, image observations kept as bytes."""

from __future__ import annotations

from typing import Any

import dials
import gymnasium as gym
import numpy as np
import pytest
import quadrant
from safetensors.numpy import save
from test_policy import quadrant_snapshot, spec, state_dict, with_spec

from proxima_actor import Policy, wire
from proxima_actor.sampler import EnvError, Sampler, check_spaces, make_vector_env


class Counter(gym.Env[np.ndarray, np.ndarray]):
    """Observation = [steps so far, seed]; reward 1 per step; Box(-1, 1) actions recorded as the env got them;
    never terminates (the time limit ends its episodes)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t, self.seed_seen = 0, 0.0
        self.received: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.seed_seen = float(seed)
        self.t = 0
        return np.array([0.0, self.seed_seen], np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.received.append(np.array(action))
        self.t += 1
        return np.array([self.t, self.seed_seen], np.float32), 1.0, False, False, {}


def make_counter() -> gym.Env:
    return gym.wrappers.TimeLimit(Counter(), max_episode_steps=5)


def test_truncated_steps_carry_their_final_observation() -> None:
    envs = make_vector_env(make_counter, 3)
    sampler = Sampler(envs, rollout_steps=12, seed=7)
    policy = Policy(save(state_dict(2, 1, (4,), box=True)), version=9)
    r = sampler.collect(policy, incarnation=5)
    assert (r.num_steps, r.num_envs, r.policy_version, r.incarnation) == (12, 3, 9, 5)
    # Steps 4 and 9 (0-based) end every env's 5-step episode by the time limit.
    assert r.truncated.sum() == 6 and not r.terminated.any()
    assert set(np.flatnonzero(r.truncated.any(axis=1))) == {4, 9}
    assert r.final_obs.shape == (6, 2)
    np.testing.assert_array_equal(r.final_obs[:, 0], np.full(6, 5.0))
    # The observation after a truncated step is the next episode's first; envs are seeded 7, 8, 9.
    np.testing.assert_array_equal(r.obs[5, :, 0], np.zeros(3))
    np.testing.assert_array_equal(r.obs[0, :, 1], [7.0, 8.0, 9.0])
    np.testing.assert_array_equal(r.next_obs[:, 0], [2.0, 2.0, 2.0])
    assert [(e.env_index, e.episode_return, e.length) for e in r.episodes] == [(e, 5.0, 5) for e in range(3)] * 2
    assert r.obs.dtype == np.float32 and len(wire.rollout(r, actor_id=1).obs) == 12 * 3 * 2 * 4
    # Episodes continue across rollouts: the next one finishes the ones in progress after 3 more steps.
    r2 = sampler.collect(policy)
    assert [(e.episode_return, e.length) for e in r2.episodes][:3] == [(5.0, 5)] * 3
    assert np.flatnonzero(r2.truncated.any(axis=1))[0] == 2
    sampler.close()


def test_actions_are_sent_unclipped_and_clipped_for_the_env() -> None:
    envs = make_vector_env(make_counter, 2)
    sampler = Sampler(envs, rollout_steps=50, seed=0)
    t = state_dict(2, 1, (4,), box=True)
    t["actor_logstd"] = np.full((1, 1), 1.0, np.float32)  # std e: most draws leave [-1, 1]
    r = sampler.collect(Policy(save(t)))
    assert np.abs(r.actions).max() > 1.0, "no sampled action left the bounds"
    got = np.stack([np.asarray(a) for e in sampler.envs.envs for a in e.unwrapped.received])
    assert np.abs(got).max() <= 1.0
    np.testing.assert_allclose(np.sort(got.ravel()), np.sort(np.clip(r.actions, -1, 1).ravel()), atol=1e-7)
    sampler.close()


def test_terminated_beats_truncated_and_returns_sum_the_sent_rewards() -> None:
    envs = make_vector_env(lambda: gym.make("CartPole-v1", max_episode_steps=10), 4)
    sampler = Sampler(envs, rollout_steps=64, seed=1)
    r = sampler.collect(Policy(save(state_dict(4, 2, (8,), box=False))))
    assert not (r.terminated & r.truncated).any()
    assert r.final_obs.shape[0] == int(r.truncated.sum())
    assert sum(e.length for e in r.episodes) <= 64 * 4
    for e in r.episodes:
        assert e.episode_return == pytest.approx(float(e.length))
    sampler.close()


def test_spaces_it_cannot_train_on_are_refused() -> None:
    envs = make_vector_env(lambda: gym.make("CartPole-v1"), 1)
    sampler = Sampler(envs, rollout_steps=1, seed=0)
    with pytest.raises(EnvError):
        sampler.check_policy(Policy(save(state_dict(4, 3, (8,), box=False))))
    with pytest.raises(EnvError):
        sampler.check_policy(Policy(save(state_dict(4, 1, (8,), box=True))))
    sampler.close()
    with pytest.raises(EnvError):
        Sampler(gym.make_vec("CartPole-v1", 1, vectorization_mode="sync"), rollout_steps=1, seed=0)


def test_async_vector_envs_give_the_same_rollouts_as_sync() -> None:
    policy = Policy(save(state_dict(2, 1, (4,), box=True)))
    rollouts = []
    for mode in ("sync", "async"):
        sampler = Sampler(make_vector_env(make_counter, 2, mode), rollout_steps=7, seed=3)
        rollouts.append(sampler.collect(policy))
        sampler.close()
    sync, asyn = rollouts
    np.testing.assert_array_equal(sync.obs, asyn.obs)
    np.testing.assert_array_equal(sync.actions, asyn.actions)
    np.testing.assert_array_equal(sync.final_obs, asyn.final_obs)
    assert sync.truncated.sum() == asyn.truncated.sum() == 2


def dials_policy(nvec: tuple[int, ...] = dials.NVEC) -> Policy:
    head = {"kind": "multi_categorical", "nvec": list(nvec)}
    return Policy(with_spec(state_dict(2, sum(nvec), (8,), box=False, seed=2), spec(2, head)))


def test_multi_discrete_actions_reach_the_env_as_integers_and_the_rollout_as_f32() -> None:
    envs = make_vector_env(dials.make, 3)
    sampler = Sampler(envs, rollout_steps=25, seed=4)
    policy = dials_policy()
    sampler.check_policy(policy)
    r = sampler.collect(policy)
    assert r.actions.dtype == np.float32 and r.actions.shape == (25, 3, 2)
    for e, env in enumerate(sampler.envs.envs):
        got = np.stack(env.unwrapped.received)
        assert got.dtype == np.int64 and got.shape == (25, 2)
        np.testing.assert_array_equal(got, r.actions[:, e, :])
    assert set(np.unique(r.actions[..., 0])) == {0.0, 1.0, 2.0} and set(np.unique(r.actions[..., 1])) == {0.0, 1.0}
    obs, actions = r.obs.reshape(-1, 2), r.actions.reshape(-1, 2)
    np.testing.assert_allclose(r.log_probs.reshape(-1), policy.log_prob(obs, actions), atol=1e-5)
    targets = np.rint(obs * (np.array(dials.NVEC) - 1))
    np.testing.assert_array_equal(r.rewards.reshape(-1), (actions == targets).sum(axis=1))
    # The 10-step time limit truncates every env at steps 9 and 19.
    assert r.truncated.sum() == 6 and r.final_obs.shape == (6, 2)
    assert [(e.env_index, e.length) for e in r.episodes] == [(e, 10) for e in range(3)] * 2
    with pytest.raises(EnvError, match="multi_categorical"):
        sampler.check_policy(dials_policy((2, 3)))
    with pytest.raises(EnvError, match="categorical"):
        sampler.check_policy(Policy(save(state_dict(2, 5, (8,), box=False))))
    sampler.close()


@pytest.mark.parametrize(
    "space",
    [
        gym.spaces.MultiDiscrete([[2, 2], [3, 3]]),
        gym.spaces.MultiDiscrete([3, 2], start=[1, 0]),
        gym.spaces.MultiBinary(3),
        gym.spaces.Box(-1.0, 1.0, (2, 2)),
        gym.spaces.Discrete(3, start=1),
    ],
)
def test_action_spaces_it_cannot_train_on_are_refused(space: gym.Space) -> None:
    with pytest.raises(EnvError):
        check_spaces(gym.spaces.Box(0.0, 1.0, (2,)), space)


def test_image_observations_keep_their_shape_and_travel_as_bytes() -> None:
    sampler = Sampler(make_vector_env(quadrant.make, 3), rollout_steps=20, seed=2)
    policy = Policy(quadrant_snapshot())
    sampler.check_policy(policy)
    r = sampler.collect(policy)
    assert r.obs.dtype == r.final_obs.dtype == r.next_obs.dtype == np.uint8
    # The 16-step time limit truncates every env at step 15.
    assert r.obs.shape == (20, 3, 6, 6, 1) and r.final_obs.shape == (3, 6, 6, 1) and r.next_obs.shape == (3, 6, 6, 1)
    lit = [[quadrant.lit_quadrant(o) for o in step] for step in r.obs]
    np.testing.assert_array_equal(r.actions[..., 0], lit, err_msg="the actions were not chosen on these images")
    assert np.all(r.rewards == 1.0)
    msg = wire.rollout(r, actor_id=1)
    assert (len(msg.obs), len(msg.final_obs), len(msg.next_obs)) == (20 * 3 * 36, 3 * 36, 3 * 36)
    np.testing.assert_array_equal(np.frombuffer(msg.obs, np.uint8).reshape(r.obs.shape), r.obs)
    np.testing.assert_array_equal(np.frombuffer(msg.final_obs, np.uint8).reshape(r.final_obs.shape), r.final_obs)
    sampler.close()


class Planes(gym.Env[np.ndarray, int]):
    """MinAtar-like boolean planes ``[2, 2, 3]``, random every step; Discrete(2) actions; never ends."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 1, (2, 2, 3), bool)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.np_random.random((2, 2, 3)) < 0.5, {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.np_random.random((2, 2, 3)) < 0.5, 0.0, False, False, {}


def test_boolean_observations_travel_as_bytes_of_0_and_1() -> None:
    sampler = Sampler(make_vector_env(Planes, 2), rollout_steps=8, seed=0)
    head = {"kind": "categorical", "n": 2}
    r = sampler.collect(Policy(with_spec(state_dict(12, 2, (8,), box=False), {**spec(12, head), "obs_dtype": "uint8"})))
    assert r.obs.dtype == np.uint8 and r.obs.shape == (8, 2, 2, 2, 3)
    assert set(np.unique(r.obs)) == {0, 1}
    assert len(wire.rollout(r, actor_id=1).obs) == 8 * 2 * 12
    sampler.close()
