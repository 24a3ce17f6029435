"""Shared fixtures: a model trained on the synthetic shop, exported to a temporary repository, served by a
real Triton from the nvidia-pytriton wheel on free ports."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway.features import FeatureSpec, FeatureState
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.store import VersionRecord, open_store
from preftrack_trainer import export, model
from preftrack_trainer.data import synthetic
from preftrack_trainer.preprocess import Examples, LabelSpec, build_examples, clean


@dataclasses.dataclass(frozen=True)
class Trained:
    """A model trained on the synthetic shop and exported as version 1 of ``repository``."""

    shop: synthetic.SyntheticShop
    keras_model: object
    train: Examples
    test: Examples
    state: FeatureState
    repository: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    # Searches precede a third of the visits: the model learns the query features too.
    shop = synthetic.generate(synthetic.SyntheticConfig(seed=11, search_fraction=0.3))
    events, _ = clean(shop.events)
    # The users' attributes as the test gateways make them (their key); the events keep the shop's own user ids.
    key = Pseudonymiser(PSEUDONYM_KEY)
    users = {u: tuple(sorted(key.attribute(n, v) for n, v in a.items())) for u, a in shop.users.items()}
    state = FeatureState(FeatureSpec(), shop.items, users=users)
    examples, state = build_examples(events, shop.items, spec=FeatureSpec(), labels=LabelSpec(), state=state)
    train, test = examples.split_by_time(0.8)
    cfg = model.ModelConfig(epochs=3)
    mean, std = model.fit_normalisation(train.features)
    mlp = model.build_model(cfg, mean, std)
    model.train(mlp, train, cfg)
    repository = tmp_path_factory.mktemp("repo")
    version = export.export_version(
        mlp,
        repository,
        {"parent": None, "dataset": "synthetic", **export.schema_metadata(FeatureSpec(), LabelSpec())},
    )
    assert version == 1
    return Trained(shop, mlp, train, test, state, repository)


@pytest.fixture(scope="session")
def triton(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    work = tmp_path_factory.mktemp("triton")
    server = TritonServer(TritonConfig(repository=trained.repository, work_dir=work))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        assert not server.running


@pytest.fixture
def scratch_repository(trained: Trained, tmp_path: Path) -> Path:
    """A private copy of the trained repository, for tests that add (broken) versions."""
    target = tmp_path / "repo"
    shutil.copytree(trained.repository, target)
    return target


def triton_inputs(examples: Examples, rows: slice | np.ndarray):
    """tritonclient gRPC inputs for some rows of ``examples``."""
    import tritonclient.grpc as grpcclient

    from preftrack_gateway import contract

    columns = contract.request_arrays(
        examples.user_id[rows],
        examples.item_id[rows],
        examples.category_id[rows],
        examples.features[rows],
        examples.attributes[rows],
    )
    inputs = []
    for name, array, dtype in columns:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


# --- databases and the gateway -------------------------------------------------------------------------

PSEUDONYM_KEY = "test-pseudonym-key-0123456789"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test PostgreSQL server (``make test`` starts one with .ci/postgres.sh)."""
    url = os.environ.get("PREFTRACK_TEST_POSTGRES_URL", "postgresql://preftrack:preftrack@127.0.0.1:5432/preftrack")
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {url} is not reachable ({exc}); run `make postgres` (or .ci/postgres.sh)")
    return url


@pytest.fixture
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store backend in turn: SQLite in a temp dir, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("fresh_postgres_url")


def gateway_env(triton_url: str, store_url: str, *, repository: Path | None = None, **extra: str) -> dict[str, str]:
    """PREFTRACK_* settings for a gateway process (with the model repository Triton serves, when known)."""
    return {
        "PREFTRACK_TRITON_URL": triton_url,
        "PREFTRACK_STORE_URL": store_url,
        "PREFTRACK_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "PREFTRACK_HEALTH_INTERVAL_S": "0.5",
        **({"PREFTRACK_MODEL_REPOSITORY": str(repository.resolve())} if repository is not None else {}),
        **extra,
    }


@pytest.fixture
def gateway(triton: TritonServer, trained: Trained, tmp_path: Path):
    """A real gateway process on SQLite in front of the session's Triton."""
    from preftrack_dev.process import GatewayProcess

    process = GatewayProcess(
        gateway_env(triton.grpc_url, f"sqlite:///{tmp_path / 'events.db'}", repository=trained.repository),
        tmp_path / "gateway.log",
    )
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log_tail()


def registered_versions(store_url: str) -> dict[int, VersionRecord]:
    """The model registry as the store holds it now: version -> record."""

    async def read() -> dict[int, VersionRecord]:
        store = await open_store(store_url)
        try:
            return {r.version: r for r in await store.versions()}
        finally:
            await store.close()

    return asyncio.run(read())
