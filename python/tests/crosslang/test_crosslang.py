"""The numpy policy against the Rust policy: the same weights and observations give the same numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
