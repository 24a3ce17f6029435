"""The one event schema shared by the gateway (online) and the trainer (offline).

Everything that flows through preftrack is an :class:`Event` (what a user did to an item) or an
:class:`Item` (what the catalogue says about an item). Both are plain frozen dataclasses so that the
gateway, the event store and the trainer agree on them without importing TensorFlow or protobuf.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

#: Event types the platform understands, in the order used by the feature vector. A ``search`` names no item: it
#: carries the query's hashed terms (:func:`query_terms`).
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating", "search")

#: An item's title and attributes: at most this long and this many; its categories: at most this many, each at
#: most this long.
MAX_TITLE_CHARS = 512
MAX_ATTRIBUTES = 32
MAX_CATEGORIES = 16
MAX_CATEGORY_CHARS = 256

#: Longest query text accepted (characters, before normalisation), and most distinct terms kept from one query.
MAX_QUERY_CHARS = 256
MAX_QUERY_TERMS = 16

#: Oldest timestamp accepted (1990-01-01T00:00:00Z); anything older is a broken clock or a unit mistake.
MIN_TIMESTAMP_S = 631_152_000.0

_HASH_MASK = (1 << 63) - 1


def stable_hash(value: str) -> int:
    """Hash a string id into a stable non-negative 63-bit integer.

    The hash is the same in every process and on every machine, so an id hashed by the gateway
    lands in the same embedding bucket as the same id hashed by the trainer.

    >>> stable_hash("user-1") == stable_hash("user-1")
    True
    >>> 0 <= stable_hash("") < 2**63
    True
    """
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _HASH_MASK


_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    """Normalised words of a text: NFKC, case-folded, split on anything not a letter or digit, a plural ``s``
    dropped from words of four letters or more (``shoes`` and ``shoe`` are one term)."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


def term_hash(word: str) -> str:
    """The stored form of one normalised word: 16 hex digits of a stable hash (the word itself is never kept)."""
    return f"{stable_hash('term:' + word):016x}"


def text_terms(texts: Iterable[str]) -> frozenset[str]:
    """The hashed terms of some texts (an item's title, categories and attribute values).

    >>> text_terms(["Red Shoes"]) == text_terms(["red shoe"])
    True
    """
    return frozenset(term_hash(w) for text in texts for w in _words(text))


def query_terms(query: str) -> tuple[str, ...]:
    """The hashed terms of a search query, distinct, in order, at most :data:`MAX_QUERY_TERMS`.

    Raises:
        EventValidationError: the query is longer than :data:`MAX_QUERY_CHARS` or has no word.

    >>> len(query_terms("red shoes, RED shoe")), query_terms("Red") == query_terms("red")
    (2, True)
    """
    if not isinstance(query, str):
        raise EventValidationError("query", "must be a string")
    if len(query) > MAX_QUERY_CHARS:
        raise EventValidationError("query", f"has {len(query)} characters; at most {MAX_QUERY_CHARS}")
    terms = tuple(dict.fromkeys(term_hash(w) for w in _words(query)))[:MAX_QUERY_TERMS]
    if not terms:
        raise EventValidationError("query", "has no word (letters or digits); send what the user typed")
    return terms


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Item:
    """An item of the catalogue.

    Attributes:
        item_id: the shop's id of the item.
        categories: one or more category names; the first is the primary category.
        price: price in the shop's currency; 0 when unknown.
        title: the item's name as shown in the shop (its words link it to search queries).
        attributes: (name, value) pairs such as ``("brand", "Acme")``, sorted by name.
        stock: units in stock; ``None`` when the shop does not track it (the item counts as in stock).
    """

    item_id: str
    categories: tuple[str, ...] = ("unknown",)
    price: float = 0.0
    title: str = ""
    attributes: tuple[tuple[str, str], ...] = ()
    stock: int | None = None

    @property
    def in_stock(self) -> bool:
        """Whether the item can be sold now: its stock is untracked or positive."""
        return self.stock is None or self.stock > 0

    @property
    def primary_category(self) -> str:
        """The category used for the item's category embedding."""
        return self.categories[0] if self.categories else "unknown"

    def terms(self) -> frozenset[str]:
        """The hashed terms of the item's text: title, categories and attribute values."""
        return text_terms((self.title, *self.categories, *(value for _, value in self.attributes)))


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One behaviour event: a user did something to an item at a time.

    Attributes:
        event_id: client-generated unique id; re-sending the same id is a no-op.
        user_id: the user (pseudonymised by the gateway before it is stored).
        item_id: the item.
        event_type: one of :data:`EVENT_TYPES`.
        value: the event's value (the rating for ``rating``, quantity or amount otherwise).
        timestamp_s: when it happened, seconds since the Unix epoch.
        recommendation_id: the recommendation that showed the item, when known.
        context: optional free-form attributes (device, page, ...).
        query_terms: a ``search`` event's hashed query terms (:func:`query_terms`); empty for every other type.
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    value: float = 1.0
    timestamp_s: float
    recommendation_id: str | None = None
    context: Mapping[str, str] = dataclasses.field(default_factory=dict)
    query_terms: tuple[str, ...] = ()


class EventValidationError(ValueError):
    """An event is malformed; the message names the field and says what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


#: Longest id accepted (event, user, item, recommendation ids).
MAX_ID_CHARS = 256
#: An event's free-form context: at most this many keys, of these lengths (it may carry personal data, and it
#: is stored as sent unless the gateway is told to drop it).
MAX_CONTEXT_KEYS = 16
MAX_CONTEXT_KEY_CHARS = 64
MAX_CONTEXT_VALUE_CHARS = 256


def check_id(field: str, value: object) -> None:
    """Raise :class:`EventValidationError` unless ``value`` is a non-empty id of at most :data:`MAX_ID_CHARS`."""
    if not isinstance(value, str) or not value.strip():
        raise EventValidationError(field, "must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise EventValidationError(field, f"must be at most {MAX_ID_CHARS} characters")


def check_ids(field: str, values: Sequence[str]) -> None:
    """:func:`check_id` for each of ``values`` (named ``field[index]``): all at once in C, then one by one only to
    name the first bad one."""
    try:
        fine = all(map(str.strip, values)) and max(map(len, values), default=0) <= MAX_ID_CHARS
    except TypeError:  # not a string
        fine = False
    if not fine:
        for index, value in enumerate(values):
            check_id(f"{field}[{index}]", value)


def validate_event(event: Event, *, now_s: float, max_future_skew_s: float = 300.0) -> None:
    """Check one event and raise :class:`EventValidationError` naming the first bad field.

    Args:
        event: the event to check.
        now_s: the current time, seconds since the epoch.
        max_future_skew_s: how far in the future a timestamp may be (client clock skew).
    """
    check_id("event_id", event.event_id)
    check_id("user_id", event.user_id)
    if event.event_type not in EVENT_TYPES:
        raise EventValidationError(
            "event_type", f"unknown type {event.event_type!r}; expected one of {', '.join(EVENT_TYPES)}"
        )
    if event.event_type == "search":
        if event.item_id:
            raise EventValidationError("item_id", "a search event names no item; leave item_id empty")
        if not event.query_terms or len(event.query_terms) > MAX_QUERY_TERMS:
            raise EventValidationError("query", "a search event needs a query with at least one word")
    else:
        check_id("item_id", event.item_id)
        if event.query_terms:
            raise EventValidationError("query", f"only search events carry a query, not {event.event_type}")
    if not isinstance(event.value, (int, float)) or not math.isfinite(event.value):
        raise EventValidationError("value", "must be a finite number")
    if event.event_type == "rating" and not 0.0 <= event.value <= 10.0:
        raise EventValidationError("value", "a rating must lie in [0, 10]")
    ts = event.timestamp_s
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise EventValidationError("time", "must be a finite time")
    if ts < MIN_TIMESTAMP_S:
        raise EventValidationError("time", f"{ts:.0f} s since the epoch is before 1990-01-01; send the event's time")
    if ts > now_s + max_future_skew_s:
        raise EventValidationError("time", f"is {ts - now_s:.0f} s in the future; check the client clock")
    if len(event.context) > MAX_CONTEXT_KEYS:
        raise EventValidationError("context", f"has {len(event.context)} keys; at most {MAX_CONTEXT_KEYS}")
    for key, text in event.context.items():
        if not key or len(key) > MAX_CONTEXT_KEY_CHARS or len(text) > MAX_CONTEXT_VALUE_CHARS:
            raise EventValidationError(
                "context",
                f"keys must be 1-{MAX_CONTEXT_KEY_CHARS} characters and values at most {MAX_CONTEXT_VALUE_CHARS}",
            )
