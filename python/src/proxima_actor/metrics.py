"""Prometheus metrics of a Python actor: the same names, labels and buckets as the Rust actor's."""

from __future__ import annotations

import errno
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

#: Buckets of the inference latency histogram (seconds), as `common::metrics::SECONDS_FAST`.
SECONDS_FAST = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1)
#: Buckets of the weight-update latency histogram (seconds), as `common::metrics::SECONDS_SLOW`.
SECONDS_SLOW = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Values of the `outcome` label of the rollouts counter.
OUTCOMES = ("accepted", "stale", "rejected")
#: Ports tried in turn when no metrics address is given (`common::metrics::ACTOR_PORTS`): the first free one
#: serves, so several actors share a host without flags and Prometheus can scrape the range statically.
ACTOR_PORTS = range(9001, 9100)

log = logging.getLogger(__name__)


class ActorMetrics:
    """The actor's metrics, every one labelled with ``role="actor"`` and the env id."""

    def __init__(self, env: str, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # the Rust exporter has no `_created` series either
        self.registry = registry or CollectorRegistry()
        labels = ["role", "env"]
        r = self.registry
        self._env_steps = Counter(
            "proxima_actor_env_steps", "Env steps produced and delivered to the learner.", labels, registry=r
        )
        self._rollouts = Counter(
            "proxima_actor_rollouts", "Rollouts sent, by outcome.", [*labels, "outcome"], registry=r
        )
        self._inference = Histogram(
            "proxima_actor_inference_latency_seconds",
            "Duration of one batched policy forward pass.",
            labels,
            buckets=SECONDS_FAST,
            registry=r,
        )
        self._weight_latency = Histogram(
            "proxima_actor_weight_update_latency_seconds",
            "Seconds from policy publication to arrival.",
            labels,
            buckets=SECONDS_SLOW,
            registry=r,
        )
        self._reconnects = Counter(
            "proxima_actor_reconnects", "Re-registrations after a lost connection.", labels, registry=r
        )
        self._connected = Gauge("proxima_actor_connected", "1 while connected to the learner.", labels, registry=r)
        self._version = Gauge("proxima_actor_policy_version", "Policy version the actor acts with.", labels, registry=r)
        self._labels = {"role": "actor", "env": env}
        self.env_steps = self._env_steps.labels(**self._labels)
        self.inference_latency = self._inference.labels(**self._labels)
        self.weight_latency = self._weight_latency.labels(**self._labels)
        self.reconnects = self._reconnects.labels(**self._labels)
        self.connected = self._connected.labels(**self._labels)
        self.policy_version = self._version.labels(**self._labels)
        for outcome in OUTCOMES:
            self._rollouts.labels(**self._labels, outcome=outcome)

    def rollout(self, outcome: str) -> None:
        """Counts one rollout sent with this outcome (``accepted``, ``stale`` or ``rejected``)."""
        self._rollouts.labels(**self._labels, outcome=outcome).inc()

    def serve(self, addr: str | None = None, ports: range = ACTOR_PORTS) -> str | None:
        """Serves ``/metrics`` in a background thread and returns the ``host:port`` served on.

        ``addr`` is ``host:port`` (a taken port is an error: it was asked for) or ``none`` (serve nothing, return
        None); without it, 0.0.0.0 at the first free port of ``ports``, as the Rust actor."""
        if addr == "none":
            return None
        if addr is None:
            for port in ports:
                try:
                    start_http_server(port, addr="0.0.0.0", registry=self.registry)
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        continue
                    raise OSError(f"cannot serve metrics on 0.0.0.0:{port}: {e}") from e
                served = f"0.0.0.0:{port}"
                if port == ports.start:
                    log.info("serving Prometheus metrics url=http://%s/metrics", served)
                else:
                    log.info(
                        "serving Prometheus metrics url=http://%s/metrics (port %d is taken, by another actor on "
                        "this host?: without --metrics-addr an actor serves on the first free port of %d-%d)",
                        served,
                        ports.start,
                        ports.start,
                        ports[-1],
                    )
                return served
            raise OSError(
                f"cannot serve metrics on 0.0.0.0: every port of {ports.start}-{ports[-1]} is taken; "
                "choose one with --metrics-addr HOST:PORT (or none)"
            )
        host, sep, port_text = addr.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"bad metrics address {addr!r}: expected HOST:PORT or none")
        try:
            start_http_server(int(port_text), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {addr}: {e}") from e
        log.info("serving Prometheus metrics url=http://%s/metrics", addr)
        return addr
