"""Vectorised gymnasium envs stepped with a policy into rollouts, with the Rust sampler's semantics.

The vector env runs in gymnasium's ``SAME_STEP`` autoreset mode: on the step an episode ends, the returned
observation is already the next episode's first one and the last observation is in ``info["final_obs"]``, which
a truncated step needs (the learner bootstraps from it). Actions are recorded as sampled, in f32 (Discrete and
MultiDiscrete as their indices, which go to the env as integers), and clipped to a Box's bounds only when stepping
the env. Episode returns are summed from the f32 rewards the rollout carries, except for envs that report games
(:data:`GAME_SCORES`, as the Atari ones): their episodes are the games their infos report. Observations keep their
shape and are stored in the dtype they travel in (:func:`wire_dtype`): bytes for images, f32 otherwise.

A recurrent policy's state is kept per env: zero when the sampler starts and at the first step of every episode
(before acting on the observation that follows a terminated or truncated step), and carried across rollouts and
policy updates (a new policy continues from the states the last one left). Each rollout records the states before
its first step (``initial_state``), which the learner replays the sequence from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium.vector import AutoresetMode

from .model import CategoricalHead, Core, GaussianHead, Head, MultiCategoricalHead
from .policy import F32, Policy

EnvFactory = Callable[[], gym.Env]
#: Observations in the dtype they travel in: ``uint8`` (images) or ``float32``.
Obs = npt.NDArray[np.uint8 | np.float32]

#: ``env.metadata`` key of an env whose episodes (what the learner trains on, as an Atari game's lives) are parts
#: of games, and which reports each game at the step it ends with ``info[GAME_SCORE]`` and ``info[GAME_LENGTH]``:
#: the sampler and ``eval`` report those games as the episodes, and nothing at the other terminations.
GAME_SCORES = "game_scores"
#: Info key: the score of the game that ended at this step (the sum of its unclipped rewards).
GAME_SCORE = "game_score"
#: Info key: the agent steps of the game that ended at this step.
GAME_LENGTH = "game_length"


class EnvError(ValueError):
    """An env whose spaces proxima cannot train on, or one that does not fit the policy."""


@dataclass
class Episode:
    """A finished episode."""

    env_index: int
    episode_return: float
    length: int


@dataclass
class Rollout:
    """``T`` steps of ``N`` envs, time-major (index ``[t][e]``)."""

    policy_version: int
    incarnation: int
    obs: Obs
    """``[T, N, *obs_shape]`` raw observations the actions were chosen on, in the observation space's wire dtype
    (:func:`wire_dtype`: ``uint8`` for a uint8 or bool Box, else ``float32``), as are ``final_obs`` and
    ``next_obs``."""
    actions: F32
    """``[T, N, action_dim]`` sampled (unclipped) actions."""
    log_probs: F32
    values: F32
    rewards: F32
    terminated: npt.NDArray[np.bool_]
    truncated: npt.NDArray[np.bool_]
    final_obs: Obs
    """``[count(truncated), *obs_shape]`` final observations of the truncated steps, time-major."""
    next_obs: Obs
    """``[N, *obs_shape]`` observations after the last step."""
    episodes: list[Episode] = field(default_factory=list)
    initial_state: F32 = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    """``[N, state_dim]`` each env's recurrent state before step 0 (``[N, 0]`` for a memoryless policy)."""

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.rewards.shape[1])

    def __len__(self) -> int:
        return self.num_steps * self.num_envs


def make_vector_env(make_env: EnvFactory, num_envs: int, vectorization: str = "sync") -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``make_env()`` in ``SAME_STEP`` autoreset mode, in this process or in subprocesses."""
    fns = [make_env] * num_envs
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if vectorization == "async":
        return gym.vector.AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    raise ValueError(f"vectorization {vectorization!r}: expected sync or async")


def wire_dtype(space: gym.spaces.Box) -> np.dtype[np.uint8 | np.float32]:
    """The dtype a Box's values travel in: ``uint8`` for a uint8 Box (images) or a bool one (MinAtar's planes, as 0
    and 1), ``float32`` for every other."""
    return np.dtype(np.uint8) if space.dtype in (np.uint8, np.bool_) else np.dtype(np.float32)


def check_spaces(obs_space: gym.Space, action_space: gym.Space) -> None:
    """Raises unless the observations are a Box (of any shape) and the actions a Discrete (from 0), a MultiDiscrete
    (1-d, from 0) or a 1-d Box."""
    if not isinstance(obs_space, gym.spaces.Box):
        raise EnvError(f"observation space {obs_space} is not a Box (wrap the env to flatten it)")
    if isinstance(action_space, gym.spaces.Discrete):
        if int(action_space.start) != 0:
            raise EnvError(f"action space {action_space} does not start at 0")
    elif isinstance(action_space, gym.spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise EnvError(f"action space {action_space} has a {action_space.nvec.ndim}-d nvec (proxima takes 1-d)")
        if np.any(action_space.start != 0):
            raise EnvError(f"action space {action_space} does not start at 0")
    elif not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise EnvError(f"action space {action_space} is neither Discrete, MultiDiscrete nor a 1-d Box")


def head_for_space(action_space: gym.Space) -> Head:
    """The policy head an action space that passed :func:`check_spaces` needs."""
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalHead(int(action_space.n))
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return MultiCategoricalHead(tuple(int(n) for n in action_space.nvec))
    assert isinstance(action_space, gym.spaces.Box)
    return GaussianHead(int(action_space.shape[0]))


def check_policy(policy: Policy, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Raises unless proxima can train on the spaces and the policy's network fits them (not another env's)."""
    check_spaces(obs_space, action_space)
    obs_dim, head = int(np.prod(obs_space.shape or (0,))), head_for_space(action_space)
    assert isinstance(obs_space, gym.spaces.Box)
    dtype = wire_dtype(obs_space).name
    if (policy.obs_dim, policy.spec.obs_dtype, policy.spec.head) != (obs_dim, dtype, head):
        raise EnvError(
            f"the policy takes {policy.obs_dim} {policy.spec.obs_dtype} observation values and has a "
            f"{policy.spec.head} head, the env gives {obs_dim} {dtype} observation values and needs a {head} head"
        )


class Sampler:
    """Steps a vector env with a policy, one rollout at a time; envs continue across rollouts."""

    def __init__(self, envs: gym.vector.VectorEnv, rollout_steps: int, seed: int) -> None:
        check_spaces(envs.single_observation_space, envs.single_action_space)
        if envs.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise EnvError("the vector env must autoreset in SAME_STEP mode (make_vector_env builds one)")
        self.envs = envs
        self.num_envs = int(envs.num_envs)
        self.rollout_steps = rollout_steps
        obs_space = envs.single_observation_space
        assert isinstance(obs_space, gym.spaces.Box)
        self.obs_shape: tuple[int, ...] = obs_space.shape
        self.obs_dtype = wire_dtype(obs_space)
        self.action_space = space = envs.single_action_space
        #: Box: bounds the actions are clipped to when stepping the env; the env's action dtype.
        self.action_low = np.asarray(getattr(space, "low", 0.0), dtype=np.float32)
        self.action_high = np.asarray(getattr(space, "high", 0.0), dtype=np.float32)
        self.action_dtype = space.dtype or np.float32
        self.rng = np.random.default_rng(seed)
        obs, _ = envs.reset(seed=seed)
        self.obs = self._wire(obs, self.num_envs)
        self.returns = np.zeros(self.num_envs, dtype=np.float64)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        #: The envs report games (:data:`GAME_SCORES`): episodes are those, not the terminations.
        self.game_scores = bool(envs.metadata.get(GAME_SCORES, False))
        #: Each env's recurrent state before the next step, ``[N, state_dim]`` (``[N, 0]`` until a recurrent
        #: policy acts).
        self.state: F32 = np.zeros((self.num_envs, 0), dtype=np.float32)
        #: The core ``state`` belongs to (states of one core mean nothing to another).
        self.state_core: Core | None = None
        #: Called with the seconds of each batched forward pass.
        self.on_inference: Callable[[float], None] = lambda _: None

    def _wire(self, obs: npt.ArrayLike, *batch: int) -> Obs:
        """Observations ``[*batch, *obs_shape]`` in the wire dtype."""
        return np.asarray(obs, dtype=self.obs_dtype).reshape(*batch, *self.obs_shape)

    def check_policy(self, policy: Policy) -> None:
        """Raises if the policy's network does not fit these envs (another env's learner)."""
        check_policy(policy, self.envs.single_observation_space, self.action_space)

    def _env_actions(self, actions: F32) -> npt.NDArray[np.generic]:
        """Discrete: ``[N]`` indices; MultiDiscrete: ``[N, len(nvec)]`` indices; Box: ``[N, D]`` clipped."""
        if isinstance(self.action_space, gym.spaces.Discrete):
            return actions[:, 0].astype(np.int64)
        if isinstance(self.action_space, gym.spaces.MultiDiscrete):
            return actions.astype(self.action_dtype)
        return np.clip(actions, self.action_low, self.action_high).astype(self.action_dtype)

    def _ended(self, e: int, info: dict[str, Any]) -> list[Episode]:
        """The episode to report for env ``e``, whose episode ended at this step: its return and length, or for envs
        that report games, the game that ended with it, if one did. In ``SAME_STEP`` mode the ending step's info is
        ``info["final_info"]`` (the top level holds the next episode's reset info), its values arrays over the envs
        with ``_key`` masks."""
        if not self.game_scores:
            return [Episode(e, float(self.returns[e]), int(self.lengths[e]))]
        final = info.get("final_info", {})
        if not final.get(f"_{GAME_SCORE}", np.zeros(self.num_envs, dtype=bool))[e]:
            return []
        return [Episode(e, float(final[GAME_SCORE][e]), int(final[GAME_LENGTH][e]))]

    def collect(self, policy: Policy, incarnation: int = 0) -> Rollout:
        """Runs ``rollout_steps`` steps of every env with ``policy``."""
        t_max, n, a = self.rollout_steps, self.num_envs, policy.action_dim
        obs: Obs = np.empty((t_max, n, *self.obs_shape), dtype=self.obs_dtype)
        actions = np.empty((t_max, n, a), dtype=np.float32)
        log_probs = np.empty((t_max, n), dtype=np.float32)
        values = np.empty((t_max, n), dtype=np.float32)
        rewards = np.empty((t_max, n), dtype=np.float32)
        terminated = np.empty((t_max, n), dtype=bool)
        truncated = np.empty((t_max, n), dtype=bool)
        final_obs: list[Obs] = []
        episodes: list[Episode] = []
        if self.state_core != policy.spec.core or self.state.shape[1] != policy.state_dim:
            # The first policy, or one with another core (a learner restarted with another model): start afresh.
            self.state = policy.initial_state(n)
            self.state_core = policy.spec.core
        initial_state = self.state.copy()
        for t in range(t_max):
            obs[t] = self.obs
            started = time.perf_counter()
            # As rows of obs_dim values: a spec without obs_shape (an older learner's) names the shape [obs_dim].
            out = policy.act(self.obs.reshape(n, -1), self.rng, state=self.state)
            self.on_inference(time.perf_counter() - started)
            actions[t], log_probs[t], values[t] = out.actions, out.log_probs, out.values
            if out.state is not None:
                self.state = out.state
            next_obs, reward, term, trunc, info = self.envs.step(self._env_actions(out.actions))
            rewards[t] = np.asarray(reward, dtype=np.float32)
            term = np.asarray(term, dtype=bool)
            # As gymnasium's TimeLimit: a step that both terminates and hits the limit is terminated.
            trunc = np.asarray(trunc, dtype=bool) & ~term
            terminated[t], truncated[t] = term, trunc
            self.returns += rewards[t].astype(np.float64)
            self.lengths += 1
            for e in np.flatnonzero(trunc):
                final_obs.append(self._wire(info["final_obs"][e]))
            ended = term | trunc
            for e in np.flatnonzero(ended):
                episodes.extend(self._ended(int(e), info))
                self.returns[e], self.lengths[e] = 0.0, 0
            if self.state.shape[1] and ended.any():
                # The next observation is a new episode's first: its env starts from the zero state.
                self.state[ended] = 0.0
            self.obs = self._wire(next_obs, n)
        return Rollout(
            policy_version=policy.version,
            incarnation=incarnation,
            obs=obs,
            actions=actions,
            log_probs=log_probs,
            values=values,
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            final_obs=np.stack(final_obs) if final_obs else self._wire([], 0),
            next_obs=self.obs.copy(),
            episodes=episodes,
            initial_state=initial_state,
        )

    def close(self) -> None:
        self.envs.close()
