"""Attack the running gateway: random bytes, mutated messages, invalid UTF-8 and extreme values on every RPC.

Never UNKNOWN or INTERNAL; a key is checked before anything is decoded; memory and the log stay bounded.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory

from preftrack.admin.v1 import admin_service_pb2 as ap
from preftrack.insights.v1 import insights_service_pb2 as ip
from preftrack.v1 import feedback_service_pb2 as fp
from preftrack.v1 import scoring_service_pb2 as sp
from preftrack.v1 import types_pb2 as tp
from preftrack_dev.process import GatewayProcess

from .conftest import Trained, gateway_env

pytestmark = pytest.mark.e2e

CLIENT_KEY = "fuzz-client-key-0123456789"
ADMIN_KEY = "fuzz-admin-key-0123456789"
ANALYST_KEY = "fuzz-analyst-key-0123456789"
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def _methods() -> list[tuple[str, type, bool]]:
    """(path, request class, client-streaming) of every method of the public, admin and insights APIs."""
    out = []
    for module in (sp, fp, ap, ip):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                cls = message_factory.GetMessageClass(method.input_type)
                out.append((f"/{service.full_name}/{method.name}", cls, method.client_streaming))
    return out


#: Methods answering with a stream.
SERVER_STREAMING = {"/preftrack.insights.v1.InsightsService/RankAudience"}


def _event(**overrides) -> tp.Event:
    fields = {"event_id": "e-1", "user_id": "u-1", "item_id": "i-1", "type": tp.EVENT_TYPE_VIEW}
    fields.update(overrides)
    return tp.Event(**fields)


def _valid(cls: type):
    """A plausible request of each type, the seed of mutations."""
    name = cls.DESCRIPTOR.name
    samples = {
        "ScoreRequest": lambda: sp.ScoreRequest(user_id="u-1", item_ids=["i-1", "i-2"]),
        "RecommendRequest": lambda: sp.RecommendRequest(user_id="u-1", candidate_item_ids=["i-1", "i-2"], k=1),
        "SimilarItemsRequest": lambda: sp.SimilarItemsRequest(
            item_id="i-1", k=3, filter=tp.ItemFilter(in_stock_only=True, max_price=50.0, categories_out=["c"])
        ),
        "BuyAgainRequest": lambda: sp.BuyAgainRequest(user_id="u-1", k=3),
        "SendFeedbackRequest": lambda: fp.SendFeedbackRequest(events=[_event()]),
        "StreamFeedbackRequest": lambda: fp.StreamFeedbackRequest(events=[_event(), _event(event_id="e-2")]),
        "UpsertItemsRequest": lambda: fp.UpsertItemsRequest(items=[tp.Item(item_id="i-9", categories=["c"])]),
        "UpsertUsersRequest": lambda: fp.UpsertUsersRequest(users=[fp.User(user_id="u-9", attributes={"age": "30s"})]),
        "StartRolloutRequest": lambda: ap.StartRolloutRequest(version=7, mode=ap.ROLLOUT_MODE_CANARY, fraction=0.1),
        "SetRolloutFractionRequest": lambda: ap.SetRolloutFractionRequest(fraction=0.2),
        "PinVersionRequest": lambda: ap.PinVersionRequest(version=1),
        "ListJournalRequest": lambda: ap.ListJournalRequest(version=1, limit=5),
        "ExplainRoutesRequest": lambda: ap.ExplainRoutesRequest(user_ids=["u-1", "u-2"]),
        "PromoteRequest": lambda: ap.PromoteRequest(reason="fuzz"),
        "RollBackRequest": lambda: ap.RollBackRequest(reason="fuzz"),
        "GetProfileRequest": lambda: ip.GetProfileRequest(user_id="u-1", top=3, history_points=10),
        "RankAudienceRequest": lambda: ip.RankAudienceRequest(item_id="i-1", user_ids=["u-1", "u-2"], k=1),
        "GetTrendsRequest": lambda: ip.GetTrendsRequest(window={"seconds": 3600}, top=3),
    }
    return samples.get(name, cls)()


def _extremes() -> list[tuple[str, bytes]]:
    """Hand-made requests at and past every limit, and bytes no protobuf library would write."""
    nan, inf = math.nan, math.inf
    score, rec, send = "/preftrack.v1.ScoringService/Score", "/preftrack.v1.ScoringService/Recommend", None
    send = "/preftrack.v1.FeedbackService/SendFeedback"
    upsert = "/preftrack.v1.FeedbackService/UpsertItems"
    users = "/preftrack.v1.FeedbackService/UpsertUsers"
    admin = "/preftrack.admin.v1.AdminService/"
    insights = "/preftrack.insights.v1.InsightsService/"
    profile, audience, trends = insights + "GetProfile", insights + "RankAudience", insights + "GetTrends"
    similar, again = "/preftrack.v1.ScoringService/SimilarItems", "/preftrack.v1.ScoringService/BuyAgain"
    many = [str(k) for k in range(100_000)]
    cases = [
        (score, sp.ScoreRequest(user_id="u", item_ids=["i"] * 1001)),
        (score, sp.ScoreRequest(user_id="u" * 100_000, item_ids=["i"])),
        (score, sp.ScoreRequest(user_id="\x00\U0001f600", item_ids=["\u202e"])),
        (score, sp.ScoreRequest(user_id="u", item_ids=["i"], as_of={"seconds": 2**62, "nanos": 999_999_999})),
        (score, sp.ScoreRequest(user_id="u", item_ids=["i"], as_of={"seconds": -(2**62)})),
        (score, sp.ScoreRequest(user_id="u", item_ids=["i"], as_of={"seconds": 1_800_000_000, "nanos": 2**31 - 1})),
        (score, sp.ScoreRequest(user_id="u", item_ids=["i"], context={str(k): "x" * 1000 for k in range(200)})),
        (rec, sp.RecommendRequest(user_id="u", candidate_item_ids=["i"], k=2**31 - 1)),
        (rec, sp.RecommendRequest(user_id="u", candidate_item_ids=["i"], k=-(2**31))),
        (rec, sp.RecommendRequest(user_id="u", candidate_item_ids=["i"] * 1000, exclude_item_ids=["i"] * 100_000)),
        (rec, sp.RecommendRequest(user_id="u", k=2**31 - 1)),
        (rec, sp.RecommendRequest(user_id="u", k=5, filter=tp.ItemFilter(min_price=nan, max_price=-inf))),
        (rec, sp.RecommendRequest(user_id="u", k=5, filter=tp.ItemFilter(categories_in=many, categories_out=many))),
        (rec, sp.RecommendRequest(user_id="u", k=5, filter=tp.ItemFilter(exclude_bought_within_days=inf))),
        (rec, sp.RecommendRequest(user_id="u", k=5, filter=tp.ItemFilter(attributes_in=[tp.AttributeValues()]))),
        (rec, sp.RecommendRequest(user_id="u", k=5, boosts=[tp.Boost(target=9, values=["x"], factor=nan)] * 100)),
        (rec, sp.RecommendRequest(user_id="u", k=5, boosts=[tp.Boost(target=3, values=many, factor=1e300)])),
        (
            rec,
            sp.RecommendRequest(user_id="u", k=5, diversity=tp.Diversity(max_per_value=-(2**31), attribute="a" * 9999)),
        ),
        (similar, sp.SimilarItemsRequest(item_id="i" * 100_000, k=2**31 - 1)),
        (similar, sp.SimilarItemsRequest(item_id="nobody-has-this", k=-(2**31), user_id="\x00")),
        (similar, sp.SimilarItemsRequest(item_id="i-1", k=3, filter=tp.ItemFilter(min_price=9.0, max_price=1.0))),
        (again, sp.BuyAgainRequest(user_id="u" * 100_000, k=0)),
        (again, sp.BuyAgainRequest(user_id="u", k=2**31 - 1, filter=tp.ItemFilter(exclude_bought_within_days=-1.0))),
        (send, fp.SendFeedbackRequest(events=[_event(value=nan)])),
        (send, fp.SendFeedbackRequest(events=[_event(value=inf, type=tp.EVENT_TYPE_RATING)])),
        (send, fp.SendFeedbackRequest(events=[_event(type=99)])),
        (send, fp.SendFeedbackRequest(events=[_event(time={"seconds": 2**62})])),
        (send, fp.SendFeedbackRequest(events=[_event(time={"seconds": 1_800_000_000, "nanos": -5})])),
        (send, fp.SendFeedbackRequest(events=[_event(event_id=str(i)) for i in range(10_001)])),
        (send, fp.SendFeedbackRequest(events=[_event(recommendation_id="r" * 10_000)])),
        (send, fp.SendFeedbackRequest()),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="i", categories=["c"], price=nan)])),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="i", categories=["c"], price=-inf)])),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="i", categories=["c"], stock=-(2**63))])),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="", categories=[""])])),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="i", categories=[f"c{k}" for k in range(10_000)])])),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="i", categories=["c" * 100_000])])),
        (users, fp.UpsertUsersRequest()),
        (users, fp.UpsertUsersRequest(users=[fp.User(user_id="")])),
        (users, fp.UpsertUsersRequest(users=[fp.User(user_id="u", attributes={f"a{k}": "v" for k in range(9)})])),
        (users, fp.UpsertUsersRequest(users=[fp.User(user_id="u", attributes={"": "v"})])),
        (users, fp.UpsertUsersRequest(users=[fp.User(user_id="u", attributes={"a": ""})])),
        (users, fp.UpsertUsersRequest(users=[fp.User(user_id="u", attributes={"a": "v" * 100_000})])),
        (users, fp.UpsertUsersRequest(users=[fp.User(user_id="u" * 100_000, attributes={"a": "v"})])),
        (admin + "StartRollout", ap.StartRolloutRequest(version=2**62, mode=ap.ROLLOUT_MODE_SHADOW)),
        (admin + "StartRollout", ap.StartRolloutRequest(version=1, mode=7, fraction=nan)),
        (admin + "StartRollout", ap.StartRolloutRequest(version=-1, fraction=5.0, reason="r" * 10_000)),
        (admin + "SetRolloutFraction", ap.SetRolloutFractionRequest(fraction=-inf)),
        (admin + "PinVersion", ap.PinVersionRequest(version=-(2**63))),
        (admin + "PinVersion", ap.PinVersionRequest(version=2**63 - 1)),
        (admin + "ListJournal", ap.ListJournalRequest(version=-1, limit=-(2**31), kind="k" * 100)),
        (admin + "ExplainRoutes", ap.ExplainRoutesRequest(user_ids=["u"] * 100_001)),
        (admin + "ExplainRoutes", ap.ExplainRoutesRequest(user_ids=[""])),
        (profile, ip.GetProfileRequest(user_id="u", top=2**31 - 1, history_points=-(2**31))),
        (profile, ip.GetProfileRequest(user_id="u" * 100_000, as_of={"seconds": 2**62})),
        (profile, ip.GetProfileRequest(user_id="u", as_of={"seconds": 1_800_000_000, "nanos": -1})),
        (audience, ip.RankAudienceRequest(item_id="i-1", user_ids=["u"] * 100_001)),
        (audience, ip.RankAudienceRequest(item_id="i-1", user_ids=["u"], k=-(2**31), min_score=nan)),
        (audience, ip.RankAudienceRequest(item_id="i" * 100_000, user_ids=["u"])),
        (audience, ip.RankAudienceRequest(category="", user_ids=["u"])),
        (audience, ip.RankAudienceRequest(user_ids=["u", ""])),
        (audience, ip.RankAudienceRequest(category="c", user_ids=["u"], as_of={"seconds": -(2**62)})),
        (trends, ip.GetTrendsRequest(window={"seconds": -5})),
        (trends, ip.GetTrendsRequest(window={"seconds": 2**62}, top=-1)),
        (trends, ip.GetTrendsRequest(window={"seconds": 60, "nanos": -(10**9)}, as_of={"seconds": 2**62})),
        (score, sp.ScoreRequest(user_id="u", item_ids=["i"], query="q" * 100_000)),
        (rec, sp.RecommendRequest(user_id="u", candidate_item_ids=["i"], k=1, query="\x00\U0001f600 ...")),
        (send, fp.SendFeedbackRequest(events=[_event(type=tp.EVENT_TYPE_SEARCH, item_id="", query="q" * 10_000)])),
        (send, fp.SendFeedbackRequest(events=[_event(type=tp.EVENT_TYPE_SEARCH, item_id="", query="?!")])),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="i", categories=["c"], title="t" * 100_000)])),
        (upsert, fp.UpsertItemsRequest(items=[tp.Item(item_id="i", categories=["c"], attributes={"": "x" * 10_000})])),
    ]
    out = [(path, message.SerializeToString()) for path, message in cases]
    # Invalid UTF-8 in a string field, a length running past the end, a 200-deep nested message, a bad tag.
    out += [
        (score, b"\x0a\x02\xff\xfe\x12\x01i"),
        (score, b"\x0a\xff\xff\xff\xff\x0f"),
        (send, b"\x0a\x80\x01" * 200),
        (rec, b"\x00\x00\x00"),
        (admin + "ExplainRoutes", b"\x0a\x03\xc3\x28\x41"),
        (audience, b"\x1a\x02\xff\xfe"),
        (profile, b"\x0a\xff\xff\xff\xff\x0f"),
    ]
    return out


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.6 and data:
            del data[rng.randrange(len(data)) :]
        elif choice < 0.8:
            position = rng.randrange(len(data) + 1)
            data[position:position] = rng.randbytes(rng.randint(1, 8))
        else:
            data.extend(bytes(data))
    return bytes(data)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_no_bytes_on_the_wire_get_unknown_or_internal(triton, trained: Trained, tmp_path: Path) -> None:
    env = gateway_env(
        triton.grpc_url,
        f"sqlite:///{tmp_path / 'events.db'}",
        repository=trained.repository,
        PREFTRACK_API_KEYS=CLIENT_KEY,
        PREFTRACK_ADMIN_KEYS=ADMIN_KEY,
        PREFTRACK_ANALYST_KEYS=ANALYST_KEY,
    )
    rng = random.Random(20261128)
    methods = _methods()
    codes: Counter[tuple[str, str]] = Counter()
    bad: list[str] = []
    with GatewayProcess(env, tmp_path / "gw.log") as gateway, grpc.insecure_channel(gateway.target) as channel:

        def call(path: str, payload: bytes | list[bytes], streaming: bool, key: str | None) -> None:
            metadata = (("authorization", f"Bearer {key}"),) if key else ()
            try:
                if streaming:
                    stub = channel.stream_unary(path)
                    stub(iter(payload if isinstance(payload, list) else [payload]), timeout=30, metadata=metadata)
                elif path in SERVER_STREAMING:
                    list(channel.unary_stream(path)(payload, timeout=30, metadata=metadata))
                else:
                    channel.unary_unary(path)(payload, timeout=30, metadata=metadata)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in ALLOWED:
                    bad.append(f"{path} {payload[:40]!r}: {code.name} {exc.details()[:200]}")
                elif not exc.details():
                    bad.append(f"{path}: {code.name} without a message saying what to fix")
            codes[(path.rsplit("/", 1)[-1], code.name)] += 1

        def key_for(path: str) -> str:
            if "/preftrack.admin." in path or path.endswith(("/UpsertItems", "/UpsertUsers")):
                return ADMIN_KEY  # the catalogue methods: a client key would be refused before decoding
            return ANALYST_KEY if "/preftrack.insights." in path else CLIENT_KEY

        call(
            "/preftrack.v1.ScoringService/Score",
            sp.ScoreRequest(user_id="u", item_ids=["i-1"]).SerializeToString(),
            False,
            CLIENT_KEY,
        )  # warm up before measuring memory
        rss_before = _rss_kib(gateway.pid)
        log_before = (tmp_path / "gw.log").stat().st_size
        for path, payload in _extremes():
            streaming = path.endswith("StreamFeedback")
            call(path, payload, streaming, key_for(path))
        for _ in range(12):
            for path, cls, streaming in methods:
                seed = _valid(cls).SerializeToString()
                for _ in range(12):
                    payload = rng.randbytes(rng.choice([0, 1, 7, 64, 1000]))
                    call(path, payload, streaming, key_for(path))
                    call(path, _mutate(seed, rng), streaming, key_for(path))
                call(path, rng.randbytes(64), streaming, None)  # no key: refused before decoding
                wrong = CLIENT_KEY if "/preftrack.admin." in path or "/preftrack.insights." in path else "not-a-key"
                call(path, seed, streaming, wrong)
                if streaming:  # a stream whose third message is garbage after two good ones
                    call(path, [seed, seed, rng.randbytes(30)], True, key_for(path))
        rss_after = _rss_kib(gateway.pid)
        log_growth = (tmp_path / "gw.log").stat().st_size - log_before
    total = sum(codes.values())
    assert not bad, f"{len(bad)} of {total} calls: " + "\n".join(bad[:10])
    assert total > 3000
    assert codes[("Score", "UNAUTHENTICATED")] >= 12  # garbage without a key is refused as unauthenticated
    assert codes[("ListVersions", "PERMISSION_DENIED")] >= 12  # a client key on the admin API
    assert codes[("RankAudience", "PERMISSION_DENIED")] >= 12  # a client key on the insights API
    assert codes[("RankAudience", "INVALID_ARGUMENT")] > 20
    assert codes[("Score", "INVALID_ARGUMENT")] > 100
    assert rss_after - rss_before < 50 * 1024, f"RSS grew by {(rss_after - rss_before) / 1024:.0f} MiB"
    assert log_growth < 200_000, f"the log grew by {log_growth} bytes for {total} bad calls"
    log = (tmp_path / "gw.log").read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 300 : log.index("Traceback") + 1500]
