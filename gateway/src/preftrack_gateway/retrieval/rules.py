"""Request-time business rules over retrieval's answers: filters, boosts and per-key caps; owns no state.

A filter is sent per request, so every collection in it is bounded (the ``MAX_*`` limits) and checked by
:meth:`ItemFilter.validate` before use. The same rules apply to a caller's own candidate list and to
:class:`~preftrack_gateway.retrieval.retriever.Retriever`'s answers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np

from preftrack_gateway.schema import Item

#: Largest request-time rule collections (a filter is sent per request, so every collection is bounded).
MAX_FILTER_ITEM_IDS = 1000
MAX_FILTER_CATEGORIES = 64
MAX_FILTER_ATTRIBUTES = 32
MAX_FILTER_ATTRIBUTE_VALUES = 64
MAX_FILTER_NAME_CHARS = 256
#: Most boosts per request, most values per boost, and the largest factor (its inverse buries).
MAX_BOOSTS = 16
MAX_BOOST_VALUES = 1000
MAX_BOOST_FACTOR = 100.0
#: Most items one call may ask for (``n`` of candidates, ``k`` of similar and buy_again).
MAX_RESULTS = 10_000
BOOST_KINDS: tuple[str, ...] = ("category", "attribute", "items")


class FilterError(ValueError):
    """A filter or boost is invalid or contradicts itself; ``field`` names it and the message says what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_names(field: str, values: object, limit: int) -> None:
    """Raise :class:`FilterError` unless ``values`` is a set of at most ``limit`` non-empty short strings."""
    if not isinstance(values, (set, frozenset)):
        raise FilterError(field, f"must be a set of names, not {type(values).__name__}")
    if len(values) > limit:
        raise FilterError(field, f"has {len(values)} entries; at most {limit}")
    for value in values:
        if not isinstance(value, str) or not value or len(value) > MAX_FILTER_NAME_CHARS:
            raise FilterError(field, f"entries must be non-empty strings of at most {MAX_FILTER_NAME_CHARS} characters")


def _check_attributes(field: str, pairs: object) -> dict[str, frozenset[str]]:
    """Check an ``attributes_in``/``attributes_out`` value and return it as a dict."""
    if not isinstance(pairs, (tuple, list)):
        raise FilterError(field, "must be a tuple of (attribute name, set of values) pairs")
    if len(pairs) > MAX_FILTER_ATTRIBUTES:
        raise FilterError(field, f"names {len(pairs)} attributes; at most {MAX_FILTER_ATTRIBUTES}")
    checked: dict[str, frozenset[str]] = {}
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise FilterError(field, "must be a tuple of (attribute name, set of values) pairs")
        name, values = pair
        if not isinstance(name, str) or not name or len(name) > MAX_FILTER_NAME_CHARS:
            raise FilterError(field, f"attribute names must be non-empty strings of at most {MAX_FILTER_NAME_CHARS}")
        if name in checked:
            raise FilterError(field, f"names attribute {name!r} twice; merge its values into one set")
        _check_names(f"{field}[{name}]", values, MAX_FILTER_ATTRIBUTE_VALUES)
        if not values:
            raise FilterError(field, f"attribute {name!r} has no values; leave it out to accept any value")
        checked[name] = frozenset(values)
    return checked


@dataclasses.dataclass(frozen=True, kw_only=True)
class ItemFilter:
    """Request-time business rules: which items may be answered.

    Call :meth:`validate` on a filter built from a request; :meth:`admits` on an invalid one is undefined.

    Attributes:
        in_stock_only: only items in stock (stock untracked or positive).
        min_price / max_price: inclusive price bounds; with either set, an item of unknown price (0) is excluded.
        categories_in: the item must have at least one of these categories (any position); empty: any.
        categories_out: the item must have none of these categories.
        attributes_in: (name, values) pairs: the item's value of each named attribute must be one of the values
            (an item without the attribute is excluded; a multi-valued attribute needs one value in the set).
        attributes_out: (name, values) pairs: none of the item's values of the attribute may be in the set.
        exclude_item_ids: items never answered (already in the basket, already shown).
        exclude_bought_within_s: exclude items this user bought (``purchase``) at most this many seconds before
            the request time.
    """

    in_stock_only: bool = False
    min_price: float | None = None
    max_price: float | None = None
    categories_in: frozenset[str] = frozenset()
    categories_out: frozenset[str] = frozenset()
    attributes_in: tuple[tuple[str, frozenset[str]], ...] = ()
    attributes_out: tuple[tuple[str, frozenset[str]], ...] = ()
    exclude_item_ids: frozenset[str] = frozenset()
    exclude_bought_within_s: float | None = None
    # Derived once: admits() runs for thousands of items per request.
    _needs_item: bool = dataclasses.field(init=False, repr=False, compare=False, default=False)
    _attrs_in: dict[str, frozenset[str]] = dataclasses.field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _attrs_out: dict[str, frozenset[str]] = dataclasses.field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        needs_item = bool(
            self.in_stock_only
            or self.min_price is not None
            or self.max_price is not None
            or self.categories_in
            or self.categories_out
            or self.attributes_in
            or self.attributes_out
        )
        object.__setattr__(self, "_needs_item", needs_item)
        for field, derived in (("attributes_in", "_attrs_in"), ("attributes_out", "_attrs_out")):
            try:
                object.__setattr__(self, derived, {name: frozenset(values) for name, values in getattr(self, field)})
            except (TypeError, ValueError):  # a malformed shape: validate() names it
                object.__setattr__(self, derived, {})

    @property
    def needs_item(self) -> bool:
        """Whether a rule reads the item's fields (so an item not in the catalogue cannot pass)."""
        return self._needs_item

    @property
    def is_empty(self) -> bool:
        """Whether the filter admits every item."""
        return not self._needs_item and not self.exclude_item_ids and self.exclude_bought_within_s is None

    def validate(self) -> None:
        """Raise :class:`FilterError` naming the first bad or contradictory field.

        >>> ItemFilter(min_price=10.0, max_price=5.0).validate()
        Traceback (most recent call last):
        ...
        preftrack_gateway.retrieval.rules.FilterError: max_price: 5.0 is below min_price 10.0; swap them or drop one
        """
        if not isinstance(self.in_stock_only, bool):
            raise FilterError("in_stock_only", "must be true or false")
        for field in ("min_price", "max_price"):
            value = getattr(self, field)
            if value is not None and (not _is_number(value) or not math.isfinite(value) or value < 0):
                raise FilterError(field, f"must be a finite price of at least 0, not {value!r}; unset it for no bound")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise FilterError(
                "max_price", f"{self.max_price} is below min_price {self.min_price}; swap them or drop one"
            )
        _check_names("categories_in", self.categories_in, MAX_FILTER_CATEGORIES)
        _check_names("categories_out", self.categories_out, MAX_FILTER_CATEGORIES)
        if both := self.categories_in & self.categories_out:
            raise FilterError(
                "categories_out", f"{min(both)!r} is also in categories_in; a category cannot be required and excluded"
            )
        wanted = _check_attributes("attributes_in", self.attributes_in)
        unwanted = _check_attributes("attributes_out", self.attributes_out)
        for name, values in unwanted.items():
            if both := values & wanted.get(name, frozenset()):
                raise FilterError(
                    "attributes_out", f"{name}={min(both)!r} is also in attributes_in; a value cannot be both"
                )
        _check_names("exclude_item_ids", self.exclude_item_ids, MAX_FILTER_ITEM_IDS)
        window = self.exclude_bought_within_s
        if window is not None and (not _is_number(window) or not math.isfinite(window) or window < 0):
            raise FilterError("exclude_bought_within_s", f"must be a finite number of seconds ≥ 0, not {window!r}")

    def admits(self, item: Item, *, bought_at_s: float | None, now_s: float) -> bool:
        """Whether the rules let ``item`` be answered at ``now_s``.

        Args:
            item: the catalogue's item.
            bought_at_s: when this user last bought the item, if ever.
            now_s: the request's time.

        >>> ItemFilter(max_price=10.0).admits(Item(item_id="a", price=0.0), bought_at_s=None, now_s=0.0)
        False
        """
        return self.admits_id(item.item_id, item, bought_at_s=bought_at_s, now_s=now_s)

    def admits_id(self, item_id: str, item: Item | None, *, bought_at_s: float | None, now_s: float) -> bool:
        """:meth:`admits` for an id that may not be in the catalogue (``item`` None): such an item passes only a
        filter with no rule on the item's fields."""
        if item_id in self.exclude_item_ids:
            return False
        window = self.exclude_bought_within_s
        if window is not None and bought_at_s is not None and now_s - bought_at_s <= window:
            return False
        if not self._needs_item:
            return True
        return item is not None and self._fields_admit(item)

    def _fields_admit(self, item: Item) -> bool:
        if self.in_stock_only and not item.in_stock:
            return False
        if self.min_price is not None or self.max_price is not None:
            price = item.price
            if not price > 0.0:  # unknown (0), or NaN
                return False
            if (self.min_price is not None and price < self.min_price) or (
                self.max_price is not None and price > self.max_price
            ):
                return False
        if self.categories_in and self.categories_in.isdisjoint(item.categories):
            return False
        if self.categories_out and not self.categories_out.isdisjoint(item.categories):
            return False
        if self._attrs_in:
            matched = {name for name, value in item.attributes if value in self._attrs_in.get(name, ())}
            if len(matched) < len(self._attrs_in):
                return False
        if self._attrs_out:
            for name, value in item.attributes:
                if value in self._attrs_out.get(name, ()):
                    return False
        return True


#: The filter that admits everything.
NO_FILTER = ItemFilter()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Boost:
    """Multiply the score of matching items by ``factor`` (below 1 buries them).

    Attributes:
        kind: ``category`` (the item has one of ``values`` among its categories), ``attribute`` (the item's
            attribute ``key`` has one of ``values``) or ``items`` (the item's id is one of ``values``).
        key: the attribute name for ``attribute``; empty otherwise.
        values: the categories, attribute values or item ids that match.
        factor: finite, above 0 and at most :data:`MAX_BOOST_FACTOR`.
    """

    kind: str
    key: str = ""
    values: frozenset[str]
    factor: float

    def validate(self, field: str = "boost") -> None:
        """Raise :class:`FilterError` naming ``field.<attribute>`` when the boost is invalid."""
        if self.kind not in BOOST_KINDS:
            raise FilterError(f"{field}.kind", f"unknown kind {self.kind!r}; expected one of {', '.join(BOOST_KINDS)}")
        if self.kind == "attribute":
            if not isinstance(self.key, str) or not self.key or len(self.key) > MAX_FILTER_NAME_CHARS:
                raise FilterError(f"{field}.key", "an attribute boost needs the attribute's name")
        elif self.key:
            raise FilterError(f"{field}.key", f"only an attribute boost has a key; leave it empty for {self.kind}")
        _check_names(f"{field}.values", self.values, MAX_BOOST_VALUES)
        if not self.values:
            raise FilterError(f"{field}.values", "matches nothing; name at least one value")
        factor = self.factor
        if not _is_number(factor) or not math.isfinite(factor) or not 0.0 < factor <= MAX_BOOST_FACTOR:
            raise FilterError(f"{field}.factor", f"must be above 0 and at most {MAX_BOOST_FACTOR:g}, not {factor!r}")

    def matches(self, item_id: str, item: Item | None) -> bool:
        """Whether the boost applies to the item (an item not in the catalogue matches only ``items``)."""
        if self.kind == "items":
            return item_id in self.values
        if item is None:
            return False
        if self.kind == "category":
            return not self.values.isdisjoint(item.categories)
        return any(name == self.key and value in self.values for name, value in item.attributes)


def apply_boosts(
    item_ids: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    boosts: Sequence[Boost],
    item_of: Callable[[str], Item | None],
) -> np.ndarray:
    """Return the scores multiplied by the factors of every boost each item matches (each boost once).

    Scores should be non-negative (probabilities): a factor scales them, it does not shift them.

    Raises:
        FilterError: too many boosts, an invalid boost (``boosts[i].<field>``), or scores of the wrong length.

    >>> b = Boost(kind="items", values=frozenset({"a"}), factor=2.0)
    >>> apply_boosts(["a", "b"], [0.25, 0.5], [b], lambda _: None).tolist()
    [0.5, 0.5]
    """
    if len(boosts) > MAX_BOOSTS:
        raise FilterError("boosts", f"has {len(boosts)} boosts; at most {MAX_BOOSTS}")
    for index, boost in enumerate(boosts):
        boost.validate(f"boosts[{index}]")
    out = np.array(scores, dtype=np.float64)
    if out.shape != (len(item_ids),):
        raise FilterError("scores", f"has shape {out.shape}; expected one score per item ({len(item_ids)})")
    if not boosts:
        return out
    need_item = any(boost.kind != "items" for boost in boosts)
    factors = []
    for item_id in item_ids:
        item = item_of(item_id) if need_item else None
        factor = 1.0
        for boost in boosts:
            if boost.matches(item_id, item):
                factor *= boost.factor
        factors.append(factor)
    return out * np.asarray(factors)


def cap_per(ranked_ids: Iterable[str], key_of: Callable[[str], Hashable | None], cap: int, k: int) -> list[str]:
    """Keep the rank order, at most ``cap`` items per key, at most ``k`` items, no duplicate.

    Items whose key is None (no brand, say) are not capped. Items over the cap are dropped, never used to pad:
    fewer than ``k`` is a valid answer.

    >>> brand = {"a": "x", "b": "x", "c": "y", "d": "x"}.get
    >>> cap_per(["a", "b", "c", "d"], brand, cap=1, k=3)
    ['a', 'c']
    """
    if not isinstance(cap, int) or cap < 1:
        raise ValueError(f"cap must be an integer of at least 1, not {cap!r}")
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, not {k!r}")
    counts: dict[Hashable, int] = {}
    seen: set[str] = set()
    out: list[str] = []
    for item_id in ranked_ids:
        if len(out) >= k:
            break
        if item_id in seen:
            continue
        key = key_of(item_id)
        if key is not None:
            count = counts.get(key, 0)
            if count >= cap:
                continue
            counts[key] = count + 1
        seen.add(item_id)
        out.append(item_id)
    return out


def primary_category_key(item_of: Callable[[str], Item | None]) -> Callable[[str], str | None]:
    """A :func:`cap_per` key: the item's primary category (None when not in the catalogue)."""

    def key_of(item_id: str) -> str | None:
        item = item_of(item_id)
        return item.primary_category if item is not None else None

    return key_of


def attribute_key(name: str, item_of: Callable[[str], Item | None]) -> Callable[[str], str | None]:
    """A :func:`cap_per` key: the item's first value of attribute ``name`` (None when it has none)."""

    def key_of(item_id: str) -> str | None:
        item = item_of(item_id)
        if item is None:
            return None
        return next((value for key, value in item.attributes if key == name), None)

    return key_of
