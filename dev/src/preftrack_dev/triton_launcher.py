"""Start and stop a real Triton server from the ``nvidia-pytriton`` wheel, without Docker.

The wheel ships a ``tritonserver`` binary, its shared libraries, the python backend and one backend stub per
Python version. :class:`TritonServer` assembles a backend folder with the stub matching this interpreter,
puts this interpreter's ``bin`` first on ``PATH`` (the stub finds TensorFlow and NumPy through it), starts
Triton in explicit model-control mode on the given ports, streams its log to a file, waits until the server
and the requested models are ready, and stops it cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LOGGER = logging.getLogger(__name__)


class TritonStartError(RuntimeError):
    """Triton could not be found, prepared or started; the message says why and where the log is."""


def free_port() -> int:
    """An unused TCP port on loopback."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct unused TCP ports on loopback (held open together while chosen, so never the same one)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclasses.dataclass(frozen=True)
class TritonInstall:
    """Where the wheel put Triton's pieces."""

    binary: Path
    library_dir: Path
    python_backend_dir: Path
    stub: Path


def _has_gpu() -> bool:
    """Whether an NVIDIA driver is present (its device nodes)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def find_triton() -> TritonInstall:
    """Locate ``tritonserver`` and the python backend inside the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError(
            "nvidia-pytriton is not installed in this environment: pip install nvidia-pytriton==0.7.0"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        library_dir=package.parent / "nvidia_pytriton.libs",
        python_backend_dir=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for label, path in dataclasses.asdict(install).items():
        if not Path(path).exists():
            raise TritonStartError(
                f"{label} not found at {path}; reinstall nvidia-pytriton==0.7.0 for Python {version}"
            )
    return install


@dataclasses.dataclass(frozen=True, kw_only=True)
class TritonConfig:
    """How to run Triton.

    Attributes:
        repository: the model repository folder.
        models: models loaded at start (explicit model-control mode; others load on request).
        grpc_port / http_port / metrics_port: ports; 0 picks a free one.
        host: the address all three listen on: loopback by default, so a dev stack is not reachable from the
            network (``0.0.0.0`` to expose it, e.g. in a container).
        log_file: where Triton's output goes; defaults to ``<work_dir>/tritonserver.log``.
        work_dir: folder for the assembled backend and the log; a temporary folder when unset.
        startup_timeout_s: how long to wait for the server and models to be ready.
        model_config_name: an alternative config from ``<model>/configs/`` (``gpu`` for production).
    """

    repository: Path
    models: tuple[str, ...] = ("preftrack",)
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    host: str = "127.0.0.1"
    log_file: Path | None = None
    work_dir: Path | None = None
    startup_timeout_s: float = 180.0
    model_config_name: str | None = None

    def __post_init__(self) -> None:
        if self.startup_timeout_s <= 0:
            raise ValueError("startup_timeout_s must be > 0")


class TritonServer:
    """A running ``tritonserver`` process. Use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, config: TritonConfig) -> None:
        self.config = config
        spare = iter(free_ports(3))  # distinct: Triton refuses HTTP and metrics on one port
        self.grpc_port = config.grpc_port or next(spare)
        self.http_port = config.http_port or next(spare)
        self.metrics_port = config.metrics_port or next(spare)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.log_file: Path | None = None
        self._log_start = 0

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the KServe v2 gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics endpoint."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        install = find_triton()
        if self.config.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="preftrack-triton-")
            work = Path(self._tmp.name)
        else:
            work = self.config.work_dir
            work.mkdir(parents=True, exist_ok=True)
        backend = work / "backends" / "python"
        if backend.exists():
            shutil.rmtree(backend)
        shutil.copytree(install.python_backend_dir, backend, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(install.stub, backend / "triton_python_backend_stub")
        (backend / "triton_python_backend_stub").chmod(0o755)
        self.log_file = self.config.log_file or work / "tritonserver.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        args = [
            str(install.binary),
            f"--model-repository={self.config.repository.resolve()}",
            "--model-control-mode=explicit",
            f"--backend-directory={backend.parent}",
            f"--grpc-address={self.config.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.config.host}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.config.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=15",
            "--log-verbose=0",
        ]
        if not _has_gpu():
            # A CPU-only host: no pinned-memory pool (it needs a CUDA driver) and no GPU metrics (NVML, DCGM),
            # instead of a page of CUDA / NVML / DCGM errors at every start that read as if something broke.
            args += ["--pinned-memory-pool-byte-size=0", "--allow-gpu-metrics=false"]
        if self.config.model_config_name:
            args.append(f"--model-config-name={self.config.model_config_name}")
        args += [f"--load-model={name}" for name in self.config.models]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.library_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
        # The stub imports the model's packages through the first python3 on PATH: make it ours.
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return args, env

    def start(self) -> TritonServer:
        """Start Triton and wait until it and the configured models are ready."""
        args, env = self._prepare()
        assert self.log_file is not None
        # The log is appended across runs: a failed start reports only what this run wrote.
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        _LOGGER.info("starting tritonserver (grpc %s), log at %s", self.grpc_url, self.log_file)
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_file is None or not self.log_file.exists():
            return "(no log)"
        with open(self.log_file, "rb") as log:
            log.seek(self._log_start)
            text = log.read().decode("utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(nothing logged by this run)"

    def _wait_ready(self) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + self.config.startup_timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while True:
                assert self._process is not None
                code = self._process.poll()
                if code is not None:
                    raise TritonStartError(
                        f"tritonserver exited with code {code} before it was ready; log {self.log_file}:\n"
                        + self._log_tail()
                    )
                try:
                    if client.is_server_ready() and all(client.is_model_ready(m) for m in self.config.models):
                        return
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise TritonStartError(
                        f"tritonserver not ready after {self.config.startup_timeout_s:.0f} s; log {self.log_file}:\n"
                        + self._log_tail()
                    )
                time.sleep(0.2)
        finally:
            client.close()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask Triton to stop (SIGTERM), wait for it, and kill it if it does not stop in time."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _LOGGER.warning("tritonserver did not stop in %.0f s; killing it", timeout_s)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Stubs are Triton's children in the same session; make sure none outlives the server.
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
