"""The gateway's Triton client: one batched inference per call, version pinned, deadline passed on."""

from __future__ import annotations

import logging
import math

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from preftrack_gateway import contract
from preftrack_gateway.errors import DeadlineExceededError, ModelNotReadyError, TritonUnavailableError

_LOGGER = logging.getLogger(__name__)


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "")


class TritonScorer:
    """Scores rows with a Triton model over KServe v2 gRPC (asyncio)."""

    def __init__(self, url: str, model_name: str = contract.MODEL_NAME) -> None:
        self.url = url
        self.model_name = model_name
        self._client = triton_aio.InferenceServerClient(url)

    async def ready_versions(self) -> list[int]:
        """Versions of the model that are loaded and ready, ascending (empty when none or unreachable)."""
        try:
            index = await self._client.get_model_repository_index(as_json=True)
        except InferenceServerException as exc:
            raise TritonUnavailableError(f"Triton at {self.url} is unreachable: {exc.message()}") from exc
        return sorted(
            int(m["version"])
            for m in index.get("models", [])
            if m.get("name") == self.model_name and m.get("state") == "READY" and m.get("version")
        )

    async def load(self) -> None:
        """Ask Triton to (re)load the model; the loaded versions keep serving if it fails."""
        try:
            await self._client.load_model(self.model_name)
        except InferenceServerException as exc:
            raise ModelNotReadyError(f"loading {self.model_name} failed: {exc.message()}") from exc

    async def score(
        self,
        user_id: np.ndarray,
        item_id: np.ndarray,
        category_id: np.ndarray,
        features: np.ndarray,
        *,
        version: int,
        timeout_s: float,
        request_id: str = "",
    ) -> np.ndarray:
        """Scores for each row, shape (n,)."""
        n = int(user_id.shape[0])
        columns = (
            (contract.USER_ID, user_id.reshape(n, 1), "INT64"),
            (contract.ITEM_ID, item_id.reshape(n, 1), "INT64"),
            (contract.CATEGORY_ID, category_id.reshape(n, 1), "INT64"),
            (contract.FEATURES, features, "FP32"),
        )
        inputs = []
        for name, array, dtype in columns:
            tensor = triton_aio.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = await self._client.infer(
                self.model_name,
                inputs,
                model_version=str(version),
                outputs=[triton_aio.InferRequestedOutput(contract.SCORE)],
                request_id=request_id,
                client_timeout=max(0.001, timeout_s),
            )
        except InferenceServerException as exc:
            status = _status(exc)
            if "DEADLINE_EXCEEDED" in status:
                raise DeadlineExceededError(f"Triton did not answer within {timeout_s:.3f} s") from exc
            if "UNAVAILABLE" in status:
                raise TritonUnavailableError(f"Triton at {self.url} is unavailable: {exc.message()}") from exc
            if (
                "NOT_FOUND" in status
                or "not ready" in (exc.message() or "")
                or "unknown model" in (exc.message() or "")
            ):
                raise ModelNotReadyError(f"model {self.model_name} v{version} is not ready: {exc.message()}") from exc
            raise
        scores = result.as_numpy(contract.SCORE)
        if scores is None or scores.shape[0] != n:
            raise RuntimeError(f"Triton returned {None if scores is None else scores.shape} scores for {n} rows")
        return scores.reshape(n)

    async def close(self) -> None:
        """Close the channel."""
        await self._client.close()


def deadline_s(remaining: float | None, default_s: float) -> float:
    """The timeout to pass on: the caller's remaining time if it set one, else ``default_s``.

    >>> deadline_s(None, 5.0), deadline_s(0.25, 5.0)
    (5.0, 0.25)
    """
    if remaining is None or math.isinf(remaining):
        return default_s
    return remaining
