"""Conv encoders and shared trunks: the numpy forward pass against a naive loop-by-loop reference that follows
``docs/model-spec.md`` (scale, reshape, permute, convolutions, flatten in ``(C, H, W)`` order, Linear layers), and
the spec fields that describe them."""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save

from proxima_actor import Policy, PolicyError
from proxima_actor.distributions import log_softmax
from proxima_actor.model import ConvLayer, ModelSpec, SpecError

SCALE = np.float32(1.0) / np.float32(255.0)


@dataclass(frozen=True)
class Net:
    """A network to build a snapshot of: ``conv`` as ``(out_channels, kernel, stride)`` triples."""

    obs_shape: tuple[int, ...]
    layout: str | None
    conv: tuple[tuple[int, int, int], ...]
    hidden: tuple[int, ...]
    activation: str
    shared: bool
    head: dict[str, Any]
    dtype: str = "uint8"

    @property
    def logits(self) -> int:
        h = self.head
        return int(h["n"]) if h["kind"] == "categorical" else sum(h["nvec"]) if "nvec" in h else int(h["dim"])

    def spec(self) -> dict[str, Any]:
        encoder: dict[str, Any] = {"kind": "mlp", "hidden_sizes": list(self.hidden), "activation": self.activation}
        if self.conv:
            layers = [{"out_channels": o, "kernel": k, "stride": s} for o, k, s in self.conv]
            encoder = {"kind": "conv", "layers": layers, "layout": self.layout, **encoder}
            encoder["kind"] = "conv"
        return {
            "format": 1,
            "obs_dim": math.prod(self.obs_shape),
            "obs_shape": list(self.obs_shape),
            "obs_dtype": self.dtype,
            "encoder": encoder,
            "core": {"kind": "none"},
            "head": self.head,
            "shared_trunk": self.shared,
            "init": {"orthogonal": True, "log_std": 0.0},
        }

    def image(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the input image."""
        if len(self.obs_shape) == 2:
            h, w = self.obs_shape
            return 1, h, w
        if self.layout == "hwc":
            h, w, c = self.obs_shape
            return c, h, w
        c, h, w = self.obs_shape
        return c, h, w

    def trunk(self, rng: np.random.Generator, net: str, out: int | None) -> dict[str, np.ndarray]:
        """A trunk's parameters, PyTorch's names: convolutions at ``2i``, Linear layers from ``2L + 1``."""
        t: dict[str, np.ndarray] = {}
        c, h, w = self.image() if self.conv else (0, 0, 0)
        for i, (o, k, s) in enumerate(self.conv):
            t[f"{net}.{2 * i}.weight"] = rng.normal(0, 1 / math.sqrt(c * k * k), (o, c, k, k)).astype(np.float32)
            t[f"{net}.{2 * i}.bias"] = rng.normal(0, 0.1, o).astype(np.float32)
            c, h, w = o, (h - k) // s + 1, (w - k) // s + 1
        first = 2 * len(self.conv) + 1 if self.conv else 0
        widths = [c * h * w if self.conv else math.prod(self.obs_shape), *self.hidden, *([out] if out else [])]
        for j, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            t[f"{net}.{first + 2 * j}.weight"] = rng.normal(0, 1 / math.sqrt(n_in), (n_out, n_in)).astype(np.float32)
            t[f"{net}.{first + 2 * j}.bias"] = rng.normal(0, 0.1, n_out).astype(np.float32)
        return t

    def tensors(self, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        if self.shared:
            t = self.trunk(rng, "network", None)
            for net, out in (("actor", self.logits), ("critic", 1)):
                t[f"{net}.weight"] = rng.normal(0, 1 / math.sqrt(self.hidden[-1]), (out, self.hidden[-1]))
                t[f"{net}.weight"] = t[f"{net}.weight"].astype(np.float32)
                t[f"{net}.bias"] = rng.normal(0, 0.1, out).astype(np.float32)
        else:
            t = {**self.trunk(rng, "actor", self.logits), **self.trunk(rng, "critic", 1)}
        if self.head["kind"] == "gaussian":
            t["actor_logstd"] = rng.normal(-0.5, 0.2, (1, self.logits)).astype(np.float32)
        return t

    def snapshot(self, seed: int = 0) -> bytes:
        return save(self.tensors(seed), metadata={"model": json.dumps(self.spec())})

    def observations(self, n: int, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.dtype == "uint8":
            return rng.integers(0, 256, (n, *self.obs_shape), dtype=np.uint8)
        return rng.normal(size=(n, *self.obs_shape)).astype(np.float32)


def act(x: np.ndarray, activation: str) -> np.ndarray:
    return np.maximum(x, 0.0) if activation == "relu" else np.tanh(x)


def naive_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """``Conv2d`` without padding on ``[B, C, H, W]``, one output value at a time."""
    b, c, h, w = x.shape
    o, _, k, _ = weight.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    y = np.zeros((b, o, ho, wo))
    for n in range(b):
        for f in range(o):
            for i in range(ho):
                for j in range(wo):
                    total = float(bias[f])
                    for ch in range(c):
                        for di in range(k):
                            for dj in range(k):
                                total += x[n, ch, i * stride + di, j * stride + dj] * float(weight[f, ch, di, dj])
                    y[n, f, i, j] = total
    return y


def naive_trunk(net: Net, t: dict[str, np.ndarray], prefix: str, x: np.ndarray, layers: int, last: bool) -> np.ndarray:
    """A trunk as PyTorch runs it on network inputs ``[B, *obs_shape]`` (f64): reshape and permute to
    ``[B, C, H, W]``, convolutions, flatten, ``layers`` Linear layers (activated after the last when ``last``)."""
    b = len(x)
    if net.conv:
        x = x.reshape(b, *net.obs_shape)
        if len(net.obs_shape) == 2:
            x = x[:, None]
        elif net.layout == "hwc":
            x = x.transpose(0, 3, 1, 2)
        for i, (_, _, s) in enumerate(net.conv):
            x = act(naive_conv(x, t[f"{prefix}.{2 * i}.weight"], t[f"{prefix}.{2 * i}.bias"], s), net.activation)
    x = x.reshape(b, -1)
    first = 2 * len(net.conv) + 1 if net.conv else 0
    for j in range(layers):
        i = first + 2 * j
        x = x @ t[f"{prefix}.{i}.weight"].T.astype(np.float64) + t[f"{prefix}.{i}.bias"]
        if j + 1 < layers or last:
            x = act(x, net.activation)
    return x


def naive(net: Net, t: dict[str, np.ndarray], obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The head and the values of raw observations (f64, after the f32 uint8 scaling)."""
    x = obs.astype(np.float32)
    if net.dtype == "uint8":
        x = x * SCALE
    x = x.astype(np.float64)
    m = len(net.hidden)
    if net.shared:
        f = naive_trunk(net, t, "network", x, m, True)
        head = f @ t["actor.weight"].T.astype(np.float64) + t["actor.bias"]
        value = f @ t["critic.weight"].T.astype(np.float64) + t["critic.bias"]
    else:
        head = naive_trunk(net, t, "actor", x, m + 1, False)
        value = naive_trunk(net, t, "critic", x, m + 1, False)
    return head, value[:, 0]


CAT = {"kind": "categorical", "n": 5}
CAT3 = {"kind": "categorical", "n": 3}
GAUSS = {"kind": "gaussian", "dim": 2}
NETS = {
    "hwc": Net((7, 6, 3), "hwc", ((4, 3, 1), (5, 2, 2)), (8,), "relu", False, CAT),
    "chw_float_gaussian": Net((2, 9, 8), "chw", ((3, 3, 2), (4, 2, 1)), (6, 4), "tanh", False, GAUSS, "float32"),
    "hw": Net((8, 7), "hwc", ((3, 3, 1),), (5,), "relu", False, {"kind": "multi_categorical", "nvec": [2, 3]}),
    "hw_chw": Net((8, 7), "chw", ((3, 2, 3),), (5,), "tanh", False, CAT),
    "shared_hwc": Net((9, 9, 2), "hwc", ((4, 3, 2), (3, 2, 1)), (6,), "relu", True, CAT),
    "shared_chw_stride": Net((3, 10, 11), "chw", ((4, 4, 3), (6, 2, 1)), (7, 5), "relu", True, CAT3),
    "shared_hw": Net((6, 6), "chw", ((2, 3, 1),), (4,), "tanh", True, GAUSS, "float32"),
    "shared_mlp": Net((5,), None, (), (8, 6), "tanh", True, CAT3, "float32"),
    "shared_mlp_image": Net((3, 4), None, (), (8,), "relu", True, CAT),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_forward_pass_matches_the_naive_reference(name: str) -> None:
    net = NETS[name]
    t = net.tensors()
    p = Policy(net.snapshot())
    obs = net.observations(4)
    head, value = naive(net, t, obs)
    np.testing.assert_allclose(p.head(obs), head, rtol=0, atol=2e-5)
    np.testing.assert_allclose(p.value(obs), value, rtol=0, atol=2e-5)
    # Rows of obs_dim values are the same observations.
    flat = obs.reshape(len(obs), -1)
    np.testing.assert_array_equal(p.head(flat), p.head(obs))
    np.testing.assert_array_equal(p.value(flat), p.value(obs))
    # Acting computes the head and the value together, with the same numbers.
    for deterministic in (False, True):
        out = p.act(obs, np.random.default_rng(2), deterministic)
        np.testing.assert_allclose(out.values, value, rtol=0, atol=2e-5)
        np.testing.assert_allclose(out.log_probs, p.log_prob(obs, out.actions), rtol=0, atol=2e-5)
    if net.head["kind"] == "categorical":
        np.testing.assert_array_equal(p.act(obs, np.random.default_rng(0), True).actions[:, 0], head.argmax(axis=1))
    assert p.hidden_sizes == list(net.hidden)
    assert p.spec.shared_trunk == net.shared
    assert p.spec.conv == tuple(ConvLayer(*layer) for layer in net.conv)


def test_a_nature_cnn_frame_stack_matches_the_reference() -> None:
    """CleanRL's Atari network (shared trunk) on a small frame stack: 36x36 -> 8x8 -> 3x3 -> 1x1."""
    nature = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
    net = Net((4, 36, 36), "chw", nature, (512,), "relu", True, {"kind": "categorical", "n": 4})
    t = net.tensors(seed=5)
    p = Policy(net.snapshot(seed=5))
    obs = net.observations(2, seed=6)
    head, value = naive(net, t, obs)
    np.testing.assert_allclose(p.head(obs), head, rtol=0, atol=1e-4)
    np.testing.assert_allclose(p.value(obs), value, rtol=0, atol=1e-4)
    probs = np.exp(log_softmax(p.head(obs)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_hwc_and_chw_read_the_same_image_alike() -> None:
    """An [H, W, C] observation through an hwc spec gives the numbers of the same image as [C, H, W] through a chw
    spec with the same weights."""
    hwc = Net((6, 5, 3), "hwc", ((4, 3, 1),), (8,), "relu", False, CAT)
    chw = Net((3, 6, 5), "chw", ((4, 3, 1),), (8,), "relu", False, CAT)
    t = hwc.tensors()
    assert {k: v.shape for k, v in t.items()} == {k: v.shape for k, v in chw.tensors().items()}
    obs = hwc.observations(3)
    a = Policy(hwc.snapshot())
    b = Policy(save(t, metadata={"model": json.dumps(chw.spec())}))
    np.testing.assert_allclose(a.head(obs), b.head(obs.transpose(0, 3, 1, 2)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.value(obs), b.value(obs.transpose(0, 3, 1, 2)), rtol=0, atol=1e-6)


def test_a_shared_trunk_is_a_trunk_and_two_heads() -> None:
    """With one hidden layer and no convolutions, a shared trunk's head is the separate actor of the same first
    layer: ``actor.0`` = ``network.0``, ``actor.2`` = ``actor``."""
    shared = Net((5,), None, (), (8,), "tanh", True, {"kind": "categorical", "n": 3}, "float32")
    separate = Net((5,), None, (), (8,), "tanh", False, {"kind": "categorical", "n": 3}, "float32")
    t = shared.tensors()
    s = separate.tensors()
    s["actor.0.weight"], s["actor.0.bias"] = t["network.0.weight"], t["network.0.bias"]
    s["actor.2.weight"], s["actor.2.bias"] = t["actor.weight"], t["actor.bias"]
    s["critic.0.weight"], s["critic.0.bias"] = t["network.0.weight"], t["network.0.bias"]
    s["critic.2.weight"], s["critic.2.bias"] = t["critic.weight"], t["critic.bias"]
    obs = shared.observations(6)
    a, b = Policy(shared.snapshot()), Policy(save(s, metadata={"model": json.dumps(separate.spec())}))
    np.testing.assert_allclose(a.head(obs), b.head(obs), rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.value(obs), b.value(obs), rtol=0, atol=1e-6)


MINATAR = (
    '{"format":1,"obs_dim":400,"obs_shape":[10,10,4],"obs_dtype":"uint8","encoder":{"kind":"conv","layers":'
    '[{"out_channels":16,"kernel":3,"stride":1}],"layout":"hwc","hidden_sizes":[128],"activation":"relu"},'
    '"core":{"kind":"none"},"head":{"kind":"categorical","n":6},"shared_trunk":false,'
    '"init":{"orthogonal":true,"log_std":0.0}}'
)
NATURE = (
    '{"format":1,"obs_dim":28224,"obs_shape":[4,84,84],"obs_dtype":"uint8","encoder":{"kind":"conv","layers":'
    '[{"out_channels":32,"kernel":8,"stride":4},{"out_channels":64,"kernel":4,"stride":2},'
    '{"out_channels":64,"kernel":3,"stride":1}],"layout":"chw","hidden_sizes":[512],"activation":"relu"},'
    '"core":{"kind":"none"},"head":{"kind":"categorical","n":6},"shared_trunk":true,'
    '"init":{"orthogonal":true,"log_std":0.0}}'
)


def test_the_documented_conv_specs_parse() -> None:
    minatar = ModelSpec.from_json(MINATAR)
    assert minatar.conv == (ConvLayer(16, 3, 1),)
    assert (minatar.layout, minatar.hidden_sizes, minatar.shared_trunk) == ("hwc", (128,), False)
    assert minatar.features == 16 * 8 * 8
    assert minatar.describe() == "conv[16x3/1] hwc, mlp[128] relu, categorical(6)"
    nature = ModelSpec.from_json(NATURE)
    assert nature.conv == (ConvLayer(32, 8, 4), ConvLayer(64, 4, 2), ConvLayer(64, 3, 1))
    assert [(d.c, d.h, d.w) for d in nature.conv_dims()] == [(4, 84, 84), (32, 20, 20), (64, 9, 9), (64, 7, 7)]
    assert nature.features == 3136
    assert nature.describe() == "conv[32x8/4, 64x4/2, 64x3/1] chw, mlp[512] relu, categorical(6), a shared trunk"
    # MLP specs keep their form, and the defaults of the new fields.
    mlp = ModelSpec.from_json(json.dumps(NETS["shared_mlp"].spec()))
    assert (mlp.conv, mlp.layout, mlp.shared_trunk) == ((), None, True)
    assert mlp.describe() == "mlp[8, 6] tanh, categorical(3), a shared trunk"
    one_channel = ModelSpec.from_json(json.dumps(NETS["hw"].spec()))
    assert [(d.c, d.h, d.w) for d in one_channel.conv_dims()] == [(1, 8, 7), (3, 6, 5)]


def edited(path: str, value: Any) -> dict:
    """The MinAtar spec with the field at the dotted ``path`` (list indices as numbers) set to ``value`` (deleted
    for ``...``)."""
    model = json.loads(MINATAR)
    *parents, last = path.split(".")
    node = model
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return model


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (edited("encoder.layers.0.kernel", 11), "encoder.layers: convolution 0 .3x3 filter|11x11 filter. does not fit"),
        (
            edited("encoder.layers", [{"out_channels": 4, "kernel": 3, "stride": 3}] * 3),
            "encoder.layers: convolution 2",
        ),
        ({**edited("obs_shape", [400]), "obs_shape": [400]}, "obs_shape: a conv encoder takes images of 2 or 3 axes"),
        (edited("obs_shape", [2, 10, 5, 4]), "obs_shape: a conv encoder takes images of 2 or 3 axes"),
        (edited("obs_shape", [10, 10, 5]), "obs_shape: .10, 10, 5. holds 500 values"),
        (edited("encoder.padding", 1), 'encoder: unknown field "padding"'),
        (edited("encoder.layers.0.dilation", 1), r'encoder.layers\[0\]: unknown field "dilation"'),
        (edited("encoder.layers.0.stride", 0), r"encoder.layers\[0\].stride: 0 is not a whole number"),
        (edited("encoder.layers.0.kernel", 1.5), r"encoder.layers\[0\].kernel"),
        (edited("encoder.layers.0.out_channels", ...), r"encoder.layers\[0\].out_channels: null"),
        (edited("encoder.layers.0", [16, 3, 1]), r"encoder.layers\[0\]: expected an object"),
        (edited("encoder.layers", []), "encoder.layers: needs at least one convolution"),
        (edited("encoder.layers", ...), "encoder.layers"),
        (edited("encoder.layout", "nhwc"), "encoder.layout"),
        (edited("encoder.layout", ...), "encoder.layout"),
        (edited("encoder.kind", "mlp"), 'encoder: unknown field "layers"'),
        (edited("encoder.hidden_sizes", []), "encoder.hidden_sizes"),
        (edited("shared_trunk", 1), "shared_trunk"),
        (edited("shared_trunk", ...), "shared_trunk"),
    ],
)
def test_a_conv_spec_that_does_not_describe_a_network_names_the_field(model: Any, field: str) -> None:
    with pytest.raises(SpecError, match=f"^model spec {field}"):
        ModelSpec.from_json(json.dumps(model))


def test_a_filter_that_does_not_fit_is_named() -> None:
    with pytest.raises(SpecError) as e:
        ModelSpec.from_json(json.dumps(edited("encoder.layers.0.kernel", 11)))
    assert str(e.value) == "model spec encoder.layers: convolution 0 (11x11 filter) does not fit its 10x10 input"
    ModelSpec.from_json(json.dumps(edited("encoder.layers.0.kernel", 10)))  # a 1x1 output fits


def zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


H = NETS["hwc"]
S = NETS["shared_hwc"]


def renamed(t: dict[str, np.ndarray], old: str, new: str) -> dict[str, np.ndarray]:
    return {new if k == old else k: v for k, v in t.items()}


@pytest.mark.parametrize(
    ("net", "tensors", "message"),
    [
        (
            H,
            {**H.tensors(), "actor.0.weight": zeros(4, 3, 2, 2)},
            r"actor.0.weight has shape \[4, 3, 2, 2\].* needs \[4, 3, 3, 3\]",
        ),
        (
            H,
            {**H.tensors(), "critic.2.weight": zeros(5, 3, 2, 2)},
            r"critic.2.weight has shape \[5, 3, 2, 2\].* needs \[5, 4, 2, 2\]",
        ),
        (H, renamed(H.tensors(), "actor.5.weight", "actor.4.weight"), "actor.5.weight is missing"),
        (
            H,
            {**H.tensors(), "actor.5.weight": zeros(8, 5 * 2 * 3)},
            r"actor.5.weight has shape \[8, 30\].* needs \[8, 20\]",
        ),
        (H, {**H.tensors(), "network.0.weight": zeros(4, 3, 3, 3)}, "network.0.weight is not a parameter"),
        (S, renamed(S.tensors(), "actor.weight", "actor.7.weight"), "actor.weight is missing"),
        (S, {**S.tensors(), "critic.weight": zeros(1, 7)}, r"critic.weight has shape \[1, 7\].* needs \[1, 6\]"),
        (S, {**S.tensors(), "actor.5.weight": zeros(5, 6)}, "actor.5.weight is not a parameter"),
        (S, {**S.tensors(), "network.7.weight": zeros(5, 6)}, "network.7.weight is not a parameter"),
    ],
)
def test_tensors_must_have_the_shapes_a_conv_or_shared_spec_implies(
    net: Net, tensors: dict[str, np.ndarray], message: str
) -> None:
    Policy(net.snapshot())
    with pytest.raises(PolicyError, match=message):
        Policy(save(tensors, metadata={"model": json.dumps(net.spec())}))


def test_observations_must_fit_the_image() -> None:
    p = Policy(H.snapshot())
    p.head(np.zeros((2, 7, 6, 3), np.uint8))
    p.head(np.zeros((2, 126), np.uint8))
    for shape in [(2, 6, 7, 3), (2, 3, 7, 6), (2, 125)]:
        with pytest.raises(PolicyError, match=r"expected \[B, 126\] or \[B, \*\[7, 6, 3\]\]"):
            p.head(np.zeros(shape, np.uint8))


GOLDEN = Path(__file__).resolve().parents[2] / "tests/fixtures/golden"


def load_golden(case: str) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A PPO golden fixture (``make_golden.py``): its scalars, its tensors and its parameters by name; skips the
    test when the fixture is not in this checkout."""
    path = GOLDEN / f"{case}.safetensors"
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    scalars = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["scalars"])
    t = load_file(path)
    return scalars, t, {k.removeprefix("param."): v for k, v in t.items() if k.startswith("param.")}


@pytest.mark.parametrize("case", ["ppo_conv_separate_clip", "ppo_conv_shared_clip"])
def test_pytorch_golden_forward_passes(case: str) -> None:
    """The PPO golden fixtures' conv models (``make_golden.py``, PyTorch): their parameters and batch give the
    log-probabilities, entropies and values PyTorch computed."""
    scalars, t, params = load_golden(case)
    logits = len(params["actor.bias" if scalars["shared_trunk"] else "actor.5.bias"])
    net = Net(
        tuple(scalars["obs_shape"]),
        scalars["layout"],
        tuple((c["out_channels"], c["kernel"], c["stride"]) for c in scalars["conv"]),
        tuple(scalars["hidden_sizes"]),
        scalars["activation"],
        scalars["shared_trunk"],
        {"kind": "categorical", "n": logits},
    )
    p = Policy(save(params, metadata={"model": json.dumps(net.spec())}))
    # batch.obs is the network input, uint8 values times 1/255 (f32): the bytes are the rounded multiples of 255.
    raw = np.rint(t["batch.obs"].astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(raw.astype(np.float32) * SCALE, t["batch.obs"])
    actions = t["batch.actions"].astype(np.float32).reshape(-1, 1)
    np.testing.assert_allclose(p.log_prob(raw, actions), t["expect.newlogprob"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.entropy(raw), t["expect.entropy"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.value(raw), t["expect.newvalue"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.act(raw, np.random.default_rng(0)).values, t["expect.newvalue"], rtol=1e-5, atol=1e-5)
