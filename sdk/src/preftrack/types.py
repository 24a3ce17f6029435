"""The SDK's own frozen dataclasses: what callers pass in and get back (never protobuf messages)."""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid
from collections.abc import Mapping


class EventType(str, enum.Enum):  # noqa: UP042 - StrEnum needs 3.11; the SDK supports 3.10
    """What a user did to an item."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    #: A search: ``query`` holds what the user typed and ``item_id`` is empty.
    SEARCH = "search"


def new_event_id() -> str:
    """A fresh random event id (UUID4, hex)."""
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedbackEvent:
    """A behaviour event to send. ``event_id`` and ``timestamp_s`` are filled in when omitted.

    Keep the event_id when retrying: the gateway stores each event_id once. A search event has an empty
    ``item_id`` and the user's text in ``query`` (the gateway keeps only hashed terms of it).
    """

    user_id: str
    item_id: str = ""
    event_type: EventType | str
    value: float = 1.0
    timestamp_s: float = dataclasses.field(default_factory=time.time)
    event_id: str = dataclasses.field(default_factory=new_event_id)
    recommendation_id: str | None = None
    context: Mapping[str, str] = dataclasses.field(default_factory=dict)
    query: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Item:
    """A catalogue entry: its title, categories and attribute values are the words searches are matched with."""

    item_id: str
    categories: tuple[str, ...]
    price: float = 0.0
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    title: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class User:
    """A user's attributes (at most 8: an age band, a region, ...). The gateway keeps only keyed hashes of them."""

    user_id: str
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ScoredItem:
    """An item and the probability that the user likes or buys it."""

    item_id: str
    score: float


@dataclasses.dataclass(frozen=True)
class Scores:
    """Answer to :meth:`Client.score`: one entry per requested item, in the request's order."""

    items: tuple[ScoredItem, ...]
    model_version: str
    request_id: str

    def as_dict(self) -> dict[str, float]:
        """item_id -> score."""
        return {i.item_id: i.score for i in self.items}


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """Answer to :meth:`Client.recommend`: best first."""

    items: tuple[ScoredItem, ...]
    model_version: str
    recommendation_id: str


@dataclasses.dataclass(frozen=True)
class RejectedEvent:
    """An event the gateway refused, and why."""

    event_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class FeedbackSummary:
    """What happened to sent events: stored now, already stored (duplicates), refused."""

    accepted: int
    duplicates: int
    rejected: tuple[RejectedEvent, ...] = ()  # from a stream: the first 1,000 refused events
    rejected_count: int = 0  # all refused events
    rejected_by_field: Mapping[str, int] = dataclasses.field(default_factory=dict)
