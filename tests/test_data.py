"""Datasets and cleaning."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re

import numpy as np
import pytest

from preftrack_gateway.schema import query_terms, text_terms, validate_event
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


# --- item text and searches ---------------------------------------------------------------------------------

SEARCHING = dataclasses.replace(SMALL, search_fraction=0.5)


def _search_id(event_id: str) -> str:
    """The id of the search a (possibly dirty) copy was made from."""
    return re.sub(r"-[mtf]$", "", event_id)


def test_items_have_a_title_a_brand_and_a_colour() -> None:
    shop = synthetic.generate(SMALL)
    nouns: dict[str, set[str]] = collections.defaultdict(set)
    for item in shop.items.values():
        assert [name for name, _ in item.attributes] == ["brand", "colour"]
        brand, colour = (value for _, value in item.attributes)
        assert brand in synthetic.BRANDS and colour in synthetic.COLOURS
        title_brand, title_colour, noun, _model = item.title.split()
        assert (title_brand, title_colour) == (brand, colour)
        nouns[item.primary_category].add(noun)
    # One noun per category, a different one for each; a model word names exactly one item.
    assert all(len(n) == 1 for n in nouns.values())
    assert len(set().union(*nouns.values())) == SMALL.n_categories
    for item in shop.items.values():
        model_term = text_terms([item.title.split()[-1]])
        assert sum(model_term <= other.terms() for other in shop.items.values()) == 1, item.title
    assert shop.truth.brands == synthetic.BRANDS
    # The text comes from a stream of its own: searching does not change the catalogue.
    assert synthetic.generate(SEARCHING).items == shop.items


def test_nouns_are_distinct_for_more_categories_than_nouns() -> None:
    shop = synthetic.generate(synthetic.SyntheticConfig(n_users=5, n_items=60, n_categories=45, days=1))
    nouns = {item.primary_category: item.title.split()[2] for item in shop.items.values()}
    assert len(set(nouns.values())) == 45
    assert nouns["cat-20"] == "shoe2"


def test_search_fraction_is_validated() -> None:
    with pytest.raises(ValueError, match="search_fraction"):
        synthetic.SyntheticConfig(search_fraction=1.5)


def test_searches_carry_hashed_terms_of_the_recorded_text() -> None:
    shop = synthetic.generate(SEARCHING)
    truth = shop.truth
    searches = [e for e in shop.events if e.event_type == "search"]
    assert len(searches) > 100
    assert truth.queries.keys() == truth.search_targets.keys() == {_search_id(e.event_id) for e in searches}
    for event in searches:
        text = truth.queries[_search_id(event.event_id)]
        assert event.item_id == "" and event.value == 1.0
        assert event.query_terms and event.query_terms == query_terms(text)
        if event.event_id in truth.queries:
            validate_event(event, now_s=synthetic.START_S + SEARCHING.days * 86_400)
    # Queries name the target item: its text holds every term of the query.
    for event_id, text in truth.queries.items():
        assert set(query_terms(text)) <= shop.items[truth.search_targets[event_id]].terms(), text
    # Some name only the model word, some use plurals, which the normalisation folds.
    texts = list(truth.queries.values())
    assert any(len(t.split()) == 1 for t in texts)
    assert any(any(w.endswith("s") and w[:-1] in synthetic.NOUNS for w in t.split()) for t in texts)


def test_searchers_view_the_target_and_click_it_more_often() -> None:
    shop = synthetic.generate(SEARCHING)
    truth = shop.truth
    by_user: dict[str, list[tuple[float, str, str]]] = collections.defaultdict(list)
    for e in shop.events:
        if e.event_type != "search" and e.timestamp_s > synthetic.START_S:
            by_user[e.user_id].append((e.timestamp_s, e.event_type, e.item_id))
    searches = [e for e in shop.events if e.event_type == "search" and e.event_id in truth.queries and e.user_id]
    found = clicked = glanced = 0
    for search in searches:
        target = truth.search_targets[search.event_id]
        after = [(kind, item) for t, kind, item in by_user[search.user_id] if 0 <= t - search.timestamp_s <= 600]
        found += ("view", target) in after
        clicked += ("click", target) in after
        terms = set(search.query_terms)
        category = shop.items[target].primary_category
        glanced += any(
            kind == "view" and shop.items[i].primary_category == category and not terms <= shop.items[i].terms()
            for kind, i in after
        )
    assert found / len(searches) > 0.95
    assert glanced / len(searches) > 0.2
    # Searchers know what they want: they click the target more often than browsers click what they view.
    base = synthetic.generate(SMALL).events
    counts = collections.Counter(e.event_type for e in base if e.user_id != synthetic.BOT_USER_ID)
    assert clicked / len(searches) > counts["click"] / counts["view"] + 0.1


def test_searching_shop_is_deterministic() -> None:
    first, second = synthetic.generate(SEARCHING), synthetic.generate(SEARCHING)
    assert first.events == second.events
    assert first.truth.queries == second.truth.queries
    assert first.truth.search_targets == second.truth.search_targets


def test_top_categories_follow_the_ground_truth() -> None:
    truth = synthetic.generate(SMALL).truth
    for t in (synthetic.START_S, truth.drift_time_s + 1.0):
        prefs = truth.preferences_at(t)
        for user_id, row in zip(truth.user_ids, prefs, strict=True):
            top = truth.top_categories(user_id, t)
            assert len(top) == 3 and top[0] == truth.favourite_category(user_id, t)
            assert top[0] == truth.categories[int(np.argmax(row))]
            liked = [row[truth.categories.index(c)] for c in top]
            assert liked == sorted(liked, reverse=True)
            assert liked[-1] >= np.sort(row)[-3]
    assert len(truth.top_categories(truth.user_ids[0], synthetic.START_S, k=5)) == 5
