"""Gateway benchmarks: Score through the gateway vs straight to Triton, Recommend over 1,000 candidates (with
the per-event layer learning, next to the same 1,000 rows straight to Triton), both at once, and feedback
ingestion (streamed and unary) on SQLite and PostgreSQL. One run, one machine; the client, the gateway and Triton
share its cores.

Two floors are measured in the same run: a Python gRPC server with the gateway's API that does no work
(``_grpc_floor.py``: what one grpc.aio process serves here at all, with the same client), and the event store's
own appends of the same events (what the durable write allows without gRPC, features or learning).

    .venv/bin/python bench/bench_gateway.py [--seconds 5] [--postgres-url postgresql://...] [--workers 1,2]

Prints tables and final ``name=value`` lines. Fails if the per-event layer learns nothing before Recommend.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from _small_model import export_small

import preftrack
from preftrack_dev.process import GatewayProcess, free_port
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway import contract
from preftrack_gateway.features import FeatureSpec, FeatureState
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event, Item
from preftrack_gateway.store import open_store

KEY = "bench-pseudonym-key-0123456789"
ITEMS = [preftrack.Item(item_id=f"b-{n}", categories=(f"c-{n % 16}",), price=1.0 + n % 40) for n in range(2000)]


def _pct(latencies: list[float], q: int) -> float:
    return 1000 * statistics.quantiles(latencies, n=100)[q - 1] if len(latencies) > 1 else float("nan")


async def _closed_loop(make_call, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """Run ``concurrency`` loops of ``await make_call(k)`` for ``seconds``; calls/s and latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(k: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await make_call(k)
            latencies.append(time.perf_counter() - started)

    for k in range(concurrency):  # warm-up
        await make_call(k)
    started = time.perf_counter()
    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def _direct_inputs(user: str, items: list[str]):
    """The Triton request the gateway would build for a user with no history (features from the same code)."""
    state = FeatureState(
        FeatureSpec(), {i.item_id: Item(item_id=i.item_id, categories=i.categories, price=i.price) for i in ITEMS}
    )
    key = Pseudonymiser(KEY)(user)
    now = time.time()
    features = np.array([state.row(key, i, now) for i in items], dtype=np.float32)
    arrays = contract.user_request_arrays(key, (), [state.item(i) for i in items], features)
    inputs = []
    for name, array, dtype in arrays:
        tensor = triton_aio.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


async def score_comparison(
    gateway: str, triton_url: str, seconds: float, items_per_call: int, floor: str | None = None
) -> dict[int, dict]:
    """Score through the gateway, straight to Triton and (when ``floor`` is given) to the do-nothing gRPC server,
    one after the other at each concurrency."""
    items = [i.item_id for i in ITEMS[:items_per_call]]
    results: dict[int, dict] = {}
    # Several connections, as many client processes would open: the kernel spreads connections (not calls) over
    # the gateway's workers.
    clients = [preftrack.AsyncClient(gateway) for _ in range(8)]
    floor_clients = [preftrack.AsyncClient(floor) for _ in range(8)] if floor else []
    try:
        direct = triton_aio.InferenceServerClient(triton_url)
        inputs = _direct_inputs("bench-user", items)
        for concurrency in (1, 8, 32):
            g_rps, g_lat = await _closed_loop(
                lambda k: clients[k % len(clients)].score(f"bench-user-{k}", items), concurrency, seconds
            )
            d_rps, d_lat = await _closed_loop(
                lambda k: direct.infer(contract.MODEL_NAME, inputs, model_version="1"), concurrency, seconds
            )
            results[concurrency] = {
                "gateway_rps": g_rps,
                "gateway_p50": _pct(g_lat, 50),
                "gateway_p99": _pct(g_lat, 99),
                "direct_rps": d_rps,
                "direct_p50": _pct(d_lat, 50),
                "direct_p99": _pct(d_lat, 99),
            }
            if floor_clients:
                f_rps, _ = await _closed_loop(
                    lambda k: floor_clients[k % len(floor_clients)].score(f"bench-user-{k}", items),
                    concurrency,
                    seconds,
                )
                results[concurrency]["floor_rps"] = f_rps
        await direct.close()
    finally:
        for client in clients + floor_clients:
            await client.close()
    return results


def _layer_updates(metrics_url: str) -> float:
    """The per-event layer's updates so far, from the gateway's metrics."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("preftrack_online_updates")
    )


async def warm_layer(gateway: str, metrics_url: str) -> float:
    """Feedback that labels examples (views followed by purchases), so that Recommend runs with the per-event layer
    learning, as in a live shop: without labels it is skipped. Returns the layer's updates; fails if there are none."""
    now = time.time()
    events = [
        preftrack.FeedbackEvent(
            user_id=f"rec-user-{k % 4}",
            item_id=ITEMS[(37 * k) % 1000].item_id,
            event_type=kind,
            timestamp_s=now - 60 + k * 0.01 + (0.005 if kind == "purchase" else 0.0),
        )
        for k in range(200)
        for kind in ("view", "purchase")
    ]
    async with preftrack.AsyncClient(gateway) as client:
        await client.send(events)
    deadline = time.monotonic() + 30
    while (updates := _layer_updates(metrics_url)) == 0:
        if time.monotonic() > deadline:
            raise SystemExit("the per-event layer learned nothing from 200 labelled views within 30 s")
        await asyncio.sleep(0.2)
    return updates


async def recommend_1000(gateway: str, triton_url: str, seconds: float) -> dict[str, tuple[float, float, float]]:
    """Recommend over 1,000 candidates at concurrency 4 (calls/s, p50 ms, p99 ms), and the same 1,000 rows scored
    straight by Triton: the floor the gateway's latency stands on."""
    candidates = [i.item_id for i in ITEMS[:1000]]
    async with preftrack.AsyncClient(gateway) as client:
        rps, lat = await _closed_loop(lambda k: client.recommend(f"rec-user-{k}", candidates, k=20), 4, seconds)
    direct = triton_aio.InferenceServerClient(triton_url)
    try:
        inputs = _direct_inputs("rec-user-0", candidates)
        d_rps, d_lat = await _closed_loop(
            lambda k: direct.infer(contract.MODEL_NAME, inputs, model_version="1"), 4, seconds
        )
    finally:
        await direct.close()
    return {"gateway": (rps, _pct(lat, 50), _pct(lat, 99)), "direct": (d_rps, _pct(d_lat, 50), _pct(d_lat, 99))}


async def mixed_traffic(gateway: str, seconds: float) -> dict[str, tuple[float, float, float]]:
    """Score (10 items, concurrency 16) and Recommend over 1,000 candidates (concurrency 2) at the same time, as a
    shop sends them: calls/s, p50 ms, p99 ms of each."""
    items = [i.item_id for i in ITEMS[:10]]
    candidates = [i.item_id for i in ITEMS[:1000]]
    clients = [preftrack.AsyncClient(gateway) for _ in range(4)]
    try:
        (s_rps, s_lat), (r_rps, r_lat) = await asyncio.gather(
            _closed_loop(lambda k: clients[k % 4].score(f"bench-user-{k}", items), 16, seconds),
            _closed_loop(lambda k: clients[k % 4].recommend(f"rec-user-{k}", candidates, k=20), 2, seconds),
        )
    finally:
        for client in clients:
            await client.close()
    return {
        "score": (s_rps, _pct(s_lat, 50), _pct(s_lat, 99)),
        "recommend": (r_rps, _pct(r_lat, 50), _pct(r_lat, 99)),
    }


async def ingestion(gateway: str, seconds: float) -> tuple[float, float]:
    """Events/s streamed (batches of 1,000, 4 concurrent streams) and unary (1 event per call, concurrency 32)."""
    counter = 0

    def events(n: int) -> list[preftrack.FeedbackEvent]:
        nonlocal counter
        counter += n
        now = time.time()
        return [
            preftrack.FeedbackEvent(
                user_id=f"ing-{(counter + k) % 5000}",
                item_id=ITEMS[(counter + k) % 2000].item_id,
                event_type="view",
                timestamp_s=now,
            )
            for k in range(n)
        ]

    async with preftrack.AsyncClient(gateway, timeout_s=30) as client:
        streamed = 0

        async def stream(_k: int) -> None:
            nonlocal streamed
            summary = await client.stream(events(10_000), batch_size=1000)
            streamed += summary.accepted

        started = time.perf_counter()
        await _closed_loop(stream, 4, seconds)
        stream_eps = streamed / (time.perf_counter() - started)
        unary_rps, _ = await _closed_loop(lambda k: client.send(events(1)), 32, seconds)
    return stream_eps, unary_rps


async def store_appends(url: str, seconds: float) -> float:
    """Events/s the event store itself makes durable: 4 concurrent appends of 1,000 events at a time, as the
    streams above send them, with no gRPC, validation, features or learning."""
    store = await open_store(url)
    counter = 0

    def batch() -> list[Event]:
        nonlocal counter
        counter += 1000
        now = time.time()
        return [
            Event(
                event_id=f"append-{counter + k}",
                user_id=f"ing-{(counter + k) % 5000}",
                item_id=ITEMS[(counter + k) % 2000].item_id,
                event_type="view",
                timestamp_s=now,
            )
            for k in range(1000)
        ]

    try:
        rps, _ = await _closed_loop(lambda _k: store.append(batch()), 4, seconds)
    finally:
        await store.close()
    return rps * 1000


class _Floor:
    """``_grpc_floor.py`` in a process of its own, on a free port."""

    def __enter__(self) -> str:
        port = free_port()
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_grpc_floor.py")), str(port)])
        target = f"127.0.0.1:{port}"
        try:
            with grpc.insecure_channel(target) as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
        except BaseException:
            self.process.kill()
            raise
        return target

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--items-per-call", type=int, default=10)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "PREFTRACK_TEST_POSTGRES_URL", "postgresql://preftrack:preftrack@127.0.0.1:5432/preftrack"
        ),
    )
    parser.add_argument(
        "--workers", default="1,2", help="gateway worker counts to compare Score with (comma-separated)"
    )
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="preftrack-bench-") as tmp:
        root = Path(tmp)
        export_small(root / "repo")
        with TritonServer(TritonConfig(repository=root / "repo", work_dir=root)) as triton:
            env = {"PREFTRACK_TRITON_URL": triton.grpc_url, "PREFTRACK_PSEUDONYM_KEY": KEY}
            metrics_port = free_port()
            first = {
                **env,
                "PREFTRACK_STORE_URL": f"sqlite:///{root / 'e.db'}",
                "PREFTRACK_METRICS_PORT": str(metrics_port),
            }
            with GatewayProcess(first, root / "gw.log") as gw, _Floor() as floor:
                with preftrack.Client(gw.target) as client:
                    client.upsert_items(ITEMS)
                score = asyncio.run(
                    score_comparison(gw.target, triton.grpc_url, args.seconds, args.items_per_call, floor)
                )
                layer_updates = asyncio.run(warm_layer(gw.target, f"http://127.0.0.1:{metrics_port}/metrics"))
                rec = asyncio.run(recommend_1000(gw.target, triton.grpc_url, args.seconds))
                mix = asyncio.run(mixed_traffic(gw.target, args.seconds))
                sqlite_ingest = asyncio.run(ingestion(gw.target, args.seconds))
                floor_ingest = asyncio.run(ingestion(floor, args.seconds))
            sqlite_appends = asyncio.run(store_appends(f"sqlite:///{root / 'appends.db'}", args.seconds))
            by_workers = {1: score}
            for workers in (w for w in worker_counts if w != 1):
                many = {**env, "PREFTRACK_STORE_URL": f"sqlite:///{root / 'e.db'}", "PREFTRACK_WORKERS": str(workers)}
                with GatewayProcess(many, root / f"gw-{workers}.log") as gw:
                    by_workers[workers] = asyncio.run(
                        score_comparison(gw.target, triton.grpc_url, args.seconds, args.items_per_call)
                    )
            import psycopg

            with psycopg.connect(args.postgres_url, autocommit=True) as admin:
                for database in ("preftrack_bench", "preftrack_bench_appends"):
                    admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                    admin.execute(f"CREATE DATABASE {database}")
            server_url = args.postgres_url.rsplit("/", 1)[0]
            pg_env = {**env, "PREFTRACK_STORE_URL": f"{server_url}/preftrack_bench"}
            with GatewayProcess(pg_env, root / "gw-pg.log") as gw:
                pg_ingest = asyncio.run(ingestion(gw.target, args.seconds))
            pg_appends = asyncio.run(store_appends(f"{server_url}/preftrack_bench_appends", args.seconds))

    print(f"Score, {args.items_per_call} items per call (gateway includes feature computation and pseudonymisation)\n")
    print(
        "| concurrency | gateway calls/s | p50 ms | p99 ms | direct Triton calls/s | p50 ms | p99 ms | ratio "
        "| do-nothing gRPC server calls/s | its ratio to Triton |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c, r in score.items():
        gateway_cells = f"{r['gateway_rps']:,.0f} | {r['gateway_p50']:.2f} | {r['gateway_p99']:.2f}"
        direct_cells = f"{r['direct_rps']:,.0f} | {r['direct_p50']:.2f} | {r['direct_p99']:.2f}"
        floor_cells = f"{r['floor_rps']:,.0f} | {r['floor_rps'] / r['direct_rps']:.2f}"
        print(f"| {c} | {gateway_cells} | {direct_cells} | {r['gateway_rps'] / r['direct_rps']:.2f} | {floor_cells} |")
    for workers, results in by_workers.items():
        if workers != 1:
            cells = ", ".join(
                f"c={c}: {r['gateway_rps']:,.0f} vs {r['direct_rps']:,.0f} calls/s "
                f"({r['gateway_rps'] / r['direct_rps']:.2f})"
                for c, r in results.items()
            )
            print(f"\nScore with {workers} gateway workers, gateway vs direct Triton: {cells}")
    print(
        "\nRecommend over 1,000 candidates, concurrency 4, with the per-event layer learning "
        f"({layer_updates:.0f} updates before; direct: the same 1,000 rows straight to Triton)\n"
    )
    print("| | calls/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, (rps, p50, p99) in rec.items():
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} |")
    gw_rec, direct_rec = rec["gateway"], rec["direct"]
    print("\nMixed: Score (10 items) at concurrency 16 and Recommend-1000 at concurrency 2, at the same time\n")
    print("| | calls/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for name, (rps, p50, p99) in mix.items():
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} |")
    print("\n| store | streamed events/s | unary events/s (c=32) | the store's own appends, events/s |")
    print("|---|---|---|---|")
    print(f"| SQLite | {sqlite_ingest[0]:,.0f} | {sqlite_ingest[1]:,.0f} | {sqlite_appends:,.0f} |")
    print(f"| PostgreSQL | {pg_ingest[0]:,.0f} | {pg_ingest[1]:,.0f} | {pg_appends:,.0f} |")
    print(f"| none: the do-nothing gRPC server | {floor_ingest[0]:,.0f} | {floor_ingest[1]:,.0f} | |")
    ratios = " ".join(
        f"score_ratio_w{w}_c{c}={r['gateway_rps'] / r['direct_rps']:.2f}"
        for w, results in by_workers.items()
        for c, r in results.items()
    )
    print(
        f"\nbench_gateway {ratios} recommend1000_p50_ms={gw_rec[1]:.2f} recommend1000_p99_ms={gw_rec[2]:.2f} "
        f"recommend1000_direct_p50_ms={direct_rec[1]:.2f} recommend1000_direct_p99_ms={direct_rec[2]:.2f} "
        f"recommend1000_ratio={gw_rec[0] / direct_rec[0]:.2f} "
        f"mixed_score_rps={mix['score'][0]:.0f} mixed_score_p99_ms={mix['score'][2]:.2f} "
        f"mixed_recommend_rps={mix['recommend'][0]:.0f} mixed_recommend_p99_ms={mix['recommend'][2]:.2f} "
        f"sqlite_stream_eps={sqlite_ingest[0]:.0f} sqlite_unary_eps={sqlite_ingest[1]:.0f} "
        f"postgres_stream_eps={pg_ingest[0]:.0f} postgres_unary_eps={pg_ingest[1]:.0f} "
        f"floor_score_ratio_c32={score[32]['floor_rps'] / score[32]['direct_rps']:.2f} "
        f"floor_stream_eps={floor_ingest[0]:.0f} sqlite_append_eps={sqlite_appends:.0f} "
        f"postgres_append_eps={pg_appends:.0f}"
    )


if __name__ == "__main__":
    main()
