"""CleanRL PPO on CartPole-v1: runs the ppo.py that the PyPI ``cleanrl``
package ships, unmodified, with its own defaults.

    bench/.venvs/cleanrl/bin/python bench/peers/cleanrl_ppo.py --seed 1 [--max-steps N] [-- extra ppo.py args]

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

What this wrapper does, without touching the module's code:
  * wraps every env that ppo.py creates with the episode logger, by
    replacing ``gym.make`` before the module runs (ppo.py calls
    ``gym.make(gym_id)`` and then adds its own RecordEpisodeStatistics);
  * runs the module with runpy in a temporary working directory, so its
    tensorboard ``runs/`` folder goes there and is deleted afterwards; wandb is
    off by default (--prod-mode False);
  * passes ``--gym-id CartPole-v1 --seed S --total-timesteps M --cuda False``.

--max-steps (-> --total-timesteps) defaults to 500000, the budget used by
later CleanRL releases (this package's own default is 100000). Because the
learning rate anneals to zero over it, it is part of the algorithm's
setting, not only a stopping point.
"""

import os
import runpy
import shutil
import signal
import sys
import tempfile

import _common

_common.single_threaded()


def main():
    p = _common.parser(__doc__.splitlines()[0], default_max_steps=500_000)
    args, extra = p.parse_known_args()
    if extra[:1] == ["--"]:
        extra = extra[1:]
    _common.torch_single_threaded()

    import gym
    import episode_log

    real_make = gym.make

    def logged_make(*a, **kw):
        return episode_log.wrap(real_make(*a, **kw))

    gym.make = logged_make

    # Make SIGTERM (from bench/solve.py) unwind normally so the temp dir goes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="cleanrl-ppo-")
    try:
        os.chdir(work)
        sys.argv = ["ppo.py", "--gym-id", "CartPole-v1", "--seed", str(args.seed),
                    "--total-timesteps", str(args.max_steps), "--cuda", "False", *extra]
        runpy.run_module("cleanrl.ppo", run_name="__main__", alter_sys=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
