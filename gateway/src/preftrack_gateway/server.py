"""Assembles and runs the gateway: store, Triton client, core, servicers, health, reflection, metrics.

The health statuses are :class:`~preftrack_gateway.health.HealthState`'s; this module only says when they change."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import _async as reflection_async
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from preftrack.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from preftrack.insights.v1 import insights_service_pb2, insights_service_pb2_grpc
from preftrack.v1 import feedback_service_pb2, feedback_service_pb2_grpc, scoring_service_pb2, scoring_service_pb2_grpc
from preftrack_gateway.config import GatewayConfig
from preftrack_gateway.health import HealthState
from preftrack_gateway.interceptors import EdgeInterceptor
from preftrack_gateway.keys import Keys
from preftrack_gateway.metrics import GatewayMetrics
from preftrack_gateway.service import GatewayCore
from preftrack_gateway.servicers.admin import AdminServicer
from preftrack_gateway.servicers.feedback import FeedbackServicer
from preftrack_gateway.servicers.insights import InsightsServicer
from preftrack_gateway.servicers.scoring import ScoringServicer
from preftrack_gateway.store import open_store
from preftrack_gateway.triton import TritonScorer

_LOGGER = logging.getLogger(__name__)

_SERVICES = (
    scoring_service_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name,
    feedback_service_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name,
)
_ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
_INSIGHTS_SERVICE = insights_service_pb2.DESCRIPTOR.services_by_name["InsightsService"].full_name


def _enable_reflection(server: grpc.aio.Server, names: tuple[str, ...]) -> None:
    """Server reflection as ``grpc.reflection.v1alpha`` (what grpcio-reflection ships) and as
    ``grpc.reflection.v1`` (what current tools ask first): the two protocols have the same messages on the wire,
    so one servicer answers both."""
    servicer = reflection_async.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        "grpc.reflection.v1.ServerReflection",
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))


def _tune_garbage_collector() -> None:
    """The feature state is millions of small long-lived objects. With the default thresholds every full
    collection walks all of them while it grows (measured: pauses of 0.1 s growing to 2 s, every few seconds
    under heavy ingestion, each stalling every call and health check). Objects alive after the start-up rebuild
    are frozen out of collection, and full collections are made rare; reference counting frees almost all garbage
    anyway, so cyclic garbage only waits longer. (No collection before freezing: over a large state it takes
    seconds, and start-up leaves little cyclic garbage.)"""
    gc.freeze()
    gc.set_threshold(20_000, 10, 1000)


class GatewayServer:
    """One running gateway. ``await start()``, then ``await stop()``; :attr:`port` is the bound port."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.port = 0
        self.core: GatewayCore | None = None
        self._server: grpc.aio.Server | None = None
        self.health = HealthState(*_SERVICES)
        self._edge: EdgeInterceptor | None = None

    def _set_feedback_health(self, up: bool) -> None:
        """FeedbackService follows the store: NOT_SERVING while it cannot commit (every event would be refused),
        SERVING again once a commit or a probe succeeds. Scoring stays as Triton says: Score and Recommend work
        from the features in memory while the store is away (served lists wait in the impression queue)."""
        if self._server is not None:  # before the start completes, start() sets it
            self.health.set_feedback(up)

    async def start(self) -> None:
        """Open the store, rebuild features, bind the port and start serving."""
        cfg = self.config
        store = await open_store(cfg.store_url)
        scorer = TritonScorer(
            cfg.triton_url, cfg.model_name, repository=cfg.model_repository, config_name=cfg.triton_model_config
        )
        self.core = GatewayCore(
            cfg, store, scorer, on_readiness=self.health.set_scoring, on_store_health=self._set_feedback_health
        )
        core = self.core
        self.metrics.watch_store(core.writer.health.summary)
        self.metrics.watch_learner(lambda: core.learner.status())  # the learner start() settles on
        self.metrics.watch_rollout(lambda: core.rollout.status())
        self._edge = EdgeInterceptor(
            self.metrics,
            cfg.api_keys,
            cfg.admin_keys,
            cfg.catalog_keys,
            cfg.analyst_keys,
            key_rate_limit=cfg.key_rate_limit,
        )
        server = grpc.aio.server(
            interceptors=[self._edge],
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", cfg.max_message_bytes),
                # Flow control bounds what a sender may have in flight per stream: without BDP probing the window
                # stays at its default instead of growing to megabytes, so many fast senders block in their own
                # sends rather than piling up unread messages in this process.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", 16 * 1024),
            ],
        )
        scoring_service_pb2_grpc.add_ScoringServiceServicer_to_server(ScoringServicer(self.core, self.metrics), server)
        feedback_service_pb2_grpc.add_FeedbackServiceServicer_to_server(
            FeedbackServicer(self.core, self.metrics), server
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(self.core), server)
        insights_service_pb2_grpc.add_InsightsServiceServicer_to_server(InsightsServicer(self.core), server)
        self.health.add_to(server)
        if cfg.reflection:
            _enable_reflection(
                server, (*_SERVICES, _ADMIN_SERVICE, _INSIGHTS_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
            )
        address = f"{cfg.host}:{cfg.port}"
        if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:
            credentials = grpc.ssl_server_credentials(
                [(Path(cfg.tls_key_file).read_bytes(), Path(cfg.tls_cert_file).read_bytes())],
                root_certificates=Path(cfg.tls_client_ca_file).read_bytes() if cfg.tls_client_ca_file else None,
                require_client_auth=cfg.tls_client_ca_file is not None,
            )
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port}")
        self.health.set_scoring(False)
        self.health.set_feedback(False)
        await self.core.start()
        _tune_garbage_collector()
        await server.start()
        self._server = server
        self.health.set_feedback(self.core.writer.health.up)  # the store is open, the commit loop runs
        if cfg.health_port:
            self.health.serve(cfg.host, cfg.health_port)
        if cfg.metrics_port:
            self.metrics.serve(cfg.metrics_port, cfg.host, keys=Keys(cfg.metrics_keys))
        _LOGGER.info(
            "gateway listening on %s:%d (%s; Triton %s, store %s, serving version %s)",
            cfg.host,
            self.port,
            "mutual TLS" if cfg.tls_client_ca_file else "TLS" if cfg.tls_cert_file else "plaintext",
            cfg.triton_url,
            cfg.store_url.split("://", 1)[0],
            self.core.serving_version,
        )
        if not cfg.api_keys and (cfg.admin_keys or cfg.catalog_keys or cfg.analyst_keys):
            _LOGGER.warning(
                "PREFTRACK_API_KEYS is empty: Score, Recommend and feedback are open to every caller (only the "
                "admin, catalogue and insights calls need keys); set client keys to close them"
            )

    async def stop(self) -> None:
        """Drain, then stop: health turns NOT_SERVING and new calls get UNAVAILABLE (clients retry elsewhere)
        while in-flight calls finish (up to the grace period); only then does the server stop, so no call is
        cut off (CANCELLED). Then commit what is queued and close."""
        await self.health.enter_graceful_shutdown()
        if self._edge is not None:
            self._edge.draining = True
            deadline = time.monotonic() + self.config.shutdown_grace_s
            while self._edge.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            # A moment more: calls already on the wire reach the interceptor and are answered UNAVAILABLE
            # rather than cancelled by the server's stop.
            await asyncio.sleep(0.3)
        if self._server is not None:
            await self._server.stop(max(0.5, self.config.shutdown_grace_s / 10))
        if self.core is not None:
            await self.core.close()
        self.metrics.close()
        self.health.stop()  # last: the health port says NOT_SERVING while the gateway drains and closes
        _LOGGER.info("gateway stopped")

    async def wait(self) -> None:
        """Until the server terminates."""
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: GatewayConfig) -> None:
    """Run a gateway until SIGINT or SIGTERM, then shut down gracefully."""
    gateway = GatewayServer(config)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"preftrack gateway ready on {config.host}:{gateway.port}", flush=True)
    await stop.wait()
    _LOGGER.info("shutting down (grace %.1f s)", config.shutdown_grace_s)
    await gateway.stop()
