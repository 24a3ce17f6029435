"""Candidate retrieval: the only owner of retrieval state, and the request-time business rules over its answers.

- :mod:`~preftrack_gateway.retrieval.rules`: filters, boosts and per-key caps (no state);
- :mod:`~preftrack_gateway.retrieval.config`: :class:`RetrievalConfig`, the bounds and weights;
- :mod:`~preftrack_gateway.retrieval.state`: the bounded per-user and per-item structures;
- :mod:`~preftrack_gateway.retrieval.retriever`: :class:`Retriever`, their one owner, which folds events and
  answers candidate, similar-item and buy-again calls.
"""

from preftrack_gateway.retrieval.config import RetrievalConfig
from preftrack_gateway.retrieval.retriever import SOURCES, Candidate, Retriever, UnknownItemError
from preftrack_gateway.retrieval.rules import (
    BOOST_KINDS,
    MAX_BOOST_FACTOR,
    MAX_BOOST_VALUES,
    MAX_BOOSTS,
    MAX_FILTER_ATTRIBUTE_VALUES,
    MAX_FILTER_ATTRIBUTES,
    MAX_FILTER_CATEGORIES,
    MAX_FILTER_ITEM_IDS,
    MAX_FILTER_NAME_CHARS,
    MAX_RESULTS,
    NO_FILTER,
    Boost,
    FilterError,
    ItemFilter,
    apply_boosts,
    attribute_key,
    cap_per,
    primary_category_key,
)

__all__ = [
    "BOOST_KINDS",
    "MAX_BOOSTS",
    "MAX_BOOST_FACTOR",
    "MAX_BOOST_VALUES",
    "MAX_FILTER_ATTRIBUTES",
    "MAX_FILTER_ATTRIBUTE_VALUES",
    "MAX_FILTER_CATEGORIES",
    "MAX_FILTER_ITEM_IDS",
    "MAX_FILTER_NAME_CHARS",
    "MAX_RESULTS",
    "NO_FILTER",
    "SOURCES",
    "Boost",
    "Candidate",
    "FilterError",
    "ItemFilter",
    "RetrievalConfig",
    "Retriever",
    "UnknownItemError",
    "apply_boosts",
    "attribute_key",
    "cap_per",
    "primary_category_key",
]
