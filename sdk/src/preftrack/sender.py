"""Background batching of feedback events that never drops one silently.

:meth:`FeedbackSender.send` queues an event (blocking when the queue is full: back-pressure, not loss). A
thread sends batches with :meth:`Client.send`. A batch the gateway cannot take now (unavailable, overloaded,
timed out) stays queued and is retried on the next cycle with the same event ids, so nothing is stored twice.
A batch refused as invalid is split to find the bad events, which are reported in :attr:`rejected`; the rest
are sent. :meth:`close` flushes and raises :class:`FeedbackNotDeliveredError` listing whatever could not be
delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from preftrack.errors import InvalidRequestError, PreftrackError, ResourceExhaustedError
from preftrack.types import FeedbackEvent, FeedbackSummary, RejectedEvent


class _Sends(Protocol):
    """What the sender needs of a client (:class:`preftrack.Client` has it)."""

    def send(self, events: Sequence[FeedbackEvent]) -> FeedbackSummary: ...


class _SendsAsync(Protocol):
    """What the asyncio sender needs of a client (:class:`preftrack.AsyncClient` has it)."""

    async def send(self, events: Sequence[FeedbackEvent]) -> FeedbackSummary: ...


def _retry_delay(error: PreftrackError, interval_s: float) -> float:
    """How long to wait before retrying a batch: what an overloaded gateway asked for, else the flush interval."""
    asked = error.retry_after_s if isinstance(error, ResourceExhaustedError) else None
    return min(30.0, asked) if asked else interval_s


def _queue_full(size: int, timeout_s: float | None) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"{size} events are queued and none left the queue in {timeout_s} s; the gateway is slow or unreachable "
        "(see pending, and the sender's last error)",
        "RESOURCE_EXHAUSTED",
    )


def _closed() -> PreftrackError:
    return PreftrackError("the sender is closed; create a new one", "FAILED_PRECONDITION")


_LOGGER = logging.getLogger(__name__)


class FeedbackNotDeliveredError(PreftrackError):
    """Events that could not be delivered before :meth:`FeedbackSender.close` gave up; see ``events``."""

    def __init__(self, events: list[FeedbackEvent], cause: str) -> None:
        super().__init__(f"{len(events)} events not delivered: {cause}", "UNAVAILABLE")
        self.events = events


class FeedbackSender:
    """Sends events in batches from a background thread. Create with :meth:`Client.feedback_sender`."""

    def __init__(self, client: _Sends, *, batch_size: int, flush_interval_s: float, max_queued: int) -> None:
        if batch_size < 1 or flush_interval_s <= 0 or max_queued < 1:
            raise ValueError("batch_size and max_queued must be >= 1 and flush_interval_s > 0")
        self._client = client
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._queue: queue.Queue[FeedbackEvent] = queue.Queue(maxsize=max_queued)
        self._retry: list[FeedbackEvent] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._stop = threading.Event()
        self._last_error = ""
        self._delay_s = flush_interval_s
        self.accepted = 0
        self.duplicates = 0
        self.rejected: list[RejectedEvent] = []
        self._thread = threading.Thread(target=self._run, name="preftrack-feedback-sender", daemon=True)
        self._thread.start()

    def send(self, event: FeedbackEvent, *, timeout_s: float | None = None) -> str:
        """Queue an event; returns its event_id. Blocks while the queue is full; after ``timeout_s`` raises
        :class:`~preftrack.errors.ResourceExhaustedError`. A closed sender raises
        :class:`~preftrack.errors.PreftrackError` (FAILED_PRECONDITION)."""
        if self._stop.is_set():
            raise _closed()
        with self._lock:
            self._in_flight += 1
        try:
            self._queue.put(event, timeout=timeout_s)
        except queue.Full:
            with self._lock:
                self._in_flight -= 1
            raise _queue_full(self._queue.maxsize, timeout_s) from None
        return event.event_id

    @property
    def pending(self) -> int:
        """Events queued or being sent."""
        with self._lock:
            return self._in_flight

    def _take(self) -> list[FeedbackEvent]:
        with self._lock:
            batch, self._retry = self._retry[: self._batch_size], self._retry[self._batch_size :]
        try:
            if not batch:
                batch.append(self._queue.get(timeout=self._interval))
            while len(batch) < self._batch_size:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _deliver(self, batch: list[FeedbackEvent]) -> list[FeedbackEvent]:
        """Send a batch; returns the events to retry later."""
        try:
            summary = self._client.send(batch)
        except InvalidRequestError as exc:
            if len(batch) == 1:
                self.rejected.append(RejectedEvent(batch[0].event_id, exc.message))
                _LOGGER.warning("event %s rejected: %s", batch[0].event_id, exc.message)
                return []
            middle = len(batch) // 2
            return self._deliver(batch[:middle]) + self._deliver(batch[middle:])
        except PreftrackError as exc:
            self._last_error = str(exc)
            self._delay_s = _retry_delay(exc, self._interval)
            _LOGGER.warning("sending %d events failed (%s); will retry", len(batch), exc)
            return batch
        self.accepted += summary.accepted
        self.duplicates += summary.duplicates
        return []

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stop.is_set() and (self._in_flight == 0 or self._retry):
                    return
            batch = self._take()
            if not batch:
                continue
            retry = self._deliver(batch)
            with self._lock:
                self._retry = retry + self._retry
                self._in_flight -= len(batch) - len(retry)
                self._idle.notify_all()
            if retry:
                time.sleep(self._delay_s)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued event is delivered (or rejected); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, stop the thread, and raise FeedbackNotDeliveredError if anything is left undelivered."""
        delivered = self.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=max(5.0, self._interval * 2))
        if not delivered:
            with self._lock:
                left = list(self._retry)
            while True:
                try:
                    left.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            raise FeedbackNotDeliveredError(left, self._last_error or "timed out")

    def __enter__(self) -> FeedbackSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFeedbackSender:
    """The asyncio twin of :class:`FeedbackSender`: the same batching, retries (with the same event ids, after
    the delay an overloaded gateway asks for), splitting of invalid batches and reporting, on a task of the
    running loop. Create with :meth:`AsyncClient.feedback_sender`."""

    def __init__(self, client: _SendsAsync, *, batch_size: int, flush_interval_s: float, max_queued: int) -> None:
        if batch_size < 1 or flush_interval_s <= 0 or max_queued < 1:
            raise ValueError("batch_size and max_queued must be >= 1 and flush_interval_s > 0")
        self._client = client
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._queue: asyncio.Queue[FeedbackEvent] = asyncio.Queue(maxsize=max_queued)
        self._retry: list[FeedbackEvent] = []
        self._sending: list[FeedbackEvent] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._last_error = ""
        self.accepted = 0
        self.duplicates = 0
        self.rejected: list[RejectedEvent] = []
        self._task = asyncio.get_running_loop().create_task(self._run(), name="preftrack-feedback-sender")

    async def send(self, event: FeedbackEvent, *, timeout_s: float | None = None) -> str:
        """Queue an event; returns its event_id. Waits while the queue is full; after ``timeout_s`` raises
        :class:`~preftrack.errors.ResourceExhaustedError`. A closed sender raises
        :class:`~preftrack.errors.PreftrackError` (FAILED_PRECONDITION)."""
        if self._closed:
            raise _closed()
        self._in_flight += 1
        self._idle.clear()
        try:
            await asyncio.wait_for(self._queue.put(event), timeout_s)
        except asyncio.TimeoutError:  # noqa: UP041 - not the builtin on Python 3.10, which the SDK supports
            self._done(1)
            raise _queue_full(self._queue.maxsize, timeout_s) from None
        except asyncio.CancelledError:  # the caller gave up: the event was never queued
            self._done(1)
            raise
        return event.event_id

    @property
    def pending(self) -> int:
        """Events queued or being sent."""
        return self._in_flight

    def _done(self, n: int) -> None:
        self._in_flight -= n
        if self._in_flight == 0:
            self._idle.set()

    async def _take(self) -> list[FeedbackEvent]:
        batch, self._retry = self._retry[: self._batch_size], self._retry[self._batch_size :]
        if not batch:
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), self._interval))
            except asyncio.TimeoutError:  # noqa: UP041 - Python 3.10
                return batch
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _deliver(self, batch: list[FeedbackEvent]) -> tuple[list[FeedbackEvent], float]:
        """Send a batch; returns the events to retry later and how long to wait first."""
        try:
            summary = await self._client.send(batch)
        except InvalidRequestError as exc:
            if len(batch) == 1:
                self.rejected.append(RejectedEvent(batch[0].event_id, exc.message))
                _LOGGER.warning("event %s rejected: %s", batch[0].event_id, exc.message)
                return [], 0.0
            middle = len(batch) // 2
            first, wait_first = await self._deliver(batch[:middle])
            second, wait_second = await self._deliver(batch[middle:])
            return first + second, max(wait_first, wait_second)
        except PreftrackError as exc:
            self._last_error = str(exc)
            _LOGGER.warning("sending %d events failed (%s); will retry", len(batch), exc)
            return batch, _retry_delay(exc, self._interval)
        self.accepted += summary.accepted
        self.duplicates += summary.duplicates
        return [], 0.0

    async def _run(self) -> None:
        while True:
            batch = await self._take()
            if not batch:
                continue
            self._sending = batch  # if close() cancels the send, these count as undelivered
            retry, wait_s = await self._deliver(batch)
            self._sending = []
            self._retry = retry + self._retry
            self._done(len(batch) - len(retry))
            if retry:
                await asyncio.sleep(wait_s)

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued event is delivered (or rejected); False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:  # noqa: UP041 - Python 3.10
            return False
        return True

    async def close(self, timeout_s: float = 30.0) -> None:
        """Flush, stop the task, and raise FeedbackNotDeliveredError if anything is left undelivered."""
        delivered = await self.flush(timeout_s)
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not delivered:
            left = [*self._sending, *self._retry]
            while not self._queue.empty():
                left.append(self._queue.get_nowait())
            raise FeedbackNotDeliveredError(left, self._last_error or "timed out")

    async def __aenter__(self) -> AsyncFeedbackSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
