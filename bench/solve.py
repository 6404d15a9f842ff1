#!/usr/bin/env python3
"""Time-to-solve harness: runs one training command and measures how long,
how much CPU and how many environment steps it takes to solve the task.

    python3 bench/solve.py --name sb3 --seed 1 --max-seconds 300 -- CMD [ARG...]

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
* Every ~20 ms the new lines of the episodes file are read. The task counts
  as solved at the first line at which the mean return of the last --window
  (20) finished episodes, over all envs in file order, is >= --target (475).
* Measurements at that line:
    wall_s     the line's own timestamp minus the start time (so polling
               latency does not count),
    steps      sum of the lengths of all finished episodes up to that line
               (steps of episodes still running are not counted),
    startup_s  time from start to the first finished episode (process start,
               imports, worker spawning, first rollout); train_wall_s is
               wall_s - startup_s,
    cpu_s      user+system CPU time of the whole process tree (see below),
    peak_rss_mb / peak_pss_mb  the tree's memory peak up to that point.
* Then the tree is stopped: SIGTERM to the process group and to every known
  descendant, SIGKILL to whatever is left 5 s later.
* If the command exits, the --max-seconds limit passes, or the episodes never
  reach the target, the result says solved: false with the exit code and the
  last 30 lines of its stderr.

CPU accounting: the tree (all descendants of this process) is sampled from
/proc every --sample-interval seconds and once more at the moment of the
solve. Each process, keyed by (pid, start time) against pid reuse, counts
with the largest utime+stime seen for it, so workers that exit during the run
are not lost; the last interval before a process exits and processes that
live shorter than one sampling interval are missed. Threads are included
(per-process figures cover all threads).

Memory: peak_rss_mb is the maximum over samples of the summed RSS of the
tree (shared pages of forked workers count once per process, so it
over-states Python multi-process peers); peak_pss_mb, sampled every --pss-interval
(5) s and at the solve from smaps_rollup, splits shared pages between processes and is the
fairer figure for comparing multi-process systems.

Output: one JSON object on stdout. The command's stdout/stderr go to files in
the work directory (a temporary one, removed afterwards, unless --work-dir is
given).
"""

import argparse
import collections
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
EPISODES_ENV = "PROXIMA_BENCH_EPISODES"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_args():
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])  # handles -h/--help
    args.command = argv[split + 1:]
    if not args.command:
        _parser().error("no command given after --")
    return args


def _parser():
    p = argparse.ArgumentParser(
        prog="solve.py",
        description="Run a training command until it solves the task; report "
                    "wall time, CPU time, env steps and memory as JSON.",
        usage="%(prog)s [options] -- COMMAND [ARG...]")
    p.add_argument("--name", required=True, help="label for the result (e.g. sb3)")
    p.add_argument("--seed", type=int, default=None, help="recorded in the result only")
    p.add_argument("--max-seconds", type=float, default=600.0,
                   help="give up (solved: false) after this many seconds")
    p.add_argument("--target", type=float, default=475.0, help="mean return to reach")
    p.add_argument("--window", type=int, default=20, help="episodes in the moving mean")
    p.add_argument("--poll-interval", type=float, default=0.02,
                   help="seconds between reads of the episodes file")
    p.add_argument("--sample-interval", type=float, default=0.1,
                   help="seconds between CPU/RSS samples of the process tree")
    p.add_argument("--pss-interval", type=float, default=5.0,
                   help="seconds between PSS samples (smaps_rollup walks page "
                        "tables: tens of ms for a multi-GB tree); 0 disables")
    p.add_argument("--work-dir", default=None,
                   help="keep episodes.txt, stdout.log, stderr.log here "
                        "(default: a temporary directory, removed afterwards)")
    p.add_argument("--cwd", default=None, help="working directory for the command")
    return p


# --------------------------------------------------------------------------
# Process tree inspection (/proc)

def set_child_subreaper():
    """Orphaned descendants get re-parented to us instead of init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def read_stat(pid):
    """(ppid, start_ticks, cpu_ticks, rss_pages) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    ppid = int(fields[1])
    utime, stime = int(fields[11]), int(fields[12])
    start = int(fields[19])
    rss = int(fields[21])
    return ppid, start, utime + stime, rss


def read_pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_stats(ancestor):
    """{pid: (start, cpu_ticks, rss_pages)} for every descendant of ancestor."""
    info = {}
    children = collections.defaultdict(list)
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

    def __init__(self, pss_interval):
        self.me = os.getpid()
        self.pss_interval = pss_interval
        self.cpu_ticks = {}     # (pid, start) -> largest cpu ticks seen
        self.peak_rss = 0       # bytes
        self.peak_pss = 0       # bytes
        self.last_pss_time = 0.0
        self.pids = set()

    def sample(self, with_pss=False):
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
        if self.pss_interval > 0 and (with_pss or now - self.last_pss_time >= self.pss_interval):
            self.last_pss_time = now
            pss = sum(read_pss_kb(pid) for pid in tree) * 1024
            self.peak_pss = max(self.peak_pss, pss)

    def cpu_seconds(self):
        return sum(self.cpu_ticks.values()) / CLK_TCK


# --------------------------------------------------------------------------
# Episodes file

class EpisodeReader:
    """Incrementally parses the episodes file and tracks the solve criterion."""

    def __init__(self, path, window, target):
        self.f = open(path, "rb")
        self.partial = b""
        self.window = collections.deque(maxlen=window)
        self.target = target
        self.episodes = 0
        self.steps = 0
        self.first_ts = None
        self.solved_at = None   # (timestamp, steps, episodes) at the solving line
        self.best_mean = None
        self.bad_lines = 0

    def poll(self):
        """Consume newly appended lines; True once the target is reached."""
        chunk = self.f.read()
        if not chunk:
            return self.solved_at is not None
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()  # incomplete last line (or b"")
        for line in lines:
            if self.solved_at is not None:
                break
            try:
                ts_s, ret_s, len_s = line.split()
                ts, ret, length = float(ts_s), float(ret_s), int(len_s)
            except ValueError:
                self.bad_lines += 1
                continue
            self.episodes += 1
            self.steps += length
            if self.first_ts is None:
                self.first_ts = ts
            self.window.append(ret)
            if len(self.window) == self.window.maxlen:
                mean = sum(self.window) / len(self.window)
                self.best_mean = mean if self.best_mean is None else max(self.best_mean, mean)
                if mean >= self.target:
                    self.solved_at = (ts, self.steps, self.episodes)
        return self.solved_at is not None

    def last_mean(self):
        return sum(self.window) / len(self.window) if self.window else None


# --------------------------------------------------------------------------
# Running and stopping the command

def reap(root_pid, status):
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


def stop_tree(root_pid, status, grace=5.0):
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


def stderr_tail(path, n=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return ANSI_ESCAPE.sub("", "\n".join(lines[-n:]))


def main():
    args = parse_args()
    own_dir = args.work_dir is None
    work = tempfile.mkdtemp(prefix=f"solve-{args.name}-") if own_dir else args.work_dir
    os.makedirs(work, exist_ok=True)
    episodes_path = os.path.join(work, "episodes.txt")
    open(episodes_path, "wb").close()  # fresh and empty
    stdout_path = os.path.join(work, "stdout.log")
    stderr_path = os.path.join(work, "stderr.log")

    subreaper = set_child_subreaper()
    env = dict(os.environ)
    env[EPISODES_ENV] = os.path.abspath(episodes_path)

    # Turn SIGTERM/SIGINT to us into an orderly stop of the tree.
    interrupted = []

    def on_signal(signum, _frame):
        interrupted.append(signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    meter = TreeMeter(args.pss_interval)
    reader = EpisodeReader(episodes_path, args.window, args.target)
    status = {}
    result = {"name": args.name, "seed": args.seed, "solved": False}
    error = None

    start = time.time()
    t0 = time.monotonic()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        try:
            proc = subprocess.Popen(args.command, env=env, cwd=args.cwd,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        except OSError as e:
            result.update(error=f"cannot start command: {e}")
            print(json.dumps(result))
            if own_dir:
                shutil.rmtree(work, ignore_errors=True)
            return 1
    root = proc.pid
    next_sample = 0.0
    solve_detect_mono = None
    while True:
        now = time.monotonic()
        if reader.poll():
            solve_detect_mono = now
            meter.sample(with_pss=True)
            break
        if now >= next_sample:
            meter.sample()
            next_sample = now + args.sample_interval
        reap(root, status)
        if "code" in status:
            # Exited: the last episodes may have been written just before.
            if reader.poll():
                solve_detect_mono = now
                break
            error = f"command exited with code {status['code']} before solving"
            break
        if now - t0 >= args.max_seconds:
            error = f"not solved within {args.max_seconds:g} s"
            break
        if interrupted:
            error = f"harness interrupted by signal {interrupted[0]}"
            break
        time.sleep(args.poll_interval)

    end_mono = time.monotonic()
    if solve_detect_mono is None:
        meter.sample()  # fresh figures for the unsolved report
    # If the command has already exited, the kernel's figure for it (and the
    # descendants it reaped) may be the more complete one.
    cpu_at_end = max(meter.cpu_seconds(), status.get("cpu", 0.0))
    # Also when the command exited by itself: stray descendants may remain.
    stop_tree(root, status)
    reap(root, status)

    if reader.solved_at is not None:
        ts, steps, episodes = reader.solved_at
        wall = ts - start
        result.update(
            solved=True,
            wall_s=round(wall, 3),
            cpu_s=round(cpu_at_end, 3),
            steps=steps,
            episodes=episodes,
            # How long after the solving episode the harness noticed it.
            detect_latency_s=round(max(0.0, (solve_detect_mono - t0) - wall), 3),
        )
    else:
        result.update(
            wall_s=round(end_mono - t0, 3),
            cpu_s=round(cpu_at_end, 3),
            steps=reader.steps,
            episodes=reader.episodes,
            best_mean=reader.best_mean,
            last_mean=reader.last_mean(),
        )
    startup = None if reader.first_ts is None else round(reader.first_ts - start, 3)
    result.update(
        startup_s=startup,
        train_wall_s=None if startup is None else round(result["wall_s"] - startup, 3),
        peak_rss_mb=round(meter.peak_rss / 2**20, 1),
        peak_pss_mb=round(meter.peak_pss / 2**20, 1),
        processes=len(meter.cpu_ticks),
        exit_code=status.get("code"),
        error=error,
        subreaper=subreaper,
        # This harness's own CPU (polling /proc): not in cpu_s, shown so
        # that its load on the machine is visible.
        harness_cpu_s=round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 3),
    )
    if reader.bad_lines:
        result["bad_lines"] = reader.bad_lines
    if not result["solved"]:
        result["stderr_tail"] = stderr_tail(stderr_path)
    if not own_dir:
        result["work_dir"] = os.path.abspath(work)
    print(json.dumps(result), flush=True)
    if own_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if result["solved"] else 1


if __name__ == "__main__":
    sys.exit(main())
