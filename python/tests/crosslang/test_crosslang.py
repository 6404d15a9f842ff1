"""The numpy policy against the Rust policy: the same weights and observations give the same numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from proxima_actor import Policy

TOL = 1e-5
DIR = Path(os.environ["PROXIMA_CROSSLANG_DIR"])
CASES = sorted(p.stem for p in DIR.glob("*.json"))


def test_every_case_was_written() -> None:
    assert set(CASES) == {"discrete", "discrete_norm", "box", "box_norm"}


@pytest.mark.parametrize("case", CASES)
def test_numbers_match_rust(case: str) -> None:
    fx = json.loads((DIR / f"{case}.json").read_text())
    policy = Policy.load(DIR / f"{case}.safetensors")
    obs = np.asarray(fx["obs"], dtype=np.float32)
    assert policy.discrete == fx["discrete"]
    assert policy.hidden_sizes == fx["hidden_sizes"]
    assert (policy.obs_norm is not None) == fx["normalize"]
    np.testing.assert_allclose(policy.head(obs), np.asarray(fx["head"], dtype=np.float32), rtol=0, atol=TOL)
    np.testing.assert_allclose(policy.value(obs), np.asarray(fx["values"], dtype=np.float32), rtol=0, atol=TOL)
    actions = np.asarray(fx["actions"], dtype=np.float32)
    np.testing.assert_allclose(policy.log_prob(obs, actions), fx["log_probs"], rtol=0, atol=TOL)
    np.testing.assert_allclose(policy.entropy(obs), fx["entropy"], rtol=0, atol=TOL)
    mode = policy.act(obs, np.random.default_rng(0), deterministic=True)
    np.testing.assert_allclose(mode.actions, np.asarray(fx["mode_actions"], dtype=np.float32), rtol=0, atol=TOL)
    np.testing.assert_allclose(mode.log_probs, fx["mode_log_probs"], rtol=0, atol=TOL)
