"""ScoringService: Score and Recommend."""

from __future__ import annotations

import logging

import grpc

from preftrack.v1 import scoring_service_pb2, scoring_service_pb2_grpc, types_pb2
from preftrack_gateway.interceptors import request_id
from preftrack_gateway.metrics import GatewayMetrics
from preftrack_gateway.service import GatewayCore
from preftrack_gateway.servicers import request_time
from preftrack_gateway.triton import deadline_s

_LOGGER = logging.getLogger(__name__)


class ScoringServicer(scoring_service_pb2_grpc.ScoringServiceServicer):
    """Translates ScoringService messages to :class:`GatewayCore` calls."""

    def __init__(self, core: GatewayCore, metrics: GatewayMetrics) -> None:
        self._core = core
        self._metrics = metrics

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return deadline_s(context.time_remaining(), self._core.config.triton_timeout_s)

    async def Score(self, request, context):  # noqa: N802 - the proto's name
        rid = request_id.get()
        result = await self._core.score(
            request.user_id,
            list(request.item_ids),
            timeout_s=self._timeout(context),
            as_of_s=request_time(request, "as_of"),
            query=request.query,
        )
        self._metrics.requests_by_version.labels("Score", str(result.model_version)).inc()
        return scoring_service_pb2.ScoreResponse(
            items=[
                types_pb2.ScoredItem(item_id=i, score=s) for i, s in zip(result.item_ids, result.scores, strict=True)
            ],
            model_version=str(result.model_version),
            request_id=rid,
        )

    async def Recommend(self, request, context):  # noqa: N802
        result = await self._core.recommend(
            request.user_id,
            list(request.candidate_item_ids),
            int(request.k),
            list(request.exclude_item_ids),
            timeout_s=self._timeout(context),
            as_of_s=request_time(request, "as_of"),
            query=request.query,
        )
        self._metrics.requests_by_version.labels("Recommend", str(result.model_version)).inc()
        return scoring_service_pb2.RecommendResponse(
            items=[
                types_pb2.ScoredItem(item_id=i, score=s) for i, s in zip(result.item_ids, result.scores, strict=True)
            ],
            model_version=str(result.model_version),
            recommendation_id=result.recommendation_id,
        )
