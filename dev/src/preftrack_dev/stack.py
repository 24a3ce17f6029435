"""``preftrack-dev up``: the whole local stack — a first model if none exists, Triton, the gateway."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from preftrack_dev.process import GatewayProcess, start_trainer_process, stop_trainer_process
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway import deployment
from preftrack_trainer import export, pipeline

_LOGGER = logging.getLogger(__name__)


def default_key_file() -> Path:
    """Where the local stack keeps its pseudonym key: the user's config directory, away from the database."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "preftrack" / "pseudonym.key"


def _pseudonym_key_file(path: Path, state_dir: Path) -> Path:
    """The key file of the local stack, created once (mode 0600) and reused across restarts. A key left in the
    state directory by an older version is still used (its store's pseudonyms depend on it), with a warning."""
    legacy = state_dir / "pseudonym.key"
    if legacy.exists():
        _LOGGER.warning(
            "the pseudonym key sits beside the database it protects (%s): move it to %s (a copy of both "
            "re-identifies users)",
            legacy,
            path,
        )
        return legacy
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
    return path


@dataclasses.dataclass
class Child:
    """One supervised process: how to (re)start it, whether it is alive, how to clean up after it."""

    name: str
    start: Callable[[], object]
    alive: Callable[[], bool]
    cleanup: Callable[[], None] = lambda: None
    backoff_s: float = 1.0
    next_try: float = 0.0
    restarts: int = 0
    up_since: float = dataclasses.field(default_factory=time.monotonic)
    down_since: float | None = None  # when the supervisor found it dead (None: running, or restarted since)


class Supervisor:
    """Restarts a child that died, with exponential backoff (1 s doubling to 60 s, back to 1 s after a minute up):
    a child that dies within a minute of its start, or whose start fails, is restarted after the backoff, so a
    crash loop costs one start per backoff, not one per check.

    A dead child is said out loud: the log names it, how often it was restarted and when the next try is."""

    def __init__(self, children: list[Child], *, max_backoff_s: float = 60.0) -> None:
        self.children = children
        self.max_backoff_s = max_backoff_s

    def check(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive():
                if now - child.up_since > 60.0:
                    child.backoff_s = 1.0
                continue
            if child.down_since is None:
                child.down_since = now
                if now - child.up_since < 60.0:  # died soon after its start: a crash loop, back off
                    child.next_try = now + child.backoff_s
                    print(f"{child.name} died; restarting it in {child.backoff_s:.0f} s", flush=True)
                    child.backoff_s = min(child.backoff_s * 2, self.max_backoff_s)
            if now < child.next_try:
                continue
            child.down_since = None
            child.restarts += 1
            _LOGGER.warning("%s is not running; restarting it (restart %d)", child.name, child.restarts)
            print(f"{child.name} died; restarting it (restart {child.restarts})", flush=True)
            try:
                child.cleanup()
                child.start()
                child.up_since = time.monotonic()
                print(f"{child.name} is back", flush=True)
            except Exception as exc:  # keep supervising whatever the child does
                child.down_since = now  # still down: this failure's backoff is the only one
                child.next_try = now + child.backoff_s
                _LOGGER.error("restarting %s failed (%s); next try in %.0f s", child.name, exc, child.backoff_s)
                child.backoff_s = min(child.backoff_s * 2, self.max_backoff_s)


def up(
    *,
    repository: Path,
    dataset: str,
    state_dir: Path = Path("var"),
    gateway_port: int = 50051,
    triton_grpc_port: int = 8001,
    metrics_port: int = 9100,
    key_file: Path | None = None,
) -> int:
    """Run the stack (Triton, the gateway, the continual trainer) until Ctrl-C or SIGTERM.

    The gateway is given the dataset's feature and label settings and writes them to an empty event store; the
    continual trainer takes them from there. A store that holds another dataset's settings makes the gateway
    refuse to start (use another ``state_dir``).
    """
    settings = deployment.DeploymentSettings(*pipeline.dataset_specs(dataset))
    if not export.existing_versions(repository / "preftrack"):
        _LOGGER.info("no model version in %s yet: training a first one on %s", repository, dataset)
        pipeline.run(pipeline.TrainerConfig(dataset=dataset, repository=repository))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    triton = TritonServer(
        TritonConfig(
            repository=repository,
            grpc_port=triton_grpc_port,
            http_port=triton_grpc_port - 1,
            metrics_port=triton_grpc_port + 1,
            log_file=state_dir / "tritonserver.log",
        )
    )
    triton.start()
    store_url = f"sqlite:///{(state_dir / 'preftrack.db').resolve()}"
    trainer: subprocess.Popen[bytes] | None = None
    gateway = GatewayProcess(
        {
            "PREFTRACK_TRITON_URL": triton.grpc_url,
            "PREFTRACK_STORE_URL": store_url,
            "PREFTRACK_PSEUDONYM_KEY_FILE": str(_pseudonym_key_file(key_file or default_key_file(), state_dir)),
            "PREFTRACK_METRICS_PORT": str(metrics_port),
            **deployment.environment(settings),
        },
        state_dir / "gateway.log",
        port=gateway_port,
        repository=repository,
    )
    try:
        gateway.start()
        # --ratings only matters if the store were empty: the gateway has written the settings already.
        options = ["--ratings"] if settings.labels.example_types == ("rating",) else []
        trainer = start_trainer_process(store_url, repository, state_dir / "trainer.log", options)
        print(
            f"\npreftrack is up:\n"
            f"  gateway (SDK, gRPC)  {gateway.target}\n"
            f"  gateway metrics      http://127.0.0.1:{metrics_port}/metrics\n"
            f"  Triton (KServe gRPC) {triton.grpc_url}, metrics {triton.metrics_url}\n"
            f"  continual trainer    every 2000 new examples or 60 s; each version goes out as a 10% canary,\n"
            f"                       decided on feedback (preftrack-admin status)\n"
            f"  logs                 {state_dir}/gateway.log, trainer.log, tritonserver.log\n"
            f"A process that dies is restarted. Ctrl-C stops everything.",
            flush=True,
        )

        def start_trainer() -> None:
            nonlocal trainer
            trainer = start_trainer_process(store_url, repository, state_dir / "trainer.log", options)

        supervisor = Supervisor(
            [
                Child("Triton", start=triton.start, alive=lambda: triton.running, cleanup=triton.stop),
                # Without Triton the gateway still takes feedback (health says scoring is NOT_SERVING).
                Child(
                    "the gateway",
                    start=lambda: gateway.start(require_serving=False),
                    alive=gateway.running,
                    cleanup=gateway.kill,
                ),
                Child(
                    "the continual trainer",
                    start=start_trainer,
                    alive=lambda: trainer is not None and trainer.poll() is None,
                ),
            ]
        )
        while not stop.is_set():
            supervisor.check()
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the trainer, the gateway and Triton...", flush=True)
        stop_trainer_process(trainer, timeout_s=60)
        gateway.stop()
        triton.stop()
    return 0
