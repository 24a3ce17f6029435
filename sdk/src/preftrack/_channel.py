"""Channel options shared by the sync and async clients: declarative retries and message limits."""

from __future__ import annotations

import json

SERVICES = ("preftrack.v1.ScoringService", "preftrack.v1.FeedbackService")


def channel_options(*, max_attempts: int, max_message_bytes: int) -> list[tuple[str, object]]:
    """gRPC channel options: retry UNAVAILABLE only, with bounded attempts and exponential backoff.

    Feedback is safe to retry because every event carries its event_id.
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
                    "retryableStatusCodes": ["UNAVAILABLE"],
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
