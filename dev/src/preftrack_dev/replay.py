"""Prequential replay: a time-ordered dataset replayed through the running stack while it keeps learning.

The first part of the stream is loaded into the event store and a first version is trained on it (from the
store, so its user embeddings use the gateway's pseudonyms). Then every later event is first *scored* through
the SDK (as of its own time: what the system believes before it happens) and then *sent* as feedback, while the
continual trainer runs as its own process and ships versions through the registry. On a dataset with choice sets
(the re-buy shop) each occasion is one step instead: a Recommend over its candidates, then its events; the report
adds hit@1 and NDCG@10 of where the chosen item landed. Side by side, on the same events
(:mod:`preftrack_dev.replay_offline`): the same system with learning frozen at version 1 (its real-time features
still move), version 1 with the per-event layer alone, item popularity learned online, Vowpal Wabbit learning
after every event, and the per-user rules (:mod:`preftrack_dev.rules`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

import preftrack
from preftrack_dev import rules
from preftrack_dev.process import GatewayProcess, start_trainer_process, stop_trainer_process
from preftrack_dev.replay_offline import FROZEN, PER_EVENT_ONLY, POPULARITY, VW, OfflineRows, choice_rows, score_offline
from preftrack_dev.triton_launcher import TritonConfig, TritonServer
from preftrack_gateway import deployment
from preftrack_gateway.online import OnlineConfig
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import Event, Item
from preftrack_gateway.store import VersionRecord, open_store
from preftrack_trainer import export, metrics, model
from preftrack_trainer.continual import ContinualConfig, ContinualTrainer
from preftrack_trainer.data import rebuy, synthetic
from preftrack_trainer.data.choices import ChoiceSet
from preftrack_trainer.pipeline import Dataset, TrainerConfig, load_dataset

_LOGGER = logging.getLogger(__name__)

#: Row names of the report (the offline rows' are in :mod:`preftrack_dev.replay_offline`).
LIVE = "preftrack live (learning)"
_KEY = "replay-pseudonym-key-0123456789"
#: Rows and their keys in the ``bench_prequential`` line's added fields.
_KEYS = {LIVE: "live", FROZEN: "frozen", PER_EVENT_ONLY: "per_event_only", POPULARITY: "popularity", VW: "vw"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """How to replay.

    Attributes:
        dataset: ``movielens``, ``synthetic`` or ``rebuy`` (a dataset with choice sets: each occasion is a
            Recommend over its candidates).
        rate_events_s: target replay rate (events per second); the report states the rate reached.
        window: steps scored concurrently (an event, or an occasion's Recommend), then their events sent as one
            batch (1 = strictly one at a time).
        warm_fraction: share of the stream loaded before the replay and used to train version 1.
        trigger_examples / trigger_seconds: the continual trainer's triggers.
        auc_margin / log_loss_margin: the continual trainer's gate (how much worse than serving may ship).
        learning_rate / epochs: the continual trainer's optimiser settings (epochs: 1 on MovieLens, 2 otherwise).
        bootstrap_epochs: epochs of version 1 (default: 1 on MovieLens, where more overfits; 3 otherwise).
        limit_events: replay only this many events after the warm part (None: all; a little more where the
            limit would cut an occasion in two).
        online: the gateway's per-event layer (``enabled=False``: versions only); the offline "per-event layer
            alone" row uses the same settings.
        out_dir: where the report, the plot and the logs go.
        synthetic / rebuy: the generated shops' configs.
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
    rebuy: rebuy.RebuyConfig = dataclasses.field(default_factory=rebuy.RebuyConfig)
    progress: bool = True


@dataclasses.dataclass
class ReplayReport:
    """Results of a replay.

    ``versions_rejected`` counts every continual version that did not ship: ``versions_refused`` of them were
    refused by the gateway (registered ``failed``: another feature schema, or not loadable), the rest by the gate.
    ``rankings`` holds hit@1 and NDCG@10 per row on a dataset with choice sets (empty otherwise).
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
    rankings: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


class NothingShippedError(RuntimeError):
    """No continual version shipped during the replay; ``report`` holds the results (already written)."""

    def __init__(self, message: str, report: ReplayReport) -> None:
        super().__init__(message)
        self.report = report


def benchmark_fields(report: ReplayReport) -> str:
    """The fields the ``bench_prequential`` line adds after its first ones: popularity's and each rule's AUC,
    then, on a dataset with choice sets, every row's hit@1 and NDCG@10."""
    keys = {**_KEYS, **{rule.name: rule.key for rule in rules.RULES}}
    pairs = [
        f"{keys[name]}_auc={report.rows[name]['auc']:.4f}" for name in (POPULARITY, *(r.name for r in rules.RULES))
    ]
    for name, ranked in report.rankings.items():
        pairs.append(f"{keys[name]}_hit1={ranked['hit@1']:.4f} {keys[name]}_ndcg10={ranked['ndcg@10']:.4f}")
    return " ".join(pairs)


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


def _model_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return metrics.evaluate(labels, scores)["auc"]


def _windows(
    labels: np.ndarray, scores: np.ndarray, n: int, auc: Callable[[np.ndarray, np.ndarray], float] = _model_auc
) -> list[float]:
    out = []
    for part in np.array_split(np.arange(len(labels)), n):
        y, p = labels[part], scores[part]
        out.append(auc(y, p) if len(part) and 0 < y.sum() < len(y) else float("nan"))
    return out


def _boundary(events: Sequence[Event], index: int, choice_sets: Sequence[ChoiceSet]) -> int:
    """The first position at or after ``index`` that does not cut a choice set's events in two."""
    occasion = {event_id: k for k, choice in enumerate(choice_sets) for event_id in choice.event_ids}
    while 0 < index < len(events):
        here, before = occasion.get(events[index].event_id), occasion.get(events[index - 1].event_id)
        if here is None or here != before:
            break
        index += 1
    return index


def _split(data: Dataset, cfg: ReplayConfig) -> tuple[list[Event], list[Event]]:
    """The warm part and the live part; neither cuts through a choice set."""
    n_warm = _boundary(data.events, int(len(data.events) * cfg.warm_fraction), data.choice_sets)
    live = data.events[n_warm:]
    if cfg.limit_events is not None:
        live = live[: _boundary(live, cfg.limit_events, data.choice_sets)]
    return data.events[:n_warm], live


#: One step of the live replay: its events ``live[start:end]`` and the choice set they make, if any.
_Step = tuple[int, int, ChoiceSet | None]


def _steps(live: Sequence[Event], choice_sets: Sequence[ChoiceSet]) -> list[_Step]:
    """The live stream cut into steps: a choice set's events together (one Recommend), every other event alone."""
    first = {choice.event_ids[0]: choice for choice in choice_sets}
    steps: list[_Step] = []
    start = 0
    while start < len(live):
        choice = first.get(live[start].event_id)
        end = start + (len(choice.event_ids) if choice is not None else 1)
        steps.append((start, end, choice))
        start = end
    return steps


def _chunks(live: Sequence[Event], steps: list[_Step], window: int) -> list[list[_Step]]:
    """Consecutive runs of at most ``window`` steps with distinct users.

    Steps of one run are scored concurrently and then their events sent together; a user's next step always
    waits for the previous one's feedback, so every user's own stream stays strictly prequential.
    """
    runs: list[list[_Step]] = []
    current: list[_Step] = []
    users: set[str] = set()
    for step in steps:
        user = live[step[0]].user_id
        if len(current) >= window or user in users:
            runs.append(current)
            current, users = [], set()
        current.append(step)
        users.add(user)
    if current:
        runs.append(current)
    return runs


@dataclasses.dataclass
class _Served:
    """What the live stack answered: a score and the serving version per live event ("" for an event not
    scored: a search, or an occasion's purchase), plus timings."""

    scores: np.ndarray
    versions: list[str]
    first_served: dict[str, float]
    ack_delays: list[float]
    elapsed_s: float = 0.0


async def _ask(
    client: preftrack.AsyncClient, live: Sequence[Event], step: _Step
) -> tuple[dict[str, float], str] | None:
    """The step's call: a Recommend over a choice set's candidates or a Score of one event's item; the scores by
    item and the version that answered. None for a search (it names no item)."""
    start, _, choice = step
    event = live[start]
    if choice is not None:
        ranked = await client.recommend(
            choice.user_id, choice.candidates, k=len(choice.candidates), as_of_s=event.timestamp_s
        )
        return {i.item_id: i.score for i in ranked.items}, ranked.model_version
    if event.event_type == "search":
        return None
    scored = await client.score(event.user_id, [event.item_id], as_of_s=event.timestamp_s)
    return {event.item_id: scored.items[0].score}, scored.model_version


def _record(
    served: _Served, live: Sequence[Event], step: _Step, answer: tuple[dict[str, float], str], now: float
) -> None:
    start, end, choice = step
    by_item, version = answer
    positions = [k for k in range(start, end) if live[k].event_type == "view"] if choice is not None else [start]
    for k in positions:
        served.scores[k] = by_item[live[k].item_id]
        served.versions[k] = version
    served.first_served.setdefault(version, now)


async def _replay_live(
    target: str, live: list[Event], steps: list[_Step], cfg: ReplayConfig, queries: Mapping[str, str]
) -> _Served:
    """Score (or Recommend), then send, each live step."""
    served = _Served(np.zeros(len(live)), [""] * len(live), {}, [])
    started = time.monotonic()
    bar = tqdm(total=len(live), desc="replay", unit="ev", disable=not cfg.progress, mininterval=1.0)
    async with preftrack.AsyncClient(target, timeout_s=30) as client:
        for chunk in _chunks(live, steps, cfg.window):
            start, end = chunk[0][0], chunk[-1][1]
            delay = started + start / cfg.rate_events_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            answers = await asyncio.gather(*(_ask(client, live, step) for step in chunk))
            now = time.time()
            for step, answer in zip(chunk, answers, strict=True):
                if answer is not None:
                    _record(served, live, step, answer, now)
            sent = time.monotonic()
            await client.send(to_feedback_events(live[start:end], queries))
            served.ack_delays.append(time.monotonic() - sent)
            bar.update(end - start)
    bar.close()
    served.elapsed_s = time.monotonic() - started
    return served


def _gateway_env(cfg: ReplayConfig, data: Dataset, triton_url: str, store_url: str) -> dict[str, str]:
    return {
        "PREFTRACK_TRITON_URL": triton_url,
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
        "PREFTRACK_ONLINE_BEHAVIOUR_BUCKETS": (
            "auto" if cfg.online.behaviour_buckets is None else str(cfg.online.behaviour_buckets).lower()
        ),
    }


def _epochs(cfg: ReplayConfig, data: Dataset) -> tuple[int, int]:
    """Epochs of a continual round and of version 1 (fewer on ratings, where more overfits)."""
    ratings = data.labels.example_types == ("rating",)
    return cfg.epochs or (1 if ratings else 2), cfg.bootstrap_epochs or (1 if ratings else 3)


def _bootstrap(cfg: ReplayConfig, data: Dataset, store_url: str, repository: Path) -> list[str]:
    """Train version 1 on the warm part in the store; returns the continual trainer process's options."""
    epochs, bootstrap_epochs = _epochs(cfg, data)
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
    return [
        "--trigger-examples", str(cfg.trigger_examples), "--trigger-seconds", str(cfg.trigger_seconds),
        "--learning-rate", str(cfg.learning_rate), "--epochs", str(epochs),
        "--auc-margin", str(cfg.auc_margin), "--log-loss-margin", str(cfg.log_loss_margin),
    ]  # fmt: skip


async def _registry_and_commits(store_url: str) -> tuple[list[VersionRecord], dict[str, int], dict[int, float]]:
    """The registry's records, every stored event's sequence number by event id, and each one's commit time."""
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


@dataclasses.dataclass
class _StackRun:
    """What the stack did: the live answers, the registry at the end, and when each event was committed."""

    served: _Served
    records: list[VersionRecord]
    seq_of: dict[str, int]
    committed: dict[int, float]


def _run_stack(cfg: ReplayConfig, data: Dataset, warm: list[Event], live: list[Event], root: Path) -> _StackRun:
    """Start Triton and the gateway, load the warm part, train version 1, run the continual trainer and replay."""
    repository = root / "repo"
    export.write_model_config(repository, export.TritonModelConfig())
    store_url = f"sqlite:///{root / 'events.db'}"
    with TritonServer(TritonConfig(repository=repository, models=(), work_dir=root / "triton")) as triton:
        env = _gateway_env(cfg, data, triton.grpc_url, store_url)
        gateway = GatewayProcess(env, cfg.out_dir / "gateway.log", repository=repository).start(require_serving=False)
        trainer_process = None
        try:
            with preftrack.Client(gateway.target, timeout_s=120) as client:
                client.upsert_items(to_sdk_items(data.items.values()))
                if data.users:
                    client.upsert_users(to_sdk_users(data.users))
                client.stream(to_feedback_events(warm, data.queries), batch_size=2000)
            options = _bootstrap(cfg, data, store_url, repository)
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
            steps = _steps(live, data.choice_sets)
            served = asyncio.run(_replay_live(gateway.target, live, steps, cfg, data.queries))
            time.sleep(1.0)
        finally:
            stop_trainer_process(trainer_process, timeout_s=120)
            gateway.stop()
        return _StackRun(served, *asyncio.run(_registry_and_commits(store_url)))


def run(cfg: ReplayConfig) -> ReplayReport:
    """Run the replay end to end and write ``report.md`` and ``replay.png`` into ``cfg.out_dir``."""
    data = load_dataset(TrainerConfig(dataset=cfg.dataset, synthetic=cfg.synthetic, rebuy=cfg.rebuy, progress=False))
    warm, live = _split(data, cfg)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="preftrack-replay-") as tmp:
        root = Path(tmp)
        stack = _run_stack(cfg, data, warm, live, root)
        repository = root / "repo"
        v1 = export.load_keras(repository, 1) if (repository / "preftrack" / "1").exists() else None
        offline = score_offline(data, warm, live, v1, cfg.online, Pseudonymiser(_KEY))
    return _report(cfg, len(warm), live, stack, offline)


def _freshness(stack: _StackRun, shipped: list[VersionRecord], live_ids: set[str]) -> list[float]:
    """Seconds from each live event's commit to the first score by a version trained on it."""
    freshness: list[float] = []
    for record in shipped:
        served = stack.served.first_served.get(str(record.version))
        if served is None:
            continue
        for event_id, seq in stack.seq_of.items():
            if record.first_seq <= seq <= record.last_seq and event_id in live_ids and seq in stack.committed:
                freshness.append(served - stack.committed[seq])
    return freshness


def _compare(
    cfg: ReplayConfig, live_scores: np.ndarray, offline: OfflineRows
) -> tuple[dict[str, dict[str, float]], dict[str, list[float]], dict[str, dict[str, float]]]:
    """Every row's metrics over the live examples, its AUC per window and, with choice sets, its hit@1 and
    NDCG@10 (a rule's scores are ranks: AUC only, nothing clipped)."""
    labels = offline.labels
    compared = {LIVE: live_scores, **offline.scores}
    rows = {name: metrics.evaluate(labels, values) for name, values in compared.items()}
    rows.update({name: {"n": float(len(labels)), "auc": metrics.auc(labels, s)} for name, s in offline.rules.items()})
    windows = {name: _windows(labels, values, cfg.n_windows) for name, values in compared.items()}
    windows.update({name: _windows(labels, s, cfg.n_windows, metrics.auc) for name, s in offline.rules.items()})
    if not offline.choice_sets:
        return rows, windows, {}
    per_set = {
        name: choice_rows(offline.choice_sets, offline.example_ids, values)
        for name, values in compared.items()
        if not np.isnan(values).any()
    }
    per_set.update(offline.rule_choices)
    rankings = {
        name: {"hit@1": float(v[:, 0].mean()), "ndcg@10": float(v[:, 1].mean()), "n": float(len(v))}
        for name, v in per_set.items()
    }
    return rows, windows, rankings


def _markdown(cfg: ReplayConfig, report: ReplayReport, n_warm: int, n_examples: int) -> str:
    fresh_model, fresh_features = report.freshness_model_s, report.freshness_features_s
    n_rejected = report.versions_rejected - report.versions_refused
    lines = [
        f"Prequential replay of {cfg.dataset}: {report.n_events} live events ({n_examples} scored examples) after "
        f"{n_warm} warm-up events, at {report.rate_events_s:,.0f} events/s (target {cfg.rate_events_s:,.0f}, "
        f"window {cfg.window}).",
        "",
        metrics.format_table(report.rows, ("auc", "log_loss", "accuracy", "f1")),
        "",
        "The rules' scores are ranks, not probabilities: AUC only.",
    ]
    if report.rankings:
        n_sets = int(next(iter(report.rankings.values()))["n"])
        lines += [
            "",
            f"Choice sets: {n_sets} occasions, each a Recommend over the candidates (the live system) or the same "
            "candidates ranked by each row's scores; where the chosen item landed (ties in a random order):",
            "",
            metrics.format_table(report.rankings, ("hit@1", "ndcg@10")),
        ]
    lines += [
        "",
        f"Versions shipped: {report.versions_shipped}, rejected by the gate: {n_rejected}, refused by the gateway: "
        f"{report.versions_refused} (continual trainer: every {cfg.trigger_examples} examples or "
        f"{cfg.trigger_seconds:.0f} s).",
        "Scores served, by version: " + ", ".join(f"{v}: {n}" for v, n in report.scores_by_version.items()) + ".",
        f"Freshness, event commit -> first score by a version trained on it: p50 {fresh_model['p50']:.1f} s, "
        f"p90 {fresh_model['p90']:.1f} s, max {fresh_model['max']:.1f} s.",
        f"Freshness, event sent -> acknowledged with its features updated: p50 {1000 * fresh_features['p50']:.1f} ms, "
        f"p90 {1000 * fresh_features['p90']:.1f} ms (the next score already includes it).",
        "",
        "AUC per window (" + str(cfg.n_windows) + " equal windows of the live stream):",
        "",
        "| model | " + " | ".join(f"w{k + 1}" for k in range(cfg.n_windows)) + " |",
        "|---|" + "---|" * cfg.n_windows,
        *(f"| {name} | " + " | ".join(f"{a:.3f}" for a in values) + " |" for name, values in report.windows.items()),
    ]
    return "\n".join(lines)


def _report(cfg: ReplayConfig, n_warm: int, live: list[Event], stack: _StackRun, offline: OfflineRows) -> ReplayReport:
    """Compare the rows, write ``report.md``, ``report.json`` and the plot; raise if no version shipped."""
    records = stack.records
    shipped = [r for r in records if r.parent is not None and r.state in ("serving", "retired")]
    rejected = [r for r in records if r.state == "rejected"]  # by the trainer's gate
    refused = [r for r in records if r.state == "failed"]  # by the gateway (feature schema, load failure)
    example_ids = set(offline.example_ids)
    is_example = np.array([e.event_id in example_ids for e in live], dtype=bool)
    rows, windows, rankings = _compare(cfg, stack.served.scores[is_example], offline)
    versions = stack.served.versions
    version_of_example = [v for v, example in zip(versions, is_example, strict=True) if example]
    switches = [k for k in range(1, len(version_of_example)) if version_of_example[k] != version_of_example[k - 1]]
    report = ReplayReport(
        rows=rows,
        windows=windows,
        versions_shipped=len(shipped),
        versions_rejected=len(rejected) + len(refused),
        versions_refused=len(refused),
        scores_by_version=dict(sorted(collections.Counter(int(v) for v in versions if v).items())),
        freshness_model_s=_percentiles(_freshness(stack, shipped, {e.event_id for e in live})),
        freshness_features_s=_percentiles(stack.served.ack_delays),
        rate_events_s=len(live) / stack.served.elapsed_s,
        n_events=len(live),
        markdown="",
        plot=_plot(windows, switches, len(offline.labels), cfg),
        rankings=rankings,
    )
    report.markdown = _markdown(cfg, report, n_warm, len(offline.labels))
    (cfg.out_dir / "report.md").write_text(report.markdown + "\n")
    summary = {"rows": rows, "rankings": rankings, "windows": windows, "rate": report.rate_events_s}
    summary.update(scores_by_version=report.scores_by_version, versions=[dataclasses.asdict(r) for r in records])
    (cfg.out_dir / "report.json").write_text(json.dumps(summary, default=str, indent=1))
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
