"""Atari Pong end to end: proxima (a Python actor, numpy inference, the Rust learner) against Stable-Baselines3's
PPO ``CnnPolicy`` with the same settings, one after the other on this machine; env steps per second and their ratio.

    .venv/bin/python bench/pong_vs_sb3.py --steps 49152 --threads 2 --out runs/pong-vs-sb3

proxima: ``bench/python_fleet.py`` with one ``proxima-actor --atari`` of 8 envs and ``learner serve`` on
``configs/atari.toml`` (CleanRL's ``ppo_atari.py`` settings, the Nature CNN shared by actor and critic), the
learner on ``--threads`` threads; its rate is the learner's logged env steps over its logged wall seconds.
SB3: ``make_atari_env(env, n_envs=8, env_kwargs={"frameskip": 1})`` (noop reset, frame skip 4 with max-pool,
84x84 grayscale, life loss as terminal, sign-clipped rewards: the same preprocessing) and ``VecFrameStack(4)``,
``PPO("CnnPolicy")`` with 128 steps per env, 4 epochs, minibatch 256, lr 2.5e-4 annealed, clip 0.1, entropy 0.01,
value 0.5, grad norm 0.5, ``torch.set_num_threads(--threads)``; its rate is ``--steps`` over the time of
``learn``. Env steps are agent steps (4 frames each) on both sides. SB3 runs in this interpreter (``pip install
stable-baselines3``); ale-py and opencv come with ``./python[atari]``.

Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENVS = 8


def run_proxima(args: argparse.Namespace) -> dict[str, Any]:
    runs, name = args.out / "proxima", time.strftime("pong-%Y%m%d-%H%M%S")
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "python_fleet.py"),
        "--python",
        sys.executable,
        "--actors",
        "1",
        "--num-envs",
        str(ENVS),
        "--env",
        args.env,
        "--actor-arg=--atari",
        "--runs-dir",
        str(runs),
        "--",
        "--config",
        str(ROOT / "configs" / "atari.toml"),
        "--run-name",
        name,
        "--set",
        f"total_steps={args.steps}",
        "--set",
        f"threads={args.threads}",
        "--set",
        f'env.id="{args.env}"',
    ]
    start = time.perf_counter()
    with open(args.out / "proxima.log", "w") as log:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    process_s = time.perf_counter() - start
    with open(runs / name / "progress.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    steps, seconds = int(last["env_steps"]), float(last["wall_seconds"])
    return {
        "env_steps": steps,
        "seconds": seconds,
        "process_s": process_s,
        "steps_per_s": steps / seconds,
    }


def run_sb3(args: argparse.Namespace) -> dict[str, Any]:
    import ale_py
    import gymnasium
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gymnasium.register_envs(ale_py)
    torch.set_num_threads(args.threads)
    env = VecFrameStack(
        make_atari_env(args.env, n_envs=ENVS, seed=1, env_kwargs={"frameskip": 1}),
        n_stack=4,
    )
    model = PPO(
        "CnnPolicy",
        env,
        learning_rate=lambda progress: 2.5e-4 * progress,
        n_steps=128,
        batch_size=256,
        n_epochs=4,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.1,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        seed=1,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    seconds = time.perf_counter() - start
    steps = model.num_timesteps
    env.close()
    return {
        "env_steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "torch": torch.__version__,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--steps", type=int, default=49_152, help="env steps per side")
    p.add_argument(
        "--threads", type=int, default=2, help="learner threads / torch threads"
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ours = run_proxima(args)
    print(
        f"proxima: {ours['env_steps']} env steps in {ours['seconds']:.1f} s, {ours['steps_per_s']:.0f}/s",
        flush=True,
    )
    sb3 = run_sb3(args)
    print(
        f"sb3: {sb3['env_steps']} env steps in {sb3['seconds']:.1f} s, {sb3['steps_per_s']:.0f}/s",
        flush=True,
    )
    ratio = ours["steps_per_s"] / sb3["steps_per_s"]
    result = {
        "env": args.env,
        "threads": args.threads,
        "proxima": ours,
        "sb3": sb3,
        "ratio": ratio,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    table = (
        f"| {args.env}, {args.threads} threads | env steps | seconds | env steps/s |\n|---|---|---|---|\n"
        f"| proxima (Python actor, Rust learner) | {ours['env_steps']:,} | {ours['seconds']:.1f} "
        f"| {ours['steps_per_s']:.0f} |\n"
        f"| SB3 PPO CnnPolicy | {sb3['env_steps']:,} | {sb3['seconds']:.1f} | {sb3['steps_per_s']:.0f} |\n"
        f"| ratio | | | {ratio:.2f}x |\n"
    )
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
