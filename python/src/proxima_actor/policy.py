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
#: A layer of any spec's network (a shared trunk's heads have no index).
_PARAM = re.compile(r"^(actor|critic|network)(\.\d+)?\.(weight|bias)$")


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
    """The spec's network on inputs ``[B, obs_dim]``: ``body`` the shared trunk (``None`` with separate trunks),
    ``actor`` and ``critic`` the policy and value trunks on its output (single Linear layers with a shared trunk)."""

    def __init__(self, body: Trunk | None, actor: Trunk, critic: Trunk) -> None:
        self.body, self.actor, self.critic = body, actor, critic
        #: Both heads in one network when neither has convolutions.
        self.joint = JointMlp(actor.mlp, critic.mlp) if not (actor.convs or critic.convs) else None

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


@dataclass(frozen=True)
class ActOutput:
    """Actions (unclipped), their log-probabilities under the policy, and value estimates for a batch."""

    actions: F32
    """``[B, action_dim]`` (Discrete: the index as f32, ``action_dim = 1``; MultiDiscrete: ``len(nvec)`` indices)."""
    log_probs: F32
    """``[B]``."""
    values: F32
    """``[B]``."""


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


def _from_spec(tensors: dict[str, np.ndarray], spec: ModelSpec) -> tuple[ActorCritic, F32 | None]:
    """The network and the log-std of ``spec``, after checking that the snapshot holds exactly the parameters the
    spec implies, with their shapes (the first missing or misshapen one is the error)."""
    logits = spec.head.logits_dim
    if spec.shared_trunk:
        width = spec.hidden_sizes[-1]
        shapes = _trunk_shapes(spec, "network", None)
        for net, out in (("actor", logits), ("critic", 1)):
            shapes[f"{net}.weight"], shapes[f"{net}.bias"] = (out, width), (out,)
    else:
        shapes = {**_trunk_shapes(spec, "actor", logits), **_trunk_shapes(spec, "critic", 1)}
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

    def head(net: str) -> Trunk:
        return Trunk((), Mlp((_f32(tensors[f"{net}.weight"]),), (_f32(tensors[f"{net}.bias"]),), spec.activation))

    layers = len(spec.hidden_sizes)
    if spec.shared_trunk:
        network = ActorCritic(_trunk(tensors, spec, "network", layers, True), head("actor"), head("critic"))
    else:
        actor, critic = (_trunk(tensors, spec, net, layers + 1, False) for net in ("actor", "critic"))
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

    def head(self, obs: npt.ArrayLike) -> F32:
        """The head's output (logits, or the Gaussian mean) for raw observations ``[B, *obs_shape]`` or
        ``[B, obs_dim]``."""
        return self.net.head(self._input(obs))

    def value(self, obs: npt.ArrayLike) -> F32:
        """Value estimates ``[B]`` for raw observations (as :meth:`head` takes them)."""
        return self.net.value(self._input(obs))

    def log_prob(self, obs: npt.ArrayLike, actions: npt.ArrayLike) -> F32:
        """Log-probabilities ``[B]`` of ``actions`` (``[B, action_dim]`` as in a rollout)."""
        return self.dist.log_prob(self.head(obs), np.asarray(actions, dtype=np.float32).reshape(-1, self.action_dim))

    def entropy(self, obs: npt.ArrayLike) -> F32:
        """Entropy ``[B]`` of the action distribution for raw observations (as :meth:`head` takes them)."""
        return self.dist.entropy(self.head(obs))

    def act(self, obs: npt.ArrayLike, rng: np.random.Generator, deterministic: bool = False) -> ActOutput:
        """Samples (or, if ``deterministic``, takes the mode of) actions for raw observations ``[B, *obs_shape]`` or
        ``[B, obs_dim]``."""
        head, values = self.net.forward(self._input(obs))
        actions, log_probs = self.dist.mode(head) if deterministic else self.dist.sample(head, rng)
        return ActOutput(actions=actions, log_probs=log_probs, values=values)
