"""The floor under the gateway's throughput: a grpc.aio server with the gateway's API that does no work.

Its Score answers 0.5 for every item without features, model or Triton; its StreamFeedback and SendFeedback read
every field of every event and store nothing. What it serves on a machine is what one Python gRPC process can
serve there at all, with the same client, so a gateway figure can be read against it as well as against
Triton. Started by ``bench_gateway.py`` as a process of its own:

    .venv/bin/python bench/_grpc_floor.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from preftrack.v1 import feedback_service_pb2 as feedback_pb
from preftrack.v1 import feedback_service_pb2_grpc as feedback_grpc
from preftrack.v1 import scoring_service_pb2 as scoring_pb
from preftrack.v1 import scoring_service_pb2_grpc as scoring_grpc
from preftrack.v1 import types_pb2


class _Scoring(scoring_grpc.ScoringServiceServicer):
    async def Score(self, request, context):  # noqa: N802 (gRPC's name)
        items = [types_pb2.ScoredItem(item_id=item_id, score=0.5) for item_id in request.item_ids]
        return scoring_pb.ScoreResponse(items=items, model_version="1")


def _read(events) -> int:
    """Touch every field the gateway reads, so that the floor pays for decoding them."""
    fields = [
        (event.event_id, event.user_id, event.item_id, event.type, event.value, event.time.seconds, event.time.nanos)
        for event in events
    ]
    return len(fields)


class _Feedback(feedback_grpc.FeedbackServiceServicer):
    async def StreamFeedback(self, request_iterator, context):  # noqa: N802
        accepted = 0
        async for request in request_iterator:
            accepted += _read(request.events)
        return feedback_pb.StreamFeedbackResponse(accepted=accepted)

    async def SendFeedback(self, request, context):  # noqa: N802
        return feedback_pb.SendFeedbackResponse(accepted=_read(request.events))


async def serve(port: int) -> None:
    server = grpc.aio.server()
    scoring_grpc.add_ScoringServiceServicer_to_server(_Scoring(), server)
    feedback_grpc.add_FeedbackServiceServicer_to_server(_Feedback(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
