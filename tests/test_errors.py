"""Every documented bad input is answered with its status and a message that says what to fix."""

from __future__ import annotations

import math
import time

import pytest

import preftrack

pytestmark = pytest.mark.e2e

EVENT = dict(user_id="u", item_id="i-1", event_type="view")


def _event(**changes) -> preftrack.FeedbackEvent:
    return preftrack.FeedbackEvent(**{**EVENT, **changes})


CASES = [
    ("score: empty user_id", lambda c: c.score("", ["i-1"]), preftrack.InvalidRequestError, "user_id"),
    ("score: no items", lambda c: c.score("u", []), preftrack.InvalidRequestError, "item_ids must name"),
    (
        "score: too many items",
        lambda c: c.score("u", [f"i{n}" for n in range(1001)]),
        preftrack.InvalidRequestError,
        "at most 1000",
    ),
    ("score: empty item id", lambda c: c.score("u", ["i-1", ""]), preftrack.InvalidRequestError, r"item_ids\[1\]"),
    ("score: item id too long", lambda c: c.score("u", ["x" * 300]), preftrack.InvalidRequestError, "256 characters"),
    (
        "score: as_of in the future",
        lambda c: c.score("u", ["i-1"], as_of_s=time.time() + 86_400),
        preftrack.InvalidRequestError,
        "as_of",
    ),
    ("recommend: k = 0", lambda c: c.recommend("u", ["i-1"], k=0), preftrack.InvalidRequestError, "k must be >= 1"),
    (
        "recommend: an empty candidate id",
        lambda c: c.recommend("u", ["i-1", ""], k=3),
        preftrack.InvalidRequestError,
        r"candidate_item_ids\[1\]",
    ),
    (
        "recommend: a category both in and out",
        lambda c: c.recommend("u", k=3, item_filter=preftrack.ItemFilter(categories_in=("a",), categories_out=("a",))),
        preftrack.InvalidRequestError,
        r"filter\.categories_out",
    ),
    (
        "recommend: a negative exclusion window",
        lambda c: c.recommend("u", k=3, item_filter=preftrack.ItemFilter(exclude_bought_within_days=-1)),
        preftrack.InvalidRequestError,
        r"filter\.exclude_bought_within_days",
    ),
    (
        "recommend: a boost factor of 0",
        lambda c: c.recommend("u", k=3, boosts=[preftrack.Boost(target="items", values=["i-1"], factor=0)]),
        preftrack.InvalidRequestError,
        r"boosts\[0\]\.factor",
    ),
    (
        "similar items: an item no one knows",
        lambda c: c.similar_items("no-such-item", k=3),
        preftrack.NotFoundError,
        "item_id 'no-such-item' is neither in the catalogue nor in any event",
    ),
    ("similar items: k = 0", lambda c: c.similar_items("i-1", k=0), preftrack.InvalidRequestError, r"k must lie in"),
    ("buy again: k = 5000", lambda c: c.buy_again("u", k=5000), preftrack.InvalidRequestError, r"k must lie in"),
    ("feedback: no events", lambda c: c.send([]), preftrack.InvalidRequestError, "at least one event"),
    ("feedback: empty event_id", lambda c: c.send(_event(event_id="")), preftrack.InvalidRequestError, "event_id"),
    ("feedback: empty user_id", lambda c: c.send(_event(user_id="")), preftrack.InvalidRequestError, "user_id"),
    ("feedback: empty item_id", lambda c: c.send(_event(item_id=" ")), preftrack.InvalidRequestError, "item_id"),
    (
        "feedback: unknown type",
        lambda c: c.send(_event(event_type="like")),
        preftrack.InvalidRequestError,
        "unknown event_type",
    ),
    (
        "feedback: far future",
        lambda c: c.send(_event(timestamp_s=time.time() + 86_400)),
        preftrack.InvalidRequestError,
        "in the future",
    ),
    (
        "feedback: milliseconds",
        lambda c: c.send(_event(timestamp_s=1000.0)),
        preftrack.InvalidRequestError,
        "before 1990",
    ),
    (
        "feedback: rating out of range",
        lambda c: c.send(_event(event_type="rating", value=11)),
        preftrack.InvalidRequestError,
        "rating must lie",
    ),
    ("feedback: NaN value", lambda c: c.send(_event(value=math.nan)), preftrack.InvalidRequestError, "finite"),
    (
        "feedback: one bad event in a batch",
        lambda c: c.send([_event(), _event(user_id="")]),
        preftrack.InvalidRequestError,
        r"events\[1\].user_id.*nothing in this call was stored",
    ),
    (
        "feedback: too many events",
        lambda c: c.send([_event() for _ in range(10_001)]),
        preftrack.InvalidRequestError,
        "at most 10000",
    ),
    (
        "feedback: message too large",
        lambda c: c.send(_event(context={"blob": "x" * (17 * 1024 * 1024)})),
        preftrack.ResourceExhaustedError,
        "larger than max|exceeds|too large|Received message",
    ),
    (
        "items: negative price",
        lambda c: c.upsert_items([preftrack.Item(item_id="z", categories=("c",), price=-1)]),
        preftrack.InvalidRequestError,
        "price",
    ),
    (
        "items: no category",
        lambda c: c.upsert_items([preftrack.Item(item_id="z", categories=("",))]),
        preftrack.InvalidRequestError,
        "categories",
    ),
    ("items: none", lambda c: c.upsert_items([]), preftrack.InvalidRequestError, "at least one item"),
    (
        "items: too many categories",
        lambda c: c.upsert_items([preftrack.Item(item_id="z", categories=tuple(f"c{k}" for k in range(17)))]),
        preftrack.InvalidRequestError,
        "at most 16",
    ),
    (
        "items: a category too long",
        lambda c: c.upsert_items([preftrack.Item(item_id="z", categories=("c", "c" * 257))]),
        preftrack.InvalidRequestError,
        r"categories\[1\] has 257 characters; at most 256",
    ),
    (
        "items: no categories at all",
        lambda c: c.upsert_items([preftrack.Item(item_id="z", categories=())]),
        preftrack.InvalidRequestError,
        "categories",
    ),
    (
        "feedback: context with too many keys",
        lambda c: c.send(_event(context={f"k{n}": "v" for n in range(17)})),
        preftrack.InvalidRequestError,
        "context: has 17 keys; at most 16",
    ),
    (
        "feedback: context value too long",
        lambda c: c.send(_event(context={"note": "x" * 10_000})),
        preftrack.InvalidRequestError,
        "context: keys must be",
    ),
]


@pytest.fixture(scope="module")
def gateway(triton, tmp_path_factory):
    """One gateway for the whole table (each case is independent of the others)."""
    from preftrack_dev.process import GatewayProcess

    from .conftest import gateway_env

    folder = tmp_path_factory.mktemp("errors")
    with GatewayProcess(gateway_env(triton.grpc_url, f"sqlite:///{folder / 'e.db'}"), folder / "gw.log") as process:
        yield process


@pytest.mark.parametrize(("name", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_answered_clearly(gateway, name, call, error, message) -> None:
    client = preftrack.Client(gateway.target, max_message_bytes=64 * 1024 * 1024)
    with client, pytest.raises(error, match=message) as caught:
        call(client)
    assert caught.value.code != "INTERNAL"
    # The gateway still serves after refusing the call.
    with preftrack.Client(gateway.target) as client:
        assert client.healthy()


FIELDS = [
    (lambda c: c.score("", ["i-1"]), "user_id"),
    (lambda c: c.score("u", ["i-1", ""]), "item_ids[1]"),
    (lambda c: c.recommend("u", ["i-1"], k=0), "k"),
    (lambda c: c.send([_event(), _event(user_id="")]), "events[1].user_id"),
    (lambda c: c.send([_event(), _event(timestamp_s=1000.0)]), "events[1].time"),
    (lambda c: c.upsert_items([preftrack.Item(item_id="z", categories=("c",), price=-1)]), "items[0].price"),
]


def test_invalid_arguments_carry_the_field_at_fault_as_a_bad_request_detail(gateway) -> None:
    with preftrack.Client(gateway.target) as client:
        for call, field in FIELDS:
            with pytest.raises(preftrack.InvalidRequestError) as caught:
                call(client)
            assert [f for f, _ in caught.value.field_violations] == [field], caught.value
            assert caught.value.field_violations[0][1] == caught.value.message
        with pytest.raises(preftrack.InvalidRequestError) as caught:
            client.send([_event() for _ in range(10_001)])
        assert [f for f, _ in caught.value.field_violations] == ["events"]
