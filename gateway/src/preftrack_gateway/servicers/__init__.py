"""gRPC servicers: the only gateway modules that touch protobuf messages, one per service."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from preftrack_gateway.errors import InvalidRequestError


def request_time(request, name: str) -> float | None:
    """Seconds since the epoch of the request's Timestamp field ``name`` (None when unset)."""
    if not request.HasField(name):
        return None
    stamp = getattr(request, name)
    if not 0 <= stamp.nanos < 1_000_000_000:
        raise InvalidRequestError(f"{name}.nanos must lie in [0, 999999999]")
    return stamp.seconds + stamp.nanos / 1e9


def timestamp(seconds: float) -> Timestamp:
    """A protobuf Timestamp of seconds since the epoch."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
