#!/usr/bin/env python3
"""The MuJoCo suite: trains configs/{halfcheetah,hopper,walker2d}.toml (the RL Zoo's PPO settings, 1M env steps)
with a learner and Python actor processes (``bench/python_fleet.py``), seeds 1-3, then evaluates every final
policy deterministically over 10 episodes in gymnasium (``proxima-actor eval``), and writes a table and learning
curves (mean and per seed) in Markdown and SVG.

    .venv/bin/python bench/mujoco_suite.py --out runs/mujoco-suite        # everything: hours on 2 cores
    .venv/bin/python bench/mujoco_suite.py --envs hopper --seeds 1 --out runs/hopper1

Needs ``target/release/learner`` (``cargo build --release -p proxima-cli``) and gymnasium[mujoco] and the package
in the Python that runs it. A run already in OUT (an ``eval.json`` in its directory) is kept, so an interrupted
suite goes on where it stopped. Targets and floors of the issue are printed beside each env's results; a seed
below its floor is reported as such, never left out. Standard library only (the plots are hand-written SVG).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import python_fleet  # bench/python_fleet.py, beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


@dataclass(frozen=True)
class Task:
    config: str
    env_id: str
    target: float  # mean of the seeds' final evaluations
    floor: float  # every seed's final evaluation
    zoo: (
        str  # the RL Zoo's PPO result at 1M steps (its benchmark.md, -v3 envs, one run)
    )


TASKS = {
    "halfcheetah": Task("halfcheetah", "HalfCheetah-v5", 5000, 4000, "5,819 +- 664"),
    "hopper": Task("hopper", "Hopper-v5", 2400, 1900, "2,410 +- 10"),
    "walker2d": Task("walker2d", "Walker2d-v5", 3000, 2400, "3,479 +- 822"),
}


def progress_rows(run_dir: str) -> list[dict[str, str]]:
    path = os.path.join(run_dir, "progress.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_and_eval(
    task: Task, seed: int, out: str, actors: int, episodes: int, python: str
) -> dict:
    """One seed: training (skipped when its eval.json exists), then the deterministic evaluation."""
    run_dir = os.path.join(out, "runs", f"{task.config}-seed{seed}")
    done = os.path.join(run_dir, "eval.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    with open(os.path.join(out, f"{task.config}-seed{seed}.log"), "wb") as log:
        learner_args = [
            "--config",
            os.path.join(REPO, "configs", f"{task.config}.toml"),
        ]
        learner_args += ["--seed", str(seed), "--run-name", f"{task.config}-seed{seed}"]
        learner_args += ["--dashboard-addr", "none"]
        runs = os.path.join(out, "runs")
        cmd = python_fleet.command(python, actors, task.env_id, learner_args, 1, runs)
        started = time.monotonic()
        cpu0 = os.times()
        rc = subprocess.run(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
        cpu1 = os.times()
        wall = time.monotonic() - started
        cpu = (cpu1.children_user - cpu0.children_user) + (
            cpu1.children_system - cpu0.children_system
        )
        rows = progress_rows(run_dir)
        result: dict = {
            "env": task.env_id,
            "seed": seed,
            "train_rc": rc,
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),
            "env_steps": int(rows[-1]["env_steps"]) if rows else 0,
            "train_mean_return": float(rows[-1]["mean_return"])
            if rows and rows[-1]["mean_return"]
            else None,
        }
        model = os.path.join(run_dir, "model.safetensors")
        if rc == 0 and os.path.exists(model):
            ev = [
                python,
                "-m",
                "proxima_actor",
                "eval",
                "--checkpoint",
                model,
                "--env",
                task.env_id,
            ]
            ev += ["--episodes", str(episodes), "--deterministic", "--seed", "1000"]
            res = subprocess.run(
                ev, cwd=REPO, capture_output=True, text=True, check=False
            )
            log.write(res.stderr.encode())
            lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
            if res.returncode == 0 and lines:
                report = json.loads(lines[-1])
                result["eval_mean"] = report["mean_return"]
                result["eval_std"] = report.get("std_return")
    with open(done, "w") as f:
        json.dump(result, f, indent=1)
    return result


def curve(run_dir: str, every: int = 10_000) -> list[tuple[int, float]]:
    """(env steps, 100-episode mean return) from progress.csv, one point per ``every`` env steps."""
    points: list[tuple[int, float]] = []
    for row in progress_rows(run_dir):
        if not row["mean_return"]:
            continue
        steps = int(row["env_steps"])
        if not points or steps - points[-1][0] >= every:
            points.append((steps, float(row["mean_return"])))
    return points


def mean_curve(
    curves: list[list[tuple[int, float]]], grid: int = 20_000
) -> list[tuple[int, float]]:
    """The seeds' mean on a common grid (each curve's last value at or before the grid point)."""
    if not curves or any(not c for c in curves):
        return []
    end = min(c[-1][0] for c in curves)
    out = []
    for x in range(grid, end + 1, grid):
        ys = [next((y for s, y in reversed(c) if s <= x), c[0][1]) for c in curves]
        out.append((x, statistics.fmean(ys)))
    return out


def svg(
    title: str,
    seeds: dict[int, list[tuple[int, float]]],
    mean: list[tuple[int, float]],
    target: float,
) -> str:
    """A learning-curve chart: one thin line per seed, the mean thick, the target dashed."""
    w, h, left, right, top, bottom = 640, 360, 60, 20, 30, 40
    xs = [p[0] for c in seeds.values() for p in c] or [1]
    ys = [p[1] for c in seeds.values() for p in c] + [target, 0.0]
    x_max, y_min, y_max = max(xs), min(ys), max(ys)
    y_span = (y_max - y_min) or 1.0

    def px(x: float) -> float:
        return left + (w - left - right) * x / x_max

    def py(y: float) -> float:
        return top + (h - top - bottom) * (1 - (y - y_min) / y_span)

    def line(points: list[tuple[int, float]], style: str) -> str:
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        return f'<polyline fill="none" {style} points="{d}"/>'

    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#444"/>',
    ]
    for i in range(6):
        y = y_min + y_span * i / 5
        parts.append(
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>'
        )
        x = x_max * i / 5
        parts.append(
            f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x / 1e6:.1f}M</text>'
        )
    parts.append(
        line([(0, target), (x_max, target)], 'stroke="#888" stroke-dasharray="5,4"')
    )
    for i, (seed, c) in enumerate(sorted(seeds.items())):
        color = colors[i % len(colors)]
        parts.append(line(c, f'stroke="{color}" stroke-width="1" opacity="0.8"'))
        parts.append(
            f'<text x="{w - right - 70}" y="{top + 14 * (i + 1)}" fill="{color}">seed {seed}</text>'
        )
    if mean:
        parts.append(line(mean, 'stroke="black" stroke-width="2.5"'))
        parts.append(
            f'<text x="{w - right - 70}" y="{top + 14 * (len(seeds) + 1)}">mean</text>'
        )
    parts.append(
        f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle">env steps (100-episode mean return)</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def report(out: str, results: dict[str, list[dict]]) -> str:
    head = (
        "| env | seed | final eval (10 episodes, deterministic) | training return (last 100) | env steps | wall s "
        "| CPU s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    summary = []
    for name, rs in results.items():
        task = TASKS[name]
        for r in rs:
            ev = r.get("eval_mean")
            ev_text = (
                "failed"
                if ev is None
                else f"{ev:,.0f} +- {r.get('eval_std') or 0:,.0f}"
            )
            if ev is not None and ev < task.floor:
                ev_text += f" (below the floor {task.floor:,.0f})"
            tr = r.get("train_mean_return")
            lines.append(
                f"| {task.env_id} | {r['seed']} | {ev_text} | {'-' if tr is None else f'{tr:,.0f}'} "
                f"| {r['env_steps']:,} | {r['wall_seconds']:,.0f} | {r['cpu_seconds']:,.0f} |"
            )
        evals = [r["eval_mean"] for r in rs if r.get("eval_mean") is not None]
        if evals:
            mean = statistics.fmean(evals) if len(evals) == len(rs) else float("nan")
            verdict = (
                "met"
                if len(evals) == len(rs)
                and mean >= task.target
                and min(evals) >= task.floor
                else "not met"
            )
            summary.append(
                f"- {task.env_id}: mean of {len(rs)} seeds {mean:,.0f} (target {task.target:,.0f}, floor "
                f"{task.floor:,.0f} per seed: {verdict}); RL Zoo PPO at 1M: {task.zoo}"
            )
        seeds = {
            r["seed"]: curve(os.path.join(out, "runs", f"{name}-seed{r['seed']}"))
            for r in rs
        }
        with open(os.path.join(out, f"{name}.svg"), "w") as f:
            f.write(
                svg(task.env_id, seeds, mean_curve(list(seeds.values())), task.target)
            )
    return "\n".join(lines + [""] + summary) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--envs", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument(
        "--actors",
        type=int,
        default=2,
        help="Python actor processes per run (default 2)",
    )
    p.add_argument(
        "--episodes", type=int, default=10, help="evaluation episodes (default 10)"
    )
    p.add_argument(
        "--out",
        default=os.path.join(
            REPO, "runs", f"mujoco-suite-{time.strftime('%Y%m%d-%H%M%S')}"
        ),
    )
    p.add_argument("--python", default=sys.executable)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    results: dict[str, list[dict]] = {}
    # Seed-major: every env has its first seed before any has its second (an interrupted suite is still even).
    for seed in a.seeds:
        for name in a.envs:
            r = train_and_eval(TASKS[name], seed, a.out, a.actors, a.episodes, a.python)
            results.setdefault(name, []).append(r)
            print(json.dumps(r), flush=True)
            with open(os.path.join(a.out, "results.md"), "w") as f:
                f.write(report(a.out, results))
    text = report(a.out, results)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
