"""The action distributions on the policy head's output, the numbers of the Rust ``common::distributions``.

One type per head of the model spec: :class:`Categorical` over the logits (``Discrete``), :class:`MultiCategorical`
with one Categorical per consecutive block of ``nvec[i]`` logits whose log-probabilities and entropies add up
(``MultiDiscrete``), and :class:`DiagGaussian` with a state-independent log-std (``Box``). Each samples, takes
the mode, scores actions and gives the entropy, for a batch ``[B, head width]``; actions are ``[B, action_dim]``
f32 (the index for Categorical, ``len(nvec)`` indices for MultiCategorical, the unclipped sample for Gaussian).
Everything is f32, as the Rust side computes it.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

from .model import CategoricalHead, GaussianHead, Head, MultiCategoricalHead

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: ``0.5 * ln(2 pi)`` rounded to f32, as the Rust side uses it.
HALF_LN_2PI = np.float32(0.5 * math.log(2.0 * math.pi))


def log_softmax(logits: F32) -> F32:
    """Row-wise log-softmax in f32, max-shifted like the Rust ``log_sum_exp``."""
    m = logits.max(axis=-1, keepdims=True)
    log_z = m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True, dtype=np.float32))
    return (logits - log_z).astype(np.float32, copy=False)


def categorical_entropy(logits: F32) -> F32:
    """``-sum p log p`` per row."""
    lp = log_softmax(logits)
    return (-(np.exp(lp) * lp).sum(axis=-1)).astype(np.float32)


def categorical_log_prob(logits: F32, idx: I64) -> F32:
    """Log-probability of index ``idx[b]`` under Categorical(``logits[b]``), per row."""
    return np.take_along_axis(log_softmax(logits), idx[:, None], axis=1)[:, 0]


def gaussian_log_prob(mean: F32, actions: F32, log_std: F32) -> F32:
    """Diagonal Gaussian log-density of ``actions`` per row, summed over dimensions."""
    z = (actions - mean) / np.exp(log_std)
    return (-0.5 * z * z - log_std - HALF_LN_2PI).sum(axis=-1, dtype=np.float32)


def gaussian_entropy(log_std: F32) -> np.float32:
    """Entropy of the diagonal Gaussian (independent of the mean)."""
    return np.float32((log_std + np.float32(0.5) + HALF_LN_2PI).sum(dtype=np.float32))


def _pick(logits: F32, u: F32 | None) -> tuple[I64, F32]:
    """An index per row and its log-probability: the inverse-CDF draw for uniforms ``u`` in [0, 1), like the Rust
    sampler (``u * sum`` walked along the cumulative exp of the max-shifted logits), or the argmax for ``None``.
    The log-probability is read off the same shifted logits: ``log p_i = z_i - ln(sum exp z)``."""
    z = logits - logits.max(axis=1, keepdims=True)
    cdf = np.cumsum(np.exp(z), axis=1)
    total = cdf[:, -1]
    if u is None:
        idx = logits.argmax(axis=1)
    else:
        idx = np.minimum(((u * total)[:, None] >= cdf).sum(axis=1), logits.shape[1] - 1)
    return idx, z[np.arange(logits.shape[0]), idx] - np.log(total)


class ActionDist(ABC):
    """The action distribution a policy head's output parameterises, batch-wise."""

    @property
    @abstractmethod
    def action_dim(self) -> int:
        """Values per action in a rollout."""

    @abstractmethod
    def sample(self, head: F32, rng: np.random.Generator) -> tuple[F32, F32]:
        """Actions ``[B, action_dim]`` drawn from the distribution and their log-probabilities ``[B]``."""

    @abstractmethod
    def mode(self, head: F32) -> tuple[F32, F32]:
        """The most likely actions ``[B, action_dim]`` (the deterministic policy) and their log-probabilities."""

    @abstractmethod
    def log_prob(self, head: F32, actions: F32) -> F32:
        """Log-probabilities ``[B]`` of ``actions`` ``[B, action_dim]``."""

    @abstractmethod
    def entropy(self, head: F32) -> F32:
        """Entropy ``[B]``."""


class Categorical(ActionDist):
    """One Categorical over all the head's logits; the action is the index as f32."""

    @property
    def action_dim(self) -> int:
        return 1

    def sample(self, head: F32, rng: np.random.Generator) -> tuple[F32, F32]:
        idx, log_probs = _pick(head, rng.random((head.shape[0],), dtype=np.float32))
        return idx.astype(np.float32)[:, None], log_probs

    def mode(self, head: F32) -> tuple[F32, F32]:
        idx, log_probs = _pick(head, None)
        return idx.astype(np.float32)[:, None], log_probs

    def log_prob(self, head: F32, actions: F32) -> F32:
        return categorical_log_prob(head, actions[:, 0].astype(np.int64))

    def entropy(self, head: F32) -> F32:
        return categorical_entropy(head)


class MultiCategorical(ActionDist):
    """One Categorical per consecutive block of ``nvec[i]`` logits; an action is ``len(nvec)`` indices as f32,
    its log-probability and entropy the sums over the blocks."""

    def __init__(self, nvec: tuple[int, ...]) -> None:
        ends = list(itertools.accumulate(nvec))
        self.blocks = [slice(end - n, end) for n, end in zip(nvec, ends, strict=True)]

    @property
    def action_dim(self) -> int:
        return len(self.blocks)

    def _act(self, head: F32, u: F32 | None) -> tuple[F32, F32]:
        actions = np.empty((head.shape[0], len(self.blocks)), dtype=np.float32)
        log_probs = np.zeros(head.shape[0], dtype=np.float32)
        for k, block in enumerate(self.blocks):
            idx, lp = _pick(head[:, block], None if u is None else u[:, k])
            actions[:, k] = idx
            log_probs += lp
        return actions, log_probs

    def sample(self, head: F32, rng: np.random.Generator) -> tuple[F32, F32]:
        # One uniform per row and block, row by row and the blocks left to right within a row.
        return self._act(head, rng.random((head.shape[0], len(self.blocks)), dtype=np.float32))

    def mode(self, head: F32) -> tuple[F32, F32]:
        return self._act(head, None)

    def log_prob(self, head: F32, actions: F32) -> F32:
        log_probs = np.zeros(head.shape[0], dtype=np.float32)
        for k, block in enumerate(self.blocks):
            log_probs += categorical_log_prob(head[:, block], actions[:, k].astype(np.int64))
        return log_probs

    def entropy(self, head: F32) -> F32:
        entropy = np.zeros(head.shape[0], dtype=np.float32)
        for block in self.blocks:
            entropy += categorical_entropy(head[:, block])
        return entropy


class DiagGaussian(ActionDist):
    """A diagonal Gaussian around the head's means with the state-independent ``log_std``; actions are the
    unclipped samples."""

    def __init__(self, log_std: F32) -> None:
        self.log_std = log_std
        #: The standard deviations in f64, for sampling.
        self.std = np.exp(log_std.astype(np.float64))

    @property
    def action_dim(self) -> int:
        return int(self.log_std.shape[0])

    def sample(self, head: F32, rng: np.random.Generator) -> tuple[F32, F32]:
        actions = (head + self.std * rng.standard_normal(head.shape)).astype(np.float32)
        return actions, self.log_prob(head, actions)

    def mode(self, head: F32) -> tuple[F32, F32]:
        actions = head.copy()
        return actions, self.log_prob(head, actions)

    def log_prob(self, head: F32, actions: F32) -> F32:
        return gaussian_log_prob(head, actions, self.log_std)

    def entropy(self, head: F32) -> F32:
        return np.full(head.shape[0], gaussian_entropy(self.log_std), dtype=np.float32)


def for_head(head: Head, log_std: F32 | None) -> ActionDist:
    """The distribution of a spec's head; a Gaussian head takes the snapshot's ``actor_logstd`` values."""
    if isinstance(head, CategoricalHead):
        return Categorical()
    if isinstance(head, MultiCategoricalHead):
        return MultiCategorical(head.nvec)
    assert isinstance(head, GaussianHead) and log_std is not None
    return DiagGaussian(log_std)
