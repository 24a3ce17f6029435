"""One training run: data → cleaning → point-in-time examples → MLP → evaluation → exported version."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from preftrack_gateway.features import FeatureSpec, FeatureState
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event, Item
from preftrack_trainer import export, metrics, model
from preftrack_trainer.data import DATASETS, movielens, rebuy, synthetic
from preftrack_trainer.data.choices import ChoiceSet
from preftrack_trainer.preprocess import CleaningReport, Examples, LabelSpec, build_examples, clean

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """Everything one training run needs.

    Attributes:
        dataset: ``synthetic`` (the drifting shop), ``rebuy`` (households re-buying consumables) or ``movielens``
            (ML-100k from the recbole wheel).
        repository: the Triton model repository to export into.
        train_fraction: the first part of the time span trains; the rest is the held-out evaluation slice.
        model: the MLP's shape and optimiser settings.
        synthetic: size of the synthetic shop.
        rebuy: size and habits of the re-buy shop.
        cache_dir: where downloaded datasets are cached.
        progress: show progress bars.
    """

    dataset: str = "synthetic"
    repository: Path = Path("model_repository")
    train_fraction: float = 0.8
    model: model.ModelConfig = dataclasses.field(default_factory=model.ModelConfig)
    synthetic: synthetic.SyntheticConfig = dataclasses.field(default_factory=synthetic.SyntheticConfig)
    rebuy: rebuy.RebuyConfig = dataclasses.field(default_factory=rebuy.RebuyConfig)
    cache_dir: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if not 0.0 < self.train_fraction < 1.0:
            raise ValueError("train_fraction must lie strictly between 0 and 1")

    @classmethod
    def from_env(cls, **overrides: object) -> TrainerConfig:
        """Defaults, then ``PREFTRACK_DATASET`` / ``PREFTRACK_REPOSITORY`` / ``PREFTRACK_EPOCHS``, then overrides."""
        values: dict[str, object] = {}
        if "PREFTRACK_DATASET" in os.environ:
            values["dataset"] = os.environ["PREFTRACK_DATASET"]
        if "PREFTRACK_REPOSITORY" in os.environ:
            values["repository"] = Path(os.environ["PREFTRACK_REPOSITORY"])
        if "PREFTRACK_EPOCHS" in os.environ:
            values["model"] = model.ModelConfig(epochs=int(os.environ["PREFTRACK_EPOCHS"]))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Cleaned, time-ordered events with their catalogue and how examples are labelled."""

    name: str
    events: list[Event]
    items: dict[str, Item]
    spec: FeatureSpec
    labels: LabelSpec
    report: CleaningReport
    #: Each search event's query text by event id (the events carry only hashed terms).
    queries: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Users' attributes by user id, as a shop would send them with UpsertUsers.
    users: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    #: The occasions on which a user chose one of known candidates, in time order (the re-buy shop's); empty
    #: for a dataset without them.
    choice_sets: Sequence[ChoiceSet] = ()

    def features(self, pseudonymise: Pseudonymiser | None = None) -> FeatureState:
        """A feature state with the catalogue and, with the gateway's ``pseudonymise`` (then the events' user ids
        must be pseudonymised the same way), the users' attribute tokens as the gateway makes them. Without it
        (an offline run on the dataset's own ids) no user has attributes: tokens the gateway would never send
        must not train a version it may serve."""
        return FeatureState(self.spec, self.items, users=user_tokens(self.users, pseudonymise) if pseudonymise else {})


def user_tokens(
    users: Mapping[str, Mapping[str, str]], pseudonymise: Pseudonymiser | None = None
) -> dict[str, tuple[str, ...]]:
    """Users' attribute tokens by user: made as the gateway makes them, under its key, with ``pseudonymise`` (by
    pseudonymised user id, as the events must then be), else the plain ``name=value`` pairs by the dataset's own
    user ids (an offline run)."""
    if pseudonymise is None:
        return {u: tuple(sorted(f"{n}={v}" for n, v in a.items())) for u, a in users.items()}
    return {
        pseudonymise(u): tuple(sorted(pseudonymise.attribute(n, v) for n, v in a.items())) for u, a in users.items()
    }


def dataset_specs(dataset: str) -> tuple[FeatureSpec, LabelSpec]:
    """What a positive signal is and which events are examples, for each dataset.

    MovieLens examples are ratings (positive at >= 4); the shops' (synthetic and re-buy) are views, positive when
    the user adds the item to the cart or buys it within the attribution window.
    """
    if dataset == "movielens":
        # A rating's label is the rating itself: final at once, so the per-event layer learns from it at once.
        return FeatureSpec(positive_types=()), LabelSpec(example_types=("rating",), attribution_window_s=0.0)
    return FeatureSpec(), LabelSpec()


def load_dataset(config: TrainerConfig) -> Dataset:
    """Load and clean the configured dataset."""
    if config.dataset == "movielens":
        ml = movielens.load(config.cache_dir)
        events, report = clean(ml.events, bot_events_per_hour=None)
        return Dataset("movielens", events, ml.items, *dataset_specs("movielens"), report, users=ml.users)
    if config.dataset == "rebuy":
        households = rebuy.generate(config.rebuy)
        events, report = clean(households.events)
        return Dataset(
            "rebuy", events, households.items, *dataset_specs("rebuy"), report, choice_sets=households.truth.choice_sets
        )
    shop = synthetic.generate(config.synthetic)
    events, report = clean(shop.events)
    return Dataset(
        "synthetic", events, shop.items, *dataset_specs("synthetic"), report, shop.truth.queries, users=shop.users
    )


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a run produced."""

    version: int
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    report: CleaningReport
    n_train: int
    n_test: int


def popularity_scores(train: Examples, test: Examples) -> np.ndarray:
    """Baseline: each item's smoothed positive rate on the training slice."""
    prior = float(train.label.mean()) if len(train) else 0.0
    totals: dict[str, list[float]] = {}
    for item, y in zip(train.items, train.label, strict=True):
        entry = totals.setdefault(item, [0.0, 0.0])
        entry[0] += float(y)
        entry[1] += 1.0
    return np.array(
        [(totals.get(i, [0.0, 0.0])[0] + 5 * prior) / (totals.get(i, [0.0, 0.0])[1] + 5) for i in test.items],
        dtype=np.float64,
    )


def run(config: TrainerConfig) -> RunResult:
    """Train, evaluate on the held-out slice, and export one version; returns its number and metrics."""
    data = load_dataset(config)
    for line in data.report.lines():
        _LOGGER.info("cleaning: %s", line)
    examples, _ = build_examples(
        data.events, data.items, spec=data.spec, labels=data.labels, state=data.features(), progress=config.progress
    )
    train, test = examples.split_by_time(config.train_fraction)
    if len(train) == 0 or len(test) == 0 or train.label.min() == train.label.max():
        raise ValueError(f"not enough labelled examples to train ({len(train)} train, {len(test)} test)")
    mean, std = model.fit_normalisation(train.features)
    mlp = model.build_model(config.model, mean, std)
    model.train(mlp, train, config.model, progress=config.progress)
    result_metrics = metrics.evaluate(test.label, model.predict(mlp, test), test.users)
    baseline = metrics.evaluate(test.label, popularity_scores(train, test), test.users)
    version = export.export_version(
        mlp,
        config.repository,
        {
            "parent": None,
            "dataset": data.name,
            "data_range": {
                "first_timestamp_s": float(examples.timestamp_s.min()),
                "last_timestamp_s": float(train.timestamp_s.max()),
                "events": len(data.events),
                "train_examples": len(train),
            },
            "metrics": result_metrics,
            **export.schema_metadata(data.spec, data.labels),
            "model_config": config.model.to_dict(),
        },
    )
    return RunResult(version, result_metrics, baseline, data.report, len(train), len(test))
