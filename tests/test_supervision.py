"""`preftrack-dev up` supervises its children: kill -9 Triton under traffic and feedback keeps being taken,
scoring is UNAVAILABLE while it is down and comes back by itself; kill -9 the gateway and it is restarted."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

import preftrack
from preftrack_dev.process import free_port

from .conftest import Trained, gateway_env, registered_versions

pytestmark = pytest.mark.e2e


def _pids(*needles: str) -> list[int]:
    """Processes whose command line holds every needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in cmdline for n in needles):
            found.append(int(entry.name))
    return found


def _wait_for_text(path: Path, text: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        assert process.poll() is None, path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in {timeout_s:.0f} s:\n" + path.read_text()[-3000:]
        time.sleep(0.3)


def test_up_survives_a_triton_crash_and_a_gateway_crash(trained: Trained, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(trained.repository, repository)
    port, triton_port, metrics_port = free_port(), free_port(), free_port()
    out = tmp_path / "up.out"
    with open(out, "wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "preftrack_dev", "up", "--repository", str(repository),
             "--state-dir", str(tmp_path / "var"), "--port", str(port), "--triton-port", str(triton_port),
             "--metrics-port", str(metrics_port)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    target = f"127.0.0.1:{port}"
    try:
        _wait_for_text(out, "preftrack is up", 240, up)
        with preftrack.Client(target, timeout_s=3, max_attempts=2) as client:
            assert client.score("u-1", ["i-1"]).model_version == "1"
            tritons = _pids("tritonserver", f"--grpc-port={triton_port}")
            assert tritons, "Triton's process not found"
            os.kill(tritons[0], signal.SIGKILL)
            killed = time.monotonic()
            unavailable = 0
            restored_after = None
            sent = 0
            while time.monotonic() - killed < 90:
                # Feedback is taken throughout: it needs the store, not Triton.
                summary = client.send(preftrack.FeedbackEvent(user_id="u-1", item_id="i-1", event_type="view"))
                sent += summary.accepted
                try:
                    client.score("u-1", ["i-1"])
                    if unavailable:
                        restored_after = time.monotonic() - killed
                        break
                except preftrack.UnavailableError:
                    unavailable += 1
                time.sleep(0.2)
            assert unavailable > 0, "scoring never noticed Triton was gone"
            assert restored_after is not None, "scoring did not come back within 90 s:\n" + out.read_text()[-2000:]
            print(f"\nscoring back {restored_after:.1f} s after kill -9 of Triton; {sent} events taken meanwhile")
            assert restored_after < 60
            assert "Triton died; restarting it" in out.read_text()

        gateways = _pids("preftrack_gateway")
        gateways = [pid for pid in gateways if f"{port}" in Path(f"/proc/{pid}/environ").read_bytes().decode(
            errors="replace")]  # fmt: skip
        assert gateways, "the gateway's process not found"
        os.kill(gateways[0], signal.SIGKILL)
        _wait_for_text(out, "the gateway is back", 60, up)
        with preftrack.Client(target, timeout_s=5) as client:
            deadline = time.monotonic() + 30
            while not client.healthy():
                assert time.monotonic() < deadline, "the restarted gateway never got ready"
                time.sleep(0.3)
            assert client.score("u-1", ["i-1"]).model_version == "1"
            # Nothing acknowledged before the crash was lost: the restarted gateway rebuilt it from the store.
            assert client.send(preftrack.FeedbackEvent(user_id="u-1", item_id="i-1", event_type="view")).accepted
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            assert up.wait(timeout=90) == 0, out.read_text()[-3000:]
        finally:
            if up.poll() is None:
                up.kill()


def test_a_child_that_keeps_dying_is_restarted_after_a_growing_backoff() -> None:
    """A crash loop (here a process that exits at once) costs one start per backoff (1, 2, 4 s ...), not one per
    supervision check, so a child that cannot start does not spin the machine."""
    from preftrack_dev.stack import Child, Supervisor

    started: list[float] = []
    process: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        started.append(time.monotonic())
        process.append(subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"]))

    start()
    child = Child("crasher", start=start, alive=lambda: process[-1].poll() is None)
    supervisor = Supervisor([child])
    deadline = time.monotonic() + 6.5
    while time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.05)
    for p in process:
        p.wait()
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    # Starts at about 0, 1, 3 (and 7): a check every 50 ms without the backoff would have made ~130.
    assert 3 <= len(started) <= 4, gaps
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps
    assert child.backoff_s >= 4.0 and child.restarts == len(started) - 1


def _registered_serving(store_url: str, version: int) -> None:
    """The registry as a stack's first start leaves it: ``version`` serving, found ready in Triton."""
    from preftrack_gateway.registry import Registry
    from preftrack_gateway.store import VersionRecord, open_store

    async def register() -> None:
        store = await open_store(store_url)
        try:
            now, note = time.time(), "first version: found ready in Triton"
            record = VersionRecord(version=version, state="serving", note=note, created_at=now, updated_at=now)
            assert await Registry(store).register(record, actor="gateway", reason=note)
        finally:
            await store.close()

    asyncio.run(register())


def test_a_restarted_stack_serves_again_though_triton_starts_with_nothing_loaded(
    scratch_repository: Path, tmp_path: Path
) -> None:
    """A stack restarted as the compose file runs it: Triton starts with the model not loaded, the registry
    says version 1 serves (as a stack's first start registers it: found ready in Triton). The gateway has Triton
    load it (its config is only readable once loaded) and scores,
    and a version exported afterwards still goes out. Restarted again with a newer, broken version in the
    repository (registered failed), it loads exactly the serving one (the repository's own policy, its newest
    two, would fail). Restarted once more with the serving version broken, the gateway says scoring is
    NOT_SERVING (feedback still SERVING) instead of claiming a version it cannot score with, and an operator's
    roll back puts the version before it back. When that one breaks too, a pin puts a newer one in its place."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from preftrack.admin import AdminClient
    from preftrack.errors import InvalidRequestError
    from preftrack_dev.process import GatewayProcess
    from preftrack_dev.shoppers import register_exported
    from preftrack_dev.triton_launcher import TritonConfig, TritonServer

    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    _registered_serving(store_url, 1)
    empty = TritonConfig(repository=scratch_repository, models=(), work_dir=tmp_path / "second")
    with TritonServer(empty) as triton:
        env = gateway_env(triton.grpc_url, store_url, repository=scratch_repository, PREFTRACK_ROLLOUT_MODE="direct")
        # Starting loads the model in Triton (TensorFlow in its python backend): slow on a busy 2-core machine.
        second = GatewayProcess(env, tmp_path / "second.log").start(timeout_s=120)
        with second as gateway, preftrack.Client(gateway.target) as client:
            assert client.score("u-1", ["i-1"]).model_version == "1"
            shutil.copytree(scratch_repository / "preftrack" / "1", scratch_repository / "preftrack" / "2")
            assert register_exported(store_url, 2, parent=1, actor="test")
            deadline = time.monotonic() + 60
            while client.score("u-1", ["i-1"]).model_version != "2":
                assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-3000:]
                time.sleep(0.3)
    shutil.copytree(scratch_repository / "preftrack" / "1", scratch_repository / "preftrack" / "3")
    shutil.rmtree(scratch_repository / "preftrack" / "3" / "model.savedmodel")
    assert register_exported(store_url, 3, parent=2, actor="test")
    with TritonServer(dataclasses.replace(empty, work_dir=tmp_path / "third")) as triton:
        env = gateway_env(triton.grpc_url, store_url, repository=scratch_repository, PREFTRACK_ROLLOUT_MODE="direct")
        third = GatewayProcess(env, tmp_path / "third.log").start(timeout_s=120)
        with third as gateway, preftrack.Client(gateway.target) as client:
            assert client.score("u-1", ["i-1"]).model_version == "2"
            deadline = time.monotonic() + 60
            # Version 3 is tried, refused by Triton, and version 2 still serves.
            while registered_versions(store_url)[3].state != "failed":
                assert time.monotonic() < deadline, (tmp_path / "third.log").read_text()[-3000:]
                time.sleep(0.3)
            assert client.score("u-1", ["i-1"]).model_version == "2"
    shutil.rmtree(scratch_repository / "preftrack" / "2" / "model.savedmodel")
    with TritonServer(dataclasses.replace(empty, work_dir=tmp_path / "fourth")) as triton:
        env = gateway_env(triton.grpc_url, store_url, repository=scratch_repository)
        with GatewayProcess(env, tmp_path / "fourth.log").start(require_serving=False) as gateway:
            time.sleep(3)  # a few health probes, each trying to load version 2
            with grpc.insecure_channel(gateway.target) as channel:
                health = health_pb2_grpc.HealthStub(channel)

                def status(service: str) -> int:
                    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

                assert status("preftrack.v1.ScoringService") == health_pb2.HealthCheckResponse.NOT_SERVING
                assert status("preftrack.v1.FeedbackService") == health_pb2.HealthCheckResponse.SERVING
                # The operator moves off it: a rollout is refused with why (and leaves version 1 as it was, not
                # failed for the serving version's fault); a roll back loads version 1 alone and serves it.
                # (A load takes seconds of TensorFlow in Triton on a busy 2-core machine: a longer deadline.)
                with AdminClient(gateway.target, timeout_s=120) as admin:
                    with pytest.raises(InvalidRequestError, match="serving version 2, which does not load"):
                        admin.start_rollout(1)
                    assert registered_versions(store_url)[1].state == "retired"
                    assert admin.roll_back("version 2's files are gone") == 1
                assert status("preftrack.v1.ScoringService") == health_pb2.HealthCheckResponse.SERVING
                with preftrack.Client(gateway.target) as client:
                    assert client.score("u-1", ["i-1"]).model_version == "1"
    # A fifth life: version 1 now serves and its files are gone too; version 4 (its copy) was exported meanwhile.
    # Nothing ships while the serving version cannot load; a pin loads version 4 alone and serves it.
    shutil.copytree(scratch_repository / "preftrack" / "1", scratch_repository / "preftrack" / "4")
    assert register_exported(store_url, 4, parent=1, actor="test")
    shutil.rmtree(scratch_repository / "preftrack" / "1" / "model.savedmodel")
    with TritonServer(dataclasses.replace(empty, work_dir=tmp_path / "fifth")) as triton:
        env = gateway_env(triton.grpc_url, store_url, repository=scratch_repository)
        with (
            GatewayProcess(env, tmp_path / "fifth.log").start(require_serving=False) as gateway,
            AdminClient(gateway.target, timeout_s=120) as admin,
        ):
            assert registered_versions(store_url)[4].state == "exported"
            admin.pin(4)
            with preftrack.Client(gateway.target) as client:
                assert client.score("u-1", ["i-1"]).model_version == "4"
            assert {v: r.state for v, r in registered_versions(store_url).items() if v in (1, 4)} == {
                1: "retired",
                4: "serving",
            }
