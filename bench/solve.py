#!/usr/bin/env python3
"""Time-to-solve harness: runs one training command and measures how long,
how much CPU and how many environment steps it takes to solve the task.

    python3 bench/solve.py --name sb3 --seed 1 --max-seconds 300 \\
        [--windows 20,100] [--extra-seconds 60] -- CMD [ARG...]

Standard library only; runs under the system python3 on Linux.

How it works
------------
* A fresh, empty episodes file is created and its path exported to the
  command as PROXIMA_BENCH_EPISODES. Every finished episode appends one line
  "<unix time> <return> <length>" to it (bench/peers/episode_log.py for the
  Python peers; proxima's learner honours the same variable).
* The command starts in its own session / process group. This process makes
  itself a child subreaper (prctl), so descendants that daemonise or lose
  their parent are re-parented here and stay in the measured tree.
* Every ~20 ms the new lines of the episodes file are read. For each window
  W in --windows (default 20), the task counts as solved over W episodes at
  the first line at which the mean return of the last W finished episodes,
  over all envs in file order, is >= --target (475). The first window listed
  is the primary one: "solved" and the top-level figures are its own. The run
  goes on until every window has solved (or --max-seconds passes, or
  --extra-seconds pass after the first window to solve, or the command exits).
* Measurements at each window's solving line (under "windows" in the
  output):
    wall_s     the line's own timestamp minus the start time (so polling
               latency does not count),
    steps      sum of the lengths of all finished episodes up to that line
               (steps of episodes still running are not counted),
    episodes   finished episodes up to that line,
    cpu_s      user+system CPU time of the whole process tree (see below),
               read when the harness sees the line (~20 ms later),
    cores      cpu_s / wall_s: the average number of cores the run kept busy,
    peak_rss_mb / peak_pss_mb  the tree's memory peak up to that point.
  Plus, for the whole run:
    startup_s  time from start to the first finished episode (process start,
               imports, worker spawning, first rollout); train_wall_s is
               wall_s - startup_s (primary window),
    log_steps_per_s  training throughput from the episode log, the same
               definition for every system: (finished-episode steps at the
               last line read - at the first line) / (time of the last line
               - time of the first line). The last line read is the solving
               line of the last window to solve (or the last line before the
               run ended). The same figure up to each window's solve is in
               that window's entry.
* Then the tree is stopped: SIGTERM to the process group and to every known
  descendant, SIGKILL to whatever is left 5 s later.
* If the command exits, the --max-seconds limit passes, or the episodes never
  reach the target, the result says solved: false with the exit code and the
  last 30 lines of its stderr (for a window other than the primary one, only
  that window's entry says solved: false).

CPU accounting: the tree (all descendants of this process) is sampled from
/proc every --sample-interval seconds and once more at the moment of each
solve. Each process, keyed by (pid, start time) against pid reuse, counts
with the largest utime+stime seen for it, so workers that exit during the run
are not lost; the last interval before a process exits and processes that
live shorter than one sampling interval are missed. Threads are included
(per-process figures cover all threads).

Memory: peak_rss_mb is the maximum over samples of the summed RSS of the
tree (shared pages of forked workers count once per process, so it
over-states Python multi-process peers); peak_pss_mb, sampled every
--pss-interval (5) s and at each solve from smaps_rollup, splits shared pages
between processes and is the fairer figure for comparing multi-process
systems.

Output: one JSON object on stdout. The command's stdout/stderr go to files in
the work directory (a temporary one, removed afterwards, unless --work-dir is
given).
"""

import argparse
import collections
import ctypes
import itertools
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, BinaryIO

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
EPISODES_ENV = "PROXIMA_BENCH_EPISODES"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_windows(value: str) -> list[int]:
    try:
        windows = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {value!r}") from None
    if not windows or any(w < 1 for w in windows) or len(set(windows)) != len(windows):
        raise argparse.ArgumentTypeError(
            f"need distinct positive window sizes: {value!r}"
        )
    return windows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="solve.py",
        description="Run a training command until it solves the task; report "
        "wall time, CPU time, env steps and memory as JSON.",
        usage="%(prog)s [options] -- COMMAND [ARG...]",
    )
    p.add_argument("--name", required=True, help="label for the result (e.g. sb3)")
    p.add_argument("--seed", type=int, default=None, help="recorded in the result only")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="give up (solved: false) after this many seconds",
    )
    p.add_argument("--target", type=float, default=475.0, help="mean return to reach")
    p.add_argument(
        "--windows",
        type=parse_windows,
        default=[20],
        help="episodes in the moving mean, comma-separated; the first is the "
        "primary window (default 20)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="a single window (same as --windows W)",
    )
    p.add_argument(
        "--extra-seconds",
        type=float,
        default=None,
        help="after the first window solves, wait at most this long for the "
        "others (default: until --max-seconds)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.02,
        help="seconds between reads of the episodes file",
    )
    p.add_argument(
        "--sample-interval",
        type=float,
        default=0.1,
        help="seconds between CPU/RSS samples of the process tree",
    )
    p.add_argument(
        "--pss-interval",
        type=float,
        default=5.0,
        help="seconds between PSS samples (smaps_rollup walks page "
        "tables: tens of ms for a multi-GB tree); 0 disables",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="keep episodes.txt, stdout.log, stderr.log here "
        "(default: a temporary directory, removed afterwards)",
    )
    p.add_argument("--cwd", default=None, help="working directory for the command")
    return p


def parse_args() -> argparse.Namespace:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])  # handles -h/--help
    args.command = argv[split + 1 :]
    if not args.command:
        _parser().error("no command given after --")
    if args.window is not None:
        args.windows = [args.window]
    return args


# --------------------------------------------------------------------------
# Process tree inspection (/proc)


def set_child_subreaper() -> bool:
    """Orphaned descendants get re-parented to us instead of init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36
        return bool(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def read_stat(pid: int) -> tuple[int, int, int, int] | None:
    """(ppid, start_ticks, cpu_ticks, rss_pages) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    ppid = int(fields[1])
    utime, stime = int(fields[11]), int(fields[12])
    start = int(fields[19])
    rss = int(fields[21])
    return ppid, start, utime + stime, rss


def read_pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_stats(ancestor: int) -> dict[int, tuple[int, int, int]]:
    """{pid: (start, cpu_ticks, rss_pages)} for every descendant of ancestor."""
    info: dict[int, tuple[int, int, int, int]] = {}
    children: dict[int, list[int]] = collections.defaultdict(list)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = read_stat(int(name))
        if st is None:
            continue
        pid = int(name)
        info[pid] = st
        children[st[0]].append(pid)
    out = {}
    stack = list(children.get(ancestor, ()))
    while stack:
        pid = stack.pop()
        _, start, cpu, rss = info[pid]
        out[pid] = (start, cpu, rss)
        stack.extend(children.get(pid, ()))
    return out


class TreeMeter:
    """CPU time and memory of all descendants of this process."""

    def __init__(self, pss_interval: float) -> None:
        self.me = os.getpid()
        self.pss_interval = pss_interval
        self.cpu_ticks: dict[
            tuple[int, int], int
        ] = {}  # (pid, start) -> largest ticks seen
        self.peak_rss = 0  # bytes
        self.peak_pss = 0  # bytes
        self.last_pss_time = 0.0
        self.pids: set[int] = set()

    def sample(self, with_pss: bool = False) -> None:
        tree = tree_stats(self.me)
        self.pids = set(tree)
        rss = 0
        for pid, (start, cpu, rss_pages) in tree.items():
            key = (pid, start)
            if cpu > self.cpu_ticks.get(key, -1):
                self.cpu_ticks[key] = cpu
            rss += rss_pages * PAGE_BYTES
        self.peak_rss = max(self.peak_rss, rss)
        now = time.monotonic()
        if self.pss_interval > 0 and (
            with_pss or now - self.last_pss_time >= self.pss_interval
        ):
            self.last_pss_time = now
            pss = sum(read_pss_kb(pid) for pid in tree) * 1024
            self.peak_pss = max(self.peak_pss, pss)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_ticks.values()) / CLK_TCK


# --------------------------------------------------------------------------
# Episodes file


class Solve:
    """Where one window's moving mean first reached the target."""

    def __init__(self, ts: float, steps: int, episodes: int) -> None:
        self.ts = ts
        self.steps = steps
        self.episodes = episodes
        self.cpu_s: float | None = None
        self.peak_rss: int | None = None
        self.peak_pss: int | None = None
        self.detect_mono: float | None = None


class EpisodeReader:
    """Incrementally parses the episodes file and tracks the solve criterion
    of every window."""

    def __init__(self, f: BinaryIO, windows: list[int], target: float) -> None:
        self.f = f
        self.partial = b""
        self.windows = windows
        self.returns: collections.deque[float] = collections.deque(maxlen=max(windows))
        self.sums = {w: 0.0 for w in windows}
        self.target = target
        self.episodes = 0
        self.steps = 0
        self.first: tuple[float, int] | None = (
            None  # (timestamp, steps) of the first line
        )
        self.last: tuple[float, int] | None = None  # of the last line consumed
        self.solved: dict[int, Solve] = {}
        self.best_mean: dict[int, float] = {}
        self.bad_lines = 0

    def done(self) -> bool:
        return len(self.solved) == len(self.windows)

    def poll(self) -> list[int]:
        """Consume newly appended lines (up to the line at which the last
        window solves); returns the windows that solved in them."""
        new: list[int] = []
        chunk = self.f.read()
        if not chunk:
            return new
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()  # incomplete last line (or b"")
        for line in lines:
            if self.done():
                break
            try:
                ts_s, ret_s, len_s = line.split()
                ts, ret, length = float(ts_s), float(ret_s), int(len_s)
            except ValueError:
                self.bad_lines += 1
                continue
            self.episodes += 1
            self.steps += length
            if self.first is None:
                self.first = (ts, self.steps)
            self.last = (ts, self.steps)
            for w in self.windows:
                if len(self.returns) >= w:  # the episode that leaves this window
                    self.sums[w] -= self.returns[-w]
                self.sums[w] += ret
            self.returns.append(ret)
            for w in self.windows:
                if self.episodes < w:
                    continue
                mean = self.sums[w] / w
                if (
                    abs(mean - self.target) < 1e-6
                ):  # running sums drift: recompute exactly
                    mean = math.fsum(itertools.islice(reversed(self.returns), w)) / w
                self.best_mean[w] = max(self.best_mean.get(w, mean), mean)
                if w not in self.solved and mean >= self.target:
                    self.solved[w] = Solve(ts, self.steps, self.episodes)
                    new.append(w)
        return new

    def last_mean(self, w: int) -> float | None:
        """Mean return of the last w episodes (None before w have finished)."""
        if len(self.returns) < w:
            return None
        recent = list(self.returns)[-w:]
        return sum(recent) / len(recent)


def steps_per_s(
    first: tuple[float, int] | None, last: tuple[float, int] | None
) -> float | None:
    """Finished-episode steps per second between two episode-log lines."""
    if first is None or last is None or last[0] <= first[0]:
        return None
    return round((last[1] - first[1]) / (last[0] - first[0]), 1)


# --------------------------------------------------------------------------
# Running and stopping the command


def reap(root_pid: int, status: dict[str, Any]) -> None:
    """Reap exited children (we are a subreaper); record the root's exit
    status and its rusage (its own CPU plus that of every descendant it
    waited for, which is exact where the /proc samples are up to one
    interval old)."""
    while True:
        try:
            pid, st, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid == root_pid:
            status["code"] = os.waitstatus_to_exitcode(st)
            status["cpu"] = usage.ru_utime + usage.ru_stime


def stop_tree(root_pid: int, status: dict[str, Any], grace: float = 5.0) -> None:
    """SIGTERM the process group and all descendants; SIGKILL after grace s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(root_pid, sig)  # the command is its own group leader
        except OSError:
            pass
        for pid in tree_stats(os.getpid()):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reap(root_pid, status)
            if not tree_stats(os.getpid()):
                return
            time.sleep(0.05)


def stderr_tail(path: str, n: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return ANSI_ESCAPE.sub("", "\n".join(lines[-n:]))


def mb(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**20, 1)


def window_entry(
    reader: EpisodeReader, w: int, start: float, t0: float
) -> dict[str, Any]:
    """The figures of one window: at its solve, or why it has none."""
    s = reader.solved.get(w)
    if s is None:
        return {
            "window": w,
            "solved": False,
            "best_mean": reader.best_mean.get(w),
            "last_mean": reader.last_mean(w),
        }
    wall = s.ts - start
    cpu = s.cpu_s
    return {
        "window": w,
        "solved": True,
        "wall_s": round(wall, 3),
        "cpu_s": None if cpu is None else round(cpu, 3),
        "cores": None if cpu is None or wall <= 0 else round(cpu / wall, 2),
        "steps": s.steps,
        "episodes": s.episodes,
        "peak_rss_mb": mb(s.peak_rss),
        "peak_pss_mb": mb(s.peak_pss),
        "log_steps_per_s": steps_per_s(reader.first, (s.ts, s.steps)),
        # How long after the solving episode the harness noticed it.
        "detect_latency_s": None
        if s.detect_mono is None
        else round(max(0.0, (s.detect_mono - t0) - wall), 3),
    }


def main() -> int:
    args = parse_args()
    own_dir = args.work_dir is None
    work = tempfile.mkdtemp(prefix=f"solve-{args.name}-") if own_dir else args.work_dir
    os.makedirs(work, exist_ok=True)
    episodes_path = os.path.join(work, "episodes.txt")
    open(episodes_path, "wb").close()  # fresh and empty
    try:
        with open(episodes_path, "rb") as episodes:
            result = measure(args, work, episodes)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    if not own_dir:
        result["work_dir"] = os.path.abspath(work)
    print(json.dumps(result), flush=True)
    return 0 if result["solved"] else 1


def measure(args: argparse.Namespace, work: str, episodes: BinaryIO) -> dict[str, Any]:
    """Runs the command until it solves (or fails); the result object."""
    episodes_path = os.path.join(work, "episodes.txt")
    stdout_path = os.path.join(work, "stdout.log")
    stderr_path = os.path.join(work, "stderr.log")

    subreaper = set_child_subreaper()
    env = dict(os.environ)
    env[EPISODES_ENV] = os.path.abspath(episodes_path)

    # Turn SIGTERM/SIGINT to us into an orderly stop of the tree.
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    windows: list[int] = args.windows
    primary = windows[0]
    meter = TreeMeter(args.pss_interval)
    reader = EpisodeReader(episodes, windows, args.target)
    status: dict[str, Any] = {}
    result: dict[str, Any] = {
        "name": args.name,
        "seed": args.seed,
        "solved": False,
        "window": primary,
        "windows_requested": windows,
        "target": args.target,
    }
    error = None

    start = time.time()
    t0 = time.monotonic()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        try:
            proc = subprocess.Popen(
                args.command,
                env=env,
                cwd=args.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as e:
            result.update(error=f"cannot start command: {e}")
            return result
    root = proc.pid
    next_sample = 0.0
    first_solve_mono: float | None = None
    stop_reason = None

    def record(new: list[int], now: float) -> None:
        nonlocal first_solve_mono
        if not new:
            return
        meter.sample(with_pss=True)
        cpu = max(meter.cpu_seconds(), status.get("cpu", 0.0))
        for w in new:
            s = reader.solved[w]
            s.cpu_s, s.peak_rss, s.peak_pss, s.detect_mono = (
                cpu,
                meter.peak_rss,
                meter.peak_pss,
                now,
            )
        if first_solve_mono is None:
            first_solve_mono = now

    while True:
        now = time.monotonic()
        record(reader.poll(), now)
        if reader.done():
            stop_reason = "solved"
            break
        if now >= next_sample:
            meter.sample()
            next_sample = now + args.sample_interval
        reap(root, status)
        if "code" in status:
            # Exited: the last episodes may have been written just before.
            record(reader.poll(), now)
            if not reader.done():
                error = f"command exited with code {status['code']} before solving"
            break
        if now - t0 >= args.max_seconds:
            error = f"not solved within {args.max_seconds:g} s"
            break
        if (
            first_solve_mono is not None
            and args.extra_seconds is not None
            and now - first_solve_mono >= args.extra_seconds
        ):
            error = f"not solved within {args.extra_seconds:g} s after the first window solved"
            break
        if interrupted:
            error = f"harness interrupted by signal {interrupted[0]}"
            break
        time.sleep(args.poll_interval)

    end_mono = time.monotonic()
    meter.sample()
    # If the command has already exited, the kernel's figure for it (and the
    # descendants it reaped) may be the more complete one.
    cpu_at_end = max(meter.cpu_seconds(), status.get("cpu", 0.0))
    # Also when the command exited by itself: stray descendants may remain.
    stop_tree(root, status)
    reap(root, status)

    per_window = {str(w): window_entry(reader, w, start, t0) for w in windows}
    for w in windows:
        if not per_window[str(w)]["solved"] and error:
            per_window[str(w)]["error"] = error
    p = per_window[str(primary)]
    if p["solved"]:
        result.update(
            {
                k: p[k]
                for k in (
                    "solved",
                    "wall_s",
                    "cpu_s",
                    "cores",
                    "steps",
                    "episodes",
                    "detect_latency_s",
                )
            }
        )
    else:
        wall = end_mono - t0
        result.update(
            wall_s=round(wall, 3),
            cpu_s=round(cpu_at_end, 3),
            cores=round(cpu_at_end / wall, 2) if wall > 0 else None,
            steps=reader.steps,
            episodes=reader.episodes,
            best_mean=reader.best_mean.get(primary),
            last_mean=reader.last_mean(primary),
        )
    startup = None if reader.first is None else round(reader.first[0] - start, 3)
    result.update(
        startup_s=startup,
        train_wall_s=None if startup is None else round(result["wall_s"] - startup, 3),
        peak_rss_mb=p.get("peak_rss_mb") if p["solved"] else mb(meter.peak_rss),
        peak_pss_mb=p.get("peak_pss_mb") if p["solved"] else mb(meter.peak_pss),
        windows=per_window,
        # Whole run: first finished episode to the last line read.
        log_steps_per_s=steps_per_s(reader.first, reader.last),
        log_steps=None
        if reader.first is None or reader.last is None
        else reader.last[1] - reader.first[1],
        log_seconds=None
        if reader.first is None or reader.last is None
        else round(reader.last[0] - reader.first[0], 3),
        run_cpu_s=round(cpu_at_end, 3),
        run_wall_s=round(end_mono - t0, 3),
        stop_reason=stop_reason or error,
        processes=len(meter.cpu_ticks),
        exit_code=status.get("code"),
        error=None if p["solved"] else error,
        subreaper=subreaper,
        # This harness's own CPU (polling /proc): not in cpu_s, shown so
        # that its load on the machine is visible.
        harness_cpu_s=round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 3),
    )
    if reader.bad_lines:
        result["bad_lines"] = reader.bad_lines
    if not all(v["solved"] for v in per_window.values()):
        result["stderr_tail"] = stderr_tail(stderr_path)
    return result


if __name__ == "__main__":
    sys.exit(main())
