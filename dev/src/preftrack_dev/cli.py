"""``preftrack-dev``: the local stack for development, tests and benchmarks — Triton from the pip wheel, the
whole stack (``up``), and the prequential replay through it. Not part of any production image."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from preftrack_dev.process import GatewayStartError
from preftrack_dev.triton_launcher import TritonStartError
from preftrack_trainer.cli import run
from preftrack_trainer.data import DATASETS

_LOGGER = logging.getLogger("preftrack_dev")


def _serve(args: argparse.Namespace) -> int:
    from preftrack_dev.triton_launcher import TritonConfig, TritonServer

    server = TritonServer(
        TritonConfig(
            repository=args.repository,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            metrics_port=args.metrics_port,
            log_file=args.log_file,
            model_config_name=args.model_config_name,
        )
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"Triton ready: gRPC {server.grpc_url}, metrics {server.metrics_url}, log {server.log_file}", flush=True)
    try:
        while not stop.is_set() and server.running:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping Triton...", flush=True)
        server.stop()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from preftrack_dev.replay import (
        FROZEN,
        LIVE,
        PER_EVENT_ONLY,
        NothingShippedError,
        ReplayConfig,
        benchmark_fields,
        run,
    )

    failure: NothingShippedError | None = None
    try:
        report = run(
            ReplayConfig(
                dataset=args.dataset,
                rate_events_s=args.rate,
                window=args.window,
                trigger_examples=args.trigger_examples,
                trigger_seconds=args.trigger_seconds,
                bootstrap_epochs=args.bootstrap_epochs,
                learning_rate=args.learning_rate,
                limit_events=args.limit_events,
                out_dir=args.out_dir,
                progress=not args.no_progress,
            )
        )
    except NothingShippedError as exc:
        failure, report = exc, exc.report
    print(report.markdown)
    if report.plot is not None:
        print(f"\nplot: {report.plot}")
    live = report.rows[LIVE]["auc"]
    vw = report.rows["Vowpal Wabbit (per event)"]["auc"]
    frozen = report.rows[FROZEN]["auc"]
    per_event = report.rows[PER_EVENT_ONLY]["auc"]
    print(
        f"\nbench_prequential dataset={args.dataset} rate={report.rate_events_s:.0f} live_auc={live:.4f} "
        f"frozen_auc={frozen:.4f} per_event_only_auc={per_event:.4f} vw_auc={vw:.4f} "
        f"shipped={report.versions_shipped} "
        f"rejected={report.versions_rejected} refused={report.versions_refused} {benchmark_fields(report)}",
        flush=True,
    )
    if failure is not None:  # after the report and the benchmark line: a replay that ships nothing fails
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def _up(args: argparse.Namespace) -> int:
    from preftrack_dev.stack import up

    return up(
        repository=args.repository,
        dataset=args.dataset,
        state_dir=args.state_dir,
        gateway_port=args.port,
        triton_grpc_port=args.triton_port,
        metrics_port=args.metrics_port,
        key_file=args.key_file,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="preftrack-dev", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve-triton", help="serve a repository with Triton until Ctrl-C")
    serve.add_argument("--repository", type=Path, default=Path("model_repository"))
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--log-file", type=Path, default=Path("var/tritonserver.log"))
    serve.add_argument("--model-config-name", default=None, help="e.g. gpu, for configs/gpu.pbtxt")
    serve.set_defaults(func=_serve)

    replay = sub.add_parser("replay", help="prequential replay of a dataset through the live, learning stack")
    replay.add_argument("--dataset", choices=DATASETS, default="movielens")
    replay.add_argument("--rate", type=float, default=300.0, help="target events per second")
    replay.add_argument("--window", type=int, default=8, help="events scored concurrently, then sent together")
    replay.add_argument("--trigger-examples", type=int, default=4000)
    replay.add_argument("--trigger-seconds", type=float, default=30.0)
    replay.add_argument("--limit-events", type=int, default=None)
    replay.add_argument("--learning-rate", type=float, default=1e-3, help="continual rounds' Adam learning rate")
    replay.add_argument(
        "--bootstrap-epochs", type=int, default=None, help="epochs of version 1 (default 1 on movielens, 3 otherwise)"
    )
    replay.add_argument("--out-dir", type=Path, default=Path("var/replay"))
    replay.add_argument("--no-progress", action="store_true")
    replay.set_defaults(func=_replay)

    stack = sub.add_parser(
        "up", help="train a first model if needed, then run Triton, the gateway and the continual trainer (supervised)"
    )
    stack.add_argument("--repository", type=Path, default=Path("model_repository"))
    stack.add_argument("--dataset", choices=DATASETS, default="synthetic")
    stack.add_argument("--port", type=int, default=50051, help="gateway port")
    stack.add_argument("--triton-port", type=int, default=8001, help="Triton's gRPC port (HTTP: one below)")
    stack.add_argument("--metrics-port", type=int, default=9100, help="the gateway's Prometheus port")
    stack.add_argument("--state-dir", type=Path, default=Path("var"), help="event store and logs")
    stack.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="the pseudonym key (created if missing; default ~/.config/preftrack/pseudonym.key, away from the store)",
    )
    stack.set_defaults(func=_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``preftrack-dev``."""
    return run(build_parser(), argv, (TritonStartError, GatewayStartError))


if __name__ == "__main__":
    sys.exit(main())
