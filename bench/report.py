#!/usr/bin/env python3
"""Markdown summary of a bench/run.py results file.

    python3 bench/report.py bench/results/20260101T120000Z.json [> summary.md]

Standard library only. bench/run.py calls render() itself at the end of a
run; this re-renders a saved (or partial, interrupted) JSON. All aggregates
are computed here from the raw per-run entries, so the JSON holds only
measurements. Results of the first schema (one window, no thread sweep)
render too: their runs count as proxima threads=2 and peers threads=1, as
they were run.
"""

import json
import statistics
import sys
from collections.abc import Callable, Iterable
from typing import Any

SYSTEM_NAMES = {
    "proxima": "proxima",
    "proxima-py": "proxima, 2 Python actors",
    "sb3": "SB3 (+Zoo)",
    "cleanrl": "CleanRL",
    "sf": "Sample Factory",
    "rllib": "RLlib",
}

Run = dict[str, Any]


# --------------------------------------------------------------------------
# Helpers


def med(values: Iterable[Any]) -> float | None:
    nums = [
        v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return statistics.median(nums) if nums else None


def fmt(x: float | None, digits: int | None = None) -> str:
    """Human number: thousands separators for big ones, a few significant
    digits for small ones; '–' for missing."""
    if x is None:
        return "–"
    if isinstance(x, int) and digits is None:
        return f"{x:,}"
    if digits is not None:
        return f"{x:,.{digits}f}"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def one_line(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tail_block(text: str | None, lines: int = 8) -> list[str]:
    text = (text or "").rstrip()
    if not text:
        return []
    body = "\n".join(text.splitlines()[-lines:])
    return ["", "  ```", *("  " + ln for ln in body.splitlines()), "  ```"]


def ok_runs(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.get("ok")]


def out(r: Run | None, key: str) -> Any:
    """A field of a run's JSON output (proxima-bench / gym script)."""
    return ((r or {}).get("output") or {}).get(key)


def name(system: str) -> str:
    return SYSTEM_NAMES.get(system, system)


# --------------------------------------------------------------------------
# Header


def header_section(res: dict[str, Any]) -> list[str]:
    env = res.get("environment") or {}
    opts = res.get("options") or {}
    lines = [f"# proxima benchmark {res.get('timestamp_utc', '')}", ""]
    if not res.get("finished"):
        state = "interrupted" if res.get("interrupted") else "not finished"
        lines += [
            f"**Incomplete run** ({state}): the tables show what was measured.",
            "",
        ]
    commit = env.get("git_commit") or "?"
    dirty = " + uncommitted changes" if env.get("git_dirty") else ""
    load = " ".join(env.get("loadavg_at_start") or []) or "?"
    lines.append(
        f"- Machine: {env.get('cpu_model', '?')}, {env.get('nproc', '?')} CPUs usable, "
        f"{env.get('mem_total_gb', '?')} GB RAM, kernel {env.get('kernel', '?')}, load at start {load}"
    )
    lines.append(
        f"- Code: git {commit[:12]}{dirty}; {env.get('rustc') or 'rustc ?'}; python {env.get('python', '?')}"
    )
    bins = env.get("binaries") or {}
    missing = [b for b, i in bins.items() if not i.get("present")]
    if missing:
        lines.append(f"- Missing binaries: {', '.join(missing)}")
    build = res.get("build")
    if build and not build.get("skipped"):
        cargo = build.get("cargo") or {}
        text = "ok" if cargo.get("ok") else "FAILED: " + str(cargo.get("error"))
        if build.get("setup_peers"):
            text += "; setup_peers " + (
                "ok" if build["setup_peers"].get("ok") else "had failures"
            )
        lines.append(f"- Build: cargo {text}")
    elif build and build.get("skipped"):
        lines.append("- Build: skipped (--skip-build): existing binaries and venvs")
    extra = ""
    if opts.get("solve_threads"):
        extra += f", solve threads {','.join(str(t) for t in opts['solve_threads'])}"
    if opts.get("windows"):
        extra += f", solve windows {','.join(str(w) for w in opts['windows'])} episodes"
    lines.append(
        f"- Options: seeds {opts.get('seeds')}, quick {opts.get('quick')}, "
        f"workloads {','.join(opts.get('only') or [])}, peers {','.join(opts.get('peers') or [])}"
        f"{extra}; elapsed {fmt(res.get('elapsed_s'))} s"
    )
    for peer, info in (env.get("peers") or {}).items():
        if info.get("installed"):
            vers = ", ".join(
                f"{k} {v}" for k, v in sorted((info.get("versions") or {}).items())
            )
            lines.append(f"- Peer {peer}: {vers or 'installed'}")
        else:
            lines.append(f"- Peer {peer}: **{info.get('error', 'not installed')}**")
            lines += tail_block(info.get("error_tail"), 10)
    return lines


# --------------------------------------------------------------------------
# 1. solve


def run_threads(r: Run) -> int:
    """A solve run's compute-thread count (first-schema runs: as they ran)."""
    t = r.get("threads")
    if isinstance(t, int):
        return t
    return 2 if r.get("system") == "proxima" else 1


def run_window(r: Run, w: int, primary: int) -> dict[str, Any]:
    """One window's figures of a solve run ({} if it has none)."""
    windows = r.get("windows")
    if isinstance(windows, dict):
        x = windows.get(str(w))
        return x if isinstance(x, dict) else {}
    if w == primary:  # first schema: the top-level figures are the only window's
        return {
            k: r.get(k)
            for k in ("solved", "wall_s", "cpu_s", "steps", "episodes", "peak_pss_mb")
        }
    return {}


class Group:
    """Aggregates of one (system, threads) group of solve runs: medians over
    the runs that solved each window."""

    def __init__(
        self, system: str, threads: int, runs: list[Run], windows: list[int]
    ) -> None:
        self.system = system
        self.threads = threads
        self.runs = runs
        self.windows = windows
        self.n = len(runs)
        self.install_error = any(r.get("install_error") for r in runs)
        self.w: dict[int, dict[str, Any]] = {}
        for w in windows:
            xs = [run_window(r, w, windows[0]) for r in runs]
            solved = [x for x in xs if x.get("solved")]
            cores = [x.get("cores") for x in solved]
            if not any(isinstance(c, (int, float)) for c in cores):
                cores = [ratio(x.get("cpu_s"), x.get("wall_s")) for x in solved]
            self.w[w] = {
                "solved": len(solved),
                "wall_s": med(x.get("wall_s") for x in solved),
                "cpu_s": med(x.get("cpu_s") for x in solved),
                "steps": med(x.get("steps") for x in solved),
                "cores": med(cores),
                "cpu_per_100k": med(
                    x["cpu_s"] / x["steps"] * 1e5
                    for x in solved
                    if x.get("steps") and x.get("cpu_s") is not None
                ),
            }
        primary_solved = [
            r for r in runs if run_window(r, windows[0], windows[0]).get("solved")
        ]
        self.startup_s = med(r.get("startup_s") for r in primary_solved)
        self.peak_pss_mb = med(r.get("peak_pss_mb") for r in primary_solved)
        # Episode-log throughput of every run that has one, solved or not.
        thr = [r.get("log_steps_per_s") for r in runs]
        if not any(
            isinstance(t, (int, float)) for t in thr
        ):  # first schema: steps / (wall - startup)
            thr = [
                r["steps"] / r["train_wall_s"]
                for r in runs
                if r.get("steps") and r.get("train_wall_s") and r["train_wall_s"] > 0
            ]
        self.log_steps_per_s = med(thr)
        self.log_steps_per_s_n = len([t for t in thr if isinstance(t, (int, float))])

    def solved_text(self, w: int) -> str:
        return (
            "INSTALL_ERROR" if self.install_error else f"{self.w[w]['solved']}/{self.n}"
        )

    def get(self, w: int, key: str) -> float | None:
        v = self.w.get(w, {}).get(key)
        return v if isinstance(v, (int, float)) else None


class SolveStats:
    """Every (system, threads) group, and the two like-for-like tables."""

    def __init__(self, wl: dict[str, Any]) -> None:
        runs: list[Run] = wl.get("runs") or []
        self.windows: list[int] = list(wl.get("windows") or [wl.get("window", 20)])
        self.primary = self.windows[0]
        self.sweep_factor: float | None = wl.get("sweep_factor")
        self.systems: list[str] = []
        for r in runs:
            if r["system"] not in self.systems:
                self.systems.append(r["system"])
        self.groups: dict[tuple[str, int], Group] = {}
        for s in self.systems:
            for t in sorted({run_threads(r) for r in runs if r["system"] == s}):
                rs = [r for r in runs if r["system"] == s and run_threads(r) == t]
                self.groups[(s, t)] = Group(s, t, rs, self.windows)
        self.one_thread = {s: g for (s, t), g in self.groups.items() if t == 1}
        self.whole: dict[str, Group] = {}
        for s in self.systems:
            gs = [g for (s2, _), g in self.groups.items() if s2 == s]
            if not gs:
                continue
            if (
                s == "proxima"
            ):  # threads=2 (its whole-machine setting), else the most it ran with
                self.whole[s] = next(
                    (g for g in gs if g.threads == 2), max(gs, key=lambda g: g.threads)
                )
            else:  # the fastest median time-to-solve (primary window) among the thread counts swept
                self.whole[s] = min(gs, key=sweep_key(self.primary))

    def swept(self, system: str) -> list[Group]:
        return [g for (s, _), g in self.groups.items() if s == system]


def sweep_key(primary: int) -> Callable[[Group], tuple[float, float, int]]:
    """Orders a peer's thread counts: most solved runs, then lowest median
    wall time (primary window), then fewer threads."""

    def key(g: Group) -> tuple[float, float, int]:
        wall = g.get(primary, "wall_s")
        return (
            -g.w[primary]["solved"],
            wall if wall is not None else float("inf"),
            g.threads,
        )

    return key


def solve_table(
    st: SolveStats, groups: dict[str, Group], with_threads: bool
) -> list[str]:
    ws = st.windows
    header = ["system"] + (["threads"] if with_threads else [])
    for w in ws:
        header += [
            f"solved ({w}-ep)",
            f"wall s ({w}-ep)",
            f"CPU s ({w}-ep)",
            f"env steps ({w}-ep)",
        ]
    header += [
        f"cores ({ws[0]}-ep)",
        f"CPU s / 100k steps ({ws[0]}-ep)",
        "startup s",
        "episode-log steps/s",
        "peak PSS MB",
    ]
    rows = []
    for s, g in groups.items():
        row: list[Any] = [name(s)] + ([g.threads] if with_threads else [])
        for w in ws:
            row += [
                g.solved_text(w),
                fmt(g.get(w, "wall_s")),
                fmt(g.get(w, "cpu_s")),
                fmt(g.get(w, "steps")),
            ]
        thr = fmt(g.log_steps_per_s) + (
            f" (n={g.log_steps_per_s_n})" if g.log_steps_per_s is not None else ""
        )
        row += [
            fmt(g.get(ws[0], "cores")),
            fmt(g.get(ws[0], "cpu_per_100k")),
            fmt(g.startup_s),
            thr,
            fmt(g.peak_pss_mb),
        ]
        rows.append(row)
    return [table(header, rows)]


def ratio_table(st: SolveStats, groups: dict[str, Group]) -> list[str]:
    p = groups.get("proxima")
    if p is None:
        return ["", "No proxima runs at this setting: no ratios."]
    ws = st.windows
    header = ["peer"]
    header += [f"**CPU s ({w}-ep)**" for w in ws]
    header += [f"wall ({w}-ep)" for w in ws]
    header += [f"env steps ({w}-ep)" for w in ws]
    header += ["peak PSS", "episode-log steps/s: proxima ÷ peer"]
    rows = []
    for s, g in groups.items():
        if s == "proxima":
            continue
        row: list[Any] = [
            name(s) + (f" ({g.threads} thr)" if g.threads != p.threads else "")
        ]
        row += [fmt_ratio(ratio(g.get(w, "cpu_s"), p.get(w, "cpu_s"))) for w in ws]
        row += [fmt_ratio(ratio(g.get(w, "wall_s"), p.get(w, "wall_s"))) for w in ws]
        row += [fmt_ratio(ratio(g.get(w, "steps"), p.get(w, "steps"))) for w in ws]
        row += [
            fmt_ratio(ratio(g.peak_pss_mb, p.peak_pss_mb)),
            fmt_ratio(ratio(p.log_steps_per_s, g.log_steps_per_s)),
        ]
        rows.append(row)
    if not rows:
        return []
    solved = ", ".join(f"{p.solved_text(w)} ({w}-ep)" for w in ws)
    return [
        "",
        (
            f"Peer ÷ proxima (medians of solved runs; proxima solved {solved}). "
            "N > 1 means **proxima needs N× less** (CPU s, wall, env steps, memory); the last column is "
            "proxima's training throughput ÷ the peer's:"
        ),
        "",
        table(header, rows),
    ]


def sweep_table(st: SolveStats) -> list[str]:
    ws = st.windows
    header = ["system", "threads"]
    for w in ws:
        header += [f"solved ({w}-ep)", f"wall s ({w}-ep)", f"CPU s ({w}-ep)"]
    header += [
        f"cores ({ws[0]}-ep)",
        "episode-log steps/s",
        "stopped at the sweep limit",
        "in 1b",
    ]
    rows = []
    for s in st.systems:
        for g in st.swept(s):
            row: list[Any] = [name(s), g.threads]
            for w in ws:
                row += [
                    g.solved_text(w),
                    fmt(g.get(w, "wall_s")),
                    fmt(g.get(w, "cpu_s")),
                ]
            row += [
                fmt(g.get(ws[0], "cores")),
                fmt(g.log_steps_per_s),
                len(
                    [
                        r
                        for r in g.runs
                        if r.get("sweep_limited") and r.get("stop_reason") != "solved"
                    ]
                ),
                "**yes**" if st.whole.get(s) is g else "",
            ]
            rows.append(row)
    return [table(header, rows)]


def solve_section(
    wl: dict[str, Any], nproc: Any
) -> tuple[list[str], SolveStats | None]:
    runs = wl.get("runs") or []
    lines = ["", "## 1. solve: CartPole-v1 time-to-solve", ""]
    if not runs:
        return [*lines, "No runs."], None
    st = SolveStats(wl)
    ws = st.windows
    target = wl.get("target", 475)
    maxs = wl.get("max_seconds") or {}
    windows_text = " and ".join(f"**{w}**" for w in ws)
    described = []
    for w in ws:
        d = f"`{w}-ep`: the last {w} episodes"
        if w == st.primary:
            d += ", the benchmark's primary window"
        if w == 100:
            d += ", the window of `target_return` in `configs/cartpole.toml` and of `learner train`'s stop"
        described.append(d)
    same_runs = "All come from the same runs: " if len(ws) > 1 else ""
    lines.append(
        f"Solved = the mean return of the last W finished training episodes ≥ {target}, for W = "
        f"{windows_text}; every column names its window ({'; '.join(described)}). {same_runs}bench/solve.py "
        "watches the episode log and stops a run once every window has solved"
        + (
            f" (at most {fmt(wl.get('extra_seconds'))} s after the first)"
            if wl.get("extra_seconds")
            else ""
        )
        + f". Seeds {wl.get('seeds')}, interleaved (each seed and thread count: every system once). Figures are "
        "**medians over the runs that solved that window** (n = the solved count); time limits: "
        + ", ".join(f"{s} {v} s" for s, v in maxs.items())
        + "."
    )
    lines += [
        "",
        (
            "Columns: wall s, start to the solving episode (start-up included); CPU s, user+system CPU of the whole "
            "process tree up to the solve; env steps, steps of all finished episodes up to the solve; cores, "
            "CPU s ÷ wall s (the cores a system kept busy on average); startup s, start to the first finished "
            "episode; episode-log steps/s, the training throughput measured the same way for every system: "
            "finished-episode env steps from the first finished episode to the last solve, ÷ the time between them "
            "(median over all runs with episodes, solved or not); peak PSS, the process tree's proportional set "
            "size at the primary solve (shared pages split between processes)."
        ),
    ]
    lines += [
        "",
        "### 1a. One compute thread per system",
        "",
        (
            "proxima `--set threads=1` with `RAYON_NUM_THREADS=1`: the fused backend trains both nets on the "
            "learner thread, and the sampler thread alternates with it (`actors.sync`). Peers `--threads 1`: "
            "`torch.set_num_threads(1)` and `OMP_NUM_THREADS=1` (MKL, OpenBLAS too) in every process. Sample Factory "
            "and RLlib still run several processes (rollout workers, env runners), so they can keep more than one "
            "core busy: compare CPU s, the headline, and see the cores column."
        ),
        "",
    ]
    if st.one_thread:
        lines += solve_table(st, st.one_thread, with_threads=False)
        lines += ratio_table(st, st.one_thread)
    else:
        lines.append("No runs with 1 thread (see --solve-threads).")
    lines += [
        "",
        f"### 1b. The whole machine ({nproc} CPUs) for every system",
        "",
        (
            "proxima `--set threads=2` with `RAYON_NUM_THREADS=2` (its fused backend trains the actor and the critic "
            "on one thread each; the sampler thread alternates with them). Each peer at the thread count that "
            "solved fastest for it in this run (most runs solved, then lowest median wall time in the "
            f"{st.primary}-episode window; the sweep is in 1c). Picking the best of the counts tried, on the same "
            "runs, favours the peers slightly."
        ),
        "",
    ]
    lines += solve_table(st, st.whole, with_threads=True)
    lines += ratio_table(st, st.whole)
    lines += ["", "### 1c. Thread sweep (every system, every thread count run)", ""]
    if st.sweep_factor:
        lines += [
            (
                f"A run at a thread count other than the first one tried is stopped after {fmt(st.sweep_factor)}× "
                f"the whole run time of the same seed at the first count (at least "
                f"{fmt(wl.get('sweep_min_seconds'))} s): such a run cannot be the fastest, and the limit keeps a "
                "slow setting from using up the system's time limit. Those runs count as unsolved here."
            ),
            "",
        ]
    lines += sweep_table(st)
    fails = []
    for g in st.groups.values():
        for r in g.runs:
            for w in ws:
                x = run_window(r, w, st.primary)
                if x.get("solved"):
                    continue
                if w != st.primary and not run_window(r, st.primary, st.primary).get(
                    "solved"
                ):
                    continue  # listed under the primary window
                fails.append((g, r, w, x))
    if fails:
        lines += ["", "Failed / unsolved runs:", ""]
        for g, r, w, x in fails:
            best = x.get("best_mean") if w != st.primary else r.get("best_mean")
            extra = f" (best {w}-episode mean {fmt(best)})" if best is not None else ""
            err = x.get("error") or r.get("error")
            if r.get("sweep_limited"):
                err = f"{err} (sweep limit: {fmt(st.sweep_factor)}× the same seed's run at the first thread count)"
            lines.append(
                f"- {g.system} threads={g.threads} seed {r.get('seed')}, {w}-ep: {one_line(err)}{extra}"
            )
            if w == st.primary:
                lines += tail_block(r.get("stderr_tail"), 6)
    return lines, st


# --------------------------------------------------------------------------
# 2. env, 3. e2e


def env_section(wl: dict[str, Any]) -> tuple[list[str], dict[str, float | None]]:
    runs = wl.get("runs") or []
    lines = ["", "## 2. env: raw environment steps/s, one pinned core", ""]
    pinned = wl.get("pinned_cpu")
    lines.append(
        f"proxima: `proxima-bench env` ({fmt(wl.get('steps_proxima'))} steps per run); gymnasium: "
        f"`gym.make(ENV)` with its default wrappers, bench/gym_env_throughput.py in the sb3 venv "
        f"({fmt(wl.get('steps_gymnasium'))} steps per run). Random actions drawn before timing, "
        f"resets inside the timing. Median of {wl.get('reps')} repetitions"
        + (f", both pinned to CPU {pinned} (taskset)." if pinned is not None else ".")
    )
    lines.append("")
    rows = []
    summary = {}
    for env_id in wl.get("envs") or []:
        ours = [
            out(r, "steps_per_s")
            for r in ok_runs(runs)
            if r["impl"] == "proxima" and r["env"] == env_id
        ]
        gym = [
            out(r, "steps_per_s")
            for r in ok_runs(runs)
            if r["impl"] == "gymnasium" and r["env"] == env_id
        ]
        mo, mg = med(ours), med(gym)
        summary[env_id] = ratio(mo, mg)
        rows.append(
            [
                env_id,
                f"{fmt(mo)} (n={len(ours)})",
                f"{fmt(mg)} (n={len(gym)})",
                fmt_ratio(ratio(mo, mg)),
            ]
        )
    lines.append(
        table(
            ["env", "proxima steps/s", "gymnasium steps/s", "proxima ÷ gymnasium"], rows
        )
    )
    lines += failures(runs, lambda r: f"{r['impl']} {r['env']} rep {r['rep']}")
    return lines, summary


def e2e_section(wl: dict[str, Any]) -> tuple[list[str], dict[tuple[Any, Any], Run]]:
    runs = wl.get("runs") or []
    lines = ["", "## 3. e2e: proxima's end-to-end training throughput, CartPole-v1", ""]
    lines.append(
        "Env steps trained on per second, from the learner's progress.csv: (env_steps at the last row − at the "
        "first) ÷ (wall_seconds at the last row − at the first), i.e. the steady part after the first update. "
        f"{fmt(wl.get('total_steps'))} env steps per run, no early stop, `threads = {wl.get('threads', 2)}`"
        + (
            f", `RAYON_NUM_THREADS={wl['rayon_num_threads']}`. "
            if wl.get("rayon_num_threads")
            else ". "
        )
        + "gRPC: `learner serve` + N `actor` processes over loopback; in-process: `learner train --num-actors N`. "
        "Peak RSS: the process's max resident set (ru_maxrss / VmHWM); actor column = the largest of the N "
        "actors. CPU s: user+system of the whole run. One run each. This is proxima's own scaling figure; the "
        "peers have no such measurement, so throughput against them is compared in section 1 (episode-log "
        "steps/s, the same measurement for every system)."
    )
    lines.append("")
    by = {(r.get("mode"), r.get("actors")): r for r in runs}
    rows = []
    for n in wl.get("actors") or []:
        g, loc = by.get(("grpc", n)) or {}, by.get(("inprocess", n)) or {}

        def thr(r: Run) -> str:
            return (
                fmt(r.get("steps_per_s")) if r.get("ok") else ("FAILED" if r else "–")
            )

        g_cpu = None
        if (g.get("learner") or {}).get("cpu_s") is not None:
            g_cpu = g["learner"]["cpu_s"] + (g.get("actor_cpu_s") or 0)
        rows.append(
            [
                n,
                thr(g),
                thr(loc),
                fmt(g.get("learner_peak_rss_mb")),
                fmt(loc.get("learner_peak_rss_mb")),
                fmt(g.get("actor_peak_rss_mb")),
                fmt(g_cpu),
                fmt((loc.get("learner") or {}).get("cpu_s")),
            ]
        )
    header = [
        "actors",
        "gRPC steps/s",
        "in-process steps/s",
        "gRPC learner peak RSS MB",
        "in-process peak RSS MB",
        "actor peak RSS MB (max)",
        "gRPC CPU s (learner+actors)",
        "in-process CPU s",
    ]
    lines.append(table(header, rows))
    notes = []
    for mode, label in (("grpc", "gRPC"), ("inprocess", "in-process")):
        a1, a4 = by.get((mode, 1)), by.get((mode, 4))
        if a1 and a4 and a1.get("ok") and a4.get("ok"):
            r = ratio(a4.get("steps_per_s"), a1.get("steps_per_s"))
            verdict = "≥" if r is not None and r >= 1 else "<"
            notes.append(
                f"{label}: 4 actors {verdict} 1 actor ({fmt(a4.get('steps_per_s'))} vs "
                f"{fmt(a1.get('steps_per_s'))} steps/s, {fmt_ratio(r)})"
            )
    if notes:
        lines += ["", "4-actor vs 1-actor throughput: " + "; ".join(notes) + "."]
    lines += failures(
        runs,
        lambda r: f"{r.get('mode')} {r.get('actors')} actor(s)",
        extra="actor_stderr_tail",
    )
    return lines, by


# --------------------------------------------------------------------------
# 4. update, 5. ingest


def update_threads(r: Run) -> int:
    """Threads of an update run (first-schema runs: fused 2, candle 1, as labelled then)."""
    t = r.get("threads")
    if isinstance(t, int):
        return t
    return 2 if r.get("backend") == "fused" else 1


def used(r: Run | None) -> str:
    """Measured threads of an update run: busy threads (cores kept busy)."""
    u = out(r, "threads_used") if r and r.get("ok") else None
    if not isinstance(u, dict) or not u.get("available"):
        return "–"
    return f"{u.get('busy_threads')} ({fmt(u.get('cores'), 2)})"


def update_section(wl: dict[str, Any]) -> tuple[list[str], dict[int, list[float]]]:
    runs = wl.get("runs") or []
    lines = ["", "## 4. update: learner update throughput", ""]
    note = next((out(r, "floor_note") for r in runs if out(r, "floor_note")), None)
    threads = sorted({update_threads(r) for r in runs}) or [1, 2]
    lines.append(
        "`proxima-bench update --backend B --minibatch M --threads T`, run with `RAYON_NUM_THREADS=T`: PPO samples "
        "processed per second by the update (samples = batch × epochs; timed for at least "
        f"{fmt(wl.get('min_seconds'))} s); one run each. The fused backend's `--threads` is its own pool (1: no "
        "pool, both nets on the calling thread; 2: one per net); candle's CPU matmuls use rayon's global pool, "
        "sized by `RAYON_NUM_THREADS`. Fused ÷ candle is compared at equal thread counts. `busy (cores)`: "
        "measured, not configured: threads that were on a CPU for ≥ 10% of the timed wall time, and the "
        "process's CPU time ÷ wall time (`/proc/self/task/*/schedstat`). fwd+bwd bound: `floor_samples_per_s`, "
        "the samples/s of the model's own forward and backward passes alone on one thread, the cost floor of an "
        "update as the throughput one thread cannot exceed"
        + (f" ({note})" if note else "")
        + "."
    )
    lines.append("")
    header = ["minibatch", "batch"]
    for t in threads:
        header += [
            f"fused {t} thr samples/s",
            f"candle {t} thr samples/s",
            f"fused ÷ candle ({t} thr)",
            f"busy (cores) fused / candle, {t} thr",
        ]
    header.append("fwd+bwd bound (1 thread)")
    rows = []
    ratios: dict[int, list[float]] = {t: [] for t in threads}
    for m in wl.get("minibatches") or []:
        row: list[Any] = [m]
        batch = None
        floor = None
        cells: list[Any] = []
        for t in threads:

            def find(backend: str, t: int = t, m: Any = m) -> Run | None:
                return next(
                    (
                        r
                        for r in runs
                        if r.get("minibatch") == m
                        and r.get("backend") == backend
                        and update_threads(r) == t
                    ),
                    None,
                )

            f, c = find("fused"), find("candle")

            def sps(r: Run | None) -> str:
                if r is None:
                    return "–"
                return fmt(out(r, "samples_per_s")) if r.get("ok") else "FAILED"

            fv = out(f, "samples_per_s") if f and f.get("ok") else None
            cv = out(c, "samples_per_s") if c and c.get("ok") else None
            rv = ratio(fv, cv)
            if rv is not None:
                ratios[t].append(rv)
            batch = batch or out(f, "batch") or out(c, "batch")
            if t == 1 or floor is None:
                floor = out(f, "floor_samples_per_s") or floor
            cells += [sps(f), sps(c), fmt_ratio(rv), f"{used(f)} / {used(c)}"]
        row += [fmt(batch), *cells, fmt(floor)]
        rows.append(row)
    lines.append(table(header, rows))
    lines += failures(
        runs,
        lambda r: (
            f"{r.get('backend')} threads={update_threads(r)} minibatch {r.get('minibatch')}"
        ),
    )
    return lines, ratios


def ingest_section(wl: dict[str, Any]) -> list[str]:
    runs = wl.get("runs") or []
    lines = ["", "## 5. ingest: gRPC rollout ingestion", ""]
    lines.append(
        f"`proxima-bench ingest --clients C --seconds {wl.get('seconds')}`; one run each."
    )
    lines.append("")
    rows = []
    for r in runs:
        if r.get("ok"):
            rows.append(
                [
                    r.get("clients"),
                    fmt(out(r, "rollouts_per_s")),
                    fmt(out(r, "env_steps_per_s")),
                    fmt(out(r, "mb_per_s")),
                    fmt(out(r, "seconds")),
                ]
            )
        else:
            rows.append([r.get("clients"), "FAILED", "–", "–", "–"])
    lines.append(
        table(["clients", "rollouts/s", "env steps/s", "MB/s", "seconds"], rows)
    )
    lines += failures(runs, lambda r: f"{r.get('clients')} client(s)")
    return lines


PROFILE_PARTS = (
    ("env_step", "env step"),
    ("vector_env_bookkeeping", "vector env"),
    ("inference", "inference"),
    ("collect_other", "rollout arrays"),
    ("encode", "encode"),
    ("wait_for_submit", "wait for submit"),
    ("wait_for_policy", "wait for policy"),
    ("other", "other"),
)


def python_section(wl: dict[str, Any]) -> list[str]:
    runs = wl.get("runs") or []
    lines = ["", "## 6. python: actors against the raw env they step", ""]
    lines.append(
        "raw: for the Python actor `bench/python_actor_bench.py raw`, the actor's vector env (`SyncVectorEnv`, "
        "SAME_STEP autoreset; ALE ids with `--atari`'s preprocessing) stepped with pre-drawn random actions, one "
        "process; for the Rust actor `proxima-bench env`, one env. pipeline: `learner serve` (fused, 1 thread; "
        "configs/atari.toml for Pong, configs/minatar_cnn.toml for MinAtar) and one `proxima-actor` (Python) or "
        "`actor` (Rust) process with as many envs and `--policy-wait-ms 0`; env steps/s of rollouts "
        f"the learner answered, over {wl.get('seconds')} s after a warm-up; cores = CPU seconds per second. "
        "Profile: the actor's main thread under cProfile (its own run; shares of the profiled time; the "
        "submission runs on a thread of its own and counts only as the main thread's wait for it)."
    )
    lines.append("")
    rows, prof_rows = [], []
    for env_id in wl.get("envs") or []:
        for n in wl.get("num_envs") or [8]:
            mine = [
                r for r in runs if r.get("env") == env_id and r.get("num_envs", 8) == n
            ]
            raw = next((r for r in mine if r.get("kind") == "raw"), None)
            pipe = next((r for r in mine if r.get("kind") == "pipeline"), None)
            prof = next((r for r in mine if r.get("kind") == "profile"), None)
            raw_sps = out(raw, "steps_per_s") if raw and raw.get("ok") else None
            pipe_sps = pipe.get("steps_per_s") if pipe and pipe.get("ok") else None
            share = ratio(pipe_sps, raw_sps)
            rows.append(
                [
                    env_id,
                    (pipe or raw or {}).get("actor", "python"),
                    n,
                    fmt(raw_sps),
                    fmt(pipe_sps),
                    (f"{share:.0%}" if share >= 0.01 else f"{share:.2%}")
                    if share is not None
                    else "–",
                    fmt((pipe or {}).get("actor_cores")),
                    fmt((pipe or {}).get("learner_cores")),
                ]
            )
            shares = ((prof or {}).get("profile") or {}).get("share") or {}
            if shares:
                prof_rows.append(
                    [env_id, n]
                    + [
                        f"{shares[k]:.0%}" if shares.get(k) is not None else "–"
                        for k, _ in PROFILE_PARTS
                    ]
                )
    header = [
        "env",
        "actor",
        "envs",
        "raw env steps/s",
        "pipeline steps/s",
        "pipeline ÷ raw",
    ]
    lines.append(table(header + ["actor cores", "learner cores"], rows))
    if prof_rows:
        labels = [label for _, label in PROFILE_PARTS]
        lines += ["", table(["env", "envs", *labels], prof_rows)]
    lines += failures(
        runs, lambda r: f"{r.get('env')} {r.get('num_envs')} envs {r.get('kind')}"
    )
    return lines


def mujoco_section(wl: dict[str, Any]) -> list[str]:
    runs = wl.get("runs") or []
    window = wl.get("window")
    lines = [
        "",
        "## 7. mujoco: time to a return threshold, Python actors against SB3",
        "",
    ]
    lines.append(
        f"`bench/solve.py` on the episode log: the first moment the mean return of the last {window} finished "
        f"training episodes reaches the threshold. proxima-py: `learner serve` and {wl.get('actors')} "
        "`proxima-actor` processes with one env each (configs/halfcheetah.toml, configs/hopper.toml); sb3: "
        "`bench/peers/sb3_ppo.py --config` (one process, torch on every core); both with the config's settings "
        "(HalfCheetah's are the RL Zoo's) and the whole machine. Medians over the seeds that reached the threshold."
    )
    lines.append("")
    rows = []
    for env_id, _config, threshold in wl.get("tasks") or []:
        systems = wl.get("systems") or []
        mine_by = {
            s: [r for r in runs if r.get("env") == env_id and r.get("system") == s]
            for s in systems
        }
        walls = {
            s: med(r.get("wall_s") for r in ok_runs(m)) for s, m in mine_by.items()
        }
        for system in systems:
            mine = mine_by[system]
            good = ok_runs(mine)
            rows.append(
                [
                    env_id,
                    f"{threshold:g}",
                    name(system),
                    f"{len(good)}/{len(mine)}",
                    fmt(walls[system]),
                    fmt(med(r.get("cpu_s") for r in good)),
                    fmt(med(r.get("steps") for r in good)),
                    fmt(med(r.get("log_steps_per_s") for r in good)),
                    fmt_ratio(ratio(walls.get("sb3"), walls[system]))
                    if system != "sb3"
                    else "–",
                ]
            )
    header = [
        "env",
        "threshold",
        "system",
        "reached",
        "wall s",
        "CPU s",
        "env steps",
        "env steps/s",
    ]
    lines.append(table(header + ["SB3 wall ÷ this"], rows))
    lines += failures(
        runs, lambda r: f"{r.get('env')} {r.get('system')} seed {r.get('seed')}"
    )
    return lines


def failures(
    runs: list[Run], label: Callable[[Run], str], extra: str | None = None
) -> list[str]:
    bad = [r for r in runs if not r.get("ok")]
    if not bad:
        return []
    lines = ["", "Failures:", ""]
    for r in bad:
        lines.append(
            f"- {label(r)}: {one_line(r.get('error'))}"
            + (f" — `{r['cmd']}`" if r.get("cmd") else "")
        )
        lines += tail_block(r.get("stderr_tail"), 6)
        if extra and r.get(extra):
            lines += tail_block(r.get(extra), 4)
    return lines


# --------------------------------------------------------------------------
# Summary


def solve_summary(st: SolveStats, nproc: Any) -> list[str]:
    lines = []
    ws = st.windows
    settings = (
        ("one compute thread each (1a)", st.one_thread),
        (f"whole machine, {nproc} CPUs (1b)", st.whole),
    )
    for label, groups in settings:
        p = groups.get("proxima")
        if p is None or not p.w[ws[0]]["solved"]:
            lines.append(
                f"- **solve, {label}**: proxima solved {p.solved_text(ws[0]) if p else '0/0'}; no ratios."
            )
            continue
        own = "; ".join(
            f"{w}-ep window {fmt(p.get(w, 'wall_s'))} s wall / {fmt(p.get(w, 'cpu_s'))} CPU s "
            f"(solved {p.solved_text(w)})"
            for w in ws
        )
        parts = []
        for s, g in groups.items():
            if s == "proxima":
                continue
            if g.install_error:
                parts.append(f"{name(s)}: not installed")
                continue
            cpu = " / ".join(
                fmt_ratio(ratio(g.get(w, "cpu_s"), p.get(w, "cpu_s"))) for w in ws
            )
            wall = " / ".join(
                fmt_ratio(ratio(g.get(w, "wall_s"), p.get(w, "wall_s"))) for w in ws
            )
            thr = f", {g.threads} thr" if g.threads != p.threads else ""
            parts.append(
                f"{name(s)}{thr} **{cpu} CPU s**, {wall} wall (solved {g.solved_text(ws[0])})"
            )
        win = " / ".join(f"{w}-ep" for w in ws)
        lines.append(
            f"- **solve, {label}** (proxima threads={p.threads}: {own}). Peer ÷ proxima medians, "
            f"{win} windows: " + ("; ".join(parts) or "no peers") + "."
        )
    return lines


def throughput_summary(st: SolveStats) -> list[str]:
    lines = []
    for label, groups in (
        ("1 thread each", st.one_thread),
        ("whole machine", st.whole),
    ):
        p = groups.get("proxima")
        if p is None:
            continue
        parts = []
        for peer in ("sb3", "sf"):
            g = groups.get(peer)
            if g is None or g.log_steps_per_s is None:
                parts.append(f"{name(peer)}: no data")
                continue
            parts.append(
                f"{name(peer)} ({g.threads} thr) {fmt(g.log_steps_per_s)} (n={g.log_steps_per_s_n}): "
                f"{fmt_ratio(ratio(p.log_steps_per_s, g.log_steps_per_s))}"
            )
        lines.append(
            f"- **training throughput, {label}**, the same measurement for every system (episode-log env "
            f"steps/s over each solve run, median): proxima (threads={p.threads}) {fmt(p.log_steps_per_s)} "
            f"(n={p.log_steps_per_s_n}); proxima ÷ " + "; ".join(parts) + "."
        )
    return lines


def summary_section(
    res: dict[str, Any],
    st: SolveStats | None,
    env_ratios: dict[str, float | None],
    e2e_by: dict[tuple[Any, Any], Run],
    update_ratios: dict[int, list[float]] | None,
) -> list[str]:
    lines = ["", "## Summary", ""]
    wls = res.get("workloads") or {}
    nproc = (res.get("environment") or {}).get("nproc", "?")
    if st is not None:
        lines += solve_summary(st, nproc)
        lines += throughput_summary(st)
    if env_ratios:
        lines.append(
            "- **env**: proxima ÷ gymnasium steps/s: "
            + ", ".join(f"{e} {fmt_ratio(r)}" for e, r in env_ratios.items())
            + "."
        )
    if e2e_by:
        best = max(
            (r for r in e2e_by.values() if r.get("ok")),
            key=lambda r: r.get("steps_per_s") or 0,
            default=None,
        )
        if best:
            lines.append(
                f"- **e2e** (proxima only, progress.csv): best {fmt(best.get('steps_per_s'))} env steps/s "
                f"({best.get('mode')}, {best.get('actors')} actors)."
            )
        else:
            lines.append("- **e2e**: no successful run.")
    if update_ratios:
        parts = []
        for t, rs in update_ratios.items():
            if rs:
                parts.append(
                    f"{t} thread(s) each {fmt_ratio(min(rs))}–{fmt_ratio(max(rs))}"
                )
        if parts:
            lines.append(
                "- **update**: fused ÷ candle samples/s at equal threads, over the minibatch sizes: "
                + "; ".join(parts)
                + "."
            )
    for wname in ("update", "ingest"):
        wl = wls.get(wname)
        if wl is not None:
            runs = wl.get("runs") or []
            lines.append(
                f"- **{wname}**: {len(ok_runs(runs))}/{len(runs)} runs ok (tables below)."
            )
    crashed = [n for n, w in wls.items() if w.get("crash")]
    if crashed:
        lines.append(
            f"- Workloads that crashed in bench/run.py: {', '.join(crashed)} (traceback in the JSON)."
        )
    return lines


def render(res: dict[str, Any]) -> str:
    wls = res.get("workloads") or {}
    nproc = (res.get("environment") or {}).get("nproc", "?")
    body: list[str] = []
    st: SolveStats | None = None
    env_ratios: dict[str, float | None] = {}
    e2e_by: dict[tuple[Any, Any], Run] = {}
    update_ratios: dict[int, list[float]] | None = None
    if "solve" in wls:
        sec, st = solve_section(wls["solve"], nproc)
        body += sec
    if "env" in wls:
        sec, env_ratios = env_section(wls["env"])
        body += sec
    if "e2e" in wls:
        sec, e2e_by = e2e_section(wls["e2e"])
        body += sec
    if "update" in wls:
        sec, update_ratios = update_section(wls["update"])
        body += sec
    if "ingest" in wls:
        body += ingest_section(wls["ingest"])
    if "python" in wls:
        body += python_section(wls["python"])
    if "mujoco" in wls:
        body += mujoco_section(wls["mujoco"])
    for wname, wl in wls.items():
        if wl.get("crash"):
            body += [
                "",
                f"Workload {wname} crashed in bench/run.py:",
                *tail_block(wl["crash"], 8),
            ]
    lines = (
        header_section(res)
        + summary_section(res, st, env_ratios, e2e_by, update_ratios)
        + body
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print((__doc__ or "").strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        res = json.load(f)
    sys.stdout.write(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
