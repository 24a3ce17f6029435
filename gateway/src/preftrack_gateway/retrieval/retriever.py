"""The only owner of retrieval state (:class:`Retriever`): folds events and catalogue items, answers requests.

:class:`Retriever` folds the event log (the same place the gateway updates its feature tables) into the
bounded state of :mod:`preftrack_gateway.retrieval.state`. It answers three calls:

- :meth:`Retriever.candidates`: up to ``n`` items for a Recommend call that sends no candidate list (the scored
  model then ranks them), merged from five sources with quotas so that none starves the others:

  1. ``buy_again``: the user's purchases, most due first (at most ``buy_again_share`` of ``n``);
  2. ``co_occurrence``: neighbours of the user's recent items, the newest weighted most (``co_occurrence_share``
     plus whatever ``buy_again`` left unused);
  3. ``category``: the most popular items of the user's top categories (from their own history's items), the
     categories interleaved in proportion to their weight (``category_share`` plus what is left over);
  4. ``trending``: with a ``categories_in`` filter, the most popular items of those categories;
  5. ``popular``: global popularity, for the rest; a brand-new user gets ``n`` popular items.

  A second pass tops up from the sources in the same order when the first left the answer short (a strict
  filter). The filter is applied while merging: the answer holds up to ``n`` admitted items, never a
  duplicate, grouped by source, each source's best first.
- :meth:`Retriever.similar`: an item's co-occurrence neighbours, then popular items of its primary category.
- :meth:`Retriever.buy_again`: the user's purchases ordered by how due each is.

**Point in time.** The user's own history is read as of ``now_s``: only entries strictly before it count, as in
:mod:`preftrack_gateway.features` (a replay may ask as of a past time, or as of an event already folded). The
aggregates (co-occurrence, popularity, re-buy intervals, the trending lists) are those of everything folded so
far, the user's own later events included: a replay that asks as of a past time sees them as of its fold
position. ``exclude_bought_within_s`` sees the user's last ``max_bought_items`` purchased items.

Not thread-safe: the gateway calls it from its event loop. The state is plain dicts, lists and sets and pickles
with the gateway's snapshots.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from preftrack_gateway.retrieval.config import RetrievalConfig
from preftrack_gateway.retrieval.rules import MAX_RESULTS, NO_FILTER, ItemFilter, _is_number
from preftrack_gateway.retrieval.state import _CoOccurrence, _Histories, _Popularity, _RebuyIntervals
from preftrack_gateway.schema import Event, Item

#: Sources of a :class:`Candidate`, in merge order.
SOURCES: tuple[str, ...] = ("buy_again", "co_occurrence", "category", "trending", "popular")
#: How much each older recent item counts less when choosing the user's categories.
_CATEGORY_RECENCY_DECAY = 0.95
#: A secondary category counts this much of the primary one.
_SECONDARY_CATEGORY_WEIGHT = 0.5
_STATE_VERSION = 1


class UnknownItemError(KeyError):
    """An item id is neither in the catalogue nor in any folded event."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"item {self.item_id!r} is neither in the catalogue nor in any event; check the id"


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """An item found by retrieval and the source that found it (one of :data:`SOURCES`)."""

    item_id: str
    source: str


class _Picker:
    """The merge: takes admitted, unseen items from source streams into one answer of at most ``n``."""

    def __init__(self, n: int, admit: Callable[[str], bool], seen: Iterable[str] = ()) -> None:
        self.n = n
        self.admit = admit
        self.seen = set(seen)
        self.out: list[Candidate] = []

    def take(self, source: str, stream: Iterator[str], limit: int) -> int:
        took = 0
        while took < limit and len(self.out) < self.n:
            item = next(stream, None)
            if item is None:
                break
            if item in self.seen:
                continue
            self.seen.add(item)
            if self.admit(item):
                self.out.append(Candidate(item, source))
                took += 1
        return took


def _ranked(scores: dict[str, float], first: int) -> Iterator[str]:
    """The keys of ``scores``, highest first: the top ``first`` by a heap, the rest sorted only if asked for."""
    top = heapq.nlargest(first, scores, key=scores.__getitem__)
    yield from top
    if len(top) < len(scores):
        chosen = set(top)
        yield from sorted((k for k in scores if k not in chosen), key=scores.__getitem__, reverse=True)


def _interleave(streams: list[tuple[float, Iterable[str]]]) -> Iterator[str]:
    """Items of several streams, each taking turns in proportion to its weight (smooth weighted round-robin).

    >>> "".join(_interleave([(2.0, "aaaa"), (1.0, "bb")]))
    'abaaba'
    """
    weights = [weight for weight, _ in streams if weight > 0]
    iterators = [iter(stream) for weight, stream in streams if weight > 0]
    credits = [0.0] * len(weights)
    while iterators:
        total = sum(weights)
        for index, weight in enumerate(weights):
            credits[index] += weight
        best = max(range(len(credits)), key=credits.__getitem__)
        credits[best] -= total
        item = next(iterators[best], None)
        if item is None:
            del weights[best], iterators[best], credits[best]
        else:
            yield item


def _check_request(name: str, count: int, now_s: float) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_RESULTS:
        raise ValueError(f"{name} must be an integer in [0, {MAX_RESULTS}], not {count!r}")
    if not _is_number(now_s) or not math.isfinite(now_s):
        raise ValueError(f"now_s must be a finite time, not {now_s!r}")


class Retriever:
    """The only owner of retrieval state: folds events and catalogue items, answers candidate requests.

    Args:
        config: bounds and weights (defaults when None).
    """

    def __init__(self, config: RetrievalConfig | None = None) -> None:
        self.config = config or RetrievalConfig()
        self._users = _Histories(self.config)
        self._co = _CoOccurrence(self.config)
        self._pop = _Popularity(self.config)
        self._rebuy = _RebuyIntervals(self.config)
        self._items: OrderedDict[str, None] = OrderedDict()  # items with event state, least recently engaged first
        self._folds_since_refresh = 0
        self._refreshed_wall_s = -math.inf

    # --- writes -------------------------------------------------------------------------------------------------

    def fold(self, event: Event, positive: bool) -> None:
        """Fold one event, in log order (a ``search`` names no item and changes nothing).

        Args:
            event: the event (its ``user_id`` is the user key of the other calls).
            positive: whether the project's label rule counts it as positive (links weigh more; popularity).
        """
        item = event.item_id
        if event.event_type == "search" or not item:
            return
        cfg = self.config
        t = float(event.timestamp_s)
        recent, bought = self._users.touch(event.user_id)
        window = self._users.window(recent, item, t)
        self._co.add(item, window, cfg.positive_weight if positive else 1.0, t)
        self._users.engage(recent, item, t)
        if positive:
            self._pop.add(item, t)
        if event.event_type == "purchase":
            previous = self._users.purchase(bought, item, t)
            if previous is not None and t - previous >= max(cfg.min_rebuy_gap_s, 1e-9):
                self._rebuy.add(item, t - previous)
        self._items[item] = None
        self._items.move_to_end(item)
        for other in window:  # they gained state too; their place in the eviction order stays
            if other not in self._items:
                self._items[other] = None
        while len(self._items) > cfg.max_items:
            self._evict(self._items.popitem(last=False)[0])
        self._folds_since_refresh += 1

    def _evict(self, item: str) -> None:
        self._co.evict(item)
        self._rebuy.log_gap.pop(item, None)
        if item not in self._pop.categories_of:
            self._pop.remove(item)

    def upsert_item(self, item: Item) -> None:
        """Index a catalogue item's categories (an item whose categories changed moves)."""
        self._pop.upsert(item.item_id, tuple(item.categories))

    def remove_item(self, item_id: str) -> None:
        """Drop an item from the catalogue's index and the popular lists; its co-occurrence links age out (an item
        not in the catalogue passes only filters without a rule on the item's fields)."""
        self._pop.remove(item_id)

    def forget(self, user_key: str) -> bool:
        """Drop the user's history (recent items, purchases); return whether there was one.

        The aggregates the user contributed to (co-occurrence, popularity, re-buy intervals) remain: they are sums
        over many users that no longer name this one.
        """
        return self._users.users.pop(user_key, None) is not None

    def refresh(self) -> None:
        """Refresh the popular and trending lists now (queries do it lazily)."""
        self._pop.refresh()
        self._folds_since_refresh = 0
        self._refreshed_wall_s = time.monotonic()

    def _maybe_refresh(self) -> None:
        if not (self._pop.dirty or self._pop.rebuild):
            return
        cfg = self.config
        if (
            self._folds_since_refresh >= cfg.trending_refresh_folds
            or time.monotonic() - self._refreshed_wall_s >= cfg.trending_refresh_s
        ):
            self.refresh()

    # --- reads --------------------------------------------------------------------------------------------------

    def candidates(
        self,
        user_key: str,
        *,
        now_s: float,
        n: int,
        item_filter: ItemFilter = NO_FILTER,
        item_of: Callable[[str], Item | None],
    ) -> list[Candidate]:
        """Up to ``n`` admitted items for the user as of ``now_s``, merged from the sources (module docstring).

        Args:
            user_key: the user (an unknown one gets popular items).
            now_s: the request's time; the user's history is read strictly before it.
            n: most items to answer; fewer when the filter leaves fewer among the sources.
            item_filter: the request's rules; no answered item breaks them.
            item_of: the catalogue's item for an id (None when not in it); read only when a rule needs it.

        Raises:
            FilterError: the filter is invalid.
            ValueError: ``n`` or ``now_s`` is out of range.
        """
        _check_request("n", n, now_s)
        item_filter.validate()
        self._maybe_refresh()
        cfg = self.config
        recent = self._users.recent_as_of(user_key, now_s)
        bought = self._users.bought_as_of(user_key, now_s)
        picker = _Picker(n, self._admission(item_filter, item_of, bought, now_s))
        streams: list[tuple[str, Iterator[str], int]] = [
            ("buy_again", (item for item, _ in self._due(user_key, bought, now_s)), round(n * cfg.buy_again_share)),
            ("co_occurrence", self._co_stream(recent, n), round(n * cfg.co_occurrence_share)),
            ("category", self._category_stream(recent), round(n * cfg.category_share)),
        ]
        if item_filter.categories_in:
            wanted = sorted(item_filter.categories_in)
            streams.append(("trending", _interleave([(1.0, self._pop.trending.get(c, ())) for c in wanted]), n))
        streams.append(("popular", iter(self._pop.popular), n))
        carry = 0
        for source, stream, quota in streams:  # quotas; what a source leaves unused passes to the next
            carry += quota - picker.take(source, stream, quota + carry)
        for source, stream, _ in streams:  # top up, in the same order, when a strict filter left it short
            picker.take(source, stream, n)
        return picker.out

    def similar(
        self,
        item_id: str,
        *,
        k: int,
        now_s: float,
        item_filter: ItemFilter = NO_FILTER,
        item_of: Callable[[str], Item | None],
        user_key: str | None = None,
    ) -> list[Candidate]:
        """Up to ``k`` admitted items that go with ``item_id``: its co-occurrence neighbours, then the popular
        items of its primary category; never the item itself.

        Args:
            user_key: the asking user, for ``exclude_bought_within_s`` (no purchases are known without it).

        Raises:
            UnknownItemError: the item is neither in the catalogue nor in any folded event.
            FilterError: the filter is invalid.
        """
        _check_request("k", k, now_s)
        item_filter.validate()
        item = item_of(item_id)
        known = (
            item is not None
            or item_id in self._pop.categories_of
            or item_id in self._items
            or item_id in self._pop.score
        )
        if not known:
            raise UnknownItemError(item_id)
        self._maybe_refresh()
        bought = self._users.bought_as_of(user_key, now_s)
        picker = _Picker(k, self._admission(item_filter, item_of, bought, now_s), seen=(item_id,))
        picker.take("co_occurrence", _ranked(self._co.scores([(item_id, 1.0)]), k), k)
        categories = item.categories if item is not None else self._pop.categories_of.get(item_id, ())
        if categories:
            picker.take("trending", iter(self._pop.trending.get(categories[0], ())), k)
        return picker.out

    def buy_again(
        self,
        user_key: str,
        *,
        now_s: float,
        k: int,
        item_filter: ItemFilter = NO_FILTER,
        item_of: Callable[[str], Item | None],
    ) -> list[tuple[str, float]]:
        """The user's bought items (as of ``now_s``), the most due first, with their due ratio.

        The due ratio is the time since the last purchase over the item's re-buy interval (the user's own gaps
        blended with the item's, learned across users): 1 means due now. Items nobody re-bought have no interval:
        they come after, the most recently bought first, with a ratio of 0.0.
        """
        _check_request("k", k, now_s)
        item_filter.validate()
        bought = self._users.bought_as_of(user_key, now_s)
        admit = self._admission(item_filter, item_of, bought, now_s)
        out: list[tuple[str, float]] = []
        for item, ratio in self._due(user_key, bought, now_s):
            if len(out) >= k:
                break
            if admit(item):
                out.append((item, ratio))
        return out

    def recent_items(self, user_key: str, *, now_s: float) -> list[str]:
        """The user's distinct recent items engaged before ``now_s``, newest first (at most ``max_recent_items``)."""
        return self._users.recent_as_of(user_key, now_s)

    def stats(self) -> dict[str, int]:
        """Sizes for metrics: users, items with event state, catalogue items, categories, neighbour entries."""
        return {
            "users": len(self._users.users),
            "items": len(self._items),
            "catalogue_items": len(self._pop.categories_of),
            "categories": len(self._pop.members),
            "neighbour_entries": self._co.entries,
        }

    def admission(
        self, user_key: str, item_filter: ItemFilter, *, now_s: float, item_of: Callable[[str], Item | None]
    ) -> Callable[[str], bool]:
        """Whether an item passes ``item_filter`` for the user as of ``now_s`` (for candidates a caller sent: the
        same rules as retrieved ones, ``exclude_bought_within_s`` included).

        Raises:
            FilterError: the filter is invalid.
        """
        item_filter.validate()
        return self._admission(item_filter, item_of, self._users.bought_as_of(user_key, now_s), now_s)

    # --- sources ------------------------------------------------------------------------------------------------

    def _admission(
        self,
        item_filter: ItemFilter,
        item_of: Callable[[str], Item | None],
        bought: dict[str, float],
        now_s: float,
    ) -> Callable[[str], bool]:
        if item_filter.is_empty:
            return lambda _: True
        needs_item = item_filter.needs_item

        def admit(item_id: str) -> bool:
            item = item_of(item_id) if needs_item else None
            return item_filter.admits_id(item_id, item, bought_at_s=bought.get(item_id), now_s=now_s)

        return admit

    def _due(self, user_key: str, bought: dict[str, float], now_s: float) -> list[tuple[str, float]]:
        """The bought items, the most due first (those without an interval after, the most recent first)."""
        ranked: list[tuple[tuple[int, float], str, float]] = []
        for item, last_s in bought.items():
            interval_s = self._rebuy.interval_s(item, self._users.own_log_gaps(user_key, item, now_s))
            if interval_s is None:
                ranked.append(((1, -last_s), item, 0.0))
            else:
                ratio = (now_s - last_s) / interval_s
                ranked.append(((0, -ratio), item, ratio))
        ranked.sort(key=lambda entry: (entry[0], entry[1]))
        return [(item, ratio) for _, item, ratio in ranked]

    def _co_stream(self, recent: list[str], n: int) -> Iterator[str]:
        decay = self.config.seed_decay
        seeds = [(item, decay**rank) for rank, item in enumerate(recent[: self.config.seed_items])]
        yield from _ranked(self._co.scores(seeds), n)

    def _category_stream(self, recent: list[str]) -> Iterator[str]:
        weights: dict[str, float] = {}
        for rank, item in enumerate(recent):
            weight = _CATEGORY_RECENCY_DECAY**rank
            for position, category in enumerate(self._pop.categories_of.get(item, ())):
                share = weight if position == 0 else weight * _SECONDARY_CATEGORY_WEIGHT
                weights[category] = weights.get(category, 0.0) + share
        top = sorted(weights.items(), key=lambda pair: (-pair[1], pair[0]))[: self.config.user_categories]
        yield from _interleave([(weight, self._pop.trending.get(category, ())) for category, weight in top])

    # --- snapshots ----------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        del state["_refreshed_wall_s"]  # wall time means nothing in another process
        state["_state_version"] = _STATE_VERSION
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        state = dict(state)
        version = state.pop("_state_version", None)
        if version != _STATE_VERSION:
            raise ValueError(f"retrieval state version {version!r}; this code reads version {_STATE_VERSION}")
        self.__dict__.update(state)
        self._refreshed_wall_s = -math.inf
