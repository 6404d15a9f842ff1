"""Shared set-up for the peer runners (standard library only).

Import this first, before numpy/torch: ``limit_threads()`` has to set the
thread-count variables before those libraries start their thread pools.

Thread count: every runner takes ``--threads N`` (default 1), the number of
compute threads of the numeric libraries (OpenMP/MKL/OpenBLAS pools and torch's
intra- and inter-op pools) in every process of the run. It is read from the
command line at import time, before the runner's own argument parsing, because
the environment variables must be set before numpy or torch is imported.
Multi-process peers (Sample Factory, RLlib) still run several processes, each
with N threads.
"""

import argparse
import os

PEERS_DIR = os.path.dirname(os.path.abspath(__file__))

# Thread pools of the numeric libraries. Worker processes inherit these.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def threads_from_argv() -> int:
    """The value of --threads on the command line (1 if absent)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=1)
    args, _ = pre.parse_known_args()
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    return int(args.threads)


def limit_threads() -> int:
    """Limit numeric libraries to --threads threads, CPU only, in this process
    and in every process it starts (workers inherit the environment). Also puts
    this directory on PYTHONPATH so that worker processes (Ray actors, spawned
    Sample Factory workers) can import episode_log. Returns the thread count."""
    n = threads_from_argv()
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ["PROXIMA_BENCH_THREADS"] = str(n)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    path = os.environ.get("PYTHONPATH", "")
    if PEERS_DIR not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = PEERS_DIR + (os.pathsep + path if path else "")
    return n


def torch_threads(n: int) -> None:
    """torch's intra-op and inter-op pools of this process: n threads each."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # already set, or parallel work has started


def parser(description: str, default_max_steps: int | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--max-steps",
        type=int,
        default=default_max_steps,
        help="env steps to train for at most (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="compute threads of torch and the BLAS/OpenMP pools in every process (default: 1)",
    )
    return p
