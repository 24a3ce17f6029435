"""The per-event layer inside the real gateway: it learns a user's taste from labelled feedback, beyond what the
version and the real-time features already give, and it is rebuilt from the event log after a restart."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import preftrack
from preftrack_dev.process import GatewayProcess

from .conftest import gateway_env

pytestmark = pytest.mark.e2e

ITEMS = [preftrack.Item(item_id=f"o-{n}", categories=(f"cat-{n % 2}",), price=20.0) for n in range(20)]
LIKED = [i.item_id for i in ITEMS if i.categories == ("cat-0",)]
OTHER = [i.item_id for i in ITEMS if i.categories == ("cat-1",)]


def _history(t0: float) -> list[preftrack.FeedbackEvent]:
    """Many users: each views items of both categories and buys only those of ``cat-0``."""
    events = []
    for u in range(30):
        t = t0 + u * 30
        for n, item in enumerate(ITEMS):
            events.append(
                preftrack.FeedbackEvent(user_id=f"user-{u}", item_id=item.item_id, event_type="view", timestamp_s=t + n)
            )
            if item.item_id in LIKED:
                events.append(
                    preftrack.FeedbackEvent(
                        user_id=f"user-{u}", item_id=item.item_id, event_type="purchase", timestamp_s=t + n + 0.5
                    )
                )
    # A later event closes every view's attribution window (one hour): the unbought views become negatives.
    events.append(preftrack.FeedbackEvent(user_id="closer", item_id="o-0", event_type="view", timestamp_s=t0 + 7200))
    return events


def _gap(target: str, user: str) -> float:
    """Mean score of the liked category minus the other, for a user who has done nothing yet."""
    with preftrack.Client(target) as client:
        scores = client.score(user, LIKED + OTHER).as_dict()
    return float(np.mean([scores[i] for i in LIKED]) - np.mean([scores[i] for i in OTHER]))


def _start(triton, tmp_path: Path, name: str, online: bool, db: Path, **extra: str) -> GatewayProcess:
    env = gateway_env(triton.grpc_url, f"sqlite:///{db}", PREFTRACK_ONLINE_LEARNING=str(online).lower(), **extra)
    return GatewayProcess(env, tmp_path / f"{name}.log").start()


def _wait_for_learning(target: str, user: str, before: float, timeout_s: float = 30.0) -> float:
    deadline = time.monotonic() + timeout_s
    gap = before
    while time.monotonic() < deadline:
        gap = _gap(target, user)
        if gap > before + 0.05:
            return gap
        time.sleep(0.3)
    return gap


def test_the_per_event_layer_learns_what_the_version_does_not_and_survives_a_restart(triton, tmp_path) -> None:
    t0 = time.time() - 4 * 3600
    snapshots = {"PREFTRACK_SNAPSHOT_DIR": str(tmp_path / "snapshots")}
    learning = _start(triton, tmp_path, "learning", True, tmp_path / "learning.db", **snapshots)
    frozen = _start(triton, tmp_path, "frozen", False, tmp_path / "frozen.db")
    try:
        for gateway in (learning, frozen):
            with preftrack.Client(gateway.target) as client:
                client.upsert_items(ITEMS)
        before = _gap(learning.target, "newcomer")
        for gateway in (learning, frozen):
            with preftrack.Client(gateway.target) as client:
                assert client.send(_history(t0)).accepted == len(_history(t0))
        learned = _wait_for_learning(learning.target, "newcomer", before)
        without = _gap(frozen.target, "newcomer")
        # Same version, same features (the items' popularity moved in both): the difference is the per-event layer.
        assert learned > without + 0.05, (before, learned, without)
    finally:
        assert frozen.stop() == 0, frozen.log_tail()
        assert learning.stop() == 0, learning.log_tail()
    # From the event log, and from the snapshot the first gateway wrote when it stopped: the same layer.
    for name, env in (("rebuilt", {}), ("from-snapshot", snapshots)):
        restarted = _start(triton, tmp_path, name, True, tmp_path / "learning.db", **env)
        try:
            rebuilt = _wait_for_learning(restarted.target, "newcomer", before)
            assert rebuilt == pytest.approx(learned, abs=0.02), (name, learned, rebuilt)
        finally:
            assert restarted.stop() == 0, restarted.log_tail()
        assert ("from a snapshot at seq" in restarted.log_tail(200)) == bool(env), restarted.log_tail()
    # Other settings of the per-event layer: a snapshot learned with the old ones is not used; the log is.
    changed = _start(
        triton, tmp_path, "changed", True, tmp_path / "learning.db", PREFTRACK_ONLINE_ALPHA="0.25", **snapshots
    )
    try:
        assert _wait_for_learning(changed.target, "newcomer", before) > before + 0.05
    finally:
        assert changed.stop() == 0, changed.log_tail()
    log = changed.log_tail(200)
    assert "from a snapshot at seq" not in log and "taken with other settings" in log, log
