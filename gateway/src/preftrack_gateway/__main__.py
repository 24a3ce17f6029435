"""``preftrack-gateway``: run the gateway. Settings come from PREFTRACK_* variables and the flags below."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from preftrack_gateway.config import ConfigError, GatewayConfig
from preftrack_gateway.server import serve
from preftrack_gateway.store import StoreError


def positive(text: str) -> int:
    """An integer >= 1 (argparse turns the ValueError into a usage error naming the flag)."""
    count = int(text)
    if count < 1:
        raise ValueError(text)
    return count


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="preftrack-gateway", description=__doc__)
    parser.add_argument("--host", default=None, help="listen address (PREFTRACK_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="gRPC port (PREFTRACK_PORT, default 50051)")
    parser.add_argument("--triton-url", default=None, help="Triton gRPC host:port (PREFTRACK_TRITON_URL)")
    parser.add_argument("--store-url", default=None, help="sqlite:///path or postgresql://... (PREFTRACK_STORE_URL)")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus /metrics port (0: none)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--workers",
        type=positive,
        default=os.environ.get("PREFTRACK_WORKERS", "1"),  # a string default goes through the type check too
        help="gateway processes sharing the port (SO_REUSEPORT; PREFTRACK_WORKERS, default 1); each follows the "
        "shared event log",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.workers != 1:
        return _supervise(args)
    try:
        config = GatewayConfig.from_env(
            host=args.host,
            port=args.port,
            triton_url=args.triton_url,
            store_url=args.store_url,
            metrics_port=args.metrics_port,
        )
        asyncio.run(serve(config))
    except (ConfigError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _supervise(args: argparse.Namespace) -> int:
    """``--workers N``: check the settings once, pick the port, and run N single-worker gateways on it."""
    from preftrack_gateway.workers import run_workers, unused_port

    try:
        config = GatewayConfig.from_env(host=args.host, port=args.port, triton_url=args.triton_url,
                                        store_url=args.store_url, metrics_port=args.metrics_port)  # fmt: skip
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.store_url.startswith("sqlite:///") and args.workers > 1:
        logging.getLogger(__name__).warning(
            "%d workers on one SQLite file take turns committing; PostgreSQL scales further", args.workers
        )
    forwarded: list[str] = []
    for flag, value in (("--host", args.host), ("--triton-url", args.triton_url), ("--store-url", args.store_url)):
        if value:
            forwarded += [flag, value]
    if args.metrics_port is not None:
        os.environ["PREFTRACK_METRICS_PORT"] = str(args.metrics_port)
    if args.verbose:
        forwarded.append("--verbose")
    return run_workers(args.workers, config.port or unused_port(config.host), [*forwarded, "--workers", "1"])


if __name__ == "__main__":
    sys.exit(main())
