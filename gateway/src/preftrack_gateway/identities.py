"""Anonymous sessions and the users they turn out to be: the only owner of the session → user map in memory.

A visitor who has not logged in sends events and asks for lists under a session id. Its events are stored under
the session's own pseudonym (:meth:`~preftrack_gateway.privacy.Pseudonymiser.session`, never equal to a user's)
and move the features at once, as a user's do. ``IdentifyUser`` records, once and for good, that the session is a
user's (the store's ``identities`` table, numbered in commit order). Every gateway then moves what it folded under
the session's key to the user's (:func:`move`: the features end as if every event had been sent under the user's
id), folds the session's later events as the user's (:meth:`Identities.translate`), and answers the session's
calls with the user's features. The log keeps each event under the key it came with; forgetting the user forgets
the sessions merged into it (the store deletes their events too).

The map holds one entry per merged session (about 150 bytes each), for as long as the gateway runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from preftrack_gateway.learner import OnlineLearner
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event, EventValidationError, check_id
from preftrack_gateway.store import EventStore


def caller_key(pseudonymise: Pseudonymiser, user_id: str, session_id: str) -> str:
    """The pseudonym an event or a call is keyed by: the user's, or the anonymous session's when only a session id
    is given. Raises EventValidationError naming the field when neither or both are set, or the id is bad."""
    if session_id:
        if user_id:
            raise EventValidationError(
                "session_id", "set user_id or session_id, not both (IdentifyUser links a session to its user)"
            )
        check_id("session_id", session_id)
        return pseudonymise.session(session_id)
    check_id("user_id", user_id)
    return pseudonymise(user_id)


class Identities:
    """Which anonymous sessions belong to which users, as far as the store's merges have been taken in."""

    def __init__(self) -> None:
        self._user_of: dict[str, str] = {}
        #: Merges are taken in from the store in order up to here (ones made by this process may be ahead).
        self.seq = 0

    def __len__(self) -> int:
        return len(self._user_of)

    def knows(self, session_key: str) -> bool:
        return session_key in self._user_of

    def user_of(self, key: str) -> str:
        """The user a session's key belongs to; any other key unchanged."""
        return self._user_of.get(key, key)

    def add(self, session_key: str, user_key: str) -> None:
        self._user_of[session_key] = user_key

    async def merge(
        self, store: EventStore, learner: OnlineLearner, session_key: str, user_key: str, *, up_to_seq: int
    ) -> int:
        """Take in a merge: what ``learner`` folded under the session's key (its events up to ``up_to_seq``) moves to
        the user's (:func:`move`), and the session's later events are keyed by the user; returns how many moved."""
        events = [event for _, event in await store.key_events(session_key, up_to_seq=up_to_seq)]
        move(learner, session_key, user_key, events)
        self.add(session_key, user_key)
        return len(events)

    def translate(self, events: Sequence[Event]) -> Sequence[Event]:
        """The events, those of merged sessions keyed by their users (the same list when there are none)."""
        user_of = self._user_of
        if not user_of or not any(e.user_id in user_of for e in events):
            return events
        return [dataclasses.replace(e, user_id=user_of[e.user_id]) if e.user_id in user_of else e for e in events]

    def drop_user(self, user_key: str) -> list[str]:
        """Forget the user's sessions (the user was erased); returns their keys."""
        sessions = [s for s, u in self._user_of.items() if u == user_key]
        for session in sessions:
            del self._user_of[session]
        return sessions


def move(learner: OnlineLearner, session_key: str, user_key: str, events: Sequence[Event]) -> None:
    """Move what was folded under a session's key (its ``events``) to the user's: the session's sums leave the
    features (and its examples and own weights the per-event layer), and its events are folded in again as the
    user's. The features' sums do not depend on the order events are folded in, so the user's features then equal
    those of a user who had sent every event under one id. The moved events are not learned from a second time."""
    learner.forget(session_key, events, ())
    learner.features.update_many(dataclasses.replace(e, user_id=user_key) for e in events)
