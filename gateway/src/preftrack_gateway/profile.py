"""A user's preference profile that a merchandiser or CRM analyst can read, and a per-user change detector.

:func:`build_profile` turns one user's events into shares of engagement per category, attribute value
(``brand=Acme``) and item, each with a short- and a long-horizon share and whether it is rising or falling,
plus the moments the user's taste in categories shifted. :func:`category_history` gives the category shares
at evenly spaced times, for a plot. Both are pure functions of the events strictly before ``as_of_s`` (like
:mod:`preftrack_gateway.features`): the answer never depends on later events nor on the order the events come
in (they are sorted by ``(timestamp_s, event_id)`` and de-duplicated by ``event_id`` here).

**Horizons count events, not seconds.** A preference is revealed one action at a time, and users' activity
rates differ by orders of magnitude: a seven-day window holds a daily shopper's last hundred clicks and a
monthly shopper's nothing. So each item event (any type but ``search``) ages the earlier ones by one step, and
a share "over the short horizon" weighs an event ``k`` steps back by ``exp(-k / short_horizon_events)``.
Shares are ratios of such sums, so they do not move while the user is idle.

**Change detector.** An adaptive CUSUM over the user's *looks*: a look is a run of consecutive events on one
item (a view and the click, add to cart and purchase that follow it), one observation of where their attention
went. The reference is the user's engagement share per category in the current regime (long horizon, smoothed,
with some mass for browsing anywhere in the shop); the alternative is the share in the current excursion (the
looks since the statistic was last zero), predicted before each look from a Dirichlet prior, so the sum of log
ratios is a log Bayes factor of "these recent looks come from new tastes" against "they come from the old
ones", each look's term scaled by its engagement. A warm-up keeps a user's first looks from being a shift. When
the statistic crosses its threshold a :class:`Shift` is reported at that event and the regime is re-based on
the excursion's first event (the estimated change point): the profile's ``score`` then counts only the events
since then, so it follows the new tastes at once instead of a long horizon later.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from preftrack_gateway.schema import EVENT_TYPES, Event, Item

_UNKNOWN_CATEGORY = "unknown"
# Keep exp() of the detector's lazily scaled sums far from overflow: rescale once the exponent passes this.
_MAX_EXPONENT = 200.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileSpec:
    """What a profile means: engagement weights, horizons and the change detector's parameters.

    Attributes:
        view_weight: engagement of a ``view``.
        click_weight: engagement of a ``click``.
        add_to_cart_weight: engagement of an ``add_to_cart``.
        purchase_weight: engagement of a ``purchase``.
        rating_weight: engagement of a ``rating`` at or above ``rating_threshold`` (a liked item).
        low_rating_weight: engagement of a ``rating`` below ``rating_threshold`` (0: a disliked item is no
            preference for its category; shares cannot go negative).
        rating_threshold: a rating at or above this is a liked item (as :class:`~.features.FeatureSpec`).
        short_horizon_events: time constant, in item events, of the "recent" shares (the synthetic shop's
            sessions hold about ten events: the last session or two).
        long_horizon_events: time constant, in item events, of the "long-term" shares and of the regime share
            that is the profile's ``score`` (longer than most users' whole history there: a taste that has not
            shifted is best estimated from all of it).
        trend_threshold: a key whose short share exceeds its long share by at least this is ``rising`` (by at
            most minus this: ``falling``); ``steady`` in between.
        detector_warmup_looks: the detector tests nothing until the regime's reference holds this many looks (a
            look: consecutive events on one item), so a new user's first events, or the first ones after a
            shift, are no shift.
        detector_threshold: the CUSUM statistic (a log Bayes factor, evidence scaled by look weights) at which a
            shift is declared; larger: fewer false alarms, later detections.
        detector_prior: pseudo-engagement per category of the Dirichlet prior on the tastes after a change
            (larger: the new tastes must show more consistency before they count as evidence).
        detector_reference_prior: pseudo-engagement per category smoothing the reference distribution.
        detector_browsing: share of the reference given to browsing anywhere (uniform over the shop's
            categories), so a stray look outside the favourites is cheap evidence.
        detector_weight_power: a look's evidence is scaled by its engagement weight to this power: a purchase
            says more about tastes than a view, but not eight times more.
        shop_categories: how many categories the shop has: "browsing anywhere" is uniform over them (or over
            the categories the user touched, when more). ``None``: count them in the catalogue, once per call
            for a user past the warm-up (about 80 ms per million items); set it when the catalogue is large.
        shift_top: how many categories a :class:`Shift` lists before and after.
    """

    view_weight: float = 1.0
    click_weight: float = 2.0
    add_to_cart_weight: float = 4.0
    purchase_weight: float = 8.0
    rating_weight: float = 6.0
    low_rating_weight: float = 0.0
    rating_threshold: float = 4.0
    short_horizon_events: float = 15.0
    long_horizon_events: float = 150.0
    trend_threshold: float = 0.1
    detector_warmup_looks: int = 10
    detector_threshold: float = 10.0
    detector_prior: float = 2.0
    detector_reference_prior: float = 1.0
    detector_browsing: float = 0.2
    detector_weight_power: float = 0.5
    shop_categories: int | None = None
    shift_top: int = 3

    def __post_init__(self) -> None:
        weights = (
            self.view_weight,
            self.click_weight,
            self.add_to_cart_weight,
            self.purchase_weight,
            self.rating_weight,
            self.low_rating_weight,
        )
        if any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError("engagement weights must be finite and >= 0")
        if not 0 < self.short_horizon_events <= self.long_horizon_events:
            raise ValueError("horizons must satisfy 0 < short_horizon_events <= long_horizon_events")
        if not 0 <= self.trend_threshold <= 1:
            raise ValueError("trend_threshold must lie in [0, 1]")
        if self.detector_warmup_looks < 1 or self.detector_threshold <= 0:
            raise ValueError("detector_warmup_looks must be >= 1 and detector_threshold > 0")
        if not 0 <= self.detector_weight_power <= 1:
            raise ValueError("detector_weight_power must lie in [0, 1]")
        if self.detector_prior <= 0 or self.detector_reference_prior <= 0:
            raise ValueError("detector priors must be > 0")
        if not 0 < self.detector_browsing < 1:
            raise ValueError("detector_browsing must lie in (0, 1)")
        if self.shop_categories is not None and self.shop_categories < 1:
            raise ValueError("shop_categories must be >= 1 (or None)")
        if self.shift_top < 1:
            raise ValueError("shift_top must be >= 1")

    def weight(self, event_type: str, value: float) -> float:
        """An event's engagement weight (0 for a ``search`` and for types this spec does not know).

        >>> spec = ProfileSpec()
        >>> spec.weight("purchase", 1.0), spec.weight("rating", 5.0), spec.weight("rating", 2.0)
        (8.0, 6.0, 0.0)
        """
        if event_type == "rating":
            return self.rating_weight if value >= self.rating_threshold else self.low_rating_weight
        return self._type_weights.get(event_type, 0.0)

    @property
    def _type_weights(self) -> dict[str, float]:
        return {
            "view": self.view_weight,
            "click": self.click_weight,
            "add_to_cart": self.add_to_cart_weight,
            "purchase": self.purchase_weight,
        }

    def direction(self, trend: float) -> str:
        """``rising``, ``falling`` or ``steady`` for a short-minus-long share difference.

        >>> ProfileSpec().direction(0.3), ProfileSpec().direction(-0.3), ProfileSpec().direction(0.01)
        ('rising', 'falling', 'steady')
        """
        if trend >= self.trend_threshold:
            return "rising"
        if trend <= -self.trend_threshold:
            return "falling"
        return "steady"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Affinity:
    """A user's engagement with one key (a category, an attribute value such as ``brand=Acme``, an item).

    Attributes:
        key: the category, ``name=value`` attribute, or item id.
        score: the user's current share of engagement on the key, in [0, 1]: the long-horizon share counted
            over the current regime (since the last :class:`Shift`; all history when there was none).
        short: the share over the short horizon (all history).
        long: the share over the long horizon (all history).
        trend: ``short - long``.
        direction: ``rising``, ``falling`` or ``steady`` (see :attr:`ProfileSpec.trend_threshold`).
    """

    key: str
    score: float
    short: float
    long: float
    trend: float
    direction: str


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Shift:
    """A detected change in a user's category tastes.

    Attributes:
        at_s: the time of the event at which the change was detected.
        event_index: that event's position among the profile's ``events_used`` (0-based, time order, searches
            included).
        before: the top categories of the regime before the change, most engaged first.
        after: the top categories of the events since the estimated change point, most engaged first.
    """

    at_s: float
    event_index: int
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Profile:
    """One user's preference profile at ``as_of_s``.

    Attributes:
        as_of_s: only events strictly before this time count.
        events_used: how many distinct events it is built from (searches included: they are counted, but name
            no item, so they add to no share and do not age the others).
        categories: the top categories by ``score``, highest first.
        attributes: the top ``name=value`` attributes by ``score`` (share of item engagement on items that carry
            the attribute; an item's attributes each get its full weight, so these need not sum to 1).
        items: the top items by ``score``.
        shifts: every detected change of category tastes, oldest first.
        last_shift: the latest of ``shifts``, or ``None``.
    """

    as_of_s: float
    events_used: int
    categories: tuple[Affinity, ...]
    attributes: tuple[Affinity, ...]
    items: tuple[Affinity, ...]
    shifts: tuple[Shift, ...]
    last_shift: Shift | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Engaged:
    """A user's events, time-ordered: how many, and their item events (all but searches) as parallel sequences."""

    n_events: int  # searches included
    indices: list[int]  # each item event's position among all the events
    times_s: list[float]
    weights: np.ndarray  # engagement weight per item event
    items: list[str]
    categories: list[tuple[str, ...]]
    attributes: list[tuple[str, ...]]  # "name=value" keys


def _prepare(events: Iterable[Event], catalog: Mapping[str, Item], as_of_s: float, spec: ProfileSpec) -> _Engaged:
    """Events strictly before ``as_of_s``, de-duplicated by ``event_id``, in (timestamp, event_id) order.

    Counted: item events of the known types, and searches (which name no item); anything else is malformed.
    """
    by_id: dict[str, Event] = {}
    user_ids: set[str] = set()
    for event in events:
        if not event.timestamp_s < as_of_s or event.event_type not in EVENT_TYPES:
            continue
        if (event.event_type == "search") == bool(event.item_id):
            continue  # a search naming an item, or an item event naming none
        user_ids.add(event.user_id)
        seen = by_id.get(event.event_id)
        # A re-sent event_id is one event; should two differ, the same one wins whatever the order.
        if seen is None or _tiebreak(event) < _tiebreak(seen):
            by_id[event.event_id] = event
    if len(user_ids) > 1:
        raise ValueError(f"a profile is built from one user's events; got {len(user_ids)} users")
    ordered = sorted(by_id.values(), key=lambda e: (e.timestamp_s, e.event_id))
    indices = [index for index, event in enumerate(ordered) if event.item_id]
    engaged = [ordered[index] for index in indices]
    items, categories, attributes = [], [], []
    cache: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for event in engaged:
        found = cache.get(event.item_id)
        if found is None:
            item = catalog.get(event.item_id)
            if item is None:
                found = ((_UNKNOWN_CATEGORY,), ())
            else:
                cats = tuple(dict.fromkeys(item.categories)) or (_UNKNOWN_CATEGORY,)
                found = (cats, tuple(f"{name}={value}" for name, value in item.attributes))
            cache[event.item_id] = found
        items.append(event.item_id)
        categories.append(found[0])
        attributes.append(found[1])
    weights = np.array([spec.weight(e.event_type, e.value) for e in engaged], dtype=np.float64)
    times_s = [e.timestamp_s for e in engaged]
    return _Engaged(len(ordered), indices, times_s, weights, items, categories, attributes)


def _tiebreak(event: Event) -> tuple[float, str, str, float]:
    return (event.timestamp_s, event.event_type, event.item_id, event.value)


class _Decayed:
    """Sums decayed by one step per item event: ``sum(w_i * exp(-(now - i) / horizon))``, kept lazily scaled."""

    __slots__ = ("origin", "rate", "total", "values")

    def __init__(self, horizon: float) -> None:
        self.rate = 1.0 / horizon
        self.origin = 0
        self.values: dict[str, float] = {}
        self.total = 0.0

    def add(self, key: str, amount: float, at: int) -> None:
        exponent = (at - self.origin) * self.rate
        if exponent > _MAX_EXPONENT:
            factor = math.exp(-exponent)
            self.values = {k: v * factor for k, v in self.values.items()}
            self.total *= factor
            self.origin, exponent = at, 0.0
        scaled = amount * math.exp(exponent)
        self.values[key] = self.values.get(key, 0.0) + scaled
        self.total += scaled

    def shares(self) -> dict[str, float]:
        """Each key's share of the total (the scale cancels)."""
        total = self.total
        return {k: v / total for k, v in self.values.items()} if total > 0 else {}

    def scale(self, at: int) -> float:
        """The factor that turns the stored sums into their values seen from position ``at``."""
        return math.exp(-(at - self.origin) * self.rate)


def _top(shares: Mapping[str, float], n: int) -> tuple[str, ...]:
    ranked = sorted(((-v, k) for k, v in shares.items() if v > 0))
    return tuple(k for _, k in ranked[:n])


class _Detector:
    """The adaptive CUSUM over a user's looks at items (see the module docstring), fed one event at a time.

    A *look* is a run of consecutive events on one item (a view, then its click, add to cart and purchase): one
    observation of where the user's attention went, weighing as much as its events' engagement, and evidence in
    proportion to that weight to the power ``detector_weight_power``. Counting a view and its funnel as four
    independent observations made a single purchase of a random item look like a change of tastes.
    """

    def __init__(self, data: _Engaged, spec: ProfileSpec, catalog: Mapping[str, Item]) -> None:
        self.data, self.spec, self._catalog = data, spec, catalog
        self._shop_categories = spec.shop_categories
        self.shifts: list[Shift] = []
        # Per shift, in item-event positions: where it was detected, and the estimated change point (its regime's
        # first event).
        self.detected_at: list[int] = []
        self.starts: list[int] = []
        self.seen: set[str] = set()
        self._reference = _Decayed(spec.long_horizon_events)
        self._reference_looks = 0
        self._run: list[int] = []  # the current excursion's events
        self._run_looks = 0
        self._run_counts: dict[str, float] = {}
        self._run_total = 0.0
        self.statistic = 0.0
        self._look_item: str | None = None
        self._look_weight = 0.0
        self._look_evidence = 0.0  # log(q / p) of the current look's categories, fixed at its first event
        self._look_in_run = False

    def _to_reference(self, position: int) -> None:
        weight = self.data.weights[position]
        cats = self.data.categories[position]
        for category in cats:
            self._reference.add(category, weight / len(cats), position)

    def _to_run(self, position: int) -> None:
        weight = self.data.weights[position]
        cats = self.data.categories[position]
        for category in cats:
            self._run_counts[category] = self._run_counts.get(category, 0.0) + weight / len(cats)
        self._run_total += weight
        self._run.append(position)

    def _evidence(self, cats: tuple[str, ...], position: int) -> float:
        """log(q / p) of a look at these categories: new tastes (the run's) against the reference."""
        if self._shop_categories is None:  # counted once, and only for a user past the warm-up
            self._shop_categories = len({c for item in self._catalog.values() for c in item.categories})
        spec, n_seen = self.spec, max(self._shop_categories, len(self.seen))
        alpha, beta, browsing = spec.detector_reference_prior, spec.detector_prior, spec.detector_browsing
        scale = self._reference.scale(position)
        reference_total = self._reference.total * scale
        evidence = 0.0
        for category in cats:
            share = (self._reference.values.get(category, 0.0) * scale + alpha) / (reference_total + alpha * n_seen)
            p = (1.0 - browsing) * share + browsing / n_seen
            q = (self._run_counts.get(category, 0.0) + beta) / (self._run_total + beta * n_seen)
            evidence += math.log(q / p) / len(cats)
        return evidence

    def step(self, position: int) -> None:
        """Fold in the event at ``position`` (events come in time order)."""
        data, spec = self.data, self.spec
        weight = float(data.weights[position])
        if weight <= 0:
            return
        power = spec.detector_weight_power
        if data.items[position] == self._look_item:  # the same look goes on: more weight, same evidence
            before, self._look_weight = self._look_weight, self._look_weight + weight
            if not self._look_in_run:
                # A look that did not start or extend an excursion has evidence <= 0: it confirms the reference.
                self._to_reference(position)
                return
            self.statistic += (self._look_weight**power - before**power) * self._look_evidence
            self._to_run(position)
        else:
            cats = data.categories[position]
            self._look_item, self._look_weight = data.items[position], weight
            self.seen.update(cats)
            if self._reference_looks < spec.detector_warmup_looks:  # warming up: the reference grows, no test
                self._reference_looks += 1
                self._look_in_run = False
                self._to_reference(position)
                return
            self._look_evidence = self._evidence(cats, position)
            self.statistic += weight**power * self._look_evidence
            self._look_in_run = True
            self._run_looks += 1
            self._to_run(position)
        if self.statistic <= 0.0:  # the excursion is over: its looks confirm the reference
            for earlier in self._run:
                self._to_reference(earlier)
            self._reference_looks += self._run_looks
            self._clear_run()
        elif self.statistic >= spec.detector_threshold:
            self._detected(position)

    def _clear_run(self) -> None:
        self._run, self._run_looks, self._run_counts, self._run_total = [], 0, {}, 0.0
        self.statistic = 0.0
        self._look_in_run = False

    def _detected(self, position: int) -> None:
        total = self._run_total
        self.shifts.append(
            Shift(
                at_s=self.data.times_s[position],
                event_index=self.data.indices[position],
                before=_top(self._reference.shares(), self.spec.shift_top),
                after=_top({k: v / total for k, v in self._run_counts.items()}, self.spec.shift_top),
            )
        )
        self.detected_at.append(position)
        self.starts.append(self._run[0])
        # Re-base: the excursion, which began at the estimated change point, is the new regime's reference.
        self._reference = _Decayed(self.spec.long_horizon_events)
        for earlier in self._run:
            self._to_reference(earlier)
        self._reference_looks = self._run_looks
        self._clear_run()


def _detect(data: _Engaged, spec: ProfileSpec, catalog: Mapping[str, Item]) -> _Detector:
    """Run the change detector over the events."""
    detector = _Detector(data, spec, catalog)
    for position in range(len(data.items)):
        detector.step(position)
    return detector


def _facet(keys: Sequence[tuple[str, ...]], *, split: bool) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Flatten per-event keys into (vocabulary, event position, key index, fraction of the event's weight)."""
    vocabulary: dict[str, int] = {}
    positions, indices, fractions = [], [], []
    for position, event_keys in enumerate(keys):
        share = 1.0 / len(event_keys) if split and event_keys else 1.0
        for key in event_keys:
            positions.append(position)
            indices.append(vocabulary.setdefault(key, len(vocabulary)))
            fractions.append(share)
    return (
        list(vocabulary),
        np.asarray(positions, dtype=np.int64),
        np.asarray(indices, dtype=np.int64),
        np.asarray(fractions, dtype=np.float64),
    )


def _shares(
    weights: np.ndarray,
    facet: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
    *,
    end: int,
    horizon: float,
    regime_start: int = 0,
) -> np.ndarray:
    """Each key's decayed share of the engagement of the events in ``[regime_start, end)``, seen from the last."""
    vocabulary, positions, indices, fractions = facet
    decay = np.exp(-(end - 1 - np.arange(end)) / horizon) * weights[:end]
    decay[:regime_start] = 0.0
    total = float(decay.sum())
    if total <= 0:
        return np.zeros(len(vocabulary))
    mask = positions < end
    amount = fractions[mask] * decay[positions[mask]]
    return np.bincount(indices[mask], weights=amount, minlength=len(vocabulary)) / total


def _affinities(
    data: _Engaged,
    facet: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
    spec: ProfileSpec,
    *,
    regime_start: int,
    top: int,
) -> tuple[Affinity, ...]:
    end = len(data.items)
    long_horizon = spec.long_horizon_events
    score = _shares(data.weights, facet, end=end, horizon=long_horizon, regime_start=regime_start)
    short = _shares(data.weights, facet, end=end, horizon=spec.short_horizon_events)
    long = _shares(data.weights, facet, end=end, horizon=long_horizon)
    order = sorted(range(len(facet[0])), key=lambda j: (-score[j], -long[j], facet[0][j]))
    out = []
    for j in order[:top]:
        if score[j] <= 0 and long[j] <= 0:
            break
        trend = float(short[j] - long[j])
        out.append(
            Affinity(
                key=facet[0][j],
                score=float(score[j]),
                short=float(short[j]),
                long=float(long[j]),
                trend=trend,
                direction=spec.direction(trend),
            )
        )
    return tuple(out)


def build_profile(
    events: Iterable[Event],
    catalog: Mapping[str, Item],
    *,
    as_of_s: float,
    spec: ProfileSpec | None = None,
    top: int = 5,
) -> Profile:
    """Build one user's preference profile from the events strictly before ``as_of_s``.

    Args:
        events: the user's events, in any order (re-sent ``event_id``\\ s count once; ``search`` events name
            no item and are skipped).
        catalog: item id -> :class:`Item`; an unknown item has the category ``unknown`` and no attributes.
        as_of_s: the point in time the profile describes.
        spec: weights, horizons and detector parameters.
        top: how many categories, attributes and items to return.

    Raises:
        ValueError: the events belong to more than one user, or ``top`` < 1.

    >>> events = [Event(event_id=f"e{i}", user_id="u", item_id="i1", event_type="view", timestamp_s=i)
    ...           for i in range(3)]
    >>> profile = build_profile(events, {"i1": Item(item_id="i1", categories=("shoes",))}, as_of_s=2.0)
    >>> profile.events_used, profile.categories[0].key, profile.categories[0].score
    (2, 'shoes', 1.0)
    """
    if top < 1:
        raise ValueError("top must be >= 1")
    spec = spec or ProfileSpec()
    data = _prepare(events, catalog, as_of_s, spec)
    detector = _detect(data, spec, catalog)
    shifts = detector.shifts
    regime_start = detector.starts[-1] if detector.starts else 0

    def facet_affinities(keys: Sequence[tuple[str, ...]], *, split: bool) -> tuple[Affinity, ...]:
        return _affinities(data, _facet(keys, split=split), spec, regime_start=regime_start, top=top)

    return Profile(
        as_of_s=as_of_s,
        events_used=data.n_events,
        categories=facet_affinities(data.categories, split=True),
        attributes=facet_affinities(data.attributes, split=False),
        items=facet_affinities([(item,) for item in data.items], split=False),
        shifts=tuple(shifts),
        last_shift=shifts[-1] if shifts else None,
    )


def category_history(
    events: Iterable[Event],
    catalog: Mapping[str, Item],
    *,
    points: int,
    spec: ProfileSpec | None = None,
    as_of_s: float = math.inf,
) -> list[tuple[float, dict[str, float]]]:
    """Category shares (each category's ``score``) at ``points`` evenly spaced times, for a plot.

    The times run from the user's first item event to just after their last one (before ``as_of_s``); the
    shares at a time ``t`` are the scores ``build_profile(events, catalog, as_of_s=t)`` reports for every
    category. The detector runs once; 10,000 events and 200 points take about as long as one profile.

    Args:
        events: the user's events, in any order.
        catalog: item id -> :class:`Item`.
        points: how many times (>= 2).
        spec: weights, horizons and detector parameters.
        as_of_s: ignore events at or after this time.

    Returns:
        ``(t, {category: share})`` pairs in time order; no pairs when the user has no item events.
    """
    if points < 2:
        raise ValueError("points must be >= 2")
    spec = spec or ProfileSpec()
    data = _prepare(events, catalog, as_of_s, spec)
    if not data.times_s:
        return []
    detector = _detect(data, spec, catalog)
    facet = _facet(data.categories, split=True)
    first, last = data.times_s[0], data.times_s[-1]
    times = np.linspace(first, math.nextafter(last, math.inf), points)
    ends = np.searchsorted(np.asarray(data.times_s), times, side="left")
    out = []
    for t, end in zip(times.tolist(), ends.tolist(), strict=True):
        # The regime at time t: the latest shift detected on an event before t.
        k = int(np.searchsorted(detector.detected_at, end, side="left"))
        start = detector.starts[k - 1] if k else 0
        shares = _shares(data.weights, facet, end=end, horizon=spec.long_horizon_events, regime_start=start)
        out.append((t, {facet[0][j]: float(v) for j, v in enumerate(shares) if v > 0}))
    return out
