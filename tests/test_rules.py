"""The per-user rules (the baselines of every report) on a hand-built stream, with every score derived by hand."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from preftrack_dev import replay_offline, rules
from preftrack_gateway.features import FeatureSpec, LabelSpec
from preftrack_gateway.schema import Event, Item
from preftrack_trainer import metrics
from preftrack_trainer.data.choices import ChoiceSet

ITEMS = {
    "a": Item(item_id="a", categories=("tea",)),
    "b": Item(item_id="b", categories=("tea",)),
    "c": Item(item_id="c", categories=("coffee",)),
}
_STEPS = [  # (user, item, type); one event per second
    ("u", "a", "view"),  # example 1, positive
    ("u", "a", "purchase"),
    ("u", "b", "view"),  # example 2, positive
    ("u", "b", "purchase"),
    ("u", "a", "view"),  # example 3, positive
    ("u", "a", "purchase"),
    ("v", "c", "view"),  # example 4, positive (an add-to-cart is positive, not a purchase)
    ("v", "c", "add_to_cart"),
    ("u", "c", "view"),  # example 5, negative
    ("u", "b", "view"),  # example 6, positive
    ("u", "b", "purchase"),
    ("u", "a", "view"),  # example 7, negative
    ("u", "c", "view"),  # an occasion: u views c, a and b, then buys a
    ("u", "a", "view"),
    ("u", "b", "view"),
    ("u", "a", "purchase"),
]
STREAM = [
    Event(event_id=f"e{n}", user_id=user, item_id=item, event_type=kind, timestamp_s=1000.0 + n)
    for n, (user, item, kind) in enumerate(_STEPS, start=1)
]
OCCASION = ChoiceSet("u", 1013.0, ("c", "a", "b"), "a", ("e13", "e14", "e15"), ("e13", "e14", "e15", "e16"))


def test_the_doctests_of_the_rules_and_their_metrics_pass() -> None:
    for module in (rules, metrics, replay_offline):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_each_rule_scores_every_example_from_the_past_only() -> None:
    scores = rules.prequential_scores(STREAM[:12], ITEMS, FeatureSpec(), LabelSpec())
    # Before example 3, u bought a then b: a is one purchase, one place from the last (recency 1/2).
    # Before example 7, u bought a, b, a, b: a has two purchases and is second to last; u's tea count is 4, a's
    # share of tea's 4 positives is 2 / (2 * 5).
    expected = {
        "rule: most frequent item": [0, 0, 1 + 0.5 / 2, 0, 0, 1 + 0.5 / 2, 2 + 0.5 / 2],
        "rule: last item": [0, 0, 0.5, 0, 0, 0.5, 0.5],
        "rule: category affinity": [0, 1, 2 + 1 / 6, 0, 0 + 1 / 4, 3 + 1 / 8, 4 + 2 / 10],
        "rule: buy again": [0, 0, 0.5, 0, 0, 0.5, 0.5],
    }
    assert set(scores) == {rule.name for rule in rules.RULES}
    for name, values in expected.items():
        np.testing.assert_allclose(scores[name], values, err_msg=name)
    labels = np.array([1, 1, 1, 1, 0, 1, 0])
    # 5 positives x 2 negatives; each pair scores 1 when the positive is above, 1/2 when tied.
    # Most frequent: negative 0 is above two positives and tied with three (3.5); negative 2.25 above all (0).
    aucs = {name: metrics.auc(labels, values) for name, values in scores.items()}
    assert aucs == pytest.approx(
        {
            "rule: most frequent item": 3.5 / 10,
            "rule: last item": (3.5 + 1.0) / 10,
            "rule: category affinity": 3 / 10,
            "rule: buy again": (3.5 + 1.0) / 10,
        }
    )


def test_an_add_to_cart_engages_but_is_not_bought() -> None:
    state = rules.RuleState(FeatureSpec(), ITEMS)
    for event in STREAM[6:8]:
        state.update(event)
    assert rules.last_item(state, "v", "c") == 1.0
    assert rules.buy_again(state, "v", "c") == 0.0
    # A user with no past: only popularity, c's one positive of coffee's one: 1 / (2 * (1 + 1)).
    assert rules.most_frequent(state, "nobody", "c") == 0.0 and rules.category_affinity(state, "nobody", "c") == 0.25


def test_each_rule_ranks_a_choice_set_before_its_first_event() -> None:
    # Before the occasion u has bought a, b, a, b (a: 2, b: 2, b last); v put c in the cart once.
    # Most frequent ranks b (2.5), a (2.25), c: the chosen a is second. Last item and buy again: b (1), a (1/2).
    # Category affinity ties a and b (4 + 2/10): a is first or second with equal chance.
    found = rules.prequential_choices(STREAM, ITEMS, FeatureSpec(), [OCCASION])
    second = 1 / np.log2(3)
    expected = {
        "rule: most frequent item": (0.0, second),
        "rule: last item": (0.0, second),
        "rule: category affinity": (0.5, (1 + second) / 2),
        "rule: buy again": (0.0, second),
    }
    for name, (hit, ndcg) in expected.items():
        assert found[name].shape == (1, 2)
        assert found[name][0] == pytest.approx([hit, ndcg]), name
    # An occasion whose first event is not in the stream is not scored.
    assert all(len(v) == 0 for v in rules.prequential_choices(STREAM[:12], ITEMS, FeatureSpec(), [OCCASION]).values())


def test_choice_metrics_take_ties_in_a_random_order() -> None:
    assert metrics.choice_metrics([0.0] * 4, 2) == pytest.approx(
        (0.25, np.mean([1 / np.log2(p + 2) for p in range(4)]))
    )
    # Beyond the tenth place NDCG@10 counts nothing.
    assert metrics.choice_metrics(list(range(12, 0, -1)), 11) == (0.0, 0.0)
