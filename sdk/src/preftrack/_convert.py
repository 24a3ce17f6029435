"""The one module of the SDK that touches protobuf messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from preftrack.types import (
    EventType,
    FeedbackEvent,
    FeedbackSummary,
    Item,
    Recommendation,
    RejectedEvent,
    ScoredItem,
    Scores,
    User,
)
from preftrack.v1 import feedback_service_pb2, scoring_service_pb2, types_pb2

_EVENT_TYPES = {
    EventType.VIEW: types_pb2.EVENT_TYPE_VIEW,
    EventType.CLICK: types_pb2.EVENT_TYPE_CLICK,
    EventType.ADD_TO_CART: types_pb2.EVENT_TYPE_ADD_TO_CART,
    EventType.PURCHASE: types_pb2.EVENT_TYPE_PURCHASE,
    EventType.RATING: types_pb2.EVENT_TYPE_RATING,
    EventType.SEARCH: types_pb2.EVENT_TYPE_SEARCH,
}


def event_type(value: EventType | str) -> int:
    """Proto enum value of an event type; raises ValueError naming the accepted values."""
    try:
        return _EVENT_TYPES[EventType(value)]
    except ValueError:
        raise ValueError(
            f"unknown event_type {value!r}; expected one of {', '.join(t.value for t in EventType)}"
        ) from None


def event(e: FeedbackEvent) -> types_pb2.Event:
    ts = timestamp(e.timestamp_s)
    return types_pb2.Event(
        event_id=e.event_id,
        user_id=e.user_id,
        item_id=e.item_id,
        type=event_type(e.event_type),  # type: ignore[arg-type]
        value=e.value,
        time=ts,
        recommendation_id=e.recommendation_id or "",
        context=dict(e.context),
        query=e.query,
    )


def timestamp(seconds: float) -> Timestamp:
    """A Timestamp of seconds since the epoch (the SDK's clients share it)."""
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def seconds(stamp: Timestamp) -> float:
    """Seconds since the epoch of a Timestamp."""
    return stamp.seconds + stamp.nanos / 1e9


def score_request(
    user_id: str,
    item_ids: Sequence[str],
    context: Mapping[str, str] | None,
    as_of_s: float | None = None,
    query: str = "",
):
    request = scoring_service_pb2.ScoreRequest(
        user_id=user_id, item_ids=list(item_ids), context=dict(context or {}), query=query
    )
    if as_of_s is not None:
        request.as_of.CopyFrom(timestamp(as_of_s))
    return request


def recommend_request(
    user_id: str,
    candidates: Sequence[str],
    k: int,
    exclude: Sequence[str],
    context: Mapping[str, str] | None,
    as_of_s: float | None = None,
    query: str = "",
):
    request = scoring_service_pb2.RecommendRequest(
        user_id=user_id,
        candidate_item_ids=list(candidates),
        k=k,
        exclude_item_ids=list(exclude),
        context=dict(context or {}),
        query=query,
    )
    if as_of_s is not None:
        request.as_of.CopyFrom(timestamp(as_of_s))
    return request


def _scored(items) -> tuple[ScoredItem, ...]:
    return tuple(ScoredItem(i.item_id, float(i.score)) for i in items)


def scores(response: scoring_service_pb2.ScoreResponse) -> Scores:
    return Scores(_scored(response.items), response.model_version, response.request_id)


def recommendation(response: scoring_service_pb2.RecommendResponse) -> Recommendation:
    return Recommendation(_scored(response.items), response.model_version, response.recommendation_id)


def send_request(events: Sequence[FeedbackEvent]) -> feedback_service_pb2.SendFeedbackRequest:
    return feedback_service_pb2.SendFeedbackRequest(events=[event(e) for e in events])


def stream_request(events: Sequence[FeedbackEvent]) -> feedback_service_pb2.StreamFeedbackRequest:
    return feedback_service_pb2.StreamFeedbackRequest(events=[event(e) for e in events])


def send_summary(response: feedback_service_pb2.SendFeedbackResponse) -> FeedbackSummary:
    return FeedbackSummary(int(response.accepted), int(response.duplicates))


def stream_summary(response: feedback_service_pb2.StreamFeedbackResponse) -> FeedbackSummary:
    return FeedbackSummary(
        int(response.accepted),
        int(response.duplicates),
        tuple(RejectedEvent(r.event_id, r.reason) for r in response.rejected),
        int(response.rejected_count) or len(response.rejected),
        dict(response.rejected_by_field),
    )


def upsert_request(items: Sequence[Item]) -> feedback_service_pb2.UpsertItemsRequest:
    return feedback_service_pb2.UpsertItemsRequest(
        items=[
            types_pb2.Item(
                item_id=i.item_id,
                categories=list(i.categories),
                price=i.price,
                attributes=dict(i.attributes),
                title=i.title,
            )
            for i in items
        ]
    )


def upsert_users_request(users: Sequence[User]) -> feedback_service_pb2.UpsertUsersRequest:
    return feedback_service_pb2.UpsertUsersRequest(
        users=[feedback_service_pb2.User(user_id=u.user_id, attributes=dict(u.attributes)) for u in users]
    )


class StreamBatcher:
    """Turns events into stream messages of ``batch_size`` lazily, for both clients alike. An event the SDK
    cannot encode (an unknown type, a non-finite time) is not sent: it is reported in the summary as rejected,
    like the gateway's own refusals, and the rest of the stream goes on."""

    def __init__(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.rejected: list[RejectedEvent] = []
        self._batch: list[types_pb2.Event] = []

    def add(self, e: FeedbackEvent) -> feedback_service_pb2.StreamFeedbackRequest | None:
        """Encode one event; returns a full message when one is ready."""
        try:
            self._batch.append(event(e))
        except (ValueError, TypeError, OverflowError) as exc:
            self.rejected.append(
                RejectedEvent(str(getattr(e, "event_id", "")), f"{exc} (refused by the SDK, not sent)")
            )
            return None
        if len(self._batch) >= self.batch_size:
            return self.flush()
        return None

    def flush(self) -> feedback_service_pb2.StreamFeedbackRequest | None:
        if not self._batch:
            return None
        request = feedback_service_pb2.StreamFeedbackRequest(events=self._batch)
        self._batch = []
        return request

    def requests(self, events: Iterable[FeedbackEvent]) -> Iterator[feedback_service_pb2.StreamFeedbackRequest]:
        for e in events:
            request = self.add(e)
            if request is not None:
                yield request
        last = self.flush()
        if last is not None:
            yield last

    def summary(self, response: feedback_service_pb2.StreamFeedbackResponse) -> FeedbackSummary:
        """The gateway's summary with the SDK's own refusals added."""
        summary = stream_summary(response)
        if not self.rejected:
            return summary
        by_field = dict(summary.rejected_by_field)
        by_field["sdk"] = by_field.get("sdk", 0) + len(self.rejected)
        return dataclasses.replace(
            summary,
            rejected=summary.rejected + tuple(self.rejected[: max(0, 1000 - len(summary.rejected))]),
            rejected_count=summary.rejected_count + len(self.rejected),
            rejected_by_field=by_field,
        )
