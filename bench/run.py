#!/usr/bin/env python3
"""proxima's benchmark: THE one command that measures everything.

    python3 bench/run.py                      # build, set up peers, all workloads but mujoco, 5 seeds
    python3 bench/run.py --quick              # smoke test: 1 seed, smaller step counts
    python3 bench/run.py --only env,update --skip-build
    python3 bench/run.py --only solve --peers sb3,sf --seeds 3 --solve-threads 1

Standard library only; runs under the system python3 from any directory (it
works in the repository root). Writes bench/results/<UTC timestamp>.json (all
raw results plus the machine and software versions; rewritten after every
measurement, so an interrupted run keeps what it has) and
bench/results/<UTC timestamp>.md (the Markdown summary, also printed on
stdout). Progress goes to stderr. ``python3 bench/report.py FILE.json``
re-renders a saved result.

Steps
-----
0. Unless --skip-build: ``cargo build --release -p proxima-cli -p
   proxima-bench`` and ``bench/setup_peers.sh <peers>`` (peers that fail to
   install keep their bench/.venvs/<peer>/INSTALL_ERROR, which is reported in
   the table; their runs are recorded as failures, not dropped).
1. solve   CartPole-v1 time-to-solve (bench/solve.py), two windows from the
           same runs: mean return of the last 20 finished episodes >= 475
           (the primary window) and of the last 100 (the criterion of
           configs/cartpole.toml and ``learner train``). Every system runs
           with each thread count of --solve-threads (default 1 and 2):
           proxima with ``--set threads=T`` and RAYON_NUM_THREADS=T, the
           peers with ``--threads T`` (torch and BLAS/OpenMP pools in every
           process). --seeds seeds, interleaved: for each seed and thread
           count, one run of every system in turn (proxima, sb3, cleanrl,
           sf, rllib), so that drift and contention spread evenly. The report
           builds two tables from these runs: one compute thread each, and the
           whole machine (proxima threads=2; each peer at the thread count
           with its fastest median time-to-solve, the sweep shown).
2. env     raw env steps/s on one pinned core: ``proxima-bench env`` against
           gymnasium 1.4.0 (bench/gym_env_throughput.py in the sb3 venv),
           CartPole-v1 and Pendulum-v1, 3 repetitions each, interleaved.
3. e2e     proxima's end-to-end training throughput (env steps the learner
           trains on per second, from its progress.csv) with 1, 2, 4, 8
           actors: over loopback gRPC (``learner serve`` + N ``actor``
           processes) and in-process (``learner train --num-actors N``), plus
           peak RSS; threads=2, RAYON_NUM_THREADS=2. (Throughput against the
           peers is compared on the solve runs, the same measurement for
           every system: finished-episode steps per second from the episode
           log.)
4. update  learner update samples/s, ``proxima-bench update`` for the fused
           and candle backends over minibatch sizes 64 .. 8192, each at 1
           and 2 threads (fused ``--threads T``; RAYON_NUM_THREADS=T for
           both), the threads actually busy measured per run.
5. ingest  gRPC rollout ingestion, ``proxima-bench ingest`` with 1 and 4
           clients.
6. python  actors against the raw env they step: Python actors
           (proxima_actor) on gymnasium's vector env (CartPole, HalfCheetah,
           Atari Pong with --atari and the Nature CNN), and their profile;
           the Rust actor with the MinAtar CNN on MinAtar Breakout.
7. mujoco  (only when named in --only: an hour or more) time to a return
           threshold on HalfCheetah-v5 (1500) and Hopper-v5 (2000), mean of
           the last 10 finished training episodes, bench/solve.py: proxima-py
           (the learner and 2 Python actors, configs/halfcheetah.toml and
           configs/hopper.toml) against SB3 with the same settings
           (bench/peers/sb3_ppo.py --config), both on the whole machine.

Every external command runs with a timeout in its own process group; a
command that fails, hangs or prints no JSON becomes an error entry (with the
tail of its stderr) in the results, never the end of the whole run.
"""

import argparse
import csv
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import python_fleet  # bench/python_fleet.py
import report  # bench/report.py

RESULTS_DIR = os.path.join(HERE, "results")
VENVS = os.path.join(HERE, ".venvs")
LEARNER = os.path.join(REPO, "target", "release", "learner")
ACTOR = os.path.join(REPO, "target", "release", "actor")
BENCH_BIN = os.path.join(REPO, "target", "release", "proxima-bench")
# The project's venv with the proxima_actor package (scripts/test.sh makes it; `pip install "gymnasium[mujoco]"`
# into it for HalfCheetah-v5).
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
# solve: the learner plus this many Python actor processes ("proxima-py"), on the whole machine only.
PYTHON_FLEET_ACTORS = 2
CARTPOLE = "configs/cartpole.toml"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

try:
    MACHINE_THREADS = len(os.sched_getaffinity(0))
except AttributeError:
    MACHINE_THREADS = os.cpu_count() or 1

ALL_WORKLOADS = ("solve", "env", "e2e", "update", "ingest", "python", "mujoco")
ALL_PEERS = ("sb3", "cleanrl", "sf", "rllib")
PEER_RUNNER = {
    "sb3": "sb3_ppo.py",
    "cleanrl": "cleanrl_ppo.py",
    "sf": "sf_appo.py",
    "rllib": "rllib_ppo.py",
}
# bench/solve.py --max-seconds per system.
SOLVE_MAX_SECONDS = {
    "proxima": 60,
    "proxima-py": 60,
    "sb3": 120,
    "cleanrl": 180,
    "sf": 300,
    "rllib": 300,
}
# Thread sweep: a run at another thread count than the first of --solve-threads is stopped after
# max(SWEEP_MIN_SECONDS, SWEEP_FACTOR x the whole run time of the same seed at the first count).
SWEEP_FACTOR = 3.0
SWEEP_MIN_SECONDS = 30.0
# Packages whose versions the summary names (from each venv's pip freeze).
KEY_PACKAGES = (
    "torch",
    "gymnasium",
    "gym",
    "numpy",
    "stable-baselines3",
    "stable_baselines3",
    "rl_zoo3",
    "rl-zoo3",
    "cleanrl",
    "sample-factory",
    "sample_factory",
    "ray",
)

ENV_IDS = ("CartPole-v1", "Pendulum-v1")
ENV_REPS = 3
E2E_ACTORS = (1, 2, 4, 8)
UPDATE_MINIBATCHES = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
UPDATE_MINIBATCHES_QUICK = (64, 512, 4096)
UPDATE_BACKENDS = ("fused", "candle")
# Compute threads per update run: fused --threads T and RAYON_NUM_THREADS=T for both backends.
UPDATE_THREADS = (1, 2)
INGEST_CLIENTS = (1, 4)
# mujoco: (env, config, return threshold) for the time-to-threshold runs of proxima-py (the learner and
# PYTHON_FLEET_ACTORS Python actors, one env each) and SB3, both with the config's settings (SB3 through
# `sb3_ppo.py --config`; HalfCheetah's are the RL Zoo's); the threshold is on the mean return of the last
# MUJOCO_WINDOW finished training episodes. Hopper's is above the 1,000 that standing still earns.
MUJOCO_TASKS = (
    ("HalfCheetah-v5", "configs/halfcheetah.toml", 1500.0),
    ("Hopper-v5", "configs/hopper.toml", 2000.0),
)
MUJOCO_WINDOW = 10
MUJOCO_MAX_SECONDS = 2400
# e2e: no early stop at the config's target_return (CartPole's max return is
# 500), so every run trains on the whole step budget.
NO_TARGET = "1000000"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Running commands

_live: dict[
    int, Callable[[], object]
] = {}  # process groups to stop if we are interrupted: leader pid -> reap()


def _kill_group(
    pid: int, grace: float = 5.0, reap: Callable[[], object] | None = None
) -> None:
    """SIGTERM the process group, SIGKILL it after grace seconds. reap()
    collects the leader once it has exited (a zombie leader would keep the
    group alive)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, sig)
        except OSError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            try:
                os.killpg(pid, 0)
            except OSError:
                return
            time.sleep(0.05)


def stop_all_live() -> None:
    for pid, reap in list(_live.items()):
        _kill_group(
            pid, grace=12.0, reap=reap
        )  # solve.py needs ~5 s to stop its own tree
        _live.pop(pid, None)


def tail(text: str | None, lines: int = 30) -> str:
    text = ANSI.sub("", text or "")
    return "\n".join(text.splitlines()[-lines:])


def read_tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return tail(f.read().decode(errors="replace"), lines)
    except OSError:
        return ""


def spawn(
    cmd: list[str], cwd: str, env: dict[str, str] | None, out: Any, err: Any
) -> subprocess.Popen[bytes]:
    """Starts `cmd` with no stdin, output to `out` / `err`, in a session of its own (so its tree can be killed)."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        start_new_session=True,
    )


def run_cmd(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None, cwd: str = REPO
) -> dict[str, Any]:
    """Runs cmd (a list) with a timeout in its own process group.
    Returns {cmd, rc, timed_out, wall_s, stdout, stderr, error}; error is None
    only when the command exited with status 0 within the timeout."""
    res: dict[str, Any] = {
        "cmd": " ".join(shlex.quote(c) for c in cmd),
        "rc": None,
        "timed_out": False,
        "wall_s": None,
        "stdout": "",
        "stderr": "",
        "error": None,
    }
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = spawn(cmd, cwd, env, out, err)
        except OSError as e:
            res["error"] = f"cannot start: {e}"
            return res
        _live[proc.pid] = proc.poll
        try:
            res["rc"] = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            res["timed_out"] = True
            _kill_group(proc.pid, reap=proc.poll)
            res["rc"] = proc.wait()
        finally:
            _kill_group(
                proc.pid, grace=1.0, reap=proc.poll
            )  # stray children of a finished command
            _live.pop(proc.pid, None)
        res["wall_s"] = round(time.monotonic() - t0, 3)
        out.seek(0)
        err.seek(0)
        res["stdout"] = out.read().decode(errors="replace")
        res["stderr"] = err.read().decode(errors="replace")
    if res["timed_out"]:
        res["error"] = f"timed out after {timeout:g} s"
    elif res["rc"] != 0:
        res["error"] = f"exit code {res['rc']}"
    return res


def last_json(text: str | None) -> dict[str, Any] | None:
    """The last line of text that is a JSON object, or None."""
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def json_entry(
    res: dict[str, Any],
    extra: dict[str, Any] | None = None,
    expect: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """One results entry from a command that prints a JSON line: the JSON's
    fields on success; ok: false with the error and stderr tail otherwise."""
    entry = dict(extra or {})
    entry["cmd"] = res["cmd"]
    entry["cmd_wall_s"] = res["wall_s"]
    obj = last_json(res["stdout"])
    error = res["error"]
    if error is None and obj is None:
        error = "no JSON line on stdout"
    if error is None and expect and obj is not None:
        missing = [k for k in expect if k not in obj]
        if missing:
            error = f"JSON line lacks {missing}"
    if obj is not None:
        entry["output"] = obj
    entry["ok"] = error is None
    if error is not None:
        entry["error"] = error
        entry["rc"] = res["rc"]
        entry["stderr_tail"] = tail(res["stderr"]) or tail(res["stdout"])
    return entry


def command_output(cmd: list[str], timeout: float = 60) -> str | None:
    res = run_cmd(cmd, timeout)
    return res["stdout"].strip() if res["error"] is None else None


# --------------------------------------------------------------------------
# Machine, software and peers


def read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def environment_info(peers: list[str]) -> dict[str, Any]:
    cpuinfo = read_file("/proc/cpuinfo")
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", read_file("/proc/meminfo"), re.MULTILINE)
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    status = command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    info = {
        "cpu_model": models[0] if models else platform.processor() or None,
        "nproc": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "affinity": affinity,
        "mem_total_gb": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": platform.release(),
        "os": platform.platform(),
        "loadavg_at_start": read_file("/proc/loadavg").split()[:3],
        "git_commit": command_output(["git", "rev-parse", "HEAD"]),
        "git_dirty": None if status is None else bool(status),
        "git_dirty_files": None if not status else status.splitlines(),
        "rustc": command_output(["rustc", "--version"]),
        "python": platform.python_version(),
        "binaries": {
            name: binary_info(path)
            for name, path in (
                ("learner", LEARNER),
                ("actor", ACTOR),
                ("proxima-bench", BENCH_BIN),
            )
        },
        "peers": {p: peer_info(p) for p in peers},
    }
    return info


def binary_info(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
    except OSError:
        return {"present": False}
    return {
        "present": True,
        "mtime_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
    }


def peer_python(peer: str) -> str:
    return os.path.join(VENVS, peer, "bin", "python")


def peer_info(peer: str) -> dict[str, Any]:
    """Install status and package versions of one peer's venv."""
    venv = os.path.join(VENVS, peer)
    info: dict[str, Any] = {"venv": os.path.relpath(venv, REPO)}
    err_path = os.path.join(venv, "INSTALL_ERROR")
    if os.path.exists(err_path):
        info.update(
            installed=False, error="INSTALL_ERROR", error_tail=read_tail(err_path, 30)
        )
        return info
    if not os.path.exists(os.path.join(venv, "INSTALL_OK")) or not os.path.exists(
        peer_python(peer)
    ):
        info.update(
            installed=False,
            error="not installed (run bench/setup_peers.sh)",
            error_tail="",
        )
        return info
    info["installed"] = True
    info["install_ok"] = (
        read_file(os.path.join(venv, "INSTALL_OK")).strip().splitlines()
    )
    res = run_cmd(
        [
            peer_python(peer),
            "-m",
            "pip",
            "--disable-pip-version-check",
            "freeze",
            "--all",
        ],
        120,
    )
    freeze = res["stdout"].splitlines() if res["error"] is None else []
    info["pip_freeze"] = freeze
    versions = {}
    for line in freeze:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m and m.group(1).lower() in KEY_PACKAGES:
            versions[m.group(1)] = m.group(2)
    info["versions"] = versions
    if res["error"] is not None:
        info["pip_freeze_error"] = res["error"]
    return info


# --------------------------------------------------------------------------
# Build


def build(peers: list[str]) -> dict[str, Any]:
    out = {}
    log("cargo build --release -p proxima-cli -p proxima-bench")
    res = run_cmd(
        [
            "cargo",
            "build",
            "--release",
            "-p",
            "proxima-cli",
            "-p",
            "proxima-bench",
        ],
        3600,
    )
    out["cargo"] = {
        "cmd": res["cmd"],
        "ok": res["error"] is None,
        "wall_s": res["wall_s"],
        "error": res["error"],
        "tail": tail(res["stderr"], 20),
    }
    if res["error"]:
        log(
            f"cargo build failed ({res['error']}); continuing with whatever binaries exist"
        )
    if peers:
        log(f"bench/setup_peers.sh {' '.join(peers)}")
        res = run_cmd(["bash", os.path.join(HERE, "setup_peers.sh"), *peers], 7200)
        out["setup_peers"] = {
            "cmd": res["cmd"],
            "ok": res["error"] is None,
            "wall_s": res["wall_s"],
            "error": res["error"],
            "tail": tail(res["stdout"] + res["stderr"], 20),
        }
        if res["error"]:
            log(
                f"setup_peers.sh: {res['error']} (failed peers are reported in the table)"
            )
    return out


# --------------------------------------------------------------------------
# 1. solve


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a run limited to `threads` compute threads: rayon's
    global pool (candle) and the BLAS/OpenMP pools, set explicitly."""
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def solve_command(system: str, seed: int, threads: int, runs_tmp: str) -> list[str]:
    if system == "proxima":
        # No target of its own: like every peer, the learner trains until bench/solve.py sees the solve in the
        # episode log and stops it, so CPU and memory are sampled at the same moment for every system.
        # threads=1: the fused backend trains both nets on the calling thread (no pool); threads=2: a pool of two.
        inner = (
            f"exec {shlex.quote(LEARNER)} train --config {CARTPOLE} --seed {seed} "
            f"--target-return {NO_TARGET} --runs-dir {shlex.quote(runs_tmp)} --set threads={threads} "
            f'--set episode_log=\\"$PROXIMA_BENCH_EPISODES\\"'
        )
        return ["sh", "-c", inner]
    if system == "proxima-py":
        learner_args = [
            "--config",
            CARTPOLE,
            "--seed",
            str(seed),
            "--target-return",
            NO_TARGET,
        ]
        learner_args += [
            "--set",
            f"threads={threads}",
            "--set",
            f"actors.count={PYTHON_FLEET_ACTORS}",
        ]
        return python_fleet.command(
            VENV_PYTHON, PYTHON_FLEET_ACTORS, "CartPole-v1", learner_args
        )
    return [
        peer_python(system),
        os.path.join("bench", "peers", PEER_RUNNER[system]),
        "--seed",
        str(seed),
        "--threads",
        str(threads),
    ]


def solve_harness(
    system: str, seed: int, max_s: float, windows: str, target: float | None = None
) -> list[str]:
    """bench/solve.py's command line for one run (the training command follows `--`)."""
    harness = [sys.executable, os.path.join(HERE, "solve.py"), "--name", system]
    harness += [
        "--seed",
        str(seed),
        "--max-seconds",
        f"{max_s:g}",
        "--windows",
        windows,
    ]
    if target is not None:
        harness += ["--target", f"{target:g}"]
    return harness


def workload_solve(opts: argparse.Namespace, state: "State") -> None:
    systems = ["proxima", "proxima-py", *opts.peers]
    seeds = list(range(1, opts.seeds + 1))
    threads: list[int] = opts.solve_threads
    wl = state.workload(
        "solve",
        {
            "seeds": seeds,
            "systems": systems,
            "threads": threads,
            "max_seconds": {s: SOLVE_MAX_SECONDS[s] for s in systems},
            "extra_seconds": opts.extra_seconds,
            "target": 475,
            "window": opts.windows[0],
            "windows": opts.windows,
            "machine_threads": MACHINE_THREADS,
            "sweep_factor": SWEEP_FACTOR,
            "sweep_min_seconds": SWEEP_MIN_SECONDS,
            "runs": [],
        },
    )
    peers_info = state.results["environment"]["peers"]
    for seed in seeds:
        for t in threads:
            for system in systems:
                if system == "proxima" and t > 2:
                    continue  # the fused backend trains on 1 or 2 threads (one per net)
                if system == "proxima-py" and t != min(max(threads), 2):
                    continue  # learner + Python actor processes: a whole-machine setup only
                max_s = float(SOLVE_MAX_SECONDS[system])
                base = next(
                    (
                        r
                        for r in wl["runs"]
                        if r["system"] == system
                        and r["seed"] == seed
                        and r["threads"] == threads[0]
                    ),
                    None,
                )
                if (
                    t != threads[0]
                    and base is not None
                    and base.get("solved")
                    and base.get("run_wall_s")
                ):
                    # The sweep only has to tell which thread count is fastest: a run that takes several
                    # times as long as the same seed's run at the first thread count cannot be, so it is
                    # stopped there (recorded as sweep-limited) instead of running to the system's limit.
                    max_s = min(
                        max_s,
                        max(
                            SWEEP_MIN_SECONDS, SWEEP_FACTOR * float(base["run_wall_s"])
                        ),
                    )
                solve_one(opts, wl, peers_info, system, seed, t, max_s)
                state.save()


def solve_one(
    opts: argparse.Namespace,
    wl: dict[str, Any],
    peers_info: dict[str, Any],
    system: str,
    seed: int,
    threads: int,
    max_s: float,
) -> None:
    entry: dict[str, Any] = {
        "system": system,
        "seed": seed,
        "threads": threads,
        "max_seconds": max_s,
    }
    if max_s < SOLVE_MAX_SECONDS[system]:
        entry["sweep_limited"] = True
    if system == "proxima-py" and (problem := python_actor_problem()):
        entry.update(solved=False, ok=False, install_error=True, error=problem)
        wl["runs"].append(entry)
        return
    if system not in ("proxima", "proxima-py") and not peers_info.get(system, {}).get(
        "installed"
    ):
        pinfo = peers_info.get(system, {})
        entry.update(
            solved=False,
            ok=False,
            install_error=True,
            error=f"peer not installed: {pinfo.get('error', '?')}",
            stderr_tail=pinfo.get("error_tail", ""),
        )
        wl["runs"].append(entry)
        return
    runs_tmp = tempfile.mkdtemp(prefix="bench-solve-runs-")
    cmd = solve_command(system, seed, threads, runs_tmp)
    windows = ",".join(str(w) for w in opts.windows)
    harness = solve_harness(system, seed, max_s, windows)
    if opts.extra_seconds is not None:
        harness += ["--extra-seconds", str(opts.extra_seconds)]
    log(f"solve seed {seed} {system} threads={threads} (max {max_s:g} s)")
    env = thread_env(threads)
    res = run_cmd([*harness, "--", *cmd], timeout=max_s + 120, env=env)
    shutil.rmtree(runs_tmp, ignore_errors=True)
    obj = last_json(res["stdout"])
    entry["cmd"] = " ".join(shlex.quote(c) for c in cmd)
    entry["env"] = {k: env[k] for k in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS")}
    if obj is None:
        entry.update(
            solved=False,
            ok=False,
            error=f"solve.py gave no result ({res['error'] or 'no JSON'})",
            stderr_tail=tail(res["stderr"]),
        )
    else:
        entry.update(obj)
        entry["system"], entry["seed"], entry["threads"] = system, seed, threads
        entry["ok"] = bool(obj.get("solved"))
        if not entry["ok"] and not entry.get("error"):
            entry["error"] = "not solved"
    wl["runs"].append(entry)
    if entry.get("solved"):
        parts = []
        for w, x in (entry.get("windows") or {}).items():
            if x.get("solved"):
                parts.append(
                    f"{w}-ep window: {x.get('wall_s')} s wall, {x.get('cpu_s')} s CPU, {x.get('steps')} steps"
                )
            else:
                parts.append(f"{w}-ep window: not solved")
        log("  " + "; ".join(parts))
    else:
        log(f"  FAILED: {entry.get('error')}")


# --------------------------------------------------------------------------
# 2. env


def pin_prefix() -> tuple[list[str], int | None]:
    """taskset -c <last allowed cpu>, if taskset exists: both sides of the
    env comparison run on the same single core."""
    if not shutil.which("taskset"):
        return [], None
    try:
        cpu = max(os.sched_getaffinity(0))
    except (AttributeError, ValueError):
        return [], None
    return ["taskset", "-c", str(cpu)], cpu


def workload_env(opts: argparse.Namespace, state: "State") -> None:
    ours_steps = 200_000 if opts.quick else 2_000_000
    gym_steps = 20_000 if opts.quick else 200_000
    pin, cpu = pin_prefix()
    wl = state.workload(
        "env",
        {
            "envs": list(ENV_IDS),
            "reps": ENV_REPS,
            "steps_proxima": ours_steps,
            "steps_gymnasium": gym_steps,
            "pinned_cpu": cpu,
            "runs": [],
        },
    )
    sb3_ok = state.results["environment"]["peers"].get("sb3", {}).get("installed")
    expect = ("steps", "seconds", "steps_per_s")
    for rep in range(1, ENV_REPS + 1):
        for env_id in ENV_IDS:
            log(f"env {env_id} rep {rep}")
            res = run_cmd(
                pin + [BENCH_BIN, "env", "--env", env_id, "--steps", str(ours_steps)],
                600,
            )
            wl["runs"].append(
                json_entry(res, {"impl": "proxima", "env": env_id, "rep": rep}, expect)
            )
            if sb3_ok:
                res = run_cmd(
                    pin
                    + [
                        peer_python("sb3"),
                        os.path.join(HERE, "gym_env_throughput.py"),
                        "--env",
                        env_id,
                        "--steps",
                        str(gym_steps),
                    ],
                    600,
                )
                wl["runs"].append(
                    json_entry(
                        res, {"impl": "gymnasium", "env": env_id, "rep": rep}, expect
                    )
                )
            else:
                wl["runs"].append(
                    {
                        "impl": "gymnasium",
                        "env": env_id,
                        "rep": rep,
                        "ok": False,
                        "error": "sb3 venv (gymnasium) not installed",
                    }
                )
            for e in wl["runs"][-2:]:
                if not e["ok"]:
                    log(f"  {e['impl']} FAILED: {e['error']}")
            state.save()


# --------------------------------------------------------------------------
# 3. e2e


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def vm_hwm_kb(pid: int) -> int | None:
    """Peak resident set (VmHWM) of a live process in kB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Child:
    """A started process that we reap ourselves with wait4, for its exact
    peak RSS (ru_maxrss) and CPU time; VmHWM is also polled while it runs."""

    def __init__(
        self, name: str, cmd: list[str], log_dir: str, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.out_path = os.path.join(log_dir, f"{name}.stdout")
        self.err_path = os.path.join(log_dir, f"{name}.stderr")
        self.hwm_kb: int | None = None
        self.rc: int | None = None
        self.maxrss_kb: int | None = None
        self.cpu_s: float | None = None
        self.t0 = time.monotonic()
        self.t_exit: float | None = None
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = spawn(cmd, REPO, env, out, err)
        _live[self.proc.pid] = self.poll

    @property
    def alive(self) -> bool:
        return self.rc is None

    def poll(self) -> bool:
        """Samples VmHWM and reaps the process if it has exited."""
        if not self.alive:
            return False
        hwm = vm_hwm_kb(self.proc.pid)
        if hwm is not None:
            self.hwm_kb = max(self.hwm_kb or 0, hwm)
        try:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, usage = self.proc.pid, 0, None
        if pid == 0:
            return True
        self.rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.rc  # reaped here; keep Popen from waiting again
        self.t_exit = time.monotonic()
        if usage is not None:
            self.maxrss_kb = usage.ru_maxrss
            self.cpu_s = round(usage.ru_utime + usage.ru_stime, 3)
        _live.pop(self.proc.pid, None)
        return False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM (its process group), SIGKILL after grace; reaps."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if not self.poll():
                return
            try:
                os.killpg(self.proc.pid, sig)
            except OSError:
                pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.poll():
                    return
                time.sleep(0.02)

    def summary(self) -> dict[str, Any]:
        peak_kb = max(self.maxrss_kb or 0, self.hwm_kb or 0) or None
        return {
            "name": self.name,
            "rc": self.rc,
            "cpu_s": self.cpu_s,
            "peak_rss_mb": round(peak_kb / 1024, 1) if peak_kb else None,
            "lifetime_s": round((self.t_exit or time.monotonic()) - self.t0, 3),
        }


def progress_throughput(path: str) -> dict[str, Any]:
    """Steady-state env steps/s from a progress.csv: (env_steps at the last
    row - at the first row) / (wall seconds at the last row - at the first)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except OSError as e:
        return {"error": f"no progress.csv: {e}"}
    if len(rows) < 2:
        return {"error": f"progress.csv has {len(rows)} rows (need 2)"}
    wall_col = (
        "wall_seconds"
        if "wall_seconds" in header
        else next((c for c in header if "wall" in c or c.endswith("seconds")), None)
    )
    if "env_steps" not in header or wall_col is None:
        return {
            "error": f"progress.csv lacks env_steps / a wall-clock column: {list(header)}"
        }
    try:
        s0, s1 = float(rows[0]["env_steps"]), float(rows[-1]["env_steps"])
        w0, w1 = float(rows[0][wall_col]), float(rows[-1][wall_col])
    except (TypeError, ValueError) as e:
        return {"error": f"bad progress.csv row: {e}"}
    out = {
        "rows": len(rows),
        "env_steps": int(s1),
        "wall_s": round(w1, 3),
        "wall_column": wall_col,
        "first_row_env_steps": int(s0),
        "first_row_wall_s": round(w0, 3),
    }
    if w1 > w0:
        out["steps_per_s"] = round((s1 - s0) / (w1 - w0), 1)
    else:
        out["error"] = "progress.csv wall clock does not advance"
    if w1 > 0:
        out["overall_steps_per_s"] = round(s1 / w1, 1)
    return out


def e2e_training_args(n: int, total: int) -> list[str]:
    """The learner arguments both e2e setups share: the CartPole config, N actors, the step budget, no target."""
    return [
        "--config",
        CARTPOLE,
        "--num-actors",
        str(n),
        "--total-steps",
        str(total),
        "--target-return",
        NO_TARGET,
    ]


def e2e_grpc(n: int, total: int, timeout: float) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-e2e-")
    entry: dict[str, Any] = {
        "mode": "grpc",
        "actors": n,
        "total_steps": total,
        "threads": 2,
    }
    learner = None
    actors = []
    try:
        port = free_port()
        cmd = [
            LEARNER,
            "serve",
            *e2e_training_args(n, total),
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-addr",
            "none",
            "--runs-dir",
            tmp,
            "--run-name",
            f"e2e-{n}",
        ]
        entry["cmd"] = " ".join(shlex.quote(c) for c in cmd)
        try:
            learner = Child("learner", cmd, tmp, thread_env(2))
        except OSError as e:
            entry.update(ok=False, error=f"cannot start learner: {e}")
            return entry
        # Ready when it says SERVING on stdout or its port accepts connections.
        deadline = time.monotonic() + 30
        ready_by = None
        while time.monotonic() < deadline:
            if not learner.poll():
                break
            if "SERVING" in read_file(learner.out_path):
                ready_by = "SERVING line"
                break
            if port_open(port):
                ready_by = "port open"
                break
            time.sleep(0.05)
        if ready_by is None:
            learner.stop()
            why = (
                f"learner exited with code {learner.rc} before serving"
                if learner.rc is not None
                else "learner not serving after 30 s"
            )
            entry.update(ok=False, error=why, stderr_tail=read_tail(learner.err_path))
            return entry
        entry["ready_by"] = ready_by
        for i in range(n):
            acmd = [
                ACTOR,
                "--learner",
                f"http://127.0.0.1:{port}",
                "--env",
                "CartPole-v1",
                "--metrics-addr",
                "none",
                "--name",
                f"a{i}",
            ]
            try:
                actors.append(Child(f"a{i}", acmd, tmp, thread_env(2)))
            except OSError as e:
                entry.update(ok=False, error=f"cannot start actor: {e}")
                learner.stop()
                return entry
        entry["actor_cmd"] = (
            " ".join(shlex.quote(c) for c in acmd[:-2]) + " --name a<i>"
        )
        deadline = time.monotonic() + timeout
        timed_out = False
        early_names: set[str] = set()
        while True:
            for a in actors:
                a.poll()
            if not learner.poll():
                break
            # Polled after the actors and still running: those gone exited first.
            early_names.update(a.name for a in actors if not a.alive)
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(0.1)
        early = [a.summary() for a in actors if a.name in early_names]
        for a in actors:
            a.poll()  # last VmHWM reading before SIGTERM
        for a in actors:
            if a.alive:
                try:
                    os.killpg(a.proc.pid, signal.SIGTERM)
                except OSError:
                    pass
        for a in actors:
            a.stop()
        if timed_out:
            learner.stop()
        entry["learner"] = learner.summary()
        entry["actor_procs"] = [a.summary() for a in actors]
        peaks = [a["peak_rss_mb"] for a in entry["actor_procs"] if a["peak_rss_mb"]]
        entry["learner_peak_rss_mb"] = entry["learner"]["peak_rss_mb"]
        entry["actor_peak_rss_mb"] = max(peaks) if peaks else None
        entry["actor_cpu_s"] = round(
            sum(a["cpu_s"] or 0 for a in entry["actor_procs"]), 3
        )
        if early:
            entry["actors_exited_early"] = early
        entry.update(progress_throughput(os.path.join(tmp, f"e2e-{n}", "progress.csv")))
        extra = [f"{len(early)} actor(s) exited before the learner"] if early else []
        finish_e2e_entry(entry, learner, timed_out, timeout, extra)
        if early and not entry["ok"]:
            entry["actor_stderr_tail"] = read_tail(
                os.path.join(tmp, f"{early[0]['name']}.stderr")
            )
        return entry
    finally:
        for c in actors + ([learner] if learner else []):
            if c.alive:
                c.stop(grace=2.0)
        shutil.rmtree(tmp, ignore_errors=True)


def finish_e2e_entry(
    entry: dict[str, Any],
    learner: "Child",
    timed_out: bool,
    timeout: float,
    extra_errors: list[str],
) -> None:
    """Sets entry["ok"]; on failure joins every problem into entry["error"] and adds the learner's stderr tail."""
    errors = []
    if timed_out:
        errors.append(f"learner did not finish within {timeout:g} s")
    elif learner.rc != 0:
        errors.append(f"learner exit code {learner.rc}")
    errors += extra_errors
    if entry.get("error"):
        errors.append(entry["error"])
    entry["ok"] = not errors
    if errors:
        entry["error"] = "; ".join(errors)
        entry["stderr_tail"] = read_tail(learner.err_path)


def e2e_local(n: int, total: int, timeout: float) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-local-")
    entry: dict[str, Any] = {
        "mode": "inprocess",
        "actors": n,
        "total_steps": total,
        "threads": 2,
    }
    try:
        cmd = [
            LEARNER,
            "train",
            *e2e_training_args(n, total),
            "--runs-dir",
            tmp,
            "--run-name",
            f"local-{n}",
        ]
        entry["cmd"] = " ".join(shlex.quote(c) for c in cmd)
        try:
            learner = Child("learner", cmd, tmp, thread_env(2))
        except OSError as e:
            entry.update(ok=False, error=f"cannot start learner: {e}")
            return entry
        deadline = time.monotonic() + timeout
        timed_out = False
        while learner.poll():
            if time.monotonic() >= deadline:
                timed_out = True
                learner.stop()
                break
            time.sleep(0.1)
        entry["learner"] = learner.summary()
        entry["learner_peak_rss_mb"] = entry["learner"]["peak_rss_mb"]
        entry.update(
            progress_throughput(os.path.join(tmp, f"local-{n}", "progress.csv"))
        )
        finish_e2e_entry(entry, learner, timed_out, timeout, [])
        return entry
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def workload_e2e(opts: argparse.Namespace, state: "State") -> None:
    total = 30_000 if opts.quick else 200_000
    timeout = 180 if opts.quick else 600
    wl = state.workload(
        "e2e",
        {
            "total_steps": total,
            "actors": list(E2E_ACTORS),
            "target_return": NO_TARGET,
            "threads": 2,  # the config's default; RAYON_NUM_THREADS=2 set explicitly
            "rayon_num_threads": 2,
            "runs": [],
        },
    )
    for n in E2E_ACTORS:
        for mode, fn in (("grpc", e2e_grpc), ("inprocess", e2e_local)):
            log(f"e2e {mode} {n} actor(s), {total} steps")
            entry = fn(n, total, timeout)
            wl["runs"].append(entry)
            if entry["ok"]:
                log(
                    f"  {entry.get('steps_per_s')} steps/s, learner {entry.get('learner_peak_rss_mb')} MB"
                )
            else:
                log(f"  FAILED: {entry.get('error')}")
            state.save()


# --------------------------------------------------------------------------
# 4. update, 5. ingest


def workload_update(opts: argparse.Namespace, state: "State") -> None:
    sizes = UPDATE_MINIBATCHES_QUICK if opts.quick else UPDATE_MINIBATCHES
    min_seconds = opts.update_min_seconds
    wl = state.workload(
        "update",
        {
            "minibatches": list(sizes),
            "backends": list(UPDATE_BACKENDS),
            "threads": list(UPDATE_THREADS),
            "min_seconds": min_seconds,
            "runs": [],
        },
    )
    for m in sizes:
        for t in UPDATE_THREADS:
            for backend in UPDATE_BACKENDS:
                log(f"update {backend} threads={t} minibatch {m}")
                # Fused: --threads sets its own pool; candle: RAYON_NUM_THREADS sizes rayon's global pool.
                cmd = [BENCH_BIN, "update", "--backend", backend, "--minibatch", str(m)]
                cmd += ["--threads", str(t), "--min-seconds", str(min_seconds)]
                res = run_cmd(cmd, 600, env=thread_env(t))
                extra = {
                    "backend": backend,
                    "minibatch": m,
                    "threads": t,
                    "rayon_num_threads": t,
                }
                entry = json_entry(res, extra, ("samples_per_s",))
                wl["runs"].append(entry)
                if not entry["ok"]:
                    log(f"  FAILED: {entry['error']}")
                state.save()


def workload_ingest(opts: argparse.Namespace, state: "State") -> None:
    seconds = 2 if opts.quick else 5
    wl = state.workload(
        "ingest", {"clients": list(INGEST_CLIENTS), "seconds": seconds, "runs": []}
    )
    for c in INGEST_CLIENTS:
        log(f"ingest {c} client(s), {seconds} s")
        res = run_cmd(
            [BENCH_BIN, "ingest", "--clients", str(c), "--seconds", str(seconds)],
            seconds + 120,
        )
        entry = json_entry(res, {"clients": c}, ("env_steps_per_s",))
        wl["runs"].append(entry)
        if not entry["ok"]:
            log(f"  FAILED: {entry['error']}")
        state.save()


# --------------------------------------------------------------------------
# 6. python: actors against the raw env they step (Python actors on gymnasium's vector env, the Rust actor on a
#    built-in game)

PYTHON_ENVS = ("CartPole-v1", "HalfCheetah-v5", "ALE/Pong-v5")
# Built-in games the Rust actor (target/release/actor) runs in the same workload; its raw rate is one env stepped
# by `proxima-bench env` (the Rust vector env only loops over its envs).
RUST_ACTOR_ENVS = ("MinAtar/Breakout-v1",)
# Envs per actor process (and in the raw vector env): per-batch costs (inference, rollout arrays) shrink per step
# as the batch grows.
PYTHON_NUM_ENVS = (8, 16)
# Spaces of envs the learner does not build in, for the pipeline runs' configs.
PYTHON_ENV_SPACES = {"HalfCheetah-v5": ("Box(-inf, inf, (17,))", "Box(-1, 1, (6,))")}
# Shipped configs of the pipeline runs for the image envs (their CNN policies).
PIPELINE_CONFIGS = {
    "ALE/Pong-v5": "configs/atari.toml",
    "MinAtar/Breakout-v1": "configs/minatar_cnn.toml",
}
# Env steps per rollout where the message limit bounds it: Pong's 8 x 64 stacked frames (14.5 MB of the 16 MiB),
# kept at any envs per actor.
PIPELINE_ROLLOUT_ENV_STEPS = {"ALE/Pong-v5": 512}


def is_atari(env_id: str) -> bool:
    """An ALE id, which the Python actor runs with its Atari preprocessing (`--atari`)."""
    return env_id.startswith("ALE/")


def python_actor_problem(env_id: str | None = None) -> str | None:
    """Why the project's venv cannot run Python actors (for `env_id`), or None."""
    if not os.access(VENV_PYTHON, os.X_OK):
        return f"no {VENV_PYTHON} (scripts/test.sh creates it and installs python/ into it)"
    probe = "import proxima_actor, gymnasium as g"
    if env_id:
        # The env as the actor builds it (ALE ids with the Atari preprocessing, which registers them).
        probe += "; from proxima_actor.cli import env_factory"
        probe += f"; env_factory({env_id!r}, None, None, {is_atari(env_id)})().close()"
    res = run_cmd([VENV_PYTHON, "-c", probe], 120)
    if res["error"] is None:
        return None
    hint = (
        ' (pip install "gymnasium[mujoco]" into .venv)'
        if env_id and "mujoco" in res["stderr"].lower()
        else ""
    )
    return f"{res['error']}{hint}: {tail(res['stderr'], 3)}"


def pipeline_config(env_id: str, tmp: str) -> str:
    """The learner config of a pipeline run: the image envs' shipped configs, configs/cartpole.toml, or for a
    non-built-in vector env its spaces with Pendulum's continuous-control settings (normalised observations and
    rewards, 8 envs x 64 steps)."""
    if env_id in PIPELINE_CONFIGS:
        return PIPELINE_CONFIGS[env_id]
    if env_id not in PYTHON_ENV_SPACES:
        return CARTPOLE
    obs, action = PYTHON_ENV_SPACES[env_id]
    path = os.path.join(tmp, "config.toml")
    with open(path, "w") as f:
        f.write(
            f'[env]\nid = "{env_id}"\nobservation_space = "{obs}"\naction_space = "{action}"\n'
            "[actors]\nnum_envs = 8\nrollout_steps = 64\n"
            "[ppo]\nlearning_rate = 3e-4\nnum_epochs = 10\nminibatch_size = 64\n"
            "[normalize]\nobservations = true\nrewards = true\n"
        )
    return path


def scrape_counter(port: int, name: str) -> float | None:
    """The sum of a counter's samples on http://127.0.0.1:port/metrics, or None."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{")
    ]
    return sum(values) if values else None


def actor_pipeline(
    env_id: str,
    num_envs: int,
    warmup: float,
    seconds: float,
    profile: bool,
    rust: bool = False,
) -> dict[str, Any]:
    """`learner serve` (fused backend, 1 thread) and one Python actor process (the Rust actor with `rust`;
    `num_envs` envs) that does not wait for new policies (--policy-wait-ms 0: the actor runs flat out; the learner
    trains on what is fresh enough). Measures the actor's env steps/s (its proxima_actor_env_steps_total, steps of
    rollouts the learner answered) over `seconds` after `warmup`, with both processes' CPU over the same window.
    With `profile`, the actor runs under cProfile (bench/python_actor_bench.py profile) and the entry holds where its
    time went."""
    tmp = tempfile.mkdtemp(prefix="bench-python-")
    entry: dict[str, Any] = {
        "env": env_id,
        "actor": "rust" if rust else "python",
        "num_envs": num_envs,
        "actors": 1,
        "warmup_s": warmup,
        "seconds": seconds,
    }
    children: list[Child] = []
    try:
        port, metrics = free_port(), free_port()
        config = pipeline_config(env_id, tmp)
        lcmd = [
            LEARNER,
            "serve",
            "--config",
            config,
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-addr",
            "none",
        ]
        lcmd += [
            "--runs-dir",
            tmp,
            "--total-steps",
            "1000000000000",
            "--target-return",
            NO_TARGET,
        ]
        lcmd += ["--set", "threads=1", "--set", f"actors.num_envs={num_envs}"]
        if env_id in PIPELINE_ROLLOUT_ENV_STEPS:
            steps = PIPELINE_ROLLOUT_ENV_STEPS[env_id] // num_envs
            lcmd += ["--set", f"actors.rollout_steps={steps}"]
        learner = Child("learner", lcmd, tmp, thread_env(1))
        children.append(learner)
        deadline = time.monotonic() + 30
        while not port_open(port) and learner.poll() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not port_open(port):
            entry.update(
                ok=False,
                error="learner not serving",
                stderr_tail=read_tail(learner.err_path),
            )
            return entry
        actor_args = [
            "--learner",
            f"http://127.0.0.1:{port}",
            "--env",
            env_id,
            "--num-envs",
            str(num_envs),
            "--policy-wait-ms",
            "0",
        ]
        actor_args += ["--metrics-addr", f"127.0.0.1:{metrics}", "--name", "a0"]
        if is_atari(env_id):
            actor_args.append("--atari")
        prof_path = os.path.join(tmp, "profile.json")
        if rust:
            acmd = [ACTOR]
        elif profile:
            acmd = [
                VENV_PYTHON,
                os.path.join(HERE, "python_actor_bench.py"),
                "profile",
                "--out",
                prof_path,
                "--",
            ]
        else:
            acmd = [VENV_PYTHON, "-m", "proxima_actor"]
        actor = Child("actor", acmd + actor_args, tmp, thread_env(1))
        children.append(actor)
        entry["actor_cmd"] = " ".join(shlex.quote(c) for c in acmd + actor_args)
        time.sleep(warmup)
        cpu = lambda c: proc_cpu_s(c.proc.pid)
        s0, a0, l0, t0 = (
            scrape_counter(metrics, "proxima_actor_env_steps_total"),
            cpu(actor),
            cpu(learner),
            time.monotonic(),
        )
        time.sleep(seconds)
        s1, a1, l1, t1 = (
            scrape_counter(metrics, "proxima_actor_env_steps_total"),
            cpu(actor),
            cpu(learner),
            time.monotonic(),
        )
        for c in (actor, learner):
            c.stop(grace=10.0)
        if None in (s0, s1) or actor.rc not in (0, None):
            entry.update(
                ok=False,
                error=f"actor metrics unreadable (exit {actor.rc})",
                stderr_tail=read_tail(actor.err_path),
            )
            return entry
        entry["steps_per_s"] = round((s1 - s0) / (t1 - t0), 1)
        if None not in (a0, a1, l0, l1):
            entry["actor_cores"] = round((a1 - a0) / (t1 - t0), 2)
            entry["learner_cores"] = round((l1 - l0) / (t1 - t0), 2)
        if profile:
            try:
                with open(prof_path) as f:
                    entry["profile"] = json.load(f)
            except (OSError, ValueError) as e:
                entry.update(
                    ok=False,
                    error=f"no profile: {e}",
                    stderr_tail=read_tail(actor.err_path),
                )
                return entry
        entry["ok"] = True
        return entry
    finally:
        for c in children:
            if c.alive:
                c.stop(grace=2.0)
        shutil.rmtree(tmp, ignore_errors=True)


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def workload_python(opts: argparse.Namespace, state: "State") -> None:
    seconds = 3.0 if opts.quick else 10.0
    warmup = 2.0 if opts.quick else 5.0
    wl = state.workload(
        "python",
        {
            "envs": list(PYTHON_ENVS) + list(RUST_ACTOR_ENVS),
            "num_envs": list(PYTHON_NUM_ENVS),
            "seconds": seconds,
            "runs": [],
        },
    )
    for env_id in PYTHON_ENVS:
        problem = python_actor_problem(env_id)
        if problem:
            log(f"python {env_id}: cannot run: {problem}")
            wl["runs"].append(
                {"env": env_id, "kind": "raw", "ok": False, "error": problem}
            )
            state.save()
            continue
        for n in PYTHON_NUM_ENVS:
            log(f"python {env_id}: raw vector env, {n} envs, {seconds:g} s")
            cmd = [VENV_PYTHON, os.path.join(HERE, "python_actor_bench.py"), "raw"]
            cmd += ["--env", env_id, "--num-envs", str(n), "--seconds", str(seconds)]
            cmd += ["--atari"] if is_atari(env_id) else []
            res = run_cmd(cmd, seconds + 120, env=thread_env(1))
            extra = {"env": env_id, "num_envs": n, "kind": "raw"}
            wl["runs"].append(json_entry(res, extra, ("steps_per_s",)))
            state.save()
            # The profile once per env, at the first env count.
            kinds = [("pipeline", False)] + (
                [("profile", True)] if n == PYTHON_NUM_ENVS[0] else []
            )
            for kind, profile in kinds:
                log(
                    f"python {env_id}: {kind}, 1 actor, {n} envs, {seconds:g} s after {warmup:g} s"
                )
                entry = actor_pipeline(env_id, n, warmup, seconds, profile)
                entry["kind"] = kind
                wl["runs"].append(entry)
                log_pipeline(entry)
                state.save()
    for env_id in RUST_ACTOR_ENVS:
        # One env stepped alone: the raw rate does not depend on the envs per actor.
        log(f"python {env_id}: raw env (proxima-bench env), Rust actor")
        res = run_cmd([BENCH_BIN, "env", "--env", env_id], 120)
        raw = json_entry(
            res, {"env": env_id, "actor": "rust", "kind": "raw"}, ("steps_per_s",)
        )
        for n in PYTHON_NUM_ENVS:
            wl["runs"].append(dict(raw, num_envs=n))
            log(
                f"python {env_id}: pipeline, 1 Rust actor, {n} envs, {seconds:g} s after {warmup:g} s"
            )
            entry = actor_pipeline(env_id, n, warmup, seconds, False, rust=True)
            entry["kind"] = "pipeline"
            wl["runs"].append(entry)
            log_pipeline(entry)
            state.save()


def log_pipeline(entry: dict[str, Any]) -> None:
    """Logs a pipeline run's rate, or why it failed."""
    if entry.get("ok"):
        log(f"  {entry.get('steps_per_s')} steps/s")
    else:
        log(f"  FAILED: {entry.get('error')}")


def mujoco_command(system: str, env_id: str, config: str, seed: int) -> list[str]:
    """The training command of one mujoco run: the whole machine for either system."""
    if system == "proxima-py":
        learner_args = [
            "--config",
            config,
            "--seed",
            str(seed),
            "--dashboard-addr",
            "none",
        ]
        return python_fleet.command(
            VENV_PYTHON, PYTHON_FLEET_ACTORS, env_id, learner_args, num_envs=1
        )
    runner = os.path.join("bench", "peers", PEER_RUNNER[system])
    return [
        peer_python(system),
        runner,
        "--config",
        config,
        "--seed",
        str(seed),
        "--threads",
        str(MACHINE_THREADS),
    ]


def workload_mujoco(opts: argparse.Namespace, state: "State") -> None:
    systems = ["proxima-py"] + (["sb3"] if "sb3" in opts.peers else [])
    seeds = list(range(1, opts.seeds + 1))
    wl = state.workload(
        "mujoco",
        {
            "tasks": [list(t) for t in MUJOCO_TASKS],
            "window": MUJOCO_WINDOW,
            "systems": systems,
            "seeds": seeds,
            "max_seconds": MUJOCO_MAX_SECONDS,
            "actors": PYTHON_FLEET_ACTORS,
            "runs": [],
        },
    )
    peers_info = state.results["environment"]["peers"]
    for env_id, config, threshold in MUJOCO_TASKS:
        for seed in seeds:
            for system in systems:
                entry: dict[str, Any] = {
                    "env": env_id,
                    "system": system,
                    "seed": seed,
                    "threshold": threshold,
                }
                problem = (
                    python_actor_problem(env_id) if system == "proxima-py" else None
                )
                if system != "proxima-py" and not peers_info.get(system, {}).get(
                    "installed"
                ):
                    problem = f"peer not installed: {peers_info.get(system, {}).get('error', '?')}"
                if problem:
                    entry.update(
                        solved=False, ok=False, install_error=True, error=problem
                    )
                    wl["runs"].append(entry)
                    state.save()
                    continue
                cmd = mujoco_command(system, env_id, config, seed)
                harness = solve_harness(
                    system, seed, MUJOCO_MAX_SECONDS, str(MUJOCO_WINDOW), threshold
                )
                log(
                    f"mujoco {env_id} seed {seed} {system} (return {threshold:g}, max {MUJOCO_MAX_SECONDS} s)"
                )
                res = run_cmd(
                    [*harness, "--", *cmd],
                    timeout=MUJOCO_MAX_SECONDS + 120,
                    env=thread_env(MACHINE_THREADS),
                )
                obj = last_json(res["stdout"])
                entry["cmd"] = " ".join(shlex.quote(c) for c in cmd)
                if obj is None:
                    entry.update(
                        solved=False,
                        ok=False,
                        error=f"solve.py gave no result ({res['error'] or 'no JSON'})",
                    )
                    entry["stderr_tail"] = tail(res["stderr"])
                else:
                    entry.update(obj)
                    entry.update(
                        env=env_id, system=system, seed=seed, threshold=threshold
                    )
                    entry["ok"] = bool(obj.get("solved"))
                    if not entry["ok"] and not entry.get("error"):
                        entry["error"] = f"did not reach {threshold:g}"
                log(
                    f"  {entry.get('wall_s')} s wall, {entry.get('cpu_s')} s CPU, {entry.get('steps')} steps"
                    if entry["ok"]
                    else f"  FAILED: {entry.get('error')}"
                )
                wl["runs"].append(entry)
                state.save()


WORKLOADS = {
    "solve": workload_solve,
    "env": workload_env,
    "e2e": workload_e2e,
    "update": workload_update,
    "ingest": workload_ingest,
    "python": workload_python,
    "mujoco": workload_mujoco,
}


# --------------------------------------------------------------------------
# Results file


class State:
    def __init__(self, results: dict[str, Any], json_path: str) -> None:
        self.results = results
        self.json_path = json_path

    def workload(self, name: str, initial: dict[str, Any]) -> dict[str, Any]:
        self.results["workloads"][name] = initial
        self.save()
        return initial

    def save(self) -> None:
        tmp = self.json_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.json_path)


def csv_list(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})"
        )
    return [a for a in allowed if a in items]  # canonical order


def int_list(value: str, what: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what}: not a comma-separated list of integers: {value!r}"
        ) from None
    if not items or any(i < 1 for i in items) or len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(
            f"{what}: need distinct positive integers: {value!r}"
        )
    return items


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Writes bench/results/<UTC timestamp>.json and .md; see the module docstring for details.",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="seeds per system and thread count in solve (default 5)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 seed, 10x fewer env steps, 30k e2e steps, 3 minibatch sizes, 2 s ingest, "
        "0.2 s update timing",
    )
    p.add_argument(
        "--only",
        type=lambda v: csv_list(v, ALL_WORKLOADS, "workload"),
        default=[w for w in ALL_WORKLOADS if w != "mujoco"],
        help=f"workloads to run (default all but mujoco, which takes hours: {','.join(ALL_WORKLOADS)})",
    )
    p.add_argument(
        "--peers",
        type=lambda v: csv_list(v, ALL_PEERS, "peer"),
        default=list(ALL_PEERS),
        help=f"peer systems for solve (default all: {','.join(ALL_PEERS)})",
    )
    p.add_argument(
        "--solve-threads",
        type=lambda v: int_list(v, "--solve-threads"),
        default=[1, 2],
        help="compute-thread counts every system runs with in solve (default 1,2): 1 gives the one-thread "
        "table; the peers' best of all of them (by median time-to-solve) and proxima's threads=2 give the "
        "whole-machine table. proxima runs only with 1 and 2 (its fused backend's choices)",
    )
    p.add_argument(
        "--windows",
        type=lambda v: int_list(v, "--windows"),
        default=[20, 100],
        help="solve windows, episodes in the moving mean (default 20,100); the first is the primary one",
    )
    p.add_argument(
        "--extra-seconds",
        type=float,
        default=60.0,
        help="solve: after the first window solves, wait at most this long for the others (default 60)",
    )
    p.add_argument(
        "--update-min-seconds",
        type=float,
        default=None,
        help="update: time each configuration for at least this long (default 1, 0.2 with --quick)",
    )
    p.add_argument(
        "--skip-build",
        action="store_true",
        help="use the existing target/release binaries and bench/.venvs as they are",
    )
    p.add_argument(
        "--results-dir",
        default=RESULTS_DIR,
        help="where to write the results (default bench/results)",
    )
    opts = p.parse_args()
    if opts.quick:
        opts.seeds = 1
    if opts.seeds < 1:
        p.error("--seeds must be at least 1")
    if opts.update_min_seconds is None:
        opts.update_min_seconds = 0.2 if opts.quick else 1.0
    return opts


def main() -> int:
    opts = parse_args()
    os.chdir(REPO)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(opts.results_dir, exist_ok=True)
    json_path = os.path.join(opts.results_dir, f"{stamp}.json")
    md_path = os.path.join(opts.results_dir, f"{stamp}.md")

    # Peers whose venvs this run uses: the solve peers, and sb3 for gymnasium and for mujoco.
    peers = list(opts.peers) if "solve" in opts.only else []
    if "env" in opts.only and "sb3" not in peers:
        peers.append("sb3")
    if "mujoco" in opts.only and "sb3" in opts.peers and "sb3" not in peers:
        peers.append("sb3")

    results: dict[str, Any] = {
        "schema": 2,
        "timestamp_utc": stamp,
        "argv": sys.argv[1:],
        "options": {
            "seeds": opts.seeds,
            "quick": opts.quick,
            "only": opts.only,
            "peers": opts.peers,
            "solve_threads": opts.solve_threads,
            "windows": opts.windows,
            "extra_seconds": opts.extra_seconds,
            "update_min_seconds": opts.update_min_seconds,
            "skip_build": opts.skip_build,
        },
        "finished": False,
        "build": {"skipped": True} if opts.skip_build else None,
        "workloads": {},
    }
    state = State(results, json_path)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

    t0 = time.monotonic()
    try:
        if not opts.skip_build:
            results["build"] = build(peers)
        results["environment"] = environment_info(peers)
        state.save()
        log(f"results: {os.path.relpath(json_path, REPO)}")
        for name in opts.only:
            started = time.monotonic()
            try:
                WORKLOADS[name](opts, state)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001  (a bug here must not lose the other workloads)
                import traceback

                results["workloads"].setdefault(name, {})["crash"] = (
                    traceback.format_exc()
                )
                log(f"workload {name} crashed: {e!r}")
            results["workloads"].setdefault(name, {})["elapsed_s"] = round(
                time.monotonic() - started, 1
            )
            state.save()
        results["finished"] = True
    except KeyboardInterrupt as e:
        log(
            f"interrupted ({e or 'Ctrl-C'}); stopping children, keeping partial results"
        )
        stop_all_live()
        results["interrupted"] = True
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    results.setdefault("environment", {})
    state.save()

    text = report.render(results)
    with open(md_path, "w") as f:
        f.write(text)
    print(text)
    log(
        f"wrote {os.path.relpath(json_path, REPO)} and {os.path.relpath(md_path, REPO)}"
    )
    return 0 if results["finished"] else 130


if __name__ == "__main__":
    sys.exit(main())
