"""One server interceptor at the edge: request ids, API keys, error → status mapping, latency metrics."""

from __future__ import annotations

import contextvars
import hmac
import logging
import time
import uuid

import grpc

from preftrack_gateway.errors import GatewayError, PermissionDeniedError, UnauthenticatedError
from preftrack_gateway.metrics import GatewayMetrics

_LOGGER = logging.getLogger(__name__)

#: The current call's request id (for logs and responses).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_UNGUARDED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_ADMIN = "/preftrack.admin."


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary and stream-unary method of the preftrack services."""

    def __init__(self, metrics: GatewayMetrics, api_keys: tuple[str, ...], admin_keys: tuple[str, ...] = ()) -> None:
        self._metrics = metrics
        self._api_keys = tuple(k.encode() for k in api_keys)
        self._admin_keys = tuple(k.encode() for k in admin_keys)

    def _check_key(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Client methods take a client or an admin key; admin methods only an admin key. With no keys at all
        configured (a local dev stack) everything is open; with only client keys the admin API is closed."""
        admin = method.startswith(_ADMIN)
        if not self._api_keys and not self._admin_keys:
            return
        if not admin and not self._api_keys:
            return
        sent = dict(context.invocation_metadata() or ()).get("authorization", "")
        token = sent.removeprefix("Bearer ").encode()
        is_admin = sent.startswith("Bearer ") and any(hmac.compare_digest(token, k) for k in self._admin_keys)
        is_client = sent.startswith("Bearer ") and any(hmac.compare_digest(token, k) for k in self._api_keys)
        if is_admin or (is_client and not admin):
            return
        if is_client:
            raise PermissionDeniedError(
                "this key is a client key; the admin API needs an admin key (PREFTRACK_ADMIN_KEYS)"
            )
        kind = "an admin" if admin else "a valid API"
        raise UnauthenticatedError(f"send {kind} key as metadata 'authorization: Bearer <key>'")

    async def _guard(self, method: str, path: str, call, request, context: grpc.aio.ServicerContext):
        rid = uuid.uuid4().hex
        request_id.set(rid)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            self._check_key(path, context)
            return await call(request, context)
        except GatewayError as exc:
            code = exc.code
            _LOGGER.info("%s request=%s -> %s: %s", method, rid, code.name, exc.message)
            await context.abort(code, exc.message)
        except Exception:
            if context.code() not in (None, grpc.StatusCode.OK):  # already aborted on purpose
                code = context.code()
                raise
            code = grpc.StatusCode.INTERNAL
            _LOGGER.exception("%s request=%s failed unexpectedly", method, rid)
            await context.abort(code, f"internal error (request id {rid}); the gateway logged the details")
        finally:
            self._metrics.rpc_latency_s.labels(method, code.name).observe(time.perf_counter() - started)

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
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            inner_stream = handler.stream_unary

            async def stream(request_iterator, context):
                return await self._guard(short, method, inner_stream, request_iterator, context)

            return grpc.stream_unary_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
