"""Cold starts of Triton with the preftrack model, one after another, with the cores kept busy by other work.

A start counts as hung when Triton and the model are not ready within ``--timeout`` seconds; its log tail (of that
run only) is printed. The script exits non-zero when any start did not become ready.

    .venv/bin/python bench/bench_cold_starts.py [--starts 20] [--busy 2] [--timeout 120]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _small_model import export_small

from preftrack_dev.triton_launcher import TritonConfig, TritonServer


def _busy(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--busy", type=int, default=2, help="processes spinning on the CPU meanwhile")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    repository = work / "repo"
    export_small(repository)
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    times: list[float] = []
    failures: list[str] = []
    try:
        for n in range(args.starts):
            server = TritonServer(
                TritonConfig(repository=repository, work_dir=work / f"run-{n}", startup_timeout_s=args.timeout)
            )
            started = time.monotonic()
            try:
                server.start()
            except Exception as exc:  # a start that failed or hung: report it and go on
                failures.append(f"start {n + 1}: {exc}")
                print(f"start {n + 1}: FAILED after {time.monotonic() - started:.1f} s\n{exc}", flush=True)
            else:
                times.append(time.monotonic() - started)
                print(f"start {n + 1}: ready in {times[-1]:.1f} s", flush=True)
            finally:
                server.stop()
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()
    if times:
        print(f"ready {len(times)}/{args.starts}; median {statistics.median(times):.1f} s, max {max(times):.1f} s")
    print(f"cold_starts_ready={len(times)} failed={len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
