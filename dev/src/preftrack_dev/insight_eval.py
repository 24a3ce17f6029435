"""Measures of the insights against the synthetic shop's ground truth, through a live gateway: search-aware
ranking (Recommend with the query against without it), audiences (who goes on to buy), used by
tests/test_insights.py and bench/bench_insights.py.

The shop's events are sent in time order and each question is asked as of its own time, right after the
events before it were sent: every answer is prequential, and reads stay within the history the gateway keeps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

import preftrack
from preftrack.insights import InsightsClient
from preftrack_dev.replay import to_feedback_events, to_sdk_items
from preftrack_gateway.schema import Event
from preftrack_trainer.data import synthetic


@dataclasses.dataclass(frozen=True)
class SearchCase:
    """A search in the held-out period followed by purchases of the same user within the search window."""

    user_id: str
    query: str
    time_s: float
    bought: frozenset[str]


def search_cases(
    shop: synthetic.SyntheticShop, events: Sequence[Event], *, after_s: float, window_s: float = 1800.0
) -> list[SearchCase]:
    """Every search after ``after_s`` that the same user's purchases follow within ``window_s``."""
    purchases: dict[str, list[tuple[float, str]]] = {}
    for e in events:
        if e.event_type == "purchase":
            purchases.setdefault(e.user_id, []).append((e.timestamp_s, e.item_id))
    cases = []
    for e in events:
        if e.event_type != "search" or e.timestamp_s <= after_s:
            continue
        bought = {i for t, i in purchases.get(e.user_id, ()) if e.timestamp_s < t <= e.timestamp_s + window_s}
        if bought:
            cases.append(SearchCase(e.user_id, shop.truth.queries[e.event_id], e.timestamp_s, frozenset(bought)))
    return cases


def ndcg_at(ranked: Sequence[str], relevant: frozenset[str], k: int = 10) -> float:
    """Binary-relevance NDCG@k.

    >>> ndcg_at(["a", "b"], frozenset({"a"})), round(ndcg_at(["b", "a"], frozenset({"a"})), 4)
    (1.0, 0.6309)
    """
    gain = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return gain / ideal if ideal else 0.0


class Sender:
    """Sends a time-ordered event list to a gateway up to a time, once."""

    def __init__(self, client: preftrack.Client, events: Sequence[Event], queries: dict[str, str]) -> None:
        self._client = client
        self._events = list(events)
        self._queries = queries
        self._next = 0

    def until(self, time_s: float) -> None:
        """Send every event timed at or before ``time_s`` not sent yet."""
        end = self._next
        while end < len(self._events) and self._events[end].timestamp_s <= time_s:
            end += 1
        if end > self._next:
            batch = to_feedback_events(self._events[self._next : end], self._queries)
            summary = self._client.stream(batch)
            assert summary.accepted + summary.duplicates == len(batch), summary
            self._next = end


@dataclasses.dataclass(frozen=True)
class SearchReport:
    cases: int
    ndcg_with: float
    ndcg_without: float
    hits_with: float
    hits_without: float
    #: NDCG@k of ranking by Score with the query: the model's own probabilities, without Recommend's tiers.
    ndcg_scores_with: float = math.nan

    @property
    def uplift(self) -> float:
        """Relative NDCG@10 uplift of ranking with the query."""
        return self.ndcg_with / self.ndcg_without - 1.0 if self.ndcg_without else math.inf


def evaluate_search(
    client: preftrack.Client,
    shop: synthetic.SyntheticShop,
    events: Sequence[Event],
    cases: Sequence[SearchCase],
    *,
    k: int = 10,
    progress: Callable[[int], None] | None = None,
) -> SearchReport:
    """NDCG@k and hit rate@k of Recommend over the whole catalogue, with the query and without it, each case
    asked just after its search (as of then: its later view and purchase unseen). ``events`` from the start."""
    client.upsert_items(to_sdk_items(shop.items.values()))
    sender = Sender(client, events, shop.truth.queries)
    items = list(shop.items)
    with_q, without_q, hit_with, hit_without, scored_q = [], [], [], [], []
    for index, case in enumerate(sorted(cases, key=lambda c: c.time_s)):
        sender.until(case.time_s)
        at = case.time_s + 1e-3
        ranked = [i.item_id for i in client.recommend(case.user_id, items, k, as_of_s=at, query=case.query).items]
        plain = [i.item_id for i in client.recommend(case.user_id, items, k, as_of_s=at).items]
        scores = client.score(case.user_id, items, as_of_s=at, query=case.query).items
        scored_q.append(ndcg_at([i.item_id for i in sorted(scores, key=lambda i: -i.score)], case.bought, k))
        with_q.append(ndcg_at(ranked, case.bought, k))
        without_q.append(ndcg_at(plain, case.bought, k))
        hit_with.append(float(bool(case.bought & set(ranked))))
        hit_without.append(float(bool(case.bought & set(plain))))
        if progress is not None:
            progress(index)
    return SearchReport(
        len(cases),
        float(np.mean(with_q)),
        float(np.mean(without_q)),
        float(np.mean(hit_with)),
        float(np.mean(hit_without)),
        float(np.mean(scored_q)),
    )


@dataclasses.dataclass(frozen=True)
class AudienceReport:
    items: int
    auc_model: float
    auc_activity: float
    users: int


def evaluate_audiences(
    insights: InsightsClient,
    events: Sequence[Event],
    *,
    split_s: float,
    n_items: int = 10,
    min_buyers: int = 5,
) -> AudienceReport:
    """For the items bought most after ``split_s`` (events before it already sent): rank every user as of
    ``split_s`` and measure the AUC of the buyers against the rest, averaged over items; beside it, the AUC of
    ranking users by how active they were before ``split_s`` (a baseline that knows nothing of the item)."""
    users = sorted({e.user_id for e in events if e.user_id and e.user_id != synthetic.BOT_USER_ID})
    activity = {u: 0.0 for u in users}
    buyers: dict[str, set[str]] = {}
    for e in events:
        if e.user_id not in activity:
            continue
        if e.timestamp_s < split_s:
            activity[e.user_id] += 1.0
        elif e.event_type == "purchase":
            buyers.setdefault(e.item_id, set()).add(e.user_id)
    chosen = [i for i, b in sorted(buyers.items(), key=lambda kv: (-len(kv[1]), kv[0])) if len(b) >= min_buyers]
    chosen = chosen[:n_items]
    model_aucs, activity_aucs = [], []
    for item_id in chosen:
        ranked = dict(insights.iter_audience(users, item_id=item_id, as_of_s=split_s))
        labels = np.array([u in buyers[item_id] for u in users], dtype=np.float32)
        model_aucs.append(float(roc_auc_score(labels, np.array([ranked[u] for u in users]))))
        activity_aucs.append(float(roc_auc_score(labels, np.array([activity[u] for u in users]))))
    return AudienceReport(len(chosen), float(np.mean(model_aucs)), float(np.mean(activity_aucs)), len(users))
