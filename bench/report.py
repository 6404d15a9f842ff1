#!/usr/bin/env python3
"""Markdown summary of a bench/run.py results file.

    python3 bench/report.py bench/results/20260101T120000Z.json [> summary.md]

Standard library only. bench/run.py calls render() itself at the end of a
run; this re-renders a saved (or partial, interrupted) JSON. All aggregates
are computed here from the raw per-run entries, so the JSON holds only
measurements.
"""

import json
import statistics
import sys

SYSTEM_NAMES = {"proxima": "proxima", "sb3": "SB3 (+Zoo)", "cleanrl": "CleanRL",
                "sf": "Sample Factory", "rllib": "RLlib"}


# --------------------------------------------------------------------------
# Helpers

def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(x, digits=None):
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


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def one_line(text, limit=300):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def tail_block(text, lines=8):
    text = (text or "").rstrip()
    if not text:
        return []
    body = "\n".join(text.splitlines()[-lines:])
    return ["", "  ```", *("  " + ln for ln in body.splitlines()), "  ```"]


def ok_runs(runs):
    return [r for r in runs if r.get("ok")]


def out(r, key):
    """A field of a run's JSON output (proxima-bench / gym script)."""
    return ((r or {}).get("output") or {}).get(key)


# --------------------------------------------------------------------------
# Sections

def header_section(res):
    env = res.get("environment") or {}
    opts = res.get("options") or {}
    lines = [f"# proxima benchmark {res.get('timestamp_utc', '')}", ""]
    if not res.get("finished"):
        lines += ["**Incomplete run** (" + ("interrupted" if res.get("interrupted") else "not finished")
                  + "): the tables show what was measured.", ""]
    commit = env.get("git_commit") or "?"
    dirty = " + uncommitted changes" if env.get("git_dirty") else ""
    lines.append(f"- Machine: {env.get('cpu_model', '?')}, {env.get('nproc', '?')} CPUs usable, "
                 f"{env.get('mem_total_gb', '?')} GB RAM, kernel {env.get('kernel', '?')}, "
                 f"load at start {' '.join(env.get('loadavg_at_start') or []) or '?'}")
    lines.append(f"- Code: git {commit[:12]}{dirty}; {env.get('rustc') or 'rustc ?'}; "
                 f"python {env.get('python', '?')}")
    bins = env.get("binaries") or {}
    missing = [b for b, i in bins.items() if not i.get("present")]
    if missing:
        lines.append(f"- Missing binaries: {', '.join(missing)}")
    build = res.get("build")
    if build and not build.get("skipped"):
        cargo = build.get("cargo") or {}
        lines.append(f"- Build: cargo {'ok' if cargo.get('ok') else 'FAILED: ' + str(cargo.get('error'))}"
                     + (f"; setup_peers {'ok' if build['setup_peers'].get('ok') else 'had failures'}"
                        if build.get("setup_peers") else ""))
    elif build and build.get("skipped"):
        lines.append("- Build: skipped (--skip-build): existing binaries and venvs")
    lines.append(f"- Options: seeds {opts.get('seeds')}, quick {opts.get('quick')}, "
                 f"workloads {','.join(opts.get('only') or [])}, peers {','.join(opts.get('peers') or [])}; "
                 f"elapsed {fmt(res.get('elapsed_s'))} s")
    peers = env.get("peers") or {}
    for name, info in peers.items():
        if info.get("installed"):
            vers = ", ".join(f"{k} {v}" for k, v in sorted((info.get("versions") or {}).items()))
            lines.append(f"- Peer {name}: {vers or 'installed'}")
        else:
            lines.append(f"- Peer {name}: **{info.get('error', 'not installed')}**")
            lines += tail_block(info.get("error_tail"), 10)
    return lines


def solve_stats(runs):
    """Per-system aggregates of the solve runs."""
    systems = []
    for r in runs:
        if r["system"] not in systems:
            systems.append(r["system"])
    stats = {}
    for s in systems:
        rs = [r for r in runs if r["system"] == s]
        solved = [r for r in rs if r.get("solved")]
        # Training throughput from every run that had finished episodes.
        thr = [r["steps"] / r["train_wall_s"] for r in rs
               if r.get("steps") and r.get("train_wall_s") and r["train_wall_s"] > 0]
        stats[s] = {
            "n": len(rs), "solved": len(solved),
            "install_error": any(r.get("install_error") for r in rs),
            "wall_s": med([r.get("wall_s") for r in solved]),
            "train_wall_s": med([r.get("train_wall_s") for r in solved]),
            "startup_s": med([r.get("startup_s") for r in solved]),
            "cpu_s": med([r.get("cpu_s") for r in solved]),
            "steps": med([r.get("steps") for r in solved]),
            "cpu_per_100k": med([r["cpu_s"] / r["steps"] * 1e5 for r in solved
                                 if r.get("steps") and r.get("cpu_s") is not None]),
            "peak_rss_mb": med([r.get("peak_rss_mb") for r in solved]),
            "peak_pss_mb": med([r.get("peak_pss_mb") for r in solved]),
            "train_steps_per_s": med(thr), "train_steps_per_s_n": len(thr),
            "failures": [r for r in rs if not r.get("solved")],
        }
    return stats


def solve_section(wl):
    runs = wl.get("runs") or []
    lines = ["", "## 1. solve: CartPole-v1 time-to-solve", ""]
    if not runs:
        return lines + ["No runs."], {}
    st = solve_stats(runs)
    maxs = wl.get("max_seconds") or {}
    lines.append(f"Solved = mean return of the last {wl.get('window', 20)} finished episodes ≥ "
                 f"{wl.get('target', 475)} (bench/solve.py). Seeds {wl.get('seeds')}, run interleaved "
                 "(each seed: every system once). All figures are **medians over the solved runs only** "
                 "(n = the solved count); time limits: "
                 + ", ".join(f"{s} {v} s" for s, v in maxs.items()) + ".")
    lines.append("")
    rows = []
    for s, x in st.items():
        solved = "INSTALL_ERROR" if x["install_error"] else f"{x['solved']}/{x['n']}"
        rows.append([SYSTEM_NAMES.get(s, s), solved, fmt(x["wall_s"]), fmt(x["train_wall_s"]),
                     fmt(x["startup_s"]), fmt(x["cpu_s"]), fmt(x["steps"]), fmt(x["cpu_per_100k"]),
                     fmt(x["train_steps_per_s"]) + (f" (n={x['train_steps_per_s_n']})"
                                                    if x["train_steps_per_s"] is not None else ""),
                     fmt(x["peak_rss_mb"]), fmt(x["peak_pss_mb"])])
    lines.append(table(["system", "solved", "wall s", "train wall s", "startup s", "CPU s", "env steps",
                        "CPU s / 100k steps", "train steps/s", "peak RSS MB", "peak PSS MB"], rows))
    lines += ["",
              "wall s: start to the solving episode; startup s: start to the first finished episode; "
              "train wall s = wall − startup; CPU s: user+system of the whole process tree; env steps: "
              "steps of all finished episodes up to the solve; CPU s / 100k steps: median of cpu_s/steps·1e5; "
              "train steps/s: median of steps / train wall s over all runs with finished episodes, solved or "
              "not (n given); peak RSS sums the tree's processes (shared pages of forked workers counted "
              "per process), peak PSS splits them."]
    p = st.get("proxima")
    peer_rows = []
    for s, x in st.items():
        if s == "proxima":
            continue
        peer_rows.append([SYSTEM_NAMES.get(s, s), f"{x['solved']}/{x['n']}",
                          fmt_ratio(ratio(x["wall_s"], p and p["wall_s"])),
                          fmt_ratio(ratio(x["train_wall_s"], p and p["train_wall_s"])),
                          fmt_ratio(ratio(x["cpu_s"], p and p["cpu_s"])),
                          fmt_ratio(ratio(x["steps"], p and p["steps"])),
                          fmt_ratio(ratio(x["peak_pss_mb"], p and p["peak_pss_mb"]))])
    if peer_rows:
        lines += ["", f"Peer ÷ proxima (medians of solved runs; proxima solved "
                      f"{p['solved'] if p else 0}/{p['n'] if p else 0}). "
                      "A value N > 1 means **proxima is N× faster / uses N× less**:", ""]
        lines.append(table(["peer", "peer solved", "wall", "train wall", "CPU s", "env steps", "PSS"],
                           peer_rows))
    fails = [(s, r) for s, x in st.items() for r in x["failures"]]
    if fails:
        lines += ["", "Failed / unsolved runs:", ""]
        for s, r in fails:
            extra = ""
            if r.get("best_mean") is not None:
                extra = f" (best 20-episode mean {fmt(r['best_mean'])}, {fmt(r.get('steps'))} steps)"
            lines.append(f"- {s} seed {r.get('seed')}: {one_line(r.get('error'))}{extra}")
            lines += tail_block(r.get("stderr_tail"), 6)
    return lines, st


def env_section(wl):
    runs = wl.get("runs") or []
    lines = ["", "## 2. env: raw environment steps/s, one pinned core", ""]
    pinned = wl.get("pinned_cpu")
    lines.append(f"proxima: `proxima-bench env` ({fmt(wl.get('steps_proxima'))} steps per run); gymnasium: "
                 f"`gym.make(ENV)` with its default wrappers, bench/gym_env_throughput.py in the sb3 venv "
                 f"({fmt(wl.get('steps_gymnasium'))} steps per run). Random actions drawn before timing, "
                 f"resets inside the timing. Median of {wl.get('reps')} repetitions"
                 + (f", both pinned to CPU {pinned} (taskset)." if pinned is not None else "."))
    lines.append("")
    rows = []
    summary = {}
    for env_id in wl.get("envs") or []:
        ours = [out(r, "steps_per_s") for r in ok_runs(runs) if r["impl"] == "proxima" and r["env"] == env_id]
        gym = [out(r, "steps_per_s") for r in ok_runs(runs) if r["impl"] == "gymnasium" and r["env"] == env_id]
        mo, mg = med(ours), med(gym)
        summary[env_id] = ratio(mo, mg)
        rows.append([env_id, f"{fmt(mo)} (n={len(ours)})", f"{fmt(mg)} (n={len(gym)})", fmt_ratio(ratio(mo, mg))])
    lines.append(table(["env", "proxima steps/s", "gymnasium steps/s", "proxima ÷ gymnasium"], rows))
    lines += failures(runs, lambda r: f"{r['impl']} {r['env']} rep {r['rep']}")
    return lines, summary


def e2e_section(wl):
    runs = wl.get("runs") or []
    lines = ["", "## 3. e2e: end-to-end training throughput, CartPole-v1", ""]
    lines.append(f"Env steps trained on per second, from the learner's progress.csv: (env_steps at the last "
                 f"row − at the first) ÷ (wall_seconds at the last row − at the first), i.e. the steady part "
                 f"after the first update. {fmt(wl.get('total_steps'))} env steps per run, no early stop. "
                 "gRPC: `learner serve` + N `actor` processes over loopback; in-process: `learner train "
                 "--num-actors N`. Peak RSS: the process's max resident set (ru_maxrss / VmHWM); actor column "
                 "= the largest of the N actors. CPU s: user+system of the whole run. One run each.")
    lines.append("")
    by = {(r.get("mode"), r.get("actors")): r for r in runs}
    rows = []
    for n in wl.get("actors") or []:
        g, l = by.get(("grpc", n)) or {}, by.get(("inprocess", n)) or {}

        def thr(r):
            return fmt(r.get("steps_per_s")) if r.get("ok") else ("FAILED" if r else "–")
        g_cpu = None
        if (g.get("learner") or {}).get("cpu_s") is not None:
            g_cpu = g["learner"]["cpu_s"] + (g.get("actor_cpu_s") or 0)
        rows.append([n, thr(g), thr(l), fmt(g.get("learner_peak_rss_mb")), fmt(l.get("learner_peak_rss_mb")),
                     fmt(g.get("actor_peak_rss_mb")), fmt(g_cpu), fmt((l.get("learner") or {}).get("cpu_s"))])
    lines.append(table(["actors", "gRPC steps/s", "in-process steps/s", "gRPC learner peak RSS MB",
                        "in-process peak RSS MB", "actor peak RSS MB (max)", "gRPC CPU s (learner+actors)",
                        "in-process CPU s"], rows))
    notes = []
    for mode, label in (("grpc", "gRPC"), ("inprocess", "in-process")):
        a1, a4 = by.get((mode, 1)), by.get((mode, 4))
        if a1 and a4 and a1.get("ok") and a4.get("ok"):
            r = ratio(a4.get("steps_per_s"), a1.get("steps_per_s"))
            verdict = "≥" if r is not None and r >= 1 else "<"
            notes.append(f"{label}: 4 actors {verdict} 1 actor ({fmt(a4.get('steps_per_s'))} vs "
                         f"{fmt(a1.get('steps_per_s'))} steps/s, {fmt_ratio(r)})")
    if notes:
        lines += ["", "4-actor vs 1-actor throughput: " + "; ".join(notes) + "."]
    lines += failures(runs, lambda r: f"{r.get('mode')} {r.get('actors')} actor(s)", extra="actor_stderr_tail")
    return lines, by


def update_section(wl):
    runs = wl.get("runs") or []
    lines = ["", "## 4. update: learner update throughput", ""]
    note = next((out(r, "floor_note") for r in runs if out(r, "floor_note")), None)
    lines.append("`proxima-bench update --backend B --minibatch M`: PPO samples processed per second by the "
                 "update (samples = batch × epochs); one run each. fwd+bwd bound: `floor_samples_per_s`, the "
                 "samples/s of the model's own forward and backward passes alone on one thread, i.e. the cost "
                 "floor of an update expressed as the throughput one thread cannot exceed"
                 + (f" ({note})" if note else "") + "; the fused backend runs the actor and critic nets on "
                 "two threads, so it can pass it.")
    lines.append("")
    rows = []
    for m in wl.get("minibatches") or []:
        cells = {}
        for b in wl.get("backends") or []:
            r = next((r for r in runs if r.get("minibatch") == m and r.get("backend") == b), None)
            cells[b] = r
        f, c = cells.get("fused"), cells.get("candle")

        def sps(r):
            if r is None:
                return "–"
            return fmt(out(r, "samples_per_s")) if r.get("ok") else "FAILED"
        fv = out(f, "samples_per_s") if f and f.get("ok") else None
        cv = out(c, "samples_per_s") if c and c.get("ok") else None
        floor = out(f, "floor_samples_per_s") if f else None
        batch = out(f, "batch") or out(c, "batch")
        threads = "/".join(fmt(out(r, "threads")) for r in (f, c))
        rows.append([m, fmt(batch), sps(f), fmt(floor), sps(c), fmt_ratio(ratio(fv, cv)), threads])
    lines.append(table(["minibatch", "batch", "fused samples/s", "fwd+bwd bound (1 thread)", "candle samples/s",
                        "fused ÷ candle", "threads fused/candle"], rows))
    lines += failures(runs, lambda r: f"{r.get('backend')} minibatch {r.get('minibatch')}")
    return lines


def ingest_section(wl):
    runs = wl.get("runs") or []
    lines = ["", "## 5. ingest: gRPC rollout ingestion", ""]
    lines.append(f"`proxima-bench ingest --clients C --seconds {wl.get('seconds')}`; one run each.")
    lines.append("")
    rows = []
    for r in runs:
        if r.get("ok"):
            rows.append([r.get("clients"), fmt(out(r, "rollouts_per_s")), fmt(out(r, "env_steps_per_s")),
                         fmt(out(r, "mb_per_s")), fmt(out(r, "seconds"))])
        else:
            rows.append([r.get("clients"), "FAILED", "–", "–", "–"])
    lines.append(table(["clients", "rollouts/s", "env steps/s", "MB/s", "seconds"], rows))
    lines += failures(runs, lambda r: f"{r.get('clients')} client(s)")
    return lines


def failures(runs, label, extra=None):
    bad = [r for r in runs if not r.get("ok")]
    if not bad:
        return []
    lines = ["", "Failures:", ""]
    for r in bad:
        lines.append(f"- {label(r)}: {one_line(r.get('error'))}" + (f" — `{r['cmd']}`" if r.get("cmd") else ""))
        lines += tail_block(r.get("stderr_tail"), 6)
        if extra and r.get(extra):
            lines += tail_block(r.get(extra), 4)
    return lines


def summary_section(res, solve_st, env_ratios, e2e_by):
    lines = ["", "## Summary", ""]
    wls = res.get("workloads") or {}
    p = solve_st.get("proxima") if solve_st else None
    if solve_st:
        if p and p["solved"]:
            parts = []
            for s, x in solve_st.items():
                if s == "proxima":
                    continue
                if x["install_error"]:
                    parts.append(f"{SYSTEM_NAMES.get(s, s)}: not installed")
                    continue
                rw, rc = ratio(x["wall_s"], p["wall_s"]), ratio(x["cpu_s"], p["cpu_s"])
                parts.append(f"{SYSTEM_NAMES.get(s, s)} {fmt_ratio(rw)} wall / {fmt_ratio(rc)} CPU "
                             f"(solved {x['solved']}/{x['n']})")
            lines.append(f"- **solve**: proxima solved {p['solved']}/{p['n']}, median {fmt(p['wall_s'])} s wall, "
                         f"{fmt(p['cpu_s'])} s CPU, {fmt(p['steps'])} steps. Proxima is faster by (peer ÷ proxima "
                         f"medians): " + ("; ".join(parts) or "no peers") + ".")
        else:
            lines.append(f"- **solve**: proxima solved {p['solved'] if p else 0}/{p['n'] if p else 0}; no ratios.")
        # Training throughput ratio vs SB3 and Sample Factory.
        e1g = e2e_by.get(("grpc", 1)) or {}
        e1l = e2e_by.get(("inprocess", 1)) or {}
        g = e1g.get("steps_per_s") if e1g.get("ok") else None
        loc = e1l.get("steps_per_s") if e1l.get("ok") else None
        own = p["train_steps_per_s"] if p else None
        parts = []
        for peer in ("sb3", "sf"):
            x = solve_st.get(peer)
            if not x or x["train_steps_per_s"] is None:
                parts.append(f"vs {SYSTEM_NAMES[peer]}: no peer data")
                continue
            t = x["train_steps_per_s"]
            parts.append(f"vs {SYSTEM_NAMES[peer]} ({fmt(t)} steps/s, n={x['train_steps_per_s_n']}): "
                         f"in-process 1 actor {fmt_ratio(ratio(loc, t))}, gRPC 1 actor {fmt_ratio(ratio(g, t))}, "
                         f"proxima's own solve runs {fmt_ratio(ratio(own, t))}")
        lines.append(
            "- **throughput ratio vs SB3 and vs Sample Factory** (env steps/s; proxima: e2e 1-actor steady "
            f"throughput, in-process {fmt(loc)} and gRPC {fmt(g)}, and its solve-run figure {fmt(own)}; peers: "
            "median of steps ÷ train wall s over their solve runs): " + "; ".join(parts) + ".")
    if env_ratios:
        lines.append("- **env**: proxima ÷ gymnasium steps/s: "
                     + ", ".join(f"{e} {fmt_ratio(r)}" for e, r in env_ratios.items()) + ".")
    if e2e_by:
        best = max((r for r in e2e_by.values() if r.get("ok")), key=lambda r: r.get("steps_per_s") or 0,
                   default=None)
        if best:
            lines.append(f"- **e2e**: best {fmt(best.get('steps_per_s'))} env steps/s "
                         f"({best.get('mode')}, {best.get('actors')} actors).")
        else:
            lines.append("- **e2e**: no successful run.")
    for name in ("update", "ingest"):
        wl = wls.get(name)
        if wl is not None:
            runs = wl.get("runs") or []
            lines.append(f"- **{name}**: {len(ok_runs(runs))}/{len(runs)} runs ok (tables below).")
    crashed = [n for n, w in wls.items() if w.get("crash")]
    if crashed:
        lines.append(f"- Workloads that crashed in bench/run.py: {', '.join(crashed)} (traceback in the JSON).")
    return lines


def render(res):
    wls = res.get("workloads") or {}
    body = []
    solve_st, env_ratios, e2e_by = {}, {}, {}
    if "solve" in wls:
        sec, solve_st = solve_section(wls["solve"])
        body += sec
    if "env" in wls:
        sec, env_ratios = env_section(wls["env"])
        body += sec
    if "e2e" in wls:
        sec, e2e_by = e2e_section(wls["e2e"])
        body += sec
    if "update" in wls:
        body += update_section(wls["update"])
    if "ingest" in wls:
        body += ingest_section(wls["ingest"])
    for name, wl in wls.items():
        if wl.get("crash"):
            body += ["", f"Workload {name} crashed in bench/run.py:", *tail_block(wl["crash"], 8)]
    lines = header_section(res) + summary_section(res, solve_st, env_ratios, e2e_by) + body
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        res = json.load(f)
    sys.stdout.write(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
