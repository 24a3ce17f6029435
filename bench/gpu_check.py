"""What the compose stack serves on a GPU host, each figure printed beside the range expected for it.

On the GPU host, once `docker compose up -d --build` serves a version, before the shop's traffic:

    python bench/gpu_check.py --api-key KEY --label gpu
    # the same figures from the local CPU stack (`make up`; no key there) for comparison:
    .venv/bin/python bench/gpu_check.py --gateway 127.0.0.1:50051 --version-dir model_repository/preftrack/1 --label cpu

Prints three lines:

1. items/s at batch 1,024 straight to Triton (gRPC, random rows of the model's contract, one call at a time);
2. p50 and p99 of Recommend over 1,000 candidates through a gateway, 4 calls at a time (as bench_gateway.py). The
   calls log impressions for the users gpu-check-0 to gpu-check-3: `preftrack-admin forget gpu-check-N` erases them;
3. dynamic batching's gain: 1-row requests, 32 at a time, to the served version and to a copy of it loaded with
   batching off (bench_serving.py's measure). The copy is loaded through Triton's load API from the version's files
   (``--version-dir``; by default copied out of the triton service with `docker compose cp`) and unloaded after.

Expected ranges are estimates from this project's CPU runs (docs/benchmarks.md) and the model's arithmetic on an
H200 (4.3M items/s at batch 1,024 without Triton); the first GPU run should replace them. Needs numpy,
tritonclient[grpc] and the SDK (`pip install ./sdk`). Exits 1 when the model is not ready or a part fails (the
other parts still run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

import preftrack

ROOT = Path(__file__).resolve().parent.parent
NO_BATCHING = "preftrack_gpu_check_nobatch"
CANDIDATES = 1000
RECOMMEND_CONCURRENCY = 4
BATCHING_CONCURRENCY = 32
EXPECTED = {
    "items": "expected on one H200: 0.5M-2M items/s (671k here at c=1 on 2 CPU cores; the bare network 4.3M)",
    "recommend": "expected: p99 10-25 ms (22.5 ms here on 2 shared CPU cores; issue #10's goal <= 15 ms)",
    "batching": "expected: 3-8x (4.4x here on 2 CPU cores; one Python client process may cap the 'on' side)",
}


class CheckError(RuntimeError):
    """One part of the check could not run; the message says why."""


def _ms(latencies: list[float], q: int) -> float:
    return 1000 * (statistics.quantiles(latencies, n=100)[q - 1] if len(latencies) > 1 else latencies[0])


def _random_inputs(metadata: dict, rows: int) -> list[grpcclient.InferInput]:
    rng = np.random.default_rng(0)
    inputs = []
    for spec in metadata["inputs"]:
        dims = [rows, *(int(d) for d in spec["shape"][1:])]
        if spec["datatype"] == "INT64":
            array = rng.integers(0, 2**62, size=dims, dtype=np.int64)
        else:
            array = rng.standard_normal(dims).astype(np.float32)
        tensor = grpcclient.InferInput(spec["name"], dims, spec["datatype"])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def served_version(client: grpcclient.InferenceServerClient, model: str) -> str:
    """The newest version of ``model`` Triton has ready (the stable and a candidate may both be loaded)."""
    index = client.get_model_repository_index(as_json=True).get("models", [])
    ready = [int(m["version"]) for m in index if m["name"] == model and m.get("state") == "READY" and m.get("version")]
    if not ready:
        raise CheckError(f"no version of {model} is ready in Triton")
    return str(max(ready))


def items_per_second(url: str, model: str, version: str, batch: int, seconds: float) -> str:
    """Items/s of one client calling with ``batch`` rows at a time, with p50 and p99 per call."""
    client = grpcclient.InferenceServerClient(url)
    inputs = _random_inputs(client.get_model_metadata(model, as_json=True), batch)
    for _ in range(5):  # warm up
        client.infer(model, inputs, model_version=version)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        client.infer(model, inputs, model_version=version)
        latencies.append(time.perf_counter() - started)
    client.close()
    items = len(latencies) * batch / sum(latencies)
    return f"batch {batch:,}: {items:,.0f} items/s, p50 {_ms(latencies, 50):.1f} ms, p99 {_ms(latencies, 99):.1f} ms"


async def _recommend(gateway: str, api_key: str | None, seconds: float) -> tuple[float, list[float]]:
    candidates = [f"gpu-check-item-{n}" for n in range(CANDIDATES)]
    latencies: list[float] = []
    async with preftrack.AsyncClient(gateway, api_key=api_key, timeout_s=10) as client:

        async def loop(k: int, until: float) -> None:
            while time.perf_counter() < until:
                started = time.perf_counter()
                await client.recommend(f"gpu-check-{k}", candidates, k=20)
                latencies.append(time.perf_counter() - started)

        for k in range(RECOMMEND_CONCURRENCY):  # warm up
            await client.recommend(f"gpu-check-{k}", candidates, k=20)
        started = time.perf_counter()
        await asyncio.gather(*(loop(k, started + seconds) for k in range(RECOMMEND_CONCURRENCY)))
        return len(latencies) / (time.perf_counter() - started), latencies


def recommend_1000(gateway: str, api_key: str | None, seconds: float) -> str:
    """Recommend over 1,000 candidates through the gateway at concurrency 4: calls/s, p50, p99."""
    try:
        rate, latencies = asyncio.run(_recommend(gateway, api_key, seconds))
    except preftrack.PreftrackError as exc:
        raise CheckError(f"Recommend through {gateway} failed: {exc} (--api-key, or PREFTRACK_API_KEY)") from exc
    return (
        f"Recommend over {CANDIDATES:,} candidates at c={RECOMMEND_CONCURRENCY} via {gateway}: "
        f"p99 {_ms(latencies, 99):.1f} ms, p50 {_ms(latencies, 50):.1f} ms, {rate:,.0f} calls/s"
    )


def _version_files(version_dir: Path | None, model: str, version: str) -> dict[str, bytes]:
    """The version's model.py and SavedModel as Triton's load API takes them (``file:1/<path>``)."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        if version_dir is None:
            version_dir = Path(tmp) / version
            source = f"triton:/models/{model}/{version}"
            done = subprocess.run(
                ["docker", "compose", "cp", source, str(version_dir)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise CheckError(f"docker compose cp {source} failed ({done.stderr.strip()}); pass --version-dir")
        files = {
            f"file:1/{path.relative_to(version_dir)}": path.read_bytes()
            for path in sorted(version_dir.rglob("*"))
            if path.is_file() and (path.name == "model.py" or "model.savedmodel" in path.parts)
        }
    if not any(key.endswith("model.py") for key in files):
        raise CheckError(f"{version_dir} has no model.py and model.savedmodel/")
    return files


def _one_row_calls(url: str, model: str, version: str, inputs, seconds: float) -> tuple[float, list[float]]:
    """Requests/s of 32 threads, each with its own connection, sending the same 1-row request."""
    latencies: list[list[float]] = [[] for _ in range(BATCHING_CONCURRENCY)]
    ready = threading.Barrier(BATCHING_CONCURRENCY + 1)
    stop = threading.Event()

    def worker(k: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        for _ in range(5):
            client.infer(model, inputs, model_version=version)
        ready.wait()
        while not stop.is_set():
            started = time.perf_counter()
            client.infer(model, inputs, model_version=version)
            latencies[k].append(time.perf_counter() - started)
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(BATCHING_CONCURRENCY)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join()
    merged = [x for row in latencies for x in row]
    return len(merged) / elapsed, merged


def _executions(client: grpcclient.InferenceServerClient, model: str, version: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model, version, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def batching_gain(url: str, model: str, version: str, version_dir: Path | None, seconds: float) -> str:
    """1-row requests at concurrency 32 to the served version and to its copy with dynamic batching off."""
    client = grpcclient.InferenceServerClient(url)
    config = client.get_model_config(model, as_json=True)["config"]
    if "dynamic_batching" not in config:
        raise CheckError(f"{model}'s config has no dynamic batching to compare with")
    config.update(name=NO_BATCHING, version_policy={"specific": {"versions": [1]}})
    del config["dynamic_batching"]
    client.load_model(NO_BATCHING, config=json.dumps(config), files=_version_files(version_dir, model, version))
    try:
        inputs = _random_inputs(client.get_model_metadata(model, as_json=True), 1)
        before = _executions(client, model, version)
        on, on_latencies = _one_row_calls(url, model, version, inputs, seconds)
        after = _executions(client, model, version)
        off, off_latencies = _one_row_calls(url, NO_BATCHING, "1", inputs, seconds)
    finally:
        client.unload_model(NO_BATCHING)
        client.close()
    rows_per_execution = (after[0] - before[0]) / max(1, after[1] - before[1])
    return (
        f"dynamic batching, 1-row requests at c={BATCHING_CONCURRENCY}: gain {on / off:.1f}x "
        f"(on {on:,.0f} req/s, p99 {_ms(on_latencies, 99):.1f} ms, {rows_per_execution:.0f} rows per execution; "
        f"off {off:,.0f} req/s, p99 {_ms(off_latencies, 99):.1f} ms)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton's gRPC address")
    parser.add_argument("--gateway", default="127.0.0.1:50051", help="a gateway replica's address")
    parser.add_argument("--api-key", default=os.environ.get("PREFTRACK_API_KEY"), help="default: PREFTRACK_API_KEY")
    parser.add_argument("--model", default="preftrack")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time of each part")
    parser.add_argument("--version-dir", type=Path, help="the served version's folder (default: docker compose cp)")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    try:
        version = served_version(client, args.model)
    except CheckError as exc:
        print(f"{args.model} at {args.url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    label = f"{args.label or args.url} {args.model} v{version}"
    parts = [
        ("items", lambda: items_per_second(args.url, args.model, version, args.batch, args.seconds)),
        ("recommend", lambda: recommend_1000(args.gateway, args.api_key, args.seconds)),
        ("batching", lambda: batching_gain(args.url, args.model, version, args.version_dir, args.seconds)),
    ]
    failed = False
    for name, measure in parts:
        try:
            print(f"{label} | {measure()} | {EXPECTED[name]}", flush=True)
        except (CheckError, grpcclient.InferenceServerException, OSError) as exc:
            failed = True
            print(f"{label} | {name}: FAILED: {exc} | {EXPECTED[name]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
