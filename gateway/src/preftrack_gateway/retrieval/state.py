"""The bounded structures behind :class:`~preftrack_gateway.retrieval.retriever.Retriever`, their only owner.

Per user the recent distinct items and the purchases (:class:`_Histories`), per item its co-occurrence
neighbours (:class:`_CoOccurrence`), decayed popularity and the catalogue's category index with the popular
lists (:class:`_Popularity`), and learned re-buy interval (:class:`_RebuyIntervals`).

**Bounds** (all in :class:`~preftrack_gateway.retrieval.config.RetrievalConfig`): users and items with event
state are each capped, the least recently active evicted first; per user at most ``max_recent_items`` recent
items and ``max_bought_items`` purchases (each with its last ``max_purchase_times`` times); per item at most
``max_neighbours`` neighbours (pruned to three quarters of that when over, so pruning costs O(log M) per new
neighbour on average); the trending lists hold ``trending_per_category`` items per category and
``popular_pool`` overall. They are refreshed lazily, from the items whose popularity changed, at most every
``trending_refresh_s`` of wall time unless ``trending_refresh_folds`` events arrived.

The state is plain dicts, lists and sets and pickles with the gateway's snapshots.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from preftrack_gateway.retrieval.config import RetrievalConfig

#: Decayed sums are kept relative to a reference time; past this many half-lives they are rescaled.
_REBASE_HALF_LIVES = 64.0
#: Share of ``max_neighbours`` kept when a neighbour list is pruned.
_PRUNE_KEEP = 0.75


# A user's history: recent items (item -> latest engagement time, least recently folded first) and purchases
# (item -> [count, first time, sorted last times], least recently bought first).
_Recent = dict[str, float]
_Bought = dict[str, list[Any]]


class _Histories:
    """Per-user recent items and purchases, each bounded; the least recently active user is evicted."""

    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        self.users: OrderedDict[str, tuple[_Recent, _Bought]] = OrderedDict()

    def touch(self, user: str) -> tuple[_Recent, _Bought]:
        entry = self.users.get(user)
        if entry is None:
            entry = self.users[user] = ({}, {})
            if len(self.users) > self.config.max_users:
                self.users.popitem(last=False)
        else:
            self.users.move_to_end(user)
        return entry

    def window(self, recent: _Recent, item: str, t: float) -> list[str]:
        """The user's last distinct items (newest first) near ``t`` that an engagement with ``item`` links to."""
        cfg = self.config
        out: list[str] = []
        for other in reversed(recent):
            if other != item and abs(t - recent[other]) <= cfg.co_window_s:
                out.append(other)
                if len(out) == cfg.co_window_items:
                    break
        return out

    def engage(self, recent: _Recent, item: str, t: float) -> None:
        previous = recent.pop(item, None)
        recent[item] = t if previous is None else max(previous, t)
        if len(recent) > self.config.max_recent_items:
            del recent[next(iter(recent))]

    def purchase(self, bought: _Bought, item: str, t: float) -> float | None:
        """Record a purchase; return the same user's previous purchase time of the item, when known."""
        entry = bought.pop(item, None) or [0, t, []]
        entry[0] += 1
        entry[1] = min(entry[1], t)
        times: list[float] = entry[2]
        index = bisect.bisect_right(times, t)
        previous = times[index - 1] if index else None
        times.insert(index, t)
        if len(times) > self.config.max_purchase_times:
            del times[0]
        bought[item] = entry
        if len(bought) > self.config.max_bought_items:
            del bought[next(iter(bought))]
        return previous

    def recent_as_of(self, user: str, now_s: float) -> list[str]:
        """The user's recent items engaged before ``now_s``, newest first. An item engaged again at or after
        ``now_s`` is left out (only its latest time is kept): the answer may miss, never leak."""
        entry = self.users.get(user)
        if entry is None:
            return []
        recent = [(t, item) for item, t in entry[0].items() if t < now_s]
        recent.sort(key=lambda pair: -pair[0])
        return [item for _, item in recent]

    def bought_as_of(self, user: str | None, now_s: float) -> dict[str, float]:
        """When the user last bought each item before ``now_s``.

        When the kept times all lie at or after ``now_s`` but an older purchase was dropped, the last purchase is
        some time before ``now_s``: ``now_s`` is answered, so a "bought within" rule errs towards excluding.
        """
        entry = self.users.get(user) if user is not None else None
        if entry is None:
            return {}
        out: dict[str, float] = {}
        for item, (_, first_s, times) in entry[1].items():
            if first_s >= now_s:
                continue
            index = bisect.bisect_left(times, now_s)
            out[item] = times[index - 1] if index else now_s
        return out

    def own_log_gaps(self, user: str, item: str, now_s: float) -> list[float]:
        """Logs of the user's kept gaps between purchases of the item before ``now_s``."""
        entry = self.users.get(user)
        times = [t for t in entry[1][item][2] if t < now_s] if entry and item in entry[1] else []
        gaps = (b - a for a, b in itertools.pairwise(times))
        return [math.log(gap) for gap in gaps if gap >= max(self.config.min_rebuy_gap_s, 1e-9)]


class _Decaying:
    """Sums that halve every ``half_life_s``, kept relative to a reference time so nothing is touched as time
    passes: an addition at ``t`` is scaled by ``2 ** ((t - t_ref) / half_life_s)``, and all sums are rescaled
    together (rarely) when that grows too large."""

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self.t_ref: float | None = None

    def _scale(self, t: float) -> float:
        if self.t_ref is None:
            self.t_ref = t
        exponent = (t - self.t_ref) / self.half_life_s
        if exponent > _REBASE_HALF_LIVES:
            self._rescale(2.0**-exponent)
            self.t_ref, exponent = t, 0.0
        return 2.0 ** max(exponent, -1000.0)

    def _rescale(self, factor: float) -> None:
        raise NotImplementedError


class _CoOccurrence(_Decaying):
    """Per item, the items engaged near it by the same users, with decayed weights; at most M per item."""

    def __init__(self, config: RetrievalConfig) -> None:
        super().__init__(config.co_half_life_s)
        self.max_neighbours = config.max_neighbours
        self.keep = max(1, int(config.max_neighbours * _PRUNE_KEEP))
        self.decay = config.co_position_decay
        self.neighbours: dict[str, dict[str, float]] = {}
        self.degree: dict[str, float] = {}  # total weight ever linked to the item (decayed), pruned links included
        self.entries = 0

    def add(self, item: str, window: list[str], weight: float, t: float) -> None:
        if not window:
            return
        weight *= self._scale(t)
        mine = self.neighbours.setdefault(item, {})
        total = 0.0
        for other in window:
            theirs = self.neighbours.setdefault(other, {})
            self._link(theirs, item, weight)
            self._link(mine, other, weight)
            self.degree[other] = self.degree.get(other, 0.0) + weight
            total += weight
            weight *= self.decay
        self.degree[item] = self.degree.get(item, 0.0) + total

    def _link(self, neighbours: dict[str, float], other: str, weight: float) -> None:
        old = neighbours.get(other)
        if old is not None:
            neighbours[other] = old + weight
            return
        neighbours[other] = weight
        self.entries += 1
        if len(neighbours) > self.max_neighbours:
            # Down to 3/4 of M at once: a prune costs O(M log M) and comes once per M/4 new neighbours.
            kept = heapq.nlargest(self.keep, neighbours.items(), key=lambda pair: pair[1])
            self.entries -= len(neighbours) - len(kept)
            neighbours.clear()
            neighbours.update(kept)

    def evict(self, item: str) -> None:
        self.entries -= len(self.neighbours.pop(item, ()))
        self.degree.pop(item, None)

    def scores(self, seeds: Iterable[tuple[str, float]]) -> dict[str, float]:
        """Sum over the seeds of seed weight × cosine-normalised link weight, per neighbour."""
        scores: dict[str, float] = {}
        degree = self.degree
        for seed, seed_weight in seeds:
            neighbours = self.neighbours.get(seed)
            if not neighbours:
                continue
            weight = seed_weight / math.sqrt(degree.get(seed) or 1.0)
            for other, link in neighbours.items():
                # A neighbour evicted since has no degree left: its link stands in for it.
                scores[other] = scores.get(other, 0.0) + weight * link / math.sqrt(degree.get(other) or link)
        return scores

    def _rescale(self, factor: float) -> None:
        for neighbours in self.neighbours.values():
            for other in neighbours:
                neighbours[other] *= factor
        for item in self.degree:
            self.degree[item] *= factor


class _Popularity(_Decaying):
    """Decayed popularity per item, the catalogue's category index, and the lazily refreshed popular lists."""

    def __init__(self, config: RetrievalConfig) -> None:
        super().__init__(config.popularity_half_life_s)
        self.pool = config.popular_pool
        self.per_category = config.trending_per_category
        self.score: dict[str, float] = {}
        self.categories_of: dict[str, tuple[str, ...]] = {}
        self.members: dict[str, set[str]] = {}
        self.popular: list[str] = []
        self.trending: dict[str, list[str]] = {}
        self.dirty: set[str] = set()  # items whose score or categories changed since the last refresh
        self.rebuild: set[str] = set()  # categories that lost an item: their list is rebuilt from all members

    def add(self, item: str, t: float) -> None:
        self.score[item] = self.score.get(item, 0.0) + self._scale(t)
        self.dirty.add(item)

    def upsert(self, item: str, categories: tuple[str, ...]) -> None:
        old = self.categories_of.get(item, ())
        if old == categories and item in self.categories_of:
            return
        for category in set(old) - set(categories):
            members = self.members[category]
            members.discard(item)
            if members:
                self.rebuild.add(category)
            else:
                del self.members[category]
                self.trending.pop(category, None)
                self.rebuild.discard(category)
        for category in categories:
            self.members.setdefault(category, set()).add(item)
        self.categories_of[item] = categories
        self.score.setdefault(item, 0.0)
        self.dirty.add(item)

    def remove(self, item: str) -> None:
        """Drop the item from the category index and the popularity lists (at the next refresh)."""
        if item in self.categories_of:
            self.upsert(item, ())
            del self.categories_of[item]
        self.score.pop(item, None)
        self.dirty.add(item)

    def _key(self, item: str) -> tuple[float, str]:
        return (self.score.get(item, 0.0), item)  # the id breaks ties: the same answer in every process

    def refresh(self) -> None:
        """Merge the changed items into the lists: an unchanged item outside a list cannot have overtaken the
        ones in it (scores only grow in the reference frame), so only categories that lost an item are rebuilt."""
        touched: dict[str, set[str]] = {}
        for item in self.dirty:
            for category in self.categories_of.get(item, ()):
                touched.setdefault(category, set()).add(item)
        for category, items in touched.items():
            if category not in self.rebuild:
                pool = items.union(self.trending.get(category, ()))
                self.trending[category] = heapq.nlargest(self.per_category, pool, key=self._key)
        for category in self.rebuild:
            self.trending[category] = heapq.nlargest(self.per_category, self.members[category], key=self._key)
        pool = {item for item in self.popular if item in self.score} | (self.dirty & self.score.keys())
        self.popular = heapq.nlargest(self.pool, pool, key=self._key)
        self.dirty.clear()
        self.rebuild.clear()

    def _rescale(self, factor: float) -> None:
        for item in self.score:
            self.score[item] *= factor


class _RebuyIntervals:
    """Per item, a running mean of the log gaps between one user's purchases of it, across users."""

    def __init__(self, config: RetrievalConfig) -> None:
        self.memory = config.rebuy_memory
        self.prior_weight = config.rebuy_prior_weight
        self.log_gap: dict[str, list[float]] = {}  # item -> [count (capped at memory), mean log gap]

    def add(self, item: str, gap_s: float) -> None:
        stat = self.log_gap.setdefault(item, [0.0, 0.0])
        stat[0] = min(stat[0] + 1.0, self.memory)
        stat[1] += (math.log(gap_s) - stat[1]) / stat[0]

    def interval_s(self, item: str, own_log_gaps: list[float]) -> float | None:
        """The item's typical re-buy interval for a user (geometric mean, the user's own gaps blended with the
        item's), or None when nobody re-bought it."""
        stat = self.log_gap.get(item)
        prior = self.prior_weight if stat else 0.0
        if not own_log_gaps and not prior:
            return None
        mean = (sum(own_log_gaps) + (prior * stat[1] if stat else 0.0)) / (len(own_log_gaps) + prior)
        return math.exp(mean)
