"""The model spec: the one description of the actor-critic network (``docs/model-spec.md``), as the Rust
``common::model`` writes it into every snapshot's metadata under the key ``model`` (JSON).

This package runs inference only, so it reads the fields that decide the forward pass and the action
distribution (``obs_dim``, ``obs_shape``, ``obs_dtype``, ``encoder``, ``core``, ``head``, ``shared_trunk``) and
ignores ``init``. ``obs_shape`` (default ``[obs_dim]``) is the shape of one observation, ``obs_dim`` values in all;
``obs_dtype`` (default ``float32``) is the type its values travel in: ``uint8`` observations (images) reach the
network multiplied by 1/255, without observation normalisation. The encoder is an MLP, or convolutions over an image
observation (``[H, W, C]``, ``[C, H, W]`` or ``[H, W]``) then an MLP; the actor and the critic have a trunk each, or
share one. The core is none (memoryless) or a one-layer LSTM or GRU between the trunk and the heads: one on a
shared trunk, feeding both heads, or one on each of the separate trunks (the actor's and the critic's, with weights of
their own); each env carries the cores' state from step to step. A spec this package cannot run (another format,
encoder or core) or that does not describe a network is a :class:`SpecError` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Snapshot metadata key holding the spec as JSON.
MODEL_KEY = "model"
#: Snapshot metadata key naming the hidden activation in snapshots written before the spec.
ACTIVATION_KEY = "activation"
#: The spec format this package reads.
SPEC_FORMAT = 1
#: Hidden activations a spec (or an older snapshot's ``activation`` key) may name.
ACTIVATIONS = ("tanh", "relu")
#: Observation dtypes a spec may name; the first is the default.
OBS_DTYPES = ("float32", "uint8")
#: Core kinds a spec may name: memoryless, or PyTorch's one-layer ``nn.LSTM`` / ``nn.GRU``.
CORE_KINDS = ("none", "lstm", "gru")
#: Where a conv encoder's image keeps its channels: last (``[H, W, C]``) or first (``[C, H, W]``).
LAYOUTS = ("hwc", "chw")

_FIELDS = {
    "format",
    "obs_dim",
    "obs_shape",
    "obs_dtype",
    "obs_scale",
    "encoder",
    "core",
    "head",
    "shared_trunk",
    "init",
}
#: What ``uint8`` images (0..=255) are multiplied by on their way into the network, rounded to f32 as the Rust side's
#: ``1.0f32 / 255.0`` (multiplied, not divided, for the same bits); the ``obs_scale`` of specs written without one.
UINT8_SCALE = np.float32(1.0) / np.float32(255.0)
_MLP_FIELDS = {"kind", "hidden_sizes", "activation"}
_CONV_FIELDS = {*_MLP_FIELDS, "layers", "layout"}
_CONV_LAYER_FIELDS = ("out_channels", "kernel", "stride")


class SpecError(ValueError):
    """A model spec that does not parse or that this package cannot run; the message names the field."""


@dataclass(frozen=True)
class CategoricalHead:
    """``n`` logits of one Categorical (``Discrete(n)``)."""

    n: int

    def __str__(self) -> str:
        return f"categorical({self.n})"

    @property
    def logits_dim(self) -> int:
        """Width of the policy layer's output."""
        return self.n

    @property
    def action_dim(self) -> int:
        """Values per action in a rollout."""
        return 1


@dataclass(frozen=True)
class MultiCategoricalHead:
    """``sum(nvec)`` logits, one Categorical per consecutive block of ``nvec[i]`` (``MultiDiscrete(nvec)``)."""

    nvec: tuple[int, ...]

    def __str__(self) -> str:
        return f"multi_categorical({list(self.nvec)})"

    @property
    def logits_dim(self) -> int:
        """Width of the policy layer's output."""
        return sum(self.nvec)

    @property
    def action_dim(self) -> int:
        """Values per action in a rollout (one index per sub-action)."""
        return len(self.nvec)


@dataclass(frozen=True)
class GaussianHead:
    """``dim`` means of a diagonal Gaussian with a state-independent log-std (``Box`` of ``dim`` values)."""

    dim: int

    def __str__(self) -> str:
        return f"gaussian({self.dim})"

    @property
    def logits_dim(self) -> int:
        """Width of the policy layer's output."""
        return self.dim

    @property
    def action_dim(self) -> int:
        """Values per action in a rollout."""
        return self.dim


Head = CategoricalHead | MultiCategoricalHead | GaussianHead


@dataclass(frozen=True)
class Core:
    """What runs between the trunk and the heads: nothing (``kind`` ``none``, ``size`` 0), or a one-layer LSTM
    (gate order i, f, g, o; state ``[h, c]``) or GRU (gate order r, z, n; state ``h``) of ``size`` units, as
    PyTorch's ``nn.LSTM`` / ``nn.GRU``."""

    kind: str = "none"
    size: int = 0

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}({self.size})"

    @property
    def recurrent(self) -> bool:
        """True for an LSTM or a GRU."""
        return self.kind != "none"

    @property
    def gates(self) -> int:
        """Blocks of ``size`` rows in the cell's weights (LSTM 4, GRU 3, none 0)."""
        return {"lstm": 4, "gru": 3}.get(self.kind, 0)

    @property
    def state_dim(self) -> int:
        """Values of this core's state for one env: ``2 * size`` (LSTM), ``size`` (GRU), 0 (memoryless); a network
        with a core on each separate trunk carries twice as many (:attr:`ModelSpec.state_dim`)."""
        return {"lstm": 2 * self.size, "gru": self.size}.get(self.kind, 0)


@dataclass(frozen=True)
class ConvLayer:
    """``out_channels`` filters of ``kernel`` x ``kernel`` moved by ``stride``, no padding (PyTorch's
    ``Conv2d(in, out_channels, kernel, stride)``), followed by the activation."""

    out_channels: int
    kernel: int
    stride: int

    def __str__(self) -> str:
        return f"{self.out_channels}x{self.kernel}/{self.stride}"

    def out_side(self, n: int) -> int | None:
        """Output side for an input side of ``n`` (``None`` when the filter does not fit)."""
        return (n - self.kernel) // self.stride + 1 if n >= self.kernel else None


@dataclass(frozen=True)
class ImageDims:
    """An image's channels, height and width."""

    c: int
    h: int
    w: int

    @property
    def size(self) -> int:
        """Values in the image."""
        return self.c * self.h * self.w


@dataclass(frozen=True)
class ModelSpec:
    """The actor-critic for observations of ``obs_shape`` (``obs_dim`` values) in ``obs_dtype``: the encoder (the
    convolutions ``conv`` over an image in ``layout``, none for an MLP, then Linear layers of ``hidden_sizes`` with
    ``activation``), the ``core`` (a recurrent one on the shared trunk, or one on each separate trunk), and the
    policy head; separate actor and critic trunks, or one ``shared_trunk``."""

    obs_dim: int
    hidden_sizes: tuple[int, ...]
    activation: str
    head: Head
    obs_shape: tuple[int, ...]
    obs_dtype: str
    conv: tuple[ConvLayer, ...] = ()
    layout: str | None = None
    """``hwc`` or ``chw`` for a conv encoder, ``None`` for an MLP."""
    shared_trunk: bool = False
    obs_scale: float = 1.0
    """What ``uint8`` observation values are multiplied by (1/255 for images, 1 for 0/1 planes)."""
    core: Core = Core()

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parses and validates the metadata value of :data:`MODEL_KEY`."""
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise SpecError(f"model spec does not parse: {e}") from e
        spec = _object(raw, "", _FIELDS)
        fmt = spec.get("format")
        if type(fmt) is not int or fmt != SPEC_FORMAT:
            raise SpecError(
                f"model spec format: {_show(fmt)} is not supported (this package reads format {SPEC_FORMAT})"
            )
        kind = _object(spec.get("encoder"), "encoder", _CONV_FIELDS).get("kind")
        if kind not in ("mlp", "conv"):
            raise SpecError(f"model spec encoder.kind: {_show(kind)} is not supported (mlp or conv)")
        encoder = _object(spec.get("encoder"), "encoder", _MLP_FIELDS if kind == "mlp" else _CONV_FIELDS)
        hidden = encoder.get("hidden_sizes")
        if not isinstance(hidden, list) or not hidden:
            raise SpecError("model spec encoder.hidden_sizes: needs at least one layer")
        activation = encoder.get("activation")
        if activation not in ACTIVATIONS:
            raise SpecError(f"model spec encoder.activation: {_show(activation)} is not supported (tanh or relu)")
        conv: tuple[ConvLayer, ...] = ()
        layout = None
        if kind == "conv":
            conv = _conv_layers(encoder.get("layers"))
            layout = encoder.get("layout")
            if layout not in LAYOUTS:
                raise SpecError(f"model spec encoder.layout: {_show(layout)} is not supported (hwc or chw)")
        core = _core(spec.get("core"))
        shared_trunk = spec.get("shared_trunk")
        if type(shared_trunk) is not bool:
            raise SpecError(f"model spec shared_trunk: {_show(shared_trunk)} is not true or false")
        obs_dim = _count(spec.get("obs_dim"), "obs_dim")
        parsed = cls(
            obs_dim=obs_dim,
            hidden_sizes=tuple(_count(h, "encoder.hidden_sizes") for h in hidden),
            activation=str(activation),
            head=_head(spec.get("head")),
            obs_shape=_obs_shape(spec.get("obs_shape", [obs_dim]), obs_dim),
            obs_dtype=_obs_dtype(spec.get("obs_dtype", OBS_DTYPES[0])),
            conv=conv,
            layout=None if layout is None else str(layout),
            # Specs written before obs_scale: every uint8 space was an image.
            obs_scale=_obs_scale(
                spec.get("obs_scale", float(UINT8_SCALE) if spec.get("obs_dtype") == "uint8" else 1.0)
            ),
            shared_trunk=shared_trunk,
            core=core,
        )
        parsed.conv_dims()
        return parsed

    def conv_dims(self) -> list[ImageDims]:
        """The image a conv encoder takes (``[H, W]`` observations have one channel) and each convolution's output,
        in order; empty for an MLP encoder. A :class:`SpecError` when the observation is not an image or a filter
        does not fit."""
        if not self.conv:
            return []
        match self.obs_shape, self.layout:
            case (h, w), _:
                dims = [ImageDims(1, h, w)]
            case (h, w, c), "hwc":
                dims = [ImageDims(c, h, w)]
            case (c, h, w), "chw":
                dims = [ImageDims(c, h, w)]
            case shape, _:
                raise SpecError(f"model spec obs_shape: a conv encoder takes images of 2 or 3 axes, not {list(shape)}")
        for i, layer in enumerate(self.conv):
            last = dims[-1]
            h_out, w_out = layer.out_side(last.h), layer.out_side(last.w)
            if h_out is None or w_out is None:
                raise SpecError(
                    f"model spec encoder.layers: convolution {i} ({layer.kernel}x{layer.kernel} filter) does not fit "
                    f"its {last.h}x{last.w} input"
                )
            dims.append(ImageDims(layer.out_channels, h_out, w_out))
        return dims

    @property
    def features(self) -> int:
        """Width of the first Linear layer's input: the last convolution's output, flattened, or ``obs_dim``."""
        dims = self.conv_dims()
        return dims[-1].size if dims else self.obs_dim

    @property
    def cores(self) -> int:
        """How many recurrent cores the network runs: 1 on a shared trunk, 2 with separate trunks (the actor's, then
        the critic's), 0 memoryless."""
        if not self.core.recurrent:
            return 0
        return 1 if self.shared_trunk else 2

    @property
    def state_dim(self) -> int:
        """Values of one env's recurrent state (0: memoryless): each core's state in turn (:attr:`cores`), so
        ``[h, c]`` or ``h`` on a shared trunk and ``[h_actor, c_actor, h_critic, c_critic]`` or
        ``[h_actor, h_critic]`` with separate trunks."""
        return self.cores * self.core.state_dim

    def describe(self) -> str:
        """Short human form for errors, e.g. ``mlp[64, 64] tanh, categorical(2)`` or
        ``conv[16x3/1] hwc, mlp[128] relu, categorical(6)``, with ``, core lstm(64)`` for a recurrent core (``, core
        lstm(64) per trunk`` for one on each separate trunk) and ``, a shared trunk`` for one."""
        conv = f"conv[{', '.join(str(layer) for layer in self.conv)}] {self.layout}, " if self.conv else ""
        core = ""
        if self.core.recurrent:
            core = f", core {self.core}" if self.shared_trunk else f", core {self.core} per trunk"
        trunk = ", a shared trunk" if self.shared_trunk else ""
        return f"{conv}mlp{list(self.hidden_sizes)} {self.activation}{core}, {self.head}{trunk}"


def _show(value: Any) -> str:
    """A parsed JSON value as JSON text, for errors."""
    return json.dumps(value)


def _object(value: Any, field: str, keys: set[str]) -> dict[str, Any]:
    """``value`` (the spec's ``field``, the spec itself for ``""``) as a JSON object holding no key outside
    ``keys``."""
    where = f"model spec {field}".rstrip()
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected an object, got {_show(value)}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise SpecError(f"{where}: unknown field {_show(unknown[0])}")
    return value


def _count(value: Any, field: str) -> int:
    """``value`` as a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"model spec {field}: {_show(value)} is not a whole number of at least 1")
    return value


def _conv_layers(value: Any) -> tuple[ConvLayer, ...]:
    """The conv encoder's ``layers``: at least one convolution, each field a whole number of at least 1."""
    if not isinstance(value, list) or not value:
        raise SpecError("model spec encoder.layers: needs at least one convolution")
    layers = []
    for i, raw in enumerate(value):
        field = f"encoder.layers[{i}]"
        layer = _object(raw, field, set(_CONV_LAYER_FIELDS))
        out_channels, kernel, stride = (_count(layer.get(k), f"{field}.{k}") for k in _CONV_LAYER_FIELDS)
        layers.append(ConvLayer(out_channels, kernel, stride))
    return tuple(layers)


def _core(value: Any) -> Core:
    """The spec's ``core``: ``{"kind": "none"}``, or ``{"kind": "lstm" | "gru", "size": H}``."""
    kind = _object(value, "core", {"kind", "size"}).get("kind")
    if kind not in CORE_KINDS:
        raise SpecError(f"model spec core.kind: {_show(kind)} is not supported (none, lstm or gru)")
    if kind == "none":
        _object(value, "core", {"kind"})
        return Core()
    return Core(str(kind), _count(value.get("size"), "core.size"))


def _obs_shape(value: Any, obs_dim: int) -> tuple[int, ...]:
    """The spec's ``obs_shape``: dimensions of at least 1 whose product is ``obs_dim``."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"model spec obs_shape: {_show(value)} is not a list of at least one dimension")
    shape = tuple(_count(n, "obs_shape") for n in value)
    if math.prod(shape) != obs_dim:
        raise SpecError(f"model spec obs_shape: {list(shape)} holds {math.prod(shape)} values, obs_dim is {obs_dim}")
    return shape


def _obs_scale(value: Any) -> float:
    """The spec's ``obs_scale``: a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"model spec obs_scale: {_show(value)} is not a positive number")
    return float(value)


def _obs_dtype(value: Any) -> str:
    """The spec's ``obs_dtype``, one of :data:`OBS_DTYPES`."""
    if value not in OBS_DTYPES:
        raise SpecError(f"model spec obs_dtype: {_show(value)} is not supported (float32 or uint8)")
    return str(value)


def _head(value: Any) -> Head:
    """The spec's ``head`` object as its head."""
    kind = _object(value, "head", {"kind", "n", "nvec", "dim"}).get("kind")
    if kind == "categorical":
        return CategoricalHead(_count(_object(value, "head", {"kind", "n"}).get("n"), "head.n"))
    if kind == "multi_categorical":
        nvec = _object(value, "head", {"kind", "nvec"}).get("nvec")
        if not isinstance(nvec, list) or not nvec:
            raise SpecError("model spec head.nvec: needs at least one sub-action")
        return MultiCategoricalHead(tuple(_count(n, "head.nvec") for n in nvec))
    if kind == "gaussian":
        return GaussianHead(_count(_object(value, "head", {"kind", "dim"}).get("dim"), "head.dim"))
    raise SpecError(
        f"model spec head.kind: {_show(kind)} is not supported (categorical, multi_categorical or gaussian)"
    )
