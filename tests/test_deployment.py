"""One source of truth for a deployment's feature and label settings: the event store, for every process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import preftrack
from preftrack_dev.process import GatewayProcess, GatewayStartError
from preftrack_gateway import deployment
from preftrack_gateway.config import ConfigError, GatewayConfig
from preftrack_gateway.deployment import DeploymentSettings
from preftrack_gateway.store import VersionRecord, open_store
from preftrack_trainer.continual import ContinualConfig, ContinualTrainer
from preftrack_trainer.pipeline import dataset_specs

from .conftest import PSEUDONYM_KEY, Trained, gateway_env

RATINGS = DeploymentSettings(*dataset_specs("movielens"))
SHOP = DeploymentSettings(*dataset_specs("synthetic"))


def _config(store_url: str, **values: object) -> GatewayConfig:
    return GatewayConfig(store_url=store_url, pseudonym_key=PSEUDONYM_KEY, **values)  # type: ignore[arg-type]


async def _with_store(store_url: str, work):
    store = await open_store(store_url)
    try:
        return await work(store)
    finally:
        await store.close()


def test_settings_round_trip_through_json_and_the_environment() -> None:
    assert DeploymentSettings.from_json(RATINGS.to_json()) == RATINGS
    config = GatewayConfig.from_env({**deployment.environment(RATINGS), "PREFTRACK_PSEUDONYM_KEY": PSEUDONYM_KEY})
    assert (config.feature_spec(), config.label_spec()) == (RATINGS.features, RATINGS.labels)
    assert RATINGS.features.schema_hash() != SHOP.features.schema_hash()


def test_the_gateway_writes_settings_to_an_empty_store_and_then_the_store_wins(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"

    async def run() -> None:
        store = await open_store(url)
        try:
            # Empty store: the (explicit) configuration is written.
            first = await deployment.gateway_settings(store, _config(url, **_explicit(RATINGS)))
            assert first == RATINGS and await deployment.read_settings(store) == RATINGS
            # Not set: the store's settings are used, not the defaults.
            assert await deployment.gateway_settings(store, _config(url)) == RATINGS
            # Set explicitly and different: refuse to start, naming the setting.
            with pytest.raises(ConfigError, match="PREFTRACK_POSITIVE_TYPES"):
                await deployment.gateway_settings(store, _config(url, positive_types=("purchase",)))
            with pytest.raises(ConfigError, match="PREFTRACK_EXAMPLE_TYPES"):
                await deployment.gateway_settings(store, _config(url, example_types=("view",)))
        finally:
            await store.close()

    asyncio.run(run())


def _explicit(settings: DeploymentSettings) -> dict[str, object]:
    return {
        "positive_types": settings.features.positive_types,
        "rating_threshold": settings.features.rating_threshold,
        "example_types": settings.labels.example_types,
        "attribution_window_s": settings.labels.attribution_window_s,
    }


def test_a_new_deployment_takes_its_settings_from_the_newest_version(trained: Trained, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    repository = str(trained.repository)

    async def run() -> None:
        store = await open_store(url)
        try:
            # The trained repository's version 1 was trained on the shop's settings: explicit settings that
            # disagree with them are refused; otherwise they win over the defaults and are written.
            explicit = _config(url, model_repository=repository, **_explicit(RATINGS))
            with pytest.raises(ConfigError, match=r"version 1's metadata\.json"):
                await deployment.gateway_settings(store, explicit)
            assert await deployment.read_settings(store) is None
            assert await deployment.gateway_settings(store, _config(url, model_repository=repository)) == SHOP
            assert await deployment.read_settings(store) == SHOP
        finally:
            await store.close()

    asyncio.run(run())


def test_the_continual_trainer_takes_its_settings_from_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"

    async def opened(config: ContinualConfig) -> ContinualConfig:
        trainer = await ContinualTrainer.open(config)
        try:
            return trainer.config
        finally:
            await trainer.close()

    ratings = ContinualConfig(store_url=url, repository=tmp_path, spec=RATINGS.features, labels=RATINGS.labels)
    # An empty store: the trainer writes its own (here: --ratings) settings.
    assert asyncio.run(opened(ratings)).labels == RATINGS.labels
    assert asyncio.run(_with_store(url, deployment.read_settings)) == RATINGS
    # Started later with the defaults (no --ratings), it still trains on the deployment's settings.
    config = asyncio.run(opened(ContinualConfig(store_url=url, repository=tmp_path)))
    assert (config.spec, config.labels) == (RATINGS.features, RATINGS.labels)


@pytest.mark.e2e
def test_a_version_trained_on_other_settings_never_serves(triton, trained: Trained, tmp_path: Path) -> None:
    """The store says ratings; Triton has version 1, trained on the shop's settings, ready: it is refused."""
    url = f"sqlite:///{tmp_path / 'events.db'}"

    async def prepare(store) -> None:
        await store.put_setting(deployment.SETTINGS_KEY, RATINGS.to_json())

    asyncio.run(_with_store(url, prepare))
    env = gateway_env(triton.grpc_url, url, repository=trained.repository)
    gateway = GatewayProcess(env, tmp_path / "gateway.log").start(require_serving=False)
    try:
        deadline = time.monotonic() + 30
        while True:
            record = asyncio.run(_with_store(url, lambda s: s.version(1)))
            if record is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert record is not None and record.state == "failed", gateway.log_tail()
        assert "feature schema" in record.note and RATINGS.features.schema_hash() in record.note
        time.sleep(1.5)  # a few readiness probes later, still refused
        with grpc.insecure_channel(gateway.target) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        with preftrack.Client(gateway.target, timeout_s=5) as client, pytest.raises(preftrack.UnavailableError):
            client.score("u-1", ["i-1"])
        assert gateway.log_tail(200).count("refusing version 1") == 1
    finally:
        assert gateway.stop() == 0, gateway.log_tail()


@pytest.mark.e2e
def test_a_gateway_set_to_other_settings_than_the_store_does_not_start(triton, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"

    async def prepare(store) -> None:
        await store.put_setting(deployment.SETTINGS_KEY, RATINGS.to_json())
        now = time.time()
        await store.put_version(VersionRecord(version=1, state="serving", created_at=now, updated_at=now))

    asyncio.run(_with_store(url, prepare))
    env = gateway_env(triton.grpc_url, url, **deployment.environment(SHOP))
    with pytest.raises(GatewayStartError, match="PREFTRACK_POSITIVE_TYPES"):
        GatewayProcess(env, tmp_path / "gateway.log").start(timeout_s=30)
