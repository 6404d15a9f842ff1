"""Sample Factory 2 APPO on CartPole-v1 (asynchronous actor-learner, the
closest peer to proxima), CPU only.

    bench/.venvs/sf/bin/python bench/peers/sf_appo.py --seed 1 [--max-steps N] [--threads N] [-- extra SF args]

Settings: the CartPole-v1 command line that Sample Factory ships in
sf_examples/train_gym_env.py (APPO, no RNN, 20 envs per worker, 2 policy
workers, recurrence 1, no V-trace, batch 512, reward scale 0.1), plus
--num_workers=2 (rollout worker processes, one per core of the benchmark
machine), --device=cpu, a fixed --seed and --train_for_env_steps. Anything
after "--" is appended and overrides these (Sample Factory takes the last
value given for an option).

The env is registered under the name CartPole-v1 with a factory that wraps
gymnasium's CartPole-v1 with the episode logger; Sample Factory builds the
envs inside its spawned rollout-worker processes, which inherit
PROXIMA_BENCH_EPISODES and append to the same file. Checkpoints and summaries
go to a temporary train_dir, removed when the run ends or gets SIGTERM,
together with the /dev/shm/torch_* files its processes leave behind.

Threads: --threads N (default 1) sets OMP_NUM_THREADS=N and the other
BLAS/OpenMP variables, which every spawned Sample Factory process inherits,
and torch's pools of this (the runner) process (bench/peers/_common.py). Sample
Factory's learner, inference and rollout workers call torch.set_num_threads(1)
themselves (sample_factory/algo/utils/torch_utils.py init_torch_runtime,
sample_factory/algo/sampling/rollout_worker.py), so N does not change their
torch threads, only the BLAS/OpenMP pools; Sample Factory's parallelism is its
processes (2 rollout workers, 2 inference workers, a learner).
"""

import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import _common

_common.limit_threads()

import episode_log
import gymnasium as gym

ENV_ID = "CartPole-v1"

# From sample_factory's own sf_examples/train_gym_env.py (CartPole-v1 example).
SF_EXAMPLE_ARGS = [
    "--algo=APPO",
    "--use_rnn=False",
    "--num_envs_per_worker=20",
    "--policy_workers_per_policy=2",
    "--recurrence=1",
    "--with_vtrace=False",
    "--batch_size=512",
    "--reward_scale=0.1",
    "--save_every_sec=10",
    "--experiment_summaries_interval=10",
]


def make_env(
    full_env_name: str,
    cfg: Any = None,
    env_config: Any = None,
    render_mode: str | None = None,
) -> Any:
    """Sample Factory env factory (module level so spawned workers find it)."""
    return episode_log.wrap(gym.make(full_env_name, render_mode=render_mode))


def remove_stale_torch_shm(since: float) -> None:
    """Delete torch shared-memory files that this run's processes leaked.

    Sample Factory uses torch's "file_system" sharing strategy: tensors shared
    between processes live in /dev/shm/torch_<pid>_*. When the run is killed
    (bench/solve.py stops it at the solve) nothing unlinks them. Removed here:
    files newer than this run whose creating process is gone or is one of
    ours (unlinking does not disturb processes that still map them)."""
    ours = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == os.getpid():
                ours.add(int(name))
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return
    for name in names:
        parts = name.split("_")
        if len(parts) < 2 or parts[0] != "torch" or not parts[1].isdigit():
            continue
        path = os.path.join("/dev/shm", name)
        pid = int(parts[1])
        try:
            if os.stat(path).st_mtime < since:
                continue
            if pid in ours or not os.path.exists(f"/proc/{pid}"):
                os.unlink(path)
        except OSError:
            pass


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0], default_max_steps=10_000_000)
    args, extra = p.parse_known_args()
    if extra[:1] == ["--"]:
        extra = extra[1:]
    _common.torch_threads(args.threads)

    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
    from sample_factory.envs.env_utils import register_env
    from sample_factory.train import run_rl

    register_env(ENV_ID, make_env)

    started = time.time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    train_dir = tempfile.mkdtemp(prefix="sf-appo-")
    try:
        argv = [
            f"--env={ENV_ID}",
            f"--experiment=cartpole_seed{args.seed}",
            f"--train_dir={train_dir}",
            *SF_EXAMPLE_ARGS,
            "--num_workers=2",
            "--device=cpu",
            f"--seed={args.seed}",
            f"--train_for_env_steps={args.max_steps}",
            *extra,
        ]
        parser, _ = parse_sf_args(argv=argv)
        cfg = parse_full_cfg(parser, argv)
        return int(run_rl(cfg))
    finally:
        shutil.rmtree(train_dir, ignore_errors=True)
        remove_stale_torch_shm(started)


if __name__ == "__main__":
    sys.exit(main())
