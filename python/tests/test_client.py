"""The actor's protocol behaviour against a fake learner in this process: registration, policy following,
re-registration on ``unknown_actor``, refusal, backoff, the number of envs the learner names, and the flush when
stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import dials
import grpc
import gymnasium as gym
import numpy as np
import pytest
import quadrant
from safetensors.numpy import save
from test_policy import quadrant_snapshot, spec, state_dict, with_spec

from proxima_actor._proto import ppo_pb2 as pb
from proxima_actor._proto import ppo_pb2_grpc as pb_grpc
from proxima_actor.cli import _run_parser
from proxima_actor.client import DEFAULT_NUM_ENVS, Actor, ActorOptions, Backoff, PolicyCell, Refused
from proxima_actor.metrics import ActorMetrics
from proxima_actor.policy import Policy

WEIGHTS = save(state_dict(4, 2, (8,), box=False))


class FakeLearner(pb_grpc.LearnerServicer):
    """Registers actors, streams one policy, accepts rollouts; can forget actors or refuse registration.
    ``num_envs[i]`` is its ``actors.num_envs`` at registration ``i`` (the last one for later ones), which it
    names to actors that ask with 0; ``None`` answers like a learner of an earlier release (0)."""

    def __init__(self) -> None:
        self.num_envs: list[int] | None = [3]
        self.weights = WEIGHTS
        self.registrations: list[pb.RegisterRequest] = []
        self.rollouts: list[pb.Rollout] = []
        self.known: set[int] = set()
        self.refuse: str | None = None
        self.forget_after: int | None = None
        self.lock = threading.Lock()

    def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        if self.refuse:
            context.set_trailing_metadata((("proxima-reason", "mismatch"),))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.refuse)
        with self.lock:
            self.registrations.append(request)
            actor_id = 100 + len(self.registrations)
            self.known.add(actor_id)
            num_envs = 0
            if self.num_envs is not None:
                own = 0 if request.learner_num_envs else request.num_envs
                num_envs = own or self.num_envs[min(len(self.registrations), len(self.num_envs)) - 1]
        return pb.RegisterResponse(
            actor_id=actor_id, seed=5, run_id="fake", hidden_sizes=[8], rollout_steps=4, num_envs=num_envs
        )

    def SubscribePolicy(self, request: pb.SubscribePolicyRequest, context: Any) -> Iterator[pb.PolicyUpdate]:
        yield pb.PolicyUpdate(version=1, weights=self.weights, published_at=time.time(), incarnation=9)
        while context.is_active():
            time.sleep(0.02)

    def SubmitRollout(self, request: pb.Rollout, context: Any) -> pb.SubmitRolloutResponse:
        with self.lock:
            if request.actor_id not in self.known:
                context.set_trailing_metadata((("proxima-reason", "unknown_actor"),))
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "actor_id: unknown actor id; register first")
            self.rollouts.append(request)
            if self.forget_after is not None and len(self.rollouts) == self.forget_after:
                self.known.clear()
        return pb.SubmitRolloutResponse(outcome=pb.ROLLOUT_OUTCOME_ACCEPTED, policy_version=1)


@pytest.fixture
def learner() -> Iterator[tuple[FakeLearner, int]]:
    fake = FakeLearner()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_LearnerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, port
    server.stop(grace=None)


def start(
    port: int,
    stop: threading.Event,
    num_envs: int | None = 2,
    make_env: Callable[[], gym.Env] = lambda: gym.make("CartPole-v1"),
    **opts: Any,
) -> tuple[Actor, threading.Thread, list[BaseException]]:
    options = ActorOptions(learner=f"http://127.0.0.1:{port}", num_envs=num_envs, max_backoff=0.2, **opts)
    actor = Actor(make_env, options, stop, ActorMetrics("CartPole-v1"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            actor.run()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return actor, thread, errors


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_registers_follows_the_policy_and_streams_rollouts(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    stop = threading.Event()
    _, thread, errors = start(port, stop, token="s3cret")
    wait_until(lambda: len(fake.rollouts) >= 3)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and not errors
    reg = fake.registrations[0]
    assert (reg.env_id, reg.num_envs, reg.protocol_version) == ("CartPole-v1", 2, pb.PROTOCOL_VERSION_1)
    assert reg.observation_space.box.high[2] == pytest.approx(0.41887903) and reg.action_space.discrete.n == 2
    r = fake.rollouts[0]
    assert (r.actor_id, r.policy_version, r.incarnation, r.num_steps, r.num_envs) == (101, 1, 9, 4, 2)
    assert len(r.obs) == 4 * 2 * 4 * 4 and len(r.terminated) == 8 and len(r.next_obs) == 2 * 4 * 4
    assert np.all(np.frombuffer(r.rewards, "<f4") == 1.0)


def test_a_forgotten_actor_registers_again_and_keeps_its_envs(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    fake.forget_after = 2
    stop = threading.Event()
    actor, thread, errors = start(port, stop, num_envs=None)
    wait_until(lambda: len(fake.rollouts) >= 1)
    sampler = actor.sampler
    wait_until(lambda: len(fake.rollouts) >= 4)
    stop.set()
    thread.join(10)
    assert not errors and len(fake.registrations) >= 2
    assert {r.actor_id for r in fake.rollouts[2:]} == {102}
    assert actor.sampler is sampler, "the learner named the same count again: the envs stay"
    assert actor.metrics.reconnects._value.get() >= 1  # type: ignore[attr-defined]


def test_a_refused_registration_is_fatal(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    fake.refuse = "env_id: the learner trains Acrobot-v1, not CartPole-v1"
    _, thread, errors = start(port, threading.Event())
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], Refused) and "Acrobot-v1" in str(errors[0])


class CountingStop(threading.Event):
    """A stop event that counts the waits on it (the actor's backoff waits between attempts)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_an_unreachable_learner_is_retried_until_stopped() -> None:
    stop = CountingStop()
    _, thread, errors = start(1, stop)  # nothing listens on port 1
    wait_until(lambda: stop.waits >= 3)  # three attempts failed, each followed by a backoff wait
    assert thread.is_alive() and not errors
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and not errors


def test_backoff_grows_is_capped_and_jittered() -> None:
    b = Backoff(base=0.1, max_wait=1.0)
    waits = [[Backoff.next(b) for b in [Backoff(0.1, 1.0)] for _ in range(8)] for _ in range(50)]
    for n in range(8):
        column = [w[n] for w in waits]
        cap = min(1.0, 0.1 * 2**n)
        assert all(0.1 <= w <= cap for w in column)
        if n > 0:
            assert min(column) < max(column)
    b.next()
    b.reset()
    assert b.attempt == 0


def test_policy_cell_waits_for_a_newer_version() -> None:
    cell = PolicyCell()
    cell.publish(Policy(WEIGHTS, version=1), incarnation=3)
    cell.wait_newer(3, 1, timeout=0.1)  # nothing newer: returns after the timeout with the same policy
    assert cell.latest()[0].version == 1
    threading.Timer(0.05, lambda: cell.publish(Policy(WEIGHTS, version=2), 3)).start()
    cell.wait_newer(3, 1, timeout=5.0)
    assert cell.latest()[0].version == 2
    cell.publish(Policy(WEIGHTS, version=1), incarnation=4)
    cell.wait_newer(3, 2, timeout=5.0)  # another incarnation counts as newer at once
    assert cell.latest()[1] == 4


class Slow(gym.Wrapper[np.ndarray, np.int64, np.ndarray, np.int64]):
    """CartPole that takes 200 ms per step, so that a stop lands while a rollout is being collected (and the next
    rollout cannot finish between the test's count and its stop, even on a loaded machine)."""

    def step(self, action: np.int64) -> Any:
        time.sleep(0.2)
        return self.env.step(action)


def test_stopping_sends_the_rollout_in_progress_then_leaves(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    stop = threading.Event()
    options = ActorOptions(learner=f"http://127.0.0.1:{port}", num_envs=1, policy_wait_ms=0)
    actor = Actor(lambda: Slow(gym.make("CartPole-v1")), options, stop, ActorMetrics("CartPole-v1"))
    thread = threading.Thread(target=actor.run, daemon=True)
    thread.start()
    wait_until(lambda: len(fake.rollouts) >= 1)
    time.sleep(0.05)
    sent_before = len(fake.rollouts)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert actor.flushed == 1 and len(fake.rollouts) == sent_before + 1


def run_until(fake: FakeLearner, port: int, rollouts: int, **opts: Any) -> Actor:
    """Runs an actor until the learner holds ``rollouts`` rollouts, then stops it."""
    stop = threading.Event()
    actor, thread, errors = start(port, stop, **opts)
    wait_until(lambda: len(fake.rollouts) >= rollouts)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and not errors
    return actor


def test_without_a_count_the_actor_steps_the_learners_num_envs(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    run_until(fake, port, 2, num_envs=None)
    # The flag asks for the learner's count; 8 is what a learner from before the flag, which ignores it, steps.
    assert fake.registrations[0].learner_num_envs and fake.registrations[0].num_envs == 8
    assert {r.num_envs for r in fake.rollouts} == {3}
    assert all(len(r.rewards) == 4 * 3 * 4 for r in fake.rollouts)


def test_a_count_the_user_gave_is_sent_and_stepped(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    run_until(fake, port, 2, num_envs=5)
    assert not fake.registrations[0].learner_num_envs
    assert fake.registrations[0].num_envs == 5 and {r.num_envs for r in fake.rollouts} == {5}


def test_a_learner_that_names_no_count_gets_the_default(
    learner: tuple[FakeLearner, int], caplog: pytest.LogCaptureFixture
) -> None:
    fake, port = learner
    fake.num_envs = None
    with caplog.at_level(logging.INFO, logger="proxima_actor"):
        run_until(fake, port, 2, num_envs=None)
    assert {r.num_envs for r in fake.rollouts} == {DEFAULT_NUM_ENVS}
    assert sum("names no num_envs" in m for m in caplog.messages) == 1
    fake.rollouts.clear()
    run_until(fake, port, 2, num_envs=5)
    assert {r.num_envs for r in fake.rollouts} == {5}


def test_a_reregistration_with_another_count_rebuilds_the_envs(
    learner: tuple[FakeLearner, int], caplog: pytest.LogCaptureFixture
) -> None:
    fake, port = learner
    fake.num_envs, fake.forget_after = [3, 2], 2
    with caplog.at_level(logging.INFO, logger="proxima_actor"):
        run_until(fake, port, 5, num_envs=None)
    assert [(r.num_envs, r.learner_num_envs) for r in fake.registrations] == [(8, True), (8, True)]
    counts = [r.num_envs for r in fake.rollouts]
    assert counts[:2] == [3, 3] and set(counts[2:]) == {2}
    assert sum("rebuilding the envs" in m for m in caplog.messages) == 1


def test_a_multi_discrete_env_registers_its_nvec_and_sends_its_indices(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    head = {"kind": "multi_categorical", "nvec": list(dials.NVEC)}
    fake.weights = with_spec(state_dict(2, sum(dials.NVEC), (8,), box=False), spec(2, head))
    run_until(fake, port, 2, num_envs=None, make_env=dials.make)
    assert list(fake.registrations[0].action_space.multi_discrete.nvec) == list(dials.NVEC)
    actions = np.frombuffer(fake.rollouts[0].actions, "<f4").reshape(4, 3, 2)
    assert np.all(actions == np.round(actions)) and np.all((actions >= 0) & (actions < np.array(dials.NVEC)))


def test_an_image_env_registers_its_shape_and_dtype_and_sends_bytes(learner: tuple[FakeLearner, int]) -> None:
    fake, port = learner
    fake.weights = quadrant_snapshot()
    run_until(fake, port, 2, num_envs=None, make_env=quadrant.make)
    box = fake.registrations[0].observation_space.box
    assert (list(box.shape), box.dtype, len(box.low), set(box.high)) == ([6, 6, 1], pb.DTYPE_UINT8, 36, {255.0})
    r = fake.rollouts[0]
    assert (len(r.obs), len(r.next_obs)) == (4 * 3 * 36, 3 * 36)
    obs, actions = np.frombuffer(r.obs, np.uint8).reshape(12, 6, 6, 1), np.frombuffer(r.actions, "<f4")
    np.testing.assert_array_equal(actions, [quadrant.lit_quadrant(o) for o in obs])
    assert np.all(np.frombuffer(r.rewards, "<f4") == 1.0)


def test_num_envs_comes_from_the_flag_the_variable_or_the_learner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXIMA_NUM_ENVS", raising=False)
    assert _run_parser().parse_args([]).num_envs is None
    assert _run_parser().parse_args(["--num-envs", "4"]).num_envs == 4
    monkeypatch.setenv("PROXIMA_NUM_ENVS", "6")
    assert _run_parser().parse_args([]).num_envs == 6
    assert _run_parser().parse_args(["--num-envs", "2"]).num_envs == 2


def test_blas_threads_default_to_one_and_come_from_the_flag_or_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXIMA_BLAS_THREADS", raising=False)
    assert _run_parser().parse_args([]).blas_threads == 1
    assert _run_parser().parse_args(["--blas-threads", "2"]).blas_threads == 2
    monkeypatch.setenv("PROXIMA_BLAS_THREADS", "3")
    assert _run_parser().parse_args([]).blas_threads == 3
    with pytest.raises(SystemExit):
        _run_parser().parse_args(["--blas-threads", "0"])


def test_a_rollout_above_the_learners_limit_is_refused_naming_the_settings() -> None:
    from proxima_actor._proto import ppo_pb2 as pb
    from proxima_actor.client import Refused, check_size

    message = pb.Rollout(num_envs=8, num_steps=128, obs=bytes(1000))
    check_size(message, 0)  # a learner that does not say: no check
    check_size(message, message.ByteSize())
    with pytest.raises(Refused, match=r"server.max_message_bytes.*actors.rollout_steps.*--num-envs"):
        check_size(message, message.ByteSize() - 1)
