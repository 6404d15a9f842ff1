"""Raw gymnasium env throughput, single process, no learning: the Python side
of bench/run.py's ``env`` workload (proxima's side is
``target/release/proxima-bench env``).

    bench/.venvs/sb3/bin/python bench/gym_env_throughput.py --env CartPole-v1 --steps 200000

* ``env = gym.make(ENV)``: the registered env with its default wrappers
  (TimeLimit, OrderEnforcing, PassiveEnvChecker), as a user gets it; proxima's
  envs also enforce the time limit. ``MinAtar/<Game>-v1`` ids are registered
  first with ``minatar.gym.register_envs()`` (needs the ``minatar`` package).
* ``env.reset(seed=0)``; then N random actions are drawn with
  ``env.action_space.sample()`` (action space seeded with 0) BEFORE the
  clock starts, as proxima's side pre-generates its actions.
* Timed: a loop of N ``env.step(action)`` calls, with ``env.reset()`` whenever
  an episode is terminated or truncated (resets are inside the timing).

Prints one JSON line, the same fields as proxima-bench:
{"workload": "env", "env", "steps", "seconds", "steps_per_s"} plus "impl",
"episodes" and the gymnasium / numpy / python versions.
"""

import argparse
import json
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gymnasium as gym
import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--steps", type=int, default=200_000)
    args = p.parse_args()
    if args.steps <= 0:
        p.error("--steps must be positive")

    if args.env.startswith("MinAtar/"):
        from minatar.gym import register_envs

        register_envs()
    env = gym.make(args.env)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(args.steps)]

    step = env.step
    reset = env.reset
    episodes = 0
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
            episodes += 1
    seconds = time.perf_counter() - t0
    env.close()

    print(
        json.dumps(
            {
                "workload": "env",
                "impl": "gymnasium",
                "env": args.env,
                "steps": args.steps,
                "seconds": round(seconds, 6),
                "steps_per_s": round(args.steps / seconds, 1),
                "episodes": episodes,
                "gymnasium": gym.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
