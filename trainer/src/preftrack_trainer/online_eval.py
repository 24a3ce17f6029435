"""Offline, prequential evaluation of the per-event layer alone (no new model versions).

The same :class:`~preftrack_gateway.online.Correction` the gateway runs, on top of one frozen version: it
learns from the warm-up examples (with the version's logits on them), then scores each live example before
learning from it, in stream order — what the live system would do if the continual trainer never shipped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from preftrack_gateway.online import Correction, OnlineConfig
from preftrack_gateway.schema import Item
from preftrack_trainer.preprocess import Examples


def prequential_correction(
    examples: Examples,
    base_logits: np.ndarray,
    n_warm: int,
    items: Mapping[str, Item],
    config: OnlineConfig | None = None,
) -> np.ndarray:
    """Probabilities of the examples after ``n_warm``, each scored before the correction learns from it."""
    correction = Correction(config)
    scores = []
    for k in range(len(examples)):
        item = items.get(examples.items[k]) or Item(item_id=examples.items[k])
        index = correction.indices(examples.users[k], item, examples.features[k])
        p = correction.learn(index, float(base_logits[k]), float(examples.label[k]))
        if k >= n_warm:
            scores.append(p)
    return np.array(scores)
