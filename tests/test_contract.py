"""The committed Triton config is what the trainer generates, and its tensors are the contract's."""

from __future__ import annotations

import re
from pathlib import Path

from preftrack_gateway import contract
from preftrack_trainer.export import TritonModelConfig, render_config

REPO = Path(__file__).resolve().parents[1] / "model_repository" / contract.MODEL_NAME


def test_committed_config_is_generated() -> None:
    assert (REPO / "config.pbtxt").read_text() == render_config(TritonModelConfig())
    assert (REPO / "configs" / "gpu.pbtxt").read_text() == render_config(TritonModelConfig(kind="KIND_GPU"))


def test_config_tensor_names_and_types_match_the_contract() -> None:
    text = (REPO / "config.pbtxt").read_text()
    found = re.findall(r'name: "([A-Z_]+)"\s+data_type: (TYPE_\w+)\s+dims: \[ ([\d, ]+) \]', text)
    declared = {name: (dtype, tuple(int(d) for d in dims.split(","))) for name, dtype, dims in found}
    assert declared == {**contract.INPUTS, **contract.OUTPUTS}
    assert "dynamic_batching" in text and "model_warmup" in text
    assert "KIND_GPU" in (REPO / "configs" / "gpu.pbtxt").read_text()
