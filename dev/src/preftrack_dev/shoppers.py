"""Simulated shoppers answering a live gateway's recommendations: the synthetic shop's users, buying what they
are shown with their ground-truth preference for its category as the probability; and registering a version
copied into the repository as the trainer would. Used to test and measure rollouts decided on feedback
(tests/test_rollout.py, bench/bench_rollout.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np

import preftrack
from preftrack_dev.replay import to_feedback_events, to_sdk_items, to_sdk_users
from preftrack_gateway.features import FeatureSpec
from preftrack_gateway.registry import Registry
from preftrack_gateway.store import VersionRecord, open_store
from preftrack_trainer.data import synthetic


def register_exported(
    store_url: str, version: int, *, parent: int | None, actor: str, metrics: dict[str, object] | None = None
) -> bool:
    """Register a version already written to the repository as ``exported`` (with the default feature schema and
    any other ``metrics``, such as the trainer's holdout evaluations), as the continual trainer does after its
    gate (parent None: trained from scratch); the gateways then roll it out. False if already registered."""

    async def run() -> bool:
        store = await open_store(store_url)
        try:
            now = time.time()
            record = VersionRecord(
                version=version,
                state="exported",
                parent=parent,
                metrics={**(metrics or {}), "feature_schema_hash": FeatureSpec().schema_hash()},
                note=f"exported by {actor}",
                created_at=now,
                updated_at=now,
            )
            return await Registry(store).register(record, actor=actor, reason=f"exported by {actor}")
        finally:
            await store.close()

    return asyncio.run(run())


class Shoppers:
    """Users of the synthetic shop (its ground-truth preferences) answering recommendations live."""

    def __init__(self, target: str, config: synthetic.SyntheticConfig, *, seed: int = 9) -> None:
        self.shop = synthetic.generate(config)
        self.client = preftrack.Client(target, timeout_s=30)
        self.rng = np.random.default_rng(seed)
        truth = self.shop.truth
        self.prefs = truth.preferences_after
        self.users = list(truth.user_ids)
        self.category = {i.item_id: truth.categories.index(i.categories[0]) for i in self.shop.items.values()}
        self.items = list(self.shop.items)
        self.sent = 0
        self.lists = 0

    def load_history(self) -> None:
        """The shop's users' attributes, and its history, moved to end a minute ago, so the features know each user."""
        self.client.upsert_items(to_sdk_items(self.shop.items.values()))
        self.client.upsert_users(to_sdk_users(self.shop.users))
        events = to_feedback_events(
            [e for e in self.shop.events if e.user_id != synthetic.BOT_USER_ID], self.shop.truth.queries
        )
        shift = time.time() - 60 - max(e.timestamp_s for e in events)
        moved = [dataclasses.replace(e, timestamp_s=e.timestamp_s + shift) for e in events]
        assert self.client.stream(moved).accepted == len(moved)

    def close(self) -> None:
        self.client.close()

    def visit(self, n: int = 20) -> None:
        """``n`` users ask for 5 of 30 random items and buy each shown item with their preference for its
        category as the probability."""
        for _ in range(n):
            u = int(self.rng.integers(len(self.users)))
            candidates = list(self.rng.choice(self.items, size=30, replace=False))
            shown = self.client.recommend(self.users[u], candidates, k=5)
            bought = [
                preftrack.FeedbackEvent(
                    event_id=f"buy-{shown.recommendation_id}-{item.item_id}",
                    user_id=self.users[u],
                    item_id=item.item_id,
                    event_type="purchase",
                    timestamp_s=time.time(),
                    recommendation_id=shown.recommendation_id,
                )
                for item in shown.items
                if self.rng.random() < self.prefs[u, self.category[item.item_id]]
            ]
            # A view per visit moves the outcome clock on even when nothing is bought.
            bought.append(
                preftrack.FeedbackEvent(
                    event_id=f"view-{shown.recommendation_id}",
                    user_id=self.users[u],
                    item_id=shown.items[0].item_id,
                    event_type="view",
                    timestamp_s=time.time(),
                )
            )
            self.client.send(bought)
            self.sent += len(bought)
            self.lists += 1
