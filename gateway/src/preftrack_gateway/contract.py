"""The contract between callers and the Triton model: names, tensor names and types, defined once.

A test checks these against ``model_repository/preftrack/config.pbtxt`` and the trainer generates that file
from them, so the gateway, the trainer and Triton cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from preftrack_gateway.features import NUM_FEATURES
from preftrack_gateway.schema import Item, stable_hash

MODEL_NAME = "preftrack"

USER_ID = "USER_ID"
ITEM_ID = "ITEM_ID"
CATEGORY_ID = "CATEGORY_ID"
FEATURES = "FEATURES"
ATTRIBUTES = "ATTRIBUTES"
SCORE = "SCORE"

#: Attribute tokens a row carries for its user and, after them, for its item (0 pads an unused slot).
ATTRIBUTE_SLOTS = 8

#: Triton input name -> (Triton data type, dims without the batch dimension), in request order.
INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    USER_ID: ("TYPE_INT64", (1,)),
    ITEM_ID: ("TYPE_INT64", (1,)),
    CATEGORY_ID: ("TYPE_INT64", (1,)),
    FEATURES: ("TYPE_FP32", (NUM_FEATURES,)),
    ATTRIBUTES: ("TYPE_INT64", (2 * ATTRIBUTE_SLOTS,)),
}
OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {SCORE: ("TYPE_FP32", (1,))}


def _slots(tokens: Sequence[str]) -> np.ndarray:
    out = np.zeros(ATTRIBUTE_SLOTS, dtype=np.int64)
    for k, token in enumerate(tokens[:ATTRIBUTE_SLOTS]):
        out[k] = stable_hash(token) or 1  # 0 pads
    return out


def user_attribute_ids(tokens: Sequence[str]) -> np.ndarray:
    """The model's ids of a user's attribute tokens (pseudonymised ``name=value`` pairs, see
    :meth:`~preftrack_gateway.privacy.Pseudonymiser.attribute`), in :data:`ATTRIBUTE_SLOTS` slots."""
    return _slots(tokens)


def item_attribute_ids(item: Item) -> np.ndarray:
    """The model's ids of an item's attributes: its categories after the primary one (which has its own
    embedding), then its ``name=value`` attributes, in :data:`ATTRIBUTE_SLOTS` slots. Hashed: a new value needs
    no new model."""
    tokens = [f"category\x1f{c}" for c in item.categories[1:]]
    tokens += [f"attribute\x1f{name}={value}" for name, value in item.attributes]
    return _slots(tokens)


def attribute_ids(user: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The ``ATTRIBUTES`` input: each row's user slots (one user's, shape (8,), or one per row) beside its item's."""
    users = np.broadcast_to(user, (items.shape[0], ATTRIBUTE_SLOTS))
    return np.ascontiguousarray(np.concatenate([users, items], axis=1))


def request_arrays(
    user_id: np.ndarray, item_id: np.ndarray, category_id: np.ndarray, features: np.ndarray, attributes: np.ndarray
) -> list[tuple[str, np.ndarray, str]]:
    """A Triton request's inputs in :data:`INPUTS` order: (name, array with the batch dimension first, datatype),
    each array of its datatype's numpy type (a request's raw bytes carry no type of their own)."""
    n = int(user_id.shape[0])
    return [
        (USER_ID, user_id.astype(np.int64, copy=False).reshape(n, 1), "INT64"),
        (ITEM_ID, item_id.astype(np.int64, copy=False).reshape(n, 1), "INT64"),
        (CATEGORY_ID, category_id.astype(np.int64, copy=False).reshape(n, 1), "INT64"),
        (FEATURES, features.astype(np.float32, copy=False).reshape(n, NUM_FEATURES), "FP32"),
        (ATTRIBUTES, attributes.astype(np.int64, copy=False).reshape(n, 2 * ATTRIBUTE_SLOTS), "INT64"),
    ]


def user_request_arrays(
    user_key: str, user_tokens: Sequence[str], items: Sequence[Item], features: np.ndarray
) -> list[tuple[str, np.ndarray, str]]:
    """:func:`request_arrays` for one (pseudonymised) user, with their attribute tokens, and each of ``items``."""
    n = len(items)
    return request_arrays(
        np.full(n, stable_hash(user_key), dtype=np.int64),
        np.array([stable_hash(i.item_id) for i in items], dtype=np.int64),
        np.array([stable_hash(i.primary_category) for i in items], dtype=np.int64),
        features,
        attribute_ids(
            user_attribute_ids(user_tokens),
            np.array([item_attribute_ids(i) for i in items], dtype=np.int64).reshape(n, ATTRIBUTE_SLOTS),
        ),
    )
