"""InsightsService: GetProfile, RankAudience and GetTrends (analyst or admin keys; see the interceptor)."""

from __future__ import annotations

from preftrack.insights.v1 import insights_service_pb2 as pb
from preftrack.insights.v1 import insights_service_pb2_grpc
from preftrack_gateway.errors import InvalidRequestError
from preftrack_gateway.insights import Insights
from preftrack_gateway.profile import Affinity, Shift
from preftrack_gateway.service import GatewayCore
from preftrack_gateway.servicers import request_time, timestamp
from preftrack_gateway.triton import deadline_s

_DIRECTIONS = {"rising": pb.DIRECTION_RISING, "falling": pb.DIRECTION_FALLING, "steady": pb.DIRECTION_STEADY}


def _affinity(a: Affinity) -> pb.Affinity:
    return pb.Affinity(
        key=a.key,
        score=a.score,
        short_term=a.short,
        long_term=a.long,
        trend=a.trend,
        direction=_DIRECTIONS.get(a.direction, pb.DIRECTION_STEADY),
    )


def _shift(s: Shift) -> pb.Shift:
    return pb.Shift(time=timestamp(s.at_s), event_index=s.event_index, before=list(s.before), after=list(s.after))


class InsightsServicer(insights_service_pb2_grpc.InsightsServiceServicer):
    """Translates InsightsService messages to :class:`~preftrack_gateway.insights.Insights` calls."""

    def __init__(self, core: GatewayCore) -> None:
        self._core = core
        self._insights = Insights(core)

    async def GetProfile(self, request, context):  # noqa: N802 - the proto's name
        answer = await self._insights.profile(
            request.user_id,
            as_of_s=request_time(request, "as_of"),
            top=int(request.top),
            history_points=int(request.history_points),
        )
        profile = answer.profile
        return pb.GetProfileResponse(
            as_of=timestamp(profile.as_of_s),
            events_used=profile.events_used,
            categories=[_affinity(a) for a in profile.categories],
            attributes=[_affinity(a) for a in profile.attributes],
            items=[_affinity(a) for a in profile.items],
            shifts=[_shift(s) for s in profile.shifts],
            last_shift=_shift(profile.last_shift) if profile.last_shift is not None else None,
            history=[pb.HistoryPoint(time=timestamp(t), category_shares=shares) for t, shares in answer.history],
        )

    async def RankAudience(self, request, context):  # noqa: N802
        target = request.WhichOneof("target")
        chunks = self._insights.audience(
            list(request.user_ids),
            item_id=request.item_id if target == "item_id" else "",
            category=request.category if target == "category" else "",
            k=int(request.k),
            min_score=float(request.min_score),
            as_of_s=request_time(request, "as_of"),
            timeout_s=deadline_s(context.time_remaining(), self._core.config.triton_timeout_s),
        )
        async for chunk in chunks:
            yield pb.RankAudienceResponse(
                members=[pb.AudienceMember(user_id=u, score=s) for u, s in chunk.members],
                model_version=str(chunk.model_version),
                ranked=chunk.ranked or 0,
                done=chunk.ranked is not None,
            )

    async def GetTrends(self, request, context):  # noqa: N802
        window_s = 0.0
        if request.HasField("window"):
            window_s = request.window.seconds + request.window.nanos / 1e9
            if window_s <= 0:
                raise InvalidRequestError("window must be positive (1 minute to 365 days)")
        trends = await self._insights.trends(
            window_s=window_s, top=int(request.top), as_of_s=request_time(request, "as_of")
        )

        def message(t) -> pb.Trend:
            return pb.Trend(
                key=t.key,
                kind=t.kind,
                share_recent=t.share_recent,
                share_before=t.share_before,
                change=t.change,
                events_recent=t.events_recent,
                events_before=t.events_before,
            )

        return pb.GetTrendsResponse(
            rising=[message(t) for t in trends.rising],
            falling=[message(t) for t in trends.falling],
            window_start=timestamp(trends.start_s),
            window_end=timestamp(trends.end_s),
            events_recent=trends.events_recent,
            events_before=trends.events_before,
        )
