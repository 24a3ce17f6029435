"""Serving throughput: Triton (python backend + SavedModel, gRPC) vs the in-process SavedModel call, and
dynamic batching on vs off for concurrent single-row requests. All numbers come from one run on one machine.

    .venv/bin/python bench/bench_serving.py [--seconds 3]

Prints one table per part and final ``name=value`` lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tritonclient.grpc as grpcclient
from _small_model import train_small

from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway import contract
from preftrack_trainer import export

BATCH_SIZES = (1, 32, 256, 1024)
NO_BATCHING = "preftrack_nobatch"


def _prepare(repository: Path, instances: int):
    mlp, examples = train_small(n_users=300, n_items=200, days=10)
    triton_cfg = export.TritonModelConfig(instance_count=instances)
    export.export_version(mlp, repository, {"parent": None}, config=triton_cfg)
    # The same version served a second time with dynamic batching off, for the on/off comparison.
    off = dataclasses.replace(triton_cfg, name=NO_BATCHING, dynamic_batching=False)
    export.write_model_config(repository, off)
    shutil.copytree(repository / contract.MODEL_NAME / "1", repository / NO_BATCHING / "1")
    return examples


def _tile(examples, n: int) -> dict[str, np.ndarray]:
    index = np.arange(n) % len(examples)
    columns = contract.request_arrays(
        examples.user_id[index],
        examples.item_id[index],
        examples.category_id[index],
        examples.features[index],
        examples.attributes[index],
    )
    return {name: array for name, array, _ in columns}


def _inputs(arrays: dict[str, np.ndarray]):
    out = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _timed(fn, seconds: float) -> tuple[int, list[float]]:
    latencies = []
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - start)
        if start > deadline:
            return len(latencies), latencies


def in_process(repository: Path, examples, seconds: float) -> dict[int, float]:
    signature = tf.saved_model.load(str(repository / contract.MODEL_NAME / "1" / export.SAVEDMODEL_DIR)).signatures[
        "serving_default"
    ]
    result = {}
    for batch in BATCH_SIZES:
        arrays = _tile(examples, batch)
        feeds = {
            "user_id": tf.constant(arrays[contract.USER_ID].reshape(-1)),
            "item_id": tf.constant(arrays[contract.ITEM_ID].reshape(-1)),
            "category_id": tf.constant(arrays[contract.CATEGORY_ID].reshape(-1)),
            "features": tf.constant(arrays[contract.FEATURES]),
        }
        for _ in range(20):
            signature(**feeds)
        calls, latencies = _timed(lambda f=feeds: signature(**f)["score"].numpy(), seconds)
        result[batch] = calls * batch / sum(latencies)
    return result


def concurrent_calls(url: str, model_name: str, arrays, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """Requests/s and latencies of ``concurrency`` threads each with its own client, for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        inputs = _inputs(arrays)
        for _ in range(5):
            client.infer(model_name, inputs)
        barrier.wait()
        while not stop.is_set():
            start = time.perf_counter()
            client.infer(model_name, inputs)
            latencies[k].append(time.perf_counter() - start)
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join()
    merged = [x for row in latencies for x in row]
    return len(merged) / elapsed, merged


def _ms(latencies: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(latencies, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement time per point")
    parser.add_argument("--instances", type=int, default=1, help="Triton model instances (CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="preftrack-bench-") as tmp:
        repository = Path(tmp) / "repo"
        examples = _prepare(repository, args.instances)
        local = in_process(repository, examples, args.seconds)
        config = TritonConfig(repository=repository, models=(contract.MODEL_NAME, NO_BATCHING), work_dir=Path(tmp))
        with TritonServer(config) as server:
            print("| batch | in-process items/s | Triton c=1 items/s | ratio | Triton c=4 items/s | ratio |")
            print("|---|---|---|---|---|---|")
            ratios = {}
            for batch in BATCH_SIZES:
                arrays = _tile(examples, batch)
                rps1, _ = concurrent_calls(server.grpc_url, contract.MODEL_NAME, arrays, 1, args.seconds)
                rps4, _ = concurrent_calls(server.grpc_url, contract.MODEL_NAME, arrays, 4, args.seconds)
                r1, r4 = rps1 * batch / local[batch], rps4 * batch / local[batch]
                ratios[batch] = (r1, r4)
                cells = (local[batch], rps1 * batch, r1, rps4 * batch, r4)
                cells = tuple(f"{c:,.0f}" if c > 10 else f"{c:.2f}" for c in cells)
                print(f"| {batch} | " + " | ".join(cells) + " |")
            single = _tile(examples, 1)
            on, on_lat = concurrent_calls(server.grpc_url, contract.MODEL_NAME, single, 32, args.seconds)
            off, off_lat = concurrent_calls(server.grpc_url, NO_BATCHING, single, 32, args.seconds)
            print("\n| concurrency 32, 1 row | req/s | p50 ms | p99 ms |")
            print("|---|---|---|---|")
            print(f"| dynamic batching on | {on:,.0f} | {_ms(on_lat, 50):.2f} | {_ms(on_lat, 99):.2f} |")
            print(f"| dynamic batching off | {off:,.0f} | {_ms(off_lat, 50):.2f} | {_ms(off_lat, 99):.2f} |")
            stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(
                contract.MODEL_NAME, as_json=True
            )["model_stats"][0]
            rows_per_exec = int(stats["inference_count"]) / max(1, int(stats["execution_count"]))
    print(
        "\nbench_serving "
        + " ".join(f"ratio_b{b}_c1={r1:.2f} ratio_b{b}_c4={r4:.2f}" for b, (r1, r4) in ratios.items())
        + f" batching_on_rps={on:.0f} batching_off_rps={off:.0f} batching_speedup={on / off:.2f}"
        + f" rows_per_execution={rows_per_exec:.1f}"
    )


if __name__ == "__main__":
    main()
