"""Forgetting a user: the store keeps no trace of them, every real-time state drops them (the replica that erased
them at once, another replica and the continual trainer by rebuilding from the store), and their scores equal a
new user's. Also the pseudonym key from a file and raw-event retention."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

import preftrack
from preftrack.admin import AdminClient
from preftrack.errors import InvalidRequestError, PermissionDeniedError
from preftrack_dev.process import GatewayProcess
from preftrack_gateway.config import ConfigError, GatewayConfig
from preftrack_gateway.features import NUM_FEATURES, FeatureSpec, FeatureState, LabelSpec
from preftrack_gateway.online import Correction, OnlineConfig
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event, Item, stable_hash
from preftrack_gateway.store import open_store

from .conftest import PSEUDONYM_KEY, Trained, gateway_env

CLIENT, ADMIN = "client-key-0123456789", "admin-key-0123456789"
ITEMS = [preftrack.Item(item_id=f"i-{n}", categories=(f"cat-{n % 4}",), price=10.0 + n) for n in range(12)]
CATALOG = {i.item_id: Item(item_id=i.item_id, categories=i.categories, price=i.price) for i in ITEMS}
USER_BUCKETS = 1 << 16  # the model's user embedding rows (ModelConfig.user_buckets)


def _events(user: str, n: int, *, start_s: float, seed: int) -> list[Event]:
    rng = random.Random(seed)
    return [
        Event(
            event_id=f"{user}-{seed}-{k}",
            user_id=user,
            item_id=f"i-{rng.randrange(12)}",
            event_type=rng.choice(["view", "view", "click", "add_to_cart", "purchase"]),
            timestamp_s=start_s + 37.0 * k,
        )
        for k in range(n)
    ]


def test_forgetting_a_user_in_the_features_equals_never_having_seen_them() -> None:
    t0 = 1.7e9
    alice, others = _events("alice", 60, start_s=t0, seed=1), _events("carol", 80, start_s=t0 + 5, seed=2)
    mixed = [*alice, *others]
    random.Random(3).shuffle(mixed)
    state = FeatureState(FeatureSpec(), CATALOG)
    state.update_many(mixed)
    state.forget("alice", alice)
    never = FeatureState(FeatureSpec(), CATALOG)
    never.update_many(others)
    items = list(CATALOG)
    for t in (t0 + 1000.0, t0 + 4000.0):
        for user in ("alice", "carol", "dave"):
            assert np.allclose(state.rows(user, items, t), never.rows(user, items, t), atol=1e-9)


def test_forgetting_a_user_resets_their_per_event_weights_only() -> None:
    # Every weight of the user's own: bias, crosses with the item, its category and its attribute, and their
    # weight on the version's logit (calibration on, a version that is not sure of 0.5).
    correction = Correction(OnlineConfig(calibration=True))
    item = Item(item_id="i-3", categories=("c-1",), attributes=(("brand", "acme"),))
    features = np.zeros(NUM_FEATURES)
    for _ in range(50):
        correction.learn(correction.coordinates("alice", item, features), 1.5, 1.0)
        correction.learn(correction.coordinates("carol", item, features), 1.5, 0.0)

    def value(user: str) -> float:
        return correction.value(correction.coordinates(user, item, features), 1.5)

    carol_before = value("carol")
    assert value("alice") != value("bob")
    correction.forget("alice", [item])
    assert value("alice") == value("bob")  # a user never seen
    assert value("carol") == carol_before


def _embedding_twin(user_id: str) -> str:
    """A never-seen user id whose pseudonym lands in the same user embedding row as ``user_id``'s."""
    pseudonymise = Pseudonymiser(PSEUDONYM_KEY)
    row = stable_hash(pseudonymise(user_id)) % USER_BUCKETS
    for n in range(10_000_000):
        candidate = f"twin-{n}"
        if stable_hash(pseudonymise(candidate)) % USER_BUCKETS == row:
            return candidate
    raise AssertionError("no twin found")


def _texts_in_store(store_url: str, path: Path | None) -> str:
    """Every stored value of every table, as one string (and, for SQLite, the raw bytes of its files)."""
    if store_url.startswith("sqlite:///"):
        assert path is not None
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        with sqlite3.connect(path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            rows = [repr(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"')]
        return raw.decode("latin-1") + "\n".join(rows)
    with psycopg.connect(store_url) as db:
        tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(repr(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))


@pytest.mark.e2e
def test_forget_user_leaves_no_trace_and_scores_like_a_new_user(
    triton, trained: Trained, store_url: str, tmp_path: Path
) -> None:
    alice = "alice@example.com"
    pseudonym = Pseudonymiser(PSEUDONYM_KEY)(alice)
    twin = _embedding_twin(alice)
    db_path = Path(store_url.removeprefix("sqlite:///")) if store_url.startswith("sqlite") else None
    env = gateway_env(
        triton.grpc_url,
        store_url,
        repository=trained.repository,
        PREFTRACK_API_KEYS=CLIENT,
        PREFTRACK_ADMIN_KEYS=ADMIN,
        PREFTRACK_ROLLOUT_MODE="direct",
    )
    now = time.time()
    items = [i.item_id for i in ITEMS]
    with (
        GatewayProcess(env, tmp_path / "gateway.log") as gateway,
        preftrack.Client(gateway.target, api_key=CLIENT) as client,
        AdminClient(gateway.target, api_key=ADMIN) as admin,
    ):
        preftrack.Client(gateway.target, api_key=ADMIN).upsert_items(ITEMS)
        for user, seed in ((alice, 1), ("carol", 2)):
            client.send(
                [
                    preftrack.FeedbackEvent(
                        user_id=user, item_id=e.item_id, event_type=e.event_type, timestamp_s=e.timestamp_s
                    )
                    for e in _events(user, 40, start_s=now - 3000, seed=seed)
                ]
            )
        shown = client.recommend(alice, items, k=4)
        client.send(
            preftrack.FeedbackEvent(
                user_id=alice,
                item_id=shown.items[0].item_id,
                event_type="purchase",
                recommendation_id=shown.recommendation_id,
            )
        )
        time.sleep(0.5)  # the served list is written in the background
        as_of = time.time()
        before = [s.score for s in client.score(alice, items, as_of_s=as_of).items]
        new_user = [s.score for s in client.score(twin, items, as_of_s=as_of).items]
        assert not np.allclose(before, new_user), "the user's history should move their scores"
        assert pseudonym in _texts_in_store(store_url, db_path)

        with pytest.raises(PermissionDeniedError):
            AdminClient(gateway.target, api_key=CLIENT).forget_user(alice)
        with pytest.raises(InvalidRequestError, match="user_id"):
            admin.forget_user("")
        erasure = admin.forget_user(alice)
        assert (erasure.events_deleted, erasure.impressions_deleted) == (41, 1)

        after = [s.score for s in client.score(alice, items, as_of_s=as_of).items]
        assert np.allclose(after, [s.score for s in client.score(twin, items, as_of_s=as_of).items], atol=1e-6)
        carol = client.score("carol", items, as_of_s=as_of).items
        assert len(carol) == len(items)

        stored = _texts_in_store(store_url, db_path)
        assert alice not in stored and pseudonym not in stored
        assert "carol" not in stored  # raw ids never reach the store anyway
        assert Pseudonymiser(PSEUDONYM_KEY)("carol") in stored  # other users' events stay
        assert admin.forget_user(alice).events_deleted == 0  # idempotent
        assert [(e.ticket, e.events_deleted) for e in admin.erasures()[:1]] == [(erasure.ticket, 41)]
        assert erasure.ticket in stored and "admin" in stored


@pytest.mark.e2e
def test_a_user_forgotten_through_one_replica_is_forgotten_by_another(
    triton, trained: Trained, fresh_postgres_url: str, tmp_path: Path
) -> None:
    alice, twin = "alice-2", _embedding_twin("alice-2")
    env = gateway_env(triton.grpc_url, fresh_postgres_url, repository=trained.repository)
    items = [i.item_id for i in ITEMS]
    now = time.time()
    with GatewayProcess(env, tmp_path / "a.log") as a:
        with preftrack.Client(a.target) as client:
            client.upsert_items(ITEMS)
            client.send(
                [
                    preftrack.FeedbackEvent(
                        user_id=alice, item_id=e.item_id, event_type=e.event_type, timestamp_s=e.timestamp_s
                    )
                    for e in _events(alice, 40, start_s=now - 3000, seed=4)
                ]
            )
        with GatewayProcess(env, tmp_path / "b.log") as b, preftrack.Client(b.target) as other:
            as_of = time.time()
            assert not np.allclose(
                [s.score for s in other.score(alice, items, as_of_s=as_of).items],
                [s.score for s in other.score(twin, items, as_of_s=as_of).items],
            )
            AdminClient(a.target).forget_user(alice)
            deadline = time.monotonic() + 15
            while True:
                mine = [s.score for s in other.score(alice, items, as_of_s=as_of).items]
                if np.allclose(mine, [s.score for s in other.score(twin, items, as_of_s=as_of).items], atol=1e-6):
                    break
                assert time.monotonic() < deadline, "replica b still scores the forgotten user by their history"
                time.sleep(0.2)
            # An erasure through b, then at once one through a: a must not skip b's because it made a later one.
            carl, carl_twin = "carl-2", _embedding_twin("carl-2")
            with preftrack.Client(a.target) as to_a:
                to_a.send(
                    [
                        preftrack.FeedbackEvent(
                            user_id=carl, item_id=e.item_id, event_type=e.event_type, timestamp_s=e.timestamp_s
                        )
                        for e in _events(carl, 40, start_s=now - 3000, seed=9)
                    ]
                )
                as_of = time.time()
                assert not np.allclose(
                    [s.score for s in to_a.score(carl, items, as_of_s=as_of).items],
                    [s.score for s in to_a.score(carl_twin, items, as_of_s=as_of).items],
                )
                AdminClient(b.target).forget_user(carl)
                AdminClient(a.target).forget_user("someone-else")
                deadline = time.monotonic() + 15
                while not np.allclose(
                    [s.score for s in to_a.score(carl, items, as_of_s=as_of).items],
                    [s.score for s in to_a.score(carl_twin, items, as_of_s=as_of).items],
                    atol=1e-6,
                ):
                    assert time.monotonic() < deadline, "replica a skipped an erasure made through b"
                    time.sleep(0.2)


def test_the_continual_trainer_drops_a_forgotten_user(tmp_path: Path) -> None:
    from preftrack_trainer.continual import ContinualConfig, ContinualTrainer

    async def run() -> None:
        url = f"sqlite:///{tmp_path / 'e.db'}"
        store = await open_store(url)
        await store.upsert_items(list(CATALOG.values()))
        await store.append([*_events("alice", 30, start_s=1.7e9, seed=5), *_events("carol", 30, start_s=1.7e9, seed=6)])
        config = ContinualConfig(store_url=url, repository=tmp_path / "repo", spec=FeatureSpec(), labels=LabelSpec())
        trainer = await ContinualTrainer.open(config)
        await trainer.poll()
        assert trainer.state.rows("alice", ["i-1"], 1.7e9 + 2000) != FeatureState(FeatureSpec(), CATALOG).rows(
            "alice", ["i-1"], 1.7e9 + 2000
        )
        held = [e.user_id for _, e, _ in trainer._pending] + [e.user_id for _, e in trainer._unfolded]
        assert "alice" in held
        await store.forget_user("alice", ticket="t-1", at=time.time(), actor="test")
        await trainer.poll()
        restarted = await ContinualTrainer.open(config)  # what a restart holds: the store without alice
        await restarted.poll()
        t = 1.7e9 + 2000
        for user in ("alice", "carol"):
            assert np.allclose(trainer.state.rows(user, list(CATALOG), t), restarted.state.rows(user, list(CATALOG), t))
        assert trainer.state.rows("alice", ["i-1"], t) == trainer.state.rows("nobody", ["i-1"], t)
        await restarted.close()
        assert not any(e.user_id == "alice" for _, e, _ in trainer._pending)
        assert not any(e.user_id == "alice" for _, e in trainer._unfolded)
        await trainer.close()
        await store.close()

    asyncio.run(run())


def test_pseudonym_key_from_a_file(tmp_path: Path) -> None:
    key = tmp_path / "pseudonym.key"
    key.write_text("a-secret-from-a-file-0123\n")
    config = GatewayConfig.from_env({"PREFTRACK_PSEUDONYM_KEY_FILE": str(key)})
    assert config.pseudonym_key == "a-secret-from-a-file-0123"
    with pytest.raises(ConfigError, match="not both"):
        GatewayConfig.from_env({"PREFTRACK_PSEUDONYM_KEY_FILE": str(key), "PREFTRACK_PSEUDONYM_KEY": "x" * 20})
    with pytest.raises(ConfigError, match="PREFTRACK_PSEUDONYM_KEY_FILE"):
        GatewayConfig.from_env({"PREFTRACK_PSEUDONYM_KEY_FILE": str(tmp_path / "missing")})


def test_retention_deletes_old_events_in_chunks(tmp_path: Path) -> None:
    async def run() -> None:
        store = await open_store(f"sqlite:///{tmp_path / 'e.db'}")
        await store.append([*_events("old", 50, start_s=1.6e9, seed=7), *_events("new", 20, start_s=1.7e9, seed=8)])
        deleted = [await store.delete_events_before(1.65e9, limit=20) for _ in range(4)]
        assert deleted == [20, 20, 10, 0]
        assert await store.count_events() == 20
        await store.close()

    asyncio.run(run())
