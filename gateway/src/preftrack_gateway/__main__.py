"""``preftrack-gateway``: run the gateway. Settings come from PREFTRACK_* variables and the flags below."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from preftrack_gateway.config import ConfigError, GatewayConfig
from preftrack_gateway.server import serve
from preftrack_gateway.store import StoreError


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="preftrack-gateway", description=__doc__)
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--triton-url", default=None, help="Triton gRPC host:port")
    parser.add_argument("--store-url", default=None, help="sqlite:///path or postgresql://...")
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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


if __name__ == "__main__":
    sys.exit(main())
