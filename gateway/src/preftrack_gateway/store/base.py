"""What every event store provides. Stored events carry the *pseudonymised* user id."""

from __future__ import annotations

import abc
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Sequence

from preftrack_gateway.schema import Event, Item

#: The settings row a health probe rewrites while the store cannot commit (a real commit, tiny).
PROBE_KEY = "store.probe"


class StoreError(RuntimeError):
    """The store failed; nothing in the failed call was committed.

    ``retry_after_s`` is how long a caller should wait before trying again (the store reconnects or the fault
    clears by itself); ``full`` says the store is out of space (a full disk), not merely unreachable.
    """

    def __init__(self, message: str, *, retry_after_s: float = 1.0, full: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.full = full


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Impression:
    """A served recommendation list: what was shown to whom, by which model version, when."""

    recommendation_id: str
    user_key: str
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    model_version: str
    timestamp_s: float
    arm: str = "stable"
    #: The hashed terms of the search it answered (Recommend's query), for training on what was served.
    query_terms: tuple[str, ...] = ()
    #: Per shown item, the probability that the exploration policy placed it where it is (empty: lists logged
    #: before propensities were); all 1.0 when the list was not explored. Off-policy evaluation reads them.
    propensities: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Erasure:
    """A user forgotten: when, by whom, and how many rows went. It names no user (neither the id nor the
    pseudonym): ``ticket`` is what the caller keeps to prove the erasure was done."""

    ticket: str
    at: float
    actor: str
    events_deleted: int
    impressions_deleted: int
    seq: int = 0


@dataclasses.dataclass(frozen=True)
class Forgotten:
    """What :meth:`EventStore.forget_user` deleted: the erasure record, the user's events with their sequence
    numbers (so that in-memory sums can take out those they hold), the items of the user's served lists, and
    how many attribute-token rows went (0 or 1)."""

    erasure: Erasure
    events: list[tuple[int, Event]]
    impression_items: list[str]
    users_deleted: int = 0


#: Setting changed in the same transaction as every catalogue write: replicas reload the catalogue when it moves.
CATALOG_VERSION_KEY = "catalog.version"

#: Setting holding the highest sequence number ever given to a users row. The next numbers are drawn above both it
#: and the table's highest, so a forgotten user's number (the highest, perhaps) is never given again: a replica
#: that had read up to it would miss the row that took it.
USERS_SEQ_KEY = "users.seq"


def uuid4_hex() -> str:
    """A fresh random version tag."""
    return uuid.uuid4().hex


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


#: Life cycle of a model version in the registry; :mod:`preftrack_gateway.registry` owns the transitions.
VERSION_STATES = ("exported", "loading", "canary", "shadow", "serving", "retired", "rejected", "failed", "rolled_back")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VersionRecord:
    """A model version's registry entry: lineage, the event range it was trained on, metrics, state."""

    version: int
    state: str
    parent: int | None = None
    first_seq: int = 0
    last_seq: int = 0
    metrics: dict[str, object] = dataclasses.field(default_factory=dict)
    note: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if self.state not in VERSION_STATES:
            raise ValueError(f"state must be one of {VERSION_STATES}, got {self.state!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JournalEntry:
    """One recorded fact about a version: a state transition, a rollout change or a rollout check, with its
    numbers. ``seq`` is assigned by the store."""

    version: int
    kind: str
    at: float
    actor: str
    message: str
    details: dict[str, object] = dataclasses.field(default_factory=dict)
    seq: int = 0


def journal_row(entry: JournalEntry) -> tuple[object, ...]:
    """Column values of a journal entry, without its seq."""
    return (entry.version, entry.kind, entry.at, entry.actor, entry.message, json.dumps(entry.details, default=str))


def journal_from_row(row: Sequence[object]) -> JournalEntry:
    """A journal entry from (seq, version, kind, at, actor, message, details)."""
    return JournalEntry(
        seq=int(row[0]),  # type: ignore[call-overload]
        version=int(row[1]),  # type: ignore[call-overload]
        kind=str(row[2]),
        at=float(row[3]),  # type: ignore[arg-type]
        actor=str(row[4]),
        message=str(row[5]),
        details=json.loads(str(row[6])) if row[6] else {},
    )


def erasure_from_row(row: Sequence[object]) -> Erasure:
    """An erasure from (seq, ticket, at, actor, events_deleted, impressions_deleted)."""
    return Erasure(
        seq=int(row[0]),  # type: ignore[call-overload]
        ticket=str(row[1]),
        at=float(row[2]),  # type: ignore[arg-type]
        actor=str(row[3]),
        events_deleted=int(row[4]),  # type: ignore[call-overload]
        impressions_deleted=int(row[5]),  # type: ignore[call-overload]
    )


def version_row(record: VersionRecord) -> tuple[object, ...]:
    """Column values of a registry entry."""
    return (
        record.version,
        record.state,
        record.parent,
        record.first_seq,
        record.last_seq,
        json.dumps(record.metrics, default=str),
        record.note,
        record.created_at,
        record.updated_at,
    )


def version_from_row(row: Sequence[object]) -> VersionRecord:
    """Inverse of :func:`version_row`."""
    return VersionRecord(
        version=int(row[0]),  # type: ignore[call-overload]
        state=str(row[1]),
        parent=int(row[2]) if row[2] is not None else None,  # type: ignore[call-overload]
        first_seq=int(row[3]),  # type: ignore[call-overload]
        last_seq=int(row[4]),  # type: ignore[call-overload]
        metrics=json.loads(str(row[5])) if row[5] else {},
        note=str(row[6] or ""),
        created_at=float(row[7]),  # type: ignore[arg-type]
        updated_at=float(row[8]),  # type: ignore[arg-type]
    )


#: The items table's columns, in :func:`item_row` order.
ITEM_COLUMNS = "item_id, categories, price, title, attributes, stock"
#: The upsert's ``SET`` clause: every column but the id takes the new value.
ITEM_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in ITEM_COLUMNS.split(", ")[1:])


def item_row(item: Item) -> tuple[object, ...]:
    """Column values of a catalogue item: id, categories (JSON), price, title, attributes (JSON pairs), stock (NULL
    when untracked)."""
    attributes = json.dumps([list(pair) for pair in item.attributes])
    return (item.item_id, json.dumps(list(item.categories)), item.price, item.title, attributes, item.stock)


def item_from_row(row: Sequence[object]) -> Item:
    """Inverse of :func:`item_row`."""
    return Item(
        item_id=str(row[0]),
        categories=tuple(json.loads(str(row[1]))),
        price=float(row[2]),  # type: ignore[arg-type]
        title=str(row[3] or ""),
        attributes=tuple((str(k), str(v)) for k, v in json.loads(str(row[4] or "[]"))),
        stock=None if row[5] is None else int(row[5]),  # type: ignore[call-overload]
    )


def user_tokens_text(tokens: Sequence[str]) -> str:
    """The stored form of a user's attribute tokens: space-separated, the empty string for none.

    >>> user_tokens_text(("a1", "b2")), user_tokens_text(())
    ('a1 b2', '')
    """
    # A token holding whitespace would come back as several: refuse it rather than store something else.
    if any(not token or token.split() != [token] for token in tokens):
        raise ValueError(f"attribute tokens must be non-empty and hold no whitespace, got {list(tokens)!r}")
    return " ".join(tokens)


def query_terms_text(terms: Sequence[str]) -> str | None:
    """The stored form of hashed query terms (a search event's, a served list's): space-separated, None for none."""
    return " ".join(terms) or None


def tokens_from_text(text: object) -> tuple[str, ...]:
    """Inverse of :func:`query_terms_text` and :func:`user_tokens_text`: the space-separated tokens of a stored
    text (hashed query terms, attribute tokens), none for NULL or the empty string."""
    return tuple(str(text).split()) if text else ()


#: The impressions table's columns, in :func:`impression_row` order.
IMPRESSION_COLUMNS = "recommendation_id, user_key, item_ids, scores, model_version, ts, arm, query_terms, propensities"


def impression_row(impression: Impression) -> tuple[object, ...]:
    """Column values of an impression, in :data:`IMPRESSION_COLUMNS` order."""
    return (
        impression.recommendation_id,
        impression.user_key,
        json.dumps(list(impression.item_ids)),
        json.dumps(list(impression.scores)),
        impression.model_version,
        impression.timestamp_s,
        impression.arm,
        query_terms_text(impression.query_terms),
        json.dumps(list(impression.propensities)) if impression.propensities else None,
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
        arm=str(row[6]) if len(row) > 6 and row[6] else "stable",
        query_terms=tokens_from_text(row[7] if len(row) > 7 else None),
        propensities=tuple(json.loads(str(row[8]))) if len(row) > 8 and row[8] else (),
    )


def event_from_row(row: Sequence[object]) -> Event:
    """Inverse of the column order used by the stores: id, user, item, type, value, ts, rec id, context, terms."""
    event_id, user, item, kind, value, ts, rec, ctx, terms = row
    return Event(
        event_id=str(event_id),
        user_id=str(user),
        item_id=str(item),
        event_type=str(kind),
        value=float(value),  # type: ignore[arg-type]
        timestamp_s=float(ts),  # type: ignore[arg-type]
        recommendation_id=str(rec) if rec else None,
        context=json.loads(str(ctx)) if ctx else {},
        query_terms=tokens_from_text(terms),
    )


class EventStore(abc.ABC):
    """Durable, idempotent storage of events, items and impressions."""

    async def append(self, events: Sequence[Event]) -> list[bool]:
        """Commit ``events`` in one transaction, durably, before returning.

        Returns, per event, True if it was stored now and False if its event_id was already stored (or
        appeared earlier in ``events``). Raises :class:`StoreError` if nothing could be committed.
        """
        return (await self.append_logged(events))[0]

    @abc.abstractmethod
    async def append_logged(self, events: Sequence[Event]) -> tuple[list[bool], int]:
        """:meth:`append`, also returning the highest sequence number this call committed (0: none).

        **The log has no gaps for readers.** Sequence numbers increase in commit order across every process
        writing to the store, so a reader that has seen sequence number N has seen every event numbered below N,
        and reading ``events(after_seq=N)`` later never misses one committed late.
        """

    @abc.abstractmethod
    async def probe(self, *, write: bool = False) -> None:
        """Raise :class:`StoreError` if the store cannot be reached now; with ``write``, if it cannot commit now
        (a full disk, a read-only file). Cheap: the readiness loop calls it every health interval."""

    @abc.abstractmethod
    async def upsert_items(self, items: Sequence[Item]) -> None:
        """Add or replace catalogue items; moves the ``CATALOG_VERSION_KEY`` setting in the same transaction."""

    @abc.abstractmethod
    async def items(self) -> list[Item]:
        """The whole catalogue."""

    @abc.abstractmethod
    async def upsert_users(self, users: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        """Add or replace users' attribute tokens (pseudonymised user key, the user's pseudonymised attribute
        tokens). Replicas follow them by sequence number (:meth:`users_changed`).

        Each written row gets a new sequence number, increasing in commit order across every process writing to
        the store (as the event log's), so that :meth:`users_changed` can be followed without missing a row.
        An empty tokens tuple is stored as such: the user has no attributes. Raises :class:`ValueError` for a
        token that is empty or holds whitespace, before anything is written.
        """

    @abc.abstractmethod
    async def users_changed(self, *, after_seq: int = 0) -> tuple[list[tuple[str, tuple[str, ...]]], int]:
        """Users whose attribute tokens were written after ``after_seq`` (in seq order), and the highest sequence
        number read (``after_seq`` when none). ``after_seq=0`` reads them all. Deletions (ForgetUser) are not
        reported: the process that erases drops the user itself, the others rebuild from the store."""

    async def users(self) -> dict[str, tuple[str, ...]]:
        """Every user's attribute tokens, by user key."""
        return dict((await self.users_changed())[0])

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
    async def impressions_after(self, after_s: float, *, limit: int = 100_000) -> list[Impression]:
        """Impressions served strictly after ``after_s`` (seconds since the epoch), oldest first."""

    @abc.abstractmethod
    def events(self, *, after_seq: int = 0, batch_size: int = 10_000) -> AsyncIterator[list[tuple[int, Event]]]:
        """All events committed after ``after_seq``, in commit order, as (seq, event) batches."""

    @abc.abstractmethod
    async def user_events(self, user_key: str, *, before_s: float, limit: int = 10_000) -> list[Event]:
        """One user's latest ``limit`` events timed before ``before_s``, oldest first."""

    @abc.abstractmethod
    async def engagement(self, start_s: float, end_s: float) -> list[tuple[str, str, int]]:
        """(item, event type, count) of the events timed in [start_s, end_s), searches excluded."""

    @abc.abstractmethod
    async def last_seq(self) -> int:
        """The sequence number of the newest stored event (0 when none)."""

    @abc.abstractmethod
    async def count_events(self) -> int:
        """How many events are stored."""

    @abc.abstractmethod
    async def has_event(self, event_id: str) -> bool:
        """Whether an event with this id is stored."""

    @abc.abstractmethod
    async def committed_at(self, seqs: Sequence[int]) -> dict[int, float]:
        """Commit time of each stored event sequence number."""

    @abc.abstractmethod
    async def put_version(self, record: VersionRecord) -> None:
        """Insert or replace a registry entry."""

    @abc.abstractmethod
    async def versions(self) -> list[VersionRecord]:
        """All registry entries, by version."""

    @abc.abstractmethod
    async def get_setting(self, key: str) -> str | None:
        """A small persistent value (watermarks), or None."""

    @abc.abstractmethod
    async def put_setting(self, key: str, value: str) -> None:
        """Store a small persistent value."""

    @abc.abstractmethod
    async def put_setting_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` unless the key holds one (atomically: the first writer wins); return the value held."""

    @abc.abstractmethod
    async def transition_versions(
        self,
        moves: Sequence[tuple[VersionRecord, tuple[str, ...] | None]],
        entries: Sequence[JournalEntry],
        *,
        single: str | None = None,
    ) -> bool:
        """Write every record and entry in one transaction, only if each record's stored state is in its
        ``expected`` states (``None``: only if the version is not registered yet) and, with ``single``, no
        version outside ``moves`` is in state ``single``. All or nothing: returns whether it was written; False
        means another process moved a version first."""

    @abc.abstractmethod
    async def append_journal(self, entries: Sequence[JournalEntry]) -> None:
        """Record facts that change no state (rollout checks, fraction changes)."""

    @abc.abstractmethod
    async def journal(
        self,
        *,
        version: int | None = None,
        kind: str | None = None,
        after_seq: int = 0,
        limit: int = 10_000,
        newest: bool = False,
    ) -> list[JournalEntry]:
        """Journal entries (of one version / kind when given) after ``after_seq``, oldest first: the first
        ``limit`` of them, or with ``newest`` the last ``limit``."""

    async def version(self, number: int) -> VersionRecord | None:
        """One registry entry."""
        return next((v for v in await self.versions() if v.version == number), None)

    @abc.abstractmethod
    async def merge_session(self, session_key: str, user_key: str, *, at: float) -> tuple[bool, str]:
        """Record that an anonymous session belongs to a user (IdentifyUser): (whether this call recorded it, the
        user the session belongs to now). A session belongs to one user for good: a second merge into another
        user records nothing and answers the first one."""

    @abc.abstractmethod
    async def identities(self, *, after_seq: int = 0) -> list[tuple[int, str, str]]:
        """The merges recorded after ``after_seq``, in order: (seq, session key, user key)."""

    @abc.abstractmethod
    async def key_events(self, user_key: str, *, up_to_seq: int) -> list[tuple[int, Event]]:
        """The events stored under one key (a session's, at a merge) up to a log position, in log order."""

    @abc.abstractmethod
    async def forget_user(self, user_key: str, *, ticket: str, at: float, actor: str) -> Forgotten:
        """Delete every event, served list and the attribute tokens of one (pseudonymised) user, and the events and
        served lists of the anonymous sessions merged into it, and record the erasure, in one transaction; the
        deleted rows
        leave no readable trace in the store's files where the engine allows."""

    @abc.abstractmethod
    async def erasures(self, *, after_seq: int = 0, limit: int = 1000) -> list[Erasure]:
        """Recorded erasures after ``after_seq``, oldest first."""

    @abc.abstractmethod
    async def last_erasure_seq(self) -> int:
        """The position of the newest recorded erasure (0 when none)."""

    @abc.abstractmethod
    async def delete_events_before(self, before_s: float, *, limit: int = 100_000) -> int:
        """Delete up to ``limit`` events and up to ``limit`` served lists whose time is before ``before_s``;
        returns how many rows went (both kinds). The retention setting calls this until it returns 0."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""
