"""The SDK's errors. Every failed call raises a :class:`PreftrackError`; raw gRPC errors never escape."""

from __future__ import annotations

import grpc


class PreftrackError(Exception):
    """Base of all SDK errors: ``code`` is the gRPC status name, ``message`` what the gateway said."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(f"{code}: {message}")
        self.message = message
        self.code = code


class InvalidRequestError(PreftrackError):
    """The request was malformed (INVALID_ARGUMENT); the message names the field."""


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
    if isinstance(error_out, ResourceExhaustedError):
        error_out.retry_after_s = _retry_after_s(error)
    return error_out


def _retry_after_s(error: grpc.RpcError) -> float | None:
    """The ``retry-after-ms`` trailing metadata of a refused call, in seconds."""
    try:
        trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    except Exception:  # an error raised on this side carries none
        return None
    for key, value in trailing or ():
        if key == "retry-after-ms":
            try:
                return int(value) / 1000.0
            except (TypeError, ValueError):
                return None
    return None
