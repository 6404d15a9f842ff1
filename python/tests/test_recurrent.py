"""Recurrent cores (LSTM and GRU on a shared trunk, or one on each separate trunk): the numpy network against
PyTorch's ``nn.LSTM`` / ``nn.GRU`` over sequences with episode starts inside, the state's reset semantics, the spec
fields, the PyTorch golden fixtures, and the sampler and ``eval`` carrying each env's state."""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from safetensors.numpy import save
from test_conv import load_golden
from test_policy import spec, state_dict, with_spec
from test_sampler import make_counter

from proxima_actor import Policy, PolicyError, wire
from proxima_actor.evaluate import evaluate
from proxima_actor.model import Core, ModelSpec, SpecError
from proxima_actor.sampler import EnvError, Rollout, Sampler, make_vector_env

SCALE = np.float32(1.0) / np.float32(255.0)
#: Largest difference allowed between the numpy and the PyTorch numbers (both f32).
TOL = 1e-5
CAT = {"kind": "categorical", "n": 4}
GAUSS = {"kind": "gaussian", "dim": 2}


def recurrent_spec(
    core: str,
    size: int,
    obs_shape: tuple[int, ...],
    head: dict[str, Any],
    hidden: tuple[int, ...] = (8,),
    activation: str = "tanh",
    conv: tuple[tuple[int, int, int], ...] = (),
    layout: str = "hwc",
    dtype: str = "float32",
    shared: bool = True,
) -> dict[str, Any]:
    """A spec with a ``core`` of ``size`` units on a shared trunk, or (not ``shared``) one on each separate trunk
    (``conv`` as ``(out, kernel, stride)``)."""
    encoder: dict[str, Any] = {"kind": "mlp", "hidden_sizes": list(hidden), "activation": activation}
    if conv:
        layers = [{"out_channels": o, "kernel": k, "stride": s} for o, k, s in conv]
        encoder = {**encoder, "kind": "conv", "layers": layers, "layout": layout}
    return {
        "format": 1,
        "obs_dim": math.prod(obs_shape),
        "obs_shape": list(obs_shape),
        "obs_dtype": dtype,
        "encoder": encoder,
        "core": {"kind": core, "size": size},
        "head": head,
        "shared_trunk": shared,
        "init": {"orthogonal": True, "log_std": 0.0},
    }


def branches(s: ModelSpec) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """Each trunk's name, its core's name and its heads' (name, outputs): ``network``, ``lstm`` / ``gru`` and
    ``actor`` / ``critic`` on a shared trunk; ``actor``, ``actor_lstm`` and ``actor_head``, then the critic's, with a
    core on each separate trunk."""
    k, logits = s.core.kind, s.head.logits_dim
    if s.shared_trunk:
        return [("network", k, [("actor", logits), ("critic", 1)])]
    return [(net, f"{net}_{k}", [(f"{net}_head", out)]) for net, out in (("actor", logits), ("critic", 1))]


def numpy_tensors(model: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random parameters for ``model`` with PyTorch's names, without PyTorch: the trunk, the core, the heads (each
    trunk's in turn with separate trunks)."""
    rng = np.random.default_rng(seed)
    s = ModelSpec.from_json(json.dumps(model))
    assert not s.conv
    t: dict[str, np.ndarray] = {}

    def param(name: str, shape: tuple[int, ...], fan_in: int) -> None:
        t[name] = rng.normal(0, 1 / math.sqrt(fan_in), shape).astype(np.float32)

    widths = [s.obs_dim, *s.hidden_sizes]
    h, g, f = s.core.size, s.core.gates * s.core.size, widths[-1]
    for trunk, core, heads in branches(s):
        for j, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            param(f"{trunk}.{2 * j}.weight", (n_out, n_in), n_in)
            param(f"{trunk}.{2 * j}.bias", (n_out,), n_in)
        param(f"{core}.weight_ih_l0", (g, f), f)
        param(f"{core}.weight_hh_l0", (g, h), h)
        param(f"{core}.bias_ih_l0", (g,), h)
        param(f"{core}.bias_hh_l0", (g,), h)
        for head, out in heads:
            param(f"{head}.weight", (out, h), h)
            param(f"{head}.bias", (out,), h)
    if model["head"]["kind"] == "gaussian":
        t["actor_logstd"] = rng.normal(-0.5, 0.2, (1, s.head.logits_dim)).astype(np.float32)
    return t


def recurrent_policy(
    core: str = "lstm", size: int = 5, head: dict[str, Any] | None = None, seed: int = 0, shared: bool = True
) -> Policy:
    """A recurrent policy for :func:`make_counter`'s envs (2 observation values, Box(1) actions) by default."""
    model = recurrent_spec(core, size, (2,), head or {"kind": "gaussian", "dim": 1}, shared=shared)
    return Policy(with_spec(numpy_tensors(model, seed), model), version=seed)


# -- against PyTorch -------------------------------------------------------------------------------------------------

#: name -> (spec, T, N): the cores over MLP and conv trunks, uint8 images, every head kind.
CASES: dict[str, tuple[dict[str, Any], int, int]] = {
    "lstm_mlp": (recurrent_spec("lstm", 6, (5,), CAT, (8, 7)), 9, 3),
    "gru_mlp_relu_gaussian": (recurrent_spec("gru", 7, (4,), GAUSS, (6,), "relu"), 8, 4),
    "lstm_conv_hwc": (
        recurrent_spec("lstm", 5, (7, 6, 2), CAT, (8,), "relu", ((3, 3, 1), (4, 2, 2)), "hwc", "uint8"),
        6,
        2,
    ),
    "gru_conv_chw": (
        recurrent_spec(
            "gru", 6, (2, 8, 7), {"kind": "multi_categorical", "nvec": [2, 3]}, (5,), "tanh", ((3, 3, 2),), "chw"
        ),
        7,
        3,
    ),
    "gru_conv_hw": (recurrent_spec("gru", 4, (6, 6), CAT, (6,), "relu", ((2, 3, 1),), "hwc", "uint8"), 5, 2),
    # A core on each separate trunk (SB3 RecurrentPPO's enable_critic_lstm).
    "lstm_mlp_separate": (recurrent_spec("lstm", 6, (5,), CAT, (8, 7), shared=False), 9, 3),
    "gru_mlp_separate_gaussian": (recurrent_spec("gru", 7, (4,), GAUSS, (6,), "relu", shared=False), 8, 4),
    "lstm_conv_separate_chw": (
        recurrent_spec("lstm", 5, (2, 7, 6), GAUSS, (8,), "relu", ((3, 3, 1), (4, 2, 2)), "chw", "uint8", False),
        6,
        2,
    ),
}


def torch_net(model: dict[str, Any], seed: int) -> Any:
    """The spec's network as PyTorch builds it (``network``, ``lstm`` / ``gru``, ``actor``, ``critic``; separate:
    ``actor``, ``actor_lstm`` / ``actor_gru``, ``actor_head``, then the critic's), the cores' parameters scaled up
    from PyTorch's initialisation so the gates do not all sit near their middle."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(seed)
    s = ModelSpec.from_json(json.dumps(model))
    act = nn.ReLU if s.activation == "relu" else nn.Tanh
    cell = nn.LSTM if s.core.kind == "lstm" else nn.GRU
    net = nn.Module()
    for trunk, core, heads in branches(s):
        layers: list[Any] = []
        for layer, image in zip(s.conv, s.conv_dims(), strict=False):
            layers += [nn.Conv2d(image.c, layer.out_channels, layer.kernel, layer.stride), act()]
        if s.conv:
            layers.append(nn.Flatten())
        for n_in, n_out in itertools.pairwise([s.features, *s.hidden_sizes]):
            layers += [nn.Linear(n_in, n_out), act()]
        setattr(net, trunk, nn.Sequential(*layers))
        setattr(net, core, cell(s.hidden_sizes[-1], s.core.size))
        for head, out in heads:
            setattr(net, head, nn.Linear(s.core.size, out))
    if model["head"]["kind"] == "gaussian":
        net.actor_logstd = nn.Parameter(torch.full((1, s.head.logits_dim), -0.3))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.split(".")[0] in {core for _, core, _ in branches(s)}:
                p.mul_(3.0)
    return net


def torch_sequence(
    net: Any, model: dict[str, Any], obs: np.ndarray, starts: np.ndarray, state: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head, the values (time-major rows) and the final state as PyTorch computes them, step by step with
    ``nn.LSTM`` / ``nn.GRU`` on sequences of length 1, zeroing the state of the envs that start an episode; with a
    core on each separate trunk, the actor's from the first half of each env's state and the critic's from the
    second, the final state the two concatenated."""
    import torch

    s = ModelSpec.from_json(json.dumps(model))
    n, h, width = len(state), s.core.size, s.core.state_dim
    x = torch.from_numpy(obs.astype(np.float32))
    if s.obs_dtype == "uint8":
        x = x * float(SCALE)
    x = x.reshape(len(obs), *s.obs_shape)
    if s.conv:
        if len(s.obs_shape) == 2:
            x = x[:, None]
        elif s.layout == "hwc":
            x = x.permute(0, 3, 1, 2)
    else:
        x = x.reshape(len(obs), -1)

    def run(trunk: str, core: str, part: np.ndarray) -> tuple[Any, Any]:
        """The core's outputs ``[T * N, H]`` and final state ``[N, width]`` from its part of the state."""
        cell = getattr(net, core)
        features = getattr(net, trunk)(x)
        hx = torch.from_numpy(part[:, :h].copy())[None]
        cx = torch.from_numpy(part[:, h:].copy())[None]
        outs = []
        for t in range(len(obs) // n):
            rows = slice(t * n, (t + 1) * n)
            keep = torch.from_numpy(~starts[rows]).float()[None, :, None]
            hx, cx = hx * keep, cx * keep
            if s.core.kind == "lstm":
                out, (hx, cx) = cell(features[rows][None], (hx, cx))
            else:
                out, hx = cell(features[rows][None], hx)
            outs.append(out[0])
        return torch.cat(outs), torch.cat([hx[0], cx[0]], dim=1) if s.core.kind == "lstm" else hx[0]

    with torch.no_grad():
        if s.shared_trunk:
            out, final = run("network", s.core.kind, state)
            head, value = net.actor(out), net.critic(out)
        else:
            out, final_actor = run("actor", f"actor_{s.core.kind}", state[:, :width])
            out_critic, final_critic = run("critic", f"critic_{s.core.kind}", state[:, width:])
            head, value = net.actor_head(out), net.critic_head(out_critic)
            final = torch.cat([final_actor, final_critic], dim=1)
    return head.numpy(), value[:, 0].numpy(), final.numpy()


def observations(model: dict[str, Any], rows: int, rng: np.random.Generator) -> np.ndarray:
    shape = (rows, *model["obs_shape"])
    if model["obs_dtype"] == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.normal(0, 1.5, shape).astype(np.float32)


def sequence_inputs(
    model: dict[str, Any], steps: int, envs: int, state_dim: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations ``[T * N, *obs_shape]``, starts (about one row in four, env 0 at step 2 always) and a random
    non-zero initial state."""
    rng = np.random.default_rng(seed)
    starts = rng.random(steps * envs) < 0.25
    starts[2 * envs] = True
    state = rng.normal(0, 0.5, (envs, state_dim)).astype(np.float32)
    return observations(model, steps * envs, rng), starts, state


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_core_matches_pytorch_over_a_sequence_with_resets(name: str) -> None:
    model, steps, envs = CASES[name]
    net = torch_net(model, seed=3)
    tensors = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    policy = Policy(with_spec(tensors, model))
    assert policy.recurrent and policy.state_dim == (1 if policy.spec.shared_trunk else 2) * policy.spec.core.state_dim
    obs, starts, state = sequence_inputs(model, steps, envs, policy.state_dim)
    given = state.copy()
    head, values, final = torch_sequence(net, model, obs, starts, state)
    rng = np.random.default_rng(5)
    actions = policy.dist.sample(head, rng)[0]
    out = policy.sequence(obs, starts, state, actions)
    worst = {
        "head": np.abs(out.head - head).max(),
        "value": np.abs(out.values - values).max(),
        "final_state": np.abs(out.final_state - final).max(),
    }
    print(f"[recurrent] {name}: max |numpy - torch| " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    for k, v in worst.items():
        assert v <= TOL, f"{k}: {v}"
    # The distribution's numbers follow the head's (checked against closed forms in test_policy).
    assert out.log_probs is not None
    np.testing.assert_allclose(out.log_probs, policy.dist.log_prob(head, actions), rtol=0, atol=1e-4)
    np.testing.assert_allclose(out.entropy, policy.dist.entropy(head), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(state, given)  # the initial state is not modified
    assert not np.shares_memory(out.final_state, state)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stepping_one_row_at_a_time_gives_the_sequence(name: str) -> None:
    model, steps, envs = CASES[name]
    policy = Policy(with_spec(numpy_tensors(model) if "conv" not in name else torch_tensors(model), model))
    obs, starts, state0 = sequence_inputs(model, steps, envs, policy.state_dim)
    state0_copy = state0.copy()
    seq = policy.sequence(obs, starts, state0)
    np.testing.assert_array_equal(state0, state0_copy)
    state = state0
    for t in range(steps):
        rows = slice(t * envs, (t + 1) * envs)
        state = np.where(starts[rows, None], np.float32(0), state)
        head = policy.head(obs[rows], state)
        np.testing.assert_allclose(policy.value(obs[rows], state), seq.values[rows], rtol=0, atol=1e-6)
        np.testing.assert_allclose(policy.entropy(obs[rows], state), seq.entropy[rows], rtol=0, atol=1e-6)
        out = policy.act(obs[rows], np.random.default_rng(t), deterministic=True, state=state)
        np.testing.assert_allclose(head, seq.head[rows], rtol=0, atol=1e-6)
        np.testing.assert_allclose(out.values, seq.values[rows], rtol=0, atol=1e-6)
        assert out.state is not None and out.state.shape == (envs, policy.state_dim)
        np.testing.assert_allclose(policy.log_prob(obs[rows], out.actions, state), out.log_probs, rtol=0, atol=1e-6)
        state = out.state
    np.testing.assert_allclose(state, seq.final_state, rtol=0, atol=1e-6)


def torch_tensors(model: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in torch_net(model, seed=4).state_dict().items()}


# -- the state's semantics -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("core", "shared"), list(itertools.product(["lstm", "gru"], [True, False])))
def test_a_start_zeroes_the_state_and_the_state_carries_otherwise(core: str, shared: bool) -> None:
    model = recurrent_spec(core, 6, (3,), CAT, (8,), shared=shared)
    policy = Policy(with_spec(numpy_tensors(model, seed=2), model))
    assert policy.state_dim == (12 if core == "lstm" else 6) * (1 if shared else 2)
    assert policy.initial_state(3).shape == (3, policy.state_dim) and not policy.initial_state(3).any()
    obs, _, state = sequence_inputs(model, 6, 2, policy.state_dim, seed=7)
    starts = np.zeros(12, dtype=bool)
    starts[3 * 2 + 1] = True  # env 1 starts an episode at step 3
    out = policy.sequence(obs, starts, state)
    # Env 1 from step 3 is a fresh sequence from the zero state; env 0 is not affected by it.
    fresh = policy.sequence(obs.reshape(6, 2, -1)[3:, 1], np.zeros(3, bool), policy.initial_state(1))
    np.testing.assert_allclose(out.head.reshape(6, 2, -1)[3:, 1], fresh.head, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.final_state[1], fresh.final_state[0], rtol=0, atol=1e-6)
    alone = policy.sequence(obs.reshape(6, 2, -1)[:, 0], np.zeros(6, bool), state[:1])
    np.testing.assert_allclose(out.head.reshape(6, 2, -1)[:, 0], alone.head, rtol=0, atol=1e-6)
    # A start on the first row ignores the initial state; without one the state matters.
    first = starts.copy()
    first[[0, 1]] = True
    np.testing.assert_allclose(
        policy.sequence(obs, first, state).head, policy.sequence(obs, first, policy.initial_state(2)).head, atol=0
    )
    assert np.abs(policy.sequence(obs, starts, policy.initial_state(2)).head[:2] - out.head[:2]).max() > 1e-3
    # The state carries: the same observation gives another head at the next step.
    assert np.abs(out.head[2:4] - policy.head(obs[2:4], policy.initial_state(2))).max() > 1e-3


def test_a_recurrent_policy_needs_states_of_its_shape() -> None:
    policy = recurrent_policy("gru", 4)
    obs = np.zeros((3, 2), np.float32)
    for call in (
        lambda: policy.act(obs, np.random.default_rng(0)),
        lambda: policy.head(obs),
        lambda: policy.value(obs),
        lambda: policy.entropy(obs),
    ):
        with pytest.raises(PolicyError, match="state"):
            call()
    with pytest.raises(PolicyError, match=r"\[3, 4\]"):
        policy.act(obs, np.random.default_rng(0), state=np.zeros((3, 8), np.float32))
    with pytest.raises(PolicyError, match="initial state"):
        policy.sequence(np.zeros((6, 2)), np.zeros(6, bool), np.zeros((4, 4), np.float32))
    with pytest.raises(PolicyError, match="starts"):
        policy.sequence(np.zeros((6, 2)), np.zeros(5, bool), np.zeros((3, 4), np.float32))


def test_memoryless_policies_take_an_empty_state_or_none() -> None:
    policy = Policy(with_spec(state_dict(3, 2, (8,), box=False), spec(3, {"kind": "categorical", "n": 2})))
    assert not policy.recurrent and policy.state_dim == 0 and policy.initial_state(4).shape == (4, 0)
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    plain = policy.act(obs, np.random.default_rng(1))
    assert plain.state is None
    with_state = policy.act(obs, np.random.default_rng(1), state=policy.initial_state(8))
    np.testing.assert_array_equal(plain.actions, with_state.actions)
    assert with_state.state is not None and with_state.state.shape == (8, 0)
    seq = policy.sequence(obs, np.zeros(8, bool), policy.initial_state(2), plain.actions)
    np.testing.assert_array_equal(seq.head, policy.head(obs))
    np.testing.assert_array_equal(seq.values, plain.values)
    assert seq.log_probs is not None
    np.testing.assert_allclose(seq.log_probs, plain.log_probs, rtol=0, atol=1e-6)
    assert seq.final_state.shape == (2, 0)


# -- the spec --------------------------------------------------------------------------------------------------------


def test_the_core_is_parsed_and_described() -> None:
    model = recurrent_spec("lstm", 16, (4,), CAT, (32,))
    s = ModelSpec.from_json(json.dumps(model))
    assert s.core == Core("lstm", 16) and s.state_dim == 32 and s.core.gates == 4
    assert s.describe() == "mlp[32] tanh, core lstm(16), categorical(4), a shared trunk"
    g = ModelSpec.from_json(json.dumps(recurrent_spec("gru", 8, (4,), CAT)))
    assert g.core == Core("gru", 8) and g.state_dim == 8 and g.core.gates == 3
    none = ModelSpec.from_json(json.dumps(spec(4, CAT)))
    assert none.core == Core() and none.state_dim == 0 and not none.core.recurrent and none.cores == 0
    assert "core" not in none.describe()
    # A core on each separate trunk: the state holds both cores' states.
    sep = ModelSpec.from_json(json.dumps(recurrent_spec("lstm", 16, (4,), CAT, (32,), shared=False)))
    assert sep.core == Core("lstm", 16) and not sep.shared_trunk and sep.cores == 2 and sep.state_dim == 64
    assert sep.describe() == "mlp[32] tanh, core lstm(16) per trunk, categorical(4)"
    g2 = ModelSpec.from_json(json.dumps(recurrent_spec("gru", 8, (4,), CAT, shared=False)))
    assert (g2.cores, g2.core.state_dim, g2.state_dim) == (2, 8, 16)
    assert (s.cores, g.cores) == (1, 1)


@pytest.mark.parametrize(
    ("core", "shared", "message"),
    [
        ({"kind": "gru", "size": 0}, True, "core.size"),
        ({"kind": "lstm", "size": 0}, False, "core.size"),
        ({"kind": "gru"}, False, "core.size"),
        ({"kind": "gru"}, True, "core.size"),
        ({"kind": "lstm", "size": 4.5}, True, "core.size"),
        ({"kind": "rnn", "size": 8}, True, "core.kind"),
        ({"kind": "none", "size": 8}, True, "size"),
        ({"kind": "lstm", "size": 8, "layers": 2}, True, "layers"),
    ],
)
def test_bad_cores_are_refused(core: dict[str, Any], shared: bool, message: str) -> None:
    model = {**recurrent_spec("lstm", 8, (4,), CAT), "core": core, "shared_trunk": shared}
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_json(json.dumps(model))


def test_the_core_parameters_must_be_there_and_nowhere_else() -> None:
    model = recurrent_spec("lstm", 5, (3,), CAT)
    t = numpy_tensors(model)
    Policy(with_spec(t, model))
    missing = {k: v for k, v in t.items() if k != "lstm.bias_hh_l0"}
    with pytest.raises(PolicyError, match=r"lstm.bias_hh_l0 is missing.*core lstm\(5\)"):
        Policy(with_spec(missing, model))
    with pytest.raises(PolicyError, match=r"lstm.weight_hh_l0 has shape \[20, 4\].*needs \[20, 5\]"):
        Policy(with_spec({**t, "lstm.weight_hh_l0": np.zeros((20, 4), np.float32)}, model))
    # The heads take the core's output, not the trunk's.
    with pytest.raises(PolicyError, match=r"actor.weight has shape \[4, 8\]"):
        Policy(with_spec({**t, "actor.weight": np.zeros((4, 8), np.float32)}, model))
    gru = {**model, "core": {"kind": "gru", "size": 5}}
    with pytest.raises(PolicyError, match=r"gru\.weight_ih_l0 is missing"):
        Policy(with_spec(t, gru))
    memoryless = {**model, "core": {"kind": "none"}}
    no_core = {k: v for k, v in t.items() if not k.startswith("lstm")}
    no_core["actor.weight"], no_core["critic.weight"] = np.zeros((4, 8), np.float32), np.zeros((1, 8), np.float32)
    Policy(with_spec(no_core, memoryless))
    with pytest.raises(PolicyError, match=r"lstm\.weight_ih_l0 is not a parameter"):
        Policy(with_spec({**no_core, "lstm.weight_ih_l0": t["lstm.weight_ih_l0"]}, memoryless))


def test_separate_cores_parameters_must_be_there_and_nowhere_else() -> None:
    model = recurrent_spec("lstm", 5, (3,), CAT, (8,), shared=False)
    t = numpy_tensors(model)
    shapes = {
        "actor.0.weight": (8, 3),
        "actor.0.bias": (8,),
        "actor_lstm.weight_ih_l0": (20, 8),
        "actor_lstm.weight_hh_l0": (20, 5),
        "actor_lstm.bias_ih_l0": (20,),
        "actor_lstm.bias_hh_l0": (20,),
        "actor_head.weight": (4, 5),
        "actor_head.bias": (4,),
    }
    shapes |= {k.replace("actor", "critic"): v for k, v in shapes.items()}
    shapes["critic_head.weight"], shapes["critic_head.bias"] = (1, 5), (1,)
    assert {k: v.shape for k, v in t.items()} == shapes
    policy = Policy(with_spec(t, model))
    assert policy.state_dim == 20 and policy.initial_state(3).shape == (3, 20)
    for name in ("critic_lstm.bias_hh_l0", "actor_head.weight", "critic.0.bias"):
        missing = {k: v for k, v in t.items() if k != name}
        with pytest.raises(PolicyError, match=rf"^{re.escape(name)} is missing.*core lstm\(5\) per trunk"):
            Policy(with_spec(missing, model))
    # The cores take the trunk's output (8 values), the heads the core's (5).
    with pytest.raises(PolicyError, match=r"^critic_lstm\.weight_ih_l0 has shape \[20, 3\].*needs \[20, 8\]"):
        Policy(with_spec({**t, "critic_lstm.weight_ih_l0": np.zeros((20, 3), np.float32)}, model))
    with pytest.raises(PolicyError, match=r"^critic_head\.weight has shape \[1, 8\].*needs \[1, 5\]"):
        Policy(with_spec({**t, "critic_head.weight": np.zeros((1, 8), np.float32)}, model))
    with pytest.raises(PolicyError, match=r"^actor_head\.bias has shape \[5\].*needs \[4\]"):
        Policy(with_spec({**t, "actor_head.bias": np.zeros(5, np.float32)}, model))
    # Neither a head layer inside the trunks, nor a shared trunk's names, nor the other core kind.
    for name, shape in [
        ("actor.2.weight", (4, 8)),
        ("critic.weight", (1, 5)),
        ("lstm.weight_ih_l0", (20, 8)),
        ("network.0.bias", (8,)),
        ("critic_gru.bias_ih_l0", (15,)),
    ]:
        with pytest.raises(PolicyError, match=rf"^{re.escape(name)} is not a parameter.*per trunk"):
            Policy(with_spec({**t, name: np.zeros(shape, np.float32)}, model))
    # A shared-trunk snapshot is not one of separate cores, nor the other way round.
    shared = recurrent_spec("lstm", 5, (3,), CAT, (8,))
    with pytest.raises(PolicyError, match=r"^actor\.0\.weight is missing"):
        Policy(with_spec(numpy_tensors(shared), model))
    with pytest.raises(PolicyError, match=r"^network\.0\.weight is missing"):
        Policy(with_spec(t, shared))
    gru = {**model, "core": {"kind": "gru", "size": 5}}
    with pytest.raises(PolicyError, match=r"^actor_gru\.weight_ih_l0 is missing"):
        Policy(with_spec(t, gru))


# -- the PyTorch golden fixtures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["ppo_lstm_shared_clip", "ppo_gru_shared_kl_penalty", "ppo_lstm_separate_clip"])
def test_pytorch_golden_sequences(case: str) -> None:
    """The PPO golden fixtures' recurrent models (``make_golden.py``, PyTorch's stepwise loop): their parameters,
    sequences, starts and initial states give the log-probabilities, entropies and values PyTorch computed."""
    scalars, t, params = load_golden(case)
    shared = scalars["shared_trunk"]
    if "actor_logstd" in params:
        head: dict[str, Any] = {"kind": "gaussian", "dim": params["actor_logstd"].shape[1]}
    else:
        head = {"kind": "categorical", "n": len(params["actor.bias" if shared else "actor_head.bias"])}
    obs_dim = scalars["obs_dim"]
    model = recurrent_spec(
        scalars["core"], scalars["core_size"], (obs_dim,), head, tuple(scalars["hidden_sizes"]), shared=shared
    )
    assert model["encoder"]["activation"] == scalars["activation"]
    p = Policy(with_spec(params, model))
    steps, seqs = scalars["steps"], scalars["sequences"]
    initial = t["batch.initial_state"]
    assert initial.shape == (seqs, p.state_dim) and t["batch.obs"].shape == (steps * seqs, obs_dim)
    starts = t["batch.starts"] > 0
    assert starts[:seqs].any() and starts[seqs:].any()  # at t = 0 and later
    actions = t["batch.actions"].astype(np.float32).reshape(steps * seqs, -1)
    out = p.sequence(t["batch.obs"], starts, initial, actions)
    assert out.log_probs is not None
    np.testing.assert_allclose(out.log_probs, t["expect.newlogprob"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.entropy, t["expect.entropy"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.values, t["expect.newvalue"], rtol=1e-5, atol=1e-5)


# -- the sampler and eval ----------------------------------------------------------------------------------------


def replay(policy: Policy, r: Rollout, state: np.ndarray) -> tuple[Any, np.ndarray]:
    """What the learner computes from a rollout: its sequence from ``state`` with starts after every episode end,
    and the state the next rollout starts from (zero for the envs whose episode ended at the last step)."""
    ended = r.terminated | r.truncated
    starts = np.zeros_like(ended)
    starts[1:] = ended[:-1]
    out = policy.sequence(r.obs.reshape(len(r), -1), starts.reshape(-1), state, r.actions.reshape(len(r), -1))
    return out, np.where(ended[-1][:, None], np.float32(0), out.final_state)


@pytest.mark.parametrize(("core", "shared"), list(itertools.product(["lstm", "gru"], [True, False])))
def test_the_sampler_sends_each_rollouts_initial_state_and_carries_it(core: str, shared: bool) -> None:
    sampler = Sampler(make_vector_env(make_counter, 3), rollout_steps=7, seed=2)
    policy = recurrent_policy(core, 4, seed=1, shared=shared)
    sampler.check_policy(policy)
    r1 = sampler.collect(policy)
    s = policy.state_dim
    assert r1.initial_state.shape == (3, s) and not r1.initial_state.any()
    msg = wire.rollout(r1, actor_id=1)
    assert len(msg.initial_state) == 3 * s * 4
    # The 5-step time limit ends every env's episode at step 4: step 5 acts from the zero state.
    assert r1.truncated[4].all() and not r1.truncated[[0, 1, 2, 3, 5, 6]].any()
    out, after = replay(policy, r1, r1.initial_state)
    np.testing.assert_allclose(out.values, r1.values.reshape(-1), rtol=0, atol=1e-6)
    assert out.log_probs is not None
    np.testing.assert_allclose(out.log_probs, r1.log_probs.reshape(-1), rtol=0, atol=1e-5)
    # The next rollout starts from the states the last one left, non-zero, and sends them.
    r2 = sampler.collect(policy)
    assert np.abs(r2.initial_state).min() > 0
    np.testing.assert_allclose(r2.initial_state, after, rtol=0, atol=1e-6)
    sent = np.frombuffer(wire.rollout(r2, actor_id=1).initial_state, "<f4").reshape(3, s)
    np.testing.assert_array_equal(sent, r2.initial_state)
    out2, after2 = replay(policy, r2, sent)
    np.testing.assert_allclose(out2.values, r2.values.reshape(-1), rtol=0, atol=1e-6)
    # A new policy (same core) continues from those states.
    newer = recurrent_policy(core, 4, seed=2, shared=shared)
    r3 = sampler.collect(newer)
    np.testing.assert_allclose(r3.initial_state, after2, rtol=0, atol=1e-6)
    out3, _ = replay(newer, r3, r3.initial_state)
    np.testing.assert_allclose(out3.values, r3.values.reshape(-1), rtol=0, atol=1e-6)
    # A policy with another core, or the same core on the other trunks, starts afresh; a memoryless one sends no
    # state.
    r4 = sampler.collect(recurrent_policy("lstm" if core == "gru" else "gru", 4, shared=shared))
    assert not r4.initial_state.any()
    sampler.collect(newer)
    r4 = sampler.collect(recurrent_policy(core, 4, shared=not shared))
    assert r4.initial_state.shape == (3, 2 * s if shared else s // 2) and not r4.initial_state.any()
    r5 = sampler.collect(Policy(save(state_dict(2, 1, (4,), box=True))))
    assert r5.initial_state.shape == (3, 0) and wire.rollout(r5, actor_id=1).initial_state == b""
    sampler.close()


def test_the_actor_sends_each_rollouts_initial_state() -> None:
    """Through a fake learner: the messages carry ``[N, state_dim]`` f32 states, zero for the first rollout, each
    later one the state the learner's replay of the previous rollout ends in."""
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from test_client import FakeLearner, start, wait_until

    from proxima_actor._proto import ppo_pb2_grpc as pb_grpc

    model = recurrent_spec("lstm", 3, (4,), {"kind": "categorical", "n": 2})
    fake = FakeLearner()
    fake.weights = with_spec(numpy_tensors(model), model)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_LearnerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        stop = threading.Event()
        _, thread, errors = start(port, stop, num_envs=2, policy_wait_ms=0)
        wait_until(lambda: len(fake.rollouts) >= 3)
        stop.set()
        thread.join(10)
        assert not thread.is_alive() and not errors
    finally:
        server.stop(grace=None)
    policy = Policy(fake.weights)
    state = np.zeros((2, 6), np.float32)
    for m in fake.rollouts[:3]:
        sent = np.frombuffer(m.initial_state, "<f4").reshape(2, 6)
        np.testing.assert_allclose(sent, state, rtol=0, atol=1e-6)
        t = m.num_steps
        ended = (np.frombuffer(m.terminated, np.uint8) | np.frombuffer(m.truncated, np.uint8)).reshape(t, 2) > 0
        starts = np.zeros_like(ended)
        starts[1:] = ended[:-1]
        obs = np.frombuffer(m.obs, "<f4").reshape(t * 2, 4)
        out = policy.sequence(obs, starts.reshape(-1), sent)
        np.testing.assert_allclose(out.values, np.frombuffer(m.values, "<f4"), rtol=0, atol=1e-6)
        state = np.where(ended[-1][:, None], np.float32(0), out.final_state)


class Spy(Policy):
    """Records the state every :meth:`act` call gets and returns."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def act(
        self,
        obs: Any,
        rng: np.random.Generator,
        deterministic: bool = False,
        state: Any = None,
    ) -> Any:
        out = super().act(obs, rng, deterministic, state)
        self.calls.append((np.array(state), np.array(out.state)))
        return out


def test_eval_carries_the_state_and_resets_it_each_episode() -> None:
    model = recurrent_spec("lstm", 3, (2,), {"kind": "gaussian", "dim": 1})
    policy = Spy(with_spec(numpy_tensors(model), model))
    report = evaluate(policy, make_counter, "counter", episodes=2, deterministic=True, seed=0)
    assert report.lengths == [5, 5]
    assert len(policy.calls) == 10
    for i, (given, returned) in enumerate(policy.calls):
        assert given.shape == returned.shape == (1, 6)
        if i % 5 == 0:
            assert not given.any(), f"step {i} does not start from the zero state"
        else:
            np.testing.assert_array_equal(given, policy.calls[i - 1][1])
            assert given.any()


def test_recurrent_envs_need_matching_spaces() -> None:
    envs = make_vector_env(lambda: gym.make("CartPole-v1"), 1)
    sampler = Sampler(envs, rollout_steps=1, seed=0)
    with pytest.raises(EnvError, match="gaussian"):
        sampler.check_policy(recurrent_policy())
    sampler.close()
