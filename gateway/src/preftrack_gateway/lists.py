"""The lists Recommend, SimilarItems and BuyAgain answer: which items may be in them, and in which order.

Owns no state. It reads the catalogue and the retriever through :class:`~preftrack_gateway.features.FeatureState`
(their one owner), applies a request's business rules (:class:`ListRules`: a filter, boosts, a diversity cap) to
candidates the caller sent or the retriever found, and orders the scored pool. The scores come from the caller
(the gateway's core, through Triton): this module never scores.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence

import numpy as np

from preftrack_gateway.errors import InvalidRequestError, NotFoundError
from preftrack_gateway.features import FeatureState
from preftrack_gateway.retrieval import (
    MAX_BOOSTS,
    NO_FILTER,
    Boost,
    Candidate,
    FilterError,
    ItemFilter,
    Retriever,
    UnknownItemError,
    apply_boosts,
    attribute_key,
    cap_per,
    primary_category_key,
)
from preftrack_gateway.schema import Item

#: Most items one SimilarItems or BuyAgain call may ask for.
MAX_K = 1000
#: Longest exclusion window accepted, in days (ten years).
MAX_EXCLUDE_DAYS = 3650.0
#: Largest share of lists the exploration policy may explore.
MAX_EXPLORATION = 0.5


@dataclasses.dataclass(frozen=True)
class ListRules:
    """A request's business rules (see the proto's ItemFilter, Boost and Diversity)."""

    item_filter: ItemFilter = NO_FILTER
    boosts: tuple[Boost, ...] = ()
    diversity_attribute: str = ""
    max_per_value: int = 0

    def validate(self) -> None:
        """Raise :class:`InvalidRequestError` naming the request's field (``filter.max_price``, ``boosts[2].factor``,
        ``diversity.max_per_value``) when a rule is malformed or contradicts another."""
        try:
            self.item_filter.validate()
        except FilterError as exc:
            raise InvalidRequestError(f"filter.{exc}", field=f"filter.{exc.field}") from None
        if len(self.boosts) > MAX_BOOSTS:
            raise InvalidRequestError(f"boosts has {len(self.boosts)} boosts; at most {MAX_BOOSTS}", field="boosts")
        for index, boost in enumerate(self.boosts):
            try:
                boost.validate(f"boosts[{index}]")
            except FilterError as exc:
                raise InvalidRequestError(str(exc), field=exc.field) from None
        if self.max_per_value < 0:
            raise InvalidRequestError("diversity.max_per_value must be >= 0 (0: no cap)", field="diversity")
        if len(self.diversity_attribute) > 256:
            raise InvalidRequestError("diversity.attribute must be at most 256 characters", field="diversity")


NO_RULES = ListRules()


def days_to_s(field: str, days: float) -> float | None:
    """An exclusion window in seconds (None for 0: no window); INVALID_ARGUMENT naming ``field`` when it is
    negative, not finite or longer than :data:`MAX_EXCLUDE_DAYS`."""
    if not math.isfinite(days) or not 0 <= days <= MAX_EXCLUDE_DAYS:
        raise InvalidRequestError(f"{field} must lie in [0, {MAX_EXCLUDE_DAYS:.0f}] days", field=field)
    return days * 86_400.0 if days > 0 else None


def check_k(k: int, most: int = MAX_K) -> None:
    if not 1 <= k <= most:
        raise InvalidRequestError(f"k must lie in [1, {most}]", field="k")


def _retriever(features: FeatureState) -> Retriever:
    if features.retrieval is None:  # the gateway always makes one; a FeatureState without is the trainer's
        raise RuntimeError("this FeatureState keeps no retrieval state")
    return features.retrieval


def _item_of(features: FeatureState) -> Callable[[str], Item | None]:
    return features.catalog.get


def pool(
    features: FeatureState,
    user_key: str,
    candidates: Sequence[str],
    exclude: Sequence[str],
    rules: ListRules,
    *,
    at_s: float,
    retrieve: int,
) -> tuple[list[str], list[str]]:
    """The items a Recommend call ranks, and where each came from ("" for candidates the caller sent).

    With ``candidates``: those that pass the rules, in their order, without repeats. Without: up to ``retrieve``
    items found by the retriever; once the shop has a catalogue, only items in it (an id seen in events alone may
    be an item the shop removed)."""
    item_filter = rules.item_filter
    if exclude:
        item_filter = dataclasses.replace(item_filter, exclude_item_ids=item_filter.exclude_item_ids | set(exclude))
    retriever = _retriever(features)
    if candidates:
        admits = retriever.admission(user_key, item_filter, now_s=at_s, item_of=_item_of(features))
        ids = [c for c in dict.fromkeys(candidates) if admits(c)]
        return ids, [""] * len(ids)
    found: list[Candidate] = retriever.candidates(
        user_key, now_s=at_s, n=retrieve, item_filter=item_filter, item_of=_item_of(features)
    )
    if features.catalog:
        found = [c for c in found if c.item_id in features.catalog]
    return [c.item_id for c in found], [c.source for c in found]


def arrange(
    features: FeatureState,
    item_ids: Sequence[str],
    scores: np.ndarray,
    tiers: np.ndarray | None,
    rules: ListRules,
    k: int,
) -> tuple[list[int], np.ndarray]:
    """The positions of the top ``k`` items, best first, and every item's score after the boosts.

    Boosted scores rank within each query tier (``tiers``: higher first; None without a query); the diversity cap
    then keeps at most ``max_per_value`` items per attribute value, lower-ranked items making room."""
    boosted = apply_boosts(item_ids, scores, rules.boosts, _item_of(features)) if rules.boosts else scores
    order = np.lexsort((-boosted, -tiers)) if tiers is not None else np.argsort(-boosted, kind="stable")
    if rules.max_per_value <= 0:
        return [int(i) for i in order[:k]], boosted
    key_of = (
        attribute_key(rules.diversity_attribute, _item_of(features))
        if rules.diversity_attribute
        else primary_category_key(_item_of(features))
    )
    position = {item_ids[int(i)]: int(i) for i in order}
    kept = cap_per((item_ids[int(i)] for i in order), key_of, rules.max_per_value, k)
    return [position[item] for item in kept], boosted


def check_exploration(share: float) -> None:
    if not math.isfinite(share) or not 0.0 <= share <= MAX_EXPLORATION:
        raise InvalidRequestError(f"exploration must lie in [0, {MAX_EXPLORATION}]", field="exploration")


def explore(top: list[int], share: float, rng: random.Random) -> tuple[list[int], tuple[float, ...]]:
    """The exploration policy, "top swap": with probability ``share`` the first item of the ranked list trades
    places with one of the others, drawn uniformly. The list's items (so every business rule and the diversity
    cap) are unchanged; only their order is. Returns the order shown and, per position, the probability that the
    policy put that item there: off-policy evaluation of another version divides by it.

    >>> explore([7, 8, 9], 0.0, random.Random(1))
    ([7, 8, 9], (1.0, 1.0, 1.0))
    >>> order, p = explore([7, 8, 9], 0.5, random.Random(3)); sorted(order), len(p)
    ([7, 8, 9], 3)
    """
    if share <= 0.0 or len(top) < 2:
        return top, (1.0,) * len(top)
    others = len(top) - 1
    swap = share / others  # the chance that one given other item trades places with the first
    shown = list(top)
    if rng.random() < share:
        j = rng.randrange(1, len(top))
        shown[0], shown[j] = shown[j], shown[0]
        return shown, tuple(swap if position in (0, j) else 1.0 - swap for position in range(len(top)))
    return shown, (1.0 - share, *(1.0 - swap for _ in range(others)))


def similar(
    features: FeatureState, item_id: str, k: int, rules: ListRules, *, at_s: float, user_key: str | None
) -> list[tuple[str, float, str]]:
    """Items engaged with together with ``item_id``, each with a score that falls with its rank (1 for the first,
    ``1 / (1 + rank)`` after) and the source that found it; NOT_FOUND when the item is neither in the catalogue
    nor in any event."""
    check_k(k)
    rules.validate()
    try:
        found = _retriever(features).similar(
            item_id, k=k, now_s=at_s, item_filter=rules.item_filter, item_of=_item_of(features), user_key=user_key
        )
    except UnknownItemError:
        raise NotFoundError(f"item_id {item_id!r} is neither in the catalogue nor in any event") from None
    return [(c.item_id, 1.0 / (1.0 + rank), c.source) for rank, c in enumerate(found)]


def buy_again(
    features: FeatureState, user_key: str, k: int, rules: ListRules, *, at_s: float
) -> list[tuple[str, float]]:
    """The user's bought items, the most due first, with how due each is (1.0: its usual interval has passed)."""
    check_k(k)
    rules.validate()
    return _retriever(features).buy_again(
        user_key, now_s=at_s, k=k, item_filter=rules.item_filter, item_of=_item_of(features)
    )
