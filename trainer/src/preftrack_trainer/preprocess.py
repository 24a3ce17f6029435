"""Cleaning and point-in-time correct example building.

:func:`clean` removes what a real tracker sends by mistake and reports every drop with its reason.
:func:`build_examples` replays the cleaned, time-ordered events through the shared
:class:`~preftrack_gateway.features.FeatureState`, reading each example's features *before* the example's
own event (and everything after it) is folded in.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from preftrack_gateway import contract
from preftrack_gateway.features import (
    INFLUENCE_WINDOW_S,
    NUM_FEATURES,
    FeatureSpec,
    FeatureState,
    LabelSpec,
    influence,
)
from preftrack_gateway.schema import EVENT_TYPES, MIN_TIMESTAMP_S, Event, Item, stable_hash


@dataclasses.dataclass(frozen=True, kw_only=True)
class CleaningReport:
    """How many events went in, came out, and why the rest were dropped."""

    events_in: int
    events_out: int
    dropped: dict[str, int]
    bot_users: tuple[str, ...]

    def lines(self) -> list[str]:
        """Human-readable summary, one line per reason."""
        out = [f"events in: {self.events_in}, kept: {self.events_out}"]
        out += [f"  dropped {count:>7} {reason}" for reason, count in sorted(self.dropped.items())]
        if self.bot_users:
            out.append(f"  bot-like users removed: {len(self.bot_users)}")
        return out


def clean(
    events: Iterable[Event],
    *,
    now_s: float | None = None,
    max_future_skew_s: float = 300.0,
    bot_events_per_hour: int | None = 300,
) -> tuple[list[Event], CleaningReport]:
    """Dedupe, drop malformed or impossible records and bot-like users; return time-ordered events.

    Args:
        events: raw events in any order.
        now_s: current time; timestamps later than this (plus skew) are impossible. Defaults to the clock.
        max_future_skew_s: tolerated client clock skew.
        bot_events_per_hour: a user with more events than this in one clock hour is treated as a bot;
            ``None`` turns bot detection off (MovieLens users legitimately rate hundreds of films at sign-up).
    """
    now = time.time() if now_s is None else now_s
    dropped: collections.Counter[str] = collections.Counter()
    seen: set[str] = set()
    kept: list[Event] = []
    n_in = 0
    for event in events:
        n_in += 1
        if not event.event_id:
            dropped["missing event_id"] += 1
            continue
        if event.event_id in seen:
            dropped["duplicate event_id"] += 1
            continue
        seen.add(event.event_id)
        if not event.user_id or (not event.item_id and event.event_type != "search"):
            dropped["missing user_id or item_id"] += 1
        elif event.event_type not in EVENT_TYPES:
            dropped["unknown event_type"] += 1
        elif not math.isfinite(event.value):
            dropped["non-finite value"] += 1
        elif not math.isfinite(event.timestamp_s) or event.timestamp_s < MIN_TIMESTAMP_S:
            dropped["timestamp before 1990"] += 1
        elif event.timestamp_s > now + max_future_skew_s:
            dropped["timestamp in the future"] += 1
        else:
            kept.append(event)
    per_hour: collections.Counter[tuple[str, int]] = collections.Counter(
        (e.user_id, int(e.timestamp_s // 3600)) for e in kept
    )
    limit = bot_events_per_hour
    bots = sorted({user for (user, _), count in per_hour.items() if limit is not None and count > limit})
    if bots:
        bot_set = set(bots)
        before = len(kept)
        kept = [e for e in kept if e.user_id not in bot_set]
        dropped["bot-like user"] += before - len(kept)
    kept.sort(key=lambda e: e.timestamp_s)
    report = CleaningReport(events_in=n_in, events_out=len(kept), dropped=dict(dropped), bot_users=tuple(bots))
    return kept, report


@dataclasses.dataclass(frozen=True)
class Examples:
    """Labelled examples as model-ready arrays (raw ids hashed, features not yet normalised)."""

    user_id: np.ndarray  # int64 stable hashes
    item_id: np.ndarray
    category_id: np.ndarray
    features: np.ndarray  # float32 (n, NUM_FEATURES)
    attributes: np.ndarray  # int64 (n, 2 * ATTRIBUTE_SLOTS): the user's attribute ids, then the item's
    label: np.ndarray  # float32 0/1
    timestamp_s: np.ndarray  # float64
    users: list[str]
    items: list[str]
    #: float32: how much each may teach the model, from its user's pace (:func:`~preftrack_gateway.features.influence`);
    #: None: all of it.
    influence: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def weights(self) -> np.ndarray:
        """Each example's influence (ones where none was counted)."""
        return self.influence if self.influence is not None else np.ones(len(self), dtype=np.float32)

    def take(self, mask_or_index: np.ndarray) -> Examples:
        """A subset, selected by boolean mask or index array."""
        index = np.flatnonzero(mask_or_index) if mask_or_index.dtype == bool else mask_or_index
        return Examples(
            user_id=self.user_id[index],
            item_id=self.item_id[index],
            category_id=self.category_id[index],
            features=self.features[index],
            attributes=self.attributes[index],
            label=self.label[index],
            timestamp_s=self.timestamp_s[index],
            users=[self.users[i] for i in index],
            items=[self.items[i] for i in index],
            influence=None if self.influence is None else self.influence[index],
        )

    @staticmethod
    def concat(parts: Sequence[Examples]) -> Examples:
        """The examples of ``parts``, one after another."""
        return Examples(
            user_id=np.concatenate([p.user_id for p in parts]),
            item_id=np.concatenate([p.item_id for p in parts]),
            category_id=np.concatenate([p.category_id for p in parts]),
            features=np.concatenate([p.features for p in parts]),
            attributes=np.concatenate([p.attributes for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            timestamp_s=np.concatenate([p.timestamp_s for p in parts]),
            users=[u for p in parts for u in p.users],
            items=[i for p in parts for i in p.items],
            influence=None if all(p.influence is None for p in parts) else np.concatenate([p.weights() for p in parts]),
        )

    def split_by_time(self, train_fraction: float) -> tuple[Examples, Examples]:
        """Temporal split: the first ``train_fraction`` of the time span trains, the rest tests."""
        lo, hi = float(self.timestamp_s.min()), float(self.timestamp_s.max())
        cut = lo + train_fraction * (hi - lo)
        return self.take(self.timestamp_s < cut), self.take(self.timestamp_s >= cut)


def model_inputs(
    user_ids: Sequence[str],
    items: Sequence[Item],
    features: np.ndarray,
    user_tokens: Sequence[Sequence[str]] | None = None,
) -> dict[str, np.ndarray]:
    """The model's raw inputs for rows of (user, item, features[, the user's attribute tokens]), as Triton and the
    SavedModel take them (:mod:`preftrack_gateway.contract`)."""
    n = len(user_ids)
    tokens = user_tokens if user_tokens is not None else [()] * n
    own = {tuple(t): contract.user_attribute_ids(t) for t in tokens}
    item_ids = {i.item_id: contract.item_attribute_ids(i) for i in items}
    return {
        "attributes": contract.attribute_ids(
            np.array([own[tuple(t)] for t in tokens], dtype=np.int64).reshape(n, contract.ATTRIBUTE_SLOTS),
            np.array([item_ids[i.item_id] for i in items], dtype=np.int64).reshape(n, contract.ATTRIBUTE_SLOTS),
        ),
        "user_id": np.array([stable_hash(u) for u in user_ids], dtype=np.int64),
        "item_id": np.array([stable_hash(i.item_id) for i in items], dtype=np.int64),
        "category_id": np.array([stable_hash(i.primary_category) for i in items], dtype=np.int64),
        "features": np.asarray(features, dtype=np.float32).reshape(len(user_ids), NUM_FEATURES),
    }


def _passed_over(
    search: Event, engaged: list[tuple[float, str]], catalogue: list[str], n: int, spec: FeatureSpec
) -> list[str]:
    """``n`` catalogue items the user does not engage with in the search window after ``search``, drawn with a
    random generator seeded by the search's id (the same examples every run)."""
    t = search.timestamp_s
    start = bisect.bisect_right(engaged, (t, "\uffff"))
    after = {item for when, item in engaged[start:] if when <= t + spec.search_window_s} if engaged else set()
    rng = np.random.default_rng(stable_hash(search.event_id))
    picked = [catalogue[k] for k in rng.choice(len(catalogue), size=min(len(catalogue), 2 * n + 8), replace=False)]
    return [item for item in picked if item not in after][:n]


def build_examples(
    events: Sequence[Event],
    catalog: dict[str, Item],
    *,
    spec: FeatureSpec,
    labels: LabelSpec,
    state: FeatureState | None = None,
    progress: bool = False,
) -> tuple[Examples, FeatureState]:
    """Replay time-ordered events into labelled, point-in-time correct examples, each with its influence (its
    user's actions in the minute either side of it, as the gateway's layer and the continual trainer count them).

    Returns the examples and the feature state after the last event (what serving would start from).
    """
    state = state or FeatureState(spec, catalog)
    positives: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    engaged: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for event in events:
        if spec.is_positive(event.event_type, event.value):
            positives[(event.user_id, event.item_id)].append(event.timestamp_s)
        if labels.search_negatives and event.event_type != "search":
            engaged[event.user_id].append((event.timestamp_s, event.item_id))
    for found in engaged.values():
        found.sort()
    catalogue = sorted(catalog)
    example_types = set(labels.example_types)
    rows: list[list[float]] = []
    label: list[float] = []
    times: list[float] = []
    users: list[str] = []
    item_rows: list[Item] = []
    # A search's passed-over items, read just after it once every event before then is folded: (time, search).
    waiting: collections.deque[tuple[float, Event]] = collections.deque()
    # Each example's influence, counted once every event of the minute after it is folded (examples come in time
    # order, but for the passed-over items of a search, a millisecond after it).
    weights: list[float] = []

    def weigh_until(until_s: float) -> None:
        while len(weights) < len(times) and times[len(weights)] + INFLUENCE_WINDOW_S < until_s:
            weights.append(influence(state.activity(users[len(weights)], times[len(weights)])))

    def passed_over_until(until_s: float) -> None:
        while waiting and waiting[0][0] <= until_s:
            t, search = waiting.popleft()
            for item_id in _passed_over(search, engaged[search.user_id], catalogue, labels.search_negatives, spec):
                rows.append(state.rows(search.user_id, (item_id,), t, search.query_terms)[0])
                label.append(0.0)
                times.append(t)
                users.append(search.user_id)
                item_rows.append(state.item(item_id))

    for event in tqdm(events, desc="features", unit="ev", disable=not progress, mininterval=0.5):
        passed_over_until(event.timestamp_s)
        weigh_until(event.timestamp_s)
        if event.event_type == "search" and labels.search_negatives and catalogue:
            waiting.append((event.timestamp_s + 1e-3, event))
        if event.event_type in example_types:
            t = event.timestamp_s
            rows.append(state.example_row(event))
            if spec.is_positive(event.event_type, event.value):
                y = 1.0
            else:
                later = positives.get((event.user_id, event.item_id), [])
                k = bisect.bisect_right(later, t)
                y = 1.0 if k < len(later) and later[k] <= t + labels.attribution_window_s else 0.0
            label.append(y)
            times.append(t)
            users.append(event.user_id)
            item_rows.append(state.item(event.item_id))
        state.update(event)
    passed_over_until(math.inf)
    weigh_until(math.inf)
    feats = np.array(rows, dtype=np.float32).reshape(len(rows), NUM_FEATURES)
    inputs = model_inputs(users, item_rows, feats, [state.user_tokens(u) for u in users])
    examples = Examples(
        user_id=inputs["user_id"],
        item_id=inputs["item_id"],
        category_id=inputs["category_id"],
        features=inputs["features"],
        attributes=inputs["attributes"],
        label=np.array(label, dtype=np.float32),
        timestamp_s=np.array(times, dtype=np.float64),
        users=users,
        items=[i.item_id for i in item_rows],
        influence=np.array(weights, dtype=np.float32),
    )
    return examples, state
