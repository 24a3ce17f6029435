"""The gateway's errors: one base with a gRPC ``code`` and a ``message`` that says what to fix."""

from __future__ import annotations

import re

import grpc


class GatewayError(Exception):
    """Base of every error the gateway answers with a status other than INTERNAL."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(GatewayError):
    """The caller sent something malformed (INVALID_ARGUMENT); the message names the field.

    ``field`` is the path of the field at fault (``events[3].time``), sent as a ``google.rpc.BadRequest`` field
    violation; by default the message's leading field path, when it starts with one."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        if field is None:
            leading = _FIELD_PATH.match(message)
            field = leading.group(1) if leading and leading.group(1) not in _NOT_FIELDS else ""
        self.field = field


_NOT_FIELDS = frozenset({"a", "an", "at", "the", "this", "message", "no", "one", "in"})
_FIELD_PATH = re.compile(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*)[ :]")


class NotFoundError(GatewayError):
    """The caller named something that does not exist (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(GatewayError):
    """The call contradicts what is recorded (FAILED_PRECONDITION); the message says what is."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnauthenticatedError(GatewayError):
    """Missing or wrong API key (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(GatewayError):
    """A valid key that may not call this method (PERMISSION_DENIED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class OverloadedError(GatewayError):
    """Too much work queued; retry later (RESOURCE_EXHAUSTED). ``retry_after_s`` is sent to the caller as the
    trailing metadata ``retry-after-ms`` and ``grpc-retry-pushback-ms`` (which gRPC's own retries honour)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelNotReadyError(GatewayError):
    """No model version is ready to serve (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


class TritonUnavailableError(GatewayError):
    """Triton could not be reached or did not answer in time (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


class StoreUnavailableError(GatewayError):
    """The event store could not commit; nothing was acknowledged (UNAVAILABLE, or RESOURCE_EXHAUSTED when its
    disk is full). ``retry_after_s``, when set, is sent like :class:`OverloadedError`'s."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, retry_after_s: float | None = None, full: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        if full:
            self.code = grpc.StatusCode.RESOURCE_EXHAUSTED

    @classmethod
    def from_store(cls, exc: Exception, *, committing: bool = True) -> StoreUnavailableError:
        """The refusal of a call the store failed: nothing stored, retry after the store's hint."""
        retry_after_s = float(getattr(exc, "retry_after_s", 1.0))
        what = "could not commit; nothing was stored" if committing else "failed; nothing was changed"
        return cls(
            f"the event store {what}; retry in {retry_after_s:.1f} s{' (same event_ids)' if committing else ''}: {exc}",
            retry_after_s=retry_after_s,
            full=bool(getattr(exc, "full", False)),
        )


class ShuttingDownError(GatewayError):
    """The gateway is draining for a shutdown; retry, another replica (or this one restarted) takes it
    (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(GatewayError):
    """The caller's deadline passed before the answer was ready (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
