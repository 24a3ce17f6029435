"""The bounds and weights of retrieval (:class:`RetrievalConfig`); owns no state."""

from __future__ import annotations

import dataclasses
import math

from preftrack_gateway.retrieval.rules import _is_number


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrievalConfig:
    """Bounds and weights of :class:`Retriever`, validated on creation.

    Memory is bounded by ``max_users`` × (``max_recent_items`` + ``max_bought_items`` × ``max_purchase_times``)
    and ``max_items`` × ``max_neighbours`` entries (about 100 bytes each), plus the catalogue's index.

    Attributes:
        max_users: users with a history; the least recently active is forgotten past it.
        max_items: items with event state (neighbours, re-buy interval; popularity when not in the catalogue);
            the least recently engaged is dropped past it.
        max_recent_items: distinct recent items kept per user.
        max_bought_items: bought items kept per user (the least recently bought dropped).
        max_purchase_times: purchase times kept per bought item (the oldest dropped).
        co_window_items: an engagement links the item to this many of the user's previous distinct items...
        co_window_s: ...engaged at most this long before (or after) it.
        co_position_decay: each older item of that window links this much less than the one after it.
        positive_weight: a positive engagement links this much more than any other.
        max_neighbours: neighbours kept per item.
        co_half_life_s: co-occurrence weights halve in this time, so new pairs overtake old ones.
        popularity_half_life_s: popularity (from positive events) halves in this time.
        popular_pool: items in the global popularity list.
        trending_per_category: items in each category's popularity list.
        trending_refresh_s / trending_refresh_folds: the lists are refreshed at a query at most this often (wall
            time), or sooner when this many events were folded since.
        seed_items: the user's most recent items whose neighbours are candidates...
        seed_decay: ...each older one counting this much less.
        user_categories: the user's top categories whose popular items are candidates.
        buy_again_share / co_occurrence_share / category_share: quotas of ``n`` for the personal sources; the
            rest goes to the popular ones.
        min_rebuy_gap_s: purchases of one item closer than this are one order, not a re-buy.
        rebuy_memory: the per-item interval is a running mean over about this many recent gaps.
        rebuy_prior_weight: the item's interval counts as this many of a user's own gaps.
    """

    max_users: int = 1_000_000
    max_items: int = 500_000
    max_recent_items: int = 50
    max_bought_items: int = 200
    max_purchase_times: int = 4
    co_window_items: int = 10
    co_window_s: float = 3 * 86_400.0
    co_position_decay: float = 0.85
    positive_weight: float = 3.0
    max_neighbours: int = 100
    co_half_life_s: float = 30 * 86_400.0
    popularity_half_life_s: float = 7 * 86_400.0
    popular_pool: int = 1000
    trending_per_category: int = 200
    trending_refresh_s: float = 1.0
    trending_refresh_folds: int = 10_000
    seed_items: int = 10
    seed_decay: float = 0.8
    user_categories: int = 3
    buy_again_share: float = 0.2
    co_occurrence_share: float = 0.4
    category_share: float = 0.25
    min_rebuy_gap_s: float = 3600.0
    rebuy_memory: int = 1000
    rebuy_prior_weight: float = 2.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{field.name} must be a positive integer, not {value!r}")
            if field.type == "float" and (not _is_number(value) or not math.isfinite(value) or value < 0):
                raise ValueError(f"{field.name} must be a finite number ≥ 0, not {value!r}")
        positive = ("co_window_s", "positive_weight", "co_half_life_s", "popularity_half_life_s", "rebuy_prior_weight")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be above 0")
        for name in ("co_position_decay", "seed_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in (0, 1]")
        if self.buy_again_share + self.co_occurrence_share + self.category_share > 1.0 + 1e-9:
            raise ValueError("buy_again_share + co_occurrence_share + category_share must be at most 1")
