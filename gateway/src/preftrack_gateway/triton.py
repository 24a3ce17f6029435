"""The gateway's Triton client: one batched inference per call, version pinned, deadline passed on."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from preftrack_gateway import contract
from preftrack_gateway.errors import DeadlineExceededError, ModelNotReadyError, TritonUnavailableError

_LOGGER = logging.getLogger(__name__)


def _status(exc: InferenceServerException) -> str:
    return str(exc.status() or "")


@dataclasses.dataclass(slots=True)
class _Job:
    columns: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    version: int
    deadline: float
    future: asyncio.Future[np.ndarray]


class TritonScorer:
    """Scores rows with a Triton model over KServe v2 gRPC (asyncio), coalescing concurrent calls.

    At most ``max_in_flight`` Triton requests are outstanding. A call that finds a free slot is sent at once
    (no added latency when idle); calls that arrive while every slot is busy wait and leave together, as one
    request, when a slot frees. Under load this turns many small requests into few large ones — less gRPC
    work here and fewer, fuller executions in Triton — without any fixed batching delay.
    """

    def __init__(
        self, url: str, model_name: str = contract.MODEL_NAME, *, max_in_flight: int = 2, max_batch_rows: int = 4096
    ) -> None:
        self.url = url
        self.model_name = model_name
        self._client = triton_aio.InferenceServerClient(url)
        self._max_in_flight = max_in_flight
        self._max_rows = max_batch_rows
        self._waiting: list[_Job] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

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

    async def load_versions(self, versions: list[int]) -> None:
        """(Re)load the model serving exactly ``versions``; the versions already loaded keep serving meanwhile.

        Raises ModelNotReadyError if Triton refuses (a version failed to load); nothing changes then.
        """
        import json

        try:
            config = (await self._client.get_model_config(self.model_name, as_json=True))["config"]
            config["version_policy"] = {"specific": {"versions": [int(v) for v in versions]}}
            await self._client.load_model(self.model_name, config=json.dumps(config))
        except InferenceServerException as exc:
            raise ModelNotReadyError(f"loading {self.model_name} versions {versions} failed: {exc.message()}") from exc

    async def score(
        self,
        user_id: np.ndarray,
        item_id: np.ndarray,
        category_id: np.ndarray,
        features: np.ndarray,
        attributes: np.ndarray,
        *,
        version: int,
        timeout_s: float,
    ) -> np.ndarray:
        """Scores for each row, shape (n,), possibly sent to Triton together with concurrent calls."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append(
            _Job((user_id, item_id, category_id, features, attributes), version, time.monotonic() + timeout_s, future)
        )
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            first = self._waiting[0]
            group: list[_Job] = []
            rows = 0
            rest: list[_Job] = []
            for job in self._waiting:
                n = int(job.columns[0].shape[0])
                if job.version == first.version and (not group or rows + n <= self._max_rows):
                    group.append(job)
                    rows += n
                else:
                    rest.append(job)
            self._waiting = rest
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, group: list[_Job]) -> None:
        try:
            live = [job for job in group if not job.future.done()]
            if not live:
                return
            columns = [
                np.concatenate([job.columns[c] for job in live]) if len(live) > 1 else live[0].columns[c]
                for c in range(len(live[0].columns))
            ]
            timeout_s = max(job.deadline for job in live) - time.monotonic()
            try:
                scores = await self._infer(*columns, version=live[0].version, timeout_s=timeout_s)
            except BaseException as exc:
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            start = 0
            for job in live:
                n = int(job.columns[0].shape[0])
                if not job.future.done():
                    job.future.set_result(scores[start : start + n])
                start += n
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _infer(
        self,
        user_id: np.ndarray,
        item_id: np.ndarray,
        category_id: np.ndarray,
        features: np.ndarray,
        attributes: np.ndarray,
        *,
        version: int,
        timeout_s: float,
    ) -> np.ndarray:
        n = int(user_id.shape[0])
        inputs = []
        for name, array, dtype in contract.request_arrays(user_id, item_id, category_id, features, attributes):
            tensor = triton_aio.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = await self._client.infer(
                self.model_name,
                inputs,
                model_version=str(version),
                outputs=[triton_aio.InferRequestedOutput(contract.SCORE)],
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
