"""``proxima-actor eval`` and ``render`` on a saved policy."""

from __future__ import annotations

import json
from pathlib import Path

import dials
import pytest
from PIL import Image
from safetensors.numpy import save
from test_policy import quadrant_snapshot, spec, state_dict, with_spec

from proxima_actor import Policy
from proxima_actor.cli import main
from proxima_actor.evaluate import evaluate
from proxima_actor.sampler import EnvError

#: Display time of one frame at 30 fps: 33 ms, stored by GIF in hundredths of a second.
FRAME_MS = 30


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(save(state_dict(4, 2, (8,), box=False)))
    return path


def test_eval_reports_every_episode(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["eval", "--checkpoint", str(checkpoint), "--env", "CartPole-v1", "--episodes", "3", "--seed", "4"]
    assert main(args) == 0
    human, line = capsys.readouterr().out.strip().splitlines()
    report = json.loads(line)
    assert human.startswith("CartPole-v1 over 3 episodes (sampled)")
    assert report["episodes"] == 3 and len(report["returns"]) == 3
    assert report["mean_return"] == pytest.approx(sum(report["returns"]) / 3)
    assert all(r == n for r, n in zip(report["returns"], report["lengths"], strict=True))  # CartPole: 1 per step
    assert main([*args, "--deterministic"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*args, "--deterministic"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == first, "deterministic eval repeats"


def test_render_writes_an_animated_gif(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "episode.gif"
    args = ["render", "--checkpoint", str(checkpoint), "--env", "CartPole-v1", "--out", str(out)]
    assert main([*args, "--max-frames", "5"]) == 0
    assert duration_ms(out) == 5 * FRAME_MS
    assert main(args) == 0
    steps = int(capsys.readouterr().out.split(" over ")[-1].split()[0])
    assert duration_ms(out) == (steps + 1) * FRAME_MS, "the first observation and one frame per step, at 30 fps"


def duration_ms(gif_path: Path) -> int:
    """Total display time of a GIF (Pillow merges identical consecutive frames, adding up their durations)."""
    with Image.open(gif_path) as gif:
        assert gif.size == (600, 400) and gif.n_frames >= 2
        total = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            total += int(gif.info["duration"])
        return total


def test_a_policy_for_another_env_is_an_error(checkpoint: Path) -> None:
    assert main(["eval", "--checkpoint", str(checkpoint), "--env", "Pendulum-v1"]) == 1


def test_an_unknown_env_is_one_line_not_a_traceback(checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["eval", "--checkpoint", str(checkpoint), "--env", "NoSuchEnv-v0"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "NoSuchEnv" in errors[0], errors


def test_eval_plays_multi_discrete_envs_with_a_spec_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = {"kind": "multi_categorical", "nvec": list(dials.NVEC)}
    path = tmp_path / "model.safetensors"
    path.write_bytes(with_spec(state_dict(2, sum(dials.NVEC), (8,), box=False), spec(2, head)))
    args = ["eval", "--checkpoint", str(path), "--env", "Dials-v0", "--make", "dials:make", "--episodes", "2"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["lengths"] == [10, 10] and all(0 <= r <= 20 for r in report["returns"])
    other = Policy(with_spec(state_dict(2, 5, (8,), box=False), spec(2, {"kind": "multi_categorical", "nvec": [2, 3]})))
    with pytest.raises(EnvError, match="multi_categorical"):
        evaluate(other, dials.make, "Dials-v0", 1, True, 0)


def test_eval_plays_image_envs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(quadrant_snapshot())
    args = ["eval", "--checkpoint", str(path), "--env", "Quadrant-v0", "--make", "quadrant:make", "--episodes", "2"]
    for mode in ([], ["--deterministic"]):
        assert main([*args, *mode]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (report["lengths"], report["returns"]) == ([16, 16], [16.0, 16.0]), "the policy sees every image"
