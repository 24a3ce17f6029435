"""The model registry's state machine: the one place that says how a version's state may change.

Every process (the continual trainer registering what it exported, each gateway replica's rollout controller)
writes versions through :class:`Registry`. A move is checked against :data:`TRANSITIONS`, written with a
compare-and-set on the stored state, and recorded in the version journal with who made it and why, all in one
transaction. Two replicas racing to move one version: one wins, the other is told (``False``) and re-reads.

Life of a version::

    (new) ──▶ exported ──▶ loading ──▶ canary ⇄ shadow ──▶ serving ──▶ retired
      │          │            │           │        │           │          │
      ▼          ▼            ▼           ▼        ▼           ▼          └──▶ serving (reinstated by a
    rejected   retired      failed   rolled_back / failed   rolled_back         roll back, or pinned)

A new version is ``exported`` (it passed the trainer's offline gate) or ``rejected`` (it did not); a version
found ready in Triton with no registry entry is registered ``serving`` (a bootstrap) or ``failed`` (refused).
``rejected``, ``failed`` and ``rolled_back`` are final.

Beside the per-version rules, one rule spans versions: once a version serves, exactly one does. A move that makes a
version ``serving`` must retire (or roll back) the one serving now in the same transaction, and the compare-and-set
on that version serialises replicas that try at once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

from preftrack_gateway.store import EventStore, JournalEntry, VersionRecord

#: Allowed moves: from a state (None: not registered yet) to the states it may go to.
TRANSITIONS: Mapping[str | None, frozenset[str]] = {
    None: frozenset({"exported", "rejected", "serving", "failed"}),
    "exported": frozenset({"loading", "retired", "failed"}),
    "loading": frozenset({"canary", "shadow", "serving", "failed"}),
    "canary": frozenset({"shadow", "serving", "rolled_back", "failed"}),
    "shadow": frozenset({"canary", "serving", "rolled_back", "failed"}),
    "serving": frozenset({"retired", "rolled_back"}),
    "retired": frozenset({"serving", "loading"}),
    "rejected": frozenset(),
    "failed": frozenset(),
    "rolled_back": frozenset(),
}

#: States in which a version takes (part of) the traffic or is compared live.
CANDIDATE_STATES = ("canary", "shadow")

#: Final states of a version decided against (by the trainer's gate, by Triton, by a rollout).
FINAL_STATES = frozenset({"rejected", "failed", "rolled_back"})


def lineage_root(records: Mapping[int, VersionRecord]) -> int | None:
    """The newest version trained from nothing (no parent) that was trained and loaded: a deployment's first
    version, a new first version after an upgrade of its features, or ``continual --from-scratch`` after users
    were forgotten. Every version that goes out after it must descend from it, so that weights from before it
    (which may hold forgotten users' events) never come back through a later version, by an export, a warm
    start, a pin or a roll back. A root that lost its canary (rolled back) stays the root: the trainer goes on
    from it until one of its descendants wins. None: no such version.

    >>> from preftrack_gateway.store import VersionRecord as R
    >>> lineage_root({1: R(version=1, state="retired"), 2: R(version=2, state="serving", parent=1)})
    1
    """
    roots = [v for v, r in records.items() if r.parent is None and r.state not in ("failed", "rejected")]
    return max(roots, default=None)


def lineage(records: Mapping[int, VersionRecord]) -> set[int] | None:
    """The versions that descend, through registered parents, from :func:`lineage_root` (itself included): the
    only ones that may go out. None: no root, any version may."""
    root = lineage_root(records)
    if root is None:
        return None
    children: dict[int, list[int]] = {}
    for version, record in records.items():
        if record.parent is not None:
            children.setdefault(record.parent, []).append(version)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class TransitionError(ValueError):
    """A move the state machine forbids; the message says which and why."""


def allowed(current: str | None, to: str) -> bool:
    """Whether a version in state ``current`` (None: unregistered) may move to ``to``."""
    return to in TRANSITIONS.get(current, frozenset())


@dataclasses.dataclass(frozen=True, slots=True)
class Move:
    """One version to move, to which state, with an optional new note."""

    version: int
    to: str
    note: str | None = None


class Registry:
    """Reads and writes model versions; every state change goes through :meth:`register` or :meth:`move`."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def versions(self) -> list[VersionRecord]:
        return await self.store.versions()

    async def get(self, version: int) -> VersionRecord | None:
        return await self.store.version(version)

    async def register(self, record: VersionRecord, *, actor: str, reason: str) -> bool:
        """Add a new version in ``record.state``. False if the version is registered already."""
        if not allowed(None, record.state):
            raise TransitionError(f"a new version cannot start as {record.state!r}")
        if record.state == "serving" and any(r.state == "serving" for r in await self.store.versions()):
            raise TransitionError(f"version {record.version} cannot start serving: another version serves")
        entry = JournalEntry(
            version=record.version,
            kind="transition",
            at=time.time(),
            actor=actor,
            message=reason,
            details={"from": None, "to": record.state},
        )
        single = "serving" if record.state == "serving" else None
        return await self.store.transition_versions([(record, None)], [entry], single=single)

    async def move(
        self,
        moves: Sequence[Move],
        *,
        actor: str,
        reason: str,
        details: Mapping[str, object] | None = None,
        records: Mapping[int, VersionRecord] | None = None,
    ) -> bool:
        """Move versions together (all or nothing), each from the state it has in ``records`` (default: read now).

        Raises :class:`TransitionError` for a forbidden move or an unknown version; returns False when another
        process changed one of the versions since ``records`` was read.
        """
        if records is None:
            records = {r.version: r for r in await self.store.versions()}
        now = time.time()
        writes: list[tuple[VersionRecord, tuple[str, ...] | None]] = []
        entries = []
        for move in moves:
            current = records.get(move.version)
            if current is None:
                raise TransitionError(f"version {move.version} is not in the registry")
            if not allowed(current.state, move.to):
                raise TransitionError(
                    f"version {move.version} is {current.state}; it cannot move to {move.to} "
                    f"(allowed: {', '.join(sorted(TRANSITIONS[current.state])) or 'none, the state is final'})"
                )
            if current.state == "serving" and not any(m.to == "serving" for m in moves):
                raise TransitionError(
                    f"version {move.version} serves; it can only leave serving when another version starts serving"
                )
            note = current.note if move.note is None else move.note
            writes.append((dataclasses.replace(current, state=move.to, note=note, updated_at=now), (current.state,)))
            entries.append(
                JournalEntry(
                    version=move.version,
                    kind="transition",
                    at=now,
                    actor=actor,
                    message=reason,
                    details={"from": current.state, "to": move.to, **(details or {})},
                )
            )
        after = {v: r.state for v, r in records.items()} | {m.version: m.to for m in moves}
        if sum(state == "serving" for state in after.values()) > 1:
            serving = sorted(v for v, state in after.items() if state == "serving")
            raise TransitionError(f"these moves would leave versions {serving} all serving; retire the old one with it")
        moved = {m.version for m in moves}
        serving_now = [r.version for r in records.values() if r.state == "serving" and r.version not in moved]
        if any(m.to == "serving" for m in moves) and serving_now:
            raise TransitionError(f"version {serving_now[0]} serves; move it out in the same step")
        # The store re-checks inside the transaction that nothing else serves: a replica that decided on a stale
        # view of which version serves loses (False) instead of adding a second one.
        single = "serving" if any(m.to == "serving" for m in moves) else None
        return await self.store.transition_versions(writes, entries, single=single)

    async def record(
        self, version: int, kind: str, *, actor: str, message: str, details: Mapping[str, object] | None = None
    ) -> None:
        """Journal a fact that moves no state (a fraction change, a rollout check)."""
        await self.store.append_journal(
            [
                JournalEntry(
                    version=version,
                    kind=kind,
                    at=time.time(),
                    actor=actor,
                    message=message,
                    details=dict(details or {}),
                )
            ]
        )
