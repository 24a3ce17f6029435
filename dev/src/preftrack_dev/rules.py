"""The simple per-user rules a shop could write in one query: owns their definitions, the baselines of every report.

Every replay and benchmark report scores these rules from here, prequentially on its own stream:
:class:`RuleState` folds the time-ordered events, and each score is read *before* the event it scores is folded,
so a rule only ever uses the past. "Engaged" means a positive event by the dataset's own rule
(:meth:`FeatureSpec.is_positive`: an add-to-cart or a purchase in a shop, a rating of at least the threshold on
MovieLens); "bought" means a ``purchase`` event.

For user *u* and item *i*, with ``recency(order, i) = 1 / (1 + k)`` where *k* counts the distinct items of
``order`` met more recently than *i* (1 for the latest, 1/2 for the one before it, ...; 0 when *i* is absent):

- **most frequent item**: ``n(u, i) + recency(engaged(u), i) / 2``, with ``n(u, i)`` the user's positive events on
  the item: the count first, ties by recency (the half keeps the tie-break below one count).
- **last item**: ``recency(engaged(u), i)``: 1 for the user's last engaged item, 1/2 for the one before, ...
- **category affinity**: ``a(u, c) + pop(i) / (2 (pop(c) + 1))``, with *c* the item's first category,
  ``a(u, c)`` the user's positive events in *c*, ``pop(i)`` everyone's positive events on the item and ``pop(c)``
  those in *c*: the user's most engaged category first, then the most popular items within it.
- **buy again**: ``recency(bought(u), i)``: the item the user bought last first, 0 for an item never bought.

A pointwise report reads the rules' AUC (their scores are ranks, not probabilities: no log loss). A report over
choice sets ranks each occasion's candidates by the rule's score, scored before the occasion's first event, and
reads hit@1 and NDCG@10 of the chosen item (ties in a random order: :func:`metrics.choice_metrics`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from preftrack_gateway.features import FeatureSpec, LabelSpec
from preftrack_gateway.schema import Event, Item
from preftrack_trainer import metrics
from preftrack_trainer.data.choices import ChoiceSet


def _recency(order: list[str], item: str) -> float:
    """``1 / (1 + k)`` for the item ``k`` places from the end of ``order`` (most recent last); 0 when absent.

    >>> [_recency(["a", "b", "c"], i) for i in "cbaz"]
    [1.0, 0.5, 0.3333333333333333, 0.0]
    """
    try:
        return 1.0 / (len(order) - order.index(item))
    except ValueError:
        return 0.0


def _touch(order: list[str], item: str) -> None:
    """Move (or add) ``item`` to the end of ``order``: the most recent."""
    if item in order:
        order.remove(item)
    order.append(item)


class RuleState:
    """What the rules know after the events folded so far: per-user counts and orders, per-item popularity.

    >>> spec = FeatureSpec()
    >>> state = RuleState(spec, {"a": Item(item_id="a", categories=("tea",))})
    >>> state.update(Event(event_id="1", user_id="u", item_id="a", event_type="purchase", timestamp_s=1.0))
    >>> most_frequent(state, "u", "a"), last_item(state, "u", "a"), buy_again(state, "u", "b")
    (1.5, 1.0, 0.0)
    """

    def __init__(self, spec: FeatureSpec, items: Mapping[str, Item]) -> None:
        self.spec = spec
        self._category = {i: item.primary_category for i, item in items.items()}
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.engaged: dict[str, list[str]] = collections.defaultdict(list)
        self.bought: dict[str, list[str]] = collections.defaultdict(list)
        self.user_category: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.item_positives: collections.Counter[str] = collections.Counter()
        self.category_positives: collections.Counter[str] = collections.Counter()

    def category(self, item: str) -> str:
        """The item's first category ("unknown" for an item the catalogue lacks)."""
        return self._category.get(item, "unknown")

    def update(self, event: Event) -> None:
        """Fold one event (after it has been scored)."""
        user, item = event.user_id, event.item_id
        if not item:
            return
        if event.event_type == "purchase":
            _touch(self.bought[user], item)
        if not self.spec.is_positive(event.event_type, event.value):
            return
        self.counts[user][item] += 1
        _touch(self.engaged[user], item)
        category = self.category(item)
        self.user_category[user][category] += 1
        self.item_positives[item] += 1
        self.category_positives[category] += 1


def most_frequent(state: RuleState, user: str, item: str) -> float:
    """The user's positive events on the item, ties by recency (module docstring)."""
    counts = state.counts.get(user)
    return counts[item] + _recency(state.engaged[user], item) / 2 if counts else 0.0


def last_item(state: RuleState, user: str, item: str) -> float:
    """1 for the user's last engaged item, 1/2 for the one before, ..., 0 if never engaged."""
    return _recency(state.engaged.get(user, []), item)


def category_affinity(state: RuleState, user: str, item: str) -> float:
    """The user's engagement with the item's category, then the item's popularity within it."""
    category = state.category(item)
    share = state.item_positives[item] / (2.0 * (state.category_positives[category] + 1))
    engaged = state.user_category.get(user)
    return (engaged[category] if engaged else 0.0) + share


def buy_again(state: RuleState, user: str, item: str) -> float:
    """1 for the item the user bought last, 1/2 for the one before, ..., 0 if never bought."""
    return _recency(state.bought.get(user, []), item)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A rule, its row name in a report's table and its key in a ``name=value`` benchmark line."""

    key: str
    name: str
    score: Callable[[RuleState, str, str], float]


RULES: tuple[Rule, ...] = (
    Rule("most_frequent", "rule: most frequent item", most_frequent),
    Rule("last_item", "rule: last item", last_item),
    Rule("category", "rule: category affinity", category_affinity),
    Rule("buy_again", "rule: buy again", buy_again),
)


def prequential_scores(
    events: Iterable[Event], items: Mapping[str, Item], spec: FeatureSpec, labels: LabelSpec
) -> dict[str, np.ndarray]:
    """Each rule's score (by row name) of every example of the stream (an event whose type is in
    ``labels.example_types``, in stream order, as :func:`build_examples` makes them), read before it is folded."""
    state = RuleState(spec, items)
    scores: dict[str, list[float]] = {rule.name: [] for rule in RULES}
    example_types = set(labels.example_types)
    for event in events:
        if event.event_type in example_types:
            for rule in RULES:
                scores[rule.name].append(rule.score(state, event.user_id, event.item_id))
        state.update(event)
    return {name: np.array(values, dtype=np.float64) for name, values in scores.items()}


def prequential_choices(
    events: Iterable[Event], items: Mapping[str, Item], spec: FeatureSpec, choice_sets: Sequence[ChoiceSet]
) -> dict[str, np.ndarray]:
    """Each rule's (hit@1, NDCG@10) on every choice set whose first event is in the stream, in stream order: one
    row per choice set, the candidates scored just before that first event is folded."""
    first = {choice.event_ids[0]: choice for choice in choice_sets}
    state = RuleState(spec, items)
    found: dict[str, list[tuple[float, float]]] = {rule.name: [] for rule in RULES}
    for event in events:
        choice = first.get(event.event_id)
        if choice is not None:
            chosen = choice.candidates.index(choice.chosen)
            for rule in RULES:
                scores = [rule.score(state, choice.user_id, item) for item in choice.candidates]
                found[rule.name].append(metrics.choice_metrics(scores, chosen))
        state.update(event)
    return {name: np.array(values, dtype=np.float64).reshape(-1, 2) for name, values in found.items()}
