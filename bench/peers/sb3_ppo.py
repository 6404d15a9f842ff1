"""Stable-Baselines3 PPO with the RL Baselines3 Zoo's tuned hyperparameters, on
CartPole-v1 or a MuJoCo env, or with the settings of a proxima config.

    bench/.venvs/sb3/bin/python bench/peers/sb3_ppo.py --seed 1 [--env ID] [--max-steps N] [--threads N]
    bench/.venvs/sb3/bin/python bench/peers/sb3_ppo.py --seed 1 --config configs/hopper.toml

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

--config FILE: instead of a Zoo entry, the PPO settings of a proxima config,
resolved by `target/release/learner config` (defaults filled in) and mapped
one to one onto SB3's arguments (see `proxima_hyperparams`): one env with
n_steps = the learner's batch, value loss coefficient halved (proxima's value
loss is half the mean squared error, SB3's the whole), VecNormalize for the
normalisation. Settings SB3 has no equal of (CleanRL-style value clipping,
the KL-penalty objective, target_kl's early stop) are refused.

--threads N (default 1): torch and BLAS/OpenMP threads (bench/peers/_common.py).
"""

import os
import subprocess
import tomllib
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


LEARNER = os.path.join(
    os.path.dirname(os.path.dirname(_common.PEERS_DIR)), "target", "release", "learner"
)


def proxima_hyperparams(
    config: str,
) -> tuple[str, int, dict[str, Any] | None, dict[str, Any]]:
    """The env id, total steps, VecNormalize arguments (None: no normalisation) and SB3 PPO arguments of a
    proxima config."""
    text = subprocess.run(
        [LEARNER, "config", "--config", config],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cfg = tomllib.loads(text)
    ppo, model, norm, actors = cfg["ppo"], cfg["model"], cfg["normalize"], cfg["actors"]
    refused = {
        "ppo.objective": ppo["objective"] != "clip",
        "ppo.clip_vloss": ppo["clip_vloss"],
        "ppo.target_kl": "target_kl" in ppo,
        "normalize.observations != normalize.rewards": norm["observations"]
        != norm["rewards"],
    }
    bad = [k for k, v in refused.items() if v]
    if bad:
        raise NotImplementedError(f"{config}: {bad} have no SB3 equivalent here")
    batch = (
        ppo["batch_size"]
        or actors["count"] * actors["num_envs"] * actors["rollout_steps"]
    )

    def schedule(value: float, anneal: bool) -> Any:
        return (
            (lambda progress_remaining: value * progress_remaining) if anneal else value
        )

    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[model["activation"]]
    hidden = list(model["hidden_sizes"])
    hp = {
        "n_steps": batch,
        "batch_size": ppo["minibatch_size"],
        "n_epochs": ppo["num_epochs"],
        "gamma": ppo["gamma"],
        "gae_lambda": ppo["gae_lambda"],
        "learning_rate": schedule(ppo["learning_rate"], ppo["anneal_lr"]),
        "clip_range": schedule(ppo["clip_coef"], ppo["anneal_clip"]),
        "ent_coef": ppo["ent_coef"],
        "vf_coef": ppo["vf_coef"] / 2,
        "max_grad_norm": ppo["max_grad_norm"],
        "normalize_advantage": ppo["norm_adv"],
        "policy_kwargs": {
            "net_arch": {"pi": hidden, "vf": hidden},
            "activation_fn": activation,
            "log_std_init": model["init_log_std"],
            "ortho_init": model["ortho_init"],
        },
    }
    vec_normalize = (
        {"gamma": ppo["gamma"], "clip_obs": norm["obs_clip"]}
        if norm["observations"]
        else None
    )
    return cfg["env"]["id"], int(cfg["total_steps"]), vec_normalize, hp


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0], default_max_steps=None)
    p.add_argument("--env", default="CartPole-v1", help="env id (default: %(default)s)")
    p.add_argument("--config", help="a proxima config's settings instead of the Zoo's")
    args = p.parse_args()
    _common.torch_threads(args.threads)

    if args.config:
        args.env, n_timesteps, vec_normalize, hp = proxima_hyperparams(args.config)
        source, n_envs, policy = args.config, 1, "MlpPolicy"
    else:
        path, name, hp = zoo_hyperparams(args.env)
        source = f"{path} [{name}]"
        n_envs = int(hp.pop("n_envs", 1))
        n_timesteps = int(hp.pop("n_timesteps"))
        policy = hp.pop("policy")
        normalize = bool(hp.pop("normalize", False))
        vec_normalize = {"gamma": hp["gamma"]} if normalize else None
        hp = ExperimentManager._preprocess_schedules(hp)
    total = args.max_steps or n_timesteps
    print(
        f"sb3: {source}: {args.env} n_envs={n_envs} VecNormalize={vec_normalize} "
        f"total_timesteps={total} {hp}",
        flush=True,
    )

    env = make_vec_env(
        lambda: episode_log.wrap(gym.make(args.env)),
        n_envs=n_envs,
        seed=args.seed,
        vec_env_cls=DummyVecEnv,
    )
    if vec_normalize is not None:
        env = VecNormalize(env, **vec_normalize)
    model = PPO(policy, env, seed=args.seed, device="cpu", verbose=0, **hp)
    model.learn(total_timesteps=total)


if __name__ == "__main__":
    main()
