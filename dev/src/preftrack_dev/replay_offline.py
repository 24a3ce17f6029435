"""The replay's offline rows: owns every comparison scored beside the live system, on the same stream.

Version 1 frozen, version 1 with the per-event layer learning on top, item popularity learned online, Vowpal
Wabbit learning after every example, and the per-user rules of :mod:`preftrack_dev.rules`: each scores the live
examples from the past only. On a dataset with choice sets, a row's scores of an occasion's views rank the
occasion's candidates (:func:`choice_rows`), as the live system's Recommend ranks them.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from preftrack_dev import rules
from preftrack_gateway.features import LabelSpec
from preftrack_gateway.online import OnlineConfig, logit
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event
from preftrack_trainer import metrics, model
from preftrack_trainer.data.choices import ChoiceSet
from preftrack_trainer.online_eval import label_times, prequential_correction
from preftrack_trainer.pipeline import Dataset
from preftrack_trainer.preprocess import Examples, build_examples

#: Row names of the report.
FROZEN = "preftrack frozen at v1"
PER_EVENT_ONLY = "v1 + per-event layer (no new versions)"
POPULARITY = "item popularity (online)"
VW = "Vowpal Wabbit (per event)"


@dataclasses.dataclass(frozen=True)
class OfflineRows:
    """The offline rows' scores of the live part of a replayed stream.

    Attributes:
        labels: the live examples' labels, in stream order.
        example_ids: the live examples' event ids.
        scores: each model row's probabilities of the live examples (frozen, per-event layer, popularity, VW).
        rules: each rule's scores of the live examples (ranks, not probabilities).
        rule_choices: each rule's (hit@1, NDCG@10) per live choice set (empty without choice sets).
        choice_sets: the choice sets of the live part, in stream order.
    """

    labels: np.ndarray
    example_ids: tuple[str, ...]
    scores: dict[str, np.ndarray]
    rules: dict[str, np.ndarray]
    rule_choices: dict[str, np.ndarray]
    choice_sets: tuple[ChoiceSet, ...]


def _online_popularity(examples: Examples, n_warm: int) -> np.ndarray:
    """Each live example scored by its item's smoothed positive rate over the examples before it."""
    pos: dict[str, float] = collections.defaultdict(float)
    seen: dict[str, float] = collections.defaultdict(float)
    total_pos = total = 0.0
    scores = []
    for index, (item, y) in enumerate(zip(examples.items, examples.label, strict=True)):
        if index >= n_warm:
            prior = (total_pos + 1) / (total + 2)
            scores.append((pos[item] + 5 * prior) / (seen[item] + 5))
        pos[item] += float(y)
        seen[item] += 1
        total_pos += float(y)
        total += 1
    return np.array(scores)


def _vw_token(text: str) -> str:
    return text.replace(":", "_").replace(" ", "_").replace("|", "_")


def _vowpal_wabbit_online(
    examples: Examples, data: Dataset, n_warm: int, users: Mapping[str, Mapping[str, str]], groups: Sequence[int]
) -> np.ndarray:
    """VW learning after every example (logistic, user x item interactions) on what preftrack's model reads: the
    user (``users``: attributes by the examples' user keys), the item, its categories and attributes; scores of
    the live examples. Consecutive examples of one group (an occasion's views) are all scored before VW learns
    any of them: the views of one shelf are judged together, as a Recommend judges them."""
    from vowpalwabbit import Workspace

    ws = Workspace("--loss_function logistic --link logistic -l 0.5 -q ui -q uu -b 22 --quiet")
    scores = []
    pending: list[str] = []
    for index, (user, item_id, y) in enumerate(zip(examples.users, examples.items, examples.label, strict=True)):
        if index and groups[index] != groups[index - 1]:
            for line in pending:
                ws.learn(line)
            pending = []
        item = data.items.get(item_id)
        own = " ".join(f"{_vw_token(n)}={_vw_token(v)}" for n, v in sorted(users.get(user, {}).items()))
        described = [f"g={_vw_token(c)}" for c in (item.categories if item else ())]
        described += [f"{_vw_token(n)}={_vw_token(v)}" for n, v in (item.attributes if item else ())]
        features = f"|u user={user} {own} |i item={item_id} {' '.join(described)}"
        if index >= n_warm:
            scores.append(float(ws.predict(features)))
        pending.append(f"{1 if y > 0 else -1} {features}")
    ws.finish()
    return np.array(scores)


def example_groups(events: Sequence[Event], labels: LabelSpec, choice_sets: Sequence[ChoiceSet]) -> list[int]:
    """For each example of ``events`` (in stream order): the index of the choice set it is a view of, or a number
    of its own (negative) when it belongs to none.

    >>> from preftrack_gateway.schema import Event
    >>> views = [Event(event_id=i, user_id="u", item_id=i, event_type="view", timestamp_s=1.0) for i in "abc"]
    >>> example_groups(views, LabelSpec(), [ChoiceSet("u", 1.0, ("b", "c"), "c", ("b", "c"), ("b", "c"))])
    [-1, 0, 0]
    """
    occasion = {view: k for k, choice in enumerate(choice_sets) for view in choice.view_ids}
    examples = [e for e in events if e.event_type in labels.example_types]
    return [occasion.get(e.event_id, -1 - k) for k, e in enumerate(examples)]


def choice_rows(choice_sets: Sequence[ChoiceSet], example_ids: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """(hit@1, NDCG@10) per choice set when its candidates are ranked by the scores of their views (``scores[k]``
    is the score of the example with event id ``example_ids[k]``)."""
    position = {event_id: k for k, event_id in enumerate(example_ids)}
    found = [
        metrics.choice_metrics([float(scores[position[v]]) for v in c.view_ids], c.candidates.index(c.chosen))
        for c in choice_sets
    ]
    return np.array(found, dtype=np.float64).reshape(-1, 2)


def score_offline(
    data: Dataset,
    warm: list[Event],
    live: list[Event],
    version_1: Any,
    online: OnlineConfig,
    pseudonymise: Pseudonymiser,
) -> OfflineRows:
    """Score the live examples with every offline row; ``version_1`` is the Keras model of version 1 (None when
    it never existed: its rows are then nan). Users are pseudonymised as the gateway did, so version 1's user
    embeddings apply."""
    all_events = warm + live
    pseudo = [dataclasses.replace(e, user_id=pseudonymise(e.user_id)) for e in all_events]
    examples, _ = build_examples(
        pseudo, data.items, spec=data.spec, labels=data.labels, state=data.features(pseudonymise)
    )
    n_live = sum(1 for e in live if e.event_type in data.labels.example_types)
    n_warm = len(examples) - n_live
    live_examples = examples.take(np.arange(n_warm, len(examples)))
    nan = np.full(n_live, np.nan)
    frozen = model.predict(version_1, live_examples) if version_1 is not None else nan
    # Version 1 frozen, with the per-event layer learning on top (the warm part first, as the gateway does).
    per_event = (
        prequential_correction(
            examples,
            logit(model.predict(version_1, examples)),
            n_warm,
            data.items,
            online,
            known_at=label_times(examples, pseudo, data.spec, data.labels),
            labels=data.labels,
        )
        if version_1 is not None
        else nan
    )
    live_ids = {e.event_id for e in live}
    choice_sets = tuple(c for c in data.choice_sets if c.event_ids[0] in live_ids)
    users = {pseudonymise(u): a for u, a in data.users.items()}
    groups = example_groups(all_events, data.labels, data.choice_sets)
    rule_scores = rules.prequential_scores(all_events, data.items, data.spec, data.labels)
    if any(len(s) != len(examples) for s in rule_scores.values()):
        raise ValueError("the rules scored other rows than the examples (search negatives?)")
    return OfflineRows(
        labels=live_examples.label,
        example_ids=tuple(e.event_id for e in live if e.event_type in data.labels.example_types),
        scores={
            FROZEN: frozen,
            PER_EVENT_ONLY: per_event,
            POPULARITY: _online_popularity(examples, n_warm),
            VW: _vowpal_wabbit_online(examples, data, n_warm, users, groups),
        },
        rules={name: s[n_warm:] for name, s in rule_scores.items()},
        rule_choices=rules.prequential_choices(all_events, data.items, data.spec, choice_sets) if choice_sets else {},
        choice_sets=choice_sets,
    )
