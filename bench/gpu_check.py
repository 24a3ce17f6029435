"""Items scored per second by a running Triton at one batch size, with random inputs of the model's contract.

On a GPU host with the compose stack up (`docker compose up -d`, a version loaded with the gpu config):

    python bench/gpu_check.py --url 127.0.0.1:8001 --label gpu
    # and, for the CPU figure beside it, against the local stack (`make up`):
    .venv/bin/python bench/gpu_check.py --url 127.0.0.1:8001 --label cpu

Needs only numpy and tritonclient[grpc]. Prints ``label batch items/s p50 ms p99 ms``; exits non-zero when the
model is not ready or a call fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--model", default="preftrack")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    if not client.is_model_ready(args.model):
        print(f"model {args.model} is not ready at {args.url}", file=sys.stderr)
        return 1
    metadata = client.get_model_metadata(args.model, as_json=True)
    rng = np.random.default_rng(0)
    inputs = []
    for spec in metadata["inputs"]:
        dims = [args.batch, *(int(d) for d in spec["shape"][1:])]
        if spec["datatype"] == "INT64":
            array = rng.integers(0, 2**62, size=dims, dtype=np.int64)
        else:
            array = rng.standard_normal(dims).astype(np.float32)
        tensor = grpcclient.InferInput(spec["name"], dims, spec["datatype"])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    for _ in range(5):  # warm up
        client.infer(args.model, inputs)
    latencies = []
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        client.infer(args.model, inputs)
        latencies.append(time.perf_counter() - started)
    items = len(latencies) * args.batch / sum(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]
    print(
        f"{args.label or args.url} batch {args.batch}: {items:,.0f} items/s, "
        f"p50 {1000 * statistics.median(latencies):.1f} ms, p99 {1000 * p99:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
