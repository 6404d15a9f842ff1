"""The numpy policy: layout from the model spec or read off the weights, closed-form log-probs and entropies,
sampling, bad input."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
import quadrant
from safetensors.numpy import save

from proxima_actor import Policy, PolicyError
from proxima_actor.distributions import Categorical, DiagGaussian, MultiCategorical, log_softmax
from proxima_actor.model import ModelSpec


def state_dict(obs_dim: int, out: int, hidden: tuple[int, ...], box: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for net, last in (("actor", out), ("critic", 1)):
        sizes = [obs_dim, *hidden, last]
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            tensors[f"{net}.{2 * i}.weight"] = rng.normal(0, 0.5, (n_out, n_in)).astype(np.float32)
            tensors[f"{net}.{2 * i}.bias"] = rng.normal(0, 0.1, n_out).astype(np.float32)
    if box:
        tensors["actor_logstd"] = rng.normal(-0.5, 0.2, (1, out)).astype(np.float32)
    return tensors


def spec(obs_dim: int, head: dict[str, Any], hidden: tuple[int, ...] = (8,), activation: str = "tanh") -> dict:
    """A model spec as the learner writes it (docs/model-spec.md)."""
    return {
        "format": 1,
        "obs_dim": obs_dim,
        "encoder": {"kind": "mlp", "hidden_sizes": list(hidden), "activation": activation},
        "core": {"kind": "none"},
        "head": head,
        "shared_trunk": False,
        "init": {"orthogonal": True, "log_std": 0.0},
    }


def with_spec(tensors: dict[str, np.ndarray], model: dict[str, Any], **metadata: str) -> bytes:
    """Snapshot bytes with the spec under the metadata key ``model``."""
    return save(tensors, metadata={"model": json.dumps(model), **metadata})


def image_spec(shape: tuple[int, ...], head: dict[str, Any], hidden: tuple[int, ...] = (8,)) -> dict:
    """A model spec for uint8 observations of ``shape``."""
    return {**spec(math.prod(shape), head, hidden), "obs_shape": list(shape), "obs_dtype": "uint8"}


def quadrant_snapshot() -> bytes:
    """A policy that sees the lit quadrant of ``quadrant.py``'s images: hidden unit ``q`` sums quadrant ``q``'s
    pixels scaled by 1/255 (9 when lit, at most 9 * 63/255 otherwise) less 5, and the logits are 20 times the hidden
    units, so it names the lit quadrant all but surely. Without the scaling every unit saturates alike."""
    t = state_dict(36, 4, (4,), box=False)
    masks = np.zeros((4, *quadrant.Quadrant().observation_space.shape), np.float32)
    for q in range(4):
        quadrant.quadrant(masks[q], q)[...] = 1.0
    t["actor.0.weight"], t["actor.0.bias"] = masks.reshape(4, 36), np.full(4, -5.0, np.float32)
    t["actor.2.weight"], t["actor.2.bias"] = 20 * np.eye(4, dtype=np.float32), np.zeros(4, np.float32)
    return with_spec(t, image_spec((6, 6, 1), {"kind": "categorical", "n": 4}, (4,)))


def test_layout_is_read_off_the_weights() -> None:
    p = Policy(save(state_dict(5, 3, (16, 8), box=False)), version=4)
    assert (p.obs_dim, p.discrete, p.action_dim, p.hidden_sizes, p.version) == (5, True, 1, [16, 8], 4)
    b = Policy(save(state_dict(7, 2, (32,), box=True)))
    assert (b.obs_dim, b.discrete, b.action_dim, b.hidden_sizes) == (7, False, 2, [32])


def test_forward_is_linear_tanh_linear() -> None:
    t = state_dict(3, 2, (4,), box=False)
    obs = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    h = np.tanh(obs.astype(np.float64) @ t["actor.0.weight"].T + t["actor.0.bias"])
    logits = h @ t["actor.2.weight"].T + t["actor.2.bias"]
    np.testing.assert_allclose(Policy(save(t)).head(obs), logits, atol=1e-5)


def test_log_probs_and_entropy_match_closed_forms() -> None:
    t = state_dict(3, 4, (8,), box=False)
    p = Policy(save(t))
    obs = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    logits = p.head(obs).astype(np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    actions = np.array([[0], [1], [2], [3], [1]], dtype=np.float32)
    want = np.log(probs[np.arange(5), actions[:, 0].astype(int)])
    np.testing.assert_allclose(p.log_prob(obs, actions), want, atol=1e-5)
    np.testing.assert_allclose(p.entropy(obs), -(probs * np.log(probs)).sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(log_softmax(np.array([[1000.0, 0.0]], dtype=np.float32)), [[0.0, -1000.0]], atol=1e-3)

    g = Policy(save(state_dict(3, 2, (8,), box=True)))
    assert isinstance(g.dist, DiagGaussian)
    log_std = g.dist.log_std
    mean = g.head(obs).astype(np.float64)
    a = mean + 0.7
    std = np.exp(log_std.astype(np.float64))
    dens = -((a - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(g.log_prob(obs, a.astype(np.float32)), dens.sum(axis=1), atol=1e-5)
    h = (0.5 * math.log(2 * math.pi * math.e) + log_std.astype(np.float64)).sum()
    np.testing.assert_allclose(g.entropy(obs), np.full(5, h), atol=1e-5)


def test_samples_follow_the_distribution_they_score() -> None:
    t = state_dict(2, 3, (4,), box=False)
    p = Policy(save(t))
    obs = np.zeros((20_000, 2), dtype=np.float32)
    out = p.act(obs, np.random.default_rng(3))
    probs = np.exp(log_softmax(p.head(obs[:1])))[0]
    counts = np.bincount(out.actions[:, 0].astype(int), minlength=3) / len(obs)
    np.testing.assert_allclose(counts, probs, atol=0.015)
    np.testing.assert_allclose(out.log_probs, p.log_prob(obs, out.actions), atol=1e-6)
    g = Policy(save(state_dict(2, 2, (4,), box=True)))
    out = g.act(obs, np.random.default_rng(4))
    np.testing.assert_allclose(out.actions.mean(axis=0), g.head(obs[:1])[0], atol=0.03)
    assert isinstance(g.dist, DiagGaussian)
    np.testing.assert_allclose(out.actions.std(axis=0), np.exp(g.dist.log_std), rtol=0.03)
    np.testing.assert_allclose(out.log_probs, g.log_prob(obs, out.actions), atol=1e-5)
    np.testing.assert_allclose(out.values, g.value(obs), atol=1e-6)
    greedy = p.act(obs[:2] + np.float32(0.5), np.random.default_rng(6), deterministic=True)
    np.testing.assert_array_equal(greedy.actions[:, 0], p.head(obs[:2] + np.float32(0.5)).argmax(axis=1))
    np.testing.assert_allclose(greedy.log_probs, p.log_prob(obs[:2] + np.float32(0.5), greedy.actions), atol=1e-6)
    mode = g.act(obs[:2], np.random.default_rng(5), deterministic=True)
    np.testing.assert_array_equal(mode.actions, g.head(obs[:2]))


def test_observation_statistics_normalise_and_clip() -> None:
    t = state_dict(2, 2, (4,), box=False)
    t["obs_rms.mean"] = np.array([1.0, -2.0])
    t["obs_rms.var"] = np.array([4.0, 0.25])
    t["obs_rms.count"] = np.array([10.0])
    p = Policy(save(t, metadata={"obs_clip": "3"}))
    assert p.obs_norm is not None
    normed = p.obs_norm.normalize(np.array([[3.0, 100.0]], dtype=np.float32))
    np.testing.assert_allclose(normed, [[1.0, 3.0]], atol=1e-6)
    raw = Policy(save(state_dict(2, 2, (4,), box=False)))
    np.testing.assert_allclose(p.head([[3.0, 100.0]]), raw.head([[1.0, 3.0]]), atol=1e-6)


@pytest.mark.parametrize(
    "data",
    [
        b"not safetensors",
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
        save({"actor.0.weight": np.zeros((2, 2), np.float32)}),
        save({**state_dict(2, 2, (4,), box=False), "actor.0.bias": np.array([np.nan] * 4, np.float32)}),
        save({**state_dict(2, 2, (4,), box=False), "actor.2.weight": np.zeros((2, 5), np.float32)}),
        save({**state_dict(2, 2, (4,), box=True), "actor_logstd": np.zeros((1, 3), np.float32)}),
        save({**state_dict(2, 2, (4,), box=False), "obs_rms.mean": np.zeros(2), "obs_rms.var": np.ones(2)}),
    ],
)
def test_bad_weights_are_policy_errors(data: bytes) -> None:
    with pytest.raises(PolicyError):
        Policy(data)


def test_observations_of_the_wrong_width_are_errors() -> None:
    p = Policy(save(state_dict(3, 2, (4,), box=False)))
    with pytest.raises(PolicyError):
        p.head(np.zeros((2, 4), np.float32))


def test_observations_come_as_rows_or_in_the_spec_shape() -> None:
    p = Policy(with_spec(state_dict(6, 2, (4,), box=False), {**spec(6, CAT, (4,)), "obs_shape": [2, 3]}))
    obs = np.random.default_rng(3).normal(size=(5, 2, 3))
    np.testing.assert_array_equal(p.head(obs), p.head(obs.reshape(5, 6)))
    np.testing.assert_array_equal(p.value(obs), p.value(obs.astype(np.float32).reshape(5, 6)))
    for shape in [(5, 3, 2), (5, 6, 1), (5, 5), (6,)]:
        with pytest.raises(PolicyError, match=r"expected \[B, 6\] or \[B, \*\[2, 3\]\]"):
            p.head(np.zeros(shape, np.float32))


def test_uint8_observations_are_scaled_by_1_over_255_and_never_normalised() -> None:
    t = state_dict(18, 3, (8,), box=False, seed=4)
    image = Policy(with_spec(t, image_spec((3, 3, 2), {"kind": "categorical", "n": 3})))
    plain = Policy(with_spec(t, spec(18, {"kind": "categorical", "n": 3})))
    obs = np.random.default_rng(5).integers(0, 256, (7, 3, 3, 2), dtype=np.uint8)
    obs[0] = 255  # the largest byte
    scaled = obs.reshape(7, 18).astype(np.float32) * (np.float32(1.0) / np.float32(255.0))
    # The same bits as the float32 network fed the scaled values, whichever dtype and shape the bytes come in.
    for x in (obs, obs.astype(np.float32), obs.reshape(7, 18), obs.astype(np.int64)):
        np.testing.assert_array_equal(image.head(x), plain.head(scaled))
        np.testing.assert_array_equal(image.value(x), plain.value(scaled))
        np.testing.assert_array_equal(image.entropy(x), plain.entropy(scaled))
    w0, b0, w1, b1 = t["actor.0.weight"], t["actor.0.bias"], t["actor.2.weight"], t["actor.2.bias"]
    np.testing.assert_allclose(image.head(obs), np.tanh(scaled @ w0.T + b0) @ w1.T + b1, atol=1e-5)
    out = image.act(obs, np.random.default_rng(6))
    want = plain.act(scaled, np.random.default_rng(6))
    for x, y in ((out.actions, want.actions), (out.log_probs, want.log_probs), (out.values, want.values)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(image.log_prob(obs, out.actions), plain.log_prob(scaled, out.actions))
    stats = {"obs_rms.mean": np.full(18, 100.0), "obs_rms.var": np.full(18, 4.0)}
    with_stats = Policy(with_spec({**t, **stats}, image_spec((3, 3, 2), {"kind": "categorical", "n": 3}), obs_clip="5"))
    np.testing.assert_array_equal(with_stats.head(obs), image.head(obs))


def test_the_activation_comes_from_the_metadata() -> None:
    t = state_dict(3, 2, (8,), box=False)
    obs = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    w0, b0, w1, b1 = t["actor.0.weight"], t["actor.0.bias"], t["actor.2.weight"], t["actor.2.bias"]
    relu = Policy(save(t, metadata={"activation": "relu"}))
    np.testing.assert_allclose(relu.head(obs), np.maximum(obs @ w0.T + b0, 0.0) @ w1.T + b1, atol=1e-5)
    tanh = Policy(save(t))
    np.testing.assert_allclose(tanh.head(obs), np.tanh(obs @ w0.T + b0) @ w1.T + b1, atol=1e-5)
    with pytest.raises(PolicyError, match="gelu"):
        Policy(save(t, metadata={"activation": "gelu"}))


def test_the_layout_comes_from_the_spec() -> None:
    c = Policy(with_spec(state_dict(5, 3, (16, 8), box=False), spec(5, {"kind": "categorical", "n": 3}, (16, 8))))
    assert (c.obs_dim, c.discrete, c.action_dim, c.hidden_sizes) == (5, True, 1, [16, 8])
    assert isinstance(c.dist, Categorical)
    m = Policy(with_spec(state_dict(5, 5, (8,), box=False), spec(5, {"kind": "multi_categorical", "nvec": [3, 2]})))
    assert (m.obs_dim, m.discrete, m.action_dim, m.hidden_sizes) == (5, False, 2, [8])
    assert isinstance(m.dist, MultiCategorical)
    g = Policy(with_spec(state_dict(7, 2, (32,), box=True), spec(7, {"kind": "gaussian", "dim": 2}, (32,))))
    assert (g.obs_dim, g.discrete, g.action_dim, g.hidden_sizes) == (7, False, 2, [32])
    assert isinstance(g.dist, DiagGaussian)


@pytest.mark.parametrize("box", [False, True])
def test_a_spec_gives_the_numbers_of_the_same_weights_without_one(box: bool) -> None:
    t = state_dict(4, 3, (16, 16), box=box, seed=3)
    head = {"kind": "gaussian", "dim": 3} if box else {"kind": "categorical", "n": 3}
    legacy, specced = Policy(save(t)), Policy(with_spec(t, spec(4, head, (16, 16))))
    obs = np.random.default_rng(8).normal(size=(64, 4)).astype(np.float32)
    for deterministic in (False, True):
        a = legacy.act(obs, np.random.default_rng(1), deterministic)
        b = specced.act(obs, np.random.default_rng(1), deterministic)
        for x, y in ((a.actions, b.actions), (a.log_probs, b.log_probs), (a.values, b.values)):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(legacy.log_prob(obs, a.actions), specced.log_prob(obs, a.actions))
    np.testing.assert_array_equal(legacy.entropy(obs), specced.entropy(obs))


def test_the_spec_names_the_activation() -> None:
    t = state_dict(3, 2, (8,), box=False)
    obs = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    relu = Policy(with_spec(t, spec(3, {"kind": "categorical", "n": 2}, activation="relu"), activation="tanh"))
    np.testing.assert_array_equal(relu.head(obs), Policy(save(t, metadata={"activation": "relu"})).head(obs))


def softmax64(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


NVEC = (3, 1, 4)


def multi_policy() -> Policy:
    return Policy(
        with_spec(
            state_dict(3, sum(NVEC), (16,), box=False, seed=7),
            spec(3, {"kind": "multi_categorical", "nvec": list(NVEC)}, (16,)),
        )
    )


def block_probs(p: Policy, obs: np.ndarray) -> list[np.ndarray]:
    """Each sub-action's probabilities in f64, from its own block of the head's logits."""
    logits = p.head(obs).astype(np.float64)
    return [softmax64(block) for block in np.split(logits, np.cumsum(NVEC)[:-1], axis=1)]


def test_multi_categorical_scores_are_sums_over_the_blocks() -> None:
    p = multi_policy()
    rng = np.random.default_rng(2)
    obs = rng.normal(size=(6, 3)).astype(np.float32)
    probs = block_probs(p, obs)
    actions = np.stack([rng.integers(n, size=6) for n in NVEC], axis=1).astype(np.float32)
    want = sum(np.log(pk[np.arange(6), actions[:, k].astype(int)]) for k, pk in enumerate(probs))
    np.testing.assert_allclose(p.log_prob(obs, actions), want, atol=1e-5)
    np.testing.assert_allclose(p.entropy(obs), sum(-(pk * np.log(pk)).sum(axis=1) for pk in probs), atol=1e-5)
    mode = p.act(obs, np.random.default_rng(0), deterministic=True)
    assert mode.actions.dtype == np.float32 and mode.actions.shape == (6, 3)
    np.testing.assert_array_equal(mode.actions, np.stack([pk.argmax(axis=1) for pk in probs], axis=1))
    np.testing.assert_allclose(mode.log_probs, p.log_prob(obs, mode.actions), atol=1e-6)


def test_multi_categorical_samples_follow_the_blocks_probabilities() -> None:
    p = multi_policy()
    obs = np.full((30_000, 3), 0.3, dtype=np.float32)
    out = p.act(obs, np.random.default_rng(3))
    assert out.actions.dtype == np.float32 and out.actions.shape == (30_000, 3)
    probs = [pk[0] for pk in block_probs(p, obs[:1])]
    for k, n in enumerate(NVEC):
        counts = np.bincount(out.actions[:, k].astype(int), minlength=n) / len(obs)
        np.testing.assert_allclose(counts, probs[k], atol=0.015)
    # The blocks are drawn independently: the joint frequencies are the products of the marginals.
    joint = np.zeros((NVEC[0], NVEC[2]))
    np.add.at(joint, (out.actions[:, 0].astype(int), out.actions[:, 2].astype(int)), 1.0 / len(obs))
    np.testing.assert_allclose(joint, np.outer(probs[0], probs[2]), atol=0.015)
    np.testing.assert_allclose(out.log_probs, p.log_prob(obs, out.actions), atol=1e-5)


GOOD = spec(2, {"kind": "categorical", "n": 2}, (4,))
#: A spec for 6x6 single-channel images, as the learner writes it.
IMAGE = (
    '{"format":1,"obs_dim":36,"obs_shape":[6,6,1],"obs_dtype":"uint8","encoder":{"kind":"mlp","hidden_sizes":[64,64],'
    '"activation":"tanh"},"core":{"kind":"none"},"head":{"kind":"categorical","n":4},"shared_trunk":false,'
    '"init":{"orthogonal":true,"log_std":0.0}}'
)


def test_a_spec_without_obs_shape_and_obs_dtype_takes_float32_vectors() -> None:
    parsed = ModelSpec.from_json(json.dumps(GOOD))
    assert (parsed.obs_shape, parsed.obs_dtype) == ((2,), "float32")
    assert parsed == ModelSpec.from_json(json.dumps({**GOOD, "obs_shape": [2], "obs_dtype": "float32"}))
    assert parsed == Policy(save(state_dict(2, 2, (4,), box=False))).spec
    assert parsed != ModelSpec.from_json(json.dumps({**GOOD, "obs_shape": [1, 2]}))
    assert parsed != ModelSpec.from_json(json.dumps({**GOOD, "obs_dtype": "uint8"}))
    image = ModelSpec.from_json(IMAGE)
    assert (image.obs_dim, image.obs_shape, image.obs_dtype, image.hidden_sizes) == (36, (6, 6, 1), "uint8", (64, 64))


def edited(path: str, value: Any) -> dict:
    """``GOOD`` with the field at the dotted ``path`` set to ``value`` (deleted for ``...``)."""
    model = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = model
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return model


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (["not", "an", "object"], ": expected an object"),
        (edited("format", 2), "format"),
        (edited("format", ...), "format"),
        (edited("encoder.kind", "cnn"), "encoder.kind"),
        (edited("encoder.kind", "conv"), "encoder.layers"),
        (edited("encoder.activation", "gelu"), "encoder.activation"),
        (edited("encoder.hidden_sizes", [4, 0]), "encoder.hidden_sizes"),
        (edited("encoder.hidden_sizes", []), "encoder.hidden_sizes"),
        (edited("encoder.width", 4), "encoder"),
        (edited("core.kind", "rnn"), "core.kind"),
        (edited("core", {"kind": "lstm"}), "core.size"),
        (edited("head", {"kind": "beta", "dim": 2}), "head.kind"),
        (edited("head.n", 0), "head.n"),
        (edited("head", {"kind": "multi_categorical", "nvec": []}), "head.nvec"),
        (edited("head", {"kind": "multi_categorical", "nvec": [2, 0]}), "head.nvec"),
        (edited("head", {"kind": "gaussian", "dim": 1.5}), "head.dim"),
        (edited("shared_trunk", "yes"), "shared_trunk"),
        (edited("shared_trunk", ...), "shared_trunk"),
        (edited("obs_dim", "2"), "obs_dim"),
        (edited("obs_shape", [3]), "obs_shape"),
        (edited("obs_shape", [2, 0]), "obs_shape"),
        (edited("obs_shape", []), "obs_shape"),
        (edited("obs_shape", 2), "obs_shape"),
        (edited("obs_dtype", "int8"), "obs_dtype"),
        (edited("obs_dtype", None), "obs_dtype"),
        (edited("memory", 1), ': unknown field "memory"'),
        (edited("core", "none"), "core: expected an object"),
    ],
)
def test_a_spec_this_package_cannot_run_names_the_field(model: Any, field: str) -> None:
    Policy(with_spec(state_dict(2, 2, (4,), box=False), GOOD))
    with pytest.raises(PolicyError, match=f"^model spec ?{field}"):
        Policy(with_spec(state_dict(2, 2, (4,), box=False), model))


def test_a_spec_that_is_not_json_is_an_error() -> None:
    with pytest.raises(PolicyError, match="model spec does not parse"):
        Policy(save(state_dict(2, 2, (4,), box=False), metadata={"model": "{not json"}))


def without(t: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in t.items() if k != name}


CAT = {"kind": "categorical", "n": 2}
GAUSS = {"kind": "gaussian", "dim": 2}
T_CAT = state_dict(2, 2, (4,), box=False)
T_GAUSS = state_dict(2, 2, (4,), box=True)


@pytest.mark.parametrize(
    ("tensors", "head", "message"),
    [
        (without(T_CAT, "actor.2.bias"), CAT, "actor.2.bias is missing"),
        (without(T_CAT, "critic.0.weight"), CAT, "critic.0.weight is missing"),
        ({**T_CAT, "actor.0.weight": np.zeros((4, 3), np.float32)}, CAT, r"actor.0.weight has shape \[4, 3\]"),
        ({**T_CAT, "critic.2.weight": np.zeros((2, 4), np.float32)}, CAT, "critic.2.weight has shape"),
        (T_CAT, {"kind": "categorical", "n": 3}, r"actor.2.weight has shape \[2, 4\].* needs \[3, 4\]"),
        (T_CAT, {"kind": "multi_categorical", "nvec": [2, 2]}, "actor.2.weight has shape"),
        (T_GAUSS, CAT, "actor_logstd is not a parameter"),
        (T_CAT, GAUSS, "actor_logstd is missing"),
        ({**T_GAUSS, "actor_logstd": np.zeros(2, np.float32)}, GAUSS, r"actor_logstd has shape \[2\]"),
        ({**T_CAT, "actor.4.weight": np.zeros((2, 2), np.float32)}, CAT, "actor.4.weight is not a parameter"),
    ],
)
def test_tensors_must_have_the_shapes_the_spec_implies(
    tensors: dict[str, np.ndarray], head: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy(with_spec(tensors, spec(2, head, (4,))))
