"""Stable-Baselines3 PPO with the RL Baselines3 Zoo's tuned hyperparameters, on
CartPole-v1 or a MuJoCo env.

    bench/.venvs/sb3/bin/python bench/peers/sb3_ppo.py --seed 1 [--env ID] [--max-steps N] [--threads N]

The hyperparameters are read at run time from the installed rl_zoo3
package's hyperparams/ppo.yml: the entry of --env, or of its -v4 version for a
-v5 MuJoCo env (the Zoo tunes -v4; -v5 is the same task on current MuJoCo).
CartPole-v1: n_envs 8, n_steps 32, batch 256, 20 epochs, gamma 0.98, lambda
0.8, linearly decaying learning rate and clip range, 1e5 timesteps. Schedules
such as "lin_0.001" are turned into schedule objects by rl_zoo3's own
ExperimentManager._preprocess_schedules, and policy_kwargs strings are
evaluated as the Zoo does (with torch.nn as `nn`). The envs are built the way
the zoo builds them (make_vec_env, DummyVecEnv, Monitor), with the episode
logger directly on each gym.make env (raw returns); `normalize: true` (the
MuJoCo entries) wraps them in VecNormalize with the entry's gamma, as the Zoo's
ExperimentManager does.

--max-steps defaults to the zoo's n_timesteps. It is passed to learn() as
total_timesteps, so it also sets the length of the linear schedules: a larger
value decays them more slowly, i.e. departs from the tuned setting.

--threads N (default 1): torch and BLAS/OpenMP threads (bench/peers/_common.py).
"""

import os
from typing import Any

import _common

_common.limit_threads()

import episode_log
import gymnasium as gym
import rl_zoo3
import torch
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

# Zoo-only keys this runner implements ("normalize": VecNormalize with the
# entry's gamma); anything else that the zoo would treat specially
# (env_wrapper, frame_stack, ...) is refused so that a changed zoo entry cannot
# silently run with a different setup.
ZOO_KEYS = ("n_envs", "n_timesteps", "policy", "normalize")
UNSUPPORTED = (
    "env_wrapper",
    "frame_stack",
    "callback",
    "vec_env_wrapper",
    "normalize_kwargs",
)


def zoo_hyperparams(env_id: str) -> tuple[str, str, dict[str, Any]]:
    """The zoo file, the entry's name (env_id, or its -v4 version) and its hyperparameters."""
    path = os.path.join(os.path.dirname(rl_zoo3.__file__), "hyperparams", "ppo.yml")
    with open(path) as f:
        entries = yaml.safe_load(f)
    name = env_id if env_id in entries else env_id.replace("-v5", "-v4")
    hp = dict(entries[name])
    bad = [k for k in UNSUPPORTED if k in hp]
    if bad:
        raise NotImplementedError(f"zoo entry for {name} uses {bad}, not handled here")
    if isinstance(hp.get("policy_kwargs"), str):
        # the zoo's own convention: a Python expression over torch.nn as `nn`
        hp["policy_kwargs"] = eval(hp["policy_kwargs"], {"nn": torch.nn, "dict": dict})
    return path, name, hp


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0], default_max_steps=None)
    p.add_argument("--env", default="CartPole-v1", help="env id (default: %(default)s)")
    args = p.parse_args()
    _common.torch_threads(args.threads)

    path, name, hp = zoo_hyperparams(args.env)
    n_envs = int(hp.pop("n_envs", 1))
    n_timesteps = int(hp.pop("n_timesteps"))
    policy = hp.pop("policy")
    normalize = bool(hp.pop("normalize", False))
    total = args.max_steps or n_timesteps
    hp = ExperimentManager._preprocess_schedules(hp)
    print(
        f"sb3: {path} [{name}]: {args.env} n_envs={n_envs} normalize={normalize} "
        f"total_timesteps={total} {hp}",
        flush=True,
    )

    env = make_vec_env(
        lambda: episode_log.wrap(gym.make(args.env)),
        n_envs=n_envs,
        seed=args.seed,
        vec_env_cls=DummyVecEnv,
    )
    if normalize:
        env = VecNormalize(env, gamma=hp["gamma"])
    model = PPO(policy, env, seed=args.seed, device="cpu", verbose=0, **hp)
    model.learn(total_timesteps=total)


if __name__ == "__main__":
    main()
