"""One server interceptor at the edge: request ids, API keys and roles, decoding, error → status mapping,
rate-limited logging, latency metrics.

grpc decodes a request before any handler or interceptor code runs, and an undecodable one would fail inside
grpc (UNKNOWN or INTERNAL, a traceback logged per call, before the API key is checked). So the interceptor
owns decoding: it wraps each method's deserializer so that bytes that do not parse become an
:class:`Undecodable` marker, and answers it with INVALID_ARGUMENT only **after** the key check.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from preftrack_gateway.errors import (
    GatewayError,
    InvalidRequestError,
    OverloadedError,
    PermissionDeniedError,
    ShuttingDownError,
    StoreUnavailableError,
    UnauthenticatedError,
)
from preftrack_gateway.keys import Keys
from preftrack_gateway.metrics import GatewayMetrics
from preftrack_gateway.store import StoreError

_LOGGER = logging.getLogger(__name__)

#: The current call's request id (for logs and responses).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_UNGUARDED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: Per (method, status): at most this many log lines per window; the rest are counted and summarised.
_LOG_BURST = 5
_LOG_WINDOW_S = 10.0
_ADMIN = "/preftrack.admin."
_INSIGHTS = "/preftrack.insights."
#: What catalogue keys may write beside the client methods: items, and users' attributes.
_CATALOG = frozenset({"/preftrack.v1.FeedbackService/UpsertItems", "/preftrack.v1.FeedbackService/UpsertUsers"})


class _Quota:
    """A token bucket per key: ``rate`` calls per second, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self._burst = max(burst, 1.0)
        self._buckets: dict[bytes, list[float]] = {}  # a valid key -> [tokens, when]

    def take(self, token: bytes) -> float:
        """Spend a token of this key; returns 0.0, or how many seconds until one is there (nothing spent)."""
        now = time.monotonic()
        bucket = self._buckets.get(token)
        if bucket is None:
            if len(self._buckets) > 100_000:  # keys come from configuration; never let this grow regardless
                self._buckets.clear()
            bucket = self._buckets[token] = [self._burst, now]
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


class Undecodable:
    """What a request that failed to parse becomes; the guard answers it with INVALID_ARGUMENT."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer, message: str):
    def decode(data: bytes):
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, invalid UTF-8, recursion limits: whatever the bytes do
            return Undecodable(f"{message}: {type(exc).__name__}: {str(exc)[:200]}")

    return decode


def _undecodable_error(method: str, marker: Undecodable, index: int | None = None) -> InvalidRequestError:
    where = f"message {index} of the {method} stream" if index is not None else f"the {method} request"
    return InvalidRequestError(
        f"{where} is not a valid protobuf message ({marker.reason}); send the message type the proto names for "
        "this method, with UTF-8 strings"
    )


def _details(exc: GatewayError) -> tuple[tuple[str, str | bytes], ...]:
    """Trailing metadata of a refusal: the standard ``google.rpc.Status`` with its details
    (``grpc-status-details-bin``: a ``BadRequest`` field violation for INVALID_ARGUMENT, a ``RetryInfo`` for a
    refusal under load or while the store is away), and for those also ``retry-after-ms`` for any client and
    ``grpc-retry-pushback-ms``, which gRPC's built-in retry policy honours."""
    detail = any_pb2.Any()
    out: list[tuple[str, str | bytes]] = []
    if isinstance(exc, InvalidRequestError):
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.message)]
            )
        )
    elif isinstance(exc, (OverloadedError, StoreUnavailableError)) and exc.retry_after_s is not None:
        ms = max(1, round(1000 * exc.retry_after_s))
        delay = duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        out += [("retry-after-ms", str(ms)), ("grpc-retry-pushback-ms", str(ms))]
    else:
        return ()
    status = status_pb2.Status(code=exc.code.value[0], message=exc.message, details=[detail])
    return (*out, ("grpc-status-details-bin", status.SerializeToString()))


async def _enumerate(iterator):
    index = 0
    async for item in iterator:
        yield index, item
        index += 1


class _RateLimitedLog:
    """Logs at most ``_LOG_BURST`` lines per (method, status) every ``_LOG_WINDOW_S`` seconds, then how many it
    left out: a flood of bad requests cannot flood the log."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], list[float]] = {}

    def log(self, level: int, method: str, code: str, text: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        window = self._windows.get((method, code))
        if window is None or now - window[0] >= _LOG_WINDOW_S:
            if window is not None and window[2]:
                _LOGGER.log(
                    level, "%s -> %s: %d more like this in the last %.0f s", method, code, window[2], now - window[0]
                )
            window = [now, 0.0, 0.0]
            if len(self._windows) > 1000:
                self._windows.clear()
            self._windows[(method, code)] = window
        if window[1] < _LOG_BURST:
            window[1] += 1
            _LOGGER.log(level, text, *args, exc_info=exc_info)
        else:
            window[2] += 1


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary and stream-unary method of the preftrack services."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        api_keys: tuple[str, ...],
        admin_keys: tuple[str, ...] = (),
        catalog_keys: tuple[str, ...] = (),
        analyst_keys: tuple[str, ...] = (),
        *,
        key_rate_limit: float = 0.0,
    ) -> None:
        self._metrics = metrics
        self._quota = _Quota(key_rate_limit, 2.0 * key_rate_limit) if key_rate_limit > 0 else None
        self._keys = {
            "client": Keys(api_keys),
            "admin": Keys(admin_keys),
            "catalog": Keys(catalog_keys),
            "analyst": Keys(analyst_keys),
        }
        self._any_keys = bool(api_keys or admin_keys or catalog_keys or analyst_keys)
        self._log = _RateLimitedLog()
        #: Set when a shutdown begins: new calls get UNAVAILABLE (retried by clients) while in-flight ones finish.
        self.draining = False
        self.in_flight = 0

    def _role(self, context: grpc.aio.ServicerContext) -> tuple[str | None, bytes]:
        sent = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not sent.startswith("Bearer "):
            return None, b""
        token = sent.removeprefix("Bearer ").encode()
        return next((role for role, keys in self._keys.items() if keys.match(token)), None), token

    def _check_quota(self, token: bytes) -> None:
        if self._quota is None or not token:
            return
        wait = self._quota.take(token)
        if wait > 0:
            raise OverloadedError(
                f"this key's quota ({self._quota.rate:g} calls/s, PREFTRACK_KEY_RATE_LIMIT) is spent; retry in "
                f"{wait:.2f} s",
                retry_after_s=wait,
            )

    def _check_key(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Roles: admin keys may call everything; analyst keys the insights API only; catalogue keys the client
        methods, UpsertItems and UpsertUsers; client keys the client methods but those two. With no key configured
        at all (a local dev stack) everything is open; with no client keys the client methods are open; the admin
        API, the insights API, UpsertItems and UpsertUsers then need their keys."""
        if not self._any_keys:
            return
        admin = method.startswith(_ADMIN)
        insights = method.startswith(_INSIGHTS)
        catalog = method in _CATALOG
        client_method = not admin and not insights and not catalog
        if client_method and not self._keys["client"]:
            return
        role, token = self._role(context)
        allowed = {
            "admin": True,
            "analyst": insights,
            "catalog": client_method or catalog,
            "client": client_method,
        }
        if role is not None and allowed[role]:
            self._check_quota(token)
            return
        if role is not None:
            needed = (
                "an admin key (PREFTRACK_ADMIN_KEYS)"
                if admin
                else "an analyst or admin key (PREFTRACK_ANALYST_KEYS)"
                if insights
                else "a catalogue or admin key"
                if catalog
                else "a client key (PREFTRACK_API_KEYS)"
            )
            raise PermissionDeniedError(f"this key is a {role} key; {method.rsplit('/', 1)[-1]} needs {needed}")
        kind = "an admin" if admin else "an analyst" if insights else "a catalogue" if catalog else "a valid API"
        raise UnauthenticatedError(f"send {kind} key as metadata 'authorization: Bearer <key>'")

    @contextlib.asynccontextmanager
    async def _guarded(self, method: str, path: str, request, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Around one call: a request id, the drain, key and decoding checks before the handler runs, errors
        turned into statuses with a message, and the call's latency."""
        rid = uuid.uuid4().hex
        request_id.set(rid)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        admitted = not self.draining
        self.in_flight += admitted
        try:
            if not admitted:
                raise ShuttingDownError("the gateway is shutting down; retry (another replica takes the call)")
            self._check_key(path, context)
            if isinstance(request, Undecodable):
                raise _undecodable_error(method, request)
            yield
        except (GatewayError, StoreError) as exc:
            # A store failure outside ingestion (a catalogue upsert, an erasure, a registry read while the database
            # is away) is the same refusal as a failed commit: UNAVAILABLE with a retry hint, never INTERNAL.
            error = exc if isinstance(exc, GatewayError) else StoreUnavailableError.from_store(exc, committing=False)
            code = error.code
            self._log.log(
                logging.INFO, method, code.name, "%s request=%s -> %s: %s", method, rid, code.name, error.message
            )
            await context.abort(code, error.message, trailing_metadata=_details(error))
        except Exception:
            if context.code() not in (None, grpc.StatusCode.OK):  # already aborted on purpose
                code = context.code()
                raise
            code = grpc.StatusCode.INTERNAL
            self._log.log(
                logging.ERROR, method, code.name, "%s request=%s failed unexpectedly", method, rid, exc_info=True
            )
            await context.abort(code, f"internal error (request id {rid}); the gateway logged the details")
        finally:
            self.in_flight -= admitted
            self._metrics.rpc_latency_s.labels(method, code.name).observe(time.perf_counter() - started)

    async def _guard(self, method: str, path: str, call, request, context: grpc.aio.ServicerContext):
        async with self._guarded(method, path, request, context):
            return await call(request, context)

    async def _guard_stream(self, method: str, path: str, call, request, context: grpc.aio.ServicerContext):
        """:meth:`_guard` for a method answering with a stream: the checks run before the first answer, and an
        error part-way ends the stream with its status."""
        async with self._guarded(method, path, request, context):
            async for answer in call(request, context):
                yield answer

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_UNGUARDED):
            return handler
        short = method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request, context):
                return await self._guard(short, method, inner, request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=_tolerant(handler.request_deserializer, short),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_answers = handler.unary_stream

            async def answers(request, context):
                async for answer in self._guard_stream(short, method, inner_answers, request, context):
                    yield answer

            return grpc.unary_stream_rpc_method_handler(
                answers,
                request_deserializer=_tolerant(handler.request_deserializer, short),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            inner_stream = handler.stream_unary

            async def checked(request_iterator):
                async for index, message in _enumerate(request_iterator):
                    if isinstance(message, Undecodable):
                        raise _undecodable_error(short, message, index)
                    yield message

            async def stream(request_iterator, context):
                return await self._guard(short, method, inner_stream, checked(request_iterator), context)

            return grpc.stream_unary_rpc_method_handler(
                stream,
                request_deserializer=_tolerant(handler.request_deserializer, short),
                response_serializer=handler.response_serializer,
            )
        return handler
