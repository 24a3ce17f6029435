"""``preftrack-trainer``: train and export a version, serve a repository with Triton, evaluate a version."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from preftrack_gateway.process import GatewayStartError
from preftrack_trainer.data.movielens import DatasetUnavailableError
from preftrack_trainer.triton_launcher import TritonStartError

_LOGGER = logging.getLogger("preftrack_trainer")

_COLUMNS = ("auc", "log_loss", "accuracy", "precision", "recall", "f1", "hr@10", "ndcg@10")


def _train(args: argparse.Namespace) -> int:
    from preftrack_trainer import metrics, model, pipeline

    cfg = pipeline.TrainerConfig.from_env(
        dataset=args.dataset,
        repository=args.repository,
        model=model.ModelConfig(epochs=args.epochs) if args.epochs is not None else None,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    result = pipeline.run(cfg)
    print("\n".join(result.report.lines()))
    print(f"\ntrained on {result.n_train} examples, evaluated on the last {result.n_test} (temporal holdout)\n")
    print(metrics.format_table({"mlp": result.metrics, "item popularity": result.baseline_metrics}, _COLUMNS))
    print(f"\nexported version {result.version} to {cfg.repository / 'preftrack' / str(result.version)}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from preftrack_trainer import export, metrics, pipeline
    from preftrack_trainer.preprocess import build_examples

    cfg = pipeline.TrainerConfig.from_env(
        dataset=args.dataset, repository=args.repository, cache_dir=args.cache_dir, progress=not args.no_progress
    )
    versions = export.existing_versions(cfg.repository / "preftrack")
    if not versions:
        print(f"no versions in {cfg.repository / 'preftrack'}; run `preftrack-trainer train` first", file=sys.stderr)
        return 2
    version = args.version or versions[-1]
    if version not in versions:
        print(f"version {version} not found; available: {versions}", file=sys.stderr)
        return 2
    data = pipeline.load_dataset(cfg)
    examples, _ = build_examples(data.events, data.items, spec=data.spec, labels=data.labels, progress=cfg.progress)
    train, test = examples.split_by_time(cfg.train_fraction)
    scores = export.SavedModelScorer(cfg.repository, version).predict(test)
    rows = {
        f"version {version}": metrics.evaluate(test.label, scores, test.users),
        "item popularity": metrics.evaluate(test.label, pipeline.popularity_scores(train, test), test.users),
    }
    print(metrics.format_table(rows, _COLUMNS))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from preftrack_trainer.triton_launcher import TritonConfig, TritonServer

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


def _continual(args: argparse.Namespace) -> int:
    import asyncio

    from preftrack_trainer import export
    from preftrack_trainer.continual import ContinualConfig, ContinualTrainer
    from preftrack_trainer.pipeline import dataset_specs

    # Only for an empty event store (then written there): a deployment's settings in the store win.
    spec, labels = dataset_specs("movielens" if args.ratings else "synthetic")
    config = ContinualConfig(
        store_url=args.store_url,
        repository=args.repository,
        spec=spec,
        labels=labels,
        trigger_examples=args.trigger_examples,
        trigger_seconds=args.trigger_seconds,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        auc_margin=args.auc_margin,
        log_loss_margin=args.log_loss_margin,
    )

    async def run() -> None:
        trainer = await ContinualTrainer.open(config)
        try:
            if not export.existing_versions(args.repository / "preftrack"):
                await trainer.bootstrap()
            if args.once:
                result = await trainer.run_once(force=True)
                print(result if result else "nothing new to train on")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            print(f"continual trainer running from watermark {trainer.watermark}; Ctrl-C stops", flush=True)
            await trainer.run_forever(stop)
        finally:
            await trainer.close()

    asyncio.run(run())
    return 0


def _replay(args: argparse.Namespace) -> int:
    from preftrack_trainer.replay import FROZEN, LIVE, PER_EVENT_ONLY, NothingShippedError, ReplayConfig, run

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
        f"rejected={report.versions_rejected} refused={report.versions_refused}",
        flush=True,
    )
    if failure is not None:  # after the report and the benchmark line: a replay that ships nothing fails
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def _up(args: argparse.Namespace) -> int:
    from preftrack_trainer.stack import up

    return up(
        repository=args.repository,
        dataset=args.dataset,
        state_dir=args.state_dir,
        gateway_port=args.port,
        triton_grpc_port=args.triton_port,
        metrics_port=args.metrics_port,
        key_file=args.key_file,
    )


def _write_config(args: argparse.Namespace) -> int:
    from preftrack_trainer.export import TritonModelConfig, write_model_config

    path = write_model_config(args.repository, TritonModelConfig(), overwrite=True)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="preftrack-trainer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", choices=("synthetic", "movielens"), default=None, help="default: synthetic")
        p.add_argument("--repository", type=Path, default=None, help="Triton model repository (model_repository)")
        p.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (~/.cache/preftrack)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    train = sub.add_parser("train", help="train on a dataset and export the next version")
    data_args(train)
    train.add_argument("--epochs", type=int, default=None, help="training epochs (default 3)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a version on the dataset's temporal holdout")
    data_args(evaluate)
    evaluate.add_argument("--version", type=int, default=None, help="default: the latest")
    evaluate.set_defaults(func=_evaluate)

    serve = sub.add_parser("serve-triton", help="serve a repository with Triton until Ctrl-C")
    serve.add_argument("--repository", type=Path, default=Path("model_repository"))
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--log-file", type=Path, default=Path("var/tritonserver.log"))
    serve.add_argument("--model-config-name", default=None, help="e.g. gpu, for configs/gpu.pbtxt")
    serve.set_defaults(func=_serve)

    cont = sub.add_parser(
        "continual", help="learn from the event store continuously (or --once), ship via the registry"
    )
    cont.add_argument("--store-url", default=os.environ.get("PREFTRACK_STORE_URL", "sqlite:///var/preftrack.db"))
    cont.add_argument("--repository", type=Path, default=Path("model_repository"))
    cont.add_argument(
        "--ratings",
        action="store_true",
        help="examples are ratings (>= 4 positive), not views; only for an empty event store: the deployment's "
        "settings held in the store win",
    )
    cont.add_argument("--trigger-examples", type=int, default=2000)
    cont.add_argument("--trigger-seconds", type=float, default=60.0)
    cont.add_argument("--epochs", type=int, default=1)
    cont.add_argument("--learning-rate", type=float, default=1e-3)
    cont.add_argument("--auc-margin", type=float, default=0.005, help="gate: AUC below serving's that still ships")
    cont.add_argument("--log-loss-margin", type=float, default=0.01, help="gate: log loss above serving's that ships")
    cont.add_argument("--once", action="store_true", help="one round with whatever is new, then exit")
    cont.set_defaults(func=_continual)

    replay = sub.add_parser("replay", help="prequential replay of a dataset through the live, learning stack")
    replay.add_argument("--dataset", choices=("synthetic", "movielens"), default="movielens")
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

    stack = sub.add_parser("up", help="train a first model if needed, then run Triton and the gateway")
    stack.add_argument("--repository", type=Path, default=Path("model_repository"))
    stack.add_argument("--dataset", choices=("synthetic", "movielens"), default="synthetic")
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

    config = sub.add_parser("write-config", help="(re)generate the model's config.pbtxt files")
    config.add_argument("--repository", type=Path, default=Path("model_repository"))
    config.set_defaults(func=_write_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``preftrack-trainer``."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except (ValueError, DatasetUnavailableError, TritonStartError, GatewayStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
