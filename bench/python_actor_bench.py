"""The Python side of bench/run.py's ``python`` workload; runs under the interpreter that has ``proxima_actor``
installed (the project's ``.venv``).

    .venv/bin/python bench/python_actor_bench.py raw --env HalfCheetah-v5 --num-envs 8 --seconds 10
    .venv/bin/python bench/python_actor_bench.py profile --out prof.json -- --learner http://127.0.0.1:50051 ...

``raw``: the env alone, as the actor builds it: ``make_vector_env`` (gymnasium's ``SyncVectorEnv`` in
``SAME_STEP`` autoreset mode) over ``gym.make(env)`` (with ``--atari``, the actor's Atari preprocessing),
stepped with random actions drawn before the clock starts
(a pool of 256 batches, cycled), for ``--seconds``. Prints one JSON line with ``steps_per_s``.

``profile``: runs ``proxima-actor`` (the given arguments) under cProfile until SIGTERM, then writes where the
actor's main thread spent its time (cumulative seconds of the functions below, and their share of the
profiled time) to ``--out`` as JSON and prints it: the vector env's ``step`` (the envs' own ``step`` inside it
and the vector wrapper's bookkeeping), the batched policy forward and sampling (``Policy.act``), the rest of
``Sampler.collect`` (rollout arrays, episode accounting), encoding the rollout (``wire.rollout``), waiting for the
previous submission to be answered (the gRPC call runs on a thread of its own, which cProfile does not see) and
waiting for a newer policy.
cProfile slows Python-heavy code more than native code, so shares are indicative; throughput comes from
unprofiled runs.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gymnasium as gym
import numpy as np
from proxima_actor import cli
from proxima_actor.sampler import make_vector_env

#: (label, file suffix, function name) of the functions whose cumulative time the profile reports.
PROFILED = (
    ("collect", "proxima_actor/sampler.py", "collect"),
    ("vector_env_step", "gymnasium/vector/sync_vector_env.py", "step"),
    ("inference", "proxima_actor/policy.py", "act"),
    ("encode", "proxima_actor/wire.py", "rollout"),
    ("wait_for_submit", "concurrent/futures/_base.py", "result"),
    ("wait_for_policy", "proxima_actor/client.py", "wait_newer"),
    ("stream_rollouts", "proxima_actor/client.py", "_stream_rollouts"),
)


def raw(env_id: str, num_envs: int, seconds: float, atari: bool) -> dict[str, Any]:
    envs = make_vector_env(cli.env_factory(env_id, None, None, atari), num_envs)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    pool = [envs.action_space.sample() for _ in range(256)]
    step = envs.step
    steps, i = 0, 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(64):
            step(pool[i % 256])
            i += 1
        steps += 64 * num_envs
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - started
    envs.close()
    return {
        "env": env_id,
        "num_envs": num_envs,
        "steps": steps,
        "seconds": round(elapsed, 3),
        "steps_per_s": round(steps / elapsed, 1),
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def _cumulative(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each PROFILED function, and of the envs' own step (the outermost wrapper's)."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for label, suffix, func in PROFILED:
        out[label] = sum(
            v[3]
            for (f, _, name), v in table.items()
            if f.endswith(suffix) and name == func
        )
    # The envs' own step: gym.make's wrappers (TimeLimit outermost, OrderEnforcing, PassiveEnvChecker) each have a
    # `step` in wrappers/common.py, nested; the outermost has the largest cumulative time and holds the others.
    wrappers = [
        v[3]
        for (f, _, name), v in table.items()
        if name == "step" and f.endswith("gymnasium/wrappers/common.py")
    ]
    out["env_step"] = max(wrappers, default=0.0)
    return out


def profile(out_path: str, actor_args: list[str]) -> dict[str, Any]:
    prof = cProfile.Profile()
    started = time.perf_counter()
    prof.enable()
    try:
        rc = cli.main(actor_args)
    finally:
        prof.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(prof)
    cum = _cumulative(stats)
    total = cum["stream_rollouts"] or wall
    shares = {
        "env_step": cum["env_step"],
        "vector_env_bookkeeping": max(cum["vector_env_step"] - cum["env_step"], 0.0),
        "inference": cum["inference"],
        "collect_other": max(
            cum["collect"] - cum["vector_env_step"] - cum["inference"], 0.0
        ),
        "encode": cum["encode"],
        "wait_for_submit": cum["wait_for_submit"],
        "wait_for_policy": cum["wait_for_policy"],
    }
    shares["other"] = max(total - sum(shares.values()), 0.0)
    report = {
        "rc": rc,
        "wall_s": round(wall, 3),
        "profiled_s": round(total, 3),
        "seconds": {k: round(v, 3) for k, v in shares.items()},
        "share": {
            k: round(v / total, 4) if total > 0 else None for k, v in shares.items()
        },
    }
    with open(out_path, "w") as f:
        json.dump(report, f)
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("raw")
    r.add_argument("--env", default="CartPole-v1")
    r.add_argument("--num-envs", type=int, default=8)
    r.add_argument("--seconds", type=float, default=10.0)
    r.add_argument(
        "--atari",
        action="store_true",
        help="an ALE id with the actor's Atari preprocessing (as proxima-actor --atari)",
    )
    q = sub.add_parser("profile")
    q.add_argument("--out", required=True)
    q.add_argument("actor_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    if a.command == "raw":
        print(json.dumps(raw(a.env, a.num_envs, a.seconds, a.atari)))
        return 0
    args = a.actor_args[1:] if a.actor_args[:1] == ["--"] else a.actor_args
    print(json.dumps(profile(a.out, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
