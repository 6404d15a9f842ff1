"""Uniform episode recording for the peer benchmarks.

Every peer runner wraps each single (non-vectorised) CartPole env it creates
with :func:`wrap`. The wrapper sits directly on ``gym.make(...)`` so it sees
the raw rewards and the TimeLimit truncation, and whenever an episode
finishes it appends one line

    "<time.time()> <episode_return> <episode_length>\\n"

to the file named by the environment variable ``PROXIMA_BENCH_EPISODES``
(bench/solve.py reads that file to decide when a run has solved the task).

The file is opened with O_APPEND and each line goes out in a single
``os.write`` call, so lines from envs in different worker processes (Sample
Factory, RLlib) interleave whole, never torn. Nothing is buffered in Python:
the line is in the file as soon as ``step`` returns. The descriptor is opened
lazily and re-opened after a fork. If the variable is unset the wrapper only
passes calls through.

Works with both ``gymnasium`` (5-tuple ``step``; SB3 2.x, Sample Factory,
RLlib) and the legacy ``gym`` 0.21 API (4-tuple ``step``; the PyPI cleanrl
package); the base class is picked from the env being wrapped.
"""

import os
import time
from typing import Any

ENV_VAR = "PROXIMA_BENCH_EPISODES"


class _Sink:
    """Per-process append-only writer for the episodes file."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid: int | None = None

    def write(self, ret: float, length: int) -> None:
        path = os.environ.get(ENV_VAR)
        if not path:
            return
        if self._fd is None or self._pid != os.getpid():
            # First write in this process (or we were forked): own descriptor.
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        os.write(self._fd, f"{time.time():.6f} {ret:.6g} {length}\n".encode())


_sink = _Sink()


class _Counter:
    """Return/length bookkeeping shared by both wrapper flavours."""

    _ep_return: float
    _ep_length: int

    def _reset_counts(self) -> None:
        self._ep_return = 0.0
        self._ep_length = 0

    def _count(self, reward: Any, done: bool) -> None:
        self._ep_return += float(reward)
        self._ep_length += 1
        if done:
            _sink.write(self._ep_return, self._ep_length)
            self._reset_counts()


def _gymnasium_wrapper_class() -> type:
    import gymnasium

    class EpisodeLog(_Counter, gymnasium.Wrapper):  # type: ignore[misc]
        def __init__(self, env: Any) -> None:
            gymnasium.Wrapper.__init__(self, env)
            self._reset_counts()

        def reset(self, **kwargs: Any) -> Any:
            self._reset_counts()
            return self.env.reset(**kwargs)

        def step(self, action: Any) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._count(reward, terminated or truncated)
            return obs, reward, terminated, truncated, info

    return EpisodeLog


def _legacy_gym_wrapper_class() -> type:
    import gym

    class LegacyEpisodeLog(_Counter, gym.Wrapper):  # type: ignore[misc]
        def __init__(self, env: Any) -> None:
            gym.Wrapper.__init__(self, env)
            self._reset_counts()

        def reset(self, **kwargs: Any) -> Any:
            self._reset_counts()
            return self.env.reset(**kwargs)

        def step(self, action: Any) -> Any:
            obs, reward, done, info = self.env.step(action)
            self._count(reward, done)
            return obs, reward, done, info

    return LegacyEpisodeLog


_classes: dict[str, type] = {}


def wrap(env: Any) -> Any:
    """Wrap a single env (gymnasium or legacy gym) with the episode logger."""
    module = type(env.unwrapped).__module__.split(".")[0]
    flavour = "gym" if module == "gym" else "gymnasium"
    if flavour not in _classes:
        _classes[flavour] = (
            _legacy_gym_wrapper_class()
            if flavour == "gym"
            else _gymnasium_wrapper_class()
        )
    return _classes[flavour](env)
