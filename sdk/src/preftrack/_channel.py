"""Channel options shared by the sync and async clients: declarative retries and message limits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from preftrack.errors import translate

SERVICES = ("preftrack.v1.ScoringService", "preftrack.v1.FeedbackService")


def channel_options(*, max_attempts: int, max_message_bytes: int) -> list[tuple[str, object]]:
    """gRPC channel options: retry UNAVAILABLE (and CANCELLED sent by a server that is stopping) and
    RESOURCE_EXHAUSTED (an overloaded gateway, after the delay it asks for in ``grpc-retry-pushback-ms``), with
    bounded attempts and exponential backoff.

    Every RPC is safe to retry: scoring reads, feedback carries event ids, catalogue writes are upserts.
    """
    service_config = {
        "methodConfig": [
            {
                "name": [{"service": s} for s in SERVICES],
                "retryPolicy": {
                    "maxAttempts": max(2, min(max_attempts, 5)),
                    "initialBackoff": "0.05s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the API key, if any."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


@dataclasses.dataclass(frozen=True)
class TLS:
    """TLS to the gateway. ``ca_file``: the CA that signed the gateway's certificate (None: the system's roots);
    ``cert_file`` / ``key_file``: this client's certificate and key, when the gateway asks for one (mTLS);
    ``server_name``: the name to check the certificate against, when it differs from the target's host."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS needs both cert_file and key_file for a client certificate, or neither")

        def read(path: str | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )

    def options(self) -> list[tuple[str, object]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(target: str, options: list[tuple[str, object]], tls: TLS | None, *, aio: bool = False):
    """A channel to the gateway: TLS when ``tls`` is given, plaintext otherwise."""
    module = grpc.aio if aio else grpc
    if tls is None:
        return module.insecure_channel(target, options=options)
    return module.secure_channel(target, tls.credentials(), options=[*options, *tls.options()])


class StubClient:
    """A blocking client of one gateway service: its channel, the key sent with every call, a timeout, and calls
    whose gRPC errors become the SDK's (:mod:`preftrack.errors`). The admin and insights clients are these."""

    def __init__(
        self,
        stub_class: Callable[[grpc.Channel], Any],
        target: str,
        *,
        api_key: str | None,
        timeout_s: float,
        tls: TLS | None,
    ) -> None:
        self._channel = open_channel(target, [], tls)
        self._stub = stub_class(self._channel)
        self._metadata = metadata(api_key)
        self.timeout_s = timeout_s

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(exc) from exc


_Client = TypeVar("_Client", bound=StubClient)
