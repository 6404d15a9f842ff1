"""Reference trajectories from the `minatar` package for the MinAtar conformance test
(tests/tests/minatar_conformance.rs).

    .venv/bin/python tests/python/minatar_steps.py --env MinAtar/Breakout-v1 --seed 1 < actions

Reads whitespace-separated gym actions on stdin. Makes the env with gymnasium.make (after
minatar.gym.register_envs()), resets it with the seed, then steps every action in turn and resets it without a
seed whenever an episode ends (terminated or truncated), as a plain loop does. Writes one line per reset,
`r <obs>`, and one per step, `s <obs> <reward> <terminated> <truncated>`, where <obs> is the 10x10xC boolean
observation in C order packed with numpy.packbits, in hex; reward as repr(float); the flags as 0 or 1.
"""

import argparse
import sys
import warnings

import gymnasium as gym
import numpy as np


def packed(obs: np.ndarray) -> str:
    if obs.dtype != np.bool_ or obs.ndim != 3 or obs.shape[:2] != (10, 10):
        raise SystemExit(f"unexpected observation {obs.dtype} {obs.shape}")
    return np.packbits(obs.reshape(-1)).tobytes().hex()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    gym.logger.min_level = gym.logger.ERROR
    from minatar.gym import register_envs

    register_envs()
    actions = [int(a) for a in sys.stdin.read().split()]
    env = gym.make(args.env)
    out = []
    obs, _ = env.reset(seed=args.seed)
    out.append(f"r {packed(obs)}")
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append(f"s {packed(obs)} {float(reward)!r} {int(bool(terminated))} {int(bool(truncated))}")
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(f"r {packed(obs)}")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
