"""Reference steps from gymnasium itself for the conformance test (tests/tests/conformance.rs).

Reads JSON lines {"env": ID, "state": [...], "action": A} on stdin. For each line: reset a cached
gymnasium.make(ID) with seed 0, overwrite env.unwrapped.state (in the dtype gymnasium keeps that state in
between steps), step once with A (an int for Discrete, a float32 array for Box) and write one JSON line
{"state": [...], "obs": [...], "reward": R, "terminated": B}. Floats are written with full precision.
"""

import json
import sys
import warnings

import gymnasium as gym
import numpy as np

# What env.unwrapped.state holds after a step: float64 everywhere except MountainCarContinuous.
STATE_DTYPE = {
    "CartPole-v1": np.float64,
    "Acrobot-v1": np.float64,
    "MountainCar-v0": np.float64,
    "MountainCarContinuous-v0": np.float32,
    "Pendulum-v1": np.float64,
}


def main() -> None:
    warnings.filterwarnings("ignore")
    gym.logger.min_level = gym.logger.ERROR
    envs = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        env_id = request["env"]
        if env_id not in envs:
            envs[env_id] = gym.make(env_id)
        env = envs[env_id]
        env.reset(seed=0)
        env.unwrapped.state = np.array(request["state"], dtype=STATE_DTYPE[env_id])
        if isinstance(env.action_space, gym.spaces.Discrete):
            action = int(request["action"])
        else:
            action = np.array(request["action"], dtype=np.float32)
        obs, reward, terminated, _, _ = env.step(action)
        response = {
            "state": [float(x) for x in env.unwrapped.state],
            "obs": [float(x) for x in obs],
            "reward": float(reward),
            "terminated": bool(terminated),
        }
        sys.stdout.write(json.dumps(response) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
