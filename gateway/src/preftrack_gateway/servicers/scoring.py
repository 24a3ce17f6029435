"""ScoringService: Score, Recommend, SimilarItems and BuyAgain (messages in, the core's dataclasses out)."""

from __future__ import annotations

import logging

import grpc

from preftrack.v1 import scoring_service_pb2, scoring_service_pb2_grpc, types_pb2
from preftrack_gateway.errors import InvalidRequestError
from preftrack_gateway.interceptors import request_id
from preftrack_gateway.lists import ListRules, days_to_s
from preftrack_gateway.metrics import GatewayMetrics
from preftrack_gateway.retrieval import Boost, ItemFilter
from preftrack_gateway.service import GatewayCore
from preftrack_gateway.servicers import request_time
from preftrack_gateway.triton import deadline_s

_LOGGER = logging.getLogger(__name__)

_BOOST_KINDS = {
    types_pb2.BOOST_TARGET_CATEGORY: "category",
    types_pb2.BOOST_TARGET_ATTRIBUTE: "attribute",
    types_pb2.BOOST_TARGET_ITEMS: "items",
}


def _attribute_values(messages) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((m.name, frozenset(m.values)) for m in messages)


def item_filter(message: types_pb2.ItemFilter) -> ItemFilter:
    """The filter of a request (not validated yet: :meth:`ListRules.validate` names the field at fault)."""
    return ItemFilter(
        in_stock_only=message.in_stock_only,
        min_price=message.min_price if message.HasField("min_price") else None,
        max_price=message.max_price if message.HasField("max_price") else None,
        categories_in=frozenset(message.categories_in),
        categories_out=frozenset(message.categories_out),
        attributes_in=_attribute_values(message.attributes_in),
        attributes_out=_attribute_values(message.attributes_out),
        exclude_bought_within_s=days_to_s("filter.exclude_bought_within_days", message.exclude_bought_within_days),
    )


def _boost(index: int, message: types_pb2.Boost) -> Boost:
    kind = _BOOST_KINDS.get(message.target)
    if kind is None:
        raise InvalidRequestError(
            f"boosts[{index}].target must be BOOST_TARGET_CATEGORY, _ATTRIBUTE or _ITEMS", field=f"boosts[{index}]"
        )
    return Boost(kind=kind, key=message.attribute, values=frozenset(message.values), factor=message.factor)


def list_rules(request) -> ListRules:
    """The business rules of a Recommend request."""
    return ListRules(
        item_filter=item_filter(request.filter),
        boosts=tuple(_boost(i, b) for i, b in enumerate(request.boosts)),
        diversity_attribute=request.diversity.attribute,
        max_per_value=int(request.diversity.max_per_value),
    )


def _scored(pairs) -> list[types_pb2.ScoredItem]:
    return [types_pb2.ScoredItem(item_id=i, score=s) for i, s in pairs]


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
            session_id=request.session_id,
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
            rules=list_rules(request),
            session_id=request.session_id,
            exploration=request.exploration if request.HasField("exploration") else None,
        )
        self._metrics.requests_by_version.labels("Recommend", str(result.model_version)).inc()
        return scoring_service_pb2.RecommendResponse(
            items=[
                types_pb2.ScoredItem(item_id=i, score=s, source=source)
                for i, s, source in zip(result.item_ids, result.scores, result.sources, strict=True)
            ],
            model_version=str(result.model_version),
            recommendation_id=result.recommendation_id,
            fewer_than_k=result.fewer_than_k,
        )

    async def SimilarItems(self, request, context):  # noqa: N802
        found = self._core.similar_items(
            request.item_id, int(request.k), ListRules(item_filter=item_filter(request.filter)), user_id=request.user_id
        )
        return scoring_service_pb2.SimilarItemsResponse(
            items=[types_pb2.ScoredItem(item_id=i, score=s, source=source) for i, s, source in found],
            fewer_than_k=len(found) < request.k,
        )

    async def BuyAgain(self, request, context):  # noqa: N802
        found = self._core.buy_again(
            request.user_id, int(request.k), ListRules(item_filter=item_filter(request.filter))
        )
        return scoring_service_pb2.BuyAgainResponse(items=_scored(found))
