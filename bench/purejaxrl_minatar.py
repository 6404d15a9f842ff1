"""Time PureJaxRL's PPO (its own ``make_train``) on a gymnax MinAtar game.

    /work/venv-jax/bin/python bench/purejaxrl_minatar.py \\
        --ppo /work/purejaxrl/ppo.py --game Breakout --seed 0 --out result.json

PureJaxRL is third-party code and is not vendored here: ``--ppo`` points at a
kept copy of its ``purejaxrl/ppo.py``, with its ``wrappers.py`` in the same
folder. That folder goes on ``sys.path`` and is also registered as the package
``purejaxrl`` (ppo.py imports ``purejaxrl.wrappers``). The wrappers module
imports brax at the top for its Brax wrapper, which MinAtar never uses; when
brax is not installed, empty placeholder modules stand in for it (and for
navix, imported by newer copies), and the JSON says so.

The config is the MinAtar one from PureJaxRL's ``examples/brax_minatar.ipynb``
(LR 5e-3, 64 envs x 128 steps, 4 epochs of 8 minibatches, relu, annealed LR),
except TOTAL_TIMESTEPS, which is ``--total-steps`` (the notebook uses 1e7;
note that the LR anneals to zero over whatever budget is given).

Timing: ``make_train(config)`` (setup), then ``jax.jit(train).lower(key)
.compile()`` (compile), then one call of the compiled function up to
``block_until_ready`` (run). ``wall_s`` is the sum, measured as one span.

Metrics: ``make_train(...)(key)["metrics"]`` is the ``info`` dict of the
LogWrapper stacked over the whole run, each leaf shaped
(NUM_UPDATES, NUM_STEPS, NUM_ENVS). An episode ended at a step where
``returned_episode`` is true, and its return is ``returned_episode_returns``
there. ``final_return`` is the mean over the episodes that ended in the last
10 updates; ``curve`` has, for each update, the episodes that ended in it,
their mean return, the env steps done by its end ((update + 1) * 64 * 128) and
an estimate of the seconds since start by then (setup + compile + the
update's share of the run time, as the run is one opaque XLA call).
``--target R`` (repeatable) adds the first update, env steps and seconds at
which the per-update mean and the trailing 10-update mean reached R.
The notebook's own plot averages ``returned_episode_returns`` over every step
and env (each env's last finished episode, 0 before its first); that figure is
kept too, as ``last_return_mean`` per update and ``final_return_plot_style``.

Writes one JSON file (``--out``) and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import sys
import time
import types
from pathlib import Path
from typing import Any

GAMES = ("Breakout", "Asterix", "Freeway", "SpaceInvaders")
NUM_ENVS = 64
NUM_STEPS = 128
FINAL_WINDOW = 10
SINGLE_THREAD_FLAGS = (
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)


def minatar_config(env_id: str, total_steps: int) -> dict[str, Any]:
    """PureJaxRL's MinAtar settings (examples/brax_minatar.ipynb), budget aside."""
    return {
        "LR": 5e-3,
        "NUM_ENVS": NUM_ENVS,
        "NUM_STEPS": NUM_STEPS,
        "TOTAL_TIMESTEPS": total_steps,
        "UPDATE_EPOCHS": 4,
        "NUM_MINIBATCHES": 8,
        "GAMMA": 0.99,
        "GAE_LAMBDA": 0.95,
        "CLIP_EPS": 0.2,
        "ENT_COEF": 0.01,
        "VF_COEF": 0.5,
        "MAX_GRAD_NORM": 0.5,
        "ACTIVATION": "relu",
        "ENV_NAME": env_id,
        "ANNEAL_LR": True,
    }


def _placeholder_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []

    def missing(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*_args: Any, **_kwargs: Any) -> Any:
            top = name.split(".")[0]
            raise RuntimeError(f"{name}.{attr} is a placeholder: install {top}")

        return unavailable

    module.__dict__["__getattr__"] = missing  # PEP 562 module-level __getattr__
    return module


def stub_unused_imports() -> list[str]:
    """Stand in for brax / navix when absent; returns the names stubbed."""
    stubbed: list[str] = []
    groups = {
        "brax": (
            "brax",
            "brax.envs",
            "brax.envs.wrappers",
            "brax.envs.wrappers.training",
        ),
        "navix": ("navix",),
    }
    for top, names in groups.items():
        if importlib.util.find_spec(top) is not None:
            continue
        for name in names:
            sys.modules[name] = _placeholder_module(name)
        parents = [sys.modules[name] for name in names]
        for parent, child in itertools.pairwise(parents):
            setattr(parent, child.__name__.rsplit(".", 1)[1], child)
        stubbed.append(top)
    return stubbed


def load_make_train(ppo_path: Path) -> Any:
    folder = str(ppo_path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    package = types.ModuleType("purejaxrl")
    package.__path__ = [folder]
    sys.modules["purejaxrl"] = package
    spec = importlib.util.spec_from_file_location("purejaxrl.ppo", ppo_path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {ppo_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["purejaxrl.ppo"] = module
    spec.loader.exec_module(module)
    return module.make_train


def sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "distrax",
        "gymnax",
        "chex",
        "numpy",
        "tfp-nightly",
    ):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


def first_reach(
    curve: list[dict[str, Any]], key: str, target: float
) -> dict[str, Any] | None:
    for point in curve:
        value = point[key]
        if value is not None and value >= target:
            return {
                "update": point["update"],
                "env_steps": point["env_steps"],
                "seconds_est": point["seconds_est"],
                "value": value,
            }
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--ppo",
        type=Path,
        required=True,
        help="path to the kept copy of purejaxrl/ppo.py",
    )
    p.add_argument("--game", choices=GAMES, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--total-steps", type=float, default=5e6, help="TOTAL_TIMESTEPS (default 5e6)"
    )
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument(
        "--target",
        type=float,
        action="append",
        default=[],
        help="return to find the first reach of",
    )
    p.add_argument(
        "--single-thread",
        action="store_true",
        help=f"set XLA_FLAGS={SINGLE_THREAD_FLAGS!r} (unless XLA_FLAGS is already set)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ppo_path: Path = args.ppo.resolve()
    if not ppo_path.is_file():
        raise SystemExit(f"--ppo {ppo_path}: no such file")
    if args.single_thread:
        os.environ.setdefault("XLA_FLAGS", SINGLE_THREAD_FLAGS)

    import jax
    import numpy as np

    stubbed = stub_unused_imports()
    make_train = load_make_train(ppo_path)

    env_id = f"{args.game}-MinAtar"
    config = minatar_config(env_id, int(args.total_steps))
    key = jax.random.PRNGKey(args.seed)

    t_start = time.perf_counter()
    train = make_train(config)
    t_setup = time.perf_counter()
    compiled = jax.jit(train).lower(key).compile()
    t_compile = time.perf_counter()
    out = compiled(key)
    jax.block_until_ready(out)
    t_end = time.perf_counter()

    setup_s = t_setup - t_start
    compile_s = t_compile - t_setup
    run_s = t_end - t_compile
    wall_s = t_end - t_start

    metrics = out["metrics"]
    returns = np.asarray(metrics["returned_episode_returns"], dtype=np.float64)
    ended = np.asarray(metrics["returned_episode"], dtype=bool)
    num_updates = int(config["NUM_UPDATES"])
    if (
        returns.shape != (num_updates, NUM_STEPS, NUM_ENVS)
        or ended.shape != returns.shape
    ):
        raise SystemExit(f"unexpected metric shapes {returns.shape} / {ended.shape}")
    steps_per_update = NUM_ENVS * NUM_STEPS

    ended_sum = (returns * ended).sum(axis=(1, 2))
    ended_count = ended.sum(axis=(1, 2))
    plot_style = returns.mean(axis=(1, 2))
    curve: list[dict[str, Any]] = []
    for u in range(num_updates):
        count = int(ended_count[u])
        lo = max(0, u + 1 - FINAL_WINDOW)
        window_count = int(ended_count[lo : u + 1].sum())
        window_sum = float(ended_sum[lo : u + 1].sum())
        curve.append(
            {
                "update": u,
                "env_steps": (u + 1) * steps_per_update,
                "seconds_est": setup_s + compile_s + run_s * (u + 1) / num_updates,
                "episodes": count,
                "mean_return": float(ended_sum[u]) / count if count else None,
                "last_return_mean": float(plot_style[u]),
                "window_mean_return": window_sum / window_count
                if window_count
                else None,
            }
        )

    tail = slice(max(0, num_updates - FINAL_WINDOW), num_updates)
    final_episodes = int(ended_count[tail].sum())
    final_return = (
        float(ended_sum[tail].sum()) / final_episodes if final_episodes else None
    )
    env_steps = num_updates * steps_per_update

    result: dict[str, Any] = {
        "impl": "purejaxrl-ppo",
        "game": args.game,
        "env_id": env_id,
        "seed": args.seed,
        "total_steps_requested": int(args.total_steps),
        "num_updates": num_updates,
        "env_steps": env_steps,
        "setup_s": setup_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "wall_s": wall_s,
        "env_steps_per_s_run": env_steps / run_s if run_s > 0 else None,
        "env_steps_per_s_wall": env_steps / wall_s if wall_s > 0 else None,
        "final_return": final_return,
        "final_window_updates": FINAL_WINDOW,
        "final_episodes": final_episodes,
        "final_return_plot_style": float(plot_style[tail].mean()),
        "total_episodes": int(ended_count.sum()),
        "first_reach": [
            {
                "target": target,
                "per_update": first_reach(curve, "mean_return", target),
                "window": first_reach(curve, "window_mean_return", target),
            }
            for target in args.target
        ],
        "config": {
            k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()
        },
        "curve": curve,
        "ppo_path": str(ppo_path),
        "ppo_sha256": sha256(ppo_path),
        "wrappers_sha256": sha256(ppo_path.parent / "wrappers.py"),
        "stubbed_modules": stubbed,
        "versions": versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    shown = "n/a" if final_return is None else f"{final_return:.2f}"
    sps = env_steps / run_s if run_s > 0 else float("nan")
    print(
        f"purejaxrl-ppo {env_id} seed={args.seed} steps={env_steps}"
        f" updates={num_updates} final_return={shown}"
        f" (episodes={final_episodes}, last {FINAL_WINDOW} updates)"
        f" wall={wall_s:.1f}s compile={compile_s:.1f}s run={run_s:.1f}s"
        f" setup={setup_s:.2f}s sps_run={sps:.0f}"
        f" backend={result['jax_backend']} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
