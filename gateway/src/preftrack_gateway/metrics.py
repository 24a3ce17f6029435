"""Prometheus metrics of one gateway (own registry, so several gateways can live in one process)."""

from __future__ import annotations

import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from preftrack_gateway.keys import Keys


class GatewayMetrics:
    """Latency per RPC, requests by model version, events by outcome, Triton errors."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self.rpc_latency_s = prom.Histogram(
            "preftrack_rpc_latency_seconds",
            "Gateway RPC latency",
            ["method", "code"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.requests_by_version = prom.Counter(
            "preftrack_requests_by_model_version_total",
            "Score/Recommend calls by serving model version",
            ["method", "version"],
            registry=self.registry,
        )
        self.events = prom.Counter(
            "preftrack_feedback_events_total",
            "Feedback events by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.triton_errors = prom.Counter(
            "preftrack_triton_errors_total", "Failed Triton calls by error", ["error"], registry=self.registry
        )
        self._server: Any = None  # prometheus_client's WSGI server, once serving

    def watch_learner(self, status: Callable[[], Mapping[str, object]]) -> None:
        """Expose the per-event learner's state (read at scrape time from ``status``)."""
        self.registry.register(_LearnerCollector(status))

    def watch_rollout(self, status: Callable[[], Mapping[str, object]]) -> None:
        """Expose the rollout's versions and per-arm outcomes (read at scrape time from ``status``)."""
        self.registry.register(_RolloutCollector(status))

    def watch_store(self, status: Callable[[], Mapping[str, object]]) -> None:
        """Expose whether the event store commits and the time since it last did (read at scrape time)."""
        self.registry.register(_StoreCollector(status))

    def serve(self, port: int, host: str = "127.0.0.1", *, keys: Keys | None = None) -> None:
        """Expose ``/metrics`` over HTTP on ``port``; with ``keys``, only to ``Authorization: Bearer <key>``."""
        app = prom.make_wsgi_app(self.registry)

        def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            sent = str(environ.get("HTTP_AUTHORIZATION", ""))
            if keys and not (sent.startswith("Bearer ") and keys.match(sent.removeprefix("Bearer ").encode())):
                start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
                return [b"send a metrics key: Authorization: Bearer <key> (PREFTRACK_METRICS_KEYS)\n"]
            return app(environ, start_response)

        server = wsgiref.simple_server.make_server(host, port, guarded, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        self._server = server

    def render(self) -> bytes:
        """The current metrics in the text exposition format."""
        return prom.generate_latest(self.registry)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class _LearnerCollector(Collector):
    """The per-event learner's counters, read when Prometheus scrapes."""

    def __init__(self, status: Callable[[], Mapping[str, object]]) -> None:
        self._status = status

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        state = self._status()
        updates = CounterMetricFamily(
            "preftrack_online_updates",
            "Per-event layer updates, by the model version they were learned against",
            labels=["version"],
        )
        for version, count in dict(state.get("learned_on_versions", {})).items():  # type: ignore[call-overload]
            updates.add_metric([str(version)], float(count))
        yield updates
        for name, key, text in (
            ("preftrack_online_waiting_for_labels", "waiting_for_labels", "Examples whose attribution window is open"),
            ("preftrack_online_ready", "ready", "Labelled examples waiting to be learned from"),
            ("preftrack_online_held", "held", "Examples whose shared step waits for the minute after them"),
            ("preftrack_online_learn_delay_p90_seconds", "delay_p90_s", "90th percentile, labelled -> learned"),
        ):
            yield GaugeMetricFamily(name, text, value=float(state.get(key, 0)))  # type: ignore[arg-type]
        shares = GaugeMetricFamily(
            "preftrack_online_step_share",
            "Share of the per-event layer's prediction from each member of its mixture (FTRL step, +buckets)",
            labels=["member"],
        )
        for member, share in dict(state.get("step_shares", {})).items():  # type: ignore[call-overload]
            shares.add_metric([str(member)], float(share))
        yield shares
        yield CounterMetricFamily(
            "preftrack_online_skipped",
            "Examples not learned from: their features could not be read exactly",
            value=float(state.get("skipped", 0)),  # type: ignore[arg-type]
        )


def _number(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) else default


class _StoreCollector(Collector):
    """The event store's state, read when Prometheus scrapes."""

    def __init__(self, status: Callable[[], Mapping[str, object]]) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._status()
        yield GaugeMetricFamily(
            "preftrack_store_up", "1 while the event store commits, 0 while it cannot", value=float(bool(state["up"]))
        )
        yield GaugeMetricFamily(
            "preftrack_store_seconds_since_commit",
            "Seconds since the event store last committed (NaN: not yet)",
            value=_number(state.get("seconds_since_commit"), float("nan")),
        )


class _RolloutCollector(Collector):
    """Which versions serve and what each arm of a rollout has shown so far, read when Prometheus scrapes."""

    def __init__(self, status: Callable[[], Mapping[str, object]]) -> None:
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._status()
        versions = GaugeMetricFamily(
            "preftrack_rollout_version", "The stable and candidate versions (0: none)", labels=["role"]
        )
        versions.add_metric(["stable"], _number(state.get("stable")))
        versions.add_metric(["candidate"], _number(state.get("candidate")))
        yield versions
        yield GaugeMetricFamily(
            "preftrack_rollout_fraction", "The canary's share of users", value=_number(state.get("fraction"))
        )
        outcomes = GaugeMetricFamily(
            "preftrack_rollout_outcomes", "Labelled shown items of each arm since the rollout began", labels=["arm"]
        )
        rates = GaugeMetricFamily(
            "preftrack_rollout_positive_rate", "Attributed positive rate of each arm's shown items", labels=["arm"]
        )
        for arm in ("stable", "canary"):
            arms = state.get("arms")
            data = arms.get(arm) if isinstance(arms, Mapping) else None
            data = data if isinstance(data, Mapping) else {}
            outcomes.add_metric([arm], _number(data.get("outcomes")))
            rates.add_metric([arm], _number(data.get("positive_rate"), float("nan")))
        yield outcomes
        yield rates
