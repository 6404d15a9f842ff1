"""MinAtar side by side: PureJaxRL's PPO on gymnax's ports against proxima on its built-in Rust games.

    .venv/bin/python bench/minatar_vs_purejaxrl.py --ppo /path/to/purejaxrl/ppo.py \\
        --jax-python /path/to/venv-jax/bin/python --games Breakout Asterix --seeds 0 --out runs/pjx

For each game and seed, in one run on one machine and one after the other (nothing else should run beside it):
PureJaxRL's own ``make_train`` with its MinAtar settings (``bench/purejaxrl_minatar.py``, run by the interpreter
that has jax, flax, optax, distrax and gymnax), then ``learner train`` with a proxima config
(``configs/minatar.toml``: the same settings and network by default) on ``MinAtar/<game>-v1`` at the same budget.
It reports both final returns and wall times (PureJaxRL's including its JIT compile, proxima's the whole process),
and the wall time proxima took to first reach PureJaxRL's final return (its logged mean of the last 100
episodes), which is the issue's "faster than PureJaxRL to the same return".

The returns are not the same statistic on both sides: PureJaxRL's is the mean of the episodes that ended in its
last 10 updates, proxima's the mean of the last 100 episodes; both are over the final ~80k env steps or less.
The envs differ too: gymnax's ports against the ``minatar`` package's games, which proxima's Rust games match
step for step (sticky actions, difficulty ramping).

Writes OUT/results.json and OUT/results.md, and keeps each side's output under OUT.
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
GAMES = ("Breakout", "Asterix", "Freeway", "SpaceInvaders")


def run_purejaxrl(
    args: argparse.Namespace, game: str, seed: int, out: Path
) -> dict[str, Any]:
    """PureJaxRL's run of `game`; its JSON summary."""
    result = out / f"purejaxrl-{game}-seed{seed}.json"
    cmd = [
        str(args.jax_python),
        str(ROOT / "bench" / "purejaxrl_minatar.py"),
        "--ppo",
        str(args.ppo),
        "--game",
        game,
        "--seed",
        str(seed),
        "--total-steps",
        str(args.total_steps),
        "--out",
        str(result),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    summary: dict[str, Any] = json.loads(result.read_text())
    summary["process_s"] = time.perf_counter() - start
    return summary


def run_proxima(
    args: argparse.Namespace, game: str, seed: int, out: Path
) -> dict[str, Any]:
    """proxima's run of `game`: wall time and its progress rows."""
    name = f"proxima-{game}-seed{seed}"
    cmd = [
        str(args.learner),
        "train",
        "--config",
        str(args.config),
        "--env",
        f"MinAtar/{game}-v1",
        "--seed",
        str(seed),
        "--total-steps",
        str(args.total_steps),
        "--runs-dir",
        str(out),
        "--run-name",
        name,
        "--dashboard-addr",
        "none",
    ]
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    with open(out / name / "progress.csv", newline="") as f:
        rows = [
            (int(r["env_steps"]), float(r["wall_seconds"]), float(r["mean_return"]))
            for r in csv.DictReader(f)
            if r.get("mean_return")
        ]
    if not rows:
        raise SystemExit(f"{name}: progress.csv has no returns")
    return {
        "wall_s": wall,
        "final_return": rows[-1][2],
        "env_steps": rows[-1][0],
        "rows": rows,
    }


def first_reach(
    rows: list[tuple[int, float, float]], target: float
) -> tuple[int, float] | None:
    """(env steps, seconds) of the first progress row whose mean return is at least `target`."""
    return next(((s, t) for s, t, r in rows if r >= target), None)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        (
            "| game | seed | PureJaxRL return | PureJaxRL wall s (compile) | proxima return | proxima wall s "
            "| proxima to PureJaxRL's return: env steps, s | time ratio |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p, q = r["purejaxrl"], r["proxima"]
        reach = r["proxima_reach"]
        at = "not reached" if reach is None else f"{reach[0]:,}, {reach[1]:.1f}"
        ratio = "-" if reach is None else f"{reach[1] / p['wall_s']:.2f}x"
        lines.append(
            f"| {r['game']} | {r['seed']} | {p['final_return']:.1f} | {p['wall_s']:.1f} ({p['compile_s']:.1f}) "
            f"| {q['final_return']:.1f} | {q['wall_s']:.1f} | {at} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--ppo",
        type=Path,
        required=True,
        help="a kept copy of PureJaxRL's purejaxrl/ppo.py",
    )
    p.add_argument(
        "--jax-python",
        type=Path,
        required=True,
        help="python with jax, flax, optax, distrax, gymnax",
    )
    p.add_argument(
        "--learner", type=Path, default=ROOT / "target" / "release" / "learner"
    )
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "minatar.toml")
    p.add_argument("--games", nargs="+", choices=GAMES, default=list(GAMES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--total-steps", type=int, default=5_000_000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for game in args.games:
        for seed in args.seeds:
            pjx = run_purejaxrl(args, game, seed, args.out)
            pjx.pop("curve", None)
            ours = run_proxima(args, game, seed, args.out)
            reach = first_reach(ours["rows"], pjx["final_return"])
            print(
                f"{game} seed {seed}: PureJaxRL {pjx['final_return']:.1f} in {pjx['wall_s']:.1f} s; proxima "
                f"{ours['final_return']:.1f} in {ours['wall_s']:.1f} s, PureJaxRL's return at {reach}",
                flush=True,
            )
            ours.pop("rows")
            results.append(
                {
                    "game": game,
                    "seed": seed,
                    "purejaxrl": pjx,
                    "proxima": ours,
                    "proxima_reach": reach,
                }
            )
            (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
            (args.out / "results.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
