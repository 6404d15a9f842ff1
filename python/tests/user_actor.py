"""Runs a Python actor for one of the test envs through the library API, ``proxima_actor.run(make_env, ...)``:
``python user_actor.py corridor|reach|dials|quadrant|mismatch LEARNER_URL NAME [OPTION=INT ...]``, where the
options are :class:`proxima_actor.ActorOptions` fields with whole-number values (``policy_wait_ms=60000``). Used by
the Rust end-to-end tests."""

from __future__ import annotations

import logging
import sys

import corridor
import dials
import quadrant
import reach

import proxima_actor

# "mismatch" claims the reach task's id for the corridor, whose spaces differ: the learner must refuse it.
ENVS = {
    "corridor": ("Corridor-v0", corridor.make),
    "reach": ("Reach-v0", reach.make),
    "dials": ("Dials-v0", dials.make),
    "quadrant": ("Quadrant-v0", quadrant.make),
    "mismatch": ("Reach-v0", corridor.make),
}

if __name__ == "__main__":
    which, learner, name = sys.argv[1:4]
    options = {key: int(value) for key, value in (arg.split("=", 1) for arg in sys.argv[4:])}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env_id, make = ENVS[which]
    proxima_actor.run(make, learner=learner, env_id=env_id, name=name, num_envs=8, max_backoff=1.0, **options)
