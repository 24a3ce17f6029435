"""The continual trainer's off-policy evaluation: owns the explored served lists waiting for their outcome, and turns
those in a round's holdout into the rows :func:`preftrack_gateway.offpolicy.estimate` judges a candidate on.

A served list whose impression logged propensities below 1 (the gateway's exploration policy,
:func:`preftrack_gateway.lists.explore`) is remembered by its recommendation id, with its items in the order shown
and the propensity of its first item. The trainer already turns every served list into one example per shown item
(features as of the moment it was served, label from the user's later feedback); a list whose examples all fall in
a round's holdout (never trained on) becomes one :class:`~preftrack_gateway.offpolicy.LoggedChoice`: the candidate's
probabilities for its items, the reward of the item shown first.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

import numpy as np

from preftrack_gateway.offpolicy import LoggedChoice, estimate, serving_position, verdict
from preftrack_gateway.store import Impression
from preftrack_trainer.preprocess import Examples

#: The example id of one shown item of a served list (the continual trainer's exposures).
EXPOSURE_PREFIX = "impression:"


def exposure_id(recommendation_id: str, item_id: str) -> str:
    """The id of the example made from one shown item of a served list."""
    return f"{EXPOSURE_PREFIX}{recommendation_id}:{item_id}"


class ExploredLists:
    """Explored served lists, by recommendation id, until a round judges a candidate on them (at most
    ``max_lists``: the oldest go first)."""

    def __init__(self, max_lists: int = 50_000) -> None:
        # recommendation id -> (items in the order shown, the first one's propensity, where the serving version's
        # first choice is among them)
        self._lists: collections.OrderedDict[str, tuple[tuple[str, ...], float, int]] = collections.OrderedDict()
        self._max = max_lists

    def __len__(self) -> int:
        return len(self._lists)

    def add(self, impression: Impression) -> None:
        """Remember a served list if the exploration policy could have shown another item first."""
        propensities = impression.propensities
        if len(impression.item_ids) < 2 or not propensities or not 0.0 < propensities[0] < 1.0:
            return
        self._lists[impression.recommendation_id] = (
            impression.item_ids,
            float(propensities[0]),
            serving_position(propensities),
        )
        while len(self._lists) > self._max:
            self._lists.popitem(last=False)

    def clear(self) -> None:
        self._lists.clear()

    def choices(
        self, example_ids: Sequence[str], examples: Examples, predict: Callable[[Examples], np.ndarray]
    ) -> list[LoggedChoice]:
        """The explored lists all of whose items are among ``examples`` (ids aligned with the rows), scored by
        ``predict``; the lists used are forgotten."""
        row_of = {example_id: row for row, example_id in enumerate(example_ids)}
        complete: list[tuple[float, float, list[int], int]] = []
        for recommendation_id, (item_ids, propensity, serving) in list(self._lists.items()):
            found = [row_of.get(exposure_id(recommendation_id, item)) for item in item_ids]
            taken = [row for row in found if row is not None]
            if len(taken) < len(found):
                continue
            complete.append((propensity, float(examples.label[taken[0]]), taken, serving))
            del self._lists[recommendation_id]
        if not complete:
            return []
        scores = predict(examples.take(np.array([row for _, _, rows, _ in complete for row in rows], dtype=np.int64)))
        choices, start = [], 0
        for propensity, reward, rows, serving in complete:
            target = tuple(float(s) for s in scores[start : start + len(rows)])
            choices.append(LoggedChoice(propensity, reward, 0, target, serving))
            start += len(rows)
        return choices

    def evaluate(
        self, example_ids: Sequence[str], examples: Examples, predict: Callable[[Examples], np.ndarray]
    ) -> dict[str, object]:
        """:func:`~preftrack_gateway.offpolicy.estimate` of the version behind ``predict`` on the explored lists
        among ``examples`` (``n`` 0 when there are none), with the rollout's reading of it (``verdict``, ``why``)."""
        judged = estimate(self.choices(example_ids, examples, predict))
        judged["verdict"], judged["why"] = verdict(judged)
        return judged
