"""Datasets and cleaning."""

from __future__ import annotations

import collections
import itertools

import pytest

from preftrack_trainer.data import movielens, synthetic
from preftrack_trainer.preprocess import clean

SMALL = synthetic.SyntheticConfig(n_users=100, n_items=80, days=10, seed=5)


def test_generator_is_deterministic() -> None:
    first, second = synthetic.generate(SMALL), synthetic.generate(SMALL)
    assert first.events == second.events
    assert (
        synthetic.generate(synthetic.SyntheticConfig(n_users=100, n_items=80, days=10, seed=6)).events != first.events
    )


def test_funnel_rates_are_realistic_and_preferences_drift() -> None:
    shop = synthetic.generate(SMALL)
    counts = collections.Counter(e.event_type for e in shop.events if e.user_id != synthetic.BOT_USER_ID)
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert 0.05 < counts["click"] / counts["view"] < 0.5
    assert 0.2 < counts["purchase"] / counts["add_to_cart"] < 0.8
    truth = shop.truth
    assert truth.drifted_users
    drifted = truth.user_ids.index(next(iter(sorted(truth.drifted_users))))
    assert (truth.preferences_before[drifted] != truth.preferences_after[drifted]).any()


def test_cleaning_reports_every_kind_of_dirt() -> None:
    shop = synthetic.generate(SMALL)
    events, report = clean(shop.events)
    assert report.events_in == len(shop.events)
    assert report.events_out == len(events)
    assert report.events_in - report.events_out == sum(report.dropped.values())
    for reason in (
        "duplicate event_id",
        "missing user_id or item_id",
        "timestamp before 1990",
        "timestamp in the future",
        "bot-like user",
    ):
        assert report.dropped.get(reason, 0) > 0, reason
    assert report.bot_users == (synthetic.BOT_USER_ID,)
    assert len({e.event_id for e in events}) == len(events)
    assert all(a.timestamp_s <= b.timestamp_s for a, b in itertools.pairwise(events))
    assert all(e.user_id and e.item_id for e in events)


def test_movielens_loads_from_the_recbole_wheel(tmp_path) -> None:
    data = movielens.load(tmp_path)
    assert len(data.events) == 100_000
    assert len({e.user_id for e in data.events}) == 943
    assert len(data.items) == 1682
    assert all(a.timestamp_s <= b.timestamp_s for a, b in zip(data.events, data.events[1:], strict=False))
    assert data.items["1"].categories == ("Animation", "Children's", "Comedy")
    # A damaged cache is detected by its checksum and repaired.
    inter = tmp_path / "ml-100k" / "ml-100k.inter"
    inter.write_text("garbage")
    movielens.fetch(tmp_path)
    assert len(inter.read_bytes()) > 1_000_000


def test_movielens_unavailable_says_what_to_do(tmp_path) -> None:
    with pytest.raises(movielens.DatasetUnavailableError, match=r"could not download recbole==0\.0\.0"):
        movielens.fetch(tmp_path, requirement="recbole==0.0.0")
