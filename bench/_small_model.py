"""A small model trained on a small synthetic shop, for benchmarks that need a version to serve, not a good one."""

from __future__ import annotations

from pathlib import Path

from preftrack_gateway.features import FeatureSpec
from preftrack_trainer import export, model
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import Examples, LabelSpec, build_examples, clean


def train_small(n_users: int = 200, n_items: int = 150, days: int = 7):
    """One epoch on a small shop: the Keras model and the examples it was trained on."""
    shop = synthetic.generate(synthetic.SyntheticConfig(n_users=n_users, n_items=n_items, days=days))
    events, _ = clean(shop.events)
    examples: Examples
    examples, _ = build_examples(events, shop.items, spec=FeatureSpec(), labels=LabelSpec())
    cfg = model.ModelConfig(epochs=1)
    mlp = model.build_model(cfg, *model.fit_normalisation(examples.features))
    model.train(mlp, examples, cfg)
    return mlp, examples


def export_small(repository: Path, **config: object) -> int:
    """Train a small model and export it as the next version of ``repository``; returns the version."""
    metadata = {"parent": None, **export.schema_metadata(FeatureSpec(), LabelSpec())}
    triton_config = export.TritonModelConfig(**config) if config else None  # type: ignore[arg-type]
    return export.export_version(train_small()[0], repository, metadata, config=triton_config)
