#!/usr/bin/env python3
"""proxima with Python actors as one command, for bench/solve.py: ``learner serve`` on a free loopback port and
``--actors`` ``proxima-actor`` processes (gymnasium's own envs, numpy inference), until the learner exits or this
process is told to stop (SIGTERM/SIGINT stop every child).

    python3 bench/python_fleet.py --python .venv/bin/python --actors 2 --env CartPole-v1 -- \\
        --config configs/cartpole.toml --seed 1 --set threads=1

Arguments after ``--`` go to ``learner serve`` (``--listen``, ``--metrics-addr none`` and ``--runs-dir``, a
temporary one unless given, are added); ``PROXIMA_BENCH_EPISODES``, when set, becomes the learner's episode log.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LEARNER = os.path.join(REPO, "target", "release", "learner")


def command(
    python: str,
    actors: int,
    env_id: str,
    learner_args: list[str],
    num_envs: int | None = None,
    runs_dir: str | None = None,
) -> list[str]:
    """The command line that runs this script under the running interpreter: ``actors`` actor processes of
    ``python`` on ``env_id`` (``num_envs`` envs each, or the actor's default), ``learner_args`` for the learner."""
    cmd = [sys.executable, os.path.abspath(__file__), "--python", python]
    cmd += ["--actors", str(actors), "--env", env_id]
    if num_envs:
        cmd += ["--num-envs", str(num_envs)]
    if runs_dir:
        cmd += ["--runs-dir", runs_dir]
    return [*cmd, "--", *learner_args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, learner: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and learner.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"))
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--num-envs", type=int, help="envs per actor (default: the actor's)")
    p.add_argument(
        "--actor-arg",
        action="append",
        default=[],
        help="one more proxima-actor argument (repeat: --actor-arg=--make --actor-arg=module:function)",
    )
    p.add_argument(
        "--runs-dir",
        help="the learner's --runs-dir (default: a new temporary directory)",
    )
    p.add_argument("learner_args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    learner_args = (
        a.learner_args[1:] if a.learner_args[:1] == ["--"] else a.learner_args
    )
    port = free_port()
    runs = a.runs_dir or tempfile.mkdtemp(prefix="bench-python-fleet-")
    cmd = [
        LEARNER,
        "serve",
        *learner_args,
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-addr",
        "none",
    ]
    cmd += ["--runs-dir", runs]
    episodes = os.environ.get("PROXIMA_BENCH_EPISODES")
    if episodes:
        cmd += ["--set", f"episode_log={json.dumps(episodes)}"]
    children: list[subprocess.Popen[bytes]] = []

    def stop_children() -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for c in children:
            try:
                c.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                c.kill()

    def on_signal(signum: int, _frame: object) -> None:
        stop_children()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    learner = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL)
    children.append(learner)
    if not wait_for_port(port, learner, 30):
        print(
            f"python_fleet: the learner is not serving on port {port}", file=sys.stderr
        )
        stop_children()
        return 1
    for i in range(a.actors):
        actor = [
            a.python,
            "-m",
            "proxima_actor",
            "--learner",
            f"http://127.0.0.1:{port}",
            "--env",
            a.env,
        ]
        actor += ["--metrics-addr", "none", "--name", f"py{i}"]
        if a.num_envs:
            actor += ["--num-envs", str(a.num_envs)]
        actor += a.actor_arg
        children.append(subprocess.Popen(actor, cwd=REPO, stdin=subprocess.DEVNULL))
    rc = learner.wait()
    stop_children()
    return rc


if __name__ == "__main__":
    sys.exit(main())
