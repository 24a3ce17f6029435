"""The one module of the SDK that touches protobuf messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from preftrack.types import (
    Boost,
    BoostTarget,
    Diversity,
    EventType,
    FeedbackEvent,
    FeedbackSummary,
    Item,
    ItemFilter,
    Recommendation,
    RejectedEvent,
    ScoredItem,
    Scores,
    SimilarItems,
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
        session_id=e.session_id,
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
    session_id: str = "",
):
    request = scoring_service_pb2.ScoreRequest(
        user_id=user_id, item_ids=list(item_ids), context=dict(context or {}), query=query, session_id=session_id
    )
    if as_of_s is not None:
        request.as_of.CopyFrom(timestamp(as_of_s))
    return request


@dataclasses.dataclass(frozen=True)
class Rules:
    """A list's business rules as the clients take them (one argument bundle for both clients)."""

    item_filter: ItemFilter | None = None
    boosts: Sequence[Boost] = ()
    diversity: Diversity | None = None
    session_id: str = ""
    exploration: float | None = None


def recommend_request(
    user_id: str,
    candidates: Sequence[str],
    k: int,
    exclude: Sequence[str],
    context: Mapping[str, str] | None,
    as_of_s: float | None = None,
    query: str = "",
    rules: Rules = Rules(),
):
    request = scoring_service_pb2.RecommendRequest(
        user_id=user_id,
        candidate_item_ids=list(candidates),
        k=k,
        exclude_item_ids=list(exclude),
        context=dict(context or {}),
        query=query,
        boosts=[boost(b) for b in rules.boosts],
        session_id=rules.session_id,
    )
    if rules.item_filter is not None:
        request.filter.CopyFrom(item_filter(rules.item_filter))
    if rules.diversity is not None:
        request.diversity.CopyFrom(
            types_pb2.Diversity(attribute=rules.diversity.attribute, max_per_value=rules.diversity.max_per_value)
        )
    if rules.exploration is not None:
        request.exploration = rules.exploration
    if as_of_s is not None:
        request.as_of.CopyFrom(timestamp(as_of_s))
    return request


def _attribute_values(values: Mapping[str, Sequence[str]]) -> list[types_pb2.AttributeValues]:
    return [types_pb2.AttributeValues(name=name, values=list(v)) for name, v in values.items()]


def item_filter(f: ItemFilter | None) -> types_pb2.ItemFilter:
    """The proto of a filter (an empty one for None)."""
    if f is None:
        return types_pb2.ItemFilter()
    message = types_pb2.ItemFilter(
        in_stock_only=f.in_stock_only,
        categories_in=list(f.categories_in),
        categories_out=list(f.categories_out),
        attributes_in=_attribute_values(f.attributes_in),
        attributes_out=_attribute_values(f.attributes_out),
        exclude_bought_within_days=f.exclude_bought_within_days,
    )
    if f.min_price is not None:
        message.min_price = f.min_price
    if f.max_price is not None:
        message.max_price = f.max_price
    return message


_BOOST_TARGETS = {
    BoostTarget.CATEGORY: types_pb2.BOOST_TARGET_CATEGORY,
    BoostTarget.ATTRIBUTE: types_pb2.BOOST_TARGET_ATTRIBUTE,
    BoostTarget.ITEMS: types_pb2.BOOST_TARGET_ITEMS,
}


def boost(b: Boost) -> types_pb2.Boost:
    """The proto of a boost; raises ValueError naming the accepted targets."""
    try:
        target = _BOOST_TARGETS[BoostTarget(b.target)]
    except ValueError:
        raise ValueError(
            f"unknown boost target {b.target!r}; expected one of {', '.join(t.value for t in BoostTarget)}"
        ) from None
    return types_pb2.Boost(target=target, attribute=b.attribute, values=list(b.values), factor=b.factor)


def similar_request(item_id: str, k: int, f: ItemFilter | None, user_id: str):
    return scoring_service_pb2.SimilarItemsRequest(item_id=item_id, k=k, filter=item_filter(f), user_id=user_id)


def identify_request(session_id: str, user_id: str):
    return feedback_service_pb2.IdentifyUserRequest(session_id=session_id, user_id=user_id)


def buy_again_request(user_id: str, k: int, f: ItemFilter | None):
    return scoring_service_pb2.BuyAgainRequest(user_id=user_id, k=k, filter=item_filter(f))


def _scored(items) -> tuple[ScoredItem, ...]:
    return tuple(ScoredItem(i.item_id, float(i.score), i.source) for i in items)


def scores(response: scoring_service_pb2.ScoreResponse) -> Scores:
    return Scores(_scored(response.items), response.model_version, response.request_id)


def recommendation(response: scoring_service_pb2.RecommendResponse) -> Recommendation:
    return Recommendation(
        _scored(response.items), response.model_version, response.recommendation_id, response.fewer_than_k
    )


def similar(response: scoring_service_pb2.SimilarItemsResponse) -> SimilarItems:
    return SimilarItems(_scored(response.items), response.fewer_than_k)


def bought_again(response: scoring_service_pb2.BuyAgainResponse) -> tuple[ScoredItem, ...]:
    return _scored(response.items)


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
                stock=i.stock,
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
