"""The Python actor's metrics endpoint: without an address it takes the first free port of a range (several actors
per host), an address given explicitly that is taken stays an error."""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from proxima_actor.metrics import ACTOR_PORTS, ActorMetrics


@pytest.fixture
def taken() -> Iterator[int]:
    """A port some other process listens on (on every interface, as an actor does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


def scrape(served: str) -> str:
    port = int(served.rpartition(":")[2])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_the_default_range_is_the_rust_actors() -> None:
    assert (ACTOR_PORTS.start, ACTOR_PORTS[-1]) == (9001, 9099)


def test_a_taken_port_is_skipped_and_the_url_logged(taken: int, caplog: pytest.LogCaptureFixture) -> None:
    ports = range(taken, min(taken + 40, 65536))
    with caplog.at_level(logging.INFO, logger="proxima_actor.metrics"):
        first = ActorMetrics("CartPole-v1").serve(ports=ports)
        second = ActorMetrics("CartPole-v1").serve(ports=ports)
    assert first is not None and second is not None
    p1, p2 = int(first.rpartition(":")[2]), int(second.rpartition(":")[2])
    assert taken < p1 < p2 < ports.stop, (taken, first, second)
    assert 'proxima_actor_connected{env="CartPole-v1",role="actor"} 0.0' in scrape(first)
    assert "proxima_actor_rollouts_total" in scrape(second)
    logged = [r.getMessage() for r in caplog.records]
    assert any(f"url=http://0.0.0.0:{p1}/metrics" in m and f"port {taken} is taken" in m for m in logged), logged
    assert any(f"url=http://0.0.0.0:{p2}/metrics" in m for m in logged), logged


def test_a_range_of_taken_ports_is_an_error(taken: int) -> None:
    with pytest.raises(OSError, match=f"every port of {taken}-{taken} is taken"):
        ActorMetrics("CartPole-v1").serve(ports=range(taken, taken + 1))


def test_a_taken_port_given_explicitly_is_an_error(taken: int) -> None:
    with pytest.raises(OSError, match=f"cannot serve metrics on 0.0.0.0:{taken}"):
        ActorMetrics("CartPole-v1").serve(f"0.0.0.0:{taken}")


def test_none_serves_nothing() -> None:
    assert ActorMetrics("CartPole-v1").serve("none") is None
