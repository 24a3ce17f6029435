"""The contract between callers and the Triton model: names, tensor names and types, defined once.

A test checks these against ``model_repository/preftrack/config.pbtxt`` and the trainer generates that file
from them, so the gateway, the trainer and Triton cannot drift apart.
"""

from __future__ import annotations

from preftrack_gateway.features import NUM_FEATURES

MODEL_NAME = "preftrack"

USER_ID = "USER_ID"
ITEM_ID = "ITEM_ID"
CATEGORY_ID = "CATEGORY_ID"
FEATURES = "FEATURES"
SCORE = "SCORE"

#: Triton input name -> (Triton data type, dims without the batch dimension), in request order.
INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    USER_ID: ("TYPE_INT64", (1,)),
    ITEM_ID: ("TYPE_INT64", (1,)),
    CATEGORY_ID: ("TYPE_INT64", (1,)),
    FEATURES: ("TYPE_FP32", (NUM_FEATURES,)),
}
OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {SCORE: ("TYPE_FP32", (1,))}
