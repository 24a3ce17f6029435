"""Off-policy evaluation: what a model version would have earned on lists another version served, from the log.

Owns no state: the rules that turn logged lists (with the exploration policy's propensities,
:func:`preftrack_gateway.lists.explore`) into estimates, used by the trainer when it registers a version and by the
rollout when it opens a canary.

The question asked of each logged list is the first position's: the item shown first is the logged action, its
propensity the probability that the exploration policy put it there, its reward whether the user then did a
positive event on it within the attribution window. The version under evaluation picks, among the same list's
items, the one it scores highest. Its value is estimated three ways, each with a 95% normal interval:

- **IPS** (inverse propensity scoring): the mean of ``reward * [picked == shown] / propensity``; unbiased, noisy.
- **SNIPS**: the same, divided by the mean weight instead of 1 (less noisy, slightly biased).
- **DR** (doubly robust): the version's own probability for its pick, corrected by the weighted residual of its
  probability for the shown item: ``q(picked) + [picked == shown] / propensity * (reward - q(shown))``. Unbiased
  when the propensities are right, and less noisy than IPS when the version's probabilities are good.

The logged lists' mean reward is not the yardstick: it includes the cost of exploring, which a version under
evaluation does not pay. The serving version's own first choice (known from the propensities,
:func:`serving_position`) is judged the same way on the same lists, and the **lead** is the per-list difference of
the two DR terms, with its own interval: the rollout's verdict reads that.

Only lists whose first item could have been another (an explored share above 0) carry information: lists logged
without exploration have propensity 1 for the greedy item and 0 for every other, so a version that would pick
another item cannot be judged on them. They are left out, and the count says how many were used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

#: Two-sided 95% normal quantile.
_Z95 = 1.959964


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedChoice:
    """One logged list seen through its first position, scored by the version under evaluation.

    Attributes:
        propensity: the probability that the logging policy showed ``shown`` first (in (0, 1]).
        reward: 1.0 when the user did a positive event on the item shown first within the window, else 0.0.
        shown: the position in the list of the item shown first.
        target_scores: the evaluated version's probabilities for each item of the list, in the list's order.
        serving: the position of the item the logging (serving) version ranked first (:func:`serving_position`).
    """

    propensity: float
    reward: float
    shown: int
    target_scores: tuple[float, ...]
    serving: int = 0


def serving_position(propensities: Sequence[float]) -> int:
    """Where the serving version's first choice is in a list logged by the top-swap policy (share ``e`` over ``k``
    items): first when the list was not explored (propensities ``1 - e`` then ``1 - e/(k-1)``), else the other
    position whose propensity equals the first's (the two that traded places, ``e/(k-1)`` each). A list of two at
    share 0.5 cannot tell (both orders have propensity 0.5): it counts as not explored.

    >>> serving_position((0.9, 0.95, 0.95)), serving_position((0.05, 0.95, 0.05, 0.95))
    (0, 2)
    >>> serving_position((0.8, 0.8)), serving_position((0.2, 0.2))
    (0, 1)
    """
    if len(propensities) < 2:
        return 0
    first = propensities[0]
    if len(propensities) == 2:
        return 1 if first < 0.5 else 0
    swapped = [j for j in range(1, len(propensities)) if math.isclose(propensities[j], first, rel_tol=1e-9)]
    return swapped[0] if len(swapped) == 1 else 0


@dataclasses.dataclass(frozen=True, slots=True)
class Estimate:
    """A value with its 95% interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _interval(terms: np.ndarray) -> Estimate:
    mean = float(terms.mean())
    half = _Z95 * float(terms.std(ddof=1)) / math.sqrt(len(terms)) if len(terms) > 1 else math.inf
    return Estimate(mean, mean - half, mean + half)


def estimate(choices: Sequence[LoggedChoice]) -> dict[str, object]:
    """IPS, SNIPS and DR estimates of the evaluated version's first-position reward, DR's estimate of the serving
    version's own first choices (``serving``) and the paired difference (``lead``), the logged lists' mean reward
    (exploration included), and how many lists were used (those with exploration: a propensity below 1).

    >>> logged = [LoggedChoice(0.9, 1.0, 0, (0.8, 0.2)), LoggedChoice(0.1, 0.0, 1, (0.7, 0.3))] * 50
    >>> result = estimate(logged)
    >>> result["n"], round(result["ips"]["value"], 3), round(result["logged"]["value"], 3)
    (100, 0.556, 0.5)
    """
    used = [c for c in choices if 0.0 < c.propensity < 1.0 and len(c.target_scores) > 1]
    if not used:
        return {"n": 0}
    reward = np.array([c.reward for c in used])
    propensity = np.array([c.propensity for c in used])
    picked = np.array([int(np.argmax(c.target_scores)) for c in used])
    shown = np.array([c.shown for c in used])
    match = (picked == shown).astype(np.float64)
    weight = match / propensity
    q_picked = np.array([c.target_scores[p] for c, p in zip(used, picked, strict=True)])
    q_shown = np.array([c.target_scores[c.shown] for c in used])
    serving = np.array([c.serving for c in used])
    q_serving = np.array([c.target_scores[c.serving] for c in used])
    dr_terms = q_picked + weight * (reward - q_shown)
    serving_terms = q_serving + (serving == shown) / propensity * (reward - q_shown)
    ips_terms = weight * reward
    snips = float(ips_terms.sum() / weight.sum()) if weight.sum() > 0 else math.nan
    # SNIPS's interval by the delta method: the weighted residuals' spread over the mean weight.
    snips_terms = weight * (reward - (snips if math.isfinite(snips) else 0.0)) / max(float(weight.mean()), 1e-12)
    snips_half = _interval(snips_terms)
    return {
        "n": len(used),
        "matches": int(match.sum()),
        "ips": _interval(ips_terms).to_dict(),
        "snips": Estimate(snips, snips + snips_half.low, snips + snips_half.high).to_dict(),
        "dr": _interval(dr_terms).to_dict(),
        "serving": _interval(serving_terms).to_dict(),
        "lead": _interval(dr_terms - serving_terms).to_dict(),
        "logged": _interval(reward).to_dict(),
    }


def verdict(offpolicy: object) -> tuple[str, str]:
    """What an off-policy estimate (a version's registered ``offpolicy`` metrics) says about rolling it out:
    ``"ahead"`` when the interval of its lead over the serving version's own choices (paired, on the same explored
    lists) lies above 0, ``"behind"`` when it lies below, else ``"unclear"`` (also without an estimate); and why.

    >>> verdict({"n": 400, "lead": {"value": 0.05, "low": 0.01, "high": 0.09}, "dr": {"value": 0.3}})[0]
    'ahead'
    >>> verdict({"n": 0})[0]
    'unclear'
    """
    if not isinstance(offpolicy, dict) or not offpolicy.get("n"):
        return "unclear", "no explored lists logged"
    lead, dr = offpolicy.get("lead"), offpolicy.get("dr")
    if not isinstance(lead, dict) or not isinstance(dr, dict):
        return "unclear", "no estimate"
    text = (
        f"off-policy DR {float(dr['value']):.4f}, lead over the serving version's choices {float(lead['value']):+.4f} "
        f"[{float(lead['low']):+.4f}, {float(lead['high']):+.4f}], {int(offpolicy['n'])} explored lists"
    )
    if float(lead["low"]) > 0:
        return "ahead", text
    if float(lead["high"]) < 0:
        return "behind", text
    return "unclear", text
