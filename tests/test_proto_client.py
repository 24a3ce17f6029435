"""A client built only from proto/ (freshly generated stubs, no SDK) can call every RPC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import resources
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

PROTO_ROOT = Path(__file__).resolve().parents[1] / "proto"

CLIENT = textwrap.dedent(
    """
    import json, sys, time
    import grpc
    import preftrack
    from preftrack.v1 import feedback_service_pb2 as fb, feedback_service_pb2_grpc as fbg
    from preftrack.v1 import scoring_service_pb2 as sc, scoring_service_pb2_grpc as scg, types_pb2 as t
    from google.protobuf.timestamp_pb2 import Timestamp

    assert not hasattr(preftrack, "Client"), "the SDK leaked in"
    channel = grpc.insecure_channel(sys.argv[1])
    scoring, feedback = scg.ScoringServiceStub(channel), fbg.FeedbackServiceStub(channel)
    out = {}
    item = t.Item(item_id="p-1", categories=["shoes"], price=30.0)
    out["upserted"] = feedback.UpsertItems(fb.UpsertItemsRequest(items=[item])).upserted
    now = Timestamp(); now.GetCurrentTime()
    event = t.Event(event_id="proto-1", user_id="polyglot", item_id="p-1", type=t.EVENT_TYPE_PURCHASE, time=now)
    out["send"] = feedback.SendFeedback(fb.SendFeedbackRequest(events=[event])).accepted
    out["resend_duplicates"] = feedback.SendFeedback(fb.SendFeedbackRequest(events=[event])).duplicates
    batches = [fb.StreamFeedbackRequest(events=[t.Event(event_id=f"proto-s{k}", user_id="polyglot",
               item_id="p-1", type=t.EVENT_TYPE_VIEW, time=now) for k in range(5)])]
    out["stream"] = feedback.StreamFeedback(iter(batches)).accepted
    scored = scoring.Score(sc.ScoreRequest(user_id="polyglot", item_ids=["p-1", "p-2"]))
    out["score_items"] = [i.item_id for i in scored.items]
    rec = scoring.Recommend(sc.RecommendRequest(user_id="polyglot", candidate_item_ids=["p-1", "p-2"], k=1))
    out["recommend"] = [len(rec.items), bool(rec.recommendation_id), rec.model_version]
    item2 = t.Item(item_id="p-2", categories=["shoes"], price=80.0, stock=0)
    feedback.UpsertItems(fb.UpsertItemsRequest(items=[item2]))
    wanted = t.ItemFilter(in_stock_only=True, max_price=50.0)
    found = scoring.Recommend(sc.RecommendRequest(user_id="polyglot", k=5, filter=wanted))
    out["retrieved"] = [[i.item_id, i.source] for i in found.items] + [found.fewer_than_k]
    similar = scoring.SimilarItems(sc.SimilarItemsRequest(item_id="p-1", k=3))
    out["similar"] = [i.item_id for i in similar.items]
    again = scoring.BuyAgain(sc.BuyAgainRequest(user_id="polyglot", k=3))
    out["buy_again"] = [i.item_id for i in again.items]
    visit = t.Event(event_id="proto-v1", session_id="visit-7", item_id="p-2", type=t.EVENT_TYPE_VIEW, time=now)
    feedback.SendFeedback(fb.SendFeedbackRequest(events=[visit]))
    merged = feedback.IdentifyUser(fb.IdentifyUserRequest(session_id="visit-7", user_id="polyglot"))
    out["identify"] = [merged.events_moved, merged.already_merged]
    try:
        scoring.SimilarItems(sc.SimilarItemsRequest(item_id="nowhere", k=3))
    except grpc.RpcError as e:
        out["similar_unknown"] = e.code().name
    bad = t.Event(event_id="proto-bad", user_id="polyglot", item_id="p-1", type=99, time=now)
    try:
        feedback.SendFeedback(fb.SendFeedbackRequest(events=[bad]))
    except grpc.RpcError as e:
        out["bad_type"] = [e.code().name, e.details()]
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    out["health"] = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    reply = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    out["services"] = sorted(s.name for s in reply.list_services_response.service)
    print(json.dumps(out))
    """
)


def test_client_from_proto_only_calls_every_rpc(gateway, tmp_path: Path) -> None:
    generated = tmp_path / "gen"
    generated.mkdir()
    sources = [str(p.relative_to(PROTO_ROOT)) for p in sorted((PROTO_ROOT / "preftrack" / "v1").glob("*.proto"))]
    well_known = str(resources.files("grpc_tools") / "_proto")
    # protoc runs in its own process: in-process it can crash next to the already loaded protobuf runtime.
    protoc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={generated}",
            f"--grpc_python_out={generated}",
            *sources,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert protoc.returncode == 0, protoc.stderr
    # Regular packages, so these shadow the installed SDK's `preftrack` completely.
    (generated / "preftrack" / "__init__.py").write_text("")
    (generated / "preftrack" / "v1" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(generated)}
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, gateway.target], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["upserted"] == 1 and out["send"] == 1 and out["resend_duplicates"] == 1 and out["stream"] == 5
    assert out["score_items"] == ["p-1", "p-2"]
    assert out["recommend"] == [1, True, "1"]
    # From the catalogue, with a filter (p-2 is out of stock and too dear): the one item left, and "fewer than k".
    assert out["retrieved"] == [["p-1", "buy_again"], True]
    assert out["similar"] == ["p-2"] and out["buy_again"] == ["p-1"]  # the only other shoe; what they bought
    assert out["identify"] == [1, False] and out["similar_unknown"] == "NOT_FOUND"
    assert out["bad_type"][0] == "INVALID_ARGUMENT" and "type" in out["bad_type"][1]
    assert out["health"] == 1  # SERVING
    assert {"preftrack.v1.ScoringService", "preftrack.v1.FeedbackService", "grpc.health.v1.Health"} <= set(
        out["services"]
    )
