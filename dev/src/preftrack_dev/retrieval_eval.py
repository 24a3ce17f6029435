"""Retrieval's recall of the next chosen item, measured prequentially: owns that measure and its baselines.

:func:`prequential_recall` replays a time-ordered stream through the gateway's own
:class:`~preftrack_gateway.retrieval.Retriever` (default settings unless given) and, at each *occasion* (a user
about to choose an item), asks for ``n`` candidates **before** the occasion's first event is folded, then records
whether the chosen item is among them. The same stream feeds the lists a shop already has, each cut to ``n``:

- **popular**: the items with the most positive events so far (ties: the one counted first);
- **category**: the popular items of the user's own categories (those of the most of their events so far; each
  category's items by positive events, ties in catalogue order), then popular items to fill ``n`` (all popular
  for a new user);
- **own items**: the user's distinct items with any event so far, the most recent first;
- **bought before**: the user's purchased items, the most recent first (buy-again alone);
- **oracle category** (a bound, not a baseline: it knows the answer's category): the ``n`` most popular items of
  the chosen item's own primary category. Where it stays low, items within a category are hard to tell apart
  from the log alone, and no category-based list can do much better.

An occasion is where a Recommend would have been made: :func:`occasions_from_positives` takes each positive
event's item (the dataset's own label rule, :meth:`FeatureSpec.is_positive`), asked for before the user's run of
events on that item began (the view before the add-to-cart), so the engagement that led to the choice is not yet
known; :func:`occasions_from_choice_sets` takes each choice set's chosen item, asked for before the occasion's
first view. The user's history is read strictly before the occasion's time, as the gateway reads it.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import operator
import time
from collections.abc import Callable, Mapping, Sequence

from preftrack_gateway.retrieval import SOURCES, RetrievalConfig, Retriever
from preftrack_gateway.schema import Event, Item
from preftrack_trainer.data.choices import ChoiceSet

#: The lists :func:`prequential_recall` compares, by the key of their recall (``recall_<name>``).
BASELINES: tuple[str, ...] = ("popular", "category", "own_items", "bought_before", "oracle_category")


@dataclasses.dataclass(frozen=True)
class Occasion:
    """A user about to choose an item: the retriever is asked before ``events[index]`` is folded.

    Attributes:
        index: position in the stream of the occasion's first event.
        user_id: who chooses.
        item_id: the item chosen.
        timestamp_s: the time of the ask (the user's history is read strictly before it).
    """

    index: int
    user_id: str
    item_id: str
    timestamp_s: float


@dataclasses.dataclass(slots=True)
class _Run:
    """A user's current run of events on one item."""

    item_id: str
    first: int
    last_s: float
    asked: bool = False


def occasions_from_positives(
    events: Sequence[Event], is_positive: Callable[[str, float], bool], *, run_gap_s: float = 1800.0
) -> list[Occasion]:
    """One occasion per run of a user's consecutive events on one item that holds a positive event.

    A run is the user's events on the same item with no other item of theirs in between and at most ``run_gap_s``
    between two of them (a view, a click, an add-to-cart, a purchase); its occasion is asked for before the run's
    first event. A run with two positive events (an add-to-cart, then the purchase) is one occasion. Searches name
    no item and neither start nor break a run.

    Args:
        events: the stream, time-ordered.
        is_positive: the label rule, ``FeatureSpec().is_positive``.
        run_gap_s: a longer pause starts a new run.
    """
    runs: dict[str, _Run] = {}
    found: list[Occasion] = []
    for index, event in enumerate(events):
        if not event.item_id:
            continue
        t = event.timestamp_s
        run = runs.get(event.user_id)
        if run is None or run.item_id != event.item_id or t - run.last_s > run_gap_s:
            run = runs[event.user_id] = _Run(event.item_id, index, t)
        run.last_s = t
        if not run.asked and is_positive(event.event_type, event.value):
            run.asked = True
            found.append(Occasion(run.first, event.user_id, event.item_id, events[run.first].timestamp_s))
    found.sort(key=lambda occasion: occasion.index)
    return found


def occasions_from_choice_sets(events: Sequence[Event], choice_sets: Sequence[ChoiceSet]) -> list[Occasion]:
    """One occasion per choice set whose first event is in the stream, asked for before that first view."""
    position = {event.event_id: index for index, event in enumerate(events)}
    found = [
        Occasion(position[c.event_ids[0]], c.user_id, c.chosen, c.timestamp_s)
        for c in choice_sets
        if c.event_ids[0] in position
    ]
    found.sort(key=lambda occasion: occasion.index)
    return found


def _spread(occasions: Sequence[Occasion], most: int | None) -> list[Occasion]:
    """At most ``most`` occasions, evenly spaced over the stream (all when None or fewer)."""
    if most is None or len(occasions) <= most:
        return list(occasions)
    step = len(occasions) / most
    return [occasions[int(k * step)] for k in range(most)]


class _Lists:
    """The baselines' state: positive counts per item, each user's categories, items and purchases so far."""

    def __init__(self, items: Mapping[str, Item]) -> None:
        self.category_of = {item_id: item.primary_category for item_id, item in items.items()}
        self.members: dict[str, list[str]] = collections.defaultdict(list)
        for item_id, category in self.category_of.items():
            self.members[category].append(item_id)
        self.positives: collections.Counter[str] = collections.Counter()
        self.user_categories: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.user_items: dict[str, dict[str, None]] = collections.defaultdict(dict)  # least recent first
        self.user_bought: dict[str, dict[str, None]] = collections.defaultdict(dict)

    def fold(self, event: Event, positive: bool) -> None:
        item, user = event.item_id, event.user_id
        if not item:
            return
        if item not in self.category_of:  # an item the catalogue lacks still counts, in its own category
            self.category_of[item] = "unknown"
            self.members["unknown"].append(item)
        if positive:
            self.positives[item] += 1
        self.user_categories[user][self.category_of[item]] += 1
        for recent in (self.user_items[user], *((self.user_bought[user],) if event.event_type == "purchase" else ())):
            recent.pop(item, None)
            recent[item] = None

    def popular(self, n: int) -> list[str]:
        return [item for item, _ in heapq.nlargest(n, self.positives.items(), key=operator.itemgetter(1))]

    def in_category(self, category: str, n: int) -> list[str]:
        count = self.positives.get
        return heapq.nlargest(n, self.members.get(category, ()), key=lambda item: count(item, 0))

    def category(self, user: str, n: int, popular: list[str]) -> list[str]:
        out: dict[str, None] = {}
        counts = self.user_categories.get(user, collections.Counter())
        for category, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])):
            out.update(dict.fromkeys(self.in_category(category, n - len(out))))
            if len(out) >= n:
                break
        for item in popular:
            if len(out) >= n:
                break
            out.setdefault(item)
        return list(out)

    def own_items(self, user: str, n: int) -> list[str]:
        return list(reversed(self.user_items.get(user, {})))[:n]

    def bought_before(self, user: str, n: int) -> list[str]:
        return list(reversed(self.user_bought.get(user, {})))[:n]

    def oracle_category(self, item: str, n: int) -> list[str]:
        return self.in_category(self.category_of.get(item, "unknown"), n)


def prequential_recall(
    events: Sequence[Event],
    items: Mapping[str, Item],
    *,
    is_positive: Callable[[str, float], bool],
    n: int = 100,
    also_n: Sequence[int] = (),
    occasions: Sequence[Occasion] | None = None,
    max_occasions: int | None = None,
    config: RetrievalConfig | None = None,
    refresh: bool = True,
) -> dict[str, float]:
    """Recall@``n`` of the next chosen item: the gateway's retriever and the baselines, on one stream.

    Every event is folded, in order, into a :class:`Retriever` (with the catalogue's items upserted first) and
    into the baselines' state; each occasion's lists are asked for just before its event is folded.

    Args:
        events: the stream, time-ordered and clean (as a dataset's loader returns it).
        items: the catalogue.
        is_positive: the label rule, ``FeatureSpec().is_positive`` (what the gateway folds as positive).
        n: candidates per list.
        also_n: other list lengths to ask the retriever for at the same occasions (the gateway's pool is 300).
        occasions: where to ask (default: :func:`occasions_from_positives`).
        max_occasions: ask at most this many, evenly spaced over the stream (every event is still folded).
        config: the retriever's settings (default: the gateway's).
        refresh: refresh the retriever's popular lists before each ask, as a live gateway whose lists refresh every
            second finds them; False leaves them to the replay's own pace (every 10,000 events or second of wall
            time, which an offline replay crosses in a fraction of a second).

    Returns:
        ``occasions`` and ``users`` (asked for), ``n``; ``recall`` (the retriever) and ``recall_<baseline>`` for
        each of :data:`BASELINES`; ``hits_<source>`` for each retrieval source (the share of occasions whose chosen
        item that source found); ``mean_candidates`` (the retriever's list length); ``retrieval_ms`` (mean time of
        one ``candidates`` call); for each length ``m`` of ``also_n``, ``recall_at_<m>`` and ``retrieval_ms_at_<m>``;
        ``elapsed_s``.

    Raises:
        ValueError: a list length is below 1, or there is no occasion to ask.
    """
    if min((n, *also_n)) < 1:
        raise ValueError(f"list lengths must be at least 1, not {[n, *also_n]}")
    asked = _spread(occasions_from_positives(events, is_positive) if occasions is None else occasions, max_occasions)
    if not asked:
        raise ValueError("the stream holds no occasion (no positive event) to measure recall on")
    started = time.perf_counter()
    retriever = Retriever(config)
    for item in items.values():
        retriever.upsert_item(item)
    lists = _Lists(items)
    hits = dict.fromkeys(("retrieval", *BASELINES), 0)
    by_source = dict.fromkeys(SOURCES, 0)
    returned = 0
    retrieval_s = 0.0
    wider = {m: [0, 0.0] for m in also_n}  # length -> [hits, seconds]
    queue = collections.deque(asked)
    for index, event in enumerate(events):
        while queue and queue[0].index == index:
            occasion = queue.popleft()
            user, chosen = occasion.user_id, occasion.item_id
            if refresh:
                retriever.refresh()
            ask_started = time.perf_counter()
            found = retriever.candidates(user, now_s=occasion.timestamp_s, n=n, item_of=items.get)
            retrieval_s += time.perf_counter() - ask_started
            returned += len(found)
            source = next((c.source for c in found if c.item_id == chosen), None)
            if source is not None:
                hits["retrieval"] += 1
                by_source[source] += 1
            popular = lists.popular(2 * n)  # the category list fills up from it, past the items it already has
            answers = {
                "popular": popular[:n],
                "category": lists.category(user, n, popular),
                "own_items": lists.own_items(user, n),
                "bought_before": lists.bought_before(user, n),
                "oracle_category": lists.oracle_category(chosen, n),
            }
            for name, answer in answers.items():
                hits[name] += chosen in answer
            for m, tally in wider.items():
                ask_started = time.perf_counter()
                wide = retriever.candidates(user, now_s=occasion.timestamp_s, n=m, item_of=items.get)
                tally[1] += time.perf_counter() - ask_started
                tally[0] += any(c.item_id == chosen for c in wide)
        positive = is_positive(event.event_type, event.value)
        retriever.fold(event, positive)
        lists.fold(event, positive)
    if queue:
        raise ValueError(f"{len(queue)} occasions point past the stream's end")
    count = len(asked)
    out: dict[str, float] = {
        "occasions": float(count),
        "users": float(len({o.user_id for o in asked})),
        "n": float(n),
        "recall": hits["retrieval"] / count,
    }
    out.update({f"recall_{name}": hits[name] / count for name in BASELINES})
    out.update({f"hits_{source}": by_source[source] / count for source in SOURCES})
    out.update(mean_candidates=returned / count, retrieval_ms=1000.0 * retrieval_s / count)
    for m, (found_m, seconds) in wider.items():
        out[f"recall_at_{m}"] = found_m / count
        out[f"retrieval_ms_at_{m}"] = 1000.0 * seconds / count
    out["elapsed_s"] = time.perf_counter() - started
    return out
