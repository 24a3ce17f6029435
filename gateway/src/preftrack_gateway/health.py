"""Owns the gateway's health statuses (``grpc.health.v1``): the only writer of both servicers that answer them,
the asyncio one on the main port and a thread-safe one on the health port.

The health port (``PREFTRACK_HEALTH_PORT``) is a synchronous ``grpc.server`` on a thread pool of its own, so a
check there never waits for the event loop. Under a flood of feedback streams the loop is busy folding for tens
of milliseconds at a time, and checks on the main port queue behind it (docs/benchmarks.md, "Overload"): an
orchestrator's liveness probe would kill a gateway that is working. Like health on the main port, the health
port is plaintext and needs no key: it tells only whether each service is SERVING.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

_LOGGER = logging.getLogger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthState:
    """The statuses of the gateway (``""``), its scoring service and its feedback service, answered on the main
    port and, after :meth:`serve`, on a port of their own.

    Scoring and the overall status follow model readiness. Feedback is set apart: it takes events whenever the
    store commits, Triton or not, so a load balancer keeps sending it events. Set them from the event loop (the
    asyncio servicer is written by tasks on it); the threaded servicer takes its own lock.

    Args:
        scoring_service: the scoring service's full name (``preftrack.v1.ScoringService``).
        feedback_service: the feedback service's full name.
    """

    def __init__(self, scoring_service: str, feedback_service: str) -> None:
        self._scoring = scoring_service
        self._feedback = feedback_service
        self._aio = health.aio.HealthServicer()
        self._threaded = health.HealthServicer()  # a lock around every read and write: safe from any thread
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: grpc.Server | None = None
        self._pool: futures.ThreadPoolExecutor | None = None
        #: The health port once :meth:`serve` has bound it (0: not served).
        self.port = 0

    def add_to(self, server: grpc.aio.Server) -> None:
        """Answer health on the main (asyncio) server too."""
        health_pb2_grpc.add_HealthServicer_to_server(self._aio, server)

    def set_scoring(self, ready: bool) -> None:
        """Scoring and the overall status: SERVING while a model version is ready."""
        self._set(("", self._scoring), ready)

    def set_feedback(self, up: bool) -> None:
        """Feedback: SERVING while the store can commit."""
        self._set((self._feedback,), up)

    def _set(self, names: tuple[str, ...], serving: bool) -> None:
        status = _SERVING if serving else _NOT_SERVING
        loop = asyncio.get_running_loop()
        for name in names:
            self._threaded.set(name, status)
            task = loop.create_task(self._aio.set(name, status))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def enter_graceful_shutdown(self) -> None:
        """Every status NOT_SERVING for good, on both ports (later sets are ignored)."""
        self._threaded.enter_graceful_shutdown()
        await self._aio.enter_graceful_shutdown()

    def serve(self, host: str, port: int) -> int:
        """Answer health on ``host:port`` (plaintext, no keys) from threads of its own; returns the bound port.

        Raises:
            OSError: the port cannot be bound.
        """
        # Checks take microseconds and Watch does not hold a thread (the servicer's non-blocking mode): two
        # threads answer any number of probes.
        pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health")
        server = grpc.server(pool)
        health_pb2_grpc.add_HealthServicer_to_server(self._threaded, server)
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            pool.shutdown(wait=False)
            raise OSError(f"cannot listen on {host}:{port} (PREFTRACK_HEALTH_PORT)")
        server.start()
        self._server, self._pool, self.port = server, pool, bound
        _LOGGER.info("health on %s:%d (own threads; plaintext, no keys)", host, bound)
        return bound

    def stop(self) -> None:
        """Stop the health port (open Watch calls end); its threads exit once idle."""
        if self._server is not None:
            self._server.stop(None)
            self._server = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
