"""Shared set-up for the peer runners (standard library only).

Import this first, before numpy/torch: ``single_threaded()`` has to set the
thread-count variables before those libraries start their thread pools.
"""

import argparse
import os

PEERS_DIR = os.path.dirname(os.path.abspath(__file__))

# Thread pools of the numeric libraries: one thread each, as for every
# system in the benchmark (the machine has 2 cores).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def single_threaded():
    """Pin numeric libraries to one thread, CPU only, in this process and in
    every process it starts (workers inherit the environment). Also puts this
    directory on PYTHONPATH so that worker processes (Ray actors, spawned
    Sample Factory workers) can import episode_log."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    path = os.environ.get("PYTHONPATH", "")
    if PEERS_DIR not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = PEERS_DIR + (os.pathsep + path if path else "")


def torch_single_threaded():
    import torch
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or parallel work has started


def parser(description, default_max_steps):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=default_max_steps,
                   help="env steps to train for at most (default: %(default)s)")
    return p
