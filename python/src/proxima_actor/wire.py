"""Conversions between the actor's types and the ``ppo.v1`` protobuf messages (the one place for them)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from ._proto import ppo_pb2 as pb
from .policy import Policy
from .sampler import Obs, Rollout, wire_dtype

#: Protocol version this package speaks.
PROTOCOL_VERSION = pb.PROTOCOL_VERSION_1
#: Response metadata key under which the learner names a rejection's reason.
REASON_KEY = "proxima-reason"


def space(s: gym.Space) -> pb.Space:
    """A gymnasium Discrete, MultiDiscrete (1-d ``nvec``) or Box as the protocol's space. A Box keeps its shape,
    with its bounds flattened row-major as f32, and travels as ``DTYPE_UINT8`` when its dtype is uint8 or bool (a
    bool Box, as MinAtar's ``Box(False, True, (10, 10, C), bool)``, has the bounds 0 and 1 and its values are sent
    as bytes 0 and 1), as ``DTYPE_FLOAT32`` for every other dtype (its values are sent as f32)."""
    if isinstance(s, gym.spaces.Discrete):
        return pb.Space(discrete=pb.Discrete(n=int(s.n)))
    if isinstance(s, gym.spaces.MultiDiscrete):
        if s.nvec.ndim != 1:
            raise ValueError(f"space {s}: a MultiDiscrete needs a 1-d nvec, this one has shape {list(s.nvec.shape)}")
        return pb.Space(multi_discrete=pb.MultiDiscrete(nvec=[int(n) for n in s.nvec]))
    if isinstance(s, gym.spaces.Box):
        low = np.asarray(s.low, dtype=np.float32).reshape(-1)
        high = np.asarray(s.high, dtype=np.float32).reshape(-1)
        dtype = pb.DTYPE_UINT8 if wire_dtype(s) == np.uint8 else pb.DTYPE_FLOAT32
        return pb.Space(box=pb.BoxSpace(low=low.tolist(), high=high.tolist(), shape=list(s.shape), dtype=dtype))
    raise ValueError(f"space {s} is neither Discrete, MultiDiscrete nor Box")


def _f32(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def _u8(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype=np.uint8).tobytes()


def _obs(x: Obs) -> bytes:
    """Observations in their wire dtype: uint8 bytes as they are, else little-endian f32."""
    return _u8(x) if x.dtype == np.uint8 else _f32(x)


def rollout(r: Rollout, actor_id: int) -> pb.Rollout:
    """The message for ``r``, stamped with the id the learner handed out."""
    return pb.Rollout(
        actor_id=actor_id,
        policy_version=r.policy_version,
        num_steps=r.num_steps,
        num_envs=r.num_envs,
        obs=_obs(r.obs),
        actions=_f32(r.actions),
        log_probs=_f32(r.log_probs),
        values=_f32(r.values),
        rewards=_f32(r.rewards),
        terminated=_u8(r.terminated),
        truncated=_u8(r.truncated),
        final_obs=_obs(r.final_obs),
        next_obs=_obs(r.next_obs),
        episodes=[
            pb.Episode(env_index=e.env_index, episode_return=e.episode_return, length=e.length) for e in r.episodes
        ],
        incarnation=r.incarnation,
        initial_state=_f32(r.initial_state),
    )


def policy(update: pb.PolicyUpdate) -> tuple[Policy, int]:
    """The policy an update carries and the incarnation of the learner that sent it."""
    return Policy(update.weights, version=update.version), update.incarnation
