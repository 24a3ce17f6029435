"""``preftrack-trainer up``: the whole local stack — a first model if none exists, Triton, the gateway."""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import threading
from pathlib import Path

from preftrack_gateway import deployment
from preftrack_gateway.process import GatewayProcess
from preftrack_trainer import continual, export, pipeline
from preftrack_trainer.triton_launcher import TritonConfig, TritonServer

_LOGGER = logging.getLogger(__name__)


def _pseudonym_key(path: Path) -> str:
    """A local secret for pseudonymising user ids, created once (mode 0600) and reused across restarts."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def up(
    *,
    repository: Path,
    dataset: str,
    state_dir: Path = Path("var"),
    gateway_port: int = 50051,
    triton_grpc_port: int = 8001,
    metrics_port: int = 9100,
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
            "PREFTRACK_PSEUDONYM_KEY": _pseudonym_key(state_dir / "pseudonym.key"),
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
        trainer = continual.start_process(store_url, repository, state_dir / "trainer.log", options)
        print(
            f"\npreftrack is up:\n"
            f"  gateway (SDK, gRPC)  {gateway.target}\n"
            f"  gateway metrics      http://127.0.0.1:{metrics_port}/metrics\n"
            f"  Triton (KServe gRPC) {triton.grpc_url}, metrics {triton.metrics_url}\n"
            f"  continual trainer    every 2000 new examples or 60 s; ships through the registry\n"
            f"  logs                 {state_dir}/gateway.log, trainer.log, tritonserver.log\n"
            f"Ctrl-C stops everything.",
            flush=True,
        )
        while not stop.is_set() and triton.running:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping the trainer, the gateway and Triton...", flush=True)
        continual.stop_process(trainer, timeout_s=60)
        gateway.stop()
        triton.stop()
    return 0
