"""preftrack: Python client of the preftrack gateway (scoring, recommendation, feedback).

from preftrack import Client, FeedbackEvent

with Client("localhost:50051") as client:
    client.send(FeedbackEvent(user_id="u1", item_id="sku-9", event_type="purchase"))
    print(client.recommend("u1", ["sku-1", "sku-2", "sku-9"], k=2))
"""

from preftrack._channel import TLS
from preftrack.aio import AsyncClient
from preftrack.client import Client
from preftrack.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PreftrackError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from preftrack.sender import AsyncFeedbackSender, FeedbackNotDeliveredError, FeedbackSender
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
    new_event_id,
)

__all__ = [
    "TLS",
    "AsyncClient",
    "AsyncFeedbackSender",
    "Boost",
    "BoostTarget",
    "Client",
    "DeadlineExceededError",
    "Diversity",
    "EventType",
    "FeedbackEvent",
    "FeedbackNotDeliveredError",
    "FeedbackSender",
    "FeedbackSummary",
    "InternalError",
    "InvalidRequestError",
    "Item",
    "ItemFilter",
    "NotFoundError",
    "PermissionDeniedError",
    "PreftrackError",
    "Recommendation",
    "RejectedEvent",
    "ResourceExhaustedError",
    "ScoredItem",
    "Scores",
    "SimilarItems",
    "UnauthenticatedError",
    "UnavailableError",
    "User",
    "new_event_id",
]
