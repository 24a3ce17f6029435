"""The preftrack MLP's arithmetic on a GPU, for machines with PyTorch but no TensorFlow (the GPU machine lent to
sessions): the network rebuilt in PyTorch from the trained Keras weights, checked against the ONNX export of
the same version scored by ONNX Runtime on the CPU (itself checked against TensorFlow to 1e-7), then timed
at several batch sizes on the GPU and on the CPU.

Export the weights and the ONNX model from a trained version first (see docs/benchmarks.md), then:

    python bench/gpu_torch_check.py var/gpu/preftrack_weights.npz var/gpu/preftrack.onnx

Prints one line per (device, batch) and exits non-zero when the scores disagree by more than 1e-4.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
import torch


class Mlp(torch.nn.Module):
    """[user emb, item emb, category emb, standardised features] -> hidden ReLU layers -> sigmoid."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.embeddings = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(w[f"{n}_emb"])) for n in ("user", "item", "category")]
        )
        self.register_buffer("mean", torch.from_numpy(w["mean"]))
        self.register_buffer("std", torch.from_numpy(w["std"]))
        layers = []
        n = 0
        while f"hidden_{n}_kernel" in w:
            layers.append((torch.from_numpy(w[f"hidden_{n}_kernel"]), torch.from_numpy(w[f"hidden_{n}_bias"])))
            n += 1
        self.kernels = torch.nn.ParameterList([torch.nn.Parameter(k) for k, _ in layers])
        self.biases = torch.nn.ParameterList([torch.nn.Parameter(b) for _, b in layers])
        self.out_kernel = torch.nn.Parameter(torch.from_numpy(w["score_kernel"]))
        self.out_bias = torch.nn.Parameter(torch.from_numpy(w["score_bias"]))

    def forward(self, user, item, category, features):
        parts = [
            table[torch.remainder(ids, table.shape[0])]
            for table, ids in zip(self.embeddings, (user, item, category), strict=True)
        ]
        x = torch.cat([*parts, (features - self.mean) / self.std], dim=1)
        for kernel, bias in zip(self.kernels, self.biases, strict=True):
            x = torch.relu(x @ kernel + bias)
        return torch.sigmoid(x @ self.out_kernel + self.out_bias)


def _inputs(batch: int, features: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = {n: rng.integers(0, 2**62, size=batch, dtype=np.int64) for n in ("user_id", "item_id", "category_id")}
    return {**ids, "features": rng.standard_normal((batch, features)).astype(np.float32)}


def _time(run, seconds: float) -> list[float]:
    for _ in range(20):
        run()
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        run()
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("onnx")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    w = dict(np.load(args.weights))
    n_features = int(w["mean"].shape[0])
    reference = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    check = _inputs(4096, n_features, seed=1)
    expected = reference.run(None, check)[0].reshape(-1)
    devices = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
    print(f"torch {torch.__version__}; GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    worst = 0.0
    for device in devices:
        net = Mlp(w).to(device).eval()
        with torch.inference_mode():
            got = net(
                *(torch.from_numpy(check[k]).to(device) for k in ("user_id", "item_id", "category_id", "features"))
            )
        gap = float(np.max(np.abs(got.cpu().numpy().reshape(-1) - expected)))
        worst = max(worst, gap)
        print(f"{device}: largest difference from ONNX Runtime's scores over 4,096 rows: {gap:.2e}")
        for batch in (1, 32, 1024, 16384):
            feeds = _inputs(batch, n_features)
            tensors = [torch.from_numpy(feeds[k]).to(device) for k in ("user_id", "item_id", "category_id", "features")]

            def run(net=net, tensors=tensors, device=device):
                with torch.inference_mode():
                    out = net(*tensors)
                if device == "cuda":
                    torch.cuda.synchronize()
                return out

            latencies = _time(run, args.seconds)
            items = len(latencies) * batch / sum(latencies)
            print(
                f"torch {device} batch {batch}: {items:,.0f} items/s, p50 {1000 * statistics.median(latencies):.3f} ms"
            )
            print(f"torch_{device}_b{batch}_items_per_s={items:.0f}")
    for batch in (1024, 16384):
        feeds = _inputs(batch, n_features)
        latencies = _time(lambda feeds=feeds: reference.run(None, feeds), args.seconds)
        items = len(latencies) * batch / sum(latencies)
        print(f"onnxruntime cpu batch {batch}: {items:,.0f} items/s, p50 {1000 * statistics.median(latencies):.3f} ms")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
