"""Stable-Baselines3 PPO on CartPole-v1 with the RL Baselines3 Zoo's tuned
hyperparameters.

    bench/.venvs/sb3/bin/python bench/peers/sb3_ppo.py --seed 1 [--max-steps N] [--threads N]

The hyperparameters are read at run time from the installed rl_zoo3
package's hyperparams/ppo.yml (entry "CartPole-v1": n_envs 8, n_steps 32,
batch 256, 20 epochs, gamma 0.98, lambda 0.8, linearly decaying learning
rate and clip range, 1e5 timesteps). Schedules such as "lin_0.001" are turned
into schedule objects by rl_zoo3's own ExperimentManager._preprocess_schedules.
The envs are built the way the zoo builds them (make_vec_env, DummyVecEnv,
Monitor), with the episode logger directly on each gym.make env.

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
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

ENV_ID = "CartPole-v1"
# Zoo-only keys this runner implements; anything else that the zoo would
# treat specially (normalize, env_wrapper, frame_stack, ...) is refused so
# that a changed zoo entry cannot silently run with a different setup.
ZOO_KEYS = ("n_envs", "n_timesteps", "policy")
UNSUPPORTED = (
    "normalize",
    "env_wrapper",
    "frame_stack",
    "callback",
    "vec_env_wrapper",
    "normalize_kwargs",
)


def zoo_hyperparams() -> tuple[str, dict[str, Any]]:
    path = os.path.join(os.path.dirname(rl_zoo3.__file__), "hyperparams", "ppo.yml")
    with open(path) as f:
        hp = dict(yaml.safe_load(f)[ENV_ID])
    bad = [k for k in UNSUPPORTED if k in hp]
    if bad:
        raise NotImplementedError(
            f"zoo entry for {ENV_ID} uses {bad}, not handled here"
        )
    if isinstance(hp.get("policy_kwargs"), str):
        hp["policy_kwargs"] = eval(hp["policy_kwargs"])  # the zoo's own convention
    return path, hp


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0], default_max_steps=None).parse_args()
    _common.torch_threads(args.threads)

    path, hp = zoo_hyperparams()
    n_envs = int(hp.pop("n_envs", 1))
    n_timesteps = int(hp.pop("n_timesteps"))
    policy = hp.pop("policy")
    total = args.max_steps or n_timesteps
    hp = ExperimentManager._preprocess_schedules(hp)
    print(
        f"sb3: {path}: {ENV_ID} n_envs={n_envs} total_timesteps={total} {hp}",
        flush=True,
    )

    env = make_vec_env(
        lambda: episode_log.wrap(gym.make(ENV_ID)),
        n_envs=n_envs,
        seed=args.seed,
        vec_env_cls=DummyVecEnv,
    )
    model = PPO(policy, env, seed=args.seed, device="cpu", verbose=0, **hp)
    model.learn(total_timesteps=total)


if __name__ == "__main__":
    main()
