"""Offline, prequential evaluation of the per-event layer alone (no new model versions).

The same :class:`~preftrack_gateway.online.Correction` the gateway runs, on top of one frozen version: it
learns from the warm-up examples (with the version's logits on them), then scores each live example before
learning from it, in stream order — what the live system would do if the continual trainer never shipped. As in
the gateway, an example is learned from only once its label is known (:func:`label_times`).
"""

from __future__ import annotations

import bisect
import collections
import heapq
from collections.abc import Mapping, Sequence

import numpy as np

from preftrack_gateway.features import FeatureSpec, LabelSpec
from preftrack_gateway.online import Coordinates, Correction, OnlineConfig, sigmoid
from preftrack_gateway.schema import Event, Item
from preftrack_trainer.preprocess import Examples


def label_times(examples: Examples, events: Sequence[Event], spec: FeatureSpec, labels: LabelSpec) -> np.ndarray:
    """When each example's label becomes known to the gateway: at once for a positive (or a rating), at the
    first later positive event on the pair inside the window, otherwise when the window has closed."""
    window = labels.attribution_window_s
    positives: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for event in events:
        if spec.is_positive(event.event_type, event.value):
            positives[(event.user_id, event.item_id)].append(event.timestamp_s)
    for times in positives.values():
        times.sort()
    out = np.empty(len(examples))
    for k in range(len(examples)):
        t = float(examples.timestamp_s[k])
        if window <= 0:
            out[k] = t
            continue
        later = positives.get((examples.users[k], examples.items[k]), [])
        j = bisect.bisect_right(later, t)
        if examples.label[k] > 0 and j < len(later) and later[j] <= t + window:
            out[k] = later[j]
        elif examples.label[k] > 0:
            out[k] = t  # positive by itself
        else:
            out[k] = t + window
    return out


def prequential_correction(
    examples: Examples,
    base_logits: np.ndarray,
    n_warm: int,
    items: Mapping[str, Item],
    config: OnlineConfig | None = None,
    known_at: np.ndarray | None = None,
    labels: LabelSpec | None = None,
) -> np.ndarray:
    """Probabilities of the examples after ``n_warm``, each scored before the correction learns from it.

    ``known_at`` (from :func:`label_times`): the correction learns an example only once the stream has passed
    the time its label becomes known; without it, right after scoring it (exact for ratings). ``labels``: the
    deployment's label settings, which settle an automatic ``calibration`` as the gateway does (none: off).
    """
    correction = Correction((config or OnlineConfig()).resolved(labels))
    waiting: list[tuple[float, int]] = []
    scores = []
    weights = examples.weights()  # the gateway's layer takes each one's shared step at its influence too

    def coordinates(k: int) -> Coordinates:
        item = items.get(examples.items[k]) or Item(item_id=examples.items[k])
        return correction.coordinates(examples.users[k], item, examples.features[k])

    def learn(k: int) -> float:
        return correction.learn(coordinates(k), float(base_logits[k]), float(examples.label[k]), float(weights[k]))

    for k in range(len(examples)):
        t = float(examples.timestamp_s[k])
        while waiting and waiting[0][0] <= t:
            learn(heapq.heappop(waiting)[1])
        if known_at is None:
            p = learn(k)
        else:
            base = float(base_logits[k])
            p = float(sigmoid(np.array(base + correction.value(coordinates(k), base))))
            heapq.heappush(waiting, (float(known_at[k]), k))
        if k >= n_warm:
            scores.append(p)
    return np.array(scores)
