"""Locust gRPC users for the preftrack gateway, driving it through the SDK.

    locust -f loadtests/locustfile.py --host 127.0.0.1:50051 --headless -u 32 -r 8 -t 60s

Each user type records its calls as Locust requests (type "grpc"); any SDK error is a failure.
Environment: PREFTRACK_LOAD_ITEMS (catalogue size, 500), PREFTRACK_LOAD_CANDIDATES (Recommend candidates, 100),
PREFTRACK_LOAD_BATCH (events per streamed batch, 200).
"""

from __future__ import annotations

# Locust runs on gevent: gRPC must cooperate with it before any channel exists.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

from locust import User, between, events, task  # noqa: E402

import preftrack  # noqa: E402

N_ITEMS = int(os.environ.get("PREFTRACK_LOAD_ITEMS", "500"))
N_CANDIDATES = int(os.environ.get("PREFTRACK_LOAD_CANDIDATES", "100"))
BATCH = int(os.environ.get("PREFTRACK_LOAD_BATCH", "200"))
ITEM_IDS = [f"load-item-{n}" for n in range(N_ITEMS)]


@events.test_start.add_listener
def _catalogue(environment, **_kwargs) -> None:
    with preftrack.Client(environment.host) as client:
        client.upsert_items(
            [
                preftrack.Item(item_id=i, categories=(f"load-cat-{n % 12}",), price=5.0 + n % 50)
                for n, i in enumerate(ITEM_IDS)
            ]
        )


class _GatewayUser(User):
    abstract = True
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.client = preftrack.Client(self.host, timeout_s=10.0)
        self.user_id = f"load-user-{random.randrange(10_000)}"

    def on_stop(self) -> None:
        self.client.close()

    def _record(self, name: str, call, size=lambda result: 0) -> None:
        started = time.perf_counter()
        error: Exception | None = None
        result = None
        try:
            result = call()
        except preftrack.PreftrackError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size(result) if result is not None else 0,
            exception=error,
            context={},
        )


class ScoreUser(_GatewayUser):
    """Scores 10 random items."""

    @task
    def score(self) -> None:
        self._record(
            "Score", lambda: self.client.score(self.user_id, random.sample(ITEM_IDS, 10)), lambda r: len(r.items)
        )


class RecommendUser(_GatewayUser):
    """Recommends 10 out of N_CANDIDATES candidates."""

    @task
    def recommend(self) -> None:
        self._record(
            "Recommend",
            lambda: self.client.recommend(self.user_id, random.sample(ITEM_IDS, min(N_CANDIDATES, N_ITEMS)), k=10),
            lambda r: len(r.items),
        )


class FeedbackStreamUser(_GatewayUser):
    """Streams batches of behaviour events."""

    @task
    def stream(self) -> None:
        kinds = ("view", "view", "view", "click", "add_to_cart", "purchase")
        batch = [
            preftrack.FeedbackEvent(
                user_id=self.user_id, item_id=random.choice(ITEM_IDS), event_type=random.choice(kinds)
            )
            for _ in range(BATCH)
        ]

        def send() -> preftrack.FeedbackSummary:
            summary = self.client.stream(batch, batch_size=BATCH)
            if summary.rejected or summary.accepted + summary.duplicates != len(batch):
                raise preftrack.PreftrackError(f"stream summary {summary} for {len(batch)} events", "MISMATCH")
            return summary

        self._record("StreamFeedback", send, lambda s: s.accepted)
