"""Numpy inference on a proxima policy snapshot, the same numbers as the Rust actor's `common::policy`.

A snapshot is a safetensors file: the network's parameters named like a PyTorch ``state_dict``, ``actor_logstd``
``[1, D]`` for a Gaussian head, and, with observation normalisation, ``obs_rms.mean`` / ``obs_rms.var`` (f64) with the
clip value in the metadata key ``obs_clip``. The metadata key ``model`` holds the model spec
(:mod:`proxima_actor.model`, ``docs/model-spec.md``), which decides the network and the action distribution; the
tensors must have exactly the shapes it implies. Each trunk is one ``torch.nn.Sequential``: convolutions at even
indices ``2i`` (conv encoders only; weights ``[out, in, k, k]``), a ``Flatten`` at ``2L``, then Linear layers
(``[out, in]``) at even indices from ``2L + 1`` (from 0 without convolutions), the activation between them. With
separate trunks, ``actor.*`` ends in the policy layer and ``critic.*`` in the value layer; with a shared trunk,
``network.*`` ends in its last hidden layer (and its activation), and ``actor.weight``/``actor.bias`` and
``critic.weight``/``critic.bias`` are single Linear layers on its output.

A recurrent core runs between the trunk and the heads: PyTorch's one-layer ``nn.LSTM`` (``lstm.*``, gates i, f, g, o)
or ``nn.GRU`` (``gru.*``, gates r, z, n), ``weight_ih_l0`` ``[G * H, F]``, ``weight_hh_l0`` ``[G * H, H]``,
``bias_ih_l0`` and ``bias_hh_l0`` ``[G * H]``; the heads take its output ``h'`` (width ``H``). With separate trunks
each has a core of its own (SB3 RecurrentPPO's ``enable_critic_lstm``): ``actor.*`` and ``critic.*`` are then laid
out as a shared trunk's ``network.*`` (no head layer; the activation after the last hidden layer too), their cores
are ``actor_lstm.*`` / ``critic_lstm.*`` (``actor_gru.*`` / ``critic_gru.*``), and the heads ``actor_head`` and
``critic_head`` are single Linear layers on the actor's and the critic's core output. Each env carries a state
between steps (:attr:`Policy.state_dim` values: ``[h, c]`` for an LSTM, ``h`` for a GRU; with a core per trunk the
actor's core's state then the critic's), zero at the first step of each episode: :meth:`Policy.act` and the scoring
methods take it and :meth:`Policy.act` returns the next one, and :meth:`Policy.sequence` runs whole time-major
rollouts, resetting states where episodes start.

Snapshots written before the spec have no ``model`` key: they hold two MLPs (``actor.*`` and ``critic.*``) whose
hidden sizes are read off the tensors' shapes, the activation from the metadata key ``activation`` (``tanh`` when
absent), and the head is a Gaussian with ``actor_logstd``, else a Categorical; their observations are float32
vectors.

Observations reach the network as rows of ``obs_dim`` f32 values: a spec's ``uint8`` observations (images)
multiplied by 1/255 and never normalised, float32 ones normalised with ``obs_rms`` when the snapshot has it. A conv
encoder reads each row as one image of ``obs_shape`` in the spec's layout.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.numpy import load as load_safetensors

from .distributions import ActionDist, for_head
from .model import (
    ACTIVATION_KEY,
    ACTIVATIONS,
    MODEL_KEY,
    CategoricalHead,
    Core,
    GaussianHead,
    ModelSpec,
    SpecError,
)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: Added to the variance before the square root when normalising observations (as the Rust side).
NORM_EPS = 1e-8
#: Name of the Gaussian head's state-independent log-std tensor.
LOG_STD = "actor_logstd"

#: A layer of a snapshot without a spec.
_LAYER = re.compile(r"^(actor|critic)\.(\d+)\.(weight|bias)$")
#: A parameter of any spec's network (a shared trunk's heads have no index, separate cores' heads are
#: ``{actor,critic}_head``; recurrent cores are named as PyTorch's, with ``{actor,critic}_`` before separate ones).
_PARAM = re.compile(
    r"^(actor|critic|network)(\.\d+)?\.(weight|bias)$|^(actor_|critic_)?(lstm|gru)\.(weight|bias)_(ih|hh)_l\d+$"
    r"|^(actor|critic)_head\.(weight|bias)$"
)


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


def sigmoid_(x: F32) -> F32:
    """The logistic function in place, returns ``x``: as ``(1 + tanh(x / 2)) / 2``, which never overflows."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


def activate(x: F32, activation: str) -> F32:
    """Applies the hidden layers' activation in place and returns ``x``."""
    if activation == "relu":
        np.maximum(x, 0.0, out=x)
    else:
        np.tanh(x, out=x)
    return x


@dataclass(frozen=True)
class Mlp:
    """Linear layers with an activation (``tanh`` or ``relu``) between them (after the last too when
    ``activate_last``: a shared trunk's)."""

    weights: tuple[F32, ...]
    biases: tuple[F32, ...]
    activation: str = "tanh"
    activate_last: bool = False

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
            if i + 1 < len(self.weights) or self.activate_last:
                x = activate(x, self.activation)
        return x.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Conv2d:
    """One convolution (no padding) on channels-last images ``[B, H, W, C]``, as im2col and one matrix product:
    ``weight`` is PyTorch's ``[out, C, k, k]`` as the matrix ``[C * k * k, out]``, rows in ``(C, kh, kw)`` order."""

    weight: F32
    bias: F32
    kernel: int
    stride: int

    @classmethod
    def of(cls, weight: np.ndarray, bias: np.ndarray, stride: int) -> Conv2d:
        """The convolution of PyTorch's ``Conv2d`` parameters (weight ``[out, C, k, k]``, bias ``[out]``)."""
        out, _, kernel, _ = weight.shape
        matrix = np.ascontiguousarray(np.asarray(weight, dtype=np.float32).reshape(out, -1).T)
        return cls(matrix, np.ascontiguousarray(bias, dtype=np.float32), int(kernel), stride)

    def patches(self, x: F32) -> F32:
        """im2col of images ``[B, H, W, C]`` (any strides): ``[B, H', W', C * k * k]``, one filter position's inputs
        per row, in the order of :attr:`weight`'s rows."""
        k, s = self.kernel, self.stride
        windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]  # [B, H', W', C, k, k]
        b, h, w = windows.shape[:3]
        return windows.reshape(b, h, w, -1)

    def forward(self, patches: F32, activation: str) -> F32:
        """The activated output ``[B, H', W', out]`` for :meth:`patches`' output."""
        b, h, w, n = patches.shape
        y = (patches.reshape(-1, n) @ self.weight).reshape(b, h, w, -1)
        y += self.bias
        return activate(y, activation)


@dataclass(frozen=True)
class Trunk:
    """One ``torch.nn.Sequential`` of the spec: convolutions over the image, each followed by the activation (none
    for an MLP encoder), then the Linear layers. For convolutions, inputs ``[B, obs_dim]`` are images of ``image``
    (``[H, W, C]``, or ``[C, H, W]`` when ``channels_first``) and run channels last; the first Linear layer's
    columns are reordered once from PyTorch's ``(C, H, W)`` flatten order to ``(H, W, C)``."""

    convs: tuple[Conv2d, ...]
    mlp: Mlp
    image: tuple[int, int, int] = (0, 0, 0)
    channels_first: bool = False

    def first_patches(self, x: F32) -> F32:
        """The first convolution's :meth:`Conv2d.patches` for inputs ``[B, obs_dim]``."""
        images = x.reshape(len(x), *self.image)
        if self.channels_first:
            images = images.transpose(0, 2, 3, 1)
        return self.convs[0].patches(images)

    def forward(self, x: F32, patches: F32 | None = None) -> F32:
        """``[B, in] -> [B, out]`` in f32; ``patches``: :meth:`first_patches` of ``x`` when already computed."""
        if not self.convs:
            return self.mlp.forward(x)
        h = self.convs[0].forward(self.first_patches(x) if patches is None else patches, self.mlp.activation)
        for conv in self.convs[1:]:
            h = conv.forward(conv.patches(h), self.mlp.activation)
        return self.mlp.forward(h.reshape(len(h), -1))


@dataclass(frozen=True)
class RecurrentCore:
    """A one-layer LSTM or GRU of ``size`` units on features of ``in_dim`` values, PyTorch's ``nn.LSTM`` /
    ``nn.GRU`` (gate blocks i, f, g, o / r, z, n), in f32. ``w_ih`` and ``w_hh`` are ``weight_ih_l0`` and
    ``weight_hh_l0`` transposed (``[in_dim, G * size]``, ``[size, G * size]``). A state is ``[B, state_dim]``:
    ``[h, c]`` for an LSTM, ``h`` for a GRU."""

    kind: str
    size: int
    w_ih: F32
    w_hh: F32
    b_ih: F32
    b_hh: F32

    @property
    def state_dim(self) -> int:
        return 2 * self.size if self.kind == "lstm" else self.size

    def project(self, x: F32) -> F32:
        """The input's part of every gate, ``x W_ih^T + b_ih``: ``[B, G * size]`` for features ``[B, in_dim]``."""
        y = x @ self.w_ih
        y += self.b_ih
        return y

    def cell(self, xw: F32, state: F32) -> F32:
        """The next state ``[B, state_dim]`` (a new array; its first ``size`` columns are the output ``h'``) for the
        inputs' :meth:`project` ``[B, G * size]`` and the state ``[B, state_dim]``."""
        n = self.size
        h = state[:, :n]
        hw = h @ self.w_hh
        hw += self.b_hh
        if self.kind == "lstm":
            # c' = sigmoid(f) * c + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c')
            gates = xw + hw
            sigmoid_(gates[:, : 2 * n])
            np.tanh(gates[:, 2 * n : 3 * n], out=gates[:, 2 * n : 3 * n])
            sigmoid_(gates[:, 3 * n :])
            out = np.empty((len(gates), 2 * n), dtype=np.float32)
            c = out[:, n:]
            np.multiply(gates[:, n : 2 * n], state[:, n:], out=c)
            c += gates[:, :n] * gates[:, 2 * n : 3 * n]
            np.tanh(c, out=out[:, :n])
            out[:, :n] *= gates[:, 3 * n :]
            return out
        # r, z = sigmoid(x W_i{r,z} + b_i{r,z} + h W_h{r,z} + b_h{r,z}), n = tanh(x W_in + b_in + r * (h W_hn + b_hn)),
        # h' = (1 - z) * n + z * h
        rz = sigmoid_(xw[:, : 2 * n] + hw[:, : 2 * n])
        r, z = rz[:, :n], rz[:, n:]
        candidate = hw[:, 2 * n :]
        candidate *= r
        candidate += xw[:, 2 * n :]
        np.tanh(candidate, out=candidate)
        out = (1 - z) * candidate
        out += z * h
        return out

    def step(self, x: F32, state: F32) -> tuple[F32, F32]:
        """The output ``h'`` ``[B, size]`` and the next state for features ``[B, in_dim]`` and states
        ``[B, state_dim]``."""
        out = self.cell(self.project(x), state)
        return out[:, : self.size], out

    def sequence(self, x: F32, starts: npt.NDArray[np.bool_], state: F32) -> tuple[F32, F32]:
        """Runs ``T`` steps of ``N`` envs: features ``[T * N, in_dim]`` time-major (row ``t * N + j`` is env ``j``'s
        step ``t``), ``starts`` ``[T * N]`` (env ``j``'s state is zeroed before row ``t * N + j``), ``state``
        ``[N, state_dim]`` before step 0 (not modified). The outputs ``h'`` ``[T * N, size]`` and the final state."""
        n = len(state)
        xw = self.project(x)
        hs = np.empty((len(x), self.size), dtype=np.float32)
        for t in range(0, len(x), n):
            rows = slice(t, t + n)
            reset = starts[rows]
            if reset.any():
                state = np.where(reset[:, None], np.float32(0.0), state)
            state = self.cell(xw[rows], state)
            hs[rows] = state[:, : self.size]
        return hs, state


#: A :class:`RecurrentCore` run on features and a state: the output ``h'`` and the next state.
_RunCore = Callable[[RecurrentCore, F32, F32], tuple[F32, F32]]


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


class ActorCritic:
    """The spec's network on inputs ``[B, obs_dim]``: ``body`` the shared trunk (``None`` with separate memoryless
    trunks), ``core`` the recurrent core on its output (``None``: memoryless), ``actor`` and ``critic`` the policy
    and value trunks on the core's or the trunk's output (single Linear layers with a shared trunk or a core).

    With ``critic_core`` the actor and the critic have a trunk and a core each: ``body`` and ``core`` are then the
    actor's, ``critic_body`` and ``critic_core`` the critic's, ``actor`` reads the actor's core and ``critic`` the
    critic's, and a state is the actor's core's state then the critic's. :meth:`head`, :meth:`value` and
    :meth:`forward` are the memoryless network's; :meth:`step` and :meth:`sequence` run any."""

    def __init__(
        self,
        body: Trunk | None,
        actor: Trunk,
        critic: Trunk,
        core: RecurrentCore | None = None,
        critic_body: Trunk | None = None,
        critic_core: RecurrentCore | None = None,
    ) -> None:
        if (critic_core is None) != (critic_body is None) or (
            critic_core is not None and (core is None or body is None)
        ):
            raise ValueError("a critic core comes with the critic's trunk and the actor's trunk and core")
        self.body, self.actor, self.critic, self.core = body, actor, critic, core
        self.critic_body, self.critic_core = critic_body, critic_core
        #: Both heads in one network when neither has convolutions and both read the same input.
        separate = critic_core is not None
        self.joint = JointMlp(actor.mlp, critic.mlp) if not (actor.convs or critic.convs or separate) else None

    def features(self, x: F32) -> F32:
        return self.body.forward(x) if self.body else x

    def head(self, x: F32) -> F32:
        """The head ``[B, logits]``."""
        return self.actor.forward(self.features(x))

    def value(self, x: F32) -> F32:
        """The values ``[B]``."""
        return self.critic.forward(self.features(x))[:, 0]

    def forward(self, x: F32) -> tuple[F32, F32]:
        """The head and the values, sharing what the two have in common: the trunk, or the first convolution's
        im2col (both trunks' first convolutions have the same filter size and stride)."""
        f = self.features(x)
        if self.joint is not None:
            return self.joint.forward(f)
        patches = self.actor.first_patches(f)
        return self.actor.forward(f, patches), self.critic.forward(f, patches)[:, 0]

    def _heads(self, h: F32) -> tuple[F32, F32]:
        """The head and the values for the core's output ``[B, size]`` (a core's heads are single Linear layers)."""
        if self.joint is not None:
            return self.joint.forward(h)
        return self.actor.forward(h), self.critic.forward(h)[:, 0]

    def _recurrent(self, core: RecurrentCore, x: F32, state: F32, run: _RunCore) -> tuple[F32, F32, F32]:
        """The head, the values and the state after ``run`` (a :class:`RecurrentCore` method applied to a core,
        its features and its part of ``state``) for inputs ``x``: through ``core`` (:attr:`core`) alone, or through
        the actor's and the critic's each (both trunks' first convolutions share their im2col)."""
        if self.critic_core is None or self.critic_body is None:
            h, state = run(core, self.features(x), state)
            return (*self._heads(h), state)
        assert self.body is not None  # it comes with a critic core (__init__)
        patches = self.body.first_patches(x) if self.body.convs else None
        n = core.state_dim
        h_actor, s_actor = run(core, self.body.forward(x, patches), state[:, :n])
        h_critic, s_critic = run(self.critic_core, self.critic_body.forward(x, patches), state[:, n:])
        state = np.concatenate([s_actor, s_critic], axis=1)
        return self.actor.forward(h_actor), self.critic.forward(h_critic)[:, 0], state

    def step(self, x: F32, state: F32) -> tuple[F32, F32, F32]:
        """One step of the network: the head, the values and the next state for inputs ``[B, in]`` and states
        ``[B, state_dim]`` (returned as they are without a core)."""
        if self.core is None:
            return (*self.forward(x), state)
        return self._recurrent(self.core, x, state, RecurrentCore.step)

    def sequence(self, x: F32, starts: npt.NDArray[np.bool_], state: F32) -> tuple[F32, F32, F32]:
        """:meth:`RecurrentCore.sequence` through the whole network: the head and the values of every row of the
        time-major inputs ``[T * N, in]`` and the final state ``[N, state_dim]`` (``state`` without a core)."""
        if self.core is None:
            return (*self.forward(x), state)
        return self._recurrent(self.core, x, state, lambda core, f, s: core.sequence(f, starts, s))


@dataclass(frozen=True)
class ActOutput:
    """Actions (unclipped), their log-probabilities under the policy, and value estimates for a batch."""

    actions: F32
    """``[B, action_dim]`` (Discrete: the index as f32, ``action_dim = 1``; MultiDiscrete: ``len(nvec)`` indices)."""
    log_probs: F32
    """``[B]``."""
    values: F32
    """``[B]``."""
    state: F32 | None = None
    """``[B, state_dim]``: each env's state after this step, for the next one (see :meth:`Policy.act`)."""


@dataclass(frozen=True)
class SequenceOutput:
    """What :meth:`Policy.sequence` computes for ``T`` steps of ``N`` envs, every per-row array time-major over the
    ``T * N`` rows (row ``t * N + j``: env ``j``'s step ``t``)."""

    head: F32
    """``[T * N, logits]``: the logits, or the Gaussian mean."""
    values: F32
    """``[T * N]``."""
    entropy: F32
    """``[T * N]``."""
    log_probs: F32 | None
    """``[T * N]`` log-probabilities of the actions passed, ``None`` when none were."""
    final_state: F32
    """``[N, state_dim]``: each env's state after the last step."""


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
    """The ``prefix`` MLP of a snapshot without a spec: its layers read off the tensors' names and shapes."""
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


def _legacy(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> tuple[ModelSpec, ActorCritic, F32 | None]:
    """The spec, the network and the log-std of a snapshot written before the spec (no ``model`` key)."""
    activation = meta.get(ACTIVATION_KEY, "tanh")
    if activation not in ACTIVATIONS:
        raise PolicyError(f"unknown activation {activation!r} in the metadata (tanh or relu)")
    actor = _mlp(tensors, "actor", activation)
    critic = _mlp(tensors, "critic", activation)
    if critic.out_dim != 1:
        raise PolicyError(f"the critic has {critic.out_dim} outputs, expected 1")
    if actor.in_dim != critic.in_dim:
        raise PolicyError("actor and critic take inputs of different widths")
    log_std = None
    if LOG_STD in tensors:
        log_std = np.asarray(tensors[LOG_STD], dtype=np.float32).reshape(-1)
        if log_std.shape[0] != actor.out_dim:
            raise PolicyError(f"{LOG_STD} has {log_std.shape[0]} values, the actor {actor.out_dim} outputs")
    head = CategoricalHead(actor.out_dim) if log_std is None else GaussianHead(actor.out_dim)
    spec = ModelSpec(
        obs_dim=actor.in_dim,
        hidden_sizes=tuple(actor.hidden_sizes),
        activation=activation,
        head=head,
        obs_shape=(actor.in_dim,),
        obs_dtype="float32",
    )
    return spec, ActorCritic(None, Trunk((), actor), Trunk((), critic)), log_std


def _linear_offset(spec: ModelSpec) -> int:
    """Index of a trunk's first Linear layer: after the convolutions, their activations and the ``Flatten``."""
    return 2 * len(spec.conv) + 1 if spec.conv else 0


def _trunk_shapes(spec: ModelSpec, net: str, out: int | None) -> dict[str, tuple[int, ...]]:
    """The parameters of the ``net`` trunk and their shapes: the convolutions, the hidden layers and, for ``out``,
    a last layer of ``out`` units."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (layer, image) in enumerate(zip(spec.conv, spec.conv_dims(), strict=False)):
        shapes[f"{net}.{2 * i}.weight"] = (layer.out_channels, image.c, layer.kernel, layer.kernel)
        shapes[f"{net}.{2 * i}.bias"] = (layer.out_channels,)
    widths = [spec.features, *spec.hidden_sizes, *([] if out is None else [out])]
    o = _linear_offset(spec)
    for j, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        shapes[f"{net}.{o + 2 * j}.weight"] = (n_out, n_in)
        shapes[f"{net}.{o + 2 * j}.bias"] = (n_out,)
    return shapes


def _f32(t: np.ndarray) -> F32:
    return np.ascontiguousarray(t, dtype=np.float32)


def _trunk(tensors: dict[str, np.ndarray], spec: ModelSpec, net: str, layers: int, activate_last: bool) -> Trunk:
    """The ``net`` trunk of ``spec`` (with ``layers`` Linear layers) from a snapshot's checked tensors."""
    o = _linear_offset(spec)
    indices = range(o, o + 2 * layers, 2)
    weights = [_f32(tensors[f"{net}.{i}.weight"]) for i in indices]
    mlp_biases = tuple(_f32(tensors[f"{net}.{i}.bias"]) for i in indices)
    dims = spec.conv_dims()
    if not dims:
        return Trunk((), Mlp(tuple(weights), mlp_biases, spec.activation, activate_last))
    convs = tuple(
        Conv2d.of(tensors[f"{net}.{2 * i}.weight"], tensors[f"{net}.{2 * i}.bias"], layer.stride)
        for i, layer in enumerate(spec.conv)
    )
    last = dims[-1]  # the flatten's (C, H, W) order as the channels-last convolutions give it, (H, W, C)
    w0 = weights[0]
    weights[0] = _f32(w0.reshape(len(w0), last.c, last.h, last.w).transpose(0, 2, 3, 1).reshape(len(w0), -1))
    mlp = Mlp(tuple(weights), mlp_biases, spec.activation, activate_last)
    first = dims[0]
    channels_first = spec.layout == "chw" and len(spec.obs_shape) == 3
    image = (first.c, first.h, first.w) if channels_first else (first.h, first.w, first.c)
    return Trunk(convs, mlp, image, channels_first)


def _core_shapes(name: str, core: Core, width: int) -> dict[str, tuple[int, ...]]:
    """The parameters of the recurrent ``core`` named ``name`` (``lstm``, ``actor_gru``, ...) on features of
    ``width`` values, and their shapes."""
    g = core.gates * core.size
    return {
        f"{name}.weight_ih_l0": (g, width),
        f"{name}.weight_hh_l0": (g, core.size),
        f"{name}.bias_ih_l0": (g,),
        f"{name}.bias_hh_l0": (g,),
    }


def _recurrent_core(tensors: dict[str, np.ndarray], name: str, core: Core) -> RecurrentCore:
    """The recurrent ``core`` named ``name`` from a snapshot's checked tensors."""
    return RecurrentCore(
        kind=core.kind,
        size=core.size,
        w_ih=_f32(tensors[f"{name}.weight_ih_l0"].T),
        w_hh=_f32(tensors[f"{name}.weight_hh_l0"].T),
        b_ih=_f32(tensors[f"{name}.bias_ih_l0"]),
        b_hh=_f32(tensors[f"{name}.bias_hh_l0"]),
    )


def _from_spec(tensors: dict[str, np.ndarray], spec: ModelSpec) -> tuple[ActorCritic, F32 | None]:
    """The network and the log-std of ``spec``, after checking that the snapshot holds exactly the parameters the
    spec implies, with their shapes (the first missing or misshapen one is the error)."""
    core = spec.core
    outputs = {"actor": spec.head.logits_dim, "critic": 1}
    width = spec.hidden_sizes[-1]
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.shared_trunk:
        shapes.update(_trunk_shapes(spec, "network", None))
        if core.recurrent:
            shapes.update(_core_shapes(core.kind, core, width))
        head_in = core.size if core.recurrent else width
        for net, out in outputs.items():
            shapes[f"{net}.weight"], shapes[f"{net}.bias"] = (out, head_in), (out,)
    elif core.recurrent:  # a trunk, a core and a single Linear head each
        for net, out in outputs.items():
            shapes.update(_trunk_shapes(spec, net, None))
            shapes.update(_core_shapes(f"{net}_{core.kind}", core, width))
            shapes[f"{net}_head.weight"], shapes[f"{net}_head.bias"] = (out, core.size), (out,)
    else:
        for net, out in outputs.items():
            shapes.update(_trunk_shapes(spec, net, out))
    if isinstance(spec.head, GaussianHead):
        shapes[LOG_STD] = (1, spec.head.dim)
    for name, shape in shapes.items():
        if name not in tensors:
            raise PolicyError(f"{name} is missing: the model spec ({spec.describe()}) needs it, shape {list(shape)}")
        if tensors[name].shape != shape:
            raise PolicyError(
                f"{name} has shape {list(tensors[name].shape)}, the model spec ({spec.describe()}) needs {list(shape)}"
            )
    for name in tensors:
        if (_PARAM.match(name) or name == LOG_STD) and name not in shapes:
            raise PolicyError(f"{name} is not a parameter of the model spec ({spec.describe()})")

    def linear(name: str) -> Trunk:
        """The single Linear layer ``name``."""
        return Trunk((), Mlp((_f32(tensors[f"{name}.weight"]),), (_f32(tensors[f"{name}.bias"]),), spec.activation))

    layers = len(spec.hidden_sizes)
    if spec.shared_trunk:
        recurrent = _recurrent_core(tensors, core.kind, core) if core.recurrent else None
        trunk = _trunk(tensors, spec, "network", layers, True)
        network = ActorCritic(trunk, linear("actor"), linear("critic"), recurrent)
    elif core.recurrent:
        actor_body, critic_body = (_trunk(tensors, spec, net, layers, True) for net in outputs)
        actor_core, critic_core = (_recurrent_core(tensors, f"{net}_{core.kind}", core) for net in outputs)
        network = ActorCritic(
            actor_body, linear("actor_head"), linear("critic_head"), actor_core, critic_body, critic_core
        )
    else:
        actor, critic = (_trunk(tensors, spec, net, layers + 1, False) for net in outputs)
        network = ActorCritic(None, actor, critic)
    log_std = np.asarray(tensors[LOG_STD], dtype=np.float32).reshape(-1) if LOG_STD in shapes else None
    return network, log_std


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
        log_std: F32 | None
        if MODEL_KEY in meta:
            try:
                self.spec = ModelSpec.from_json(meta[MODEL_KEY])
            except SpecError as e:
                raise PolicyError(str(e)) from e
            self.net, log_std = _from_spec(tensors, self.spec)
        else:
            self.spec, self.net, log_std = _legacy(tensors, meta)
        #: The action distribution the head's output parameterises.
        self.dist: ActionDist = for_head(self.spec.head, log_std)
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
        return self.spec.obs_dim

    @property
    def discrete(self) -> bool:
        """True for a Categorical head (one index per action)."""
        return isinstance(self.spec.head, CategoricalHead)

    @property
    def action_dim(self) -> int:
        """Values per action in a rollout (1 for Categorical, ``len(nvec)`` for MultiCategorical)."""
        return self.spec.head.action_dim

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.spec.hidden_sizes)

    def _input(self, obs: npt.ArrayLike) -> F32:
        """The network's input ``[B, obs_dim]`` (f32) for raw observations ``[B, *obs_shape]`` or ``[B, obs_dim]``
        of any numeric dtype: ``uint8`` observations (the spec's ``obs_dtype``) multiplied by the spec's
        ``obs_scale`` as an f32 (:data:`proxima_actor.model.UINT8_SCALE` for images, 1 for 0/1 planes), others
        normalised when the snapshot has observation statistics."""
        x = np.asarray(obs)
        shape = self.spec.obs_shape
        if x.shape[1:] not in (shape, (self.obs_dim,)):
            raise PolicyError(
                f"observations of shape {list(x.shape)}, expected [B, {self.obs_dim}] or [B, *{list(shape)}]"
            )
        rows = x.reshape(len(x), self.obs_dim).astype(np.float32, copy=False)
        if self.spec.obs_dtype == "uint8":
            return rows * np.float32(self.spec.obs_scale)
        return self.obs_norm.normalize(rows) if self.obs_norm else rows

    @property
    def recurrent(self) -> bool:
        """True for a recurrent core: every step takes each env's state (:meth:`initial_state` at an episode's
        start) and :meth:`act` returns the next one."""
        return self.net.core is not None

    @property
    def state_dim(self) -> int:
        """Values of one env's state between steps (``2 * size`` for an LSTM, ``size`` for a GRU, twice that with a
        core on each separate trunk, 0 memoryless)."""
        return self.spec.state_dim

    def initial_state(self, n: int) -> F32:
        """The state of ``n`` envs at an episode's first step: zeros ``[n, state_dim]`` (``[n, 0]`` memoryless)."""
        return np.zeros((n, self.state_dim), dtype=np.float32)

    def _state(self, state: npt.ArrayLike | None, n: int) -> F32:
        """``state`` as f32 ``[n, state_dim]``: required for a recurrent core, optional (and empty) without one."""
        if state is None:
            if self.recurrent:
                raise PolicyError(
                    f"a recurrent policy ({self.spec.core}) steps from each env's state: pass state= "
                    f"[{n}, {self.state_dim}] (initial_state({n}) at an episode's first step)"
                )
            return np.empty((n, 0), dtype=np.float32)
        s = np.asarray(state, dtype=np.float32)
        if s.shape != (n, self.state_dim):
            raise PolicyError(
                f"a state of shape {list(s.shape)}, expected [{n}, {self.state_dim}] for {n} observations"
            )
        return s

    def _step(self, obs: npt.ArrayLike, state: npt.ArrayLike | None) -> tuple[F32, F32, F32]:
        """The head, the values and the next state of one step."""
        x = self._input(obs)
        return self.net.step(x, self._state(state, len(x)))

    def head(self, obs: npt.ArrayLike, state: npt.ArrayLike | None = None) -> F32:
        """The head's output (logits, or the Gaussian mean) for raw observations ``[B, *obs_shape]`` or
        ``[B, obs_dim]``; a recurrent policy's from the envs' states ``[B, state_dim]`` before this step."""
        if state is None and not self.recurrent:
            return self.net.head(self._input(obs))
        return self._step(obs, state)[0]

    def value(self, obs: npt.ArrayLike, state: npt.ArrayLike | None = None) -> F32:
        """Value estimates ``[B]`` for raw observations (and states, as :meth:`head` takes them)."""
        if state is None and not self.recurrent:
            return self.net.value(self._input(obs))
        return self._step(obs, state)[1]

    def log_prob(self, obs: npt.ArrayLike, actions: npt.ArrayLike, state: npt.ArrayLike | None = None) -> F32:
        """Log-probabilities ``[B]`` of ``actions`` (``[B, action_dim]`` as in a rollout)."""
        return self.dist.log_prob(self.head(obs, state), self._actions(actions))

    def entropy(self, obs: npt.ArrayLike, state: npt.ArrayLike | None = None) -> F32:
        """Entropy ``[B]`` of the action distribution for raw observations (and states, as :meth:`head` takes
        them)."""
        return self.dist.entropy(self.head(obs, state))

    def _actions(self, actions: npt.ArrayLike) -> F32:
        return np.asarray(actions, dtype=np.float32).reshape(-1, self.action_dim)

    def act(
        self,
        obs: npt.ArrayLike,
        rng: np.random.Generator,
        deterministic: bool = False,
        state: npt.ArrayLike | None = None,
    ) -> ActOutput:
        """Samples (or, if ``deterministic``, takes the mode of) actions for raw observations ``[B, *obs_shape]`` or
        ``[B, obs_dim]``. A recurrent policy needs each env's ``state`` ``[B, state_dim]`` before this step (zero
        rows at an episode's first step) and returns the next ones in :attr:`ActOutput.state` (a new array); a
        memoryless one takes none, or an empty ``[B, 0]``, and returns it as it came."""
        if state is None and not self.recurrent:
            head, values = self.net.forward(self._input(obs))
            new_state = None
        else:
            head, values, new_state = self._step(obs, state)
        actions, log_probs = self.dist.mode(head) if deterministic else self.dist.sample(head, rng)
        return ActOutput(actions=actions, log_probs=log_probs, values=values, state=new_state)

    def sequence(
        self,
        obs: npt.ArrayLike,
        starts: npt.ArrayLike,
        initial_state: npt.ArrayLike,
        actions: npt.ArrayLike | None = None,
    ) -> SequenceOutput:
        """Runs ``T`` steps of ``N`` envs, as a rollout holds them: raw observations ``[T * N, *obs_shape]`` or
        ``[T * N, obs_dim]`` time-major (row ``t * N + j`` is env ``j``'s step ``t``), ``starts`` ``[T * N]``
        (true where an episode starts: env ``j``'s state is zeroed before row ``t * N + j``), each env's state
        ``initial_state`` ``[N, state_dim]`` before step 0, and optionally the actions taken ``[T * N, action_dim]``
        to score. A memoryless policy runs every row alike (``initial_state`` ``[N, 0]`` is its final state)."""
        x = self._input(obs)
        state = np.asarray(initial_state, dtype=np.float32)
        if state.ndim != 2 or state.shape[1] != self.state_dim or not len(state) or len(x) % len(state):
            raise PolicyError(
                f"an initial state of shape {list(state.shape)} for {len(x)} rows: expected [N, {self.state_dim}] "
                "with N dividing the rows"
            )
        reset = np.asarray(starts, dtype=bool).reshape(-1)
        if reset.shape != (len(x),):
            raise PolicyError(f"{reset.shape[0]} starts for {len(x)} rows")
        head, values, final = self.net.sequence(x, reset, state)
        return SequenceOutput(
            head=head,
            values=values,
            entropy=self.dist.entropy(head),
            log_probs=None if actions is None else self.dist.log_prob(head, self._actions(actions)),
            final_state=final,
        )
