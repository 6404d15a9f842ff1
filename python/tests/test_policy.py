"""The numpy policy: layout read off the weights, closed-form log-probs and entropies, sampling, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from safetensors.numpy import save

from proxima_actor import Policy, PolicyError
from proxima_actor.policy import log_softmax


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
    assert g.log_std is not None
    mean = g.head(obs).astype(np.float64)
    a = mean + 0.7
    std = np.exp(g.log_std.astype(np.float64))
    dens = -((a - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(g.log_prob(obs, a.astype(np.float32)), dens.sum(axis=1), atol=1e-5)
    h = (0.5 * math.log(2 * math.pi * math.e) + g.log_std.astype(np.float64)).sum()
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
    assert g.log_std is not None
    np.testing.assert_allclose(out.actions.std(axis=0), np.exp(g.log_std), rtol=0.03)
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
