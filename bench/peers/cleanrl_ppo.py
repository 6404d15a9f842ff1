"""CleanRL PPO on CartPole-v1: runs the ppo.py that the PyPI ``cleanrl``
package ships, unmodified, with its own defaults except --total-timesteps.

    bench/.venvs/cleanrl/bin/python bench/peers/cleanrl_ppo.py --seed 1 [--max-steps N] [--threads N] [-- extra ppo.py args]

About the package: the newest cleanrl on PyPI is 0.4.8, and its
cleanrl/ppo.py is the early (2020) single-file PPO, written for OpenAI gym
0.21 (``env.seed``, ``gym.wrappers.Monitor``, 4-tuple ``step``) with
stable-baselines3 1.x's DummyVecEnv and the option ``--gym-id`` (later
releases on GitHub call it ``--env-id``). It therefore runs in its own venv
(bench/.venvs/cleanrl: gym 0.21.0, SB3 1.8.0), not in the SB3 2.x one.

Defaults of that ppo.py (not changed here): 4 envs x 128 steps, 4
minibatches, 4 epochs, lr 3e-4 annealed linearly to 0 over
--total-timesteps, gamma 0.99, GAE lambda 0.95, clip 0.2, entropy 0.01,
value clipping, advantage normalisation.

The one default that is changed: --total-timesteps is 500000 (--max-steps,
the budget of later CleanRL releases) instead of this package's 100000.
Because ppo.py anneals the learning rate linearly to 0 over
--total-timesteps, this changes its learning-rate schedule (after 100k steps
the rate is still 80% of 3e-4 instead of 0), so it is part of the
algorithm's setting, not only a stopping point.

What this wrapper does, without touching the module's code:
  * wraps every env that ppo.py creates with the episode logger, by
    replacing ``gym.make`` before the module runs (ppo.py calls
    ``gym.make(gym_id)`` and then adds its own RecordEpisodeStatistics);
  * runs the module with runpy in a temporary working directory, so its
    tensorboard ``runs/`` folder goes there and is deleted afterwards; wandb is
    off by default (--prod-mode False);
  * passes ``--gym-id CartPole-v1 --seed S --total-timesteps M --cuda False``;
  * sets torch and the BLAS/OpenMP pools to --threads N threads (default 1;
    bench/peers/_common.py).
"""

import os
import runpy
import shutil
import signal
import sys
import tempfile
from typing import Any

import _common

_common.limit_threads()


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0], default_max_steps=500_000)
    args, extra = p.parse_known_args()
    if extra[:1] == ["--"]:
        extra = extra[1:]
    _common.torch_threads(args.threads)

    import episode_log
    import gym

    real_make = gym.make

    def logged_make(*a: Any, **kw: Any) -> Any:
        return episode_log.wrap(real_make(*a, **kw))

    gym.make = logged_make

    # Make SIGTERM (from bench/solve.py) unwind normally so the temp dir goes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="cleanrl-ppo-")
    try:
        os.chdir(work)
        sys.argv = [
            "ppo.py",
            "--gym-id",
            "CartPole-v1",
            "--seed",
            str(args.seed),
            "--total-timesteps",
            str(args.max_steps),
            "--cuda",
            "False",
            *extra,
        ]
        runpy.run_module("cleanrl.ppo", run_name="__main__", alter_sys=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
