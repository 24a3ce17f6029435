"""User preference profiles: against the synthetic shop's ground truth, point in time, order independence, and
hand-made sequences. ``bench/bench_profile.py`` measures the same on the full-size shop."""

from __future__ import annotations

import dataclasses
import math
import random
import time

import numpy as np
import pytest

from preftrack_gateway.profile import Profile, ProfileSpec, build_profile, category_history
from preftrack_gateway.schema import Event, Item
from preftrack_trainer.data import synthetic

_DAY_S = 86_400.0
T0 = 1_767_225_600.0


@dataclasses.dataclass(frozen=True)
class _Shop:
    shop: synthetic.SyntheticShop
    by_user: dict[str, list[Event]]
    end_s: float


@pytest.fixture(scope="module")
def small_shop() -> _Shop:
    """300 users, 30 days, half of them redrawn at the middle; the dirty records a tracker sends are dropped."""
    shop = synthetic.generate(synthetic.SyntheticConfig(n_users=300, seed=3))
    end_s = synthetic.START_S + shop.config.days * _DAY_S
    by_user: dict[str, list[Event]] = {u: [] for u in shop.truth.user_ids}
    for event in shop.events:
        if event.user_id in by_user and synthetic.START_S <= event.timestamp_s < end_s:
            by_user[event.user_id].append(event)
    return _Shop(shop, by_user, end_s)


def _view(n: int, item_id: str, t: float, *, user: str = "u", kind: str = "view", value: float = 1.0) -> Event:
    return Event(event_id=f"e{n}", user_id=user, item_id=item_id, event_type=kind, value=value, timestamp_s=t)


def _catalog() -> dict[str, Item]:
    return {
        "a1": Item(item_id="a1", categories=("shoes",), attributes=(("brand", "Acme"), ("colour", "red"))),
        "a2": Item(item_id="a2", categories=("shoes",), attributes=(("brand", "Acme"), ("colour", "blue"))),
        "b1": Item(item_id="b1", categories=("tents",), attributes=(("brand", "Camp"),)),
        "b2": Item(item_id="b2", categories=("tents",), attributes=(("brand", "Camp"),)),
    }


def _switching_user() -> list[Event]:
    """40 looks at shoes, then 15 at tents, one a minute, alternating between two items of each."""
    events = [_view(n, "a1" if n % 2 else "a2", T0 + 60 * n) for n in range(40)]
    events += [_view(n, "b1" if n % 2 else "b2", T0 + 60 * n) for n in range(40, 55)]
    return events


def test_top_categories_match_the_users_true_tastes(small_shop: _Shop) -> None:
    truth = small_shop.shop.truth
    prefs = truth.preferences_at(small_shop.end_s)
    n = len(truth.categories)
    strict, loose, drifted_profile, drifted_long = [], [], [], []
    for k, user in enumerate(truth.user_ids):
        events = small_shop.by_user[user]
        if len(events) < 20:
            continue
        profile = build_profile(events, small_shop.shop.items, as_of_s=small_shop.end_s, top=n)
        predicted = [a.key for a in profile.categories]
        true_top3 = {truth.categories[j] for j in np.argsort(-prefs[k], kind="stable")[:3]}
        liked = {c for c, p in zip(truth.categories, prefs[k], strict=True) if p > 1 / n}
        strict.append(len(true_top3 & set(predicted[:3])) / 3)
        top_k = min(3, len(liked))
        loose.append(len(liked & set(predicted[:top_k])) / top_k)
        if user in truth.drifted_users:
            by_long = [a.key for a in sorted(profile.categories, key=lambda a: (-a.long, a.key))]
            drifted_profile.append(strict[-1])
            drifted_long.append(len(true_top3 & set(by_long[:3])) / 3)
    # Measured: 0.785 strict, 0.877 above uniform; 0.750 against 0.645 for drifted users (seeds 1-5: >= 0.76,
    # >= 0.84, a gain >= 0.06).
    assert np.mean(strict) >= 0.74
    assert np.mean(loose) >= 0.82
    # The re-base at a detected shift is what follows the users whose tastes were redrawn.
    assert np.mean(drifted_profile) >= np.mean(drifted_long) + 0.04


def test_detector_flags_the_users_whose_tastes_were_redrawn(small_shop: _Shop) -> None:
    truth = small_shop.shop.truth
    drifted = set(truth.drifted_users)
    flagged, correct = set(), set()
    for user in truth.user_ids:
        profile = build_profile(small_shop.by_user[user], small_shop.shop.items, as_of_s=small_shop.end_s)
        if profile.shifts:
            flagged.add(user)
            assert profile.last_shift == profile.shifts[-1]
            if user in drifted and any(s.at_s >= truth.drift_time_s for s in profile.shifts):
                correct.add(user)
    precision, recall = len(correct) / max(1, len(flagged)), len(correct) / len(drifted)
    false_alarms = len(flagged - drifted) / (len(truth.user_ids) - len(drifted))
    # Measured: precision 0.880, recall 0.744, 13% of stable users flagged (seeds 1-5: >= 0.77, >= 0.61, <= 18%).
    assert precision >= 0.72
    assert recall >= 0.55
    assert false_alarms <= 0.22


def test_profile_only_sees_events_before_as_of(small_shop: _Shop) -> None:
    rng = random.Random(0)
    items = small_shop.shop.items
    drifted = sorted(small_shop.shop.truth.drifted_users)
    for user in rng.sample(drifted, 8):
        events = small_shop.by_user[user]
        for t in rng.sample(sorted({e.timestamp_s for e in events}), 4):
            earlier = [e for e in events if e.timestamp_s < t]
            assert build_profile(events, items, as_of_s=t) == build_profile(earlier, items, as_of_s=t)
        # The history's shares at each point are the profile's scores at that time.
        for t, shares in category_history(events, items, points=6):
            profile = build_profile(events, items, as_of_s=t, top=50)
            assert shares == pytest.approx({a.key: a.score for a in profile.categories if a.score > 0})


def test_profile_does_not_depend_on_event_order_or_resent_events(small_shop: _Shop) -> None:
    rng = random.Random(1)
    items = small_shop.shop.items
    for user in rng.sample(small_shop.shop.truth.user_ids, 10):
        events = small_shop.by_user[user]
        shuffled = events + rng.sample(events, len(events) // 5)  # re-sent events count once
        rng.shuffle(shuffled)
        expected = build_profile(events, items, as_of_s=small_shop.end_s)
        assert build_profile(shuffled, items, as_of_s=small_shop.end_s) == expected
        assert category_history(shuffled, items, points=5) == category_history(events, items, points=5)


def test_searches_are_counted_but_name_no_item() -> None:
    shop = synthetic.generate(synthetic.SyntheticConfig(n_users=40, search_fraction=0.3, dirty_fraction=0.0, seed=4))
    end_s = synthetic.START_S + shop.config.days * _DAY_S
    shifts = 0
    for user in shop.truth.user_ids:
        events = sorted((e for e in shop.events if e.user_id == user), key=lambda e: (e.timestamp_s, e.event_id))
        assert any(e.event_type == "search" for e in events)
        profile = build_profile(events, shop.items, as_of_s=end_s)
        assert profile.events_used == len(events)
        for shift in profile.shifts:  # the index counts searches too, and points at the detecting event
            assert events[shift.event_index].timestamp_s == shift.at_s
            assert events[shift.event_index].event_type != "search"
            shifts += 1
        assert {a.key for a in profile.attributes} <= {f"{n}={v}" for i in shop.items.values() for n, v in i.attributes}
    assert shifts > 0


def test_user_without_events_has_an_empty_profile() -> None:
    empty = Profile(as_of_s=T0, events_used=0, categories=(), attributes=(), items=(), shifts=(), last_shift=None)
    assert build_profile([], _catalog(), as_of_s=T0) == empty
    later = [_view(1, "a1", T0 + 1.0), _view(2, "a1", T0)]  # at or after as_of: not yet
    assert build_profile(later, _catalog(), as_of_s=T0) == empty
    # A search is counted but names no item: still no affinity.
    search = Event(event_id="s", user_id="u", item_id="", event_type="search", timestamp_s=T0 - 1, query_terms=("x",))
    assert build_profile([*later, search], _catalog(), as_of_s=T0) == dataclasses.replace(empty, events_used=1)
    assert category_history([search], _catalog(), points=3) == []


def test_switch_of_category_is_rising_falling_and_a_shift() -> None:
    profile = build_profile(_switching_user(), _catalog(), as_of_s=math.inf)
    assert profile.events_used == 55
    by_key = {a.key: a for a in profile.categories}
    assert by_key["tents"].direction == "rising" and by_key["tents"].trend > 0.1
    assert by_key["shoes"].direction == "falling" and by_key["shoes"].trend < -0.1
    # One shift, detected a few tent looks after the switch, which re-bases the score on the new tastes.
    assert len(profile.shifts) == 1 and profile.last_shift is not None
    shift = profile.last_shift
    assert 40 < shift.event_index < 50 and shift.before == ("shoes",) and shift.after == ("tents",)
    assert [a.key for a in profile.categories] == ["tents", "shoes"]
    assert by_key["tents"].score == pytest.approx(1.0)
    attributes = {a.key: a for a in profile.attributes}
    assert attributes["brand=Camp"].score == pytest.approx(1.0)
    assert attributes["brand=Acme"].direction == "falling"
    assert set(attributes) == {"brand=Acme", "brand=Camp", "colour=red", "colour=blue"}
    # Before the switch: shoes only, steady, and the user's first looks were no shift (warm-up).
    before = build_profile(_switching_user(), _catalog(), as_of_s=T0 + 60 * 40)
    assert [(a.key, a.score, a.direction) for a in before.categories] == [("shoes", 1.0, "steady")]
    assert before.shifts == ()


def test_engagement_weights_and_unknown_items() -> None:
    spec = ProfileSpec(short_horizon_events=1e9, long_horizon_events=1e9)  # no decay: shares are the weights
    events = [
        _view(1, "a1", T0, kind="purchase"),
        _view(2, "b1", T0 + 1, kind="view"),
        _view(3, "b2", T0 + 2, kind="rating", value=2.0),  # a low rating is no engagement
        _view(4, "zz", T0 + 3, kind="click"),  # not in the catalogue
    ]
    profile = build_profile(events, _catalog(), as_of_s=T0 + 10, spec=spec)
    total = spec.purchase_weight + spec.view_weight + spec.click_weight
    scores = {a.key: a.score for a in profile.categories}
    assert scores == pytest.approx(
        {"shoes": spec.purchase_weight / total, "tents": spec.view_weight / total, "unknown": spec.click_weight / total}
    )
    assert profile.events_used == 4
    assert [a.key for a in profile.items][:1] == ["a1"]
    liked = build_profile([_view(1, "b2", T0, kind="rating", value=5.0)], _catalog(), as_of_s=T0 + 1)
    assert liked.categories[0].key == "tents"


def test_events_of_several_users_and_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="one user"):
        build_profile([_view(1, "a1", T0), _view(2, "a1", T0, user="v")], _catalog(), as_of_s=T0 + 1)
    with pytest.raises(ValueError):
        ProfileSpec(short_horizon_events=200.0, long_horizon_events=100.0)
    with pytest.raises(ValueError):
        ProfileSpec(purchase_weight=-1.0)
    with pytest.raises(ValueError):
        category_history([], _catalog(), points=1)


def test_ten_thousand_events_take_well_under_a_second() -> None:
    rng = random.Random(2)
    catalog = {
        f"i{j}": Item(item_id=f"i{j}", categories=(f"c{j % 12}",), attributes=(("brand", f"b{j % 7}"),))
        for j in range(500)
    }
    kinds = ["view"] * 6 + ["click"] * 2 + ["add_to_cart", "purchase"]
    events = [_view(n, f"i{rng.randrange(500)}", T0 + 30 * n, kind=rng.choice(kinds)) for n in range(10_000)]
    start = time.perf_counter()
    profile = build_profile(events, catalog, as_of_s=math.inf)
    history = category_history(events, catalog, points=100)
    elapsed = time.perf_counter() - start
    assert profile.events_used == 10_000 and len(history) == 100
    assert elapsed < 2.0  # about 0.1 s here; generous for a busy CI machine
