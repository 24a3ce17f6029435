"""FeedbackService: SendFeedback, StreamFeedback, UpsertItems, UpsertUsers and IdentifyUser."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from preftrack.v1 import feedback_service_pb2, feedback_service_pb2_grpc, types_pb2
from preftrack_gateway.errors import InvalidRequestError, OverloadedError
from preftrack_gateway.ingest import WriteResult
from preftrack_gateway.metrics import GatewayMetrics
from preftrack_gateway.schema import Event, EventValidationError, Item, query_terms
from preftrack_gateway.service import GatewayCore, pseudonymous_user

_LOGGER = logging.getLogger(__name__)

_EVENT_TYPES = {
    types_pb2.EVENT_TYPE_VIEW: "view",
    types_pb2.EVENT_TYPE_CLICK: "click",
    types_pb2.EVENT_TYPE_ADD_TO_CART: "add_to_cart",
    types_pb2.EVENT_TYPE_PURCHASE: "purchase",
    types_pb2.EVENT_TYPE_RATING: "rating",
    types_pb2.EVENT_TYPE_SEARCH: "search",
}
# Commits a stream may have in flight before it waits for the oldest.
_MAX_STREAM_IN_FLIGHT = 8
#: Refused events of a stream answered one by one; the rest are only counted (the answer must always fit).
MAX_REJECTIONS_LISTED = 1000


def to_event(message: types_pb2.Event, now_s: float, user_id: str) -> Event:
    """A schema Event from its message, with ``user_id`` (the pseudonym); EventValidationError if unknown type."""
    kind = _EVENT_TYPES.get(message.type)
    if kind is None:
        raise EventValidationError(
            "type", f"unknown or unset event type {message.type}; use one of EVENT_TYPE_VIEW ... EVENT_TYPE_SEARCH"
        )
    value = message.value if (message.value != 0.0 or kind == "rating") else 1.0
    if message.HasField("time") and not 0 <= message.time.nanos < 1_000_000_000:
        raise EventValidationError("time", "nanos must lie in [0, 999999999]")
    timestamp = message.time.seconds + message.time.nanos / 1e9 if message.HasField("time") else now_s
    if message.query and kind != "search":
        raise EventValidationError("query", f"only EVENT_TYPE_SEARCH events carry a query, not {kind}")
    return Event(
        event_id=message.event_id,
        user_id=user_id,
        item_id=message.item_id,
        event_type=kind,
        value=value,
        timestamp_s=timestamp,
        recommendation_id=message.recommendation_id or None,
        context=dict(message.context) if len(message.context) else {},  # dict() of a map is slow even when empty
        query_terms=query_terms(message.query) if kind == "search" else (),
    )


class FeedbackServicer(feedback_service_pb2_grpc.FeedbackServiceServicer):
    """Translates FeedbackService messages to :class:`GatewayCore` calls."""

    def __init__(self, core: GatewayCore, metrics: GatewayMetrics) -> None:
        self._core = core
        self._metrics = metrics
        self.open_streams = 0
        # Streams take turns preparing their messages: with hundreds of streams at once, each turn of the event
        # loop would otherwise run every stream's message before a health check or a Score gets its turn.
        self._preparing = asyncio.Semaphore(2)

    def _prepare(self, message: types_pb2.Event, now_s: float) -> Event:
        user_key = pseudonymous_user(self._core, message.user_id, message.session_id)
        return self._core.check(to_event(message, now_s, user_key), now_s=now_s)

    def _count(self, result: WriteResult) -> None:
        self._metrics.events.labels("accepted").inc(result.accepted)
        self._metrics.events.labels("duplicate").inc(result.duplicates)

    async def SendFeedback(self, request, context):  # noqa: N802 - the proto's name
        limit = self._core.config.max_events_per_call
        if not request.events:
            raise InvalidRequestError("events must hold at least one event")
        if len(request.events) > limit:
            raise InvalidRequestError(f"events has {len(request.events)} events; at most {limit} per call")
        now = time.time()
        prepared = []
        for index, message in enumerate(request.events):
            try:
                prepared.append(self._prepare(message, now))
            except EventValidationError as exc:
                self._metrics.events.labels("rejected").inc(len(request.events))
                raise InvalidRequestError(
                    f"events[{index}].{exc} (event_id {message.event_id!r}); nothing in this call was stored"
                ) from exc
        result = await self._core.ingest(prepared)
        self._count(result)
        return feedback_service_pb2.SendFeedbackResponse(accepted=result.accepted, duplicates=result.duplicates)

    async def StreamFeedback(self, request_iterator, context):  # noqa: N802
        """Admits at most ``max_streams`` streams at once (the rest are refused before any event is read, with a
        retry hint); an admitted stream is never refused for load: it waits for room in the commit queue."""
        most = self._core.config.max_streams
        if self.open_streams >= most:
            raise OverloadedError(
                f"{most} feedback streams are open (PREFTRACK_MAX_STREAMS); nothing of this one was read, retry it",
                retry_after_s=random.uniform(0.5, 1.5),
            )
        self.open_streams += 1
        try:
            return await self._stream(request_iterator)
        finally:
            self.open_streams -= 1

    async def _stream(self, request_iterator):
        limit = self._core.config.max_stream_events
        seen = 0
        rejected: list[feedback_service_pb2.RejectedEvent] = []
        rejected_count = 0
        by_field: dict[str, int] = {}
        in_flight: list[asyncio.Future[WriteResult]] = []
        accepted = duplicates = 0

        async def settle(keep: int) -> None:
            nonlocal accepted, duplicates
            while len(in_flight) > keep:
                result = await in_flight.pop(0)
                accepted += result.accepted
                duplicates += result.duplicates
                self._count(result)

        async for request in request_iterator:
            seen += len(request.events)
            if seen > limit:
                await settle(0)
                raise InvalidRequestError(
                    f"a stream may carry at most {limit} events; the first {accepted + duplicates} were stored, "
                    "send the rest in a new stream"
                )
            now = time.time()
            prepared = []
            async with self._preparing:
                for message in request.events:
                    try:
                        prepared.append(self._prepare(message, now))
                    except EventValidationError as exc:
                        rejected_count += 1
                        by_field[exc.field] = by_field.get(exc.field, 0) + 1
                        if len(rejected) < MAX_REJECTIONS_LISTED:
                            rejected.append(
                                feedback_service_pb2.RejectedEvent(
                                    event_id=message.event_id[:256], reason=str(exc)[:500]
                                )
                            )
            if prepared:
                in_flight.append(await self._core.writer.submit_when_room(prepared))
                await settle(_MAX_STREAM_IN_FLIGHT)
        await settle(0)
        self._metrics.events.labels("rejected").inc(rejected_count)
        return feedback_service_pb2.StreamFeedbackResponse(
            accepted=accepted,
            duplicates=duplicates,
            rejected=rejected,
            rejected_count=rejected_count,
            rejected_by_field=by_field,
        )

    async def UpsertItems(self, request, context):  # noqa: N802
        if not request.items:
            raise InvalidRequestError("items must hold at least one item")
        items = [
            Item(
                item_id=m.item_id,
                categories=tuple(m.categories),
                price=float(m.price),
                title=m.title,
                attributes=tuple(sorted(m.attributes.items())),
                stock=int(m.stock) if m.HasField("stock") else None,
            )
            for m in request.items
        ]
        return feedback_service_pb2.UpsertItemsResponse(upserted=await self._core.upsert_items(items))

    async def UpsertUsers(self, request, context):  # noqa: N802
        if not request.users:
            raise InvalidRequestError("users must hold at least one user")
        users = [(m.user_id, tuple(m.attributes.items())) for m in request.users]
        return feedback_service_pb2.UpsertUsersResponse(upserted=await self._core.upsert_users(users))

    async def IdentifyUser(self, request, context):  # noqa: N802
        moved, already = await self._core.identify_user(request.session_id, request.user_id)
        return feedback_service_pb2.IdentifyUserResponse(events_moved=moved, already_merged=already)
