"""RLlib PPO (new API stack: RLModule/Learner, EnvRunners) on CartPole-v1,
CPU only.

    bench/.venvs/rllib/bin/python bench/peers/rllib_ppo.py --seed 1 [--max-steps N] [--threads N] [--rllib-defaults]

Resources: a local Ray instance with ray.init(num_cpus=2) (no dashboard),
2 remote EnvRunner actors with one env each, the learner inside the driver
process (num_learners=0). torch and the BLAS/OpenMP pools get --threads N
threads (default 1) in every process: the driver sets them for itself, and
the EnvRunner processes inherit OMP_NUM_THREADS=N (bench/peers/_common.py),
which Ray leaves alone when it is already set.

Hyperparameters: the values of RLlib's own tuned CartPole-v1 PPO example
(rllib/examples/algorithms/ppo/cartpole_ppo.py in the Ray repository, which
is not part of the wheel): lr 3e-4, 6 epochs, vf_loss_coeff 0.01, one hidden
layer of 32 linear units with the value function sharing it. Everything else
is PPOConfig's default (train batch 4000, minibatch 128, gamma 0.99,
lambda 1.0, clip 0.3, KL loss). --rllib-defaults uses PPOConfig's defaults
for everything instead.

The env is registered as "CartPoleLogged": gymnasium's CartPole-v1 wrapped
with the episode logger. The EnvRunner actors are Ray worker processes
started by the local raylet; they inherit PROXIMA_BENCH_EPISODES and
PYTHONPATH (for episode_log) from this process. The driver calls
algo.train() until --max-steps env steps have been sampled or it is killed.
"""

import os
import time
from typing import Any

import _common

_common.limit_threads()
# No network here: do not try to report usage statistics.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ENV_NAME = "CartPoleLogged"


def env_creator(env_config: Any) -> Any:
    import episode_log
    import gymnasium as gym

    return episode_log.wrap(gym.make("CartPole-v1"))


def lifetime_steps(result: dict[str, Any]) -> int:
    """Env steps sampled so far, from a train() result."""
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )

    value = result.get(ENV_RUNNER_RESULTS, {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME)
    if value is None:
        value = result.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)
    return int(value)


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0], default_max_steps=10_000_000)
    p.add_argument(
        "--rllib-defaults",
        action="store_true",
        help="PPOConfig defaults instead of RLlib's tuned CartPole values",
    )
    args = p.parse_args()
    _common.torch_threads(args.threads)

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN
    from ray.tune.registry import register_env

    ray.init(
        num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=True
    )
    register_env(ENV_NAME, env_creator)

    config = (
        PPOConfig()
        .environment(ENV_NAME)
        .framework("torch")
        .env_runners(num_env_runners=2, num_envs_per_env_runner=1)
        .learners(num_learners=0)
        .debugging(seed=args.seed, log_level="WARN")
    )
    if not args.rllib_defaults:
        config = config.training(lr=0.0003, num_epochs=6, vf_loss_coeff=0.01).rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=[32], fcnet_activation="linear", vf_share_layers=True
            )
        )

    algo = config.build_algo()
    t0 = time.time()
    steps = 0
    iteration = 0
    while steps < args.max_steps:
        result = algo.train()
        iteration += 1
        steps = lifetime_steps(result)
        ret = result.get(ENV_RUNNER_RESULTS, {}).get(EPISODE_RETURN_MEAN)
        print(
            f"rllib: iter {iteration} steps {steps} return_mean {ret} "
            f"t {time.time() - t0:.1f}s",
            flush=True,
        )
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
