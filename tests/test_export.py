"""Atomic export and clear launcher errors."""

from __future__ import annotations

import pytest

from preftrack_dev.triton_launcher import TritonConfig, TritonServer, TritonStartError
from preftrack_gateway import contract
from preftrack_trainer import export

from .conftest import Trained


def test_versions_are_numbered_and_carry_metadata(trained: Trained, tmp_path) -> None:
    first = export.export_version(trained.keras_model, tmp_path, {"parent": None, "metrics": {"auc": 0.7}})
    second = export.export_version(trained.keras_model, tmp_path, {"parent": first})
    assert (first, second) == (1, 2)
    meta = export.read_metadata(tmp_path, second)
    assert meta["version"] == 2 and meta["parent"] == 1 and "created_at" in meta
    version_dir = tmp_path / contract.MODEL_NAME / "2"
    assert (version_dir / "model.py").is_file()
    assert (version_dir / export.SAVEDMODEL_DIR / "saved_model.pb").is_file()
    assert not list((tmp_path / contract.MODEL_NAME).glob(".tmp-*"))


def test_a_failed_export_leaves_no_version_and_no_staging_folder(tmp_path) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever TensorFlow raises for a non-model
        export.export_version(object(), tmp_path, {})  # type: ignore[arg-type]
    model_dir = tmp_path / contract.MODEL_NAME
    assert export.existing_versions(model_dir) == []
    assert not list(model_dir.glob(".tmp-*"))


def test_triton_start_failure_says_why(tmp_path) -> None:
    export.write_model_config(tmp_path, export.TritonModelConfig())  # a model with no versions at all
    server = TritonServer(TritonConfig(repository=tmp_path, work_dir=tmp_path / "work", startup_timeout_s=60))
    with pytest.raises(TritonStartError, match="log"):
        server.start()
    assert not server.running
