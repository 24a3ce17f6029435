"""The SDK's own frozen dataclasses: what callers pass in and get back (never protobuf messages)."""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid
from collections.abc import Mapping, Sequence


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
    ``item_id`` and the user's text in ``query`` (the gateway keeps only hashed terms of it). A visitor who has not
    logged in sends ``session_id`` instead of ``user_id`` (exactly one of the two); :meth:`Client.identify_user`
    merges the session into the user at login.
    """

    user_id: str = ""
    item_id: str = ""
    event_type: EventType | str
    value: float = 1.0
    timestamp_s: float = dataclasses.field(default_factory=time.time)
    event_id: str = dataclasses.field(default_factory=new_event_id)
    recommendation_id: str | None = None
    context: Mapping[str, str] = dataclasses.field(default_factory=dict)
    query: str = ""
    session_id: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Item:
    """A catalogue entry: its title, categories and attribute values are the words searches are matched with."""

    item_id: str
    categories: tuple[str, ...]
    price: float = 0.0
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    title: str = ""
    #: Units in stock; None when the shop does not track stock (the item counts as in stock).
    stock: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ItemFilter:
    """Business rules for a list: only items passing every field that is set are returned.

    Attributes:
        in_stock_only: keep only items whose stock is untracked or above 0.
        min_price: lowest price kept (items of unknown price, 0, are then dropped).
        max_price: highest price kept (likewise).
        categories_in: keep only items with at least one of these categories.
        categories_out: drop items with any of these categories.
        attributes_in: attribute name -> the values kept (an item without the attribute is dropped).
        attributes_out: attribute name -> the values dropped.
        exclude_bought_within_days: drop what the user bought within this many days (0: keep it).
    """

    in_stock_only: bool = False
    min_price: float | None = None
    max_price: float | None = None
    categories_in: Sequence[str] = ()
    categories_out: Sequence[str] = ()
    attributes_in: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    attributes_out: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    exclude_bought_within_days: float = 0.0


class BoostTarget(str, enum.Enum):  # noqa: UP042 - StrEnum needs 3.11; the SDK supports 3.10
    """What a :class:`Boost` matches."""

    CATEGORY = "category"
    ATTRIBUTE = "attribute"
    ITEMS = "items"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Boost:
    """Multiply the scores of the matching items by ``factor`` before ranking (above 1 promotes, below 1 buries).

    ``values`` are categories, values of ``attribute``, or item ids, as ``target`` says."""

    target: BoostTarget | str
    values: Sequence[str]
    factor: float
    attribute: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Diversity:
    """At most ``max_per_value`` items of a list share one value of ``attribute`` (empty: the primary category)."""

    max_per_value: int
    attribute: str = ""


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
    #: On lists the gateway retrieved itself: where the item came from (buy_again, co_occurrence, category,
    #: trending, popular); empty otherwise.
    source: str = ""


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
    """Answer to :meth:`Client.recommend`: best first. ``fewer_than_k``: the filter, exclusions or diversity cap
    left fewer than k items, and the list holds all that passed."""

    items: tuple[ScoredItem, ...]
    model_version: str
    recommendation_id: str
    fewer_than_k: bool = False


@dataclasses.dataclass(frozen=True)
class SimilarItems:
    """Answer to :meth:`Client.similar_items`: best first; a score is the strength of the association, in (0, 1]."""

    items: tuple[ScoredItem, ...]
    fewer_than_k: bool = False


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
