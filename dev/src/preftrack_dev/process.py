"""Child processes of the local stack: the gateway (started, then waited on until it serves) and the continual
trainer. Used by ``preftrack-dev up`` and ``replay``, the tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from preftrack import TLS
from preftrack_gateway.workers import unused_port


class GatewayStartError(RuntimeError):
    """The gateway process exited or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    """An unused TCP port on loopback."""
    return unused_port("127.0.0.1")


class GatewayProcess:
    """``python -m preftrack_gateway`` on a free port with ``PREFTRACK_*`` settings from ``env``.

    Args:
        env: settings, e.g. ``{"PREFTRACK_TRITON_URL": ..., "PREFTRACK_STORE_URL": ...}``.
        log_file: where the gateway's output goes.
        port: the port to listen on (0 picks a free one).
        repository: the Triton model repository, when known (``PREFTRACK_MODEL_REPOSITORY``): the gateway
            then checks the feature schema of versions the registry does not describe.
        tls: how to reach a gateway that serves TLS (its CA, a client certificate for mutual TLS).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_file: Path,
        port: int = 0,
        *,
        repository: Path | None = None,
        tls: TLS | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **env, "PREFTRACK_PORT": str(self.port)}
        if repository is not None:
            self.env["PREFTRACK_MODEL_REPOSITORY"] = str(repository.resolve())
        self.log_file = log_file
        self.tls = tls
        self._log_start = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id."""
        assert self._process is not None
        return self._process.pid

    def start(self, *, timeout_s: float = 60.0, require_serving: bool = True) -> GatewayProcess:
        """Start and wait until health answers (SERVING when ``require_serving``); a running gateway is left as it
        is, whatever the arguments (``with GatewayProcess(...).start()`` enters it once: a second process on the
        same port would be left running when the block ends)."""
        if self.running():
            return self
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # The log is appended across runs: a failed start reports only what this run wrote.
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "preftrack_gateway"], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout_s
        channel = (
            grpc.insecure_channel(self.target)
            if self.tls is None
            else grpc.secure_channel(self.target, self.tls.credentials(), options=self.tls.options())
        )
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self._process.poll() is not None:
                    raise GatewayStartError(f"gateway exited with {self._process.returncode}:\n{self.log_tail()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                    if not require_serving or status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise GatewayStartError(f"gateway not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
                time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the gateway's log."""
        if not self.log_file.exists():
            return "(no log)"
        with open(self.log_file, "rb") as log:
            log.seek(self._log_start)
            text = log.read().decode("utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(nothing logged by this run)"

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful: drains in-flight calls) and wait; returns the exit code."""
        if self._process is None:
            return 0
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return int(self._process.returncode)

    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_trainer_process(
    store_url: str, repository: Path, log_file: Path, options: Sequence[str] = (), *, fresh_log: bool = False
) -> subprocess.Popen[bytes]:
    """Run ``preftrack-trainer continual`` as a child process (its own session) logging to ``log_file``."""
    args = [sys.executable, "-m", "preftrack_trainer", "continual", "--store-url", store_url]
    with open(log_file, "wb" if fresh_log else "ab") as log:
        return subprocess.Popen(
            [*args, "--repository", str(repository), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,
        )


def stop_trainer_process(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM a trainer process (it finishes its round), killing it if it outlives ``timeout_s``."""
    if process is None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
