"""Numpy inference on a proxima policy snapshot, the same numbers as the Rust actor's `common::policy`.

A snapshot is a safetensors file: the actor and critic MLPs named like a PyTorch ``state_dict`` (``actor.0.weight``
``[out, in]``, ``actor.0.bias``, ..., Linear layers at even indices with ``tanh`` between them), ``actor_logstd``
``[1, action_dim]`` for a Box action space, the hidden activation in the metadata key ``activation`` (``tanh`` when
absent, or ``relu``), and, with observation normalisation, ``obs_rms.mean`` / ``obs_rms.var``
(f64) with the clip value in the metadata key ``obs_clip``. The layout (hidden sizes, head) is read off the tensors'
shapes, so no model config is needed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load as load_safetensors

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: ``0.5 * ln(2 pi)`` rounded to f32, as the Rust side uses it.
HALF_LN_2PI = np.float32(0.5 * math.log(2.0 * math.pi))
#: Added to the variance before the square root when normalising observations (as the Rust side).
NORM_EPS = 1e-8

_LAYER = re.compile(r"^(actor|critic)\.(\d+)\.(weight|bias)$")


class PolicyError(ValueError):
    """Snapshot bytes that are not a usable policy, or observations that do not fit it."""


@dataclass(frozen=True)
class ObsNormalizer:
    """Running observation statistics saved with the weights."""

    mean: F64
    var: F64
    clip: float

    def normalize(self, obs: F32) -> F32:
        """``clip((x - mean) / sqrt(var + eps))``, computed in f64 and rounded to f32 before the clip."""
        scale = 1.0 / np.sqrt(self.var + NORM_EPS)
        normed = ((obs.astype(np.float64) - self.mean) * scale).astype(np.float32)
        clip = np.float32(self.clip)
        return np.clip(normed, -clip, clip)


#: Activations a snapshot may name in its metadata key ``activation`` (``tanh`` when absent).
ACTIVATIONS = ("tanh", "relu")


def activate(x: F32, activation: str) -> F32:
    """Applies the hidden layers' activation in place and returns ``x``."""
    if activation == "relu":
        np.maximum(x, 0.0, out=x)
    else:
        np.tanh(x, out=x)
    return x


@dataclass(frozen=True)
class Mlp:
    """Linear layers with an activation (``tanh`` or ``relu``) between them (none after the last)."""

    weights: tuple[F32, ...]
    biases: tuple[F32, ...]
    activation: str = "tanh"

    @property
    def in_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights[:-1]]

    def forward(self, x: F32) -> F32:
        """``[B, in] -> [B, out]`` in f32."""
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = x @ w.T + b
            if i + 1 < len(self.weights):
                x = activate(x, self.activation)
        return x.astype(np.float32, copy=False)


class JointMlp:
    """The actor and the critic as one network, for acting: the first layers stacked, the later ones
    block-diagonal, so a batch takes one matrix product per layer instead of two (half the numpy calls, which
    dominate at actor batch sizes). Outputs ``[B, actor_out + 1]``: the head, then the value. The zero blocks
    add exact zeros, so the numbers are the separate networks' up to f32 summation order."""

    def __init__(self, actor: Mlp, critic: Mlp) -> None:
        if len(actor.weights) != len(critic.weights):
            raise PolicyError("actor and critic have different depths")
        self.head_dim = actor.out_dim
        self.activation = actor.activation
        self.layers: list[tuple[F32, F32]] = []
        for i, (wa, wc, ba, bc) in enumerate(
            zip(actor.weights, critic.weights, actor.biases, critic.biases, strict=True)
        ):
            if i == 0:
                w = np.concatenate([wa, wc], axis=0)
            else:
                w = np.zeros((wa.shape[0] + wc.shape[0], wa.shape[1] + wc.shape[1]), dtype=np.float32)
                w[: wa.shape[0], : wa.shape[1]] = wa
                w[wa.shape[0] :, wa.shape[1] :] = wc
            self.layers.append(
                (np.ascontiguousarray(w.T, dtype=np.float32), np.concatenate([ba, bc]).astype(np.float32))
            )

    def forward(self, x: F32) -> tuple[F32, F32]:
        """The head ``[B, actor_out]`` and the values ``[B]`` for (normalised) inputs ``[B, in]``."""
        last = len(self.layers) - 1
        for i, (wt, b) in enumerate(self.layers):
            x = x @ wt
            x += b
            if i < last:
                activate(x, self.activation)
        return x[:, : self.head_dim], x[:, self.head_dim]


@dataclass(frozen=True)
class ActOutput:
    """Actions (unclipped), their log-probabilities under the policy, and value estimates for a batch."""

    actions: F32
    """``[B, action_dim]`` (Discrete: the index as f32, ``action_dim = 1``)."""
    log_probs: F32
    """``[B]``."""
    values: F32
    """``[B]``."""


def log_softmax(logits: F32) -> F32:
    """Row-wise log-softmax in f32, max-shifted like the Rust ``log_sum_exp``."""
    m = logits.max(axis=-1, keepdims=True)
    log_z = m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True, dtype=np.float32))
    return (logits - log_z).astype(np.float32, copy=False)


def categorical_entropy(logits: F32) -> F32:
    """``-sum p log p`` per row."""
    lp = log_softmax(logits)
    return (-(np.exp(lp) * lp).sum(axis=-1)).astype(np.float32)


def gaussian_log_prob(mean: F32, actions: F32, log_std: F32) -> F32:
    """Diagonal Gaussian log-density of ``actions`` per row, summed over dimensions."""
    z = (actions - mean) / np.exp(log_std)
    return (-0.5 * z * z - log_std - HALF_LN_2PI).sum(axis=-1, dtype=np.float32)


def gaussian_entropy(log_std: F32) -> np.float32:
    """Entropy of the diagonal Gaussian (independent of the mean)."""
    return np.float32((log_std + np.float32(0.5) + HALF_LN_2PI).sum(dtype=np.float32))


def _metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise PolicyError("not a safetensors file: shorter than its header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise PolicyError("not a safetensors file: header longer than the file")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:
        raise PolicyError(f"not a safetensors file: {e}") from e
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def _mlp(tensors: dict[str, np.ndarray], prefix: str, activation: str) -> Mlp:
    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, t in tensors.items():
        m = _LAYER.match(name)
        if m and m.group(1) == prefix:
            layers.setdefault(int(m.group(2)), {})[m.group(3)] = t
    if not layers:
        raise PolicyError(f"no {prefix}.* layers in the weights")
    indices = sorted(layers)
    if indices != list(range(0, 2 * len(indices), 2)):
        raise PolicyError(f"{prefix} layers at indices {indices}, expected 0, 2, 4, ...")
    weights: list[F32] = []
    biases: list[F32] = []
    for i in indices:
        w, b = layers[i].get("weight"), layers[i].get("bias")
        if w is None or b is None or w.ndim != 2 or b.shape != (w.shape[0],):
            raise PolicyError(f"{prefix}.{i}: needs weight [out, in] and bias [out]")
        if weights and w.shape[1] != weights[-1].shape[0]:
            raise PolicyError(
                f"{prefix}.{i}.weight has {w.shape[1]} inputs, the layer before has {weights[-1].shape[0]} outputs"
            )
        weights.append(np.ascontiguousarray(w, dtype=np.float32))
        biases.append(np.ascontiguousarray(b, dtype=np.float32))
    return Mlp(tuple(weights), tuple(biases), activation)


class Policy:
    """An actor-critic policy loaded from snapshot bytes, acting on raw observations."""

    def __init__(self, data: bytes, version: int = 0) -> None:
        try:
            tensors = load_safetensors(data)
        except Exception as e:  # safetensors raises its own error types for every kind of bad input
            raise PolicyError(f"not a safetensors file: {e}") from e
        meta = _metadata(data)
        for name, t in tensors.items():
            if not np.all(np.isfinite(t)):
                raise PolicyError(f"{name} holds NaN or infinity")
        self.version = version
        activation = meta.get("activation", "tanh")
        if activation not in ACTIVATIONS:
            raise PolicyError(f"unknown activation {activation!r} in the metadata (tanh or relu)")
        self.actor = _mlp(tensors, "actor", activation)
        self.critic = _mlp(tensors, "critic", activation)
        if self.critic.out_dim != 1:
            raise PolicyError(f"the critic has {self.critic.out_dim} outputs, expected 1")
        if self.actor.in_dim != self.critic.in_dim:
            raise PolicyError("actor and critic take inputs of different widths")
        self.joint = JointMlp(self.actor, self.critic)
        log_std = tensors.get("actor_logstd")
        self.log_std: F32 | None = None
        #: Box: the standard deviations in f64, for sampling (empty for Discrete).
        self.std: F64 = np.zeros(0)
        if log_std is not None:
            self.log_std = np.asarray(log_std, dtype=np.float32).reshape(-1)
            if self.log_std.shape[0] != self.actor.out_dim:
                raise PolicyError(
                    f"actor_logstd has {self.log_std.shape[0]} values, the actor {self.actor.out_dim} outputs"
                )
            self.std = np.exp(self.log_std.astype(np.float64))
        self.obs_norm: ObsNormalizer | None = None
        if "obs_rms.mean" in tensors:
            mean = np.asarray(tensors["obs_rms.mean"], dtype=np.float64)
            var = np.asarray(tensors["obs_rms.var"], dtype=np.float64)
            if mean.shape != (self.obs_dim,) or var.shape != (self.obs_dim,):
                raise PolicyError(f"obs_rms has {mean.shape[0]} dims, the network takes {self.obs_dim}")
            try:
                clip = float(meta["obs_clip"])
            except (KeyError, ValueError) as e:
                raise PolicyError("obs_rms without a numeric obs_clip in the metadata") from e
            self.obs_norm = ObsNormalizer(mean, var, clip)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Reads a run's ``model.safetensors`` or a ``checkpoint-*.safetensors`` (its optimiser state is ignored)."""
        return cls(Path(path).read_bytes())

    @property
    def obs_dim(self) -> int:
        return self.actor.in_dim

    @property
    def discrete(self) -> bool:
        """True for a Categorical head (no ``actor_logstd``)."""
        return self.log_std is None

    @property
    def action_dim(self) -> int:
        """Values per action in a rollout (1 for Discrete)."""
        return 1 if self.discrete else self.actor.out_dim

    @property
    def hidden_sizes(self) -> list[int]:
        return self.actor.hidden_sizes

    def _input(self, obs: npt.ArrayLike) -> F32:
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise PolicyError(f"observations of shape {x.shape}, expected [B, {self.obs_dim}]")
        return self.obs_norm.normalize(x) if self.obs_norm else x

    def head(self, obs: npt.ArrayLike) -> F32:
        """Logits (Discrete) or the Gaussian mean (Box) for raw observations ``[B, obs_dim]``."""
        return self.actor.forward(self._input(obs))

    def value(self, obs: npt.ArrayLike) -> F32:
        """Value estimates ``[B]`` for raw observations."""
        return self.critic.forward(self._input(obs))[:, 0]

    def log_prob(self, obs: npt.ArrayLike, actions: npt.ArrayLike) -> F32:
        """Log-probabilities ``[B]`` of ``actions`` (``[B, action_dim]`` as in a rollout)."""
        return self._score(self.head(obs), np.asarray(actions, dtype=np.float32).reshape(-1, self.action_dim))

    def entropy(self, obs: npt.ArrayLike) -> F32:
        """Entropy ``[B]`` of the action distribution."""
        h = self.head(obs)
        if self.log_std is None:
            return categorical_entropy(h)
        return np.full(h.shape[0], gaussian_entropy(self.log_std), dtype=np.float32)

    def _score(self, head: F32, actions: F32) -> F32:
        if self.log_std is None:
            idx = actions[:, 0].astype(np.int64)
            return np.take_along_axis(log_softmax(head), idx[:, None], axis=1)[:, 0]
        return gaussian_log_prob(head, actions, self.log_std)

    def act(self, obs: npt.ArrayLike, rng: np.random.Generator, deterministic: bool = False) -> ActOutput:
        """Samples (or, if ``deterministic``, takes the mode of) actions for raw observations ``[B, obs_dim]``."""
        head, values = self.joint.forward(self._input(obs))
        if self.log_std is None:
            # Inverse-CDF draw per row, like the Rust sampler (exp of max-shifted logits); the log-probability is
            # read off the same shifted logits: log p_i = z_i - ln(sum exp z).
            z = head - head.max(axis=1, keepdims=True)
            cdf = np.cumsum(np.exp(z), axis=1)
            total = cdf[:, -1]
            if deterministic:
                idx = head.argmax(axis=1)
            else:
                u = rng.random(head.shape[0], dtype=np.float32) * total
                idx = np.minimum((u[:, None] >= cdf).sum(axis=1), head.shape[1] - 1)
            log_probs = z[np.arange(head.shape[0]), idx] - np.log(total)
            return ActOutput(actions=idx.astype(np.float32)[:, None], log_probs=log_probs, values=values)
        if deterministic:
            actions = head.copy()
        else:
            eps = rng.standard_normal(head.shape)
            actions = (head + self.std * eps).astype(np.float32)
        return ActOutput(actions=actions, log_probs=self._score(head, actions), values=values)
