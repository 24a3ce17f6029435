"""What a rollout's arms have shown: labelled outcomes of served lists read from the store, and the candidate's
call health. :mod:`preftrack_gateway.rollout` decides on them.

A served list (an impression, which carries its arm) is labelled once ``window_s`` of event time has passed
after it was served: each shown item is positive when a positive event for it carries the list's
``recommendation_id``. Impressions and events are read from the store, so every gateway replica sees the same
outcomes. A shadow impression (``<id>:shadow``) holds the candidate's scores for the items the stable version
showed, so both versions' log loss can be compared on the same items.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from preftrack_gateway import sequential
from preftrack_gateway.features import FeatureSpec
from preftrack_gateway.policy import RolloutPolicy
from preftrack_gateway.store import EventStore, Impression

_EPS = 1e-7


def _log_loss(p: float, y: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    y = np.asarray(labels)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.asarray(scores), kind="stable"), kind="stable") + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclasses.dataclass
class ArmOutcomes:
    """Labelled outcomes of one arm's shown items."""

    n: int = 0
    positives: int = 0
    loss_sum: float = 0.0
    scores: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=50_000))
    labels: deque[float] = dataclasses.field(default_factory=lambda: deque(maxlen=50_000))

    def add(self, score: float, label: float) -> None:
        self.n += 1
        self.positives += int(label)
        self.loss_sum += _log_loss(score, label)
        self.scores.append(score)
        self.labels.append(label)

    def summary(self) -> dict[str, float | int]:
        return {
            "outcomes": self.n,
            "positives": self.positives,
            "positive_rate": self.positives / self.n if self.n else float("nan"),
            "log_loss": self.loss_sum / self.n if self.n else float("nan"),
            "auc": _auc(self.scores, self.labels),
        }


class OutcomeTracker:
    """Per-arm outcomes of one candidate's rollout, read from the store's impressions and events."""

    def __init__(self, store: EventStore, spec: FeatureSpec, candidate: int, window_s: float, since_s: float) -> None:
        self.store = store
        self.spec = spec
        self.candidate = candidate
        self.window_s = window_s
        self.since_s = since_s
        self.arms: dict[str, ArmOutcomes] = {"stable": ArmOutcomes(), "canary": ArmOutcomes()}
        self.paired_stable: list[float] = []
        self.paired_candidate: list[float] = []
        self._open: dict[str, tuple[Impression, set[str]]] = {}
        self._shadow: dict[str, Impression] = {}
        self._seen: dict[str, float] = {}
        self._impressions_after = since_s
        self._seq: int | None = None
        self._clock = -math.inf

    async def poll(self) -> None:
        """Read new impressions and feedback; label the lists whose window has closed."""
        if self._seq is None:
            self._seq = await self.store.last_seq()
        for impression in await self.store.impressions_after(self._impressions_after - 5.0, limit=200_000):
            key = impression.recommendation_id
            if key in self._seen or impression.timestamp_s < self.since_s:
                continue
            self._seen[key] = impression.timestamp_s
            if impression.arm == "shadow":
                if impression.model_version == str(self.candidate):
                    self._shadow[key.removesuffix(":shadow")] = impression
            else:
                self._open[key] = (impression, set())
            self._impressions_after = max(self._impressions_after, impression.timestamp_s)
        async for batch in self.store.events(after_seq=self._seq):
            for seq, event in batch:
                self._seq = seq
                self._clock = max(self._clock, event.timestamp_s)
                entry = self._open.get(event.recommendation_id or "")
                if (
                    entry is not None
                    and self.spec.is_positive(event.event_type, event.value)
                    and event.timestamp_s <= entry[0].timestamp_s + self.window_s
                ):
                    entry[1].add(event.item_id)
        self._close()

    def _close(self) -> None:
        closed = [k for k, (imp, _) in self._open.items() if imp.timestamp_s + self.window_s < self._clock]
        for key in closed:
            impression, positive = self._open.pop(key)
            arm = self.arms.setdefault(impression.arm, ArmOutcomes())
            labels = [1.0 if item in positive else 0.0 for item in impression.item_ids]
            for score, label in zip(impression.scores, labels, strict=True):
                arm.add(score, label)
            shadow = self._shadow.pop(key, None)
            if shadow is not None and shadow.item_ids == impression.item_ids:
                for served, candidate, label in zip(impression.scores, shadow.scores, labels, strict=True):
                    self.paired_stable.append(_log_loss(served, label))
                    self.paired_candidate.append(_log_loss(candidate, label))
        horizon = self._impressions_after - 60.0
        self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
        self._shadow = {k: v for k, v in self._shadow.items() if v.timestamp_s >= horizon - self.window_s}

    def compare(self, mode: str, policy: RolloutPolicy) -> sequential.Comparison:
        """The sequential comparison this rollout's mode decides on."""
        if mode == "shadow":
            return sequential.compare_paired_losses(
                np.array(self.paired_stable),
                np.array(self.paired_candidate),
                relative_margin=policy.margin,
                alpha=policy.alpha,
                min_outcomes=policy.min_outcomes,
            )
        stable, canary = self.arms["stable"], self.arms["canary"]
        return sequential.compare_rates(
            stable.positives,
            stable.n,
            canary.positives,
            canary.n,
            relative_margin=policy.margin,
            alpha=policy.alpha,
            min_outcomes=policy.min_outcomes,
        )

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {arm: outcomes.summary() for arm, outcomes in self.arms.items()}
        if self.paired_stable:
            out["shadow"] = {
                "paired_outcomes": len(self.paired_stable),
                "stable_log_loss": float(np.mean(self.paired_stable)),
                "candidate_log_loss": float(np.mean(self.paired_candidate)),
            }
        out["open_lists"] = len(self._open)
        return out


class CallHealth:
    """The candidate arm's calls in this replica: failures and latency (the SLO side of a decision)."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.latencies_ms: deque[float] = deque(maxlen=10_000)

    def observe(self, ok: bool, latency_s: float) -> None:
        self.calls += 1
        self.errors += 0 if ok else 1
        self.latencies_ms.append(latency_s * 1000.0)

    def summary(self) -> dict[str, float | int]:
        p99 = float(np.percentile(np.array(self.latencies_ms), 99)) if self.latencies_ms else float("nan")
        return {"calls": self.calls, "errors": self.errors, "p99_ms": p99}

    def breach(self, policy: RolloutPolicy) -> str | None:
        if self.calls < policy.min_calls:
            return None
        if self.errors / self.calls > policy.max_error_rate:
            return f"error rate {self.errors / self.calls:.3f} > {policy.max_error_rate} over {self.calls} calls"
        p99 = self.summary()["p99_ms"]
        if p99 > policy.max_p99_ms:
            return f"p99 latency {p99:.0f} ms > {policy.max_p99_ms:.0f} ms over {self.calls} calls"
        return None
