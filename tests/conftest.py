"""Shared fixtures: a model trained on the synthetic shop, exported to a temporary repository, served by a
real Triton from the nvidia-pytriton wheel on free ports."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from preftrack_gateway.features import FeatureSpec, FeatureState
from preftrack_trainer import export, model
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import Examples, LabelSpec, build_examples, clean
from preftrack_trainer.triton_launcher import TritonConfig, TritonServer


@dataclasses.dataclass(frozen=True)
class Trained:
    """A model trained on the synthetic shop and exported as version 1 of ``repository``."""

    shop: synthetic.SyntheticShop
    keras_model: object
    train: Examples
    test: Examples
    state: FeatureState
    repository: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    shop = synthetic.generate(synthetic.SyntheticConfig(seed=11))
    events, _ = clean(shop.events)
    examples, state = build_examples(events, shop.items, spec=FeatureSpec(), labels=LabelSpec())
    train, test = examples.split_by_time(0.8)
    cfg = model.ModelConfig(epochs=3)
    mean, std = model.fit_normalisation(train.features)
    mlp = model.build_model(cfg, mean, std)
    model.train(mlp, train, cfg)
    repository = tmp_path_factory.mktemp("repo")
    version = export.export_version(mlp, repository, {"parent": None, "dataset": "synthetic"})
    assert version == 1
    return Trained(shop, mlp, train, test, state, repository)


@pytest.fixture(scope="session")
def triton(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    work = tmp_path_factory.mktemp("triton")
    server = TritonServer(TritonConfig(repository=trained.repository, work_dir=work))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.running


@pytest.fixture
def scratch_repository(trained: Trained, tmp_path: Path) -> Path:
    """A private copy of the trained repository, for tests that add (broken) versions."""
    target = tmp_path / "repo"
    shutil.copytree(trained.repository, target)
    return target


def triton_inputs(examples: Examples, rows: slice | np.ndarray):
    """tritonclient gRPC inputs for some rows of ``examples``."""
    import tritonclient.grpc as grpcclient

    from preftrack_gateway import contract

    columns = {
        contract.USER_ID: examples.user_id[rows].reshape(-1, 1),
        contract.ITEM_ID: examples.item_id[rows].reshape(-1, 1),
        contract.CATEGORY_ID: examples.category_id[rows].reshape(-1, 1),
        contract.FEATURES: examples.features[rows],
    }
    inputs = []
    for name, array in columns.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs
