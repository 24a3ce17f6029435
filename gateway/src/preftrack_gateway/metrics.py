"""Prometheus metrics of one gateway (own registry, so several gateways can live in one process)."""

from __future__ import annotations

import prometheus_client as prom


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
        self._server = None

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``port``."""
        self._server, _ = prom.start_http_server(port, addr=host, registry=self.registry)

    def render(self) -> bytes:
        """The current metrics in the text exposition format."""
        return prom.generate_latest(self.registry)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
