"""Several gateway processes on one port (``preftrack-gateway --workers N``).

One Python process tops out at one core of gRPC handling and feature folding. Each worker is a whole gateway
(its own event loop, Triton channel and features following the shared event log) listening on the same port:
gRPC sets SO_REUSEPORT, so the kernel spreads new connections across the workers. Worker ``k`` serves metrics
on ``metrics_port + k``. This process only supervises: a worker that dies is restarted (after 1 s, doubling up
to 30 s while it keeps dying young), and SIGTERM / SIGINT are passed on to every worker, which drain as one
gateway does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

_LOGGER = logging.getLogger(__name__)

#: A worker alive this long has started well: its next death restarts it after the shortest backoff again.
_HEALTHY_AFTER_S = 60.0


def unused_port(host: str) -> int:
    """A free TCP port on ``host`` (for ``--port 0``: the workers must all be given the same one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_workers(count: int, port: int, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``count`` workers of ``python -m preftrack_gateway argv`` on ``port`` until SIGTERM / SIGINT; returns
    the exit code (0 when every worker drained cleanly)."""
    if count < 1:
        raise ValueError("workers must be >= 1")
    base = dict(os.environ if env is None else env)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def start(index: int) -> subprocess.Popen[bytes]:
        worker_env = {**base, "PREFTRACK_PORT": str(port), "PREFTRACK_WORKER_INDEX": str(index)}
        metrics = int(worker_env.get("PREFTRACK_METRICS_PORT", "0") or 0)
        if metrics:
            worker_env["PREFTRACK_METRICS_PORT"] = str(metrics + index)
        return subprocess.Popen([sys.executable, "-m", "preftrack_gateway", *argv], env=worker_env)

    workers = [start(k) for k in range(count)]
    started = [time.monotonic()] * count
    backoff = [1.0] * count
    due: dict[int, float] = {}
    _LOGGER.info("%d gateway workers on port %d (pids %s)", count, port, [w.pid for w in workers])
    while not stop.wait(0.2):
        now = time.monotonic()
        for k, worker in enumerate(workers):
            if k in due:
                if now >= due[k]:
                    workers[k], started[k] = start(k), now
                    del due[k]
                continue
            code = worker.poll()
            if code is None:
                continue
            backoff[k] = 1.0 if now - started[k] > _HEALTHY_AFTER_S else min(30.0, backoff[k] * 2)
            _LOGGER.warning("gateway worker %d exited with %s; restarting in %.0f s", k, code, backoff[k])
            due[k] = now + backoff[k]
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    codes = [worker.wait() for worker in workers]
    return 0 if all(code == 0 for code in codes) else 1
