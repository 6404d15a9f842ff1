"""The numpy policy against the Rust policy: the same weights and observations give the same numbers.

A fixture with ``steps`` (the recurrent cases) holds ``steps * envs`` time-major rows (row ``t * envs + j``: env
``j``'s step ``t``) computed along the sequence: each env's state starts at ``initial_state`` (``[envs * state_dim]``),
is zeroed before the rows where ``starts`` is true and carried otherwise, and ends at ``final_state``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from proxima_actor import Policy
from proxima_actor.model import ModelSpec

TOL = 1e-5
DIR = Path(os.environ["PROXIMA_CROSSLANG_DIR"])
CASES = sorted(p.stem for p in DIR.glob("*.json"))


def test_every_case_was_written() -> None:
    assert set(CASES) == {
        "discrete",
        "discrete_norm",
        "box",
        "box_norm",
        "box_relu",
        "discrete_relu",
        "multi_discrete",
        "image",
        "conv_hwc",
        "conv_chw_box",
        "conv_shared",
        "mlp_shared",
        "conv_planes",
        "lstm_mlp",
        "gru_conv",
        "lstm_separate",
        "gru_conv_separate",
    }


@pytest.mark.parametrize("case", CASES)
def test_numbers_match_rust(case: str) -> None:
    fx = json.loads((DIR / f"{case}.json").read_text())
    policy = Policy.load(DIR / f"{case}.safetensors")
    # Raw observations [B, obs_dim]; a uint8 spec's (image) are whole numbers 0..=255, which the policy scales.
    obs = np.asarray(fx["obs"], dtype=np.float32)
    assert policy.discrete == fx["discrete"]
    assert policy.spec == ModelSpec.from_json(fx["model"])
    assert policy.hidden_sizes == fx["hidden_sizes"]
    assert (policy.obs_norm is not None) == fx["normalize"]
    actions = np.asarray(fx["actions"], dtype=np.float32)
    if "steps" in fx:
        pairs = sequence_pairs(policy, fx, obs, actions)
    else:
        assert not policy.recurrent, "a recurrent policy's fixture needs steps, envs, starts and states"
        mode = policy.act(obs, np.random.default_rng(0), deterministic=True)
        pairs = {
            "head": (policy.head(obs), fx["head"]),
            "value": (policy.value(obs), fx["values"]),
            "log_prob": (policy.log_prob(obs, actions), fx["log_probs"]),
            "entropy": (policy.entropy(obs), fx["entropy"]),
            "mode_action": (mode.actions, fx["mode_actions"]),
            "mode_log_prob": (mode.log_probs, fx["mode_log_probs"]),
        }
    worst = {
        k: float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))))
        for k, (ours, theirs) in pairs.items()
    }
    # The Rust test prints these lines (pytest runs with -s there).
    print(f"[crosslang] {case}: max |python - rust| " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    for k, (ours, theirs) in pairs.items():
        np.testing.assert_allclose(ours, np.asarray(theirs, dtype=np.float32), rtol=0, atol=TOL, err_msg=k)


def sequence_pairs(policy: Policy, fx: dict[str, Any], obs: np.ndarray, actions: np.ndarray) -> dict[str, Any]:
    """Ours and Rust's numbers for a fixture of ``steps`` x ``envs`` time-major rows, run as one sequence."""
    steps, envs, dim = int(fx["steps"]), int(fx["envs"]), policy.state_dim
    assert policy.recurrent and dim > 0
    assert len(obs) == steps * envs and len(fx["starts"]) == steps * envs
    assert len(fx["initial_state"]) == len(fx["final_state"]) == envs * dim
    starts = np.asarray(fx["starts"], dtype=bool)
    initial = np.asarray(fx["initial_state"], dtype=np.float32).reshape(envs, dim)
    seq = policy.sequence(obs, starts, initial, actions)
    mode_actions, mode_log_probs = policy.dist.mode(seq.head)
    return {
        "head": (seq.head, fx["head"]),
        "value": (seq.values, fx["values"]),
        "log_prob": (seq.log_probs, fx["log_probs"]),
        "entropy": (seq.entropy, fx["entropy"]),
        "mode_action": (mode_actions, fx["mode_actions"]),
        "mode_log_prob": (mode_log_probs, fx["mode_log_probs"]),
        # [envs * state_dim], each env's [h, c] (LSTM) or h (GRU) in turn; with a core on each separate trunk each
        # env's [h_actor, c_actor, h_critic, c_critic] or [h_actor, h_critic].
        "final_state": (seq.final_state.reshape(-1), fx["final_state"]),
    }
