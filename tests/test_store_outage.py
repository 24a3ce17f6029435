"""The database goes away and comes back: a PostgreSQL crash (``pg_ctlcluster stop -m immediate``) under ingest,
and a full disk under SQLite. Nothing acknowledged is lost, health says NOT_SERVING while nothing can be stored,
and ingestion (and the continual trainer) come back by themselves, with no restart.

Stopping the cluster needs root and Debian's ``pg_ctlcluster`` (what ``make test`` and CI have); mounting a small
tmpfs needs root. Without them the tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import preftrack
from preftrack_dev.process import GatewayProcess
from preftrack_dev.triton_launcher import TritonConfig, TritonServer

from .conftest import gateway_env
from .test_lifelong import _send_shop

pytestmark = pytest.mark.e2e

_FEEDBACK = "preftrack.v1.FeedbackService"
_SCORING = "preftrack.v1.ScoringService"


def _cluster() -> tuple[str, str]:
    """The local PostgreSQL cluster the tests use (version, name), or skip saying why it cannot be restarted."""
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster (make test as root, as CI runs it)")
    url = os.environ.get("PREFTRACK_TEST_POSTGRES_URL", "")
    if url and not any(host in url for host in ("@127.0.0.1:5432/", "@localhost:5432/")):
        pytest.skip(f"the test PostgreSQL ({url.split('@')[-1]}) is not the local cluster this test can restart")
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout.split("\n")
    for line in listed:
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "5432":
            return fields[0], fields[1]
    pytest.skip("no local PostgreSQL cluster on port 5432")


def _pg(action: str, cluster: tuple[str, str]) -> None:
    extra = ["-m", "immediate"] if action == "stop" else []
    subprocess.run(["pg_ctlcluster", *cluster, action, *extra], check=True, capture_output=True, timeout=60)


class _Producers:
    """Clients sending batches of feedback, each batch retried (same event_ids) until it is acknowledged."""

    def __init__(self, target: str, workers: int) -> None:
        self.acknowledged: list[str] = []
        self.ack_times: list[float] = []
        self.refusals: list[str] = []
        self._target = target
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,)) for w in range(workers)]
        self._lock = threading.Lock()

    def __enter__(self) -> _Producers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, worker: int) -> None:
        with preftrack.Client(self._target, timeout_s=2.0, max_attempts=2) as client:
            k = 0
            while not self._stop.is_set():
                kind = "purchase" if k % 5 == 4 else "click"  # not an example type: no example waits on its window
                batch = [
                    preftrack.FeedbackEvent(user_id=f"w{worker}", item_id=f"i-{(k + j) % 9}", event_type=kind)
                    for j in range(20)
                ]
                k += 1
                give_up = time.monotonic() + 30  # after the stop: a batch refused so far is not acknowledged
                while time.monotonic() < give_up:
                    try:
                        client.send(batch)
                    except preftrack.PreftrackError as exc:
                        with self._lock:
                            self.refusals.append(f"{type(exc).__name__}: {exc}")
                        time.sleep(0.05)
                        continue
                    with self._lock:
                        self.acknowledged.extend(e.event_id for e in batch)
                        self.ack_times.append(time.monotonic())
                    break

    def acks_after(self, t: float) -> list[float]:
        with self._lock:
            return [a for a in self.ack_times if a > t]


def _status(health: health_pb2_grpc.HealthStub, service: str) -> int:
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0).status


def _wait_status(health: health_pb2_grpc.HealthStub, service: str, status: int, timeout_s: float) -> float:
    """Seconds until ``service`` reports ``status``; fails after ``timeout_s``."""
    start = time.monotonic()
    while _status(health, service) != status:
        assert time.monotonic() - start < timeout_s, f"{service} not {status} within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - start


def _stored_ids(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT event_id, count(*) FROM events GROUP BY event_id").fetchall())


def test_a_postgres_crash_loses_nothing_and_ingestion_and_training_resume(
    scratch_repository: Path, fresh_postgres_url: str, tmp_path: Path
) -> None:
    cluster = _cluster()
    url = fresh_postgres_url
    with TritonServer(TritonConfig(repository=scratch_repository, work_dir=tmp_path / "triton")) as triton:
        env = gateway_env(triton.grpc_url, url, repository=scratch_repository, PREFTRACK_ROLLOUT_MODE="direct")
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        trainer_log = open(tmp_path / "trainer.log", "wb")  # noqa: SIM115 (closed in finally)
        trainer = subprocess.Popen(
            [sys.executable, "-m", "preftrack_trainer", "continual", "--store-url", url, "--repository",
             str(scratch_repository), "--trigger-examples", "100", "--trigger-seconds", "1", "--auc-margin", "0.5",
             "--log-loss-margin", "1.0"],
            stdout=trainer_log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while "continual trainer running" not in (tmp_path / "trainer.log").read_text(errors="replace"):
                assert trainer.poll() is None and time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()
                time.sleep(0.2)
            with preftrack.Client(gateway.target, timeout_s=5) as client:
                health = health_pb2_grpc.HealthStub(client._channel)
                assert _status(health, _FEEDBACK) == health_pb2.HealthCheckResponse.SERVING
                with _Producers(gateway.target, workers=4) as producers:
                    time.sleep(1.5)
                    _pg("stop", cluster)
                    stopped = time.monotonic()
                    log_before = (tmp_path / "gateway.log").read_text(errors="replace").count("\n")
                    down_after = _wait_status(health, _FEEDBACK, health_pb2.HealthCheckResponse.NOT_SERVING, 2.0)
                    # Scoring works from the features in memory while the database is away.
                    assert _status(health, _SCORING) == health_pb2.HealthCheckResponse.SERVING
                    assert client.score("w0", ["i-1"]).model_version == "1"
                    time.sleep(max(0.0, stopped + 4.0 - time.monotonic()))
                    log_down = (tmp_path / "gateway.log").read_text(errors="replace").count("\n") - log_before
                    _pg("start", cluster)
                    started = time.monotonic()
                    deadline = started + 10
                    while not producers.acks_after(started) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert producers.acks_after(started), "no acknowledgement within 10 s of the database's start"
                    first_ack_s = producers.acks_after(started)[0] - started
                    up_after = _wait_status(health, _FEEDBACK, health_pb2.HealthCheckResponse.SERVING, 5.0)
                    time.sleep(1.0)
                acked = list(producers.acknowledged)
                refused = list(producers.refusals)
                print(
                    f"NOT_SERVING after {down_after:.2f} s; first ack {first_ack_s:.2f} s after the start, SERVING "
                    f"after {up_after:.2f} s; {len(acked)} acknowledged, {len(refused)} refusals; {log_down} log "
                    "lines while down"
                )
                assert first_ack_s < 5.0, f"first acknowledgement {first_ack_s:.1f} s after the database came back"
                # Refused while the database was away: UNAVAILABLE with a retry hint (or the client's own deadline,
                # passed while it waited out that hint); never anything else.
                assert refused, "no call was refused while the database was down"
                assert all(r.startswith(("UnavailableError", "DeadlineExceededError")) for r in refused), refused[:3]
                assert any("retry in" in r for r in refused), refused[:3]
                assert log_down < 40, f"{log_down} log lines in 4 s while the database was down"
                stored = _stored_ids(url)
                missing = [e for e in acked if e not in stored]
                assert not missing, f"{len(missing)} acknowledged events lost"
                assert all(stored[e] == 1 for e in acked)
                # The trainer rode it out: the shop's events arrive, a round ships version 2, the gateway serves it.
                _send_shop(gateway.target)
                deadline = time.monotonic() + 150
                version = "1"
                while version != "2" and time.monotonic() < deadline:
                    assert trainer.poll() is None, (tmp_path / "trainer.log").read_text()[-3000:]
                    time.sleep(0.5)
                    version = client.score("w0", ["i-1"]).model_version
                trainer_text = (tmp_path / "trainer.log").read_text(errors="replace")
                assert version == "2", trainer_text[-3000:]
                rode_out = "the event store failed" in trainer_text and "answers again" in trainer_text
                assert rode_out, trainer_text[-3000:]
                assert "Traceback" not in trainer_text, trainer_text[-3000:]
        finally:
            if subprocess.run(["pg_ctlcluster", *cluster, "status"], capture_output=True).returncode:
                _pg("start", cluster)  # the test failed while the database was down
            trainer.terminate()
            trainer.wait(timeout=60)
            trainer_log.close()
            assert gateway.stop() == 0, gateway.log_tail()


def _fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_refuses_feedback_clearly_and_recovers_when_space_returns(triton, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        db = disk / "events.db"
        gateway = GatewayProcess(gateway_env(triton.grpc_url, f"sqlite:///{db}"), tmp_path / "gw.log").start()
        try:
            # The SDK retries once after the refusal's hint (5 s for a full disk), then reports it.
            with preftrack.Client(gateway.target, timeout_s=20, max_attempts=2) as client:
                health = health_pb2_grpc.HealthStub(client._channel)
                assert client.send(preftrack.FeedbackEvent(user_id="u", item_id="i-1", event_type="view")).accepted
                filler = _fill(disk)
                refused: list[preftrack.FeedbackEvent] = []
                error = None
                for k in range(200):  # the WAL reuses its space for a while: write until it must grow
                    batch = [
                        preftrack.FeedbackEvent(user_id=f"u{k}-{j}-" + "x" * 100, item_id="i-1", event_type="view")
                        for j in range(500)
                    ]
                    try:
                        client.send(batch)
                    except preftrack.ResourceExhaustedError as exc:
                        refused, error = batch, exc
                        break
                assert error is not None, "the full disk never refused a write"
                assert "is full" in str(error) and "free space" in str(error), str(error)
                assert _status(health, _FEEDBACK) == health_pb2.HealthCheckResponse.NOT_SERVING
                filler.unlink()
                _wait_status(health, _FEEDBACK, health_pb2.HealthCheckResponse.SERVING, 5.0)
                summary = client.send(refused)  # the refused batch was not stored: all of it is new now
                assert summary.accepted == len(refused) and summary.duplicates == 0
        finally:
            assert gateway.stop() == 0, gateway.log_tail()
        stored = sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0]
        assert stored >= len(refused) + 1
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
