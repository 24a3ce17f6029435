"""How versions are rolled out and decided: the settings of :mod:`preftrack_gateway.rollout` (no dependencies,
so the gateway's configuration can build them)."""

from __future__ import annotations

import dataclasses

ROLLOUT_MODES = ("canary", "shadow", "direct")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutPolicy:
    """How newly exported versions are rolled out and decided.

    Attributes:
        mode: ``canary`` (a share of users), ``shadow`` (scored off the answer path) or ``direct`` (promoted as
            soon as Triton has loaded it; no live comparison).
        fraction: the canary's share of users when a rollout starts.
        shadow_sample: share of calls on which a shadowed candidate also scores.
        window_s: how long (event time) after a list is served feedback naming it still counts.
        min_outcomes: labelled shown items each arm needs before any statistical decision.
        margin: non-inferiority margin, relative to the stable arm's metric (0.05: 5%).
        alpha: error probability of the always-valid intervals (confidence 1 − alpha).
        check_interval_s: how often outcomes are read and a decision considered.
        max_error_rate / min_calls: roll back when the candidate fails more than this share of its calls
            (after ``min_calls``).
        max_p99_ms: roll back when the candidate's p99 latency exceeds this (after ``min_calls``).
        auto: decide automatically (an admin can pause this at run time).
    """

    mode: str = "canary"
    fraction: float = 0.1
    shadow_sample: float = 0.2
    window_s: float = 1800.0
    min_outcomes: int = 2000
    margin: float = 0.05
    alpha: float = 0.05
    check_interval_s: float = 5.0
    max_error_rate: float = 0.02
    min_calls: int = 50
    max_p99_ms: float = 1000.0
    auto: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ROLLOUT_MODES:
            raise ValueError(f"rollout mode must be one of {ROLLOUT_MODES}, got {self.mode!r}")
        if not 0 < self.fraction <= 1 or not 0 <= self.shadow_sample <= 1:
            raise ValueError("rollout fraction must lie in (0, 1] and shadow_sample in [0, 1]")
        if not 0 < self.alpha < 1 or self.margin < 0 or self.min_outcomes < 1 or self.window_s < 0:
            raise ValueError("need 0 < alpha < 1, margin >= 0, min_outcomes >= 1 and window_s >= 0")
