"""The lifelong loop with real parts: events in → continual trainer → gate → export → gateway switches."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

import preftrack
from preftrack_dev.process import GatewayProcess
from preftrack_dev.replay import to_feedback_events, to_sdk_items
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway.deployment import SETTINGS_KEY, DeploymentSettings
from preftrack_gateway.features import FeatureSpec, LabelSpec
from preftrack_gateway.registry import Move, Registry
from preftrack_gateway.store import VersionRecord, open_store
from preftrack_trainer import export
from preftrack_trainer.continual import ContinualConfig, ContinualTrainer
from preftrack_trainer.data import synthetic

from .conftest import gateway_env, registered_versions

pytestmark = pytest.mark.e2e

SHOP = synthetic.SyntheticConfig(n_users=120, n_items=80, days=6, seed=21, dirty_fraction=0.0)


def _send_shop(target: str) -> int:
    shop = synthetic.generate(SHOP)
    events = to_feedback_events([e for e in shop.events if e.user_id != synthetic.BOT_USER_ID], shop.truth.queries)
    with preftrack.Client(target, timeout_s=60) as client:
        client.upsert_items(to_sdk_items(shop.items.values()))
        summary = client.stream(events)
    assert summary.accepted == len(events)
    return len(events)


@pytest.fixture
def stack(scratch_repository: Path, tmp_path: Path):
    """Triton on a private copy of the trained repository (version 1) and a gateway on SQLite."""
    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    with TritonServer(TritonConfig(repository=scratch_repository, work_dir=tmp_path / "triton")) as triton:
        # Versions ship directly here: this file tests the loop; tests/test_rollout.py tests live rollouts.
        env = gateway_env(triton.grpc_url, store_url, repository=scratch_repository, PREFTRACK_ROLLOUT_MODE="direct")
        gateway = GatewayProcess(env, tmp_path / "gateway.log").start()
        try:
            yield scratch_repository, store_url, gateway
        finally:
            gateway.stop()


def _put_settings(store_url: str, settings: DeploymentSettings) -> None:
    async def write() -> None:
        store = await open_store(store_url)
        try:
            await store.put_setting(SETTINGS_KEY, settings.to_json())
        finally:
            await store.close()

    asyncio.run(write())


def _round(config: ContinualConfig):
    async def run():
        trainer = await ContinualTrainer.open(config)
        try:
            return await trainer.run_once(force=True), trainer.watermark
        finally:
            await trainer.close()

    return asyncio.run(run())


def test_trainer_ships_version_2_and_the_switch_fails_no_request(stack) -> None:
    repository, store_url, gateway = stack
    _send_shop(gateway.target)
    failures: list[str] = []
    versions_seen: set[str] = set()
    stop = threading.Event()

    def keep_scoring() -> None:
        with preftrack.Client(gateway.target) as client:
            while not stop.is_set():
                try:
                    versions_seen.add(client.score("u-3", ["i-1", "i-2", "i-3"]).model_version)
                except preftrack.PreftrackError as exc:
                    failures.append(str(exc))

    thread = threading.Thread(target=keep_scoring)
    thread.start()
    try:
        # Generous margins: this test is about the mechanics of shipping, the gate has its own test.
        config = ContinualConfig(
            store_url=store_url, repository=repository, trigger_examples=100, auc_margin=0.5, log_loss_margin=1.0
        )
        result, watermark = _round(config)
        assert result is not None and result.shipped and result.version == 2, result
        assert watermark > 0
        deadline = time.monotonic() + 60
        while "2" not in versions_seen and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert versions_seen == {"1", "2"}
    registry = registered_versions(store_url)
    assert registry[2].state == "serving" and registry[2].parent == 1
    assert registry[1].state == "retired"
    assert registry[2].last_seq >= registry[2].first_seq > 0
    meta = export.read_metadata(repository, 2)
    assert meta["parent"] == 1 and meta["last_seq"] == registry[2].last_seq


def test_a_worse_candidate_is_rejected_and_version_1_keeps_serving(stack) -> None:
    repository, store_url, gateway = stack
    _send_shop(gateway.target)
    # A learning rate this large wrecks the warm-started weights: the gate must catch it.
    config = ContinualConfig(store_url=store_url, repository=repository, trigger_examples=100, learning_rate=5.0)
    result, _ = _round(config)
    assert result is not None and not result.shipped
    assert export.existing_versions(repository / "preftrack") == [1]
    registry = registered_versions(store_url)
    assert registry[result.version].state == "rejected" and "serving" in registry[result.version].note
    time.sleep(1.5)
    with preftrack.Client(gateway.target) as client:
        assert client.score("u-3", ["i-1"]).model_version == "1"


def test_a_corrupt_export_is_never_served(stack) -> None:
    repository, store_url, gateway = stack
    model_dir = repository / "preftrack"
    shutil.copytree(model_dir / "1", model_dir / "2")
    variables = next((model_dir / "2" / export.SAVEDMODEL_DIR / "variables").glob("variables.data-*"))
    variables.write_bytes(variables.read_bytes()[:100])

    async def register() -> None:
        store = await open_store(store_url)
        now = time.time()
        await store.put_version(VersionRecord(version=2, state="exported", parent=1, created_at=now, updated_at=now))
        await store.close()

    asyncio.run(register())
    deadline = time.monotonic() + 60
    while registered_versions(store_url)[2].state in ("exported", "loading") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert registered_versions(store_url)[2].state == "failed"
    with preftrack.Client(gateway.target) as client:
        for _ in range(20):
            assert client.score("u-3", ["i-1"]).model_version == "1"


def test_a_restarted_trainer_resumes_from_its_watermark(stack) -> None:
    repository, store_url, gateway = stack
    _send_shop(gateway.target)
    config = ContinualConfig(
        store_url=store_url, repository=repository, trigger_examples=100, auc_margin=0.5, log_loss_margin=1.0
    )
    first, watermark = _round(config)
    assert first is not None

    async def reopen() -> tuple[int, int]:
        trainer = await ContinualTrainer.open(config)
        try:
            return trainer.watermark, await trainer.poll()
        finally:
            await trainer.close()

    resumed_at, waiting = asyncio.run(reopen())
    assert resumed_at == watermark
    # Only examples after the watermark wait (those whose label window was still open), none trained before.
    assert waiting < first.n_new
    second, _ = _round(config)
    assert second is None or second.first_seq > first.last_seq


def test_served_lists_joined_with_later_feedback_become_examples(stack) -> None:
    repository, store_url, gateway = stack
    _send_shop(gateway.target)
    with preftrack.Client(gateway.target) as client:
        rec = client.recommend("u-7", [f"i-{n}" for n in range(10)], k=4)
        bought = rec.items[1].item_id
        client.send(
            preftrack.FeedbackEvent(
                user_id="u-7", item_id=bought, event_type="purchase", recommendation_id=rec.recommendation_id
            )
        )
        # A later event closes the purchase's attribution window for the trainer's clock.
        client.send(
            preftrack.FeedbackEvent(user_id="u-8", item_id="i-1", event_type="view", timestamp_s=time.time() + 200)
        )
    time.sleep(0.3)  # impressions are written in background batches
    # The deployment's labels (held in the store, where they win over the trainer's own) use a 60 s window.
    _put_settings(store_url, DeploymentSettings(FeatureSpec(), LabelSpec(attribution_window_s=60)))
    config = ContinualConfig(store_url=store_url, repository=repository, trigger_examples=100)

    async def waiting():
        trainer = await ContinualTrainer.open(config)
        try:
            await trainer.poll()
            return trainer.waiting_examples()
        finally:
            await trainer.close()

    ids, examples = asyncio.run(waiting())
    served = {i: float(y) for i, y in zip(ids, examples.label, strict=True) if i.startswith("impression:")}
    prefix = f"impression:{rec.recommendation_id}:"
    assert {i.removeprefix(prefix) for i in served} == {item.item_id for item in rec.items}
    assert served[prefix + bought] == 1.0
    assert sum(served.values()) == 1.0


def test_a_version_trained_on_other_feature_definitions_is_refused(stack) -> None:
    repository, store_url, gateway = stack
    model_dir = repository / "preftrack"
    shutil.copytree(model_dir / "1", model_dir / "2")  # loadable, but registered with another feature schema

    async def register() -> None:
        store = await open_store(store_url)
        now = time.time()
        record = VersionRecord(
            version=2,
            state="exported",
            parent=1,
            metrics={"feature_schema_hash": "0123456789abcdef"},
            created_at=now,
            updated_at=now,
        )
        await store.put_version(record)
        await store.close()

    asyncio.run(register())
    deadline = time.monotonic() + 30
    while registered_versions(store_url)[2].state == "exported" and time.monotonic() < deadline:
        time.sleep(0.2)
    refused = registered_versions(store_url)[2]
    assert refused.state == "failed" and "feature schema" in refused.note
    with preftrack.Client(gateway.target) as client:
        assert client.score("u-3", ["i-1"]).model_version == "1"


def test_after_an_upgrade_of_the_inputs_the_trainer_trains_a_new_first_version(stack) -> None:
    repository, store_url, gateway = stack
    _send_shop(gateway.target)
    # Version 1 as an older release wrote it: trained on other model inputs (another feature-schema hash).
    path = repository / "preftrack" / "1" / export.METADATA_FILE
    metadata = json.loads(path.read_text())
    path.write_text(json.dumps({**metadata, "feature_schema_hash": "0123456789abcdef"}))
    result, watermark = _round(ContinualConfig(store_url=store_url, repository=repository, trigger_examples=100))
    assert result is not None and result.shipped and result.version == 2, result
    assert "new first version" in result.reason and watermark > 0
    meta = export.read_metadata(repository, 2)
    assert meta["parent"] is None and meta["feature_schema_hash"] == metadata["feature_schema_hash"]
    deadline = time.monotonic() + 60
    with preftrack.Client(gateway.target) as client:
        while client.score("u-3", ["i-1"]).model_version != "2":
            assert time.monotonic() < deadline, "version 2 never served"
            time.sleep(0.2)


def test_a_fresh_trainer_waits_for_examples_then_trains_version_1(tmp_path: Path) -> None:
    """A new deployment's store is empty: the trainer waits for the shop's first labelled examples instead of
    failing, then trains version 1 on them; with --once and too few it says so and exits 2."""
    from preftrack_trainer import cli

    store_url, repository = f"sqlite:///{tmp_path / 'events.db'}", tmp_path / "repo"
    argv = ["continual", "--store-url", store_url, "--repository", str(repository), "--once"]
    assert cli.main(argv) == 2
    assert not export.existing_versions(repository / "preftrack")
    shop = synthetic.generate(SHOP)
    events = [e for e in shop.events if e.user_id != synthetic.BOT_USER_ID]

    async def wait_then_bootstrap() -> tuple[bool, int]:
        trainer = await ContinualTrainer.open(
            ContinualConfig(store_url=store_url, repository=repository, poll_interval_s=0.05)
        )
        try:
            waiting = asyncio.create_task(trainer.wait_for_first_examples(asyncio.Event(), 200))
            await asyncio.sleep(0.5)
            assert not waiting.done(), "it did not wait for examples"
            store = await open_store(store_url)
            try:
                await store.append(events)
            finally:
                await store.close()
            ready = await asyncio.wait_for(waiting, 60)
            return ready, await trainer.bootstrap()
        finally:
            await trainer.close()

    ready, version = asyncio.run(wait_then_bootstrap())
    assert ready and version == 1
    assert export.read_metadata(repository, 1)["parent"] is None


def test_a_version_trained_from_scratch_on_the_whole_store_ships(stack) -> None:
    """`continual --from-scratch` trains a new version from nothing on every event in the store (how every trace
    of forgotten users leaves the weights, docs/privacy.md), under a number no version holds (a rejected round's
    has no folder), and it serves like any new version."""
    from preftrack_trainer import cli

    repository, store_url, gateway = stack
    _send_shop(gateway.target)
    result, watermark = _round(ContinualConfig(store_url=store_url, repository=repository, trigger_examples=100))
    assert result is not None and result.version == 2 and watermark > 0, result

    async def reject_3() -> None:  # as a round the gate refused: registered, no folder
        store = await open_store(store_url)
        try:
            now = time.time()
            record = VersionRecord(version=3, state="rejected", parent=2, created_at=now, updated_at=now)
            assert await Registry(store).register(record, actor="trainer", reason="offline gate: test")
        finally:
            await store.close()

    asyncio.run(reject_3())
    argv = ["continual", "--store-url", store_url, "--repository", str(repository), "--from-scratch", "--once"]
    assert cli.main(argv) == 0
    meta, incremental = export.read_metadata(repository, 4), export.read_metadata(repository, 2)
    # From nothing, on the log from its first example up to at least where the incremental round stopped.
    assert meta["parent"] is None and incremental["parent"] == 1, (meta, incremental)
    assert meta["first_seq"] == incremental["first_seq"] and meta["last_seq"] >= watermark, (meta, watermark)
    assert registered_versions(store_url)[3].state == "rejected"
    deadline = time.monotonic() + 60
    with preftrack.Client(gateway.target) as client:
        while client.score("u-3", ["i-1"]).model_version != "4":
            assert time.monotonic() < deadline, f"version 4 never served: {registered_versions(store_url)}"
            time.sleep(0.2)


def test_after_a_version_trained_from_scratch_the_trainer_builds_on_it(
    scratch_repository: Path, tmp_path: Path
) -> None:
    """While the version trained from scratch waits for its rollout, the next rounds warm-start from it, not from
    the serving version's weights from before it (which hold what forgotten users did)."""
    store_url = f"sqlite:///{tmp_path / 'events.db'}"
    shop = synthetic.generate(SHOP)
    events = [e for e in shop.events if e.user_id != synthetic.BOT_USER_ID]
    half = len(events) // 2

    async def run() -> tuple[int, int | None]:
        store = await open_store(store_url)
        try:
            await store.upsert_items(list(shop.items.values()))
            await store.append(events[:half])
            now = time.time()
            serving = VersionRecord(version=1, state="serving", created_at=now, updated_at=now)
            assert await Registry(store).register(serving, actor="test", reason="version 1 serves")
        finally:
            await store.close()
        config = ContinualConfig(store_url=store_url, repository=scratch_repository, trigger_examples=100)
        trainer = await ContinualTrainer.open(config, from_scratch=True)
        try:
            assert await asyncio.wait_for(trainer.wait_for_first_examples(asyncio.Event(), 200), 60)
            scratch = await trainer.bootstrap()
            store = await open_store(store_url)
            try:
                await store.append(events[half:])
            finally:
                await store.close()
            result = await trainer.run_once(force=True)
        finally:
            await trainer.close()
        assert result is not None, "no round ran"
        return scratch, result.version

    scratch, version = asyncio.run(run())
    # Shipped or rejected by the gate, the round's candidate was warm-started from (and compared with) version 2.
    versions = registered_versions(store_url)
    assert scratch == 2 and versions[version].parent == 2, (scratch, versions)


def test_an_export_warm_started_from_before_a_version_trained_from_scratch_never_serves(stack) -> None:
    """A version trained from scratch (after users were forgotten) is not superseded by a later export that was
    warm-started from the weights before it: that one is retired, the one from scratch serves."""
    from preftrack_dev.shoppers import register_exported

    repository, store_url, gateway = stack
    for version in (2, 3):
        shutil.copytree(repository / "preftrack" / "1", repository / "preftrack" / str(version))
    assert register_exported(store_url, 2, parent=None, actor="trainer --from-scratch")
    assert register_exported(store_url, 3, parent=1, actor="a trainer that did not know of version 2")
    deadline = time.monotonic() + 60
    with preftrack.Client(gateway.target) as client:
        while client.score("u-3", ["i-1"]).model_version != "2":
            assert time.monotonic() < deadline, f"version 2 never served: {registered_versions(store_url)}"
            time.sleep(0.2)
    while registered_versions(store_url)[3].state != "retired":
        assert time.monotonic() < deadline, f"version 3 not retired: {registered_versions(store_url)}"
        time.sleep(0.2)
    assert "the newest trained from nothing" in registered_versions(store_url)[3].note
    # Once a descendant of version 2 serves (and version 2 is retired), a late export from the old weights is
    # still retired: what counts is the lineage, not which version serves.
    for version in (4, 5):
        shutil.copytree(repository / "preftrack" / "1", repository / "preftrack" / str(version))
    assert register_exported(store_url, 4, parent=2, actor="the trainer, from version 2")
    with preftrack.Client(gateway.target) as client:
        while client.score("u-3", ["i-1"]).model_version != "4":
            assert time.monotonic() < deadline, f"version 4 never served: {registered_versions(store_url)}"
            time.sleep(0.2)
    assert registered_versions(store_url)[2].state == "retired"
    assert register_exported(store_url, 5, parent=1, actor="a trainer that did not know of version 2")
    while registered_versions(store_url)[5].state != "retired":
        assert time.monotonic() < deadline, f"version 5 not retired: {registered_versions(store_url)}"
        time.sleep(0.2)
    with preftrack.Client(gateway.target) as client:
        assert client.score("u-3", ["i-1"]).model_version == "4"
    # Nor can an operator put it (or version 1) back: a roll back goes to the lineage's own retired version 2,
    # and a pin or a rollout of an older one is refused with why.
    from preftrack.admin import AdminClient
    from preftrack.errors import InvalidRequestError

    with AdminClient(gateway.target) as admin:
        for version in (5, 1):
            with pytest.raises(InvalidRequestError, match="does not descend from version 2"):
                admin.pin(version)
            with pytest.raises(InvalidRequestError, match="does not descend from version 2"):
                admin.start_rollout(version)
        assert admin.roll_back("test") == 2


def _warm_start_base(
    store_url: str, repository: Path, records: list[tuple[int, str, int | None]], moves: list[list[Move]]
) -> int | None:
    """The version the continual trainer would warm-start from, after registering ``records`` (version, state,
    parent) and making ``moves`` in turn."""

    async def run() -> int | None:
        store = await open_store(store_url)
        registry = Registry(store)
        try:
            now = time.time()
            for version, state, parent in records:
                record = VersionRecord(version=version, state=state, parent=parent, created_at=now, updated_at=now)
                assert await registry.register(record, actor="test", reason="test")
            for step in moves:
                assert await registry.move(step, actor="test", reason="test")
        finally:
            await store.close()
        trainer = await ContinualTrainer.open(ContinualConfig(store_url=store_url, repository=repository))
        try:
            return await trainer._serving_version()
        finally:
            await trainer.close()

    return asyncio.run(run())


def test_the_trainer_builds_on_the_newest_descendant_of_a_version_trained_from_scratch(
    scratch_repository: Path, tmp_path: Path
) -> None:
    """Version 1 still serves; version 2 was trained from scratch and already superseded (retired) by its own
    descendants 3 and 4 on their way out: the next round warm-starts from 4, not from 1's weights."""
    for version in (2, 3, 4):
        shutil.copytree(scratch_repository / "preftrack" / "1", scratch_repository / "preftrack" / str(version))
    records = [(1, "serving", None), (2, "exported", None), (3, "exported", 2), (4, "exported", 3)]
    retire = [[Move(2, "retired"), Move(3, "retired")]]
    assert _warm_start_base(f"sqlite:///{tmp_path / 'events.db'}", scratch_repository, records, retire) == 4


def test_the_trainer_goes_on_from_a_version_trained_from_scratch_that_lost_its_canary(
    scratch_repository: Path, tmp_path: Path
) -> None:
    """The version trained from scratch lost its canary (rolled back) and the old lineage serves: the trainer still
    builds on the version from scratch (until one of its descendants wins), never on the old weights."""
    shutil.copytree(scratch_repository / "preftrack" / "1", scratch_repository / "preftrack" / "2")
    records = [(1, "serving", None), (2, "exported", None)]
    lost = [[Move(2, "loading")], [Move(2, "canary")], [Move(2, "rolled_back")]]
    assert _warm_start_base(f"sqlite:///{tmp_path / 'events.db'}", scratch_repository, records, lost) == 2


def test_explored_lists_judge_a_new_version_before_any_user_sees_it(stack, capsys) -> None:
    """Lists served with exploration log each item's propensity; the trainer's next version is judged on the
    explored lists of its holdout (off-policy: IPS, SNIPS, DR with intervals), and ``preftrack-admin evaluate``
    shows it. A share of exploration outside [0, 0.5] is refused, naming the field."""
    from preftrack.admin.cli import main as admin_main

    repository, store_url, gateway = stack
    _send_shop(gateway.target)
    candidates = [f"i-{n}" for n in range(10)]
    firsts: dict[str, str] = {}
    with preftrack.Client(gateway.target) as client:
        with pytest.raises(preftrack.InvalidRequestError, match="exploration"):
            client.recommend("u-1", candidates, k=4, exploration=0.7)
        for n in range(160):
            rec = client.recommend(f"u-{n % 40}", candidates, k=4, exploration=0.5)
            firsts[rec.recommendation_id] = rec.items[0].item_id
            if n % 2 == 0:  # half the users buy what they were shown first
                client.send(
                    preftrack.FeedbackEvent(
                        user_id=f"u-{n % 40}",
                        item_id=rec.items[0].item_id,
                        event_type="purchase",
                        recommendation_id=rec.recommendation_id,
                    )
                )
        client.send(
            preftrack.FeedbackEvent(user_id="u-99", item_id="i-1", event_type="view", timestamp_s=time.time() + 200)
        )
    time.sleep(0.5)  # impressions are written in background batches

    async def logged() -> list:
        store = await open_store(store_url)
        try:
            return [i for i in await store.impressions_after(0.0) if i.recommendation_id in firsts]
        finally:
            await store.close()

    impressions = asyncio.run(logged())
    assert len(impressions) == 160
    # The first item stayed (probability 1 - 0.5) or came from one of the 3 others (0.5 / 3 each).
    assert {round(i.propensities[0], 6) for i in impressions} == {0.5, round(0.5 / 3, 6)}
    _put_settings(store_url, DeploymentSettings(FeatureSpec(), LabelSpec(attribution_window_s=60)))
    config = ContinualConfig(store_url=store_url, repository=repository, trigger_examples=100, holdout_fraction=0.5)

    async def one_round() -> int:
        trainer = await ContinualTrainer.open(config)
        try:
            await trainer.poll()
            result = await trainer.train_round()
            assert result is not None
            return result.version
        finally:
            await trainer.close()

    version = asyncio.run(one_round())
    judged = registered_versions(store_url)[version].metrics["offpolicy"]
    assert judged["n"] >= 40, judged  # explored lists in the holdout, each complete
    for estimate in ("ips", "snips", "dr", "logged"):
        assert judged[estimate]["low"] <= judged[estimate]["value"] <= judged[estimate]["high"], judged
    assert 0.3 < judged["logged"]["value"] < 0.7, judged  # half of the lists' first items were bought
    assert judged["verdict"] in ("ahead", "behind", "unclear") and "explored lists" in judged["why"]
    assert admin_main(["--target", gateway.target, "evaluate", str(version)]) == 0
    shown = capsys.readouterr().out
    assert f"off-policy, first positions of {judged['n']} explored lists" in shown and "DR" in shown, shown
