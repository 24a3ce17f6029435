"""``preftrack-trainer``: train and export a version, evaluate it, learn continually from the event store."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from preftrack_trainer.data import DATASETS
from preftrack_trainer.data.movielens import DatasetUnavailableError

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
    examples, _ = build_examples(
        data.events, data.items, spec=data.spec, labels=data.labels, state=data.features(), progress=cfg.progress
    )
    train, test = examples.split_by_time(cfg.train_fraction)
    scores = export.SavedModelScorer(cfg.repository, version).predict(test)
    rows = {
        f"version {version}": metrics.evaluate(test.label, scores, test.users),
        "item popularity": metrics.evaluate(test.label, pipeline.popularity_scores(train, test), test.users),
    }
    print(metrics.format_table(rows, _COLUMNS))
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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.once:  # one try, now
            trainer = await ContinualTrainer.open(config, from_scratch=args.from_scratch)
        else:
            opened = await ContinualTrainer.open_when_reachable(config, stop, from_scratch=args.from_scratch)
            if opened is None:
                return
            trainer = opened
        try:
            if args.from_scratch or not export.existing_versions(args.repository / "preftrack"):
                if args.once:  # one try: what the store holds now
                    stop.set()
                ready = await trainer.wait_for_first_examples(stop, args.first_examples)
                if not ready:
                    if args.once:
                        raise ValueError(
                            f"the event store holds fewer than {args.first_examples} labelled examples (with both "
                            "labels) to train a version from scratch on; send more events or lower --first-examples"
                        )
                    return
                version = await trainer.bootstrap()
                print(f"version {version} trained from scratch on the event store", flush=True)
                if args.once:
                    return
            if args.once:
                result = await trainer.run_once(force=True)
                print(result if result else "nothing new to train on")
                return
            print(f"continual trainer running from watermark {trainer.watermark}; Ctrl-C stops", flush=True)
            await trainer.run_forever(stop)
        finally:
            await trainer.close()

    asyncio.run(run())
    return 0


def _write_config(args: argparse.Namespace) -> int:
    from preftrack_trainer.export import TritonModelConfig, write_model_config

    path = write_model_config(args.repository, TritonModelConfig(), overwrite=True)
    print(f"wrote {path}")
    return 0


def _at_least_one(text: str) -> int:
    """An integer >= 1 (argparse turns the ValueError into a usage error naming the flag)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="preftrack-trainer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dataset", choices=DATASETS, default=None, help="default: synthetic")
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
    cont.add_argument(
        "--from-scratch",
        action="store_true",
        help="train a new version from nothing on every event the store holds (after users were forgotten: "
        "weights that hold nothing of their events), export it for rollout, then go on (or exit with --once)",
    )
    cont.add_argument(
        "--first-examples",
        type=_at_least_one,
        default=200,
        help="labelled examples (both labels among them) a version trained from scratch needs; with an empty "
        "model repository the trainer waits for them (default 200)",
    )
    cont.set_defaults(func=_continual)

    config = sub.add_parser("write-config", help="(re)generate the model's config.pbtxt files")
    config.add_argument("--repository", type=Path, default=Path("model_repository"))
    config.set_defaults(func=_write_config)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None, errors: tuple[type[Exception], ...] = ()) -> int:
    """Parse ``argv``, set up logging and run the chosen command; a ValueError, a missing dataset or one of
    ``errors`` prints one line and exits 2. Shared with ``preftrack-dev``."""
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handled: tuple[type[Exception], ...] = (ValueError, DatasetUnavailableError, *errors)
    try:
        return int(args.func(args))
    except handled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``preftrack-trainer``."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
