"""The insights through a live gateway against the synthetic shop's ground truth: Recommend with a search query
beats the same Recommend without it, audiences rank the users who go on to buy first, profiles find each user's
preferred categories; and the insights API's roles and bad input."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import preftrack
from preftrack.errors import InvalidRequestError, NotFoundError, PermissionDeniedError, UnauthenticatedError
from preftrack.insights import InsightsClient
from preftrack_dev import insight_eval
from preftrack_dev.process import GatewayProcess
from preftrack_dev.replay import to_sdk_items
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import clean

from .conftest import Trained, gateway_env

ANALYST, CLIENT, ADMIN = "analyst-key-123456", "client-key-123456", "admin-key-1234567"


def _split(trained: Trained) -> tuple[list, float]:
    events, _ = clean(trained.shop.events)
    events = [e for e in events if e.user_id != synthetic.BOT_USER_ID]
    times = np.array([e.timestamp_s for e in events])
    return events, float(np.quantile(times, 0.8))


def test_search_queries_lift_ranking_and_audiences_find_buyers(trained: Trained, gateway: GatewayProcess) -> None:
    events, split = _split(trained)
    cases = insight_eval.search_cases(trained.shop, events, after_s=split)
    assert len(cases) >= 40, len(cases)
    with preftrack.Client(gateway.target, timeout_s=60) as client:
        report = insight_eval.evaluate_search(client, trained.shop, events, cases[:120])
    # bench/bench_insights.py measures NDCG@10 0.41 with the query against 0.07 without on a larger shop
    # (docs/benchmarks.md); asserted here: the goal, +20 % relative.
    assert report.ndcg_with > 1.2 * report.ndcg_without, report
    assert report.hits_with > report.hits_without, report
    with InsightsClient(gateway.target, timeout_s=120) as insights:
        audiences = insight_eval.evaluate_audiences(insights, events, split_s=max(c.time_s for c in cases[:120]))
    assert audiences.items >= 3, audiences
    assert audiences.auc_model > 0.6, audiences


def test_profiles_find_what_each_user_prefers(trained: Trained, gateway: GatewayProcess) -> None:
    events, _ = _split(trained)
    truth = trained.shop.truth
    with preftrack.Client(gateway.target, timeout_s=60) as client:
        client.upsert_items(to_sdk_items(trained.shop.items.values()))
        insight_eval.Sender(client, events, truth.queries).until(max(e.timestamp_s for e in events))
    end = max(e.timestamp_s for e in events) + 1.0
    counts: dict[str, int] = {}
    for e in events:
        counts[e.user_id] = counts.get(e.user_id, 0) + 1
    users = sorted(u for u, n in counts.items() if n >= 20)[:60]
    hits = []
    with InsightsClient(gateway.target) as insights:
        for user in users:
            profile = insights.profile(user, as_of_s=end, top=3)
            assert profile.events_used == counts[user]
            preferred = truth.preferences_at(end)[truth.user_ids.index(user)]
            above_uniform = {truth.categories[c] for c in np.flatnonzero(preferred > 1.0 / len(preferred))}
            top = [a.key for a in profile.categories][: min(3, len(above_uniform))]
            hits.append(np.mean([key in above_uniform for key in top]))
        unknown = insights.profile("never-seen-user", as_of_s=end)
    assert np.mean(hits) >= 0.75, np.mean(hits)
    assert unknown.events_used == 0 and unknown.categories == ()


def test_insights_need_an_analyst_key_and_refuse_bad_input(trained: Trained, triton, tmp_path) -> None:
    env = gateway_env(
        triton.grpc_url,
        f"sqlite:///{tmp_path / 'events.db'}",
        repository=trained.repository,
        PREFTRACK_API_KEYS=CLIENT,
        PREFTRACK_ANALYST_KEYS=ANALYST,
        PREFTRACK_ADMIN_KEYS=ADMIN,
        PREFTRACK_MAX_AUDIENCE_USERS="1000",
    )
    with GatewayProcess(env, tmp_path / "gateway.log") as gateway:
        with preftrack.Client(gateway.target, api_key=ADMIN) as admin:
            admin.upsert_items(to_sdk_items(list(trained.shop.items.values())[:20]))
        with InsightsClient(gateway.target, api_key=CLIENT) as as_client, pytest.raises(PermissionDeniedError):
            as_client.profile("u-1")
        with InsightsClient(gateway.target) as anonymous, pytest.raises(UnauthenticatedError):
            anonymous.trends()
        with (
            preftrack.Client(gateway.target, api_key=ANALYST) as analyst_as_client,
            pytest.raises(PermissionDeniedError),
        ):
            analyst_as_client.score("u-1", ["i-1"])
        with InsightsClient(gateway.target, api_key=ANALYST) as insights:
            assert insights.profile("u-1").events_used == 0
            assert insights.trends(window_s=3600).rising == ()
            with pytest.raises(NotFoundError, match="not in the catalogue"):
                insights.audience(["u-1"], item_id="no-such-item")
            with pytest.raises(NotFoundError, match="category"):
                insights.audience(["u-1"], category="no-such-category")
            with pytest.raises(InvalidRequestError, match="at most 1000"):
                insights.audience([f"u-{n}" for n in range(1001)], item_id="i-1")
            with pytest.raises(InvalidRequestError, match="user_ids"):
                insights.audience([], item_id="i-1")
            with pytest.raises(InvalidRequestError, match="min_score"):
                insights.audience(["u-1"], item_id="i-1", min_score=2.0)
            with pytest.raises(InvalidRequestError, match="top"):
                insights.profile("u-1", top=1000)
            with pytest.raises(InvalidRequestError, match="history_points"):
                insights.profile("u-1", history_points=1)
            with pytest.raises(InvalidRequestError, match="user_id"):
                insights.profile("")
            with pytest.raises(InvalidRequestError, match="window"):
                insights.trends(window_s=1.0)
            ranked = insights.audience(["u-1", "u-2", "u-1"], item_id="i-1", k=1)
            assert len(ranked) == 1 and 0.0 <= ranked[0][1] <= 1.0
        with preftrack.Client(gateway.target, api_key=CLIENT) as client:
            for query in ("", "x" * 257, "!!! ???"):
                with pytest.raises(InvalidRequestError, match="query"):
                    client.score("u-1", ["i-1"], query=query or " ")
            summary = client.stream(
                [
                    preftrack.FeedbackEvent(user_id="u-1", event_type="search", query=""),
                    preftrack.FeedbackEvent(user_id="u-1", item_id="i-1", event_type="search", query="shoes"),
                    preftrack.FeedbackEvent(user_id="u-1", item_id="i-1", event_type="view", query="shoes"),
                    preftrack.FeedbackEvent(user_id="u-1", event_type="search", query="red shoes"),
                ]
            )
            assert summary.accepted == 1 and summary.rejected_by_field == {"query": 2, "item_id": 1}, summary


def test_trends_find_the_rising_and_falling_categories_and_the_cli_reads_them(gateway: GatewayProcess) -> None:
    day = 86_400.0
    now = time.time()
    items = [
        preftrack.Item(item_id=f"{kind}-{n}", categories=(kind,), attributes={"brand": brand}, title=f"{brand} {kind}")
        for kind, brand in (("lamp", "Lumo"), ("shoe", "Stride"))
        for n in range(3)
    ]

    def views(kind: str, count: int, days_ago: float) -> list[preftrack.FeedbackEvent]:
        return [
            preftrack.FeedbackEvent(
                user_id=f"u-{n % 7}", item_id=f"{kind}-{n % 3}", event_type="view", timestamp_s=now - days_ago * day + n
            )
            for n in range(count)
        ]

    with preftrack.Client(gateway.target) as client:
        client.upsert_items(items)
        sent = views("lamp", 30, 10) + views("shoe", 10, 10) + views("lamp", 10, 3) + views("shoe", 30, 3)
        assert client.stream(sent).accepted == len(sent)
    with InsightsClient(gateway.target) as insights:
        trends = insights.trends(window_s=7 * day, as_of_s=now)
    assert (trends.events_recent, trends.events_before) == (40, 40)
    assert {(t.kind, t.key) for t in trends.rising} == {("category", "shoe"), ("attribute", "brand=Stride")}
    assert {(t.kind, t.key) for t in trends.falling} == {("category", "lamp"), ("attribute", "brand=Lumo")}
    for t in trends.rising:
        assert (t.share_recent, t.share_before) == (pytest.approx(0.75), pytest.approx(0.25))
    cli = subprocess.run(
        [sys.executable, "-m", "preftrack.insights.cli", "--target", gateway.target, "trends", "--window", "7d"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "shoe" in cli.stdout and "lamp" in cli.stdout
