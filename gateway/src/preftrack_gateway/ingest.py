"""Durable, idempotent feedback ingestion with group commit.

Concurrent SendFeedback calls and stream batches hand their (already validated, pseudonymised) events to one
:class:`GroupCommitWriter`. It commits whatever is waiting in one transaction, folds the new events into the
real-time features, and only then resolves each caller's future: an acknowledgement always means "stored".
Batching the commits is what lets thousands of unary calls per second share a few fsyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from preftrack_gateway.errors import OverloadedError, StoreUnavailableError
from preftrack_gateway.schema import Event
from preftrack_gateway.store import EventStore, Impression, StoreError

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one write: events newly stored and events whose id was already stored."""

    accepted: int
    duplicates: int


class CommitHealth:
    """Whether the store can commit now: the only owner of that fact. The commit loop reports each commit's
    outcome; the readiness loop reports its probes while no traffic comes. ``on_change(up)`` is called on each
    change (the server turns the feedback service's health with it)."""

    def __init__(self, on_change: Callable[[bool], None] = lambda up: None) -> None:
        self._on_change = on_change
        self.up = True
        #: Wall-clock time of the last successful commit or probe (0: none yet).
        self.last_ok_s = 0.0
        self.last_error = ""

    def ok(self) -> None:
        """A commit (or a probe) succeeded."""
        self.last_ok_s = time.time()
        if not self.up:
            self.up = True
            _LOGGER.info("the event store commits again; feedback is served")
            self._on_change(True)

    def failed(self, exc: StoreError) -> None:
        """A commit (or a probe) failed."""
        self.last_error = str(exc)
        if self.up:
            self.up = False
            _LOGGER.error("the event store cannot commit (%s); feedback is refused until it can", exc)
            self._on_change(False)

    def summary(self) -> dict[str, object]:
        """For status and metrics: up, seconds since the last success, the last error."""
        since = time.time() - self.last_ok_s if self.last_ok_s else None
        return {"up": self.up, "seconds_since_commit": since, "last_error": "" if self.up else self.last_error}


@dataclasses.dataclass(slots=True)
class _Pending:
    events: Sequence[Event]
    future: asyncio.Future[WriteResult]


class GroupCommitWriter:
    """Commits queued writes in batches; at most one transaction in flight.

    Args:
        store: where events go.
        on_commit: awaited after each commit, before the callers are answered, with the newly stored events (in
            commit order) and the highest sequence number the commit took (0: nothing new).
        max_batch_events: most events in one transaction.
        max_pending_events: queued events beyond which :meth:`write` raises :class:`OverloadedError`.
        health: told each commit's outcome.
    """

    def __init__(
        self,
        store: EventStore,
        on_commit: Callable[[list[Event], int], Awaitable[None]],
        *,
        max_batch_events: int,
        max_pending_events: int,
        health: CommitHealth | None = None,
    ) -> None:
        self._store = store
        self.health = health or CommitHealth()
        self._on_commit = on_commit
        self._max_batch = max_batch_events
        self._max_pending = max_pending_events
        self._queue: list[_Pending] = []
        self._pending_events = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._room_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._rate = 0.0  # events committed per second, smoothed
        #: Held around each commit and its fold into the features: hold it to change what was stored (forget a
        #: user) or to swap the features, with no commit in between.
        self.exclusive = asyncio.Lock()

    def start(self) -> None:
        """Start the commit loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    def _backlog_s(self) -> float:
        """Roughly how long the queued events take to commit (at the recent commit rate)."""
        return self._pending_events / max(self._rate, 1000.0)

    def submit(self, events: Sequence[Event]) -> asyncio.Future[WriteResult]:
        """Queue events; the returned future resolves once they are committed. Raises OverloadedError, with a
        retry hint of about the time the backlog takes to commit, when the queue is full."""
        if self._closing:
            raise StoreUnavailableError("the gateway is shutting down; retry on another replica")
        if self._pending_events + len(events) > self._max_pending:
            wait = min(10.0, max(0.2, self._backlog_s()))
            raise OverloadedError(
                f"{self._pending_events} events are waiting to be committed; retry in {wait:.1f} s (same event_ids)",
                retry_after_s=wait * random.uniform(0.75, 1.25),  # spread the retries out
            )
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(events, future))
        self._pending_events += len(events)
        self._wakeup.set()
        return future

    async def submit_when_room(self, events: Sequence[Event]) -> asyncio.Future[WriteResult]:
        """Like :meth:`submit`, but waits (in arrival order) for room in the queue instead of refusing: a stream
        already admitted slows down instead of failing half-way."""
        while True:
            if self._pending_events + len(events) <= self._max_pending and not self._room_waiters:
                return self.submit(events)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (len(events), waiter)
            self._room_waiters.append(entry)
            try:
                await waiter
            finally:
                self._room_waiters.remove(entry)
                # Its turn counted against the room: if it leaves without using it (its stream cancelled), the
                # next waiters must be looked at again, or they could sleep with the queue empty.
                self._wake_room_waiters()
            if self._pending_events + len(events) <= self._max_pending or self._pending_events == 0:
                return self.submit(events)

    def _release(self, size: int) -> None:
        """A batch of ``size`` events left the queue (committed or failed): its room goes to the waiters."""
        self._pending_events -= size
        self._wake_room_waiters()

    def _wake_room_waiters(self) -> None:
        room = self._max_pending - self._pending_events
        for size, waiter in self._room_waiters:
            if size > room and room < self._max_pending:
                break
            if not waiter.done():
                waiter.set_result(None)
            room -= size

    async def write(self, events: Sequence[Event]) -> WriteResult:
        """Queue events and wait until they are committed."""
        return await self.submit(events)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch: list[_Pending] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0].events) <= self._max_batch):
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item.events)
                async with self.exclusive:
                    await self._commit(batch, size)
            if self._closing and not self._queue:
                return

    async def _commit(self, batch: list[_Pending], size: int) -> None:
        events = [event for item in batch for event in item.events]
        started = time.perf_counter()
        try:
            stored, last_seq = await self._store.append_logged(events)
        except StoreError as exc:
            if self.health.up:  # the first failure is logged; the rest while it lasts are counted by health
                _LOGGER.error("commit of %d events failed: %s", len(events), exc)
            self.health.failed(exc)
            error = StoreUnavailableError.from_store(exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            self._release(size)
            return
        except BaseException as exc:  # cancelled or a bug: fail the waiters, never leave them hanging
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(StoreUnavailableError(f"commit aborted: {type(exc).__name__}"))
            self._release(size)
            raise
        self.health.ok()
        elapsed = max(time.perf_counter() - started, 1e-3)
        self._rate = 0.8 * self._rate + 0.2 * (len(events) / elapsed) if self._rate else len(events) / elapsed
        self._release(size)
        new_events = [e for e, new in zip(events, stored, strict=True) if new]
        try:
            await self._on_commit(new_events, last_seq)
        except Exception:  # the events are durable; a feature bug must not turn that into an error
            _LOGGER.exception("updating real-time features failed after a commit")
        start = 0
        for item in batch:
            flags = stored[start : start + len(item.events)]
            start += len(item.events)
            if not item.future.done():
                accepted = sum(flags)
                item.future.set_result(WriteResult(accepted, len(flags) - accepted))

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task


class ImpressionLog:
    """Writes served lists in the background, in batches (one transaction per flush).

    Recommend must not wait for a disk sync per list. The cost: a crash loses at most the impressions of the
    last ``flush_interval_s``; feedback events themselves are never acknowledged before they are durable.
    """

    def __init__(self, store: EventStore, *, flush_interval_s: float = 0.05, max_queued: int = 100_000) -> None:
        self._store = store
        self._interval = flush_interval_s
        self._max = max_queued
        self._queue: list[Impression] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        #: Held by each flush; hold it to change what is stored of a user with no flush in between.
        self.lock = asyncio.Lock()

    def start(self) -> None:
        """Start flushing on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="impressions")

    def add(self, impression: Impression) -> None:
        """Queue one served list."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            _LOGGER.warning("impression queue full (%d); dropping %s", self._max, impression.recommendation_id)
            return
        self._queue.append(impression)

    def drop_user(self, user_key: str) -> int:
        """Remove a user's queued lists (the user is being forgotten); returns how many went."""
        before = len(self._queue)
        self._queue = [i for i in self._queue if i.user_key != user_key]
        return before - len(self._queue)

    async def flush(self) -> None:
        """Write what is queued now."""
        async with self.lock:
            batch, self._queue = self._queue, []
            if batch:
                try:
                    await self._store.log_impressions(batch)
                except StoreError as exc:
                    _LOGGER.error("writing %d impressions failed, will retry: %s", len(batch), exc)
                    self._queue = batch + self._queue

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def close(self) -> None:
        """Stop and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
