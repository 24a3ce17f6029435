"""Behaviour features: the single definition used online (gateway) and offline (trainer).

A :class:`FeatureState` folds events in time order and answers "what are the features of (user, item)
right now?". The trainer replays history through the same class, reading each example's features *before*
the example's own event is folded in, so a training row never sees its own future; the gateway folds each
committed event in as it arrives, so the next Score already reflects it. Because both use this module,
training-time and serving-time features cannot disagree.

Windows are exponentially decayed counters (a count "over the last ~day" is a counter with a one-day time
constant): they update in O(1) per event, need no event log at read time, and are exact for any read time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Sequence

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
    """

    short_window_s: float = _DAY_S
    long_window_s: float = 30 * _DAY_S
    positive_types: tuple[str, ...] = ("add_to_cart", "purchase")
    rating_threshold: float = 4.0
    rating_prior: float = 3.5
    prior_strength: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.short_window_s <= self.long_window_s:
            raise ValueError("windows must satisfy 0 < short_window_s <= long_window_s")
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
        return cls(**values)  # type: ignore[arg-type]

    def schema_hash(self) -> str:
        """Hash of the feature names and parameters; a model only serves features with the same hash."""
        blob = json.dumps({"names": FEATURE_NAMES, "spec": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    "user_item_log_count",
    "user_item_positive",
    "context_hour_sin",
    "context_hour_cos",
)
NUM_FEATURES = len(FEATURE_NAMES)
_TYPE_INDEX = {name: index for index, name in enumerate(EVENT_TYPES)}

# log1p(hours) used when something never happened: about a year.
_NEVER_LOG_HOURS = math.log1p(24 * 365)


class _Decayed:
    """A vector of exponentially decayed counters sharing one clock."""

    __slots__ = ("t", "values")

    def __init__(self, size: int) -> None:
        self.values = [0.0] * size
        self.t = -math.inf

    def add(self, t: float, increments: Sequence[float], taus: Sequence[float]) -> None:
        values = self.values
        if self.t != -math.inf and t > self.t:
            dt = t - self.t
            factors: dict[float, float] = {}  # few distinct time constants: one exp each
            for k, tau in enumerate(taus):
                factor = factors.get(tau)
                if factor is None:
                    factor = factors[tau] = math.exp(-dt / tau)
                values[k] = values[k] * factor + increments[k]
        else:
            for k, increment in enumerate(increments):
                values[k] += increment
        self.t = max(self.t, t)

    def read(self, t: float, taus: Sequence[float]) -> list[float]:
        if self.t == -math.inf or t <= self.t:
            return list(self.values)
        dt = t - self.t
        return [v * math.exp(-dt / tau) for v, tau in zip(self.values, taus, strict=True)]


class _Mean:
    """A running sum and count, for smoothed averages."""

    __slots__ = ("n", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.n = 0

    def add(self, value: float) -> None:
        self.total += value
        self.n += 1

    def smoothed(self, prior: float, strength: float) -> float:
        return (self.total + prior * strength) / (self.n + strength) - prior


class FeatureState:
    """Per-user, per-item and per-(user, category) aggregates folded from events in time order.

    Args:
        spec: what the features mean.
        catalog: item id -> :class:`Item`; unknown items get the ``unknown`` category and price 0.
    """

    def __init__(self, spec: FeatureSpec | None = None, catalog: dict[str, Item] | None = None) -> None:
        self.spec = spec or FeatureSpec()
        self.catalog: dict[str, Item] = dict(catalog or {})
        s, lw = self.spec.short_window_s, self.spec.long_window_s
        n = len(EVENT_TYPES)
        # user vector: counts short (n) + counts long (n) + positives long + total long
        self._user_taus = (s,) * n + (lw,) * n + (lw, lw)
        # item vector: all events short, all events long, positives long
        self._item_taus = (s, lw, lw)
        # user x category: all events long, positives long
        self._uc_taus = (lw, lw)
        self._ui_taus = (lw, lw)
        self._user: dict[str, _Decayed] = {}
        self._user_rating: dict[str, _Mean] = {}
        self._item: dict[str, _Decayed] = {}
        self._item_rating: dict[str, _Mean] = {}
        self._uc: dict[tuple[str, str], _Decayed] = {}
        self._uc_rating: dict[tuple[str, str], _Mean] = {}
        self._ui: dict[tuple[str, str], _Decayed] = {}
        self.events_folded = 0
        self._increments: dict[tuple[int, float], tuple[float, ...]] = {}

    def item(self, item_id: str) -> Item:
        """The catalogue entry of an item (a default one when unknown)."""
        found = self.catalog.get(item_id)
        return found if found is not None else Item(item_id=item_id)

    def upsert_item(self, item: Item) -> None:
        """Add or replace a catalogue entry."""
        self.catalog[item.item_id] = item

    def _user_increments(self, type_index: int, positive: float) -> tuple[float, ...]:
        key = (type_index, positive)
        found = self._increments.get(key)
        if found is None:
            one_hot = [0.0] * len(EVENT_TYPES)
            one_hot[type_index] = 1.0
            found = self._increments[key] = (*one_hot, *one_hot, positive, 1.0)
        return found

    def update(self, event: Event) -> None:
        """Fold one event in. Events must arrive in (roughly) time order."""
        t = event.timestamp_s
        user_id, item_id = event.user_id, event.item_id
        positive = 1.0 if self.spec.is_positive(event.event_type, event.value) else 0.0
        increments = self._user_increments(_TYPE_INDEX[event.event_type], positive)
        pair = (1.0, positive)
        user = self._user.get(user_id)
        if user is None:
            user = self._user[user_id] = _Decayed(len(increments))
        user.add(t, increments, self._user_taus)
        item = self._item.get(item_id)
        if item is None:
            item = self._item[item_id] = _Decayed(3)
        item.add(t, (1.0, 1.0, positive), self._item_taus)
        ui = self._ui.get((user_id, item_id))
        if ui is None:
            ui = self._ui[(user_id, item_id)] = _Decayed(2)
        ui.add(t, pair, self._ui_taus)
        rating = event.event_type == "rating"
        catalogued = self.catalog.get(item_id)
        for category in catalogued.categories if catalogued is not None else ("unknown",):
            key = (user_id, category)
            uc = self._uc.get(key)
            if uc is None:
                uc = self._uc[key] = _Decayed(2)
            uc.add(t, pair, self._uc_taus)
            if rating:
                self._uc_rating.setdefault(key, _Mean()).add(event.value)
        if rating:
            self._user_rating.setdefault(user_id, _Mean()).add(event.value)
            self._item_rating.setdefault(item_id, _Mean()).add(event.value)
        self.events_folded += 1

    def update_many(self, events: Iterable[Event]) -> None:
        """Fold several events in, in the order given."""
        for event in events:
            self.update(event)

    def row(self, user_id: str, item_id: str, t: float) -> list[float]:
        """The feature vector of (user, item) at time ``t``, in :data:`FEATURE_NAMES` order."""
        return self.rows(user_id, (item_id,), t)[0]

    def rows(self, user_id: str, item_ids: Sequence[str], t: float) -> list[list[float]]:
        """Feature vectors of one user with each item at time ``t`` (the user's part is computed once)."""
        spec = self.spec
        n = len(EVENT_TYPES)
        prior, strength = spec.rating_prior, spec.prior_strength
        user = self._user.get(user_id)
        if user is None:
            u = [0.0] * (2 * n + 2)
            user_hours = _NEVER_LOG_HOURS
        else:
            u = user.read(t, self._user_taus)
            user_hours = math.log1p(max(0.0, t - user.t) / _SECONDS_PER_HOUR)
        user_rating = self._user_rating.get(user_id)
        hour_angle = 2 * math.pi * ((t % _DAY_S) / _DAY_S)
        user_part = [
            *(math.log1p(v) for v in u[: 2 * n]),
            (u[2 * n] + 0.1 * strength) / (u[2 * n + 1] + strength),
            user_rating.smoothed(prior, strength) if user_rating else 0.0,
            user_hours,
        ]
        user_pos, user_all = u[2 * n] + 1.0, u[2 * n + 1] + 1.0
        context_part = [math.sin(hour_angle), math.cos(hour_angle)]
        # (all events, positives, rating total, rating count, last time) per category, computed once.
        categories: dict[str, tuple[float, float, float, int, float]] = {}
        out = []
        for item_id in item_ids:
            item_state = self._item.get(item_id)
            i = item_state.read(t, self._item_taus) if item_state else (0.0, 0.0, 0.0)
            item_rating = self._item_rating.get(item_id)
            item = self.item(item_id)
            cat_all = cat_pos = cat_rating_total = 0.0
            cat_rating_n = 0
            cat_last = -math.inf
            for category in item.categories:
                stats = categories.get(category)
                if stats is None:
                    uc = self._uc.get((user_id, category))
                    values = uc.read(t, self._uc_taus) if uc is not None else (0.0, 0.0)
                    rating = self._uc_rating.get((user_id, category))
                    stats = (
                        values[0],
                        values[1],
                        rating.total if rating else 0.0,
                        rating.n if rating else 0,
                        uc.t if uc is not None else -math.inf,
                    )
                    categories[category] = stats
                cat_all += stats[0]
                cat_pos += stats[1]
                cat_rating_total += stats[2]
                cat_rating_n += stats[3]
                cat_last = max(cat_last, stats[4])
            n_cats = max(1, len(item.categories))
            ui_state = self._ui.get((user_id, item_id))
            ui = ui_state.read(t, self._ui_taus) if ui_state else (0.0, 0.0)
            out.append(
                [
                    *user_part,
                    math.log1p(i[0]),
                    math.log1p(i[1]),
                    (i[2] + 0.1 * strength) / (i[1] + strength),
                    item_rating.smoothed(prior, strength) if item_rating else 0.0,
                    math.log1p(max(0.0, item.price)),
                    (cat_pos / n_cats) / user_pos,
                    (cat_all / n_cats) / user_all,
                    (cat_rating_total + prior * strength) / (cat_rating_n + strength) - prior if cat_rating_n else 0.0,
                    math.log1p(max(0.0, t - cat_last) / _SECONDS_PER_HOUR)
                    if cat_last != -math.inf
                    else _NEVER_LOG_HOURS,
                    math.log1p(ui[0]),
                    min(ui[1], 1.0),
                    *context_part,
                ]
            )
        return out
