#!/usr/bin/env python3
"""Memory against frame stacking, side by side: the same task learned from one frame by a recurrent policy and
from the last ``--stack`` frames by a memoryless one, at the same env-step budget, same PPO settings and seeds.

    .venv/bin/python bench/memory_vs_stack.py --task cartpole --seeds 1 2 3
    .venv/bin/python bench/memory_vs_stack.py --task MinAtar/Breakout-v1 --config configs/minatar.toml \\
        --total-steps 1000000 --seeds 0 1 2 --arms memory stack frame

Each arm (``--arms``: ``memory``, ``stack``, and ``frame``, one frame without a core, the baseline both improve on)
runs ``learner serve`` with one ``proxima-actor`` (``bench/python_fleet.py``) on the env this module's :func:`make`
builds, so that all see identical frames: ``cartpole`` is gymnasium's CartPole-v1 observed through
``[x, theta]`` (what ``proxima/CartPoleNoVelocity-v1`` is in Rust), ``MinAtar/*`` the ``minatar`` package's game.
Frames are stacked with gymnasium's ``FrameStackObservation`` (the first frame repeated at a reset), vectors
concatenated oldest first, images along their channel axis (``[H, W, k*C]``). The learner takes the spaces from the
actor. Prints one row per arm and seed (env steps to the config's target return, if reached; the best and last
100-episode mean; wall seconds) and writes them as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
#: CartPole's observation components that are kept: x and theta.
KEPT = [0, 2]


def make(task: str, stack: int = 1, **kwargs: Any) -> gym.Env[Any, Any]:
    """``task`` (``cartpole`` or a ``MinAtar/*`` id) seen through its last ``stack`` frames."""
    if task == "cartpole":
        env: gym.Env[Any, Any] = gym.make("CartPole-v1", **kwargs)
        box = env.observation_space
        assert isinstance(box, gym.spaces.Box)
        masked = gym.spaces.Box(box.low[KEPT], box.high[KEPT], dtype=np.float32)
        env = gym.wrappers.TransformObservation(env, lambda o: o[KEPT], masked)
    elif task.startswith("MinAtar/"):
        from proxima_actor.cli import make_minatar

        env = make_minatar(task, **kwargs)
    else:
        raise ValueError(f"unknown task {task!r}: cartpole or MinAtar/*")
    if stack <= 1:
        return env
    frame = env.observation_space
    assert isinstance(frame, gym.spaces.Box)
    env = gym.wrappers.FrameStackObservation(env, stack)
    if len(frame.shape) == 1:  # [k, d] -> [k*d], oldest frame first
        flat = gym.spaces.Box(
            np.tile(frame.low, stack), np.tile(frame.high, stack), dtype=frame.dtype
        )
        return gym.wrappers.TransformObservation(
            env, lambda o: np.asarray(o).reshape(-1), flat
        )
    # [k, H, W, C] -> [H, W, k*C]
    low, high = (np.concatenate([b] * stack, axis=-1) for b in (frame.low, frame.high))
    image = gym.spaces.Box(low, high, dtype=frame.dtype)
    return gym.wrappers.TransformObservation(
        env, lambda o: np.concatenate(list(o), axis=-1), image
    )


#: Each arm's frames (``None``: ``--stack``) and core (``None``: ``--core``).
ARMS: dict[str, tuple[int | None, str | None]] = {
    "memory": (1, None),
    "stack": (None, "none"),
    "frame": (1, "none"),
}


def run_arm(a: argparse.Namespace, arm: str, seed: int, runs: str) -> dict[str, Any]:
    """One run: ``arm`` is ``memory`` (1 frame, ``a.core``), ``stack`` (``a.stack`` frames, no core) or ``frame``
    (1 frame, no core: what neither memory nor a stack adds to)."""
    frames, kind = ARMS[arm]
    stack, core = frames or a.stack, kind or a.core
    env_id = f"MemoryBench/{a.task.replace('/', '-')}-stack{stack}"
    with open(a.config, encoding="utf-8") as f:
        text = f.read()
    table = f'env = {{ id = "{env_id}", spaces_from_first_actor = true }}'
    text, n = re.subn(r'^env = "[^"]*"$', table, text, count=1, flags=re.MULTILINE)
    if n != 1:
        raise SystemExit(f'{a.config}: no top-level `env = "..."` line to replace')
    config = os.path.join(runs, f"{arm}-{seed}.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(text)
    name = f"{arm}-seed{seed}"
    learner = [
        "--config",
        config,
        "--seed",
        str(seed),
        "--run-name",
        name,
        "--set",
        f'model.core="{core}"',
    ]
    if a.shared_trunk is not None:
        learner += ["--set", f"model.shared_trunk={a.shared_trunk}"]
    if a.total_steps:
        learner += ["--total-steps", str(a.total_steps)]
    kwargs = json.dumps({"task": a.task, "stack": stack})
    cmd = [
        sys.executable,
        os.path.join(HERE, "python_fleet.py"),
        "--python",
        a.python,
        "--actors",
        "1",
    ]
    cmd += [
        "--env",
        env_id,
        "--runs-dir",
        runs,
        "--actor-arg=--make",
        "--actor-arg=memory_vs_stack:make",
    ]
    cmd += ["--actor-arg=--env-kwargs", f"--actor-arg={kwargs}", "--", *learner]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])),
    )
    start = time.monotonic()
    log = os.path.join(runs, f"{name}.log")
    with open(log, "wb") as out:
        rc = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        ).returncode
    wall = time.monotonic() - start
    progress = os.path.join(runs, name, "progress.csv")
    rows = []
    if os.path.exists(
        progress
    ):  # absent when the run failed before its first update (see the log)
        with open(progress, encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["mean_return"]]
    target = re.search(r"^target_return = ([-0-9.e_]+)$", text, flags=re.MULTILINE)
    goal = float(target.group(1).replace("_", "")) if target else None
    reached = next(
        (
            int(r["env_steps"])
            for r in rows
            if goal is not None and float(r["mean_return"]) >= goal
        ),
        None,
    )
    returns = [float(r["mean_return"]) for r in rows]
    return {
        "arm": arm,
        "frames": stack,
        "core": core,
        "seed": seed,
        "rc": rc,
        "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
        "target": goal,
        "steps_to_target": reached,
        "best_return": max(returns, default=None),
        "last_return": returns[-1] if returns else None,
        "wall_seconds": round(wall, 1),
        "log": log,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--task", default="cartpole", help="cartpole or a MinAtar/* id")
    p.add_argument(
        "--config", default=os.path.join(REPO, "configs", "cartpole_lstm.toml")
    )
    p.add_argument(
        "--core", default="lstm", choices=["lstm", "gru"], help="the memory arm's core"
    )
    p.add_argument(
        "--stack", type=int, default=4, help="frames the memoryless arm sees"
    )
    p.add_argument(
        "--shared-trunk",
        choices=["true", "false"],
        help="one trunk (and core) for actor and critic (default: the config's)",
    )
    p.add_argument(
        "--total-steps", type=int, help="env-step budget (default: the config's)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument(
        "--arms", nargs="+", choices=sorted(ARMS), default=["memory", "stack"]
    )
    p.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"))
    p.add_argument("--out", default="memory_vs_stack.json")
    a = p.parse_args()
    runs = tempfile.mkdtemp(prefix="bench-memory-vs-stack-")
    results = []
    for seed in a.seeds:
        for arm in a.arms:
            r = run_arm(a, arm, seed, runs)
            results.append(r)
            print(
                f"{r['arm']:6} frames {r['frames']} core {r['core']:4} seed {seed}: {r['env_steps']} steps, "
                f"target at {r['steps_to_target']}, best {r['best_return']}, last {r['last_return']}, "
                f"{r['wall_seconds']} s (rc {r['rc']})",
                flush=True,
            )
            with open(
                a.out, "w", encoding="utf-8"
            ) as f:  # after every run: a later failure keeps the rest
                json.dump(
                    {"task": a.task, "config": a.config, "results": results},
                    f,
                    indent=1,
                )
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
