"""Candidate retrieval (:mod:`preftrack_gateway.retrieval`): the rules never let an excluded item through, each
source does its job on a small hand-built history, the state stays within its bounds and survives pickling, and
on a synthetic shop the merged candidates clearly out-recall global popularity alone."""

from __future__ import annotations

import dataclasses
import math
import pickle
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preftrack_gateway.retrieval import (
    MAX_BOOSTS,
    MAX_FILTER_ATTRIBUTE_VALUES,
    MAX_FILTER_ATTRIBUTES,
    MAX_FILTER_CATEGORIES,
    MAX_FILTER_ITEM_IDS,
    SOURCES,
    Boost,
    FilterError,
    ItemFilter,
    RetrievalConfig,
    Retriever,
    UnknownItemError,
    apply_boosts,
    attribute_key,
    cap_per,
    primary_category_key,
)
from preftrack_gateway.schema import Event, Item

DAY_S = 86_400.0
T0 = 1.8e9
POSITIVE_TYPES = ("add_to_cart", "purchase")
# Queries refresh the popular lists whenever something changed: answers do not depend on wall time.
EAGER = RetrievalConfig(trending_refresh_s=0.0)


def event(user: str, item: str, event_type: str, t: float) -> Event:
    return Event(
        event_id=f"{user}-{item}-{event_type}-{t}", user_id=user, item_id=item, event_type=event_type, timestamp_s=t
    )


def fold_all(retriever: Retriever, events: list[Event]) -> None:
    for e in events:
        retriever.fold(e, e.event_type in POSITIVE_TYPES)


def reference_admits(f: ItemFilter, item_id: str, item: Item | None, bought_at_s: float | None, now_s: float) -> bool:
    """The filter's rules written out plainly, one by one, as the property tests' oracle."""
    if item_id in f.exclude_item_ids:
        return False
    window = f.exclude_bought_within_s
    if window is not None and bought_at_s is not None and now_s - bought_at_s <= window:
        return False
    field_rules = [
        f.in_stock_only,
        f.min_price is not None,
        f.max_price is not None,
        bool(f.categories_in),
        bool(f.categories_out),
        bool(f.attributes_in),
        bool(f.attributes_out),
    ]
    if not any(field_rules):
        return True
    if item is None:
        return False
    if f.in_stock_only and item.stock is not None and item.stock <= 0:
        return False
    if f.min_price is not None or f.max_price is not None:
        if item.price == 0.0:
            return False
        if f.min_price is not None and item.price < f.min_price:
            return False
        if f.max_price is not None and item.price > f.max_price:
            return False
    if f.categories_in and not any(c in f.categories_in for c in item.categories):
        return False
    if any(c in f.categories_out for c in item.categories):
        return False
    for name, values in f.attributes_in:
        if not any(n == name and v in values for n, v in item.attributes):
            return False
    return not any(n == name and v in values for name, values in f.attributes_out for n, v in item.attributes)


# --- property: no answer ever holds an excluded item or a duplicate ------------------------------------------------

POOL = tuple(f"i{k}" for k in range(14))  # i12, i13 are never in the catalogue
CATEGORIES = ("a", "b", "c", "d")
BRANDS = ("x", "y", "z")
USERS = ("u0", "u1", "u2", "u3")  # u3 never has events
SMALL = RetrievalConfig(
    max_neighbours=3,
    max_recent_items=4,
    max_purchase_times=2,
    co_window_items=3,
    popular_pool=5,
    trending_per_category=3,
    trending_refresh_s=0.0,
    min_rebuy_gap_s=10.0,
)


@st.composite
def items(draw, item_id: str) -> Item:
    categories = tuple(draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2, unique=True)))
    attributes = []
    if draw(st.booleans()):
        attributes.append(("brand", draw(st.sampled_from(BRANDS))))
    attributes += [("colour", c) for c in draw(st.lists(st.sampled_from(("red", "blue")), max_size=2, unique=True))]
    return Item(
        item_id=item_id,
        categories=categories,
        price=draw(st.sampled_from((0.0, 1.0, 5.0, 10.0, 50.0))),
        attributes=tuple(sorted(attributes)),
        stock=draw(st.sampled_from((None, 0, 3))),
    )


@st.composite
def catalogues(draw) -> dict[str, Item]:
    ids = draw(st.lists(st.sampled_from(POOL[:12]), max_size=12, unique=True))
    return {item_id: draw(items(item_id)) for item_id in ids}


@st.composite
def attribute_rules(draw, taken: dict[str, frozenset[str]] | None = None):
    values_of = {"brand": BRANDS, "colour": ("red", "blue")}
    rules = []
    for name in draw(st.lists(st.sampled_from(sorted(values_of)), max_size=2, unique=True)):
        allowed = [v for v in values_of[name] if v not in (taken or {}).get(name, ())]
        if allowed:
            rules.append((name, frozenset(draw(st.lists(st.sampled_from(allowed), min_size=1, unique=True)))))
    return tuple(rules)


@st.composite
def filters(draw) -> ItemFilter:
    prices = sorted(draw(st.lists(st.sampled_from((0.0, 1.0, 5.0, 20.0)), min_size=2, max_size=2)))
    categories_in = frozenset(draw(st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True)))
    out_choices = [c for c in CATEGORIES if c not in categories_in]
    attributes_in = draw(attribute_rules())
    f = ItemFilter(
        in_stock_only=draw(st.booleans()),
        min_price=prices[0] if draw(st.booleans()) else None,
        max_price=prices[1] if draw(st.booleans()) else None,
        categories_in=categories_in,
        categories_out=frozenset(draw(st.lists(st.sampled_from(out_choices), max_size=1, unique=True))),
        attributes_in=attributes_in,
        attributes_out=draw(attribute_rules(dict(attributes_in))),
        exclude_item_ids=frozenset(draw(st.lists(st.sampled_from(POOL), max_size=3, unique=True))),
        exclude_bought_within_s=draw(st.sampled_from((None, 0.0, 30.0, 300.0))),
    )
    f.validate()
    return f


@st.composite
def histories(draw) -> list[Event]:
    out = []
    for k in range(draw(st.integers(0, 60))):
        event_type = draw(st.sampled_from(("view", "click", "add_to_cart", "purchase", "purchase", "search")))
        item = "" if event_type == "search" else draw(st.sampled_from(POOL))
        user = draw(st.sampled_from(USERS[:3]))
        t = T0 + draw(st.integers(0, 1000))  # folded as drawn: out of time order too
        out.append(Event(event_id=str(k), user_id=user, item_id=item, event_type=event_type, timestamp_s=t))
    return out


def last_purchase_before(events: list[Event], user: str, item: str, now_s: float) -> float | None:
    times = [
        e.timestamp_s
        for e in events
        if e.user_id == user and e.item_id == item and e.event_type == "purchase" and e.timestamp_s < now_s
    ]
    return max(times, default=None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalogue=catalogues(),
    f=filters(),
    events=histories(),
    now_s=st.integers(-10, 1100).map(lambda dt: T0 + dt),
    n=st.integers(0, 20),
)
def test_answers_never_hold_an_excluded_item_or_a_duplicate(catalogue, f, events, now_s, n):
    retriever = Retriever(SMALL)
    for item in catalogue.values():
        retriever.upsert_item(item)
    fold_all(retriever, events)
    item_of = catalogue.get
    seen_items = {e.item_id for e in events if e.item_id}

    def excluded(ids: list[str], user: str | None) -> list[str]:
        def bought_at(item_id: str) -> float | None:
            return last_purchase_before(events, user, item_id, now_s) if user else None

        return [i for i in ids if not reference_admits(f, i, item_of(i), bought_at(i), now_s)]

    for user in USERS:
        found = retriever.candidates(user, now_s=now_s, n=n, item_filter=f, item_of=item_of)
        ids = [c.item_id for c in found]
        assert len(ids) == len(set(ids)) <= n
        assert {c.source for c in found} <= set(SOURCES)
        assert excluded(ids, user) == []

        again = retriever.buy_again(user, now_s=now_s, k=n, item_filter=f, item_of=item_of)
        ids = [item_id for item_id, _ in again]
        assert len(ids) == len(set(ids)) <= n
        assert excluded(ids, user) == []
        assert all(last_purchase_before(events, user, i, now_s) is not None for i in ids)
        assert all(math.isfinite(ratio) and ratio >= 0 for _, ratio in again)

    for item_id in POOL:
        if item_id not in catalogue and item_id not in seen_items:
            with pytest.raises(UnknownItemError):
                retriever.similar(item_id, k=n, now_s=now_s, item_filter=f, item_of=item_of)
            continue
        found = retriever.similar(item_id, k=n, now_s=now_s, item_filter=f, item_of=item_of, user_key="u0")
        ids = [c.item_id for c in found]
        assert len(ids) == len(set(ids)) <= n
        assert item_id not in ids
        assert excluded(ids, "u0") == []


@settings(max_examples=300, deadline=None)
@given(item=items("i0"), f=filters(), bought_at=st.sampled_from((None, T0 - 500, T0 - 30, T0)))
def test_admits_matches_the_rules_written_out(item, f, bought_at):
    assert f.admits(item, bought_at_s=bought_at, now_s=T0) == reference_admits(f, "i0", item, bought_at, T0)
    assert f.admits_id("i0", None, bought_at_s=bought_at, now_s=T0) == reference_admits(f, "i0", None, bought_at, T0)


@settings(max_examples=300, deadline=None)
@given(
    ranked=st.lists(st.sampled_from(POOL), max_size=30),
    keys=st.dictionaries(st.sampled_from(POOL), st.sampled_from(("x", "y", "z", None))),
    cap=st.integers(1, 4),
    k=st.integers(0, 15),
)
def test_cap_per_never_exceeds_the_cap(ranked, keys, cap, k):
    out = cap_per(ranked, keys.get, cap, k)
    assert len(out) <= k and len(out) == len(set(out))
    per_key = Counter(keys.get(i) for i in out if keys.get(i) is not None)
    assert all(count <= cap for count in per_key.values())
    positions = [ranked.index(i) for i in out]
    assert positions == sorted(positions)  # rank order kept
    # Nothing dropped without a reason: each skipped item was a duplicate or over its key's cap at that point.
    if len(out) < k:
        for item in dict.fromkeys(ranked):
            assert item in out or per_key[keys.get(item)] >= cap


# --- rules: validation names the field --------------------------------------------------------------------------

INVALID_FILTERS = [
    ({"min_price": -1.0}, "min_price"),
    ({"max_price": math.inf}, "max_price"),
    ({"max_price": math.nan}, "max_price"),
    ({"min_price": 10.0, "max_price": 5.0}, "max_price"),
    ({"categories_in": frozenset({"a"}), "categories_out": frozenset({"a", "b"})}, "categories_out"),
    ({"categories_in": frozenset({""})}, "categories_in"),
    ({"categories_in": frozenset(str(k) for k in range(MAX_FILTER_CATEGORIES + 1))}, "categories_in"),
    ({"categories_out": ["a"]}, "categories_out"),
    (
        {
            "attributes_in": (("brand", frozenset({"x", "y"})),),
            "attributes_out": (("brand", frozenset({"y"})),),
        },
        "attributes_out",
    ),
    ({"attributes_in": (("brand", frozenset()),)}, "attributes_in"),
    ({"attributes_in": (("brand", frozenset({"x"})), ("brand", frozenset({"y"})))}, "attributes_in"),
    ({"attributes_in": (("brand", "x"),)}, "attributes_in[brand]"),
    ({"attributes_out": ("brand",)}, "attributes_out"),
    ({"attributes_in": tuple((str(k), frozenset({"v"})) for k in range(MAX_FILTER_ATTRIBUTES + 1))}, "attributes_in"),
    (
        {"attributes_out": (("brand", frozenset(str(k) for k in range(MAX_FILTER_ATTRIBUTE_VALUES + 1))),)},
        "attributes_out[brand]",
    ),
    ({"exclude_item_ids": frozenset(str(k) for k in range(MAX_FILTER_ITEM_IDS + 1))}, "exclude_item_ids"),
    ({"exclude_bought_within_s": -1.0}, "exclude_bought_within_s"),
    ({"exclude_bought_within_s": math.inf}, "exclude_bought_within_s"),
    ({"in_stock_only": 1}, "in_stock_only"),
]


@pytest.mark.parametrize(("kwargs", "field"), INVALID_FILTERS)
def test_validate_names_the_bad_field(kwargs, field):
    with pytest.raises(FilterError) as caught:
        ItemFilter(**kwargs).validate()
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith(f"{field}: ")


def test_a_full_valid_filter_passes_and_the_retriever_refuses_an_invalid_one():
    ItemFilter(
        in_stock_only=True,
        min_price=1.0,
        max_price=1.0,
        categories_in=frozenset({"a"}),
        categories_out=frozenset({"b"}),
        attributes_in=(("brand", frozenset({"x"})),),
        attributes_out=(("brand", frozenset({"y"})), ("colour", frozenset({"red"}))),
        exclude_item_ids=frozenset({"i1"}),
        exclude_bought_within_s=0.0,
    ).validate()
    with pytest.raises(FilterError, match="max_price"):
        Retriever().candidates("u", now_s=T0, n=5, item_filter=ItemFilter(min_price=2.0, max_price=1.0), item_of={}.get)


def test_admits_each_rule():
    shoe = Item(item_id="s", categories=("shoes", "sale"), price=20.0, attributes=(("brand", "acme"),), stock=0)
    loose = dataclasses.replace(
        shoe, item_id="l", price=0.0, stock=None, attributes=(("colour", "red"), ("colour", "tan"))
    )

    def ok(f: ItemFilter, item: Item, bought_at_s: float | None = None) -> bool:
        return f.admits(item, bought_at_s=bought_at_s, now_s=T0)

    assert not ok(ItemFilter(in_stock_only=True), shoe) and ok(ItemFilter(in_stock_only=True), loose)
    assert ok(ItemFilter(min_price=20.0, max_price=20.0), shoe)
    assert not ok(ItemFilter(min_price=0.0), loose)  # unknown price, a bound set
    assert ok(ItemFilter(categories_in=frozenset({"sale"})), shoe)  # any position
    assert not ok(ItemFilter(categories_out=frozenset({"sale"})), shoe)
    assert not ok(ItemFilter(attributes_in=(("brand", frozenset({"acme"})),)), loose)  # no brand at all
    assert ok(ItemFilter(attributes_in=(("colour", frozenset({"tan"})),)), loose)  # one of several values
    assert not ok(ItemFilter(attributes_out=(("colour", frozenset({"tan"})),)), loose)
    assert ok(ItemFilter(attributes_out=(("brand", frozenset({"other"})),)), loose)
    assert not ok(ItemFilter(exclude_item_ids=frozenset({"s"})), shoe)
    week = ItemFilter(exclude_bought_within_s=7 * DAY_S)
    assert not ok(week, shoe, T0 - DAY_S) and ok(week, shoe, T0 - 8 * DAY_S) and ok(week, shoe, None)
    assert not ItemFilter(in_stock_only=True).admits_id("gone", None, bought_at_s=None, now_s=T0)
    assert ItemFilter(exclude_item_ids=frozenset({"s"})).admits_id("gone", None, bought_at_s=None, now_s=T0)


# --- boosts and the diversity cap ---------------------------------------------------------------------------------


def test_apply_boosts_multiplies_matching_scores():
    catalogue = {
        "a": Item(item_id="a", categories=("shoes",), attributes=(("brand", "acme"),)),
        "b": Item(item_id="b", categories=("hats", "shoes")),
        "c": Item(item_id="c", categories=("hats",), attributes=(("brand", "zed"),)),
    }
    boosts = [
        Boost(kind="category", values=frozenset({"shoes"}), factor=2.0),
        Boost(kind="attribute", key="brand", values=frozenset({"zed"}), factor=0.5),
        Boost(kind="items", values=frozenset({"a", "ghost"}), factor=3.0),
    ]
    out = apply_boosts(["a", "b", "c", "ghost"], np.array([0.1, 0.2, 0.4, 0.5]), boosts, catalogue.get)
    np.testing.assert_allclose(out, [0.6, 0.4, 0.2, 1.5])
    np.testing.assert_allclose(apply_boosts(["a"], [0.3], [], catalogue.get), [0.3])


@pytest.mark.parametrize(
    ("boost", "field"),
    [
        (Boost(kind="brand", values=frozenset({"x"}), factor=2.0), "boosts[0].kind"),
        (Boost(kind="attribute", values=frozenset({"x"}), factor=2.0), "boosts[0].key"),
        (Boost(kind="category", key="brand", values=frozenset({"x"}), factor=2.0), "boosts[0].key"),
        (Boost(kind="items", values=frozenset(), factor=2.0), "boosts[0].values"),
        (Boost(kind="items", values=frozenset({"a"}), factor=0.0), "boosts[0].factor"),
        (Boost(kind="items", values=frozenset({"a"}), factor=101.0), "boosts[0].factor"),
        (Boost(kind="items", values=frozenset({"a"}), factor=math.nan), "boosts[0].factor"),
    ],
)
def test_boost_validation_names_the_field(boost, field):
    with pytest.raises(FilterError) as caught:
        apply_boosts(["a"], [0.5], [boost], {}.get)
    assert caught.value.field == field


def test_too_many_boosts_and_misshapen_scores_are_refused():
    boost = Boost(kind="items", values=frozenset({"a"}), factor=2.0)
    with pytest.raises(FilterError, match="boosts"):
        apply_boosts(["a"], [0.5], [boost] * (MAX_BOOSTS + 1), {}.get)
    with pytest.raises(FilterError, match="scores"):
        apply_boosts(["a", "b"], [0.5], [boost], {}.get)


def test_cap_per_keys_from_the_catalogue():
    catalogue = {
        f"i{k}": Item(item_id=f"i{k}", categories=(f"c{k % 2}",), attributes=(("brand", f"b{k % 3}"),))
        for k in range(9)
    }
    ranked = [f"i{k}" for k in range(9)] + ["ghost"]
    assert cap_per(ranked, primary_category_key(catalogue.get), cap=2, k=10) == ["i0", "i1", "i2", "i3", "ghost"]
    assert cap_per(ranked, attribute_key("brand", catalogue.get), cap=1, k=2) == ["i0", "i1"]
    with pytest.raises(ValueError, match="cap"):
        cap_per(ranked, str, cap=0, k=3)


# --- sources on a small hand-built history --------------------------------------------------------------------------


def shop() -> dict[str, Item]:
    """Five categories of eight items (``toys-3``...), plus a phone and its accessories among electronics."""
    catalogue = {
        f"{c}-{k}": Item(item_id=f"{c}-{k}", categories=(c,), price=5.0 + k)
        for c in ("dairy", "bakery", "toys", "garden", "books")
        for k in range(8)
    }
    for name in ("phone", "charger", "case", "cable", "tv", "radio"):
        catalogue[name] = Item(item_id=name, categories=("electronics",), price=50.0)
    return catalogue


def built(catalogue: dict[str, Item], events: list[Event], config: RetrievalConfig = EAGER) -> Retriever:
    retriever = Retriever(config)
    for item in catalogue.values():
        retriever.upsert_item(item)
    fold_all(retriever, sorted(events, key=lambda e: e.timestamp_s))
    return retriever


def background() -> list[Event]:
    """Other shoppers: sessions within one category; books-0 and toys-0 are bestsellers; the phone goes with
    its charger and case; milk (dairy-0) is re-bought weekly."""
    events = []
    for u in range(30):
        user = f"bg{u}"
        t = T0 + u * 600.0
        for category in ("books", "toys", "garden"):
            for k in (0, 1 + u % 7, 1 + (u + 3) % 7):
                events.append(event(user, f"{category}-{k}", "view", t))
                t += 60.0
            events.append(event(user, f"{category}-0", "purchase", t))
            t += 3600.0
        if u % 2 == 0:
            for name in ("phone", "charger", "case"):
                events.append(event(user, name, "view", t))
                t += 60.0
            events.append(event(user, "charger", "purchase", t))
        for week in range(4):
            events.append(event(user, "dairy-0", "purchase", T0 + week * 7 * DAY_S + u * 60.0))
    return events


def test_a_rebuyer_gets_their_items_first_most_due_first():
    catalogue = shop()
    now_s = T0 + 30 * DAY_S
    mine = [event("me", "dairy-0", "purchase", now_s - d * DAY_S) for d in (27, 20, 13, 6)]  # weekly: due
    mine += [
        event("me", "bakery-1", "purchase", now_s - d * DAY_S) for d in (9.5, 6.5, 3.5, 0.5)
    ]  # every 3 days: not yet
    mine += [event("me", "garden-3", "purchase", now_s - 2 * DAY_S)]  # nobody re-buys it: no interval
    retriever = built(catalogue, background() + mine)

    again = retriever.buy_again("me", now_s=now_s, k=10, item_of=catalogue.get)
    assert [item for item, _ in again] == ["dairy-0", "bakery-1", "garden-3"]
    assert again[0][1] == pytest.approx(6 / 7, rel=0.05)
    assert again[1][1] == pytest.approx(0.5 / 3, rel=0.05)
    assert again[2][1] == 0.0

    found = retriever.candidates("me", now_s=now_s, n=20, item_of=catalogue.get)
    assert [(c.item_id, c.source) for c in found[:3]] == [
        ("dairy-0", "buy_again"),
        ("bakery-1", "buy_again"),
        ("garden-3", "buy_again"),
    ]
    # The rules apply: bought in the last day, or out of the price range.
    recent = ItemFilter(exclude_bought_within_s=DAY_S)
    assert "bakery-1" not in [
        i for i, _ in retriever.buy_again("me", now_s=now_s, k=10, item_filter=recent, item_of=catalogue.get)
    ]
    assert "dairy-0" not in [
        c.item_id
        for c in retriever.candidates(
            "me", now_s=now_s, n=20, item_filter=ItemFilter(min_price=6.0), item_of=catalogue.get
        )
    ]


def test_co_occurring_items_appear():
    catalogue = shop()
    retriever = built(catalogue, [*background(), event("me", "phone", "view", T0 + 10 * DAY_S)])
    now_s = T0 + 10 * DAY_S + 60
    found = retriever.candidates("me", now_s=now_s, n=10, item_of=catalogue.get)
    co = [c.item_id for c in found if c.source == "co_occurrence"]
    assert set(co[:2]) == {"charger", "case"}

    similar = retriever.similar("phone", k=4, now_s=now_s, item_of=catalogue.get)
    assert {c.item_id for c in similar[:2]} == {"charger", "case"}
    assert all(c.item_id != "phone" for c in similar)
    # Past its neighbours, the popular items of its primary category.
    everything = retriever.similar("phone", k=100, now_s=now_s, item_of=catalogue.get)
    sources = [c.source for c in everything]
    assert sources == sorted(sources) and sources[-1] == "trending"  # co_occurrence, then trending
    assert {c.item_id for c in everything if c.source == "trending"} == {"tv", "radio", "cable"}
    with pytest.raises(UnknownItemError) as caught:
        retriever.similar("nowhere", k=4, now_s=now_s, item_of=catalogue.get)
    assert isinstance(caught.value, KeyError) and "nowhere" in str(caught.value)


def test_a_new_user_gets_n_popular_items():
    catalogue = shop()
    retriever = built(catalogue, background())
    found = retriever.candidates("newcomer", now_s=T0 + 40 * DAY_S, n=30, item_of=catalogue.get)
    assert len(found) == 30 and {c.source for c in found} == {"popular"}
    assert {c.item_id for c in found[:4]} == {"dairy-0", "books-0", "toys-0", "garden-0"}  # the most bought
    # More than anything has been bought: the rest of the catalogue fills it.
    assert len(retriever.candidates("newcomer", now_s=T0, n=46, item_of=catalogue.get)) == 46
    # A category filter asks that category's trending list.
    toys = ItemFilter(categories_in=frozenset({"toys"}))
    found = retriever.candidates("newcomer", now_s=T0, n=5, item_filter=toys, item_of=catalogue.get)
    assert found[0].item_id == "toys-0" and {c.source for c in found} == {"trending"}


def test_the_categories_of_the_users_history_dominate():
    catalogue = shop()
    mine = [event("me", f"garden-{k}", "view", T0 + 20 * DAY_S + k * 60) for k in (2, 5, 6)]
    retriever = built(catalogue, background() + mine)
    found = retriever.candidates("me", now_s=T0 + 21 * DAY_S, n=20, item_of=catalogue.get)
    categories = Counter(catalogue[c.item_id].primary_category for c in found)
    assert categories["garden"] >= 8, categories
    assert categories.most_common(1)[0][0] == "garden"
    assert {catalogue[c.item_id].primary_category for c in found if c.source == "category"} == {"garden"}


def test_forget_removes_the_users_items():
    catalogue = shop()
    mine = [event("me", "bakery-2", "purchase", T0 + d * DAY_S) for d in (1, 4, 7)]
    retriever = built(catalogue, background() + mine)
    now_s = T0 + 9 * DAY_S
    assert retriever.buy_again("me", now_s=now_s, k=5, item_of=catalogue.get)[0][0] == "bakery-2"
    users = retriever.stats()["users"]
    assert retriever.forget("me") and not retriever.forget("me")
    assert retriever.stats()["users"] == users - 1
    assert retriever.buy_again("me", now_s=now_s, k=5, item_of=catalogue.get) == []
    assert retriever.recent_items("me", now_s=now_s) == []
    found = retriever.candidates("me", now_s=now_s, n=20, item_of=catalogue.get)
    assert {c.source for c in found} == {"popular"}


def test_events_after_now_do_not_reach_the_users_sources():
    catalogue = shop()
    before = [event("me", f"garden-{k}", "view", T0 + 20 * DAY_S + k) for k in (1, 2)]
    before.append(event("me", "garden-1", "purchase", T0 + 20 * DAY_S + 10))
    after = [event("me", f"books-{k}", "view", T0 + 25 * DAY_S + k) for k in range(1, 6)]
    after.append(event("me", "books-3", "purchase", T0 + 25 * DAY_S + 10))
    after.append(event("me", "garden-2", "view", T0 + 25 * DAY_S + 20))  # engaged again later
    retriever = built(catalogue, background() + before + after)

    then = T0 + 22 * DAY_S
    assert retriever.recent_items("me", now_s=then) == ["garden-1"]  # garden-2's latest view is later
    assert [i for i, _ in retriever.buy_again("me", now_s=then, k=5, item_of=catalogue.get)] == ["garden-1"]
    found = retriever.candidates("me", now_s=then, n=20, item_of=catalogue.get)
    assert [c.item_id for c in found if c.source == "buy_again"] == ["garden-1"]
    assert {catalogue[c.item_id].primary_category for c in found if c.source == "category"} == {"garden"}
    # An event exactly at now_s is not yet seen (as in the feature tables).
    assert retriever.buy_again("me", now_s=T0 + 20 * DAY_S + 10, k=5, item_of=catalogue.get) == []

    later = T0 + 26 * DAY_S
    assert retriever.recent_items("me", now_s=later)[:2] == ["garden-2", "books-3"]
    assert [i for i, _ in retriever.buy_again("me", now_s=later, k=5, item_of=catalogue.get)] == [
        "books-3",
        "garden-1",
    ]


def test_memory_bounds_hold_after_many_events():
    config = RetrievalConfig(
        max_users=20,
        max_items=60,
        max_recent_items=5,
        max_bought_items=4,
        max_purchase_times=3,
        max_neighbours=8,
        trending_refresh_s=0.0,
    )
    rng = np.random.default_rng(5)
    retriever = Retriever(config)
    types = ("view", "view", "click", "add_to_cart", "purchase")
    for k in range(6000):
        user, item = f"u{rng.integers(100)}", f"i{rng.integers(200)}"
        e = event(user, item, types[rng.integers(len(types))], T0 + k * 30.0)
        retriever.fold(e, e.event_type in POSITIVE_TYPES)
    stats = retriever.stats()
    assert stats["users"] <= 20 and stats["items"] <= 60
    assert stats["neighbour_entries"] <= 60 * 8
    now_s = T0 + 6000 * 30.0
    for u in range(100):
        assert len(retriever.recent_items(f"u{u}", now_s=now_s)) <= 5
        assert len(retriever.buy_again(f"u{u}", now_s=now_s, k=100, item_of={}.get)) <= 4
    for i in range(200):
        try:
            similar = retriever.similar(f"i{i}", k=100, now_s=now_s, item_of={}.get)
        except UnknownItemError:
            continue
        assert sum(c.source == "co_occurrence" for c in similar) <= 8


def test_pickling_round_trips_and_answers_the_same():
    catalogue = shop()
    events = sorted(background(), key=lambda e: e.timestamp_s)
    retriever = built(catalogue, events[: len(events) // 2])
    copy = pickle.loads(pickle.dumps(retriever))
    assert copy.stats() == retriever.stats()
    for r in (retriever, copy):
        fold_all(r, events[len(events) // 2 :])
    now_s = T0 + 40 * DAY_S
    f = ItemFilter(max_price=10.0)
    for user in ("bg1", "bg2", "bg7", "newcomer"):
        for r_filter in (ItemFilter(), f):
            assert copy.candidates(user, now_s=now_s, n=25, item_filter=r_filter, item_of=catalogue.get) == (
                retriever.candidates(user, now_s=now_s, n=25, item_filter=r_filter, item_of=catalogue.get)
            )
        assert copy.buy_again(user, now_s=now_s, k=5, item_of=catalogue.get) == retriever.buy_again(
            user, now_s=now_s, k=5, item_of=catalogue.get
        )
    assert copy.similar("phone", k=5, now_s=now_s, item_of=catalogue.get) == retriever.similar(
        "phone", k=5, now_s=now_s, item_of=catalogue.get
    )


def test_an_upsert_that_changes_categories_moves_the_item():
    catalogue = shop()
    retriever = built(catalogue, background())
    moved = dataclasses.replace(catalogue["toys-0"], categories=("garden",))
    retriever.upsert_item(moved)
    catalogue["toys-0"] = moved
    toys = ItemFilter(categories_in=frozenset({"toys"}))
    assert "toys-0" not in [
        c.item_id for c in retriever.candidates("x", now_s=T0, n=8, item_filter=toys, item_of=catalogue.get)
    ]
    garden = ItemFilter(categories_in=frozenset({"garden"}))
    found = retriever.candidates("x", now_s=T0, n=3, item_filter=garden, item_of=catalogue.get)
    assert "toys-0" in [c.item_id for c in found]
    retriever.remove_item("toys-0")
    assert "toys-0" not in [c.item_id for c in retriever.candidates("x", now_s=T0, n=46, item_of=catalogue.get)]


def test_popular_lists_refresh_lazily():
    catalogue = shop()
    config = RetrievalConfig(trending_refresh_s=3600.0, trending_refresh_folds=5)
    retriever = built(catalogue, background(), config)
    assert retriever.candidates("x", now_s=T0, n=1, item_of=catalogue.get)[0].item_id == "dairy-0"  # refreshes
    late = T0 + 60 * DAY_S
    hype = [event(f"fan{k}", "radio", "purchase", late + k) for k in range(5)]
    fold_all(retriever, hype[:4])
    assert retriever.candidates("x", now_s=late, n=1, item_of=catalogue.get)[0].item_id == "dairy-0"  # not yet
    fold_all(retriever, hype[4:])
    assert retriever.candidates("x", now_s=late, n=1, item_of=catalogue.get)[0].item_id == "radio"  # 5 folds


def test_decayed_sums_survive_a_rescale():
    config = RetrievalConfig(popularity_half_life_s=1.0, co_half_life_s=1.0, trending_refresh_s=0.0)
    retriever = Retriever(config)
    old = [event("a", "old", "purchase", T0 + k) for k in range(5)]
    new = [event("b", "pen", "view", T0 + 500.0), event("b", "ink", "purchase", T0 + 501.0)]
    fold_all(retriever, old + new)  # 500 half-lives later: every sum was rescaled on the way
    found = retriever.candidates("c", now_s=T0 + 600.0, n=3, item_of={}.get)
    assert [c.item_id for c in found][:1] == ["ink"]
    assert [c.item_id for c in retriever.similar("pen", k=1, now_s=T0 + 600.0, item_of={}.get)] == ["ink"]


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_neighbours"):
        RetrievalConfig(max_neighbours=0)
    with pytest.raises(ValueError, match="share"):
        RetrievalConfig(buy_again_share=0.5, co_occurrence_share=0.5, category_share=0.5)
    with pytest.raises(ValueError, match="popularity_half_life_s"):
        RetrievalConfig(popularity_half_life_s=0.0)
    with pytest.raises(ValueError, match="n must"):
        Retriever().candidates("u", now_s=T0, n=-1, item_of={}.get)


# --- recall on a synthetic shop, and the cost of a call ----------------------------------------------------------


@dataclasses.dataclass
class Synthetic:
    catalogue: dict[str, Item]
    events: list[Event]


def session(user: str, items: list[str], bought: str | None, t: float, *, repeat: bool) -> list[Event]:
    """A visit: views a minute apart, then maybe a purchase. Its first event carries what the visit ends up
    buying (``target``; ``repeat`` when the user bought it before) for the recall check."""
    events = [event(user, item, "view", t + 60 * k) for k, item in enumerate(items)]
    if bought is not None:
        events.append(event(user, bought, "purchase", t + 60 * len(items)))
        context = {"target": bought, "repeat": "1" if repeat else ""}
        events[0] = dataclasses.replace(events[0], context=context)
    return events


def synthetic_shop(seed: int = 7, n_users: int = 1000, n_categories: int = 20, per_category: int = 100) -> Synthetic:
    """Users with category tastes (two favourites), a style within each (a fifth of the category they browse
    mostly), a staple or two they re-buy on their own rhythm, over 60 days: about 50,000 events on 2,000 items."""
    rng = np.random.default_rng(seed)
    catalogue = {}
    for c in range(n_categories):
        for r in range(per_category):
            item_id = f"c{c}-{r}"
            catalogue[item_id] = Item(
                item_id=item_id,
                categories=(f"c{c}",),
                price=float(rng.choice([0.0, 5.0, 20.0, 80.0])),
                attributes=(("brand", f"b{rng.integers(40)}"),),
                stock=[None, 0, 5][rng.integers(3)],
            )
    zipf = 1.0 / (np.arange(per_category) + 1.0) ** 1.1
    zipf /= zipf.sum()
    n_styles = 5
    style_size = per_category // n_styles
    events = []
    for u in range(n_users):
        user = f"u{u}"
        favourites = rng.choice(n_categories, size=2, replace=False)
        style = {c: int(rng.integers(n_styles)) for c in range(n_categories)}

        def pick(category: int, rng=rng, style=style) -> str:
            if rng.random() < 0.7:
                r = style[category] * style_size + int(rng.integers(style_size))
            else:
                r = int(rng.choice(per_category, p=zipf))
            return f"c{category}-{r}"

        for _ in range(int(rng.integers(0, 3))):  # staples
            staple = pick(int(favourites[0]))
            interval_s = rng.uniform(7, 20) * DAY_S
            t = T0 + rng.uniform(0, interval_s)
            first = True
            while t < T0 + 60 * DAY_S:
                events += session(user, [staple], staple, t, repeat=not first)
                t += interval_s * rng.uniform(0.8, 1.2)
                first = False
        for _ in range(int(rng.poisson(10))):  # browsing visits
            draw = rng.random()
            category = int(favourites[0] if draw < 0.6 else favourites[1] if draw < 0.9 else rng.integers(n_categories))
            viewed = [pick(category) for _ in range(int(rng.integers(2, 6)))]
            bought = viewed[int(rng.integers(len(viewed)))] if rng.random() < 0.5 else None
            events += session(user, viewed, bought, T0 + rng.uniform(0, 60 * DAY_S), repeat=False)
    events.sort(key=lambda e: e.timestamp_s)
    return Synthetic(catalogue, events)


@dataclasses.dataclass
class Recall:
    hits: int = 0
    hits_popular: int = 0
    queries: int = 0

    def __str__(self) -> str:
        return f"{self.hits / self.queries:.3f} vs {self.hits_popular / self.queries:.3f} ({self.queries} visits)"


@dataclasses.dataclass
class Prequential:
    retriever: Retriever
    synthetic: Synthetic
    browse: Recall  # purchases at the end of a browsing visit, and first purchases of a staple
    staple: Recall  # re-buys of a staple
    hits_by_source: Counter


@pytest.fixture(scope="module")
def prequential() -> Prequential:
    """Fold the synthetic stream in time order. At the start of each visit that ends in a purchase (after the
    first 20 days), before its first event is folded, ask for 100 candidates for the visitor, and for a user
    with no history (global popularity alone); a hit is the visit's purchase among them."""
    synthetic = synthetic_shop()
    retriever = Retriever(RetrievalConfig(trending_refresh_s=0.0))
    for item in synthetic.catalogue.values():
        retriever.upsert_item(item)
    warm_up_s = T0 + 20 * DAY_S
    browse, staple = Recall(), Recall()
    by_source: Counter = Counter()
    for e in synthetic.events:
        target = e.context.get("target")
        if target is not None and e.timestamp_s > warm_up_s:
            recall = staple if e.context["repeat"] else browse
            found = retriever.candidates(e.user_id, now_s=e.timestamp_s, n=100, item_of=synthetic.catalogue.get)
            source = next((c.source for c in found if c.item_id == target), None)
            if source is not None:
                recall.hits += 1
                by_source[source] += 1
            popular = retriever.candidates("nobody", now_s=e.timestamp_s, n=100, item_of=synthetic.catalogue.get)
            recall.hits_popular += any(c.item_id == target for c in popular)
            recall.queries += 1
        retriever.fold(e, e.event_type in POSITIVE_TYPES)
    return Prequential(retriever, synthetic, browse, staple, by_source)


def test_candidates_recall_beats_global_popularity(prequential):
    p = prequential
    both = Recall(*(a + b for a, b in zip(dataclasses.astuple(p.browse), dataclasses.astuple(p.staple), strict=True)))
    print(
        f"\nrecall@100 of a visit's purchase, asked before the visit ({len(p.synthetic.events)} events), "
        f"candidates vs global popularity alone: all {both}; after browsing {p.browse}; "
        f"staple re-buys {p.staple}; hits by source {dict(p.hits_by_source)}"
    )
    for recall in (both, p.browse):
        assert recall.queries > 500
        assert recall.hits >= recall.hits_popular + 0.15 * recall.queries
        assert recall.hits >= 1.5 * recall.hits_popular


def test_candidates_cost(prequential):
    """Not a timed assertion: the cost per call is printed (the brief: well under 3 ms for n=300)."""
    retriever, catalogue = prequential.retriever, prequential.synthetic.catalogue
    stats = retriever.stats()
    assert stats["users"] == 1000 and stats["catalogue_items"] == 2000
    now_s = prequential.synthetic.events[-1].timestamp_s + 1.0
    users = [f"u{u}" for u in range(0, 1000, 2)]
    rules = ItemFilter(in_stock_only=True, max_price=50.0, exclude_bought_within_s=DAY_S)

    def cost_ms(call: Callable[[str], object]) -> tuple[float, float]:
        spent = []
        for user in users:
            start = time.perf_counter()
            call(user)
            spent.append((time.perf_counter() - start) * 1e3)
        return float(np.mean(spent)), float(np.percentile(spent, 99))

    plain = cost_ms(lambda u: retriever.candidates(u, now_s=now_s, n=300, item_of=catalogue.get))
    filtered = cost_ms(lambda u: retriever.candidates(u, now_s=now_s, n=300, item_filter=rules, item_of=catalogue.get))
    similar = cost_ms(lambda u: retriever.similar(f"c{int(u[1:]) % 20}-3", k=50, now_s=now_s, item_of=catalogue.get))
    again = cost_ms(lambda u: retriever.buy_again(u, now_s=now_s, k=20, item_of=catalogue.get))
    fold_us = []
    for e in prequential.synthetic.events[:2000]:
        start = time.perf_counter()
        retriever.fold(dataclasses.replace(e, timestamp_s=now_s), False)
        fold_us.append((time.perf_counter() - start) * 1e6)
    print(
        f"\nstate {stats}\ncost per call, mean / p99 ms: candidates(n=300) {plain[0]:.2f} / {plain[1]:.2f}, "
        f"with a filter {filtered[0]:.2f} / {filtered[1]:.2f}, similar(k=50) {similar[0]:.2f} / {similar[1]:.2f}, "
        f"buy_again(k=20) {again[0]:.3f} / {again[1]:.3f}; fold {np.mean(fold_us):.1f} µs"
    )
    found = retriever.candidates("u0", now_s=now_s, n=300, item_filter=rules, item_of=catalogue.get)
    assert len(found) == 300
