"""What every event store provides. Stored events carry the *pseudonymised* user id."""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence

from preftrack_gateway.schema import Event, Item


class StoreError(RuntimeError):
    """The store failed; nothing in the failed call was committed."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Impression:
    """A served recommendation list: what was shown to whom, by which model version, when."""

    recommendation_id: str
    user_key: str
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    model_version: str
    timestamp_s: float


def first_occurrences(events: Sequence[Event]) -> list[bool]:
    """For each event, whether it is the first with its event_id in ``events``.

    >>> [first for first in first_occurrences([Event(event_id=i, user_id="u", item_id="x", event_type="view",
    ...     timestamp_s=1e9) for i in "aba"])]
    [True, True, False]
    """
    seen: set[str] = set()
    out = []
    for event in events:
        out.append(event.event_id not in seen)
        seen.add(event.event_id)
    return out


def context_json(event: Event) -> str | None:
    return json.dumps(dict(event.context), sort_keys=True) if event.context else None


def impression_row(impression: Impression) -> tuple[object, ...]:
    """Column values of an impression, in the stores' column order."""
    return (
        impression.recommendation_id,
        impression.user_key,
        json.dumps(list(impression.item_ids)),
        json.dumps(list(impression.scores)),
        impression.model_version,
        impression.timestamp_s,
    )


def impression_from_row(row: Sequence[object]) -> Impression:
    """Inverse of :func:`impression_row`."""
    return Impression(
        recommendation_id=str(row[0]),
        user_key=str(row[1]),
        item_ids=tuple(json.loads(str(row[2]))),
        scores=tuple(json.loads(str(row[3]))),
        model_version=str(row[4]),
        timestamp_s=float(row[5]),  # type: ignore[arg-type]
    )


def event_from_row(row: Sequence[object]) -> Event:
    """Inverse of the column order used by the stores: id, user, item, type, value, ts, rec id, context."""
    event_id, user, item, kind, value, ts, rec, ctx = row
    return Event(
        event_id=str(event_id),
        user_id=str(user),
        item_id=str(item),
        event_type=str(kind),
        value=float(value),  # type: ignore[arg-type]
        timestamp_s=float(ts),  # type: ignore[arg-type]
        recommendation_id=str(rec) if rec else None,
        context=json.loads(str(ctx)) if ctx else {},
    )


class EventStore(abc.ABC):
    """Durable, idempotent storage of events, items and impressions."""

    @abc.abstractmethod
    async def append(self, events: Sequence[Event]) -> list[bool]:
        """Commit ``events`` in one transaction, durably, before returning.

        Returns, per event, True if it was stored now and False if its event_id was already stored (or
        appeared earlier in ``events``). Raises :class:`StoreError` if nothing could be committed.
        """

    @abc.abstractmethod
    async def upsert_items(self, items: Sequence[Item]) -> None:
        """Add or replace catalogue items."""

    @abc.abstractmethod
    async def items(self) -> list[Item]:
        """The whole catalogue."""

    @abc.abstractmethod
    async def log_impressions(self, impressions: Sequence[Impression]) -> None:
        """Store served recommendation lists, in one transaction."""

    async def log_impression(self, impression: Impression) -> None:
        """Store one served recommendation list."""
        await self.log_impressions([impression])

    @abc.abstractmethod
    async def impression(self, recommendation_id: str) -> Impression | None:
        """A stored impression, or None."""

    @abc.abstractmethod
    def events(self, *, after_seq: int = 0, batch_size: int = 10_000) -> AsyncIterator[list[tuple[int, Event]]]:
        """All events committed after ``after_seq``, in commit order, as (seq, event) batches."""

    @abc.abstractmethod
    async def count_events(self) -> int:
        """How many events are stored."""

    @abc.abstractmethod
    async def has_event(self, event_id: str) -> bool:
        """Whether an event with this id is stored."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""
