"""The SDK's errors. Every failed call raises a :class:`PreftrackError`; raw gRPC errors never escape."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2


class PreftrackError(Exception):
    """Base of all SDK errors: ``code`` is the gRPC status name, ``message`` what the gateway said."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(f"{code}: {message}")
        self.message = message
        self.code = code


class InvalidRequestError(PreftrackError):
    """The request was malformed (INVALID_ARGUMENT); the message names the field. ``field_violations`` holds
    (field path, description) pairs from the answer's ``google.rpc.BadRequest`` details, e.g.
    ``("events[3].time", ...)``; the path is empty when the fault is not one field's."""

    field_violations: tuple[tuple[str, str], ...] = ()


class NotFoundError(PreftrackError):
    """Something named in the request does not exist (NOT_FOUND)."""


class UnauthenticatedError(PreftrackError):
    """Missing or wrong API key (UNAUTHENTICATED)."""


class PermissionDeniedError(PreftrackError):
    """The API key may not do this (PERMISSION_DENIED)."""


class ResourceExhaustedError(PreftrackError):
    """The gateway is overloaded or the message too large (RESOURCE_EXHAUSTED). ``retry_after_s`` is the delay
    the gateway asked for before a retry (None: it asked for none, e.g. a message over the size limit)."""

    retry_after_s: float | None = None


class UnavailableError(PreftrackError):
    """The gateway, Triton or the store is unavailable after retries (UNAVAILABLE)."""


class DeadlineExceededError(PreftrackError):
    """The call did not finish within its timeout (DEADLINE_EXCEEDED)."""


class InternalError(PreftrackError):
    """The gateway failed unexpectedly (INTERNAL or UNKNOWN)."""


_BY_CODE: dict[grpc.StatusCode, type[PreftrackError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def translate(error: grpc.RpcError) -> PreftrackError:
    """The SDK error for a gRPC error (use as ``raise translate(e) from e``)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, InternalError)
    error_out = cls(details or "no details", code.name if code else "UNKNOWN")
    trailing = _trailing(error)
    status = _status(trailing)
    if isinstance(error_out, InvalidRequestError) and status is not None:
        violations = []
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                violations += [(v.field, v.description) for v in bad.field_violations]
        error_out.field_violations = tuple(violations)
    if isinstance(error_out, ResourceExhaustedError):
        error_out.retry_after_s = _retry_after_s(trailing, status)
    return error_out


def _trailing(error: grpc.RpcError) -> tuple[tuple[str, str | bytes], ...]:
    try:
        return tuple(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else ()
    except Exception:  # an error raised on this side carries none
        return ()


def _status(trailing: tuple[tuple[str, str | bytes], ...]) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` the gateway sent with the error, if any."""
    for key, value in trailing:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # not ours to fail on: the plain code and message still stand
                return None
    return None


def _retry_after_s(trailing: tuple[tuple[str, str | bytes], ...], status: status_pb2.Status | None) -> float | None:
    """When the gateway asked to be retried: its ``RetryInfo`` detail, else its ``retry-after-ms`` metadata."""
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    for key, value in trailing:
        if key == "retry-after-ms":
            try:
                return int(value) / 1000.0
            except (TypeError, ValueError):
                return None
    return None
