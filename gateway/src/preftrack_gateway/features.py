"""Behaviour features: the single definition used online (gateway) and offline (trainer).

A :class:`FeatureState` folds events and answers "what are the features of (user, item) at time t?". The
answer depends only on the events with a timestamp strictly before ``t``: never on later events, and never on
the order in which events were folded in. So the live gateway (commit order), a restarted gateway (timestamp
order), the continual trainer (sequence order), offline training and a replay all compute the same rows, and a
training row, read at its own event's time, never sees that event or anything after it.

Search links queries to items: an engagement with an item is linked to the same user's latest search in the
``search_window_s`` before it, adding to each (query term, item) and (query term, category) sum at the
engagement's time, whichever of the two is folded first (a search folded late takes over the links of the
search it turns out to follow). Score and Recommend with a query read those sums (and how many of
the query's words the item's text holds); a training row reads the user's latest search before its event.

Windows are exponentially decayed sums (a count "over the last ~day" is a sum with a one-day time
constant). Each key keeps its recent events with prefix sums, so a read at the present costs O(1) and a read in
the retained past one bisect; a late event is folded in at its own time.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from preftrack_gateway.retrieval import Retriever
from preftrack_gateway.schema import EVENT_TYPES, Event, Item

_SECONDS_PER_HOUR = 3600.0
_DAY_S = 86_400.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """What the features mean; stored with every model version (its hash must match at serving time).

    Attributes:
        short_window_s: time constant of the "recent" decayed counters.
        long_window_s: time constant of the "long-term" decayed counters.
        positive_types: event types that count as a positive signal.
        rating_threshold: a ``rating`` event at or above this value is positive.
        rating_prior: prior mean rating used to smooth rating averages.
        prior_strength: pseudo-count of the smoothing priors.
        search_window_s: an engagement this soon after a search by the same user is linked to its query terms
            (and a training row reads a search this recent as its query).
    """

    short_window_s: float = _DAY_S
    long_window_s: float = 30 * _DAY_S
    positive_types: tuple[str, ...] = ("add_to_cart", "purchase")
    rating_threshold: float = 4.0
    rating_prior: float = 3.5
    prior_strength: float = 5.0
    search_window_s: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 < self.short_window_s <= self.long_window_s:
            raise ValueError("windows must satisfy 0 < short_window_s <= long_window_s")
        if not 0 < self.search_window_s < math.inf:
            raise ValueError("search_window_s must be a positive number of seconds")
        if "search" in self.positive_types:
            raise ValueError("a search names no item; it cannot be a positive type")
        unknown = set(self.positive_types) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"positive_types has unknown event types: {sorted(unknown)}")
        if self.prior_strength <= 0:
            raise ValueError("prior_strength must be > 0")

    def is_positive(self, event_type: str, value: float) -> bool:
        """Whether an event is a positive preference signal.

        >>> FeatureSpec().is_positive("purchase", 1.0), FeatureSpec().is_positive("rating", 3.0)
        (True, False)
        """
        if event_type == "rating":
            return value >= self.rating_threshold
        return event_type in self.positive_types

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description, stored in each version's metadata."""
        return {**dataclasses.asdict(self), "positive_types": list(self.positive_types)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["positive_types"] = tuple(values.get("positive_types", ()))  # type: ignore[arg-type]
        values.setdefault("search_window_s", cls.search_window_s)
        return cls(**values)  # type: ignore[arg-type]

    def schema_hash(self) -> str:
        """Hash of the feature names and parameters (and of the model inputs' revision); a model only serves
        features with the same hash."""
        blob = json.dumps(
            {"names": FEATURE_NAMES, "spec": self.to_dict(), "inputs": MODEL_INPUTS_REVISION}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelSpec:
    """Which events become labelled examples and when they are positive.

    An example is an event whose type is in ``example_types``. It is positive when the event itself is
    positive (a rating at or above the threshold) or when the same user does a positive event on the same
    item within ``attribution_window_s`` after it.

    A search shows many items its user passes over, but only the engaged ones become events: with
    ``search_negatives`` > 0, offline training adds that many catalogue items per search, drawn at random among
    those the user does not engage with in the search window after it, as negative examples read just after the
    search with its query. They teach the model that an item the query does not describe is a poor answer to it
    (bench_insights: NDCG@10 with the query 0.39 with 4 and 0.40 with 12, against 0.33 with none), but also that
    a user active a moment ago buys less, so a new user's purchase lowered their next scores in its category
    (tests/test_gateway.py). Off by default until they no longer do.
    """

    example_types: tuple[str, ...] = ("view",)
    attribution_window_s: float = 3600.0
    search_negatives: int = 0

    def __post_init__(self) -> None:
        if not set(self.example_types) <= set(EVENT_TYPES) or "search" in self.example_types:
            raise ValueError(f"example_types must be event types from {EVENT_TYPES[:-1]} (a search names no item)")
        if self.attribution_window_s < 0:
            raise ValueError("attribution_window_s must be >= 0")
        if not 0 <= self.search_negatives <= 100:
            raise ValueError("search_negatives must lie in [0, 100]")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description, stored with the deployment's settings and each version's metadata."""
        return {
            "example_types": list(self.example_types),
            "attribution_window_s": self.attribution_window_s,
            "search_negatives": self.search_negatives,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabelSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            example_types=tuple(data.get("example_types", ("view",))),  # type: ignore[arg-type]
            attribution_window_s=float(data.get("attribution_window_s", 3600.0)),  # type: ignore[arg-type]
            search_negatives=int(data.get("search_negatives", 0)),  # type: ignore[call-overload]
        )


FEATURE_NAMES: tuple[str, ...] = (
    *(f"user_{t}_short" for t in EVENT_TYPES),
    *(f"user_{t}_long" for t in EVENT_TYPES),
    "user_positive_rate",
    "user_rating_mean",
    "user_log_hours_since_last",
    "item_popularity_short",
    "item_popularity_long",
    "item_positive_rate",
    "item_rating_mean",
    "item_log_price",
    "user_category_affinity",
    "user_category_engagement",
    "user_category_rating_mean",
    "user_category_log_hours_since_last",
    "user_category_engagement_short",
    "user_item_log_count",
    "user_item_positive",
    "context_hour_sin",
    "context_hour_cos",
    "query_present",
    "query_text_match",
    "query_item_log_links",
    "query_item_share",
    "query_category_share",
)
NUM_FEATURES = len(FEATURE_NAMES)
#: The revision of the model's inputs (``contract.INPUTS``), part of the schema hash so that a version trained on
#: other inputs is refused: 2 added the users' and items' attribute tokens.
MODEL_INPUTS_REVISION = 2
_TYPE_INDEX = {name: index for index, name in enumerate(EVENT_TYPES)}
_SEARCH_INDEX = _TYPE_INDEX["search"]

# log1p(hours) used when something never happened: about a year.
_NEVER_LOG_HOURS = math.log1p(24 * 365)


#: An item not in the catalogue, and its text terms (its only text is the ``unknown`` category).
_UNKNOWN_ITEM = Item(item_id="")
_UNKNOWN_ITEM_TERMS = _UNKNOWN_ITEM.terms()

#: :func:`influence` counts a user's actions (events, and lists served to them) this far either side of an example.
INFLUENCE_WINDOW_S = 60.0

#: The most actions one person does in the two minutes around one of them: one every two seconds. Measured
#: (``FeatureState.activity``, the action itself included): the synthetic shop's users do at most 14, the re-buy
#: shop's 10, MovieLens-100k's raters 49 (sign-up bursts: up to 9 ratings in one second); the synthetic shop's bot
#: 246, and each id of the README's Locust command thousands. Part of the rule, not a setting: a shop whose people
#: do more is not a shop of people.
HUMAN_ACTIONS = 60


def influence(actions: float) -> float:
    """How much one example may teach what every user shares, from its user's ``actions`` around it
    (:meth:`FeatureState.activity`): all of it up to :data:`HUMAN_ACTIONS`, less beyond, nothing from twice as many.

    The per-event layer scales its shared weights' steps by it (:class:`~preftrack_gateway.online.Correction`), and
    the trainer weighs its examples by it, so a few hyperactive ids (a load test, a scraper, a bot) teach everyone's
    scores no more than a few people would, while their own weights still learn from everything they do. Without
    it, 4 ids streaming 20,000 views, each followed by a purchase, moved every other user's scores, new items' too,
    from 0.03 to 0.86 (docs/benchmarks.md).

    >>> influence(10), influence(90), influence(500)
    (1.0, 0.5, 0.0)
    """
    return min(1.0, max(0.0, 2.0 - actions / HUMAN_ACTIONS))


class _Moments:
    """The times of one user's served lists (sorted), for :meth:`FeatureState.activity`: the newest within
    ``retain_s`` of the latest, at most ``max_kept``; ``floor`` is the newest time dropped for being beyond them."""

    __slots__ = ("floor", "times")

    def __init__(self) -> None:
        self.floor = -math.inf
        self.times: list[float] = []

    def add(self, t: float, retain_s: float, max_kept: int) -> None:
        if t <= self.floor:
            return
        bisect.insort(self.times, t)
        times = self.times
        if times[-1] - times[0] > retain_s or len(times) > max_kept:
            cut = max(bisect.bisect_left(times, times[-1] - retain_s), len(times) - max_kept // 2)
            self.floor = times[cut - 1]
            del times[:cut]


class PointInTimeError(ValueError):
    """A read earlier than the history a :class:`FeatureState` retains; the answer would not be exact."""


class _Taus:
    """The time constants of a key's components, grouped: one ``exp`` per distinct constant, not per component."""

    __slots__ = ("distinct", "groups", "values")

    def __init__(self, values: Sequence[float]) -> None:
        self.values = tuple(values)
        self.distinct = tuple(dict.fromkeys(self.values))
        self.groups = tuple(self.distinct.index(v) for v in self.values)


#: A key's history may span up to this many ``retain_s`` before its oldest events are folded into its base, all
#: those older than ``retain_s`` at once. Evicting as soon as the window was exceeded folded one event and
#: re-summed everything kept on every add (a hot item's ~200 kept events, every time it was viewed): amortised,
#: an add costs O(1) again. Reads stay exact for at least ``retain_s`` before a key's newest event.
_SLACK = 1.5


class _Series:
    """Sums of one key's events (a user, an item, a user x category, a user x item), exact at any retained time.

    The value of component ``k`` at time ``t`` is ``sum(w_i[k] * exp(-(t - t_i) / tau[k]) for t_i < t)``:
    events at or after ``t`` never count, and the sum does not depend on the order events were folded in.
    Recent events are kept sorted (``times``) with prefix sums anchored at the oldest kept one, so a read at
    any time after ``base_t`` costs one bisect. Older events are folded into ``base`` (their sums at
    ``base_t``); a read at or before ``base_t`` cannot be answered exactly and raises
    :class:`PointInTimeError`. ``tau`` may be ``inf`` (a plain sum).
    """

    __slots__ = ("anchor", "base", "base_t", "incs", "prefix", "times")

    def __init__(self, size: int) -> None:
        self.base = [0.0] * size
        self.base_t = -math.inf
        self.times: list[float] = []
        self.incs: list[Sequence[float]] = []
        self.prefix: list[list[float]] = []
        self.anchor = 0.0

    def _rebuild(self, start: int, taus: _Taus) -> None:
        """Recompute the prefix sums from position ``start`` on."""
        del self.prefix[start:]
        anchor, distinct, groups, prefix = self.anchor, taus.distinct, taus.groups, self.prefix
        running = prefix[-1] if prefix else [0.0] * len(self.base)
        for t, inc in zip(self.times[start:], self.incs[start:], strict=True):
            f = [math.exp((t - anchor) / tau) for tau in distinct]
            running = [r + i * f[g] for r, i, g in zip(running, inc, groups, strict=True)]
            prefix.append(running)

    def add(self, t: float, inc: Sequence[float], taus: _Taus, retain_s: float, max_kept: int) -> None:
        if t <= self.base_t:  # older than everything kept: exact for every read after base_t
            for k, tau in enumerate(taus.values):
                self.base[k] += inc[k] * math.exp(-(self.base_t - t) / tau)
            return
        times = self.times
        if times and t - times[0] > _SLACK * retain_s:
            # Evict first: the prefix sums' exponents stay within 1.5 retain_s / tau (no overflow after a gap).
            self._evict(t - retain_s, max_kept, taus)
        if not times:
            self.anchor = t
        if not times or t >= times[-1]:  # the usual case, in time order: one new prefix sum
            times.append(t)
            self.incs.append(inc)
            anchor = self.anchor
            f = [math.exp((t - anchor) / tau) for tau in taus.distinct]
            prefix = self.prefix
            if prefix:
                prefix.append([r + i * f[g] for r, i, g in zip(prefix[-1], inc, taus.groups, strict=False)])
            else:
                prefix.append([i * f[g] for i, g in zip(inc, taus.groups, strict=False)])
        else:  # a late event: insert it and recompute the sums after it
            position = bisect.bisect_right(times, t)
            times.insert(position, t)
            self.incs.insert(position, inc)
            self._rebuild(position, taus)
        latest = times[-1]
        if latest - times[0] > _SLACK * retain_s or len(times) > max_kept:
            self._evict(latest - retain_s, max_kept // 2, taus)

    def _evict(self, before_t: float, keep: int, taus: _Taus) -> None:
        """Fold the events older than ``before_t`` (and any beyond the newest ``keep``) into ``base``."""
        cut = max(bisect.bisect_left(self.times, before_t), len(self.times) - keep)
        if cut <= 0:
            return
        new_base_t = self.times[cut - 1]
        base = self.base
        for k, tau in enumerate(taus.values):
            value = base[k] * math.exp(-(new_base_t - self.base_t) / tau) if self.base_t != -math.inf else 0.0
            for t, inc in zip(self.times[:cut], self.incs[:cut], strict=True):
                value += inc[k] * math.exp(-(new_base_t - t) / tau)
            base[k] = value
        self.base_t = new_base_t
        del self.times[:cut], self.incs[:cut]
        self.prefix = []
        if self.times:
            self.anchor = self.times[0]
            self._rebuild(0, taus)

    def read(self, t: float, taus: _Taus) -> tuple[list[float], float]:
        """The sums at ``t`` (events strictly before ``t``) and the time of the latest such event (-inf: none)."""
        if t <= self.base_t:
            raise PointInTimeError(
                f"a read at {t:.3f} is not after the oldest retained history ({self.base_t:.3f}); "
                "features are exact only for times after it"
            )
        count = bisect.bisect_left(self.times, t)
        last = self.times[count - 1] if count else self.base_t
        base_t, distinct, groups = self.base_t, taus.distinct, taus.groups
        summed = self.prefix[count - 1] if count else None
        if summed is not None:
            fa = [math.exp(-(t - self.anchor) / tau) for tau in distinct]
            if base_t == -math.inf:
                return [v * fa[g] for v, g in zip(summed, groups, strict=True)], last
            fb = [math.exp(-(t - base_t) / tau) for tau in distinct]
            return [b * fb[g] + v * fa[g] for b, v, g in zip(self.base, summed, groups, strict=True)], last
        if base_t == -math.inf:
            return [0.0] * len(self.base), last
        fb = [math.exp(-(t - base_t) / tau) for tau in distinct]
        return [b * fb[g] for b, g in zip(self.base, groups, strict=True)], last


class _ItemTable:
    """What a read of many items at the present needs, as arrays with a row per item (owned by one
    :class:`FeatureState`, made again when a snapshot is loaded): the item's sums as of just after its newest event
    (``probe``, one second after it), that event's time, the log of its price and its set of categories.

    A row is made again when the item's history or catalogue entry changes (:meth:`FeatureState.update`,
    :meth:`FeatureState.forget` and :meth:`FeatureState.upsert_item` call :meth:`changed`). Row 0 stands for every
    item neither catalogued nor seen in an event, which gets no row of its own: reads of made-up ids take no memory.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.stale: set[str] = set()  # items whose row must be made again before it is read
        self.sums = np.zeros((64, 5))
        self.latest = np.full(64, -math.inf)
        self.probe = np.zeros(64)
        self.log_price = np.zeros(64)
        self.group = np.zeros(64, dtype=np.intp)
        self.groups: dict[tuple[str, ...], int] = {_UNKNOWN_ITEM.categories: 0}
        self.categories: list[tuple[str, ...]] = [_UNKNOWN_ITEM.categories]

    def changed(self, item_id: str) -> None:
        """The item's history or catalogue entry changed: its row (if it has one) is made again when next read."""
        if item_id in self.index:
            self.stale.add(item_id)

    def rows(self, state: FeatureState, item_ids: Sequence[str]) -> list[int]:
        """The row of each item, made or made again where needed."""
        index = self.index
        found = [index.get(item_id, -1) for item_id in item_ids]
        if -1 in found:
            for k, item_id in enumerate(item_ids):
                if found[k] < 0:
                    found[k] = index.get(item_id, 0) or self._add(state, item_id)
        if self.stale:
            due = self.stale.intersection(item_ids)
            for item_id in due:
                self._make(state, index[item_id], item_id)
            self.stale -= due
        return found

    def _add(self, state: FeatureState, item_id: str) -> int:
        if item_id not in state.catalog and item_id not in state._item:
            return 0
        row = len(self.index) + 1  # after row 0
        if row == len(self.latest):  # room for twice as many (a new row is written whole by _make)
            grown = 2 * row
            self.sums = np.resize(self.sums, (grown, 5))
            self.latest, self.probe = np.resize(self.latest, grown), np.resize(self.probe, grown)
            self.log_price, self.group = np.resize(self.log_price, grown), np.resize(self.group, grown)
        self.index[item_id] = row
        self.stale.discard(item_id)
        self._make(state, row, item_id)
        return row

    def _make(self, state: FeatureState, row: int, item_id: str) -> None:
        series = state._item.get(item_id)
        latest = -math.inf
        if series is not None:
            latest = series.times[-1] if series.times else series.base_t
        if latest == -math.inf:
            self.sums[row], self.probe[row] = 0.0, 0.0
        else:
            self.probe[row] = latest + 1.0
            self.sums[row] = series.read(latest + 1.0, state._item_taus)[0]  # type: ignore[union-attr]
        self.latest[row] = latest
        item = state.item(item_id)
        self.log_price[row] = math.log1p(max(0.0, item.price))
        number = self.groups.get(item.categories)
        if number is None:
            number = self.groups[item.categories] = len(self.categories)
            self.categories.append(item.categories)
        self.group[row] = number


class FeatureState:
    """Per-user, per-item, per-(user, category) and per-(user, item) sums of events, readable at any time.

    **Semantics.** The features of (user, item) at time ``t`` are a function of the events with a timestamp
    strictly before ``t`` and of nothing else: not of events at or after ``t``, not of the order in which
    events were folded in (live commit order, a restart's timestamp order, the trainer's sequence order), and
    not of when they arrived. A late event is folded in at its own time. Only the catalogue is read as it is
    when an event is folded (an item's categories at that moment).

    A read at a time no later than the oldest history a key still retains raises :class:`PointInTimeError`
    instead of answering approximately: each key keeps its events of the last ``retain_s`` seconds (at most
    ``max_kept``), enough for live reads, replays and the trainer's out-of-order commits.

    Args:
        spec: what the features mean.
        catalog: item id -> :class:`Item`; unknown items get the ``unknown`` category and price 0.
        users: user -> the user's pseudonymised attribute tokens (UpsertUsers); a model input, not a feature.
        retain_s: how far back from a key's newest event reads stay exact (at most 30 short windows).
        max_kept: most events kept per key for exact past reads.
        retrieval: the gateway's candidate retrieval state, moved with every event, catalogue change and erasure
            here (its only writer); None (the trainer): no retrieval state is kept.
    """

    def __init__(
        self,
        spec: FeatureSpec | None = None,
        catalog: dict[str, Item] | None = None,
        *,
        users: Mapping[str, tuple[str, ...]] | None = None,
        retain_s: float = 6 * _SECONDS_PER_HOUR,
        max_kept: int = 1024,
        retrieval: Retriever | None = None,
    ) -> None:
        self.spec = spec or FeatureSpec()
        self.retrieval = retrieval
        self.catalog: dict[str, Item] = dict(catalog or {})
        self.users: dict[str, tuple[str, ...]] = {user: tokens for user, tokens in (users or {}).items() if tokens}
        s, lw = self.spec.short_window_s, self.spec.long_window_s
        if not 0 < retain_s <= 30 * s or max_kept < 2:
            raise ValueError("retain_s must lie in (0, 30 * short_window_s] and max_kept must be >= 2")
        self.retain_s = retain_s
        self.max_kept = max_kept
        n = len(EVENT_TYPES)
        inf = math.inf
        # user: counts short (n), counts long (n), positives long, all long, rating total, rating count
        self._user_taus = _Taus((s,) * n + (lw,) * n + (lw, lw, inf, inf))
        # item: all short, all long, positives long, rating total, rating count
        self._item_taus = _Taus((s, lw, lw, inf, inf))
        # user x category: all long, positives long, rating total, rating count, all short
        self._uc_taus = _Taus((lw, lw, inf, inf, s))
        # user x item: all long, positives long
        self._ui_taus = _Taus((lw, lw))
        # query term x item, query term x category: links long, positive links long; query term: links long
        self._link_taus = _Taus((lw, lw))
        self._term_taus = _Taus((lw,))
        self._user: dict[str, _Series] = {}
        self._item: dict[str, _Series] = {}
        self._uc: dict[tuple[str, str], _Series] = {}
        self._ui: dict[tuple[str, str], _Series] = {}
        self._term_item: dict[tuple[str, str], _Series] = {}
        self._term_category: dict[tuple[str, str], _Series] = {}
        self._term: dict[str, _Series] = {}
        # Per user, their recent searches (time, terms) and engagements (time, item, positive), time-sorted, to
        # link each search with the engagements that follow it whichever is folded first.
        self._searches: dict[str, list[tuple[float, tuple[str, ...]]]] = {}
        self._engaged: dict[str, list[tuple[float, str, float]]] = {}
        self._item_terms: dict[str, frozenset[str]] = {}
        self.events_folded = 0
        self._table = _ItemTable()  # see matrix
        self._increments: dict[tuple[int, float, float], tuple[float, ...]] = {}
        self._served: dict[str, _Moments] = {}  # per user, when lists were served to them (see activity)

    def __getstate__(self) -> dict[str, object]:
        """What a snapshot keeps: everything but the item table, which is made again from the rest as it is read."""
        return {**self.__dict__, "_table": None}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._table = _ItemTable()

    def item(self, item_id: str) -> Item:
        """The catalogue entry of an item (a default one when unknown)."""
        found = self.catalog.get(item_id)
        return found if found is not None else Item(item_id=item_id)

    def upsert_item(self, item: Item) -> None:
        """Add or replace a catalogue entry."""
        self.catalog[item.item_id] = item
        self._item_terms.pop(item.item_id, None)
        if self.retrieval is not None:
            self.retrieval.upsert_item(item)
        self._table.changed(item.item_id)

    def upsert_user(self, user_id: str, tokens: Sequence[str]) -> None:
        """Set a user's attribute tokens (none: the user has no attributes)."""
        if tokens:
            self.users[user_id] = tuple(tokens)
        else:
            self.users.pop(user_id, None)

    def user_tokens(self, user_id: str) -> tuple[str, ...]:
        """A user's attribute tokens (none when unknown)."""
        return self.users.get(user_id, ())

    def item_terms(self, item_id: str) -> frozenset[str]:
        """The hashed terms of an item's text (cached for catalogued items until the item is replaced)."""
        found = self._item_terms.get(item_id)
        if found is None:
            item = self.catalog.get(item_id)
            if item is None:
                return _UNKNOWN_ITEM_TERMS
            found = self._item_terms[item_id] = item.terms()
        return found

    def served(self, user_id: str, t: float) -> None:
        """A list was served to the user at ``t``: an action that :meth:`activity` counts (not a feature)."""
        moments = self._served.get(user_id)
        if moments is None:
            moments = self._served[user_id] = _Moments()
        moments.add(t, self.retain_s, self.max_kept)

    def activity(self, user_id: str, t: float) -> float:
        """The user's actions (events and served lists) within :data:`INFLUENCE_WINDOW_S` either side of ``t``, of
        those folded so far: what :func:`influence` weighs an example at ``t`` by.

        Where part of the window is older than what the user's history keeps because the user did more than half of
        ``max_kept`` actions since, it is ``inf`` (busier than anyone); where only because of its age (more than
        ``retain_s`` before the user's newest event), the actions still kept in it.
        """
        low, high = t - INFLUENCE_WINDOW_S, t + INFLUENCE_WINDOW_S
        count = 0.0
        series, moments = self._user.get(user_id), self._served.get(user_id)
        for times, floor in (
            (series.times, series.base_t) if series is not None else ((), -math.inf),
            (moments.times, moments.floor) if moments is not None else ((), -math.inf),
        ):
            if floor >= low and len(times) >= self.max_kept // 2:
                return math.inf
            count += bisect.bisect_right(times, high) - bisect.bisect_left(times, low)
        return count

    def popularity(self, item_ids: Sequence[str], t: float) -> list[float]:
        """Each item's long-horizon event count before ``t`` (0 for an item never seen or not readable at t)."""
        found = []
        for item_id in item_ids:
            series = self._item.get(item_id)
            try:
                found.append(series.read(t, self._item_taus)[0][1] if series is not None else 0.0)
            except PointInTimeError:
                found.append(0.0)
        return found

    def recent_query(self, user_id: str, t: float) -> tuple[str, ...]:
        """The terms of the user's latest search in the ``search_window_s`` before ``t`` (strictly before), or
        none: what a training row at ``t`` reads as its query, and the search an engagement at ``t`` links to."""
        latest = self._latest_search(self._searches.get(user_id), t)
        return latest[1] if latest is not None else ()

    def _latest_search(
        self, searches: Sequence[tuple[float, tuple[str, ...]]] | None, t: float
    ) -> tuple[float, tuple[str, ...]] | None:
        """The last of time-sorted ``searches`` in [t - search_window_s, t), or None."""
        if not searches:
            return None
        position = bisect.bisect_left(searches, (t,)) - 1
        if position >= 0 and t - searches[position][0] <= self.spec.search_window_s:
            return searches[position]
        return None

    def example_row(self, event: Event) -> list[float]:
        """The feature vector of a training example: its (user, item) at its own time, with the user's latest
        search as the query. The live labeller, the continual trainer and offline training all use this."""
        t = event.timestamp_s
        return self.rows(event.user_id, (event.item_id,), t, self.recent_query(event.user_id, t))[0]

    def _link(self, t: float, terms: Sequence[str], item_id: str, positive: float, sign: float = 1.0) -> None:
        """Add one (search, engagement) link at the engagement's time ``t``."""
        retain, kept = self.retain_s, self.max_kept
        inc = (sign, sign * positive)
        categories = self.item(item_id).categories
        for term in terms:
            self._series(self._term, term, 1).add(t, (sign,), self._term_taus, retain, kept)
            self._series(self._term_item, (term, item_id), 2).add(t, inc, self._link_taus, retain, kept)
            for category in categories:
                self._series(self._term_category, (term, category), 2).add(t, inc, self._link_taus, retain, kept)

    def _recent(self, table: dict, user_id: str, entry: tuple) -> None:  # type: ignore[type-arg]
        """Insert ``entry`` (time first) into a user's time-sorted recent list and drop what is too old to link:
        older than ``retain_s`` plus the search window before the list's newest entry (and beyond the newest
        ``4 * max_kept``). An event arriving later than that may miss its links (it is still folded into every
        other sum exactly)."""
        entries = table.setdefault(user_id, [])
        bisect.insort(entries, entry)
        horizon = entries[-1][0] - self.retain_s - self.spec.search_window_s
        if entries[0][0] < horizon or len(entries) > 4 * self.max_kept:
            del entries[: max(bisect.bisect_left(entries, (horizon,)), len(entries) - 4 * self.max_kept)]

    def _fold_search(self, event: Event) -> None:
        """Link the user's engagements in the window after the search to it where it is now their latest search
        (moving each such link from the search it replaces)."""
        t, window = event.timestamp_s, self.spec.search_window_s
        searches = self._searches.get(event.user_id)
        entry = (t, event.query_terms)
        engaged = self._engaged.get(event.user_id, ())
        for when, item_id, positive in engaged[bisect.bisect_right(engaged, (t, "\uffff")) :]:
            if when > t + window:
                break
            if when <= t:
                continue
            replaced = self._latest_search(searches, when)
            if replaced is None or replaced < entry:
                if replaced is not None:
                    self._link(when, replaced[1], item_id, positive, sign=-1.0)
                self._link(when, event.query_terms, item_id, positive)
        self._recent(self._searches, event.user_id, entry)

    def _fold_engagement(self, event: Event, positive: float) -> None:
        """Link the engagement to the user's latest search in the window before it, if any."""
        t = event.timestamp_s
        latest = self._latest_search(self._searches.get(event.user_id), t)
        if latest is not None:
            self._link(t, latest[1], event.item_id, positive)
        self._recent(self._engaged, event.user_id, (t, event.item_id, positive))

    def _user_increments(self, type_index: int, positive: float, rating: float) -> tuple[float, ...]:
        key = (type_index, positive, rating)
        found = self._increments.get(key)
        if found is None:
            if len(self._increments) > 10_000:  # ratings take few distinct values; never let this grow
                self._increments.clear()
            one_hot = [0.0] * len(EVENT_TYPES)
            one_hot[type_index] = 1.0
            counted = 1.0 if type_index == _TYPE_INDEX["rating"] else 0.0
            found = self._increments[key] = (*one_hot, *one_hot, positive, 1.0, rating, counted)
        return found

    @staticmethod
    def _series(table: dict, key: object, size: int) -> _Series:  # type: ignore[type-arg]
        found = table.get(key)
        if found is None:
            found = table[key] = _Series(size)
        return found

    def update(self, event: Event) -> None:
        """Fold one event in, at its own time (any order of updates gives the same state)."""
        t = event.timestamp_s
        user_id, item_id = event.user_id, event.item_id
        positive = 1.0 if self.spec.is_positive(event.event_type, event.value) else 0.0
        is_rating = event.event_type == "rating"
        rating = event.value if is_rating else 0.0
        counted = 1.0 if is_rating else 0.0
        retain, kept = self.retain_s, self.max_kept
        if self.retrieval is not None:
            self.retrieval.fold(event, positive > 0)
        user_inc = self._user_increments(_TYPE_INDEX[event.event_type], positive, rating)
        self._series(self._user, user_id, len(user_inc)).add(t, user_inc, self._user_taus, retain, kept)
        self.events_folded += 1
        if event.event_type == "search":
            self._fold_search(event)
            return
        self._fold_engagement(event, positive)
        self._series(self._item, item_id, 5).add(t, self._item_increment(event), self._item_taus, retain, kept)
        self._table.changed(item_id)
        self._series(self._ui, (user_id, item_id), 2).add(t, (1.0, positive), self._ui_taus, retain, kept)
        catalogued = self.catalog.get(item_id)
        uc_inc = (1.0, positive, rating, counted, 1.0)
        for category in catalogued.categories if catalogued is not None else ("unknown",):
            self._series(self._uc, (user_id, category), 5).add(t, uc_inc, self._uc_taus, retain, kept)

    def _item_increment(self, event: Event) -> tuple[float, ...]:
        """What one event adds to its item's sums: all short, all long, positives long, rating total and count."""
        positive = 1.0 if self.spec.is_positive(event.event_type, event.value) else 0.0
        is_rating = event.event_type == "rating"
        return (1.0, 1.0, positive, event.value if is_rating else 0.0, 1.0 if is_rating else 0.0)

    def forget(self, user_id: str, events: Iterable[Event]) -> None:
        """Erase a user: their own sums (user, user x category, user x item), served lists' times and attribute
        tokens go, and their ``events`` are taken out of the items' sums, folded in with the opposite sign at their
        own times (the sums are linear in the events), so every item reads as if those events had never happened."""
        self._user.pop(user_id, None)
        self._served.pop(user_id, None)
        self.users.pop(user_id, None)
        if self.retrieval is not None:
            self.retrieval.forget(user_id)
        for table in (self._uc, self._ui):
            for key in [key for key in table if key[0] == user_id]:
                del table[key]
        own = sorted((e for e in events if e.user_id == user_id), key=lambda e: e.timestamp_s)
        for event in own:
            item = self._item.get(event.item_id)
            if event.event_type != "search" and item is not None:
                negated = tuple(-v for v in self._item_increment(event))
                item.add(event.timestamp_s, negated, self._item_taus, self.retain_s, self.max_kept)
                self._table.changed(event.item_id)
        # Their searches' links to what they engaged with next, made again from their whole history with the
        # opposite sign (the recent lists only reach a few hours back).
        self._searches.pop(user_id, None)
        self._engaged.pop(user_id, None)
        searches = sorted((e.timestamp_s, e.query_terms) for e in own if e.event_type == "search")
        for event in own:
            if event.event_type == "search":
                continue
            latest = self._latest_search(searches, event.timestamp_s)
            if latest is not None:
                positive = 1.0 if self.spec.is_positive(event.event_type, event.value) else 0.0
                self._link(event.timestamp_s, latest[1], event.item_id, positive, sign=-1.0)

    def update_many(self, events: Iterable[Event]) -> None:
        """Fold several events in (their order does not matter)."""
        for event in events:
            self.update(event)

    def row(self, user_id: str, item_id: str, t: float, query_terms: Sequence[str] = ()) -> list[float]:
        """The feature vector of (user, item) at time ``t``, in :data:`FEATURE_NAMES` order."""
        return self.rows(user_id, (item_id,), t, query_terms)[0]

    def _query_part(self, query_terms: Sequence[str], t: float) -> tuple[list[tuple[str, float]], float]:
        """Each query term with its links before ``t``, and their total plus one.

        Link sums are read as at least 0 (here and in :meth:`_query_features`). Forgetting a user takes their
        links out again, and a link that was never made (an engagement that arrived more than ``retain_s`` late
        misses its search) would otherwise leave a negative sum: a logarithm of it, or a division by it, failed.
        """
        totals = []
        for term in query_terms:
            series = self._term.get(term)
            totals.append((term, max(0.0, series.read(t, self._term_taus)[0][0]) if series is not None else 0.0))
        return totals, 1.0 + sum(total for _, total in totals)

    def _query_features(
        self, terms: list[tuple[str, float]], norm: float, item_id: str, categories: Sequence[str], t: float
    ) -> list[float]:
        """query_present, query_text_match, query_item_log_links, query_item_share, query_category_share."""
        if not terms:
            return [0.0, 0.0, 0.0, 0.0, 0.0]
        own = self.item_terms(item_id)
        matched = sum(1 for term, _ in terms if term in own)
        links = category_links = 0.0
        for term, total in terms:
            if total <= 0.0:
                continue
            series = self._term_item.get((term, item_id))
            if series is not None:
                links += series.read(t, self._link_taus)[0][0]
            for category in categories:
                found = self._term_category.get((term, category))
                if found is not None:
                    category_links += found.read(t, self._link_taus)[0][0] / len(categories)
        links, category_links = max(0.0, links), max(0.0, category_links)  # see _query_part
        return [1.0, matched / len(terms), math.log1p(links), links / norm, category_links / norm]

    def _user_part(self, user_id: str, t: float) -> tuple[list[float], float, float, float]:
        """The user's own features at ``t``, and the denominators of the user x category shares: the user's
        positives and events (long window, plus one) and events of the short window (plus one, searches aside)."""
        n = len(EVENT_TYPES)
        spec = self.spec
        user = self._user.get(user_id)
        if user is None:
            u, user_last = [0.0] * (2 * n + 4), -math.inf
        else:
            u, user_last = user.read(t, self._user_taus)
        user_hours = math.log1p((t - user_last) / _SECONDS_PER_HOUR) if user_last != -math.inf else _NEVER_LOG_HOURS
        part = [
            *(math.log1p(v) for v in u[: 2 * n]),
            (u[2 * n] + 0.1 * spec.prior_strength) / (u[2 * n + 1] + spec.prior_strength),
            _smoothed(u[2 * n + 2], u[2 * n + 3], spec.rating_prior, spec.prior_strength),
            user_hours,
        ]
        return part, u[2 * n] + 1.0, u[2 * n + 1] + 1.0, 1.0 + sum(u[:n]) - u[_SEARCH_INDEX]

    def _category_sums(
        self, user_id: str, categories: Sequence[str], t: float, seen: dict[str, tuple[float, ...]]
    ) -> tuple[float, float, float, float, float, float]:
        """The user's sums over an item's categories at ``t``: all events, positives, rating total, rating count,
        all events of the short window, and the last time (each category read once per call: ``seen``)."""
        cat_all = cat_pos = cat_rating_total = cat_rating_n = cat_short = 0.0
        cat_last = -math.inf
        for category in categories:
            stats = seen.get(category)
            if stats is None:
                uc = self._uc.get((user_id, category))
                if uc is None:
                    stats = (0.0, 0.0, 0.0, 0.0, 0.0, -math.inf)
                else:
                    values, last = uc.read(t, self._uc_taus)
                    stats = (*values, last)
                seen[category] = stats
            cat_all += stats[0]
            cat_pos += stats[1]
            cat_rating_total += stats[2]
            cat_rating_n += stats[3]
            cat_short += stats[4]
            cat_last = max(cat_last, stats[5])
        return cat_all, cat_pos, cat_rating_total, cat_rating_n, cat_short, cat_last

    def rows(
        self, user_id: str, item_ids: Sequence[str], t: float, query_terms: Sequence[str] = ()
    ) -> list[list[float]]:
        """Feature vectors of one user with each item at time ``t`` (the user's part is computed once), for a
        search with ``query_terms`` (:func:`~preftrack_gateway.schema.query_terms`) when given. The definition;
        :meth:`matrix` computes the same for many items at once.

        Raises:
            PointInTimeError: ``t`` is not after the history kept for this user or one of the items.
        """
        query, query_norm = self._query_part(query_terms, t)
        spec = self.spec
        prior, strength = spec.rating_prior, spec.prior_strength
        user_part, user_pos, user_all, user_short = self._user_part(user_id, t)
        hour_angle = 2 * math.pi * ((t % _DAY_S) / _DAY_S)
        context_part = [math.sin(hour_angle), math.cos(hour_angle)]
        categories: dict[str, tuple[float, ...]] = {}
        out = []
        for item_id in item_ids:
            item_state = self._item.get(item_id)
            i = item_state.read(t, self._item_taus)[0] if item_state else (0.0, 0.0, 0.0, 0.0, 0.0)
            item = self.item(item_id)
            cat_all, cat_pos, cat_rating_total, cat_rating_n, cat_short, cat_last = self._category_sums(
                user_id, item.categories, t, categories
            )
            n_cats = max(1, len(item.categories))
            ui_state = self._ui.get((user_id, item_id))
            ui = ui_state.read(t, self._ui_taus)[0] if ui_state else (0.0, 0.0)
            out.append(
                [
                    *user_part,
                    math.log1p(i[0]),
                    math.log1p(i[1]),
                    (i[2] + 0.1 * strength) / (i[1] + strength),
                    _smoothed(i[3], i[4], prior, strength),
                    math.log1p(max(0.0, item.price)),
                    (cat_pos / n_cats) / user_pos,
                    (cat_all / n_cats) / user_all,
                    _smoothed(cat_rating_total, cat_rating_n, prior, strength),
                    math.log1p((t - cat_last) / _SECONDS_PER_HOUR) if cat_last != -math.inf else _NEVER_LOG_HOURS,
                    (cat_short / n_cats) / user_short,
                    math.log1p(ui[0]),
                    min(ui[1], 1.0),
                    *context_part,
                    *self._query_features(query, query_norm, item_id, item.categories, t),
                ]
            )
        return out

    def matrix(self, user_id: str, item_ids: Sequence[str], t: float, query_terms: Sequence[str] = ()) -> np.ndarray:
        """:meth:`rows` as one float64 array (a row per item): what Score and Recommend send to Triton. From
        :data:`_VECTORISE_FROM` items on, computed for all the items at once (:meth:`_matrix`; below that, numpy's
        fixed cost per call is more than it saves), equal to :meth:`rows` within floating-point rounding.

        Raises:
            PointInTimeError: as :meth:`rows`.
        """
        if len(item_ids) < _VECTORISE_FROM:
            rows = self.rows(user_id, item_ids, t, query_terms)
            return np.array(rows, dtype=np.float64).reshape(len(item_ids), len(FEATURE_NAMES))
        return self._matrix(user_id, item_ids, t, query_terms)

    def _matrix(self, user_id: str, item_ids: Sequence[str], t: float, query_terms: Sequence[str]) -> np.ndarray:
        """:meth:`matrix` for many items (the point-in-time property test checks it against :meth:`rows` on every
        history it generates, refusals included, and while events arrive).

        An item's sums at a time after its newest event are its sums at one earlier time, each decayed by its own
        time constant: they are kept per item in a table (:class:`_ItemTable`) until the item's history changes,
        with its price and categories, so a read at the present gathers rows and multiplies; only an item read
        before its newest event searches its history.
        """
        n_items = len(item_ids)
        spec = self.spec
        prior, strength = spec.rating_prior, spec.prior_strength
        query, query_norm = self._query_part(query_terms, t)
        user_part, user_pos, user_all, user_short = self._user_part(user_id, t)
        table, taus = self._table, self._item_taus
        rows = np.array(table.rows(self, item_ids), dtype=np.intp)
        sums = table.sums[rows] * np.exp(-(t - table.probe[rows])[:, None] / np.array(taus.values))
        for k in np.flatnonzero(table.latest[rows] >= t):  # read at or before the item's newest event
            sums[k] = self._item[item_ids[k]].read(t, taus)[0]
        # The user's sums over an item's categories (with their last time and how many), once per distinct set.
        distinct, which = np.unique(table.group[rows], return_inverse=True)
        seen: dict[str, tuple[float, ...]] = {}
        stats = [
            (*self._category_sums(user_id, table.categories[number], t, seen), max(1, len(table.categories[number])))
            for number in distinct.tolist()
        ]
        cat = np.array(stats, dtype=np.float64).reshape(len(stats), 7)[which.reshape(-1)]
        n_cats, cat_last = cat[:, 6], cat[:, 5]
        ui_sums = np.zeros((n_items, 2))
        ui_table = self._ui.get
        for k, ui_state in enumerate([ui_table((user_id, item_id)) for item_id in item_ids]):
            if ui_state is not None:
                ui_sums[k] = ui_state.read(t, self._ui_taus)[0]
        out = np.empty((n_items, len(FEATURE_NAMES)))
        out[:, : len(user_part)] = user_part
        c = len(user_part)
        out[:, c] = np.log1p(sums[:, 0])
        out[:, c + 1] = np.log1p(sums[:, 1])
        out[:, c + 2] = (sums[:, 2] + 0.1 * strength) / (sums[:, 1] + strength)
        out[:, c + 3] = _smoothed_array(sums[:, 3], sums[:, 4], prior, strength)
        out[:, c + 4] = table.log_price[rows]
        out[:, c + 5] = (cat[:, 1] / n_cats) / user_pos
        out[:, c + 6] = (cat[:, 0] / n_cats) / user_all
        out[:, c + 7] = _smoothed_array(cat[:, 2], cat[:, 3], prior, strength)
        known = cat_last != -math.inf
        out[:, c + 8] = _NEVER_LOG_HOURS
        out[known, c + 8] = np.log1p((t - cat_last[known]) / _SECONDS_PER_HOUR)
        out[:, c + 9] = (cat[:, 4] / n_cats) / user_short
        out[:, c + 10] = np.log1p(ui_sums[:, 0])
        out[:, c + 11] = np.minimum(ui_sums[:, 1], 1.0)
        hour_angle = 2 * math.pi * ((t % _DAY_S) / _DAY_S)
        out[:, c + 12] = math.sin(hour_angle)
        out[:, c + 13] = math.cos(hour_angle)
        if query:
            out[:, c + 14 :] = [
                self._query_features(query, query_norm, item_id, self.item(item_id).categories, t)
                for item_id in item_ids
            ]
        else:
            out[:, c + 14 :] = 0.0
        return out


#: From this many items on, :meth:`FeatureState.matrix` computes all rows at once (measured with the item table:
#: 1,000 items 0.7 ms against 8.2 ms one by one; 24 items 0.17 against 0.15 ms; 40 items 0.18 against 0.25 ms).
_VECTORISE_FROM = 25


def _smoothed_array(total: np.ndarray, count: np.ndarray, prior: float, strength: float) -> np.ndarray:
    """:func:`_smoothed` of arrays."""
    return np.where(count < 0.5, 0.0, (total + prior * strength) / (count + strength) - prior)


def _smoothed(total: float, count: float, prior: float, strength: float) -> float:
    """A rating average shrunk towards ``prior``, minus the prior (0.0 with no ratings).

    >>> round(_smoothed(10.0, 2.0, 3.5, 5.0), 4), _smoothed(0.0, 0.0, 3.5, 5.0)
    (0.4286, 0.0)
    """
    if count < 0.5:
        return 0.0
    return (total + prior * strength) / (count + strength) - prior
