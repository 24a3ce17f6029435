"""Feature definitions: point-in-time correctness and online/offline identity."""

from __future__ import annotations

import numpy as np
import pytest

from preftrack_gateway.features import FEATURE_NAMES, NUM_FEATURES, FeatureSpec, FeatureState, PointInTimeError
from preftrack_gateway.schema import Event, Item, query_terms
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import LabelSpec, build_examples, clean


@pytest.fixture(scope="module")
def shop_events():
    shop = synthetic.generate(synthetic.SyntheticConfig(n_users=80, n_items=60, days=10, seed=3))
    events, _ = clean(shop.events)
    return shop, events


def test_feature_names_match_row_length() -> None:
    state = FeatureState()
    assert len(state.row("u", "i", 1.8e9)) == NUM_FEATURES == len(FEATURE_NAMES)


def test_row_never_counts_an_event_later_than_its_timestamp(shop_events) -> None:
    shop, events = shop_events
    examples, _ = build_examples(events, shop.items, spec=FeatureSpec(), labels=LabelSpec())
    rng = np.random.default_rng(0)
    for index in rng.choice(len(examples), 60, replace=False):
        t = float(examples.timestamp_s[index])
        user, item = examples.users[index], examples.items[index]
        # Rebuild the state from strictly earlier events only: the row must be identical.
        past = FeatureState(FeatureSpec(), shop.items)
        past.update_many(e for e in events if e.timestamp_s < t)
        expected = np.array(past.row(user, item, t), dtype=np.float32)
        np.testing.assert_allclose(examples.features[index], expected, rtol=1e-5, atol=1e-6)
        # A state that also saw the future gives the same row (the later events never leak in)...
    future = FeatureState(FeatureSpec(), shop.items, retain_s=30 * 86_400.0, max_kept=100_000)
    future.update_many(events)
    for index in rng.choice(len(examples), 20, replace=False):
        t = float(examples.timestamp_s[index])
        got = np.array(future.row(examples.users[index], examples.items[index], t), dtype=np.float32)
        np.testing.assert_allclose(got, examples.features[index], rtol=1e-5, atol=1e-6)
    # ... or, with the default retention, refuses a read older than what it kept.
    default = FeatureState(FeatureSpec(), shop.items)
    default.update_many(events)
    early = int(np.argmin(examples.timestamp_s))
    with pytest.raises(PointInTimeError):
        default.row(examples.users[early], examples.items[early], float(examples.timestamp_s[early]))


def test_online_updates_give_the_same_rows_as_offline_replay(shop_events) -> None:
    shop, events = shop_events
    offline, _ = build_examples(events, shop.items, spec=FeatureSpec(), labels=LabelSpec())
    online = FeatureState(FeatureSpec(), shop.items)
    rows = []
    for event in events:  # what the gateway does: read before folding each committed event in
        if event.event_type == "view":
            rows.append(online.row(event.user_id, event.item_id, event.timestamp_s))
        online.update(event)
    np.testing.assert_array_equal(np.array(rows, dtype=np.float32), offline.features)


def test_affinity_moves_with_a_purchase_in_the_category() -> None:
    items = {"a": Item(item_id="a", categories=("shoes",)), "b": Item(item_id="b", categories=("books",))}
    state = FeatureState(FeatureSpec(), items)
    t = 1.8e9
    state.update(Event(event_id="1", user_id="u", item_id="b", event_type="purchase", timestamp_s=t))
    before = state.row("u", "a", t + 10)[FEATURE_NAMES.index("user_category_affinity")]
    state.update(Event(event_id="2", user_id="u", item_id="a", event_type="purchase", timestamp_s=t + 5))
    after = state.row("u", "a", t + 10)[FEATURE_NAMES.index("user_category_affinity")]
    assert before == 0.0 and after > 0.3


def test_decayed_counts_fade_with_time() -> None:
    state = FeatureState(FeatureSpec(short_window_s=3600, long_window_s=86_400))
    t = 1.8e9
    for k in range(10):
        state.update(Event(event_id=str(k), user_id="u", item_id="i", event_type="view", timestamp_s=t))
    index = FEATURE_NAMES.index("user_view_short")
    assert state.row("u", "i", t)[index] == 0.0  # a read at t sees only events strictly before t
    now = state.row("u", "i", t + 1e-3)[index]
    later = state.row("u", "i", t + 3 * 3600)[index]
    assert now == pytest.approx(np.log1p(10))
    assert later == pytest.approx(np.log1p(10 * np.exp(-3)))


def test_schema_hash_changes_with_the_spec() -> None:
    assert FeatureSpec().schema_hash() == FeatureSpec().schema_hash()
    assert FeatureSpec().schema_hash() != FeatureSpec(rating_threshold=3.0).schema_hash()
    assert FeatureSpec.from_dict(FeatureSpec().to_dict()) == FeatureSpec()


def test_spec_rejects_unknown_positive_types() -> None:
    with pytest.raises(ValueError, match="unknown event types"):
        FeatureSpec(positive_types=("like",))


def test_search_links_are_order_free_point_in_time_and_forgotten_with_the_user() -> None:
    catalog = {
        "a": Item(item_id="a", categories=("shoes",), title="Red running shoe"),
        "b": Item(item_id="b", categories=("lamps",), title="Desk lamp", attributes=(("colour", "red"),)),
    }
    t = 1.8e9
    red_shoes = query_terms("red shoes")
    events = [
        Event(event_id="s", user_id="u", item_id="", event_type="search", timestamp_s=t, query_terms=red_shoes),
        Event(event_id="v", user_id="u", item_id="a", event_type="view", timestamp_s=t + 10),
        Event(event_id="p", user_id="u", item_id="a", event_type="purchase", timestamp_s=t + 60),
        Event(event_id="late", user_id="u", item_id="b", event_type="view", timestamp_s=t + 3600),  # out of window
        Event(event_id="o", user_id="o", item_id="b", event_type="view", timestamp_s=t + 20),
        # Hours later: the user's recent lists no longer reach back to the search, which forget must still undo.
        Event(event_id="next-day", user_id="u", item_id="b", event_type="view", timestamp_s=t + 20 * 3600),
    ]
    forward, backward = FeatureState(FeatureSpec(), catalog), FeatureState(FeatureSpec(), catalog)
    forward.update_many(events)
    # In any order within the hours a user's recent searches and engagements are kept (retain_s): the last event,
    # 20 hours on, comes last, as the live log brings it.
    backward.update_many([*reversed(events[:-1]), events[-1]])
    at = t + 21 * 3600
    np.testing.assert_allclose(
        forward.rows("x", ["a", "b"], at, red_shoes), backward.rows("x", ["a", "b"], at, red_shoes)
    )
    names = {name: FEATURE_NAMES.index(name) for name in FEATURE_NAMES if name.startswith("query_")}
    a, b = forward.rows("x", ["a", "b"], at, red_shoes)
    assert a[names["query_text_match"]] == 1.0 and b[names["query_text_match"]] == 0.5
    assert a[names["query_item_share"]] > 0 and b[names["query_item_share"]] == 0  # the later view is not linked
    # Point-in-time (a state whose history still reaches back there): before the view, no link.
    early = FeatureState(FeatureSpec(), catalog)
    early.update_many(events[:-1])
    assert early.rows("x", ["a"], t + 5, red_shoes)[0][names["query_item_log_links"]] == 0.0
    assert early.rows("x", ["a"], t + 11, red_shoes)[0][names["query_item_log_links"]] > 0.0
    assert early.recent_query("u", t + 10) == red_shoes and early.recent_query("u", t + 3600) == ()
    assert early.example_row(events[1]) == early.rows("u", ["a"], t + 10, red_shoes)[0]
    # Forgetting the searcher takes their links out: as if they had never searched.
    never = FeatureState(FeatureSpec(), catalog)
    never.update_many(e for e in events if e.user_id != "u")
    forward.forget("u", events)
    np.testing.assert_allclose(forward.rows("x", ["a", "b"], at, red_shoes), never.rows("x", ["a", "b"], at, red_shoes))


def test_forgetting_a_user_whose_late_engagement_missed_its_search_leaves_no_negative_link() -> None:
    # A search folded more than retain_s after the user's later events is not linked to the engagements just after
    # it (the user's recent engagements no longer reach back). Forgetting the user takes out every link their
    # history implies, those too: the sums read as 0, not below (log1p of -2 failed). The terms' totals lost the
    # links never made, so the shares are not quite those of a shop without the user; the read answers, and
    # item a, which only the user engaged with, reads as never linked itself.
    catalog = {
        "a": Item(item_id="a", categories=("shoes",), title="Red running shoe"),
        "b": Item(item_id="b", categories=("shoes",), title="Red shoes"),
    }
    t = 1.8e9
    red_shoes = query_terms("red shoes")
    others = []
    for k in range(3):  # another shopper's searches, linked: the terms' totals stay above 0
        at = t + 100.0 * k
        others.append(
            Event(
                event_id=f"os{k}", user_id="o", item_id="", event_type="search", timestamp_s=at, query_terms=red_shoes
            )
        )
        others.append(Event(event_id=f"ov{k}", user_id="o", item_id="b", event_type="view", timestamp_s=at + 5))
    search = Event(event_id="s", user_id="u", item_id="", event_type="search", timestamp_s=t, query_terms=red_shoes)
    later = Event(event_id="l", user_id="u", item_id="a", event_type="click", timestamp_s=t + 10 * 3600)
    views = [
        Event(event_id=f"v{k}", user_id="u", item_id="a", event_type="view", timestamp_s=t + 10 + k) for k in range(2)
    ]
    state = FeatureState(FeatureSpec(), catalog, retain_s=1800.0)
    state.update_many([*others, later, *views, search])  # the search comes after its views are out of reach
    state.forget("u", [search, later, *views])
    never = FeatureState(FeatureSpec(), catalog, retain_s=1800.0)
    never.update_many(others)
    at = t + 11 * 3600
    got, expected = state.rows("x", ["a", "b"], at, red_shoes), never.rows("x", ["a", "b"], at, red_shoes)
    query = [k for k, name in enumerate(FEATURE_NAMES) if name.startswith("query_")]
    assert all(np.isfinite(row).all() and min(row[k] for k in query) >= 0.0 for row in got)
    item_level = query[:4]  # present, text match, the item's links, its share (the category's lost the links too)
    np.testing.assert_allclose([got[0][k] for k in item_level], [expected[0][k] for k in item_level], atol=1e-9)
