"""Client of the gateway's admin API (``preftrack.admin.v1``): versions, rollouts, the journal.

    from preftrack.admin import AdminClient
    with AdminClient("localhost:50051", api_key=ADMIN_KEY) as admin:
        admin.start_rollout(7, mode="canary", fraction=0.1)
        print(admin.rollout())

Errors are the SDK's (:mod:`preftrack.errors`); a client key gets :class:`~preftrack.errors.PermissionDeniedError`.
"""

from __future__ import annotations

import dataclasses
import json

from preftrack._channel import TLS, StubClient
from preftrack._convert import seconds
from preftrack.admin.v1 import admin_service_pb2 as pb
from preftrack.admin.v1 import admin_service_pb2_grpc
from preftrack.errors import InvalidRequestError

_MODES = {"canary": pb.ROLLOUT_MODE_CANARY, "shadow": pb.ROLLOUT_MODE_SHADOW, "direct": pb.ROLLOUT_MODE_DIRECT}
_MODE_NAMES = {value: name for name, value in _MODES.items()}


@dataclasses.dataclass(frozen=True)
class Version:
    """A registered model version."""

    version: int
    state: str
    parent: int | None
    note: str
    metrics: dict[str, object]
    created_at: float
    updated_at: float


@dataclasses.dataclass(frozen=True)
class Arm:
    """Labelled outcomes of one arm's shown items."""

    arm: str
    outcomes: int
    positives: int
    positive_rate: float
    log_loss: float
    auc: float


@dataclasses.dataclass(frozen=True)
class Rollout:
    """The rollout now, as one gateway replica sees it."""

    stable_version: int | None
    candidate_version: int | None
    mode: str
    fraction: float
    paused: bool
    pinned_version: int | None
    arms: tuple[Arm, ...]
    comparison: dict[str, object] | None
    candidate_calls: int
    candidate_errors: int
    candidate_p99_ms: float
    shadow: dict[str, float]


@dataclasses.dataclass(frozen=True)
class JournalEntry:
    """A transition, rollout change or check, with who, why and the numbers."""

    seq: int
    version: int
    kind: str
    at: float
    actor: str
    message: str
    details: dict[str, object]


@dataclasses.dataclass(frozen=True)
class Erasure:
    """A forgotten user, as recorded: it names no one; keep ``ticket`` beside your record of the request."""

    ticket: str
    erased_at: float
    actor: str
    events_deleted: int
    impressions_deleted: int
    position: int = 0


class AdminClient(StubClient):
    """Talks to a gateway's AdminService. ``api_key`` is an admin key (PREFTRACK_ADMIN_KEYS)."""

    def __init__(
        self, target: str, *, api_key: str | None = None, timeout_s: float = 30.0, tls: TLS | None = None
    ) -> None:
        stub = admin_service_pb2_grpc.AdminServiceStub
        super().__init__(stub, target, api_key=api_key, timeout_s=timeout_s, tls=tls)

    def versions(self) -> list[Version]:
        """Every registered version, newest first."""
        response = self._call(self._stub.ListVersions, pb.ListVersionsRequest())
        return [
            Version(
                version=v.version,
                state=v.state,
                parent=v.parent or None,
                note=v.note,
                metrics=json.loads(v.metrics_json or "{}"),
                created_at=seconds(v.created_at),
                updated_at=seconds(v.updated_at),
            )
            for v in response.versions
        ]

    def rollout(self) -> Rollout:
        """The rollout in progress (if any) with per-arm outcomes and the sequential comparison."""
        r = self._call(self._stub.GetRollout, pb.GetRolloutRequest())
        return Rollout(
            stable_version=r.stable_version or None,
            candidate_version=r.candidate_version or None,
            mode=_MODE_NAMES.get(r.mode, ""),
            fraction=r.fraction,
            paused=r.paused,
            pinned_version=r.pinned_version or None,
            arms=tuple(Arm(a.arm, a.outcomes, a.positives, a.positive_rate, a.log_loss, a.auc) for a in r.arms),
            comparison=None
            if not r.HasField("comparison")
            else {
                "metric": r.comparison.metric,
                "difference": r.comparison.difference,
                "low": r.comparison.low,
                "high": r.comparison.high,
                "margin": r.comparison.margin,
                "decision": r.comparison.decision,
                "reason": r.comparison.reason,
            },
            candidate_calls=r.candidate_calls,
            candidate_errors=r.candidate_errors,
            candidate_p99_ms=r.candidate_p99_ms,
            shadow={
                "outcomes": r.shadow_outcomes,
                "stable_log_loss": r.shadow_stable_log_loss,
                "candidate_log_loss": r.shadow_candidate_log_loss,
            },
        )

    def start_rollout(self, version: int, *, mode: str = "canary", fraction: float = 0.0, reason: str = "") -> Version:
        """Roll out ``version`` as ``canary`` (``fraction`` of users; 0: the gateway's default), ``shadow`` or
        ``direct``."""
        if mode not in _MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(_MODES)}", "INVALID_ARGUMENT")
        request = pb.StartRolloutRequest(version=version, mode=_MODES[mode], fraction=fraction, reason=reason)
        v = self._call(self._stub.StartRollout, request).version
        return Version(
            v.version,
            v.state,
            v.parent or None,
            v.note,
            json.loads(v.metrics_json or "{}"),
            seconds(v.created_at),
            seconds(v.updated_at),
        )

    def set_fraction(self, fraction: float) -> None:
        self._call(self._stub.SetRolloutFraction, pb.SetRolloutFractionRequest(fraction=fraction))

    def promote(self, reason: str = "") -> int:
        """Promote the candidate; returns the new stable version."""
        return self._call(self._stub.Promote, pb.PromoteRequest(reason=reason)).stable_version

    def roll_back(self, reason: str = "") -> int:
        """Roll back the candidate (or, with none, the stable version); returns the version serving after."""
        return self._call(self._stub.RollBack, pb.RollBackRequest(reason=reason)).stable_version

    def pause(self, paused: bool = True) -> None:
        """Pause (or resume) automatic decisions."""
        self._call(self._stub.PauseDecisions, pb.PauseDecisionsRequest(paused=paused))

    def pin(self, version: int | None) -> None:
        """Serve ``version`` as stable and ship nothing automatically (None: unpin)."""
        self._call(self._stub.PinVersion, pb.PinVersionRequest(version=version or 0))

    def journal(self, *, version: int | None = None, kind: str = "", limit: int = 1000) -> list[JournalEntry]:
        """The newest ``limit`` journal entries (of one version / kind), oldest first."""
        response = self._call(
            self._stub.ListJournal, pb.ListJournalRequest(version=version or 0, kind=kind, limit=limit)
        )
        return [
            JournalEntry(
                e.seq, e.version, e.kind, seconds(e.at), e.actor, e.message, json.loads(e.details_json or "{}")
            )
            for e in response.entries
        ]

    def routes(self, user_ids: list[str]) -> list[tuple[int, str]]:
        """(version, arm) each user is routed to now."""
        out: list[tuple[int, str]] = []
        for start in range(0, len(user_ids), 20_000):
            r = self._call(self._stub.ExplainRoutes, pb.ExplainRoutesRequest(user_ids=user_ids[start : start + 20_000]))
            out.extend(zip(r.versions, r.arms, strict=True))
        return out

    def forget_user(self, user_id: str) -> Erasure:
        """Erase a user's events, served lists and real-time state (see docs/privacy.md); returns the record."""
        e = self._call(self._stub.ForgetUser, pb.ForgetUserRequest(user_id=user_id)).erasure
        return Erasure(e.ticket, seconds(e.erased_at), e.actor, e.events_deleted, e.impressions_deleted)

    def erasures(self, *, after: int = 0, limit: int = 1000) -> list[Erasure]:
        """Recorded erasures after position ``after``, oldest first (each with its ``position``)."""
        r = self._call(self._stub.ListErasures, pb.ListErasuresRequest(after=after, limit=limit))
        return [
            Erasure(e.ticket, seconds(e.erased_at), e.actor, e.events_deleted, e.impressions_deleted, position)
            for e, position in zip(r.erasures, r.positions, strict=True)
        ]


__all__ = ["AdminClient", "Arm", "Erasure", "JournalEntry", "Rollout", "Version"]
