"""Always-valid comparisons of a candidate with the stable version, safe to look at after every event.

The method is the mixture sequential probability ratio test (mSPRT) with a normal mixing distribution
(Robbins 1970; Johari, Pekelis, Walsh, "Always valid inference", 2017). For an estimate ``d`` of a difference
with variance ``V`` (shrinking as outcomes arrive) and mixing scale ``tau``, the interval

    d ± sqrt( V (V + tau²) / tau² · (2 ln(1/alpha) + ln((V + tau²) / V)) )

covers the true difference at every sample size at once with probability ≥ 1 − alpha (asymptotically, by the
central limit theorem for the per-arm means). So the controller may check it every few seconds and stop the
first time it is decisive, without the inflated error of repeated fixed-sample tests.

Decisions (``margin`` > 0 is the non-inferiority margin, in the metric's units):
- canary, on the attributed positive rate of shown items (higher is better): roll back when the whole interval
  of candidate − stable lies below 0 (significantly worse); promote when it lies above −margin (not worse by
  more than the margin).
- shadow, on the per-item log loss of both versions' scores for the same shown items (paired, lower is better):
  roll back when the interval of candidate − stable lies above 0; promote when it lies below +margin.
No decision before ``min_outcomes`` labelled outcomes per arm.

The mixing scale ``tau`` is the size of effect the test is tuned to find quickly: 20% of the stable arm's metric
(at least the margin). It changes how soon a decision comes, never the interval's coverage.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from preftrack_gateway import offpolicy

#: Mixing scale relative to the stable arm's metric.
TAU_RELATIVE = 0.2


def halfwidth(variance: float, tau: float, alpha: float) -> float:
    """Half-width of the always-valid interval for an estimate with ``variance`` (mixing scale ``tau``)."""
    if variance <= 0:
        return 0.0
    t2 = tau * tau
    return math.sqrt(variance * (variance + t2) / t2 * (2 * math.log(1 / alpha) + math.log((variance + t2) / variance)))


@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    """Candidate − stable on one metric, with its always-valid interval and the decision it supports."""

    metric: str
    difference: float
    low: float
    high: float
    margin: float
    n_stable: int
    n_candidate: int
    decision: str  # "promote", "roll_back" or "wait"
    reason: str

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def compare_rates(
    positives_stable: int,
    n_stable: int,
    positives_candidate: int,
    n_candidate: int,
    *,
    relative_margin: float,
    alpha: float,
    min_outcomes: int,
) -> Comparison:
    """Canary: attributed positive rate of shown items, two independent arms (higher is better).

    The margin is ``relative_margin`` × the stable arm's rate (floored at 1e-3).
    """
    n_s, n_c = max(n_stable, 1), max(n_candidate, 1)
    p_s, p_c = positives_stable / n_s, positives_candidate / n_c
    margin = max(relative_margin * p_s, 1e-3)
    # Rates clipped away from 0 and 1 so a run of identical outcomes still has a variance.
    q_s, q_c = min(max(p_s, 0.5 / n_s), 1 - 0.5 / n_s), min(max(p_c, 0.5 / n_c), 1 - 0.5 / n_c)
    variance = q_s * (1 - q_s) / n_s + q_c * (1 - q_c) / n_c
    diff = p_c - p_s
    h = halfwidth(variance, max(margin, TAU_RELATIVE * p_s), alpha)
    low, high = diff - h, diff + h
    if min(n_stable, n_candidate) < min_outcomes:
        decision, reason = "wait", f"{min(n_stable, n_candidate)} of {min_outcomes} outcomes per arm"
    elif high < 0:
        decision, reason = "roll_back", f"positive rate significantly worse: {p_c:.4f} vs {p_s:.4f}"
    elif low > -margin:
        decision, reason = "promote", f"positive rate {p_c:.4f} vs {p_s:.4f}, not worse by more than {margin:.4f}"
    else:
        decision, reason = "wait", "not yet decisive"
    return Comparison("positive_rate", diff, low, high, margin, n_stable, n_candidate, decision, reason)


def compare_paired_losses(
    stable_losses: np.ndarray,
    candidate_losses: np.ndarray,
    *,
    relative_margin: float,
    alpha: float,
    min_outcomes: int,
) -> Comparison:
    """Shadow: both versions' log loss on the same shown items (paired, lower is better).

    The margin is ``relative_margin`` × the stable version's mean log loss.
    """
    n = len(stable_losses)
    if n == 0:
        return Comparison("log_loss", 0.0, -math.inf, math.inf, 0.0, 0, 0, "wait", f"0 of {min_outcomes} outcomes")
    d = np.asarray(candidate_losses, dtype=np.float64) - np.asarray(stable_losses, dtype=np.float64)
    diff = float(d.mean())
    margin = max(relative_margin * float(np.mean(stable_losses)), 1e-3)
    variance = float(d.var(ddof=1)) / n if n > 1 else math.inf
    tau = max(margin, TAU_RELATIVE * float(np.mean(stable_losses)))
    h = halfwidth(variance, tau, alpha) if math.isfinite(variance) else math.inf
    low, high = diff - h, diff + h
    if n < min_outcomes:
        decision, reason = "wait", f"{n} of {min_outcomes} paired outcomes"
    elif low > 0:
        decision, reason = "roll_back", f"log loss significantly worse by {diff:.4f}"
    elif high < margin:
        decision, reason = "promote", f"log loss {diff:+.4f} vs stable, not worse by more than {margin:.4f}"
    else:
        decision, reason = "wait", "not yet decisive"
    return Comparison("log_loss", diff, low, high, margin, n, n, decision, reason)


#: The canary's opening share when the trainer's holdout shows the candidate clearly ahead (:func:`opening_fraction`).
WIDE_LEAD_FRACTION = 0.5


def auc_standard_error(auc: float, n_positive: float, n_negative: float) -> float:
    """Standard error of an AUC measured on ``n_positive`` and ``n_negative`` examples (Hanley & McNeil, 1982).

    >>> round(auc_standard_error(0.8, 100, 100), 4)
    0.0314
    """
    if n_positive < 1 or n_negative < 1 or not 0 <= auc <= 1:
        return math.inf
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)
    return math.sqrt(max(variance, 0.0) / (n_positive * n_negative))


def _holdout(metrics: object) -> tuple[float, float, float] | None:
    """(AUC, positives, negatives) of one version's evaluation as the trainer records it, if complete."""
    if not isinstance(metrics, dict):
        return None
    try:
        auc, n, rate = float(metrics["auc"]), float(metrics["n"]), float(metrics["positive_rate"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(auc) and math.isfinite(n) and math.isfinite(rate)):
        return None
    return auc, n * rate, n * (1 - rate)


def opening_fraction(metrics: dict[str, object], default: float) -> tuple[float, str]:
    """The canary's share when a rollout starts, from the trainer's offline evidence, and why.

    The trainer scores its newest holdout with the candidate and with the serving version (``metrics``'
    ``candidate`` and ``serving``). When the candidate's AUC leads by more than twice the standard error of the
    difference (taking the two AUCs as independent, which overstates the error: they share the examples), the
    version the shop serves is plainly behind, and the canary opens at :data:`WIDE_LEAD_FRACTION` so the live
    test decides several times sooner. An off-policy estimate from explored lists (:func:`offpolicy.verdict`) that
    puts the candidate ahead of what the serving policy earned opens it as wide. The live test and its automatic
    roll back are unchanged: a candidate that does worse with users is still rolled back; the evidence only
    decides how many users help decide.

    >>> lead = {"candidate": {"auc": 0.80, "n": 400, "positive_rate": 0.5},
    ...         "serving": {"auc": 0.65, "n": 400, "positive_rate": 0.5}}
    >>> opening_fraction(lead, 0.1)[0]
    0.5
    >>> close = {"candidate": {"auc": 0.80, "n": 400, "positive_rate": 0.5},
    ...          "serving": {"auc": 0.78, "n": 400, "positive_rate": 0.5}}
    >>> opening_fraction(close, 0.1)[0]
    0.1
    """
    if default >= WIDE_LEAD_FRACTION:
        return default, "policy fraction"
    judged, why = offpolicy.verdict(metrics.get("offpolicy"))
    if judged == "ahead":  # the log of explored lists says users would do better with it
        return WIDE_LEAD_FRACTION, why
    candidate, serving = _holdout(metrics.get("candidate")), _holdout(metrics.get("serving"))
    if candidate is None or serving is None:
        return default, "policy fraction"
    lead = candidate[0] - serving[0]
    error = math.hypot(auc_standard_error(*candidate), auc_standard_error(*serving))
    if lead - 2 * error > 0:
        return (
            WIDE_LEAD_FRACTION,
            f"offline lead: holdout AUC {candidate[0]:.4f} vs {serving[0]:.4f} (±{2 * error:.4f})",
        )
    return default, f"policy fraction (holdout AUC {candidate[0]:.4f} vs {serving[0]:.4f}, ±{2 * error:.4f})"
