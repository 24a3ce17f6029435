"""Anonymous sessions merged into users: the merged user's features equal those of a user who had sent every event
under one id (a property test over random histories), and the same through the live gateway, with IdentifyUser's
idempotence, its refusals and erasure."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import preftrack
from preftrack import FeedbackEvent
from preftrack.admin import AdminClient
from preftrack.errors import InvalidRequestError, PreftrackError
from preftrack_gateway.features import FeatureSpec, FeatureState, LabelSpec
from preftrack_gateway.identities import Identities, move
from preftrack_gateway.learner import OnlineLearner
from preftrack_gateway.retrieval import Retriever
from preftrack_gateway.schema import EVENT_TYPES, Event, Item

T0 = 1_700_000_000.0
ITEMS = [f"i-{j}" for j in range(6)]
CATALOGUE = {i: Item(item_id=i, categories=(f"c-{j % 3}",), price=float(j + 1)) for j, i in enumerate(ITEMS)}

_events = st.lists(
    st.tuples(
        st.booleans(),  # True: sent under the session, False: under the user
        st.sampled_from([t for t in EVENT_TYPES if t != "search"]),
        st.sampled_from(ITEMS),
        st.floats(0, 3 * 3600),  # within the features' exact history
        st.sampled_from([1.0, 2.0, 4.5]),
    ),
    min_size=1,
    max_size=40,
)


def _learner() -> OnlineLearner:
    features = FeatureState(FeatureSpec(), CATALOGUE, retrieval=Retriever())
    return OnlineLearner(features, LabelSpec())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=_events, split=st.floats(0, 1))
def test_a_merged_session_reads_as_if_every_event_had_been_sent_by_the_user(history, split) -> None:
    """Some of the session's events are folded before the merge (they move), the rest after it (the identity map
    keys them by the user); in any order. The user's features, the items' and the session's equal those of a
    history sent under the user's id alone."""
    events = [
        Event(
            event_id=f"e-{n}",
            user_id="session-key" if in_session else "user-key",
            item_id=item,
            event_type=kind,
            value=value,
            timestamp_s=T0 + offset,
        )
        for n, (in_session, kind, item, offset, value) in enumerate(history)
    ]
    before = events[: int(split * len(events))]
    merged, reference = _learner(), _learner()
    identities = Identities()
    merged.fold(before)
    move(merged, "session-key", "user-key", [e for e in before if e.user_id == "session-key"])
    identities.add("session-key", "user-key")
    merged.fold(identities.translate(events[len(before) :]))
    reference.fold([Event(**{**_fields(e), "user_id": "user-key"}) for e in events])
    at = T0 + 3 * 3600 + 1.0
    for user in ("user-key", "session-key"):
        got = merged.features.matrix(user, ITEMS, at)
        want = reference.features.matrix(user, ITEMS, at)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=user)
    assert merged.features.retrieval is not None and reference.features.retrieval is not None
    bought = {e.item_id for e in events if e.event_type == "purchase"}
    assert {i for i, _ in merged.features.retrieval.buy_again("user-key", now_s=at, k=10, item_of=CATALOGUE.get)} == (
        bought
    )


def _fields(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in Event.__slots__}


def test_sessions_through_the_gateway_merge_once_and_are_forgotten_with_their_user(gateway) -> None:
    with preftrack.Client(gateway.target) as client, AdminClient(gateway.target) as admin:
        client.upsert_items(
            [preftrack.Item(item_id=i, categories=(item.categories[0],)) for i, item in CATALOGUE.items()]
        )
        # An anonymous visitor browses and buys; their events move the session's features at once.
        visit = [
            FeedbackEvent(session_id="visit-1", item_id="i-1", event_type="view"),
            FeedbackEvent(session_id="visit-1", item_id="i-1", event_type="purchase"),
            FeedbackEvent(session_id="visit-1", item_id="i-2", event_type="view"),
        ]
        assert client.send(visit).accepted == 3
        anonymous = client.recommend("", k=3, session_id="visit-1")
        assert anonymous.items and anonymous.recommendation_id
        client.send(FeedbackEvent(user_id="alice", item_id="i-3", event_type="purchase"))
        # At login the session becomes Alice's: its purchase is hers to buy again, once, however often it is said.
        assert client.identify_user("visit-1", "alice") == 3
        assert client.identify_user("visit-1", "alice") == 0
        assert {i.item_id for i in client.buy_again("alice", k=5)} == {"i-1", "i-3"}
        # The session's calls are answered for Alice now, and its later events count as hers.
        assert client.score("", ["i-1", "i-4"], session_id="visit-1").as_dict() == pytest.approx(
            client.score("alice", ["i-1", "i-4"]).as_dict()
        )
        client.send(FeedbackEvent(session_id="visit-1", item_id="i-4", event_type="purchase"))
        assert "i-4" in {i.item_id for i in client.buy_again("alice", k=5)}
        # A session belongs to one user for good; ids are checked.
        with pytest.raises(PreftrackError, match="belongs to another user") as refused:
            client.identify_user("visit-1", "bob")
        assert refused.value.code == "FAILED_PRECONDITION"
        with pytest.raises(InvalidRequestError, match="session_id"):
            client.send(FeedbackEvent(user_id="alice", session_id="visit-2", item_id="i-1", event_type="view"))
        with pytest.raises(InvalidRequestError, match="session_id"):
            client.recommend("alice", k=3, session_id="visit-2")
        with pytest.raises(InvalidRequestError, match="user_id"):
            client.identify_user("visit-3", "")
        # Forgetting Alice forgets the session merged into her: its 4 events and her own 1 go.
        erasure = admin.forget_user("alice")
        assert erasure.events_deleted == 5, erasure
        assert client.buy_again("alice", k=5) == ()
