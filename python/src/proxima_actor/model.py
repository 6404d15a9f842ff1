"""The model spec: the one description of the actor-critic network (``docs/model-spec.md``), as the Rust
``common::model`` writes it into every snapshot's metadata under the key ``model`` (JSON).

This package runs inference only, so it reads the fields that decide the forward pass and the action
distribution (``obs_dim``, ``obs_shape``, ``obs_dtype``, ``encoder``, ``core``, ``head``, ``shared_trunk``) and
ignores ``init``. ``obs_shape`` (default ``[obs_dim]``) is the shape of one observation, ``obs_dim`` values in all;
``obs_dtype`` (default ``float32``) is the type its values travel in: ``uint8`` observations (images) reach the
network multiplied by 1/255, without observation normalisation. A spec this package cannot run (another format,
encoder, core or a shared trunk) is a :class:`SpecError` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

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

_FIELDS = {"format", "obs_dim", "obs_shape", "obs_dtype", "encoder", "core", "head", "shared_trunk", "init"}


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
class ModelSpec:
    """Two MLPs (actor and critic, separate trunks, no core) and the policy head, for observations of
    ``obs_shape`` (``obs_dim`` values) in ``obs_dtype``."""

    obs_dim: int
    hidden_sizes: tuple[int, ...]
    activation: str
    head: Head
    obs_shape: tuple[int, ...]
    obs_dtype: str

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
        encoder = _object(spec.get("encoder"), "encoder", {"kind", "hidden_sizes", "activation"})
        if encoder.get("kind") != "mlp":
            raise SpecError(f"model spec encoder.kind: {_show(encoder.get('kind'))} is not supported (mlp)")
        hidden = encoder.get("hidden_sizes")
        if not isinstance(hidden, list) or not hidden:
            raise SpecError("model spec encoder.hidden_sizes: needs at least one layer")
        activation = encoder.get("activation")
        if activation not in ACTIVATIONS:
            raise SpecError(f"model spec encoder.activation: {_show(activation)} is not supported (tanh or relu)")
        core = _object(spec.get("core"), "core", {"kind"})
        if core.get("kind") != "none":
            raise SpecError(f"model spec core.kind: {_show(core.get('kind'))} is not supported (none)")
        if spec.get("shared_trunk") is not False:
            raise SpecError(f"model spec shared_trunk: {_show(spec.get('shared_trunk'))} is not supported (false)")
        obs_dim = _count(spec.get("obs_dim"), "obs_dim")
        return cls(
            obs_dim=obs_dim,
            hidden_sizes=tuple(_count(h, "encoder.hidden_sizes") for h in hidden),
            activation=str(activation),
            head=_head(spec.get("head")),
            obs_shape=_obs_shape(spec.get("obs_shape", [obs_dim]), obs_dim),
            obs_dtype=_obs_dtype(spec.get("obs_dtype", OBS_DTYPES[0])),
        )

    def describe(self) -> str:
        """Short human form for errors, e.g. ``mlp[64, 64] tanh, categorical(2)``."""
        return f"mlp{list(self.hidden_sizes)} {self.activation}, {self.head}"


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


def _obs_shape(value: Any, obs_dim: int) -> tuple[int, ...]:
    """The spec's ``obs_shape``: dimensions of at least 1 whose product is ``obs_dim``."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"model spec obs_shape: {_show(value)} is not a list of at least one dimension")
    shape = tuple(_count(n, "obs_shape") for n in value)
    if math.prod(shape) != obs_dim:
        raise SpecError(f"model spec obs_shape: {list(shape)} holds {math.prod(shape)} values, obs_dim is {obs_dim}")
    return shape


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
