"""The gateway as a real process in front of a real Triton, called through the SDK."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import preftrack
from preftrack_dev.process import GatewayProcess
from preftrack_gateway import contract
from preftrack_gateway.features import FeatureSpec, FeatureState
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event, Item

from .conftest import PSEUDONYM_KEY, gateway_env

pytestmark = pytest.mark.e2e

ITEMS = [preftrack.Item(item_id=f"i-{n}", categories=(f"cat-{n % 4}",), price=10.0 + n) for n in range(12)]


def _sync_score(target: str, user: str, items: list[str]) -> preftrack.Scores:
    with preftrack.Client(target) as client:
        return client.score(user, items)


def _async_score(target: str, user: str, items: list[str]) -> preftrack.Scores:
    async def run() -> preftrack.Scores:
        async with preftrack.AsyncClient(target) as client:
            return await client.score(user, items)

    return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def score_with(request: pytest.FixtureRequest):
    """Score through the sync or the async SDK client."""
    return _sync_score if request.param == "sync" else _async_score


def _direct_triton(triton_url: str, user: str, items: list[str], history: list[Event]) -> np.ndarray:
    """What the gateway should answer, computed here from the same history and sent to Triton directly."""
    key = Pseudonymiser(PSEUDONYM_KEY)(user)
    state = FeatureState(
        FeatureSpec(), {i.item_id: Item(item_id=i.item_id, categories=i.categories, price=i.price) for i in ITEMS}
    )
    state.update_many(history)
    now = time.time()
    features = np.array([state.row(key, item, now) for item in items], dtype=np.float32)
    arrays = contract.user_request_arrays(key, (), [state.item(i) for i in items], features)
    inputs = []
    for name, array, dtype in arrays:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = grpcclient.InferenceServerClient(triton_url)
    try:
        return client.infer(contract.MODEL_NAME, inputs, model_version="1").as_numpy(contract.SCORE).reshape(-1)
    finally:
        client.close()


def test_scores_match_triton_directly_with_the_same_history(gateway, triton, score_with) -> None:
    t0 = time.time() - 3600
    sent = [
        preftrack.FeedbackEvent(user_id="alice", item_id=f"i-{n % 5}", event_type=kind, timestamp_s=t0 + n * 60)
        for n, kind in enumerate(["view", "click", "view", "add_to_cart", "purchase", "view", "click"])
    ]
    with preftrack.Client(gateway.target) as client:
        client.upsert_items(ITEMS)
        assert client.send(sent).accepted == len(sent)
    items = [i.item_id for i in ITEMS]
    answer = score_with(gateway.target, "alice", items)
    key = Pseudonymiser(PSEUDONYM_KEY)("alice")
    history = [
        Event(
            event_id=e.event_id, user_id=key, item_id=e.item_id, event_type=str(e.event_type), timestamp_s=e.timestamp_s
        )
        for e in sent
    ]
    expected = _direct_triton(gateway.env["PREFTRACK_TRITON_URL"], "alice", items, history)
    assert [s.item_id for s in answer.items] == items  # request order
    np.testing.assert_allclose([s.score for s in answer.items], expected, rtol=1e-4, atol=1e-5)
    assert answer.model_version == "1" and len(answer.request_id) == 32


def test_recommend_ranks_excludes_and_logs_the_impression(gateway, tmp_path: Path) -> None:
    with preftrack.Client(gateway.target) as client:
        client.upsert_items(ITEMS)
        candidates = [i.item_id for i in ITEMS]
        scores = client.score("bob", candidates).as_dict()
        rec = client.recommend("bob", candidates, k=3, exclude=["i-0"])
    expected = sorted((c for c in candidates if c != "i-0"), key=lambda c: -scores[c])[:3]
    assert [i.item_id for i in rec.items] == expected
    assert [i.score for i in rec.items] == sorted((i.score for i in rec.items), reverse=True)
    db = sqlite3.connect(gateway.env["PREFTRACK_STORE_URL"].removeprefix("sqlite:///"))
    deadline = time.monotonic() + 5  # impressions are written in the background, in batches
    while True:
        query = "SELECT model_version, item_ids FROM impressions WHERE recommendation_id = ?"
        row = db.execute(query, (rec.recommendation_id,)).fetchone()
        if row is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    db.close()
    assert row is not None and row[0] == "1" and expected[0] in row[1], gateway.log_tail()


def test_a_purchase_raises_the_next_score_in_its_category(gateway, score_with) -> None:
    with preftrack.Client(gateway.target) as client:
        client.upsert_items(ITEMS)
        same_category = ["i-1", "i-5", "i-9"]  # cat-1
        before = score_with(gateway.target, "carol", same_category)
        # Each purchase after a view of the item, as every purchase the model learned from was. (With bare
        # purchases and no other event, a history unlike any in the training data, one of three trained versions
        # lowered the untouched item's score: 0.159 -> 0.151; the other two raised it.)
        for item in ("i-1", "i-5"):
            client.send(preftrack.FeedbackEvent(user_id="carol", item_id=item, event_type="view"))
            client.send(preftrack.FeedbackEvent(user_id="carol", item_id=item, event_type="purchase"))
        after = score_with(gateway.target, "carol", same_category)
    # The untouched item of the same category (i-9) moves too: the category affinity feature changed.
    assert after.as_dict()["i-9"] > before.as_dict()["i-9"]
    assert sum(s.score for s in after.items) > sum(s.score for s in before.items)


def _stream_with_duplicates(target: str, n: int) -> tuple[preftrack.FeedbackSummary, list[str]]:
    t0 = time.time() - 7200
    events = [
        preftrack.FeedbackEvent(
            user_id=f"u{k % 97}", item_id=f"i-{k % 12}", event_type="view", timestamp_s=t0 + k * 0.5
        )
        for k in range(n)
    ]
    resent = events[::10]  # 10% re-sent, interleaved at the end as a retrying client would
    with preftrack.Client(target) as client:
        summary = client.stream(events + resent, batch_size=500)
    return summary, [e.event_id for e in events]


def test_streamed_feedback_with_duplicates_is_stored_exactly_once(gateway) -> None:
    summary, _ = _stream_with_duplicates(gateway.target, 10_000)
    assert (summary.accepted, summary.duplicates, summary.rejected) == (10_000, 1_000, ())
    db = sqlite3.connect(gateway.env["PREFTRACK_STORE_URL"].removeprefix("sqlite:///"))
    assert db.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (10_000, 10_000)
    db.close()


def test_postgres_backed_gateway_stores_streamed_feedback_exactly_once(triton, fresh_postgres_url, tmp_path) -> None:
    import psycopg

    with GatewayProcess(gateway_env(triton.grpc_url, fresh_postgres_url), tmp_path / "gw.log") as gw:
        summary, _ = _stream_with_duplicates(gw.target, 10_000)
        assert (summary.accepted, summary.duplicates) == (10_000, 1_000)
        with preftrack.Client(gw.target) as client:
            client.upsert_items(ITEMS)
            assert len(client.score("dave", ["i-1", "i-2"]).items) == 2
    with psycopg.connect(fresh_postgres_url) as db:
        assert db.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone() == (10_000, 10_000)


def test_stream_reports_rejected_events_and_stores_the_rest(gateway) -> None:
    now = time.time()
    good = [preftrack.FeedbackEvent(user_id="eve", item_id="i-1", event_type="view") for _ in range(3)]
    bad = [
        preftrack.FeedbackEvent(user_id="", item_id="i-1", event_type="view", event_id="bad-user"),
        preftrack.FeedbackEvent(
            user_id="eve", item_id="i-1", event_type="view", event_id="bad-time", timestamp_s=now + 86_400
        ),
        preftrack.FeedbackEvent(user_id="eve", item_id="i-1", event_type="rating", value=42, event_id="bad-rating"),
    ]
    with preftrack.Client(gateway.target) as client:
        summary = client.stream(good + bad)
    assert summary.accepted == 3
    reasons = {r.event_id: r.reason for r in summary.rejected}
    assert set(reasons) == {"bad-user", "bad-time", "bad-rating"}
    assert "user_id" in reasons["bad-user"] and "future" in reasons["bad-time"] and "rating" in reasons["bad-rating"]
    assert summary.rejected_count == 3 and sum(summary.rejected_by_field.values()) == 3

    # Many refusals: counted in full, listed up to 1,000, so the answer always fits (and memory stays bounded).
    many = [
        preftrack.FeedbackEvent(user_id="", item_id="i-1", event_type="view", event_id=f"x-{k}") for k in range(30_000)
    ]
    with preftrack.Client(gateway.target, timeout_s=60) as client:
        summary = client.stream(many + good[:1])
    assert summary.rejected_count == 30_000 and len(summary.rejected) == 1000
    assert summary.rejected_by_field == {"user_id": 30_000}
    assert summary.accepted + summary.duplicates == 1


def test_kill_9_loses_no_acknowledged_event(triton, tmp_path) -> None:
    store = tmp_path / "events.db"
    env = gateway_env(triton.grpc_url, f"sqlite:///{store}")
    gw = GatewayProcess(env, tmp_path / "gw.log").start()
    acknowledged: list[str] = []
    stop = threading.Event()

    def producer(worker: int) -> None:
        with preftrack.Client(gw.target, timeout_s=2.0) as client:
            k = 0
            while not stop.is_set():
                batch = [
                    preftrack.FeedbackEvent(user_id=f"w{worker}", item_id=f"i-{k % 9}", event_type="click")
                    for _ in range(20)
                ]
                k += 1
                try:
                    client.send(batch)
                except preftrack.PreftrackError:
                    return  # the gateway died under us: these were not acknowledged
                acknowledged.extend(e.event_id for e in batch)

    threads = [threading.Thread(target=producer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    gw.kill()
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) > 100
    restarted = GatewayProcess(env, tmp_path / "gw2.log").start()
    try:
        db = sqlite3.connect(store)
        stored = dict(db.execute("SELECT event_id, count(*) FROM events GROUP BY event_id").fetchall())
        db.close()
        missing = [e for e in acknowledged if e not in stored]
        assert not missing, f"{len(missing)} acknowledged events lost"
        assert all(stored[e] == 1 for e in acknowledged)
        # The restarted gateway rebuilt its features from the store and still scores.
        with preftrack.Client(restarted.target) as client:
            assert len(client.score("w0", ["i-1"]).items) == 1
    finally:
        restarted.stop()


def test_sigterm_drains_and_exits_cleanly(triton, tmp_path) -> None:
    gw = GatewayProcess(gateway_env(triton.grpc_url, f"sqlite:///{tmp_path / 'e.db'}"), tmp_path / "gw.log").start()
    with preftrack.Client(gw.target) as client:
        summary = client.send(
            [preftrack.FeedbackEvent(user_id="f", item_id="i-1", event_type="view") for _ in range(5)]
        )
    assert summary.accepted == 5
    assert gw.stop() == 0
    assert "gateway stopped" in gw.log_tail()


def test_no_raw_user_id_reaches_the_database_files(gateway) -> None:
    raw = "frank.raw-user-4711@example.com"
    with preftrack.Client(gateway.target) as client:
        client.upsert_items(ITEMS)
        client.send([preftrack.FeedbackEvent(user_id=raw, item_id="i-2", event_type="purchase") for _ in range(3)])
        client.recommend(raw, ["i-1", "i-2", "i-3"], k=2)
        client.score(raw, ["i-1"])
    folder = Path(gateway.env["PREFTRACK_STORE_URL"].removeprefix("sqlite:///")).parent
    files = [p for p in folder.iterdir() if p.name.startswith("events.db")]
    assert files
    for path in files:
        assert raw.encode() not in path.read_bytes(), path
    assert raw not in gateway.log_file.read_text()


def _through_sender(kind: str, target: str, events: list, *, close_timeout_s: float = 30.0, **client_args):
    """Send ``events`` through the sync or the async client's background sender and close it; returns the
    sender (its counts) or the error ``close`` raised."""
    options = {"batch_size": 100, "flush_interval_s": 0.05}
    if kind == "sync":
        with preftrack.Client(target, **client_args) as client:
            sender = client.feedback_sender(**options)
            assert [sender.send(e) for e in events] == [e.event_id for e in events]
            try:
                sender.close(timeout_s=close_timeout_s)
            except preftrack.PreftrackError as exc:
                return exc
            return sender

    async def run():
        async with preftrack.AsyncClient(target, **client_args) as client:
            sender = client.feedback_sender(**options)
            assert [await sender.send(e) for e in events] == [e.event_id for e in events]
            try:
                await sender.close(timeout_s=close_timeout_s)
            except preftrack.PreftrackError as exc:
                return exc
            return sender

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sender_batches_in_the_background_and_flushes_on_close(gateway, kind: str) -> None:
    events = [preftrack.FeedbackEvent(user_id="g", item_id="i-3", event_type="view") for _ in range(1234)]
    events.append(preftrack.FeedbackEvent(user_id="g", item_id="i-3", event_type="rating", value=99, event_id="bad"))
    sender = _through_sender(kind, gateway.target, events)
    assert sender.accepted == 1234
    assert [r.event_id for r in sender.rejected] == ["bad"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sender_never_drops_silently_when_the_gateway_is_gone(kind: str) -> None:
    from preftrack_dev.process import free_port

    events = [preftrack.FeedbackEvent(user_id="h", item_id="i-1", event_type="view") for _ in range(25)]
    error = _through_sender(
        kind, f"127.0.0.1:{free_port()}", events, close_timeout_s=2.0, timeout_s=0.5, max_attempts=2
    )
    assert isinstance(error, preftrack.FeedbackNotDeliveredError)
    assert sorted(e.event_id for e in error.events) == sorted(e.event_id for e in events)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stream_honours_the_clients_stream_timeout(gateway, kind: str) -> None:
    def slow():
        for k in range(5):
            time.sleep(0.5)
            yield preftrack.FeedbackEvent(user_id="s", item_id="i-1", event_type="view", event_id=f"slow-{kind}-{k}")

    if kind == "sync":
        with (
            preftrack.Client(gateway.target, stream_timeout_s=1.0) as client,
            pytest.raises(preftrack.DeadlineExceededError),
        ):
            client.stream(slow(), batch_size=1)
        return

    async def run():
        async def slow_async():
            for event in slow():
                yield event

        async with preftrack.AsyncClient(gateway.target, stream_timeout_s=1.0) as client:
            with pytest.raises(preftrack.DeadlineExceededError):
                await client.stream(slow_async(), batch_size=1)

    asyncio.run(run())


def test_health_is_not_serving_and_scores_unavailable_without_triton(tmp_path) -> None:
    from preftrack_dev.process import free_port

    env = gateway_env(f"127.0.0.1:{free_port()}", f"sqlite:///{tmp_path / 'e.db'}")
    gw = GatewayProcess(env, tmp_path / "gw.log").start(require_serving=False)
    try:
        first = gw.pid
        assert gw.start(require_serving=False).pid == first  # started once: a second start leaves it as it is
        with preftrack.Client(gw.target, max_attempts=2) as client:
            assert not client.healthy()
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health = health_pb2_grpc.HealthStub(client._channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            check = health_pb2.HealthCheckRequest
            assert health.Check(check(service="preftrack.v1.ScoringService")).status != serving
            assert health.Check(check(service="preftrack.v1.FeedbackService")).status == serving  # takes events
            with pytest.raises(preftrack.UnavailableError, match="is ready in Triton yet"):
                client.score("x", ["i-1"])
            # Feedback does not need Triton: it is still stored.
            assert client.send(preftrack.FeedbackEvent(user_id="x", item_id="i-1", event_type="view")).accepted == 1
    finally:
        assert gw.stop() == 0


def test_api_key_is_required_when_configured(triton, tmp_path) -> None:
    env = gateway_env(triton.grpc_url, f"sqlite:///{tmp_path / 'e.db'}", PREFTRACK_API_KEYS="key-one,key-two")
    with GatewayProcess(env, tmp_path / "gw.log") as gw:
        with preftrack.Client(gw.target) as client, pytest.raises(preftrack.UnauthenticatedError, match="API key"):
            client.score("x", ["i-1"])
        with preftrack.Client(gw.target, api_key="wrong") as client, pytest.raises(preftrack.UnauthenticatedError):
            client.score("x", ["i-1"])
        with preftrack.Client(gw.target, api_key="key-two") as client:
            assert len(client.score("x", ["i-1"]).items) == 1


def test_metrics_endpoint_counts_rpcs_and_events(triton, tmp_path) -> None:
    import urllib.request

    from preftrack_dev.process import free_port

    port = free_port()
    env = gateway_env(triton.grpc_url, f"sqlite:///{tmp_path / 'e.db'}", PREFTRACK_METRICS_PORT=str(port))
    with GatewayProcess(env, tmp_path / "gw.log") as gw:
        with preftrack.Client(gw.target) as client:
            client.score("m", ["i-1", "i-2"])
            client.send([preftrack.FeedbackEvent(user_id="m", item_id="i-1", event_type="view")] * 2)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'preftrack_rpc_latency_seconds_count{code="OK",method="Score"} 1.0' in text
    assert 'preftrack_requests_by_model_version_total{method="Score",version="1"} 1.0' in text
    assert 'preftrack_feedback_events_total{outcome="accepted"} 1.0' in text
    assert 'preftrack_feedback_events_total{outcome="duplicate"} 1.0' in text
    # The view waits for its attribution window; nothing was learned from a guess.
    assert "preftrack_online_waiting_for_labels 1.0" in text
    assert "preftrack_online_skipped_total 0.0" in text
    # Nothing learned yet: the per-event layer's two step sizes share its prediction equally.
    assert (
        'preftrack_online_step_share{member="0.1"} 0.5' in text
        and 'preftrack_online_step_share{member="0.3"} 0.5' in text
    )
    assert 'preftrack_rollout_version{role="stable"} 1.0' in text
    assert 'preftrack_rollout_version{role="candidate"} 0.0' in text


def test_both_clients_stream_alike_and_report_events_the_sdk_cannot_encode(gateway) -> None:
    import asyncio

    def events(tag: str) -> list[preftrack.FeedbackEvent]:
        good = [preftrack.FeedbackEvent(user_id="p", item_id="i-1", event_type="view", event_id=f"{tag}-{k}")
                for k in range(2500)]  # fmt: skip
        bad = preftrack.FeedbackEvent(user_id="p", item_id="i-1", event_type="like", event_id=f"{tag}-bad")
        return [*good[:1200], bad, *good[1200:]]

    with preftrack.Client(gateway.target, timeout_s=30) as client:
        sync = client.stream(iter(events("sync")), batch_size=500)  # a one-pass iterator is streamed lazily

    async def run() -> preftrack.FeedbackSummary:
        async def produce():
            for event in events("async"):
                yield event

        async with preftrack.AsyncClient(gateway.target, timeout_s=30) as client:
            return await client.stream(produce(), batch_size=500)

    async_summary = asyncio.run(run())
    for summary, tag in ((sync, "sync"), (async_summary, "async")):
        assert (summary.accepted, summary.rejected_count) == (2500, 1)
        assert summary.rejected[0].event_id == f"{tag}-bad" and "not sent" in summary.rejected[0].reason
        assert summary.rejected_by_field == {"sdk": 1}


def test_sigterm_under_load_cancels_nothing_and_loses_nothing(triton, tmp_path) -> None:
    """In-flight calls finish; calls after the drain began get UNAVAILABLE (which the SDK retries), never
    CANCELLED; every acknowledged event is stored."""
    store = tmp_path / "events.db"
    gw = GatewayProcess(gateway_env(triton.grpc_url, f"sqlite:///{store}"), tmp_path / "gw.log").start()
    acknowledged: list[str] = []
    codes: list[str] = []
    stop = threading.Event()

    def worker(n: int) -> None:
        with preftrack.Client(gw.target, timeout_s=5.0, max_attempts=2) as client:
            k = 0
            while not stop.is_set():
                k += 1
                batch = [preftrack.FeedbackEvent(user_id=f"s{n}", item_id=f"i-{k % 9}", event_type="view")]
                try:
                    if k % 2:
                        client.score(f"s{n}", ["i-1", "i-2"])
                    else:
                        client.stream(batch * 3)
                        acknowledged.extend(e.event_id for e in batch)
                        client.send(batch[0])
                except preftrack.PreftrackError as exc:
                    codes.append(exc.code)
                    if exc.code == "UNAVAILABLE":
                        return

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    assert gw.stop() == 0, gw.log_tail()
    stop.set()
    for thread in threads:
        thread.join()
    assert "CANCELLED" not in codes, codes
    assert set(codes) <= {"UNAVAILABLE"}, codes
    db = sqlite3.connect(store)
    stored = {row[0] for row in db.execute("SELECT event_id FROM events")}
    db.close()
    assert len(acknowledged) > 20 and not [e for e in acknowledged if e not in stored]
