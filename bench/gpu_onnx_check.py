"""The preftrack MLP on a GPU without TensorFlow: items/s of the model exported to ONNX, by ONNX Runtime, at
batch 1,024, on the CUDA provider and on the CPU of the same machine.

The GPU machine sometimes lent to a session has ONNX Runtime but no TensorFlow and no Docker, so the Triton
path (bench/gpu_check.py) cannot run there; this measures the same network's arithmetic instead. Export the
model with tf2onnx first (a version's model.savedmodel, opset 17), then:

    python bench/gpu_onnx_check.py var/gpu/preftrack.onnx [--seconds 10]

Prints one line per provider, and ``onnx_<provider>_items_per_s=`` lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def _inputs(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in spec.shape]
        if "int64" in spec.type:
            feeds[spec.name] = rng.integers(0, 2**62, size=shape, dtype=np.int64)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}, providers {available}")
    outputs = {}
    for provider in ("CUDAExecutionProvider", "CPUExecutionProvider"):
        if provider not in available:
            print(f"{provider}: not available")
            continue
        session = ort.InferenceSession(args.model, providers=[provider])
        if session.get_providers()[0] != provider:
            print(f"{provider}: fell back to {session.get_providers()}")
            continue
        feeds = _inputs(session, args.batch)
        for _ in range(10):
            outputs[provider] = session.run(None, feeds)[0]
        latencies = []
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            session.run(None, feeds)
            latencies.append(time.perf_counter() - started)
        items = len(latencies) * args.batch / sum(latencies)
        name = provider.removesuffix("ExecutionProvider").lower()
        print(f"{provider}: batch {args.batch}: {items:,.0f} items/s, p50 {1000 * statistics.median(latencies):.2f} ms")
        print(f"onnx_{name}_items_per_s={items:.0f}")
    if len(outputs) == 2:
        gap = float(np.max(np.abs(outputs["CUDAExecutionProvider"] - outputs["CPUExecutionProvider"])))
        print(f"largest difference between the providers' scores: {gap:.2e}")
    return 0 if outputs else 1


if __name__ == "__main__":
    sys.exit(main())
