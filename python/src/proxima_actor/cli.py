"""``proxima-actor``: run an actor against a learner, or evaluate and render a saved policy in gymnasium.

    proxima-actor --learner URL --env ID [--num-envs N] [--token T] [--tls-ca PEM] [--vectorization sync|async]
                  [--make module:function | --atari] [--env-kwargs JSON] [--metrics-addr ADDR]
    proxima-actor eval --checkpoint PATH --env ID [--atari] [--episodes N] [--deterministic] [--seed S]
    proxima-actor render --checkpoint PATH --env ID [--atari] --out episode.gif

Flags default to the same ``PROXIMA_*`` environment variables as the Rust actor. Without ``--num-envs`` (or
``PROXIMA_NUM_ENVS``) the actor steps as many envs as the learner names (its ``actors.num_envs``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from threadpoolctl import threadpool_limits

from .atari import make_atari
from .client import Actor, ActorOptions, Refused, _host_name, stop_on_signals
from .evaluate import evaluate, render
from .metrics import ActorMetrics
from .policy import Policy, PolicyError
from .sampler import EnvError, EnvFactory


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _env_flag(name: str) -> bool:
    """A boolean ``PROXIMA_*`` variable: set to 1, true, yes or on (any case); unset, empty, 0, false, no or off is
    false, anything else an error."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: expected 1, true, yes, on or 0, false, no, off")


def _positive(s: str) -> int:
    n = int(s)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{s!r}: must be a whole number, at least 1")
    return n


class WideSeeds(gym.Wrapper[Any, Any, Any, Any]):
    """A MinAtar game that takes any 64-bit seed, as the learner hands them out and as the Rust games take them: the
    package seeds ``RandomState(seed)``, which refuses seeds of 2**32 and above; those seed
    ``RandomState([low 32 bits, high 32 bits])`` here, as the Rust games do."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None and seed >= 2**32:
            words = np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32)
            self.env.unwrapped.seed(words)  # type: ignore[attr-defined]
            seed = None
        return self.env.reset(seed=seed, options=options)


def make_minatar(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """The ``minatar`` package's game ``env_id`` (``pip install minatar``), its ids registered on first use, taking
    any 64-bit seed (:class:`WideSeeds`)."""
    if env_id not in gym.registry:
        from minatar.gym import register_envs

        register_envs()
    return WideSeeds(gym.make(env_id, **kwargs))


def env_factory(env_id: str, make: str | None, env_kwargs: str | None, atari: bool = False, **extra: Any) -> EnvFactory:
    """``gymnasium.make(env_id, **kwargs)``, or ``module:function(**kwargs)`` for an env that is not registered;
    ``MinAtar/*`` ids through :func:`make_minatar`; with ``atari``, an ``ALE/*`` id with the standard DQN
    preprocessing (:func:`~proxima_actor.atari.make_atari`)."""
    kwargs: dict[str, Any] = json.loads(env_kwargs) if env_kwargs else {}
    if not isinstance(kwargs, dict):
        raise ValueError("--env-kwargs must be a JSON object")
    kwargs.update(extra)
    if atari:
        if make:
            raise ValueError("--atari builds the env itself: leave out --make")
        if not env_id.startswith("ALE/"):
            raise ValueError(f"--atari takes ALE ids such as ALE/Pong-v5, not {env_id!r}")
        return functools.partial(make_atari, env_id, **kwargs)
    if make:
        module, sep, name = make.partition(":")
        if not sep:
            raise ValueError(f"--make {make!r}: expected module:function")
        fn = getattr(importlib.import_module(module), name)
        return functools.partial(fn, **kwargs)
    if env_id.startswith("MinAtar/"):
        return functools.partial(make_minatar, env_id, **kwargs)
    return functools.partial(gym.make, env_id, **kwargs)


def _add_env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default=_env("PROXIMA_ENV", "CartPole-v1"), help="env id (the learner's) [PROXIMA_ENV]")
    p.add_argument("--make", default=_env("PROXIMA_MAKE"), help="module:function that builds the env [PROXIMA_MAKE]")
    p.add_argument("--env-kwargs", default=_env("PROXIMA_ENV_KWARGS"), help="JSON keyword arguments for the env")
    p.add_argument(
        "--atari",
        action="store_true",
        default=_env_flag("PROXIMA_ATARI"),
        help="an ALE/<Game>-v5 id with the DQN preprocessing (84x84 grayscale, 4 frames stacked, a lost life ends the "
        "episode, rewards clipped to their sign); games' scores reported as the episodes' returns [PROXIMA_ATARI]",
    )


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxima-actor", description="Run gymnasium envs as a proxima actor.")
    p.add_argument("--learner", default=_env("PROXIMA_LEARNER", "http://127.0.0.1:50051"), help="[PROXIMA_LEARNER]")
    _add_env_args(p)
    p.add_argument(
        "--num-envs",
        type=_positive,
        default=_env("PROXIMA_NUM_ENVS") or None,
        help="envs to step together; default: as many as the learner names (its actors.num_envs) [PROXIMA_NUM_ENVS]",
    )
    rollout_steps = _env("PROXIMA_ROLLOUT_STEPS")
    p.add_argument("--rollout-steps", type=_positive, default=int(rollout_steps) if rollout_steps else None)
    p.add_argument("--name", default=_env("PROXIMA_ACTOR_NAME", _host_name()))
    p.add_argument("--token", default=_env("PROXIMA_TOKEN"), help="[PROXIMA_TOKEN]")
    p.add_argument("--tls-ca", default=_env("PROXIMA_TLS_CA"), help="PEM CA that signed the learner's certificate")
    p.add_argument("--tls-domain", default=_env("PROXIMA_TLS_DOMAIN"))
    p.add_argument("--vectorization", choices=["sync", "async"], default=_env("PROXIMA_VECTORIZATION", "sync"))
    p.add_argument("--max-backoff-seconds", type=float, default=10.0)
    p.add_argument("--max-message-bytes", type=int, default=16 << 20)
    p.add_argument("--policy-wait-ms", type=int, default=int(_env("PROXIMA_POLICY_WAIT_MS", "250") or 250))
    p.add_argument(
        "--blas-threads",
        type=_positive,
        default=int(_env("PROXIMA_BLAS_THREADS", "1") or 1),
        help="threads of numpy's matrix products in inference (default 1: a conv policy's products are small, and "
        "more threads spin against the envs, other actors and a learner on the same host) [PROXIMA_BLAS_THREADS]",
    )
    p.add_argument(
        "--metrics-addr",
        default=_env("PROXIMA_METRICS_ADDR") or None,
        help="HOST:PORT (a taken port is an error) or none [PROXIMA_METRICS_ADDR]; default: 0.0.0.0 at the first "
        "free port of 9001-9099, so several actors share a host (logged)",
    )
    return p


def _policy_parser(command: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"proxima-actor {command}", description=description)
    p.add_argument("--checkpoint", required=True, type=Path, help="model.safetensors or checkpoint-*.safetensors")
    _add_env_args(p)
    p.add_argument("--seed", type=int, default=0)
    return p


def _eval(argv: Sequence[str]) -> int:
    p = _policy_parser("eval", "Play episodes with a saved policy and report the returns.")
    p.add_argument("--episodes", type=_positive, default=10)
    p.add_argument("--deterministic", action="store_true", help="act with the mode instead of sampling")
    a = p.parse_args(argv)
    report = evaluate(
        Policy.load(a.checkpoint),
        env_factory(a.env, a.make, a.env_kwargs, a.atari),
        a.env,
        a.episodes,
        a.deterministic,
        a.seed,
    )
    print(report.human())
    print(report.json())
    return 0


def _render(argv: Sequence[str]) -> int:
    p = _policy_parser("render", "Draw one deterministic episode of a saved policy as a GIF or MP4.")
    p.add_argument("--out", type=Path, default=Path("episode.gif"))
    p.add_argument("--max-frames", type=_positive, default=1000)
    a = p.parse_args(argv)
    make = env_factory(a.env, a.make, a.env_kwargs, a.atari, render_mode="rgb_array")
    ret, length, frames = render(Policy.load(a.checkpoint), make, a.out, a.seed, a.max_frames)
    print(f"{a.env}: {frames} frames, episode return {ret:.2f} over {length} steps; wrote {a.out}")
    return 0


def _run(argv: Sequence[str]) -> int:
    a = _run_parser().parse_args(argv)
    opts = ActorOptions(
        learner=a.learner,
        env=a.env,
        num_envs=a.num_envs,
        rollout_steps=a.rollout_steps,
        name=a.name,
        token=a.token or None,
        tls_ca=a.tls_ca,
        tls_domain=a.tls_domain,
        max_backoff=max(a.max_backoff_seconds, 0.1),
        max_message_bytes=a.max_message_bytes,
        policy_wait_ms=a.policy_wait_ms,
        vectorization=a.vectorization,
    )
    threadpool_limits(limits=a.blas_threads, user_api="blas")
    stop = stop_on_signals()
    metrics = ActorMetrics(opts.env)
    metrics.serve(a.metrics_addr)
    Actor(env_factory(a.env, a.make, a.env_kwargs, a.atari), opts, stop, metrics).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``proxima-actor``."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=os.environ.get("PROXIMA_LOG", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    commands = {"eval": _eval, "render": _render, "run": _run}
    command = commands.get(args[0]) if args else None
    try:
        return command(args[1:]) if command else _run(args)
    except (Refused, EnvError, PolicyError, ValueError, OSError, gym.error.Error) as e:
        logging.getLogger("proxima_actor").error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
