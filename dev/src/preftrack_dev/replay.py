"""Prequential replay: a time-ordered dataset replayed through the running stack while it keeps learning.

The first part of the stream is loaded into the event store and a first version is trained on it (from the
store, so its user embeddings use the gateway's pseudonyms). Then every later event is first *scored* through
the SDK (as of its own time: what the system believes before it happens) and then *sent* as feedback, while the
continual trainer runs as its own process and ships versions through the registry. Side by side, on the same
events: the same system with learning frozen at version 1 (its real-time features still move), item
popularity learned online, and Vowpal Wabbit learning after every event.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

import preftrack
from preftrack_dev.process import GatewayProcess, start_trainer_process, stop_trainer_process
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway import deployment
from preftrack_gateway.online import OnlineConfig, logit
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event, Item
from preftrack_gateway.store import open_store
from preftrack_trainer import export, metrics, model
from preftrack_trainer.continual import ContinualConfig, ContinualTrainer
from preftrack_trainer.data import synthetic
from preftrack_trainer.online_eval import label_times, prequential_correction
from preftrack_trainer.pipeline import Dataset, TrainerConfig, load_dataset
from preftrack_trainer.preprocess import Examples, build_examples

_LOGGER = logging.getLogger(__name__)

#: Row names of the report.
LIVE = "preftrack live (learning)"
FROZEN = "preftrack frozen at v1"
PER_EVENT_ONLY = "v1 + per-event layer (no new versions)"
_KEY = "replay-pseudonym-key-0123456789"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """How to replay.

    Attributes:
        dataset: ``movielens`` or ``synthetic``.
        rate_events_s: target replay rate (events per second); the report states the rate reached.
        window: events scored concurrently, then sent as one batch (1 = strictly one at a time).
        warm_fraction: share of the stream loaded before the replay and used to train version 1.
        trigger_examples / trigger_seconds: the continual trainer's triggers.
        auc_margin / log_loss_margin: the continual trainer's gate (how much worse than serving may ship).
        learning_rate / epochs: the continual trainer's optimiser settings (epochs: 1 on MovieLens, 2 otherwise).
        bootstrap_epochs: epochs of version 1 (default: 1 on MovieLens, where more overfits; 3 otherwise).
        limit_events: replay only this many events after the warm part (None: all).
        online: the gateway's per-event layer (``enabled=False``: versions only); the offline "per-event layer
            alone" row uses the same settings.
        out_dir: where the report, the plot and the logs go.
    """

    dataset: str = "movielens"
    rate_events_s: float = 300.0
    window: int = 8
    warm_fraction: float = 0.5
    trigger_examples: int = 4000
    trigger_seconds: float = 30.0
    auc_margin: float = ContinualConfig.auc_margin
    log_loss_margin: float = ContinualConfig.log_loss_margin
    learning_rate: float = 1e-3
    epochs: int | None = None
    bootstrap_epochs: int | None = None
    limit_events: int | None = None
    online: OnlineConfig = dataclasses.field(default_factory=OnlineConfig)
    n_windows: int = 10
    out_dir: Path = Path("var/replay")
    synthetic: synthetic.SyntheticConfig = dataclasses.field(default_factory=synthetic.SyntheticConfig)
    progress: bool = True


@dataclasses.dataclass
class ReplayReport:
    """Results of a replay.

    ``versions_rejected`` counts every continual version that did not ship: ``versions_refused`` of them were
    refused by the gateway (registered ``failed``: another feature schema, or not loadable), the rest by the gate.
    """

    rows: dict[str, dict[str, float]]
    windows: dict[str, list[float]]
    versions_shipped: int
    versions_rejected: int
    versions_refused: int
    scores_by_version: dict[int, int]
    freshness_model_s: dict[str, float]
    freshness_features_s: dict[str, float]
    rate_events_s: float
    n_events: int
    markdown: str
    plot: Path | None


class NothingShippedError(RuntimeError):
    """No continual version shipped during the replay; ``report`` holds the results (already written)."""

    def __init__(self, message: str, report: ReplayReport) -> None:
        super().__init__(message)
        self.report = report


def to_feedback_events(events: list[Event], queries: Mapping[str, str] | None = None) -> list[preftrack.FeedbackEvent]:
    """SDK events carrying the same ids, users, items, types, values and times; a search event's text comes from
    ``queries`` (event id -> the query typed; an Event holds only its hashed terms)."""
    texts = queries or {}
    return [
        preftrack.FeedbackEvent(
            event_id=e.event_id,
            user_id=e.user_id,
            item_id=e.item_id,
            event_type=e.event_type,
            value=e.value,
            timestamp_s=e.timestamp_s,
            query=texts[e.event_id] if e.event_type == "search" else "",
        )
        for e in events
    ]


def to_sdk_items(items: Iterable[Item]) -> list[preftrack.Item]:
    """SDK catalogue entries of the schema's items (categories, price, title, attributes)."""
    return [
        preftrack.Item(
            item_id=i.item_id, categories=i.categories, price=i.price, title=i.title, attributes=dict(i.attributes)
        )
        for i in items
    ]


def to_sdk_users(users: Mapping[str, Mapping[str, str]]) -> list[preftrack.User]:
    """SDK users of a dataset's user attributes (by user id)."""
    return [preftrack.User(user_id=user, attributes=attributes) for user, attributes in users.items()]


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "max": float("nan")}
    array = np.array(values)
    return {"p50": float(np.percentile(array, 50)), "p90": float(np.percentile(array, 90)), "max": float(array.max())}


def _online_popularity(examples: Examples, n_warm: int) -> np.ndarray:
    """Each live example scored by its item's smoothed positive rate over the examples before it."""
    pos: dict[str, float] = collections.defaultdict(float)
    seen: dict[str, float] = collections.defaultdict(float)
    total_pos = total = 0.0
    scores = []
    for index, (item, y) in enumerate(zip(examples.items, examples.label, strict=True)):
        if index >= n_warm:
            prior = (total_pos + 1) / (total + 2)
            scores.append((pos[item] + 5 * prior) / (seen[item] + 5))
        pos[item] += float(y)
        seen[item] += 1
        total_pos += float(y)
        total += 1
    return np.array(scores)


def _vw_token(text: str) -> str:
    return text.replace(":", "_").replace(" ", "_").replace("|", "_")


def _vowpal_wabbit_online(
    examples: Examples, data: Dataset, n_warm: int, users: Mapping[str, Mapping[str, str]]
) -> np.ndarray:
    """VW learning after every example (logistic, user x item interactions) on what preftrack's model reads: the
    user (``users``: attributes by the examples' user keys), the item, its categories and attributes; scores of
    the live examples."""
    from vowpalwabbit import Workspace

    ws = Workspace("--loss_function logistic --link logistic -l 0.5 -q ui -q uu -b 22 --quiet")
    scores = []
    for index, (user, item_id, y) in enumerate(zip(examples.users, examples.items, examples.label, strict=True)):
        item = data.items.get(item_id)
        own = " ".join(f"{_vw_token(n)}={_vw_token(v)}" for n, v in sorted(users.get(user, {}).items()))
        described = [f"g={_vw_token(c)}" for c in (item.categories if item else ())]
        described += [f"{_vw_token(n)}={_vw_token(v)}" for n, v in (item.attributes if item else ())]
        features = f"|u user={user} {own} |i item={item_id} {' '.join(described)}"
        if index >= n_warm:
            scores.append(float(ws.predict(features)))
        ws.learn(f"{1 if y > 0 else -1} {features}")
    ws.finish()
    return np.array(scores)


def _windows(labels: np.ndarray, scores: np.ndarray, n: int) -> list[float]:
    out = []
    for part in np.array_split(np.arange(len(labels)), n):
        y, p = labels[part], scores[part]
        out.append(metrics.evaluate(y, p)["auc"] if len(part) and 0 < y.sum() < len(y) else float("nan"))
    return out


def _chunks(events: list[Event], window: int) -> list[tuple[int, int]]:
    """Consecutive runs of at most ``window`` events with distinct users.

    Events of one run are scored concurrently and then sent together; a user's next event always waits for
    the previous one's feedback, so every user's own stream stays strictly prequential.
    """
    runs = []
    start = 0
    users: set[str] = set()
    for index, event in enumerate(events):
        if index - start >= window or event.user_id in users:
            runs.append((start, index))
            start, users = index, set()
        users.add(event.user_id)
    if start < len(events):
        runs.append((start, len(events)))
    return runs


async def _replay_live(
    target: str, live: list[Event], cfg: ReplayConfig, queries: Mapping[str, str]
) -> tuple[np.ndarray, list[str], list[float], dict[str, float], list[float]]:
    """Score, then send, each live event (a search is only sent: it names no item); returns scores, versions,
    [elapsed], first-served times, ack delays."""
    scores = np.zeros(len(live))
    versions: list[str] = [""] * len(live)
    first_served: dict[str, float] = {}
    ack_delays: list[float] = []
    started = time.monotonic()
    bar = tqdm(total=len(live), desc="replay", unit="ev", disable=not cfg.progress, mininterval=1.0)
    async with preftrack.AsyncClient(target, timeout_s=30) as client:
        for start, end in _chunks(live, cfg.window):
            due = started + start / cfg.rate_events_s
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = live[start:end]
            scored = [offset for offset, e in enumerate(chunk) if e.event_type != "search"]
            answers = await asyncio.gather(
                *(client.score(chunk[o].user_id, [chunk[o].item_id], as_of_s=chunk[o].timestamp_s) for o in scored)
            )
            now = time.time()
            for offset, answer in zip(scored, answers, strict=True):
                scores[start + offset] = answer.items[0].score
                versions[start + offset] = answer.model_version
                first_served.setdefault(answer.model_version, now)
            sent = time.monotonic()
            await client.send(to_feedback_events(chunk, queries))
            ack_delays.append(time.monotonic() - sent)
            bar.update(len(chunk))
    bar.close()
    elapsed = time.monotonic() - started
    return scores, versions, [elapsed], first_served, ack_delays


def run(cfg: ReplayConfig) -> ReplayReport:
    """Run the replay end to end and write ``report.md`` and ``replay.png`` into ``cfg.out_dir``."""
    data = load_dataset(TrainerConfig(dataset=cfg.dataset, synthetic=cfg.synthetic, progress=False))
    events = data.events
    n_warm = int(len(events) * cfg.warm_fraction)
    live = events[n_warm:]
    if cfg.limit_events is not None:
        live = live[: cfg.limit_events]
    all_events = events[:n_warm] + live
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    ratings = data.labels.example_types == ("rating",)
    epochs = cfg.epochs or (1 if ratings else 2)
    bootstrap_epochs = cfg.bootstrap_epochs or (1 if ratings else 3)
    with tempfile.TemporaryDirectory(prefix="preftrack-replay-") as tmp:
        root = Path(tmp)
        repository = root / "repo"
        export.write_model_config(repository, export.TritonModelConfig())
        store_url = f"sqlite:///{root / 'events.db'}"
        with TritonServer(TritonConfig(repository=repository, models=(), work_dir=root / "triton")) as triton:
            env = {
                "PREFTRACK_TRITON_URL": triton.grpc_url,
                "PREFTRACK_STORE_URL": store_url,
                "PREFTRACK_PSEUDONYM_KEY": _KEY,
                # The dataset's feature and label settings: the gateway writes them to the empty store as it starts,
                # before the first event; the bootstrap and the continual trainer take them from there.
                **deployment.environment(deployment.DeploymentSettings(data.spec, data.labels)),
                # A replay measures learning through Score calls, which carry no attributed feedback for a live
                # comparison: versions ship as soon as they load (a rollout's canary is tested on its own).
                "PREFTRACK_ROLLOUT_MODE": "direct",
                "PREFTRACK_ONLINE_LEARNING": str(cfg.online.enabled).lower(),
                "PREFTRACK_ONLINE_ALPHA": "auto" if cfg.online.alpha is None else repr(cfg.online.alpha),
                "PREFTRACK_ONLINE_L2": repr(cfg.online.l2),
                "PREFTRACK_ONLINE_CALIBRATION": "auto"
                if cfg.online.calibration is None
                else str(cfg.online.calibration).lower(),
                "PREFTRACK_ONLINE_BEHAVIOUR_BUCKETS": str(cfg.online.behaviour_buckets).lower(),
            }
            gateway = GatewayProcess(env, cfg.out_dir / "gateway.log", repository=repository).start(
                require_serving=False
            )
            trainer_process = None
            try:
                with preftrack.Client(gateway.target, timeout_s=120) as client:
                    client.upsert_items(to_sdk_items(data.items.values()))
                    if data.users:
                        client.upsert_users(to_sdk_users(data.users))
                    client.stream(to_feedback_events(events[:n_warm], data.queries), batch_size=2000)
                continual = ContinualConfig(
                    store_url=store_url,
                    repository=repository,
                    spec=data.spec,
                    labels=data.labels,
                    trigger_examples=cfg.trigger_examples,
                    trigger_seconds=cfg.trigger_seconds,
                    learning_rate=cfg.learning_rate,
                    epochs=epochs,
                )

                async def bootstrap() -> None:
                    trainer = await ContinualTrainer.open(continual)
                    try:
                        await trainer.bootstrap(model.ModelConfig(epochs=bootstrap_epochs))
                    finally:
                        await trainer.close()

                asyncio.run(bootstrap())
                options = [
                    "--trigger-examples", str(cfg.trigger_examples), "--trigger-seconds", str(cfg.trigger_seconds),
                    "--learning-rate", str(cfg.learning_rate), "--epochs", str(epochs),
                    "--auc-margin", str(cfg.auc_margin), "--log-loss-margin", str(cfg.log_loss_margin),
                ]  # fmt: skip
                # The trainer process starts (imports, folds the warm part) while Triton loads version 1.
                trainer_process = start_trainer_process(
                    store_url, repository, cfg.out_dir / "trainer.log", options, fresh_log=True
                )
                deadline = time.monotonic() + 120
                with preftrack.Client(gateway.target) as client:
                    while not client.healthy():
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"the gateway never served version 1:\n{gateway.log_tail()}")
                        time.sleep(0.2)
                scores, versions, (elapsed,), first_served, ack_delays = asyncio.run(
                    _replay_live(gateway.target, live, cfg, data.queries)
                )
                time.sleep(1.0)
            finally:
                stop_trainer_process(trainer_process, timeout_s=120)
                gateway.stop()

            async def registry_and_commits():
                store = await open_store(store_url)
                try:
                    records = await store.versions()
                    ids: dict[str, int] = {}
                    async for batch in store.events():
                        ids.update((e.event_id, seq) for seq, e in batch)
                    committed = await store.committed_at(list(ids.values()))
                    return records, ids, committed
                finally:
                    await store.close()

            records, seq_of, committed = asyncio.run(registry_and_commits())
        v1 = export.load_keras(repository, 1) if (repository / "preftrack" / "1").exists() else None
        key = Pseudonymiser(_KEY)
        pseudo = [dataclasses.replace(e, user_id=key(e.user_id)) for e in all_events]
        examples, _ = build_examples(pseudo, data.items, spec=data.spec, labels=data.labels, state=data.features(key))
        live_mask = np.zeros(len(examples), dtype=bool)
        live_ids = {e.event_id for e in live}
        n_live_examples = sum(1 for e in live if e.event_type in data.labels.example_types)
        live_mask[-n_live_examples:] = True
        live_examples = examples.take(live_mask)
        labels = live_examples.label
        is_example = np.array([e.event_type in data.labels.example_types for e in live])
        live_scores = scores[is_example]
        frozen = model.predict(v1, live_examples) if v1 is not None else np.full(len(labels), np.nan)
        n_warm_examples = len(examples) - n_live_examples
        # Version 1 frozen, with the per-event layer learning on top (the warm part first, as the gateway does).
        per_event = (
            prequential_correction(
                examples,
                logit(model.predict(v1, examples)),
                n_warm_examples,
                data.items,
                cfg.online,
                known_at=label_times(examples, pseudo, data.spec, data.labels),
                labels=data.labels,
            )
            if v1 is not None
            else np.full(len(labels), np.nan)
        )
        popularity = _online_popularity(examples, n_warm_examples)
        vw = _vowpal_wabbit_online(examples, data, n_warm_examples, {key(u): a for u, a in data.users.items()})

    shipped = [r for r in records if r.parent is not None and r.state in ("serving", "retired")]
    rejected = [r for r in records if r.state == "rejected"]  # by the trainer's gate
    refused = [r for r in records if r.state == "failed"]  # by the gateway (feature schema, load failure)
    freshness: list[float] = []
    for record in shipped:
        served = first_served.get(str(record.version))
        if served is None:
            continue
        for event_id, seq in seq_of.items():
            if record.first_seq <= seq <= record.last_seq and event_id in live_ids and seq in committed:
                freshness.append(served - committed[seq])
    compared = {
        LIVE: live_scores,
        FROZEN: frozen,
        PER_EVENT_ONLY: per_event,
        "item popularity (online)": popularity,
        "Vowpal Wabbit (per event)": vw,
    }
    results = {name: metrics.evaluate(labels, values) for name, values in compared.items()}
    window_auc = {name: _windows(labels, values, cfg.n_windows) for name, values in compared.items()}
    rate = len(live) / elapsed
    scores_by_version = dict(sorted(collections.Counter(int(v) for v in versions).items()))
    fresh_model = _percentiles(freshness)
    fresh_features = _percentiles(ack_delays)
    version_of_example = [v for v, ex in zip(versions, is_example, strict=True) if ex]
    switches = [k for k in range(1, len(version_of_example)) if version_of_example[k] != version_of_example[k - 1]]
    plot = _plot(window_auc, switches, len(labels), cfg)
    lines = [
        f"Prequential replay of {cfg.dataset}: {len(live)} live events ({len(labels)} scored examples) after "
        f"{n_warm} warm-up events, at {rate:,.0f} events/s (target {cfg.rate_events_s:,.0f}, window {cfg.window}).",
        "",
        metrics.format_table(results, ("auc", "log_loss", "accuracy", "f1")),
        "",
        f"Versions shipped: {len(shipped)}, rejected by the gate: {len(rejected)}, refused by the gateway: "
        f"{len(refused)} (continual trainer: every {cfg.trigger_examples} examples or {cfg.trigger_seconds:.0f} s).",
        "Scores served, by version: " + ", ".join(f"{v}: {n}" for v, n in scores_by_version.items()) + ".",
        f"Freshness, event commit -> first score by a version trained on it: p50 {fresh_model['p50']:.1f} s, "
        f"p90 {fresh_model['p90']:.1f} s, max {fresh_model['max']:.1f} s.",
        f"Freshness, event sent -> acknowledged with its features updated: p50 {1000 * fresh_features['p50']:.1f} ms, "
        f"p90 {1000 * fresh_features['p90']:.1f} ms (the next score already includes it).",
        "",
        "AUC per window (" + str(cfg.n_windows) + " equal windows of the live stream):",
        "",
        "| model | " + " | ".join(f"w{k + 1}" for k in range(cfg.n_windows)) + " |",
        "|---|" + "---|" * cfg.n_windows,
        *(f"| {name} | " + " | ".join(f"{a:.3f}" for a in values) + " |" for name, values in window_auc.items()),
    ]
    markdown = "\n".join(lines)
    (cfg.out_dir / "report.md").write_text(markdown + "\n")
    (cfg.out_dir / "report.json").write_text(
        json.dumps(
            {
                "rows": results,
                "windows": window_auc,
                "rate": rate,
                "scores_by_version": scores_by_version,
                "versions": [dataclasses.asdict(r) for r in records],
            },
            default=str,
            indent=1,
        )
    )
    report = ReplayReport(
        rows=results,
        windows=window_auc,
        versions_shipped=len(shipped),
        versions_rejected=len(rejected) + len(refused),
        versions_refused=len(refused),
        scores_by_version=scores_by_version,
        freshness_model_s=fresh_model,
        freshness_features_s=fresh_features,
        rate_events_s=rate,
        n_events=len(live),
        markdown=markdown,
        plot=plot,
    )
    if not shipped:
        notes = [f"version {r.version} {r.state}: {r.note}" for r in [*rejected, *refused]][-10:]
        raise NothingShippedError(
            f"no continual version shipped during the replay (rejected by the gate: {len(rejected)}, refused by "
            f"the gateway: {len(refused)}); registry: {'; '.join(notes) or 'no continual version was trained'}; "
            f"logs: {cfg.out_dir / 'trainer.log'}, {cfg.out_dir / 'gateway.log'}",
            report,
        )
    return report


def _plot(window_auc: dict[str, list[float]], switches: list[int], n: int, cfg: ReplayConfig) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    centres = [(k + 0.5) / cfg.n_windows * n for k in range(cfg.n_windows)]
    for name, values in window_auc.items():
        ax.plot(centres, values, marker="o", label=name)
    for k, position in enumerate(switches):
        ax.axvline(position, color="grey", alpha=0.3, linestyle="--", label="version switch" if k == 0 else None)
    ax.set_xlabel("scored examples in the live stream")
    ax.set_ylabel("AUC (window)")
    ax.set_title(f"Prequential replay: {cfg.dataset}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    path = cfg.out_dir / "replay.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
