"""Load shedding that is fair and says when to come back: per-key quotas, a cap on open feedback streams
(refused before anything is read), admitted streams that slow down instead of failing when the commit queue is
full, and a retry hint on every refusal that gRPC's retries (and so the SDK) honour. And health that answers
under any load, from its own port and threads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import preftrack
from preftrack.errors import ResourceExhaustedError
from preftrack.v1 import feedback_service_pb2 as fb
from preftrack.v1 import feedback_service_pb2_grpc as fb_grpc
from preftrack.v1 import scoring_service_pb2 as sc
from preftrack.v1 import scoring_service_pb2_grpc as sc_grpc
from preftrack.v1 import types_pb2 as t
from preftrack_dev.process import GatewayProcess, free_port
from preftrack_gateway.config import ConfigError, GatewayConfig

from .conftest import PSEUDONYM_KEY, Trained, gateway_env

pytestmark = pytest.mark.e2e

KEY = "client-key-0123456789"


def _events(stream: int, message: int, n: int) -> list[t.Event]:
    return [
        t.Event(
            event_id=f"s{stream}-m{message}-{k}", user_id=f"u-{k % 50}", item_id=f"i-{k % 12}", type=t.EVENT_TYPE_VIEW
        )
        for k in range(n)
    ]


def _retry_after_ms(error: grpc.RpcError) -> int:
    return int(dict(error.trailing_metadata() or ())["retry-after-ms"])


def test_a_key_over_its_quota_is_told_when_to_retry_and_the_sdk_waits_that_long(
    triton, trained: Trained, tmp_path: Path
) -> None:
    env = gateway_env(
        triton.grpc_url,
        f"sqlite:///{tmp_path / 'e.db'}",
        repository=trained.repository,
        PREFTRACK_API_KEYS=KEY,
        PREFTRACK_KEY_RATE_LIMIT="20",
    )
    with GatewayProcess(env, tmp_path / "gateway.log") as gateway:
        metadata = (("authorization", f"Bearer {KEY}"),)
        with grpc.insecure_channel(gateway.target) as channel:  # no retry policy: see the refusals themselves
            score = sc_grpc.ScoringServiceStub(channel).Score
            refused = []
            for _ in range(60):
                try:
                    score(sc.ScoreRequest(user_id="u-1", item_ids=["i-1"]), metadata=metadata, timeout=5)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                    assert "PREFTRACK_KEY_RATE_LIMIT" in exc.details()
                    refused.append(_retry_after_ms(exc))
            assert 10 <= len(refused) <= 30, len(refused)  # a burst of 40, then 20 per second
            assert all(0 < ms <= 60 for ms in refused)
        with preftrack.Client(gateway.target, api_key=KEY) as client:
            time.sleep(2.5)  # the bucket refills
            started = time.monotonic()
            for _ in range(80):  # 40 from the burst, 40 more at 20 per second: about 2 s of waiting
                client.score("u-1", ["i-1"])
            assert time.monotonic() - started >= 1.5


def test_streams_beyond_the_cap_are_refused_before_anything_is_read(triton, trained: Trained, tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    env = gateway_env(triton.grpc_url, f"sqlite:///{db}", repository=trained.repository, PREFTRACK_MAX_STREAMS="2")

    async def run(target: str) -> None:
        release = asyncio.Event()

        async def held(stream: int):
            yield fb.StreamFeedbackRequest(events=_events(stream, 0, 10))
            await release.wait()

        async with grpc.aio.insecure_channel(target) as channel:
            stub = fb_grpc.FeedbackServiceStub(channel)
            open_calls = [stub.StreamFeedback(held(k)) for k in range(2)]
            for _ in range(100):  # until both are admitted (their first events are stored)
                if sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0] == 20:
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.StreamFeedback(iter([fb.StreamFeedbackRequest(events=_events(9, 0, 10))]), timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "PREFTRACK_MAX_STREAMS" in refused.value.details()
            assert 500 <= _retry_after_ms(refused.value) <= 1500
            with preftrack.Client(target, max_attempts=2) as client, pytest.raises(ResourceExhaustedError) as sdk:
                client.stream([preftrack.FeedbackEvent(user_id="u", item_id="i-1", event_type="view")])
            assert sdk.value.retry_after_s is not None and 0.5 <= sdk.value.retry_after_s <= 1.5  # its RetryInfo
            release.set()
            answers = await asyncio.gather(*open_calls)
            assert [a.accepted for a in answers] == [10, 10]
            later = await stub.StreamFeedback(iter([fb.StreamFeedbackRequest(events=_events(9, 0, 10))]))
            assert later.accepted == 10  # the refused stream, retried once there is room
        stored = sqlite3.connect(db).execute("SELECT count(*) FROM events WHERE event_id LIKE 's9-%'").fetchone()[0]
        assert stored == 10

    with GatewayProcess(env, tmp_path / "gateway.log") as gateway:
        asyncio.run(run(gateway.target))


def test_admitted_streams_slow_down_instead_of_failing_when_the_commit_queue_is_full(
    triton, trained: Trained, tmp_path: Path
) -> None:
    db = tmp_path / "e.db"
    env = gateway_env(
        triton.grpc_url,
        f"sqlite:///{db}",
        repository=trained.repository,
        PREFTRACK_MAX_PENDING_EVENTS="1000",
        PREFTRACK_COMMIT_BATCH_EVENTS="1000",
    )
    streams, messages, size = 24, 10, 200  # 48,000 events; up to 8 messages of each stream in flight: 384,000

    async def run(target: str) -> list[int]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = fb_grpc.FeedbackServiceStub(channel)
            calls = [
                stub.StreamFeedback(
                    iter([fb.StreamFeedbackRequest(events=_events(s, m, size)) for m in range(messages)]), timeout=120
                )
                for s in range(streams)
            ]
            return [answer.accepted for answer in await asyncio.gather(*calls)]

    with GatewayProcess(env, tmp_path / "gateway.log") as gateway:
        accepted = asyncio.run(run(gateway.target))
    assert accepted == [messages * size] * streams
    assert sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0] == streams * messages * size


_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_HEALTH_NAMES = ("", "preftrack.v1.ScoringService", "preftrack.v1.FeedbackService")


def _statuses(target: str) -> dict[str, int]:
    with grpc.insecure_channel(target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        return {name: check(health_pb2.HealthCheckRequest(service=name), timeout=5).status for name in _HEALTH_NAMES}


def _flood(target: str, streams: int, stop: threading.Event) -> list[int]:
    """``streams`` feedback streams sending 200-event messages until ``stop``; returns what each had accepted."""

    async def run() -> list[int]:
        async def messages(stream: int):
            index = 0
            while not stop.is_set():
                yield fb.StreamFeedbackRequest(events=_events(stream, index, 200))
                index += 1

        async with grpc.aio.insecure_channel(target) as channel:
            stub = fb_grpc.FeedbackServiceStub(channel)
            answers = await asyncio.gather(*(stub.StreamFeedback(messages(k), timeout=120) for k in range(streams)))
        return [answer.accepted for answer in answers]

    return asyncio.run(run())


def test_the_health_port_answers_while_ingestion_floods_the_event_loop_and_turns_not_serving_on_shutdown(
    triton, trained: Trained, tmp_path: Path
) -> None:
    health_port = free_port()
    env = gateway_env(
        triton.grpc_url,
        f"sqlite:///{tmp_path / 'e.db'}",
        repository=trained.repository,
        PREFTRACK_HEALTH_PORT=str(health_port),
    )
    health_target = f"127.0.0.1:{health_port}"
    with GatewayProcess(env, tmp_path / "gateway.log") as gateway:
        assert _statuses(health_target) == dict.fromkeys(_HEALTH_NAMES, _SERVING)
        assert _statuses(gateway.target) == _statuses(health_target)  # one truth, two ports

        stop = threading.Event()
        with futures.ThreadPoolExecutor(1) as pool, grpc.insecure_channel(health_target) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            request = health_pb2.HealthCheckRequest(service="preftrack.v1.FeedbackService")
            check(request, timeout=5)  # connected before the flood
            flooding = pool.submit(_flood, gateway.target, 8, stop)
            time.sleep(1.0)  # the streams are admitted and the event loop folds their events
            try:
                for _ in range(30):
                    assert check(request, timeout=0.5).status == _SERVING  # DEADLINE_EXCEEDED fails the test
                    time.sleep(0.05)
                assert not flooding.done(), "the flood ended before the probes did"
            finally:
                stop.set()
            accepted = flooding.result(timeout=120)
        assert min(accepted) > 0, accepted
        assert sum(accepted) == sqlite3.connect(tmp_path / "e.db").execute("SELECT count(*) FROM events").fetchone()[0]

        # SIGTERM: the health port says NOT_SERVING while the gateway drains, then the process exits (the health
        # server's threads do not keep it alive).
        os.kill(gateway.pid, signal.SIGTERM)
        seen: list[dict[str, int]] = []
        deadline = time.monotonic() + 30
        while gateway.running() and time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):  # the gateway is gone, or going
                seen.append(_statuses(health_target))
            time.sleep(0.01)
        assert not gateway.running(), "the gateway did not exit within 30 s of SIGTERM"
        assert gateway.stop() == 0, gateway.log_tail()
        first = next((k for k, statuses in enumerate(seen) if statuses[""] != _SERVING), None)
        assert first is not None, f"the health port never said NOT_SERVING during the shutdown ({len(seen)} checks)"
        not_serving = dict.fromkeys(_HEALTH_NAMES, _NOT_SERVING)
        assert all(statuses == not_serving for statuses in seen[first:]), seen[first:]  # all at once, for good


def test_the_health_port_setting_is_read_and_checked() -> None:
    base = {"PREFTRACK_PSEUDONYM_KEY": PSEUDONYM_KEY}
    assert GatewayConfig.from_env(base).health_port == 0  # off unless set: gateways on free ports never share one
    assert GatewayConfig.from_env({**base, "PREFTRACK_HEALTH_PORT": "50060"}).health_port == 50060
    for bad in ("50051", "70000"):  # the main port's default; out of range
        with pytest.raises(ConfigError, match="health_port"):
            GatewayConfig.from_env({**base, "PREFTRACK_HEALTH_PORT": bad})
