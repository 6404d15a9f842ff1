"""The networked actor: register with a learner, follow its policy stream, stream rollouts back; reconnect by itself.

The same protocol and semantics as the Rust actor (`actor/src/client.rs`): one registration per connection, the
first policy from ``SubscribePolicy`` before any rollout, latest-wins policy following, exponential backoff with
full jitter between attempts, a new registration when the learner answers ``unknown_actor`` (it restarted or
dropped a silent actor), and on SIGTERM the rollout in progress is finished and sent before leaving.

The number of envs is the learner's unless the user chose one: the actor registers with ``learner_num_envs`` set
(and ``num_envs`` = :data:`DEFAULT_NUM_ENVS`, what a learner of an earlier release, which ignores the flag, then
uses) and builds its vector env for the count ``RegisterResponse.num_envs`` names (the default when a learner of an
earlier release names none). The envs live across reconnects; a re-registration that names another
count rebuilds them.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc

from . import wire
from ._proto import ppo_pb2 as pb
from ._proto import ppo_pb2_grpc as pb_grpc
from .metrics import ActorMetrics
from .policy import Policy, PolicyError
from .sampler import EnvError, EnvFactory, Sampler, check_spaces, make_vector_env

log = logging.getLogger("proxima_actor")

#: Status codes that no retry can fix.
FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)
#: Longest wait for a rollout to be accepted while leaving.
FLUSH_SECONDS = 2.0
#: Envs to step when neither the user nor the learner names a count (a learner of an earlier release).
DEFAULT_NUM_ENVS = 8


class Refused(RuntimeError):
    """The learner refused this actor (token, env, spaces or settings): retrying cannot help."""


class _Retry(Exception):
    """The session ended for a reason a new connection may fix."""


def _host_name() -> str:
    try:
        return Path("/etc/hostname").read_text().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


@dataclass
class ActorOptions:
    """How to reach the learner and what to run (the CLI's flags and ``PROXIMA_*`` variables). ``num_envs``:
    envs stepped together; ``None`` (or 0) steps as many as the learner names."""

    learner: str = "http://127.0.0.1:50051"
    env: str = "CartPole-v1"
    num_envs: int | None = None
    rollout_steps: int | None = None
    name: str = field(default_factory=_host_name)
    token: str | None = None
    tls_ca: str | None = None
    tls_domain: str | None = None
    max_backoff: float = 10.0
    max_message_bytes: int = 16 << 20
    policy_wait_ms: int = 250
    vectorization: str = "sync"


class Backoff:
    """The n-th wait is uniform in ``[base, min(max, base * 2^n)]``."""

    def __init__(self, base: float = 0.1, max_wait: float = 10.0) -> None:
        self.base, self.max, self.attempt = base, max(max_wait, base), 0

    def next(self) -> float:
        cap = min(self.max, self.base * 2 ** min(self.attempt, 16))
        self.attempt += 1
        return random.uniform(self.base, cap)

    def reset(self) -> None:
        self.attempt = 0


class PolicyCell:
    """The newest policy (latest wins) and a way to wait for a newer one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._policy: Policy | None = None
        self._incarnation = 0

    def publish(self, policy: Policy, incarnation: int) -> None:
        with self._cond:
            self._policy, self._incarnation = policy, incarnation
            self._cond.notify_all()

    def latest(self) -> tuple[Policy, int]:
        with self._cond:
            if self._policy is None:
                raise RuntimeError("no policy published yet")
            return self._policy, self._incarnation

    def wait_newer(self, incarnation: int, version: int, timeout: float) -> None:
        """Returns once a policy other than ``(incarnation, version)`` is published, or after ``timeout``."""

        def newer() -> bool:
            p = self._policy
            return p is not None and (self._incarnation != incarnation or p.version > version)

        with self._cond:
            self._cond.wait_for(newer, timeout=timeout)


def _reason(e: grpc.RpcError) -> str | None:
    """The learner's rejection reason (metadata ``proxima-reason``), if any."""
    md: list[Any] = []
    for get in ("trailing_metadata", "initial_metadata"):
        f = getattr(e, get, None)
        if callable(f):
            md.extend(f() or ())
    return next((v for k, v in md if k == wire.REASON_KEY), None)


def _describe(e: grpc.RpcError) -> str:
    code = e.code() if callable(getattr(e, "code", None)) else None
    details = e.details() if callable(getattr(e, "details", None)) else str(e)
    return f"{code.name if code else 'UNKNOWN'}: {details}"


class Actor:
    """One actor: its envs (kept across reconnects), its policy cell and its connection to the learner."""

    def __init__(
        self,
        make_env: EnvFactory,
        opts: ActorOptions,
        stop: threading.Event,
        metrics: ActorMetrics | None = None,
    ) -> None:
        self.make_env, self.opts, self.stop = make_env, opts, stop
        self.metrics = metrics or ActorMetrics(opts.env)
        self.cell = PolicyCell()
        self.sampler: Sampler | None = None
        probe = make_env()
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        check_spaces(self.observation_space, self.action_space)
        md = [("authorization", f"Bearer {opts.token}")] if opts.token else []
        self.metadata: list[tuple[str, str]] = md
        self.flushed = 0

    # -- connection ----------------------------------------------------------------------------------------------

    def _channel(self) -> grpc.Channel:
        url = urlparse(self.opts.learner if "://" in self.opts.learner else f"http://{self.opts.learner}")
        if not url.hostname or url.scheme not in ("http", "https"):
            raise Refused(f"bad learner URL {self.opts.learner!r}: expected http://HOST:PORT or https://HOST:PORT")
        target = f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.opts.max_message_bytes),
            ("grpc.max_receive_message_length", self.opts.max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.enable_retries", 0),
        ]
        if self.opts.tls_ca is None and url.scheme == "http":
            return grpc.insecure_channel(target, options=options)
        root = Path(self.opts.tls_ca).read_bytes() if self.opts.tls_ca else None
        if self.opts.tls_domain:
            options.append(("grpc.ssl_target_name_override", self.opts.tls_domain))
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root), options=options)

    def _register(self, stub: pb_grpc.LearnerStub) -> pb.RegisterResponse:
        request = pb.RegisterRequest(
            actor_name=self.opts.name,
            env_id=self.opts.env,
            observation_space=wire.space(self.observation_space),
            action_space=wire.space(self.action_space),
            # Without --num-envs the learner's count, and the old default for a learner that predates the choice.
            num_envs=self.opts.num_envs or DEFAULT_NUM_ENVS,
            protocol_version=wire.PROTOCOL_VERSION,
            learner_num_envs=not self.opts.num_envs,
        )
        try:
            response: pb.RegisterResponse = stub.Register(request, metadata=self.metadata, timeout=10.0)
            return response
        except grpc.RpcError as e:
            if e.code() in (*FATAL, grpc.StatusCode.INVALID_ARGUMENT):
                raise Refused(_describe(e)) from e
            raise _Retry(_describe(e)) from e

    # -- the run --------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Runs until ``stop`` is set; raises :class:`Refused` (or an env / policy error) for fatal problems."""
        backoff = Backoff(max_wait=self.opts.max_backoff)
        last_problem: str | None = None
        reconnecting = False
        try:
            while not self.stop.is_set():
                try:
                    self._session(reconnecting, backoff)
                    return
                except _Retry as e:
                    reconnecting = True
                    if str(e) != last_problem:
                        log.warning("learner unreachable; retrying with backoff: %s", e)
                        last_problem = str(e)
                    self.stop.wait(backoff.next())
        finally:
            self.metrics.connected.set(0)
            if self.sampler is not None:
                self.sampler.close()

    def _session(self, reconnecting: bool, backoff: Backoff) -> None:
        channel = self._channel()
        stream: Any = None
        broken = threading.Event()
        try:
            stub = pb_grpc.LearnerStub(channel)
            reg = self._register(stub)
            stream = stub.SubscribePolicy(pb.SubscribePolicyRequest(actor_id=reg.actor_id), metadata=self.metadata)
            first = self._next_policy(stream)
            num_envs = int(reg.num_envs) or self.opts.num_envs or DEFAULT_NUM_ENVS
            if self.sampler is not None and self.sampler.num_envs != num_envs:
                log.info("the learner now names %d envs (was %d): rebuilding the envs", num_envs, self.sampler.num_envs)
                self.sampler.close()
                self.sampler = None
            if self.sampler is None:
                if not reg.num_envs and not self.opts.num_envs:
                    log.info("the learner names no num_envs (an earlier release): stepping %d envs", num_envs)
                self.sampler = self._start_sampler(reg, first[0], num_envs)
            self.cell.publish(*first)
            log.info(
                "connected to learner: actor_id=%d run=%s version=%d", reg.actor_id, reg.run_id, reg.policy_version
            )
            if reconnecting:
                self.metrics.reconnects.inc()
            self.metrics.connected.set(1)
            backoff.reset()
            follower = threading.Thread(target=self._follow, args=(stream, broken), name="policy", daemon=True)
            follower.start()
            self._stream_rollouts(stub, reg, broken)
        finally:
            self.metrics.connected.set(0)
            if stream is not None:
                stream.cancel()
            channel.close()

    def _next_policy(self, stream: Iterator[pb.PolicyUpdate]) -> tuple[Policy, int]:
        try:
            update = next(stream)
        except StopIteration as e:
            raise _Retry("policy stream ended before the first policy") from e
        except grpc.RpcError as e:
            if e.code() in FATAL:
                raise Refused(_describe(e)) from e
            raise _Retry(_describe(e)) from e
        return wire.policy(update)

    def _start_sampler(self, reg: pb.RegisterResponse, first: Policy, num_envs: int) -> Sampler:
        steps = self.opts.rollout_steps or max(int(reg.rollout_steps), 1)
        envs = make_vector_env(self.make_env, num_envs, self.opts.vectorization)
        sampler = Sampler(envs, steps, seed=int(reg.seed))
        try:
            sampler.check_policy(first)
        except EnvError:
            sampler.close()
            raise
        sampler.on_inference = self.metrics.inference_latency.observe
        return sampler

    def _follow(self, stream: Iterator[pb.PolicyUpdate], broken: threading.Event) -> None:
        """Publishes every policy the learner streams; sets ``broken`` when the stream ends."""
        try:
            for update in stream:
                self.metrics.weight_latency.observe(max(time.time() - update.published_at, 0.0))
                self.metrics.policy_version.set(update.version)
                self.cell.publish(*wire.policy(update))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                log.debug("policy stream ended: %s", _describe(e))
        except PolicyError as e:
            log.error("the learner sent weights this actor cannot use: %s", e)
        finally:
            broken.set()

    def _stream_rollouts(self, stub: pb_grpc.LearnerStub, reg: pb.RegisterResponse, broken: threading.Event) -> None:
        """Collects rollouts and submits them on a thread of its own, one at a time: the next rollout is collected
        while the last one travels and the learner answers (the gRPC call releases the GIL while it waits). A
        failed submission is raised here, at the latest before the next one."""
        assert self.sampler is not None
        used: tuple[int, int] | None = None
        sending: Future[None] | None = None
        # Not a `with` block: leaving it on an error would wait for the submission in flight (up to its timeout);
        # the session closes the channel instead, which cancels it.
        sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="submit")
        try:
            while True:
                if sending is not None and sending.done():
                    sending.result()
                if self.stop.is_set():
                    if sending is not None:
                        sending.result(timeout=FLUSH_SECONDS + 1.0)
                    log.info("actor leaving flushed=%d", self.flushed)
                    return
                if broken.is_set():
                    raise _Retry("policy stream closed by the learner")
                if used is not None and self.opts.policy_wait_ms > 0:
                    self.cell.wait_newer(*used, timeout=self.opts.policy_wait_ms / 1000)
                    if self.stop.is_set():
                        continue
                policy, incarnation = self.cell.latest()
                rollout = self.sampler.collect(policy, incarnation)
                used = (incarnation, policy.version)
                leaving = self.stop.is_set()
                message = wire.rollout(rollout, reg.actor_id)
                check_size(message, int(reg.max_message_bytes))
                if sending is not None:
                    sending.result()
                timeout = FLUSH_SECONDS if leaving else 30.0
                sending = sender.submit(self._submit, stub, message, len(rollout), timeout)
                if leaving:
                    sending.result(timeout=FLUSH_SECONDS + 1.0)
                    self.flushed += 1
        finally:
            sender.shutdown(wait=False, cancel_futures=True)

    def _submit(self, stub: pb_grpc.LearnerStub, message: pb.Rollout, steps: int, timeout: float) -> None:
        try:
            response: pb.SubmitRolloutResponse = stub.SubmitRollout(message, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as e:
            if _reason(e) == "unknown_actor":
                raise _Retry(f"learner no longer knows this actor: {e.details()}") from e
            if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                self.metrics.rollout("rejected")
                log.error("learner rejected a rollout: %s", _describe(e))
                return
            if e.code() in FATAL:
                raise Refused(_describe(e)) from e
            raise _Retry(_describe(e)) from e
        stale = response.outcome == pb.ROLLOUT_OUTCOME_STALE
        self.metrics.rollout("stale" if stale else "accepted")
        self.metrics.env_steps.inc(steps)


def check_size(message: pb.Rollout, max_bytes: int) -> None:
    """Refuses a rollout that would encode to more than the learner's ``max_bytes`` (0: a learner that does not
    say): every rollout of this actor has the same size, so the actor stops and names the settings to change."""
    size = message.ByteSize()
    if max_bytes > 0 and size > max_bytes:
        raise Refused(
            f"a rollout of {message.num_envs} envs x {message.num_steps} steps encodes to {size} bytes, above the "
            f"learner's limit of {max_bytes} (server.max_message_bytes): raise it on the learner, or lower "
            "actors.rollout_steps (--rollout-steps) or the envs per actor (actors.num_envs, --num-envs)"
        )


def stop_on_signals() -> threading.Event:
    """An event the first SIGTERM or SIGINT sets (a second one exits at once). Call from the main thread."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        log.info("signal %d: finishing the rollout in progress, then leaving", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def run(
    make_env: EnvFactory | Callable[[], Any],
    *,
    learner: str = "http://127.0.0.1:50051",
    env_id: str = "custom",
    stop: threading.Event | None = None,
    metrics_addr: str = "none",
    **options: Any,
) -> None:
    """Runs an actor for the envs ``make_env()`` builds (any gymnasium env, registered or not) until ``stop`` is
    set (by default: SIGTERM or Ctrl-C). ``env_id`` must be the id the learner trains; other keyword arguments
    are :class:`ActorOptions` fields (``num_envs``, ``token``, ``tls_ca``, ...); without ``num_envs`` the actor
    steps as many envs as the learner names."""
    opts = ActorOptions(learner=learner, env=env_id, **options)
    if stop is None:
        stop = stop_on_signals() if threading.current_thread() is threading.main_thread() else threading.Event()
    metrics = ActorMetrics(opts.env)
    metrics.serve(metrics_addr)
    Actor(make_env, opts, stop, metrics).run()
