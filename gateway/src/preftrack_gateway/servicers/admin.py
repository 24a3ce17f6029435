"""AdminService: versions, rollouts and the journal, over the rollout controller (admin keys only)."""

from __future__ import annotations

import json
import math

from preftrack.admin.v1 import admin_service_pb2 as pb
from preftrack.admin.v1 import admin_service_pb2_grpc
from preftrack_gateway.errors import InvalidRequestError
from preftrack_gateway.registry import TransitionError
from preftrack_gateway.rollout import RolloutConflictError
from preftrack_gateway.service import GatewayCore, pseudonymous_user
from preftrack_gateway.servicers import timestamp
from preftrack_gateway.store import Erasure, JournalEntry, VersionRecord

_MODES = {pb.ROLLOUT_MODE_CANARY: "canary", pb.ROLLOUT_MODE_SHADOW: "shadow", pb.ROLLOUT_MODE_DIRECT: "direct"}
_MODE_ENUM = {name: value for value, name in _MODES.items()}
MAX_EXPLAIN_USERS = 100_000
ACTOR = "admin"


def _version(record: VersionRecord) -> pb.Version:
    return pb.Version(
        version=record.version,
        state=record.state,
        parent=record.parent or 0,
        first_seq=record.first_seq,
        last_seq=record.last_seq,
        note=record.note,
        metrics_json=json.dumps(record.metrics, default=str, sort_keys=True),
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
    )


def _entry(entry: JournalEntry) -> pb.JournalEntry:
    return pb.JournalEntry(
        seq=entry.seq,
        version=entry.version,
        kind=entry.kind,
        at=timestamp(entry.at),
        actor=entry.actor,
        message=entry.message,
        details_json=json.dumps(entry.details, default=str, sort_keys=True),
    )


def _erasure(erasure: Erasure) -> pb.Erasure:
    return pb.Erasure(
        ticket=erasure.ticket,
        erased_at=timestamp(erasure.at),
        actor=erasure.actor,
        events_deleted=erasure.events_deleted,
        impressions_deleted=erasure.impressions_deleted,
    )


def _reason(text: str, default: str) -> str:
    if len(text) > 500:
        raise InvalidRequestError("reason must be at most 500 characters")
    return text.strip() or default


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """Translates AdminService messages to :class:`~preftrack_gateway.rollout.RolloutController` calls.

    A refused transition or a rollout in the wrong state is FAILED_PRECONDITION with the reason."""

    def __init__(self, core: GatewayCore) -> None:
        self._core = core

    @property
    def _rollout(self):
        return self._core.rollout

    async def _refresh(self) -> None:
        await self._core.refresh_readiness()

    async def ListVersions(self, request, context):  # noqa: N802 - the proto's name
        records = await self._rollout.registry.versions()
        return pb.ListVersionsResponse(versions=[_version(r) for r in sorted(records, key=lambda r: -r.version)])

    async def GetRollout(self, request, context):  # noqa: N802
        status = self._rollout.status()
        arms_data = status["arms"] or {}
        arms = [
            pb.ArmOutcomes(
                arm=name,
                outcomes=int(data["outcomes"]),
                positives=int(data["positives"]),
                positive_rate=_number(data["positive_rate"]),
                log_loss=_number(data["log_loss"]),
                auc=_number(data["auc"]),
            )
            for name, data in arms_data.items()
            if name in ("stable", "canary")
        ]
        shadow = arms_data.get("shadow") or {}
        comparison = status["comparison"]
        calls = status["calls"]
        return pb.GetRolloutResponse(
            stable_version=status["stable"] or 0,
            candidate_version=status["candidate"] or 0,
            mode=_MODE_ENUM.get(status["mode"], pb.ROLLOUT_MODE_UNSPECIFIED),
            fraction=status["fraction"],
            paused=status["paused"],
            pinned_version=status["pinned"] or 0,
            arms=arms,
            comparison=None
            if comparison is None
            else pb.Comparison(
                metric=comparison["metric"],
                difference=comparison["difference"],
                low=comparison["low"],
                high=comparison["high"],
                margin=comparison["margin"],
                decision=comparison["decision"],
                reason=comparison["reason"],
            ),
            candidate_calls=int(calls["calls"]),
            candidate_errors=int(calls["errors"]),
            candidate_p99_ms=_number(calls["p99_ms"]),
            shadow_outcomes=int(shadow.get("paired_outcomes", 0)),
            shadow_stable_log_loss=_number(shadow.get("stable_log_loss")),
            shadow_candidate_log_loss=_number(shadow.get("candidate_log_loss")),
        )

    async def StartRollout(self, request, context):  # noqa: N802
        if request.version < 1:
            raise InvalidRequestError("version must be >= 1")
        mode = _MODES.get(request.mode)
        if mode is None:
            raise InvalidRequestError("mode must be ROLLOUT_MODE_CANARY, ROLLOUT_MODE_SHADOW or ROLLOUT_MODE_DIRECT")
        if not math.isfinite(request.fraction) or not 0 <= request.fraction <= 1:
            raise InvalidRequestError("fraction must lie in (0, 1], or 0 for the gateway's default")
        reason = _reason(request.reason, f"started by an admin as {mode}")
        try:
            record = await self._rollout.start(
                int(request.version), mode, request.fraction or None, actor=ACTOR, reason=reason
            )
        except TransitionError as exc:
            raise RolloutConflictError(str(exc)) from exc
        await self._refresh()
        return pb.StartRolloutResponse(version=None if record is None else _version(record))

    async def SetRolloutFraction(self, request, context):  # noqa: N802
        if not math.isfinite(request.fraction) or not 0 < request.fraction <= 1:
            raise InvalidRequestError("fraction must lie in (0, 1]")
        await self._rollout.set_fraction(request.fraction, actor=ACTOR)
        await self._refresh()
        return pb.SetRolloutFractionResponse()

    async def Promote(self, request, context):  # noqa: N802
        version = await self._rollout.promote(actor=ACTOR, reason=_reason(request.reason, "promoted by an admin"))
        await self._refresh()
        return pb.PromoteResponse(stable_version=version)

    async def RollBack(self, request, context):  # noqa: N802
        version = await self._rollout.roll_back(actor=ACTOR, reason=_reason(request.reason, "rolled back by an admin"))
        await self._refresh()
        return pb.RollBackResponse(stable_version=version)

    async def PauseDecisions(self, request, context):  # noqa: N802
        await self._rollout.pause(bool(request.paused), actor=ACTOR)
        return pb.PauseDecisionsResponse()

    async def PinVersion(self, request, context):  # noqa: N802
        if request.version < 0:
            raise InvalidRequestError("version must be >= 1, or 0 to unpin")
        try:
            await self._rollout.pin(int(request.version) or None, actor=ACTOR)
        except TransitionError as exc:
            raise RolloutConflictError(str(exc)) from exc
        await self._refresh()
        return pb.PinVersionResponse()

    async def ListJournal(self, request, context):  # noqa: N802
        if request.version < 0 or request.limit < 0:
            raise InvalidRequestError("version and limit must be >= 0")
        if len(request.kind) > 32:
            raise InvalidRequestError("kind must be at most 32 characters")
        limit = min(request.limit or 1000, 10_000)
        entries = await self._rollout.store.journal(
            version=request.version or None, kind=request.kind or None, limit=limit, newest=True
        )
        return pb.ListJournalResponse(entries=[_entry(e) for e in entries])

    async def ExplainRoutes(self, request, context):  # noqa: N802
        if len(request.user_ids) > MAX_EXPLAIN_USERS:
            raise InvalidRequestError(f"at most {MAX_EXPLAIN_USERS} user_ids per call")
        versions, arms = [], []
        for index, user_id in enumerate(request.user_ids):
            try:
                key = pseudonymous_user(self._core, user_id)
            except ValueError as exc:
                raise InvalidRequestError(f"user_ids[{index}]: {exc}") from exc
            route = self._rollout.route(key)
            versions.append(route.version)
            arms.append(route.arm)
        return pb.ExplainRoutesResponse(versions=versions, arms=arms)

    async def ForgetUser(self, request, context):  # noqa: N802
        erasure = await self._core.forget_user(request.user_id, actor=ACTOR)
        return pb.ForgetUserResponse(erasure=_erasure(erasure))

    async def ListErasures(self, request, context):  # noqa: N802
        if request.limit < 0 or request.after < 0:
            raise InvalidRequestError("after and limit must be >= 0")
        limit = min(request.limit or 1000, 1000)
        erasures = await self._core.store.erasures(after_seq=request.after, limit=limit)
        return pb.ListErasuresResponse(erasures=[_erasure(e) for e in erasures], positions=[e.seq for e in erasures])
