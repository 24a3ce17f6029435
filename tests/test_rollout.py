"""Versioned rollout with real parts: canary routing across replicas, automatic decisions on users' feedback,
the admin API's roles and CLI. (The registry's state machine is tested in tests/test_registry.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from pathlib import Path

import pytest

import preftrack
from preftrack.admin import AdminClient
from preftrack.admin.cli import main as admin_cli
from preftrack.errors import PermissionDeniedError, UnauthenticatedError
from preftrack_dev.process import GatewayProcess
from preftrack_dev.shoppers import Shoppers, register_exported
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway.features import FeatureSpec
from preftrack_gateway.store import open_store
from preftrack_trainer import export, metrics, model
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import LabelSpec

from .conftest import Trained, gateway_env, registered_versions

pytestmark = pytest.mark.e2e

ADMIN_KEY = "admin-key-for-tests-0123"
CLIENT_KEY = "client-key-for-tests-0123"


def _register(store_url: str, version: int, *, parent: int = 1, metrics: dict[str, object] | None = None) -> None:
    assert register_exported(store_url, version, parent=parent, actor="test", metrics=metrics)


def _states(store_url: str) -> dict[int, str]:
    return {version: record.state for version, record in registered_versions(store_url).items()}


def _shadow_impressions(store_url: str, version: int) -> int:
    async def run() -> int:
        store = await open_store(store_url)
        try:
            rows = await store.impressions_after(0.0)
            return sum(i.arm == "shadow" and i.model_version == str(version) for i in rows)
        finally:
            await store.close()

    return asyncio.run(run())


def _wait_for(predicate, timeout_s: float, what: str, *, step=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if step is not None:
            step()
        else:
            time.sleep(0.2)


def _copy_version(source: Path, repository: Path, version: int) -> None:
    shutil.copytree(source, repository / "preftrack" / str(version))


def test_canary_routes_a_sticky_exact_share_identically_on_two_replicas(
    scratch_repository: Path, tmp_path: Path, fresh_postgres_url: str
) -> None:
    repository = scratch_repository
    with TritonServer(TritonConfig(repository=repository, work_dir=tmp_path / "triton")) as triton:
        env = gateway_env(
            triton.grpc_url,
            fresh_postgres_url,
            repository=repository,
            PREFTRACK_ROLLOUT_FRACTION="0.1",
            PREFTRACK_ROLLOUT_AUTO="false",
        )
        with (
            GatewayProcess(env, tmp_path / "a.log") as first,
            GatewayProcess(env, tmp_path / "b.log") as second,
        ):
            _copy_version(repository / "preftrack" / "1", repository, 2)
            _register(fresh_postgres_url, 2)
            _wait_for(lambda: _states(fresh_postgres_url).get(2) == "canary", 60, "version 2 in canary")
            users = [f"user-{i}" for i in range(100_000)]
            with AdminClient(first.target) as a, AdminClient(second.target) as b:
                # Replicas converge within one refresh of the shared state (PREFTRACK_HEALTH_INTERVAL_S).
                _wait_for(
                    lambda: a.rollout().candidate_version == b.rollout().candidate_version == 2,
                    10,
                    "both replicas to see the canary",
                )
                routes_a, routes_b = a.routes(users), b.routes(users)
                assert routes_a == routes_b  # one salt, one assignment, whichever replica answers
                share = sum(arm == "canary" for _, arm in routes_a) / len(users)
                assert 0.095 <= share <= 0.105, share
                assert a.routes(users[:5000]) == routes_a[:5000]  # sticky
                assert {v for v, arm in routes_a if arm == "canary"} == {2}
                assert {v for v, arm in routes_a if arm == "stable"} == {1}
                # Answers name the version that served them, and follow the route.
                with preftrack.Client(second.target) as client:
                    for user, (version, _) in zip(users[:40], routes_a[:40], strict=True):
                        assert client.score(user, ["i-1"]).model_version == str(version)
                a.set_fraction(0.5)
                _wait_for(
                    lambda: abs(sum(arm == "canary" for _, arm in b.routes(users[:20_000])) / 20_000 - 0.5) < 0.02,
                    10,
                    "the new fraction on the other replica",
                )


# --- automatic decisions on the synthetic shop --------------------------------------------------------------

SHOP = synthetic.SyntheticConfig(n_users=200, n_items=120, n_categories=6, days=5, seed=31, dirty_fraction=0.0)


def _inverted_label_model(trained: Trained) -> object:
    """A deliberately worse model: the same architecture trained on inverted labels, so it ranks first what users
    pass over. (Shuffled labels make a model whose lists are as good as chance makes them: how much worse that is
    than the real model depends on its random weights, and with one architecture it was worse by 0.04 only.)"""
    train = dataclasses.replace(trained.train, label=1.0 - trained.train.label)
    cfg = model.ModelConfig(epochs=1, seed=3)
    mlp = model.build_model(cfg, *model.fit_normalisation(train.features))
    model.train(mlp, train, cfg)
    return mlp


def trained_auc(trained: Trained, mlp: object) -> dict[str, float]:
    """A model's evaluation on the trained shop's test split, as the trainer records a holdout's."""
    return metrics.evaluate(trained.test.label, model.predict(mlp, trained.test))


def test_a_worse_candidate_is_rolled_back_and_a_better_one_promoted_on_live_feedback(
    trained: Trained, tmp_path: Path
) -> None:
    repository = tmp_path / "repo"
    worse = _inverted_label_model(trained)
    metadata = {"parent": None, **export.schema_metadata(FeatureSpec(), LabelSpec())}
    assert export.export_version(worse, repository, metadata) == 1  # the stable version starts out poor
    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    with TritonServer(TritonConfig(repository=repository, work_dir=tmp_path / "triton")) as triton:
        env = gateway_env(
            triton.grpc_url,
            store_url,
            repository=repository,
            PREFTRACK_ROLLOUT_FRACTION="0.4",
            PREFTRACK_ROLLOUT_WINDOW_S="1",
            PREFTRACK_ROLLOUT_MIN_OUTCOMES="150",
            PREFTRACK_ROLLOUT_CHECK_S="0.5",
            PREFTRACK_ONLINE_LEARNING="false",  # the versions alone are compared
        )
        with GatewayProcess(env, tmp_path / "gw.log") as gateway:
            shoppers = Shoppers(gateway.target, SHOP)
            shoppers.load_history()
            # A better candidate (trained on the real labels): promoted. Its holdout evaluation, as the trainer
            # records it, shows it plainly ahead of the serving version: its canary opens at 0.5, not 0.4.
            _copy_version(trained.repository / "preftrack" / "1", repository, 2)
            holdout = {"candidate": trained_auc(trained, trained.keras_model), "serving": trained_auc(trained, worse)}
            _register(store_url, 2, metrics=holdout)
            _wait_for(lambda: _states(store_url).get(2) == "serving", 240, "version 2 promoted", step=shoppers.visit)
            assert _states(store_url)[1] == "retired"
            promoted_after = shoppers.sent
            # A worse one (the inverted-label model again, as version 3): rolled back.
            _copy_version(repository / "preftrack" / "1", repository, 3)
            _register(store_url, 3, parent=2)
            _wait_for(
                lambda: _states(store_url).get(3) == "rolled_back", 240, "version 3 rolled back", step=shoppers.visit
            )
            assert _states(store_url)[2] == "serving"
            with preftrack.Client(gateway.target) as client:
                assert client.score("u-1", ["i-1"]).model_version == "2"
            with AdminClient(gateway.target) as admin:
                decisions = [e for e in admin.journal(limit=10_000) if e.kind == "transition" and e.actor != "admin"]
            promote = next(e for e in decisions if e.version == 2 and e.details["to"] == "serving")
            rollback = next(e for e in decisions if e.version == 3 and e.details["to"] == "rolled_back")
            opened = {e.version: e.details["fraction"] for e in decisions if e.details.get("to") == "canary"}
            assert opened == {2: 0.5, 3: 0.4}, opened  # the offline lead opens wider; no evidence, the policy's
            for entry, direction in ((promote, 1), (rollback, -1)):
                comparison = entry.details["comparison"]
                assert comparison["metric"] == "positive_rate"
                assert direction * comparison["difference"] > 0.05, comparison
                arms = entry.details["arms"]
                assert min(arms["stable"]["outcomes"], arms["canary"]["outcomes"]) >= 150
            print(f"\nfeedback events sent until promotion: {promoted_after}, until roll back: {shoppers.sent}")
            print("promote:", promote.details["comparison"], "\nroll back:", rollback.details["comparison"])


def test_admin_roles_and_the_cli(scratch_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repository = scratch_repository
    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    with TritonServer(TritonConfig(repository=repository, work_dir=tmp_path / "triton")) as triton:
        env = gateway_env(
            triton.grpc_url,
            store_url,
            repository=repository,
            PREFTRACK_API_KEYS=CLIENT_KEY,
            PREFTRACK_ADMIN_KEYS=ADMIN_KEY,
            PREFTRACK_ROLLOUT_AUTO="false",
        )
        with GatewayProcess(env, tmp_path / "gw.log") as gateway:
            with AdminClient(gateway.target, api_key=CLIENT_KEY) as admin, pytest.raises(PermissionDeniedError):
                admin.versions()
            with AdminClient(gateway.target) as admin, pytest.raises(UnauthenticatedError):
                admin.rollout()
            with AdminClient(gateway.target, api_key="wrong") as admin, pytest.raises(UnauthenticatedError):
                admin.promote()
            with preftrack.Client(gateway.target, api_key=ADMIN_KEY) as client:  # an admin key may score too
                assert client.score("u-1", ["i-1"]).model_version == "1"

            _copy_version(repository / "preftrack" / "1", repository, 2)
            _register(store_url, 2)
            _wait_for(lambda: _states(store_url).get(2) == "canary", 60, "version 2 in canary")

            def cli(*args: str) -> str:
                capsys.readouterr()
                code = admin_cli(["--target", gateway.target, *args])
                out = capsys.readouterr()
                assert code == 0, out.err
                return out.out

            import os

            os.environ["PREFTRACK_ADMIN_KEY"] = ADMIN_KEY
            try:
                assert "canary" in cli("versions")
                assert "candidate version: 2" in cli("status")
                cli("pause")
                cli("fraction", "0.3")
                assert "30.0% of users" in cli("status")
                assert "stable version: 2" in cli("promote", "--reason", "looks fine")
                assert "stable version: 1" in cli("rollback", "--reason", "changed my mind")
                states = _states(store_url)
                assert states[1] == "serving" and states[2] == "rolled_back"
                journal = cli("journal", "--version", "2")
                assert "canary → serving" in journal and "serving → rolled_back" in journal
                report = cli("report", "--version", "2", "--png", str(tmp_path / "r.png"))
                assert "rolled_back" in report
                assert (tmp_path / "r.png").stat().st_size > 1000
                with preftrack.Client(gateway.target, api_key=CLIENT_KEY) as client:
                    assert client.score("u-1", ["i-1"]).model_version == "1"
                # A forbidden move is refused with the reason, and nothing changes.
                assert admin_cli(["--target", gateway.target, "start", "2"]) == 1
                assert "rolled_back" in capsys.readouterr().err
                assert _states(store_url)[2] == "rolled_back"

                # Pinned, an exported version waits; shadowed by hand, it never answers but is scored and logged.
                cli("pin", "1")
                _copy_version(repository / "preftrack" / "1", repository, 3)
                _register(store_url, 3, parent=1)
                time.sleep(2)
                assert _states(store_url)[3] == "exported"
                assert "version 3: shadow" in cli("start", "3", "--shadow")
                with preftrack.Client(gateway.target, api_key=CLIENT_KEY) as client:
                    answers = {client.recommend(f"u-{i}", ["i-1", "i-2", "i-3"], k=2).model_version for i in range(60)}
                assert answers == {"1"}
                _wait_for(lambda: _shadow_impressions(store_url, 3) >= 5, 20, "shadow scores of version 3 logged")
                cli("rollback")
                assert _states(store_url)[3] == "rolled_back" and _states(store_url)[1] == "serving"
            finally:
                del os.environ["PREFTRACK_ADMIN_KEY"]


@pytest.mark.parametrize("cycles", [pytest.param(3), pytest.param(20, marks=pytest.mark.slow)])
def test_rollout_cycles_under_load_fail_no_request(cycles: int, scratch_repository: Path, tmp_path: Path) -> None:
    """canary → promote → roll back, again and again, while 4 threads score and recommend without pause (each
    cycle loads a new version in Triton: ~15 s here, so the default run does 3 and ``make test-all`` 20)."""
    import threading

    repository = scratch_repository
    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    with TritonServer(TritonConfig(repository=repository, work_dir=tmp_path / "triton")) as triton:
        env = gateway_env(
            triton.grpc_url,
            store_url,
            repository=repository,
            PREFTRACK_ROLLOUT_AUTO="false",
            PREFTRACK_ROLLOUT_FRACTION="0.5",
        )
        with GatewayProcess(env, tmp_path / "gw.log") as gateway, AdminClient(gateway.target) as admin:
            admin.pin(1)  # versions are rolled out by hand here
            stop = threading.Event()
            failures: list[str] = []
            calls = [0]
            versions_seen: set[str] = set()

            def load(worker: int) -> None:
                with preftrack.Client(gateway.target, timeout_s=10) as client:
                    n = 0
                    while not stop.is_set():
                        n += 1
                        try:
                            if n % 2:
                                answer = client.score(f"u-{worker}-{n % 50}", ["i-1", "i-2", "i-3"])
                            else:
                                answer = client.recommend(f"u-{worker}-{n % 50}", ["i-1", "i-2", "i-3"], k=2)
                            versions_seen.add(answer.model_version)
                            calls[0] += 1
                        except preftrack.PreftrackError as exc:
                            failures.append(f"{exc.code}: {exc.message}")

            threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
            for thread in threads:
                thread.start()
            try:
                for cycle in range(cycles):
                    version = cycle + 2
                    _copy_version(repository / "preftrack" / "1", repository, version)
                    _register(store_url, version)
                    admin.start_rollout(version, mode="canary", fraction=0.5, reason=f"cycle {cycle}")
                    time.sleep(0.3)
                    assert admin.promote(f"cycle {cycle}") == version
                    time.sleep(0.3)
                    assert admin.roll_back(f"cycle {cycle}") == 1
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            assert not failures, failures[:5]
            assert calls[0] > 50 * cycles
            assert len(versions_seen) > cycles // 2  # the load did reach the versions being rolled out
            states = _states(store_url)
            assert states[1] == "serving" and all(states[v] == "rolled_back" for v in range(2, cycles + 2))
