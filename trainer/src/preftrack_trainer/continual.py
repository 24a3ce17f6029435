"""The lifelong loop's trainer: learn from what is new in the event store, gate, and export the next version.

Each round reads the events committed after the trainer's watermark, folds them (in commit order) into the
same :class:`FeatureState` the gateway uses, turning each example event into a point-in-time row before it is
folded in. Labels come from the events themselves: a rating at or above the threshold, or a positive event on
the same item by the same user inside the attribution window. Examples whose window has not closed yet wait
(with every later event) for a later round, so a label is never guessed.

When enough examples are waiting (or enough time has passed) the trainer warm-starts from the serving version,
trains on the new examples plus a replay sample of the past, and compares the candidate with the serving
version on the newest slice (and on an older one, against forgetting). A candidate that is not worse by more
than the margins is exported atomically and registered ``exported`` (the gateway loads it and switches
traffic); otherwise it is registered ``rejected`` with its numbers. Either way the watermark then moves past
those events, in the same database, so no example is ever trained on twice, even across restarts.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np

from preftrack_gateway import deployment
from preftrack_gateway.backoff import Backoff
from preftrack_gateway.features import FeatureSpec, FeatureState, PointInTimeError, influence
from preftrack_gateway.registry import FINAL_STATES, Registry, lineage, lineage_root
from preftrack_gateway.schema import Event
from preftrack_gateway.store import EventStore, Impression, StoreError, VersionRecord, open_store
from preftrack_trainer import export, metrics, model
from preftrack_trainer.offpolicy_eval import ExploredLists, exposure_id
from preftrack_trainer.preprocess import Examples, LabelSpec, model_inputs

_LOGGER = logging.getLogger(__name__)

WATERMARK_KEY = "trainer.watermark"
IMPRESSION_WATERMARK_KEY = "trainer.impression_watermark"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContinualConfig:
    """Settings of the continual trainer.

    Attributes:
        store_url: the event store the gateway writes (``sqlite:///...`` or ``postgresql://...``).
        repository: the Triton model repository.
        spec / labels: feature definitions and labelling, used only while the event store holds no deployment
            settings (then :meth:`ContinualTrainer.open` writes them there); the store's settings win.
        trigger_examples: train once this many labelled examples wait...
        trigger_seconds: ...or once this much time passed since the last round with any waiting.
        replay_fraction: replayed past examples per new example.
        replay_capacity: past examples kept for replay (reservoir sample).
        holdout_fraction: newest share of the new examples held out for the gate.
        epochs: passes over new + replayed examples per round.
        learning_rate: Adam learning rate of the warm-started model.
        auc_margin / log_loss_margin: how much worse than serving a candidate may be and still ship.
        min_holdout: the fewest held-out examples (with both labels among them) the gate decides on; a round with
            fewer is rejected, as is a candidate with a non-finite metric.
        poll_interval_s: how often the long-running mode looks for new events.
        use_impressions: also learn from served lists: each (list, item) is an example at the time it was
            served, positive when the user does a positive event on the item inside the attribution window.
    """

    store_url: str
    repository: Path
    spec: FeatureSpec = dataclasses.field(default_factory=FeatureSpec)
    labels: LabelSpec = dataclasses.field(default_factory=LabelSpec)
    trigger_examples: int = 2000
    trigger_seconds: float = 60.0
    replay_fraction: float = 1.0
    replay_capacity: int = 100_000
    holdout_fraction: float = 0.2
    epochs: int = 1
    batch_size: int = 256
    learning_rate: float = 1e-3
    auc_margin: float = 0.005
    log_loss_margin: float = 0.01
    min_holdout: int = 20
    poll_interval_s: float = 1.0
    use_impressions: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trigger_examples < 10 or self.trigger_seconds <= 0:
            raise ValueError("trigger_examples must be >= 10 and trigger_seconds > 0")
        if not 0.05 <= self.holdout_fraction <= 0.5:
            raise ValueError("holdout_fraction must lie in [0.05, 0.5]")
        if self.replay_fraction < 0 or self.replay_capacity < 0 or self.epochs < 1 or self.learning_rate <= 0:
            raise ValueError("replay_fraction, replay_capacity >= 0; epochs >= 1; learning_rate > 0")


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """What one training round did."""

    version: int
    shipped: bool
    n_new: int
    n_replay: int
    first_seq: int
    last_seq: int
    candidate: dict[str, float]
    serving: dict[str, float]
    reason: str


class _Reservoir:
    """A uniform sample of past examples (Algorithm R), for replay and the forgetting check."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.seen = 0
        self._rng = rng
        self._rows: list[tuple] = []

    def add(self, examples: Examples) -> None:
        weights = examples.weights()
        for k in range(len(examples)):
            if weights[k] == 0.0:  # teaches nothing: not worth a place in the replay
                continue
            row = (
                examples.user_id[k],
                examples.item_id[k],
                examples.category_id[k],
                examples.features[k],
                examples.label[k],
                examples.timestamp_s[k],
                examples.users[k],
                examples.items[k],
                examples.attributes[k],
                weights[k],
            )
            self.seen += 1
            if len(self._rows) < self.capacity:
                self._rows.append(row)
            else:
                slot = int(self._rng.integers(self.seen))
                if slot < self.capacity:
                    self._rows[slot] = row

    def sample(self, n: int) -> Examples | None:
        n = min(n, len(self._rows))
        if n == 0:
            return None
        picked = [self._rows[i] for i in self._rng.choice(len(self._rows), n, replace=False)]
        columns = list(zip(*picked, strict=True))
        return Examples(
            user_id=np.array(columns[0], dtype=np.int64),
            item_id=np.array(columns[1], dtype=np.int64),
            category_id=np.array(columns[2], dtype=np.int64),
            features=np.stack(columns[3]).astype(np.float32),
            label=np.array(columns[4], dtype=np.float32),
            timestamp_s=np.array(columns[5], dtype=np.float64),
            users=list(columns[6]),
            items=list(columns[7]),
            attributes=np.stack(columns[8]).astype(np.int64),
            influence=np.array(columns[9], dtype=np.float32),
        )


def gate_refusal(
    labels: np.ndarray, cand: dict[str, float], serv: dict[str, float], cfg: ContinualConfig
) -> str | None:
    """Why the offline gate refuses a candidate, or None. It refuses a holdout too small (or of one label) to
    decide on, any non-finite metric, and a candidate worse than the serving version by more than the margins.

    >>> cfg = ContinualConfig(store_url="sqlite:///x", repository=Path("r"))
    >>> gate_refusal(np.array([0.0, 1.0] * 20), {"auc": float("nan"), "log_loss": 0.5},
    ...              {"auc": 0.7, "log_loss": 0.6}, cfg)
    'non-finite metrics: candidate AUC nan, log loss 0.5; serving AUC 0.7, log loss 0.6'
    """
    positives = int(labels.sum())
    if len(labels) < cfg.min_holdout or positives in (0, len(labels)):
        return (
            f"holdout too small to decide: {len(labels)} examples, {positives} positive "
            f"(needs >= {cfg.min_holdout} with both labels)"
        )
    if not all(math.isfinite(m[k]) for m in (cand, serv) for k in ("auc", "log_loss")):
        return (
            f"non-finite metrics: candidate AUC {cand['auc']:.4g}, log loss {cand['log_loss']:.4g}; "
            f"serving AUC {serv['auc']:.4g}, log loss {serv['log_loss']:.4g}"
        )
    if cand["auc"] < serv["auc"] - cfg.auc_margin:
        return f"AUC {cand['auc']:.4f} < serving {serv['auc']:.4f} - {cfg.auc_margin}"
    if cand["log_loss"] > serv["log_loss"] + cfg.log_loss_margin:
        return f"log loss {cand['log_loss']:.4f} > serving {serv['log_loss']:.4f} + margin"
    return None


class _Outage:
    """The trainer's view of an event store that fails: a backoff that doubles to 30 s, one log line per failure,
    and one when it answers again."""

    def __init__(self) -> None:
        self._backoff = Backoff(1.0, 30.0)

    @property
    def backoff_s(self) -> float:
        return self._backoff.delay_s

    def failed(self, exc: StoreError) -> None:
        _LOGGER.warning("the event store failed (%s); retrying in %.0f s", exc, self._backoff.failed())

    def over(self) -> None:
        if self._backoff.succeeded():
            _LOGGER.info("the event store answers again; training resumes")


class ContinualTrainer:
    """Long-running (or one-round) trainer over the event store. Create with :meth:`open`."""

    def __init__(self, config: ContinualConfig, store: EventStore) -> None:
        self.config = config
        self.store = store
        self.registry = Registry(store)
        self.state = FeatureState(config.spec)
        self._users_seq = 0  # the users' attribute tokens are read up to here
        self.watermark = 0
        self._folded_seq = 0
        self._pending: list[tuple[int, Event, list[float]]] = []  # (seq, example event, features)
        self._unfolded: list[tuple[int, Event]] = []  # fetched, not folded yet (label window still open)
        self._folded_since_watermark: list[Event] = []  # where the labels of waiting examples come from
        self._impression_watermark = 0.0  # impressions served up to this time are trained on (persisted)
        self._impressions_seen = 0.0  # ... and up to this time turned into waiting examples
        self._impressions: list[Impression] = []  # fetched, not yet turned into examples
        self._explored = ExploredLists()  # explored served lists, to judge candidates on (off-policy)
        self._reservoir = _Reservoir(config.replay_capacity, np.random.default_rng(config.seed))
        self._last_round = time.monotonic()
        self.rounds: list[RoundResult] = []
        self.skipped_examples = 0  # examples whose features could not be read exactly (older than kept history)
        self._erasures_seen = 0  # users forgotten up to this erasure are in nothing held here
        self._from_scratch = False  # the whole log waits for a version trained from nothing (until bootstrap)

    @classmethod
    async def open_when_reachable(
        cls, config: ContinualConfig, stop: asyncio.Event, *, from_scratch: bool = False
    ) -> ContinualTrainer | None:
        """:meth:`open`, tried again (with backoff) while the event store cannot be reached, until ``stop`` is set
        (then None): a trainer started while its database restarts waits for it instead of exiting."""
        outage = _Outage()
        while not stop.is_set():
            try:
                trainer = await cls.open(config, from_scratch=from_scratch)
            except StoreError as exc:
                outage.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), outage.backoff_s)
                continue
            outage.over()
            return trainer
        return None

    @classmethod
    async def open(cls, config: ContinualConfig, *, from_scratch: bool = False) -> ContinualTrainer:
        """Open the store, take the deployment's settings from it (or write the configured ones to an empty
        store) and rebuild the feature state up to the watermark (a restart resumes there).

        With ``from_scratch`` it starts from the beginning of the log instead: every event in the store waits to
        be trained on, and :meth:`bootstrap` then trains a new version from nothing on all of them (after users
        were forgotten, a version whose weights hold nothing of their events).
        """
        store = await open_store(config.store_url)
        try:
            settings, written = await deployment.settle(
                store, deployment.DeploymentSettings(config.spec, config.labels)
            )
        except BaseException:
            await store.close()
            raise
        if written:
            _LOGGER.info("deployment settings written to the empty event store: %s", settings.describe())
        elif (settings.features, settings.labels) != (config.spec, config.labels):
            _LOGGER.warning(
                "the event store's deployment settings win over this trainer's (%s): %s",
                deployment.DeploymentSettings(config.spec, config.labels).describe(),
                settings.describe(),
            )
            config = dataclasses.replace(config, spec=settings.features, labels=settings.labels)
        else:
            _LOGGER.info("deployment settings from the event store: %s", settings.describe())
        trainer = cls(config, store)
        trainer._from_scratch = from_scratch
        await trainer._resume()
        return trainer

    async def _resume(self) -> None:
        self._users_seq = 0  # the state is new: every user's tokens are read again
        self._erasures_seen = await self.store.last_erasure_seq()  # what is read next holds none of them
        self.watermark = 0 if self._from_scratch else int(await self.store.get_setting(WATERMARK_KEY) or 0)
        stored_impressions = await self.store.get_setting(IMPRESSION_WATERMARK_KEY)
        self._impression_watermark = 0.0 if self._from_scratch else float(stored_impressions or 0.0)
        self._impressions_seen = self._impression_watermark
        await self._load_catalogue()
        past: list[Event] = []
        async for batch in self.store.events():
            for seq, event in batch:
                if seq <= self.watermark:
                    past.append(event)
                else:
                    self._unfolded.append((seq, event))
        # The watermark's events were trained on already; they only feed the features (and the replay pool).
        self.state.update_many(past)
        self._folded_seq = self.watermark
        _LOGGER.info("resumed at watermark %d (%d past events folded)", self.watermark, len(past))

    async def _load_catalogue(self) -> None:
        """The items as the store holds them now, and the users' attribute tokens written since the last call."""
        for item in await self.store.items():
            self.state.upsert_item(item)
        changed, self._users_seq = await self.store.users_changed(after_seq=self._users_seq)
        for user_key, tokens in changed:
            self.state.upsert_user(user_key, tokens)

    async def _serving_version(self) -> int | None:
        """The version to warm-start from and compare with: the serving one, else the newest in the repository;
        but after an upgrade of the features or the model's inputs, the newest version of the deployment's that
        has not failed (a new first version, waiting for its rollout), or None when there is none yet."""
        records = {r.version: r for r in await self.store.versions()}
        serving = [v for v, r in records.items() if r.state == "serving"]
        versions = export.existing_versions(self.config.repository / "preftrack")
        chosen = max(serving) if serving else (versions[-1] if versions else None)
        if chosen is None:
            return None
        allowed = lineage(records)
        if self._compatible(chosen):
            # After a version trained from scratch (continual --from-scratch: users were forgotten), the next
            # versions build on it or on its newest descendant, not on the weights from before it, even while
            # those still serve (registry.lineage_root).
            if allowed is None or chosen in allowed:
                return chosen
            root = lineage_root(records)
            # The root itself even if it lost its canary (rolled back): the next versions go on from it.
            heirs = [
                v
                for v in versions
                if v in allowed and (v == root or records[v].state not in FINAL_STATES) and self._compatible(v)
            ]
            return max(heirs) if heirs else chosen
        usable = [
            v
            for v in versions
            if self._compatible(v)
            and records.get(v) is not None
            and records[v].state not in FINAL_STATES
            and (allowed is None or v in allowed)
        ]
        return max(usable) if usable else None

    async def _next_version(self) -> int:
        """The number after every version registered (a rejected round's has no folder) and every folder."""
        registered = [r.version for r in await self.store.versions()]
        return max(registered + export.existing_versions(self.config.repository / "preftrack"), default=0) + 1

    def _compatible(self, version: int) -> bool:
        """Whether a version was trained on this deployment's features and model inputs (one whose metadata
        names no schema, from before schemas were recorded, is taken as it is, as the gateway takes it)."""
        recorded = deployment.metadata_schema(export.read_metadata(self.config.repository, version))
        return recorded is None or recorded == self.config.spec.schema_hash()

    async def _forget_erased(self) -> None:
        """Users were forgotten (their events deleted from the store): drop everything held in memory and resume
        from the store as a restart would, so no feature sum, waiting example or replay sample keeps them."""
        if not await self.store.erasures(after_seq=self._erasures_seen, limit=1):
            return
        self.state = FeatureState(self.config.spec)
        self._pending, self._unfolded, self._folded_since_watermark, self._impressions = [], [], [], []
        self._explored.clear()
        self._reservoir = _Reservoir(self.config.replay_capacity, np.random.default_rng(self.config.seed))
        seen = self._erasures_seen
        try:
            await self._resume()
        except BaseException:
            self._erasures_seen = seen  # half rebuilt: the next poll starts the rebuild over
            raise
        _LOGGER.info("users were forgotten: features and waiting examples rebuilt from the event store")

    async def poll(self) -> int:
        """Fetch new events and fold every one whose examples' labels are final; returns examples waiting."""
        await self._forget_erased()
        await self._load_catalogue()
        last = self._unfolded[-1][0] if self._unfolded else self._folded_seq
        async for batch in self.store.events(after_seq=last):
            self._unfolded.extend(batch)
        if self.config.use_impressions:
            after = self._impressions[-1].timestamp_s if self._impressions else self._impressions_seen
            self._impressions.extend(await self.store.impressions_after(after))
        if not self._unfolded:
            return len(self._pending)
        window = self.config.labels.attribution_window_s
        example_types = set(self.config.labels.example_types)
        horizon = max(event.timestamp_s for _, event in self._unfolded)
        cut = len(self._unfolded)
        for index, (_, event) in enumerate(self._unfolded):
            if event.event_type in example_types and window > 0 and event.timestamp_s + window > horizon:
                cut = index  # this example's label could still change: stop folding here
                break
        for seq, event in self._unfolded[:cut]:
            self._take_impressions(seq, up_to_s=event.timestamp_s, horizon_s=horizon)
            if event.event_type in example_types:
                try:
                    row = self.state.example_row(event)
                except PointInTimeError:  # committed later than the history its keys keep: never guess
                    self.skipped_examples += 1
                else:
                    self._pending.append((seq, event, row))
            self.state.update(event)
            self._folded_since_watermark.append(event)
            self._folded_seq = seq
        self._unfolded = self._unfolded[cut:]
        if not self._unfolded:  # everything folded: impressions up to the horizon have their features
            self._take_impressions(self._folded_seq, up_to_s=horizon, horizon_s=horizon)
        return len(self._pending)

    def _take_impressions(self, seq: int, *, up_to_s: float, horizon_s: float) -> None:
        """Turn served lists up to ``up_to_s`` whose label window has closed into waiting examples."""
        window = self.config.labels.attribution_window_s
        while self._impressions and self._impressions[0].timestamp_s <= up_to_s:
            impression = self._impressions[0]
            if impression.timestamp_s + window > horizon_s:
                return
            self._impressions.pop(0)
            self._explored.add(impression)
            self.state.served(impression.user_key, impression.timestamp_s)  # an action its user's influence counts
            try:
                at, terms = impression.timestamp_s, impression.query_terms  # the query it was served for
                rows = self.state.rows(impression.user_key, impression.item_ids, at, terms)
            except PointInTimeError:
                self.skipped_examples += len(impression.item_ids)
                continue
            for item_id, row in zip(impression.item_ids, rows, strict=True):
                exposure = Event(
                    event_id=exposure_id(impression.recommendation_id, item_id),
                    user_id=impression.user_key,
                    item_id=item_id,
                    event_type="view",
                    timestamp_s=impression.timestamp_s,
                )
                self._pending.append((seq, exposure, row))
            self._impressions_seen = impression.timestamp_s

    def _label(self, positives: dict[tuple[str, str], list[float]], event: Event) -> float:
        spec = self.config.spec
        if spec.is_positive(event.event_type, event.value):
            return 1.0
        later = positives.get((event.user_id, event.item_id), [])
        k = bisect.bisect_right(later, event.timestamp_s)
        return (
            1.0 if k < len(later) and later[k] <= event.timestamp_s + self.config.labels.attribution_window_s else 0.0
        )

    def _examples(self) -> Examples:
        positives: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        # A label looks forward only: at folded events after the watermark and at those not folded yet.
        for event in [*self._folded_since_watermark, *(e for _, e in self._unfolded)]:
            if self.config.spec.is_positive(event.event_type, event.value):
                positives[(event.user_id, event.item_id)].append(event.timestamp_s)
        for times in positives.values():
            times.sort()
        events = [e for _, e, _ in self._pending]
        inputs = model_inputs(
            [e.user_id for e in events],
            [self.state.item(e.item_id) for e in events],
            np.array([row for _, _, row in self._pending], dtype=np.float32),
            [self.state.user_tokens(e.user_id) for e in events],
        )
        return Examples(
            user_id=inputs["user_id"],
            item_id=inputs["item_id"],
            category_id=inputs["category_id"],
            features=inputs["features"],
            attributes=inputs["attributes"],
            label=np.array([self._label(positives, e) for e in events], dtype=np.float32),
            timestamp_s=np.array([e.timestamp_s for e in events], dtype=np.float64),
            users=[e.user_id for e in events],
            items=[e.item_id for e in events],
            # Counted now: every event of the minute after an example is folded by then (but at the newest hour's
            # edge), as the gateway's layer counts it once that minute has passed.
            influence=np.array([influence(self.state.activity(e.user_id, e.timestamp_s)) for e in events], np.float32),
        )

    def waiting_examples(self) -> tuple[list[str], Examples]:
        """The labelled examples waiting for the next round, with the id of the event (or served list) behind each."""
        return [event.event_id for _, event, _ in self._pending], self._examples()

    def due(self) -> bool:
        """Whether a round should run now."""
        if not self._pending:
            return False
        return (
            len(self._pending) >= self.config.trigger_examples
            or time.monotonic() - self._last_round >= self.config.trigger_seconds
        )

    async def train_round(self) -> RoundResult | None:
        """Train, gate and export (or reject) one candidate on the waiting examples."""
        if not self._pending:
            return None
        cfg = self.config
        serving_version = await self._serving_version()
        if serving_version is None:
            if not export.existing_versions(cfg.repository / "preftrack"):
                raise RuntimeError(f"no serving version to warm-start from in {cfg.repository}; train a first one")
            # After an upgrade that changed the features or the model's inputs, no version of the old ones can
            # serve or be warm-started from: train a first version of the new ones on the waiting examples.
            _LOGGER.warning(
                "no version was trained on this deployment's features and model inputs (schema %s): training a "
                "new first version instead of warm-starting",
                cfg.spec.schema_hash(),
            )
            version, (n_new, first_seq, last_seq) = await self._bootstrap(model.ModelConfig(seed=cfg.seed))
            self._last_round = time.monotonic()
            reason = f"schema {cfg.spec.schema_hash()}: a new first version (the earlier ones were trained on others)"
            result = RoundResult(version, True, n_new, 0, first_seq, last_seq, {}, {}, reason)
            self.rounds.append(result)
            return result
        examples = self._examples()
        example_ids = [event.event_id for _, event, _ in self._pending]
        first_seq, last_seq = self._pending[0][0], self._pending[-1][0]
        teaching = examples.weights() > 0.0  # the others' ids were far busier than people: they teach and judge nothing
        if not teaching.any():
            await self._advance_watermarks()
            self._last_round = time.monotonic()
            _LOGGER.info("round skipped: its %d examples came from ids far busier than people", len(examples))
            return None
        examples = examples.take(teaching)
        example_ids = [example_ids[i] for i in np.flatnonzero(teaching)]
        order = np.argsort(examples.timestamp_s, kind="stable")
        n_holdout = max(1, int(len(order) * cfg.holdout_fraction))
        new_train, recent = examples.take(order[:-n_holdout]), examples.take(order[-n_holdout:])
        recent_ids = [example_ids[i] for i in order[-n_holdout:]]
        replay = self._reservoir.sample(int(cfg.replay_fraction * len(new_train)))
        older = self._reservoir.sample(min(5000, max(200, len(recent))))
        train_set = Examples.concat([new_train, replay]) if replay is not None and len(new_train) else new_train

        serving = export.SavedModelScorer(cfg.repository, serving_version)
        if (cfg.repository / "preftrack" / str(serving_version) / export.KERAS_FILE).exists():
            candidate = export.load_keras(cfg.repository, serving_version)
            candidate.compile(optimizer=model.keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy")
        else:
            _LOGGER.warning(
                "version %d has no %s to warm-start from; this round trains a fresh model",
                serving_version,
                export.KERAS_FILE,
            )
            candidate = model.build_model(
                model.ModelConfig(seed=cfg.seed, learning_rate=cfg.learning_rate),
                *model.fit_normalisation(train_set.features),
            )
        mconfig = model.ModelConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed + len(self.rounds))
        if len(train_set):
            model.train(candidate, train_set, mconfig)
        cand = metrics.evaluate(recent.label, model.predict(candidate, recent))
        serv = metrics.evaluate(recent.label, serving.predict(recent))
        # The holdout's explored lists, never trained on: what users would have done with the candidate's first items.
        judged = self._explored.evaluate(recent_ids, recent, lambda rows: model.predict(candidate, rows))
        refusal = gate_refusal(recent.label, cand, serv, cfg)
        shipped = refusal is None
        reason = refusal or "not worse than serving on the newest slice"
        if shipped and older is not None and older.label.min() != older.label.max():
            old_c = metrics.evaluate(older.label, model.predict(candidate, older))
            old_s = metrics.evaluate(older.label, serving.predict(older))
            cand["older_auc"], serv["older_auc"] = old_c["auc"], old_s["auc"]
            if old_c["auc"] < old_s["auc"] - 2 * cfg.auc_margin:
                shipped, reason = False, f"forgets: older-slice AUC {old_c['auc']:.4f} < serving {old_s['auc']:.4f}"

        next_version = await self._next_version()
        now = time.time()
        origin = {
            "parent": serving_version,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "n_new": len(examples),
            "n_replay": 0 if replay is None else len(replay),
            "feature_schema_hash": cfg.spec.schema_hash(),
        }
        if shipped:
            next_version = export.export_version(
                candidate,
                cfg.repository,
                {**origin, "metrics": cand, "serving_metrics": serv, **export.schema_metadata(cfg.spec, cfg.labels)},
                min_version=next_version,
            )
        await self._register_export(
            VersionRecord(
                version=next_version,
                state="exported" if shipped else "rejected",
                parent=serving_version,
                first_seq=first_seq,
                last_seq=last_seq,
                metrics={"candidate": cand, "serving": serv, "offpolicy": judged, **origin},
                note=reason,
                created_at=now,
                updated_at=now,
            ),
            f"offline gate: {reason}",
        )
        # Trained or rejected, these examples are done: move the watermark past them, durably.
        await self._advance_watermarks()
        self._reservoir.add(examples)
        self._last_round = time.monotonic()
        result = RoundResult(
            next_version,
            shipped,
            len(examples),
            0 if replay is None else len(replay),
            first_seq,
            last_seq,
            cand,
            serv,
            reason,
        )
        self.rounds.append(result)
        _LOGGER.info(
            "round: version %d %s (%s); %d new + %d replayed examples (%d skipped so far: features not exact), "
            "candidate AUC %.4f vs serving %.4f",
            next_version,
            "exported" if shipped else "rejected",
            reason,
            len(examples),
            origin["n_replay"],
            self.skipped_examples,
            cand["auc"],
            serv["auc"],
        )
        return result

    async def run_once(self, *, force: bool = False) -> RoundResult | None:
        """Poll, and train a round if one is due (or if ``force`` and anything waits)."""
        await self.poll()
        if force or self.due():
            return await self.train_round()
        return None

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Poll and train until ``stop`` is set."""
        outage = _Outage()
        while not stop.is_set():
            try:
                await self.run_once()
                outage.over()
            except StoreError as exc:  # the database is away: it reconnects by itself; the round is retried whole
                outage.failed(exc)
            except Exception:
                _LOGGER.exception("continual training round failed; retrying after the poll interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_interval_s + outage.backoff_s)

    async def wait_for_first_examples(self, stop: asyncio.Event, minimum: int, *, report_every_s: float = 30.0) -> bool:
        """Poll until at least ``minimum`` labelled examples wait, positives and negatives among them (enough to
        train a first version on), or until ``stop`` is set (after one more poll); returns whether they are there.
        A new deployment's store starts empty, so the trainer of a fresh stack waits here for the shop's first
        events."""
        reported = checked = -math.inf
        outage = _Outage()
        while True:
            try:
                waiting = await self.poll()
                outage.over()
            except StoreError as exc:  # the database is away: it reconnects by itself
                outage.failed(exc)
                if stop.is_set():
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.poll_interval_s + outage.backoff_s)
                continue
            # Labelling every waiting example is the costly part: at most every 10 s (and at the last poll).
            if waiting >= minimum and (stop.is_set() or time.monotonic() - checked >= 10.0):
                checked = time.monotonic()
                labels = self._examples().label
                if labels.min() < labels.max():
                    return True
            if stop.is_set():
                return False
            if time.monotonic() - reported >= report_every_s:
                reported = time.monotonic()
                _LOGGER.info(
                    "waiting for labelled examples to train a first version on: %d of %d, with both labels",
                    waiting,
                    minimum,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_interval_s)

    async def bootstrap(self, model_config: model.ModelConfig | None = None) -> int:
        """See :meth:`_bootstrap`; returns the version."""
        return (await self._bootstrap(model_config))[0]

    async def _bootstrap(self, model_config: model.ModelConfig | None = None) -> tuple[int, tuple[int, int, int]]:
        """Train a first version from the waiting examples (everything in the store after the watermark: all of it
        when the repository has no version) and export it; returns the version and (examples, first seq, last seq).

        Its user embeddings are keyed by the same pseudonyms the gateway scores with. The watermarks move past
        the events and served lists it used, so the continual rounds only ever see what came after.
        """
        cfg = self.config
        await self.poll()
        if not self._pending:
            raise RuntimeError("the event store holds no labelled examples to train a first version on")
        examples = self._examples()
        mconfig = model_config or model.ModelConfig(seed=cfg.seed)
        first = model.build_model(mconfig, *model.fit_normalisation(examples.features))
        model.train(first, examples, mconfig)
        first_seq, last_seq = self._pending[0][0], self._pending[-1][0]
        note = "bootstrap: trained from scratch on the store"
        for _ in range(3):  # another trainer may register the number first (a rejected round's has no folder)
            version = export.export_version(
                first,
                cfg.repository,
                {
                    "parent": None,
                    "first_seq": first_seq,
                    "last_seq": last_seq,
                    "n_new": len(examples),
                    **export.schema_metadata(cfg.spec, cfg.labels),
                },
                min_version=await self._next_version(),
            )
            now = time.time()
            record = VersionRecord(
                version=version,
                state="exported",
                first_seq=first_seq,
                last_seq=last_seq,
                metrics={"n_new": len(examples), "feature_schema_hash": cfg.spec.schema_hash()},
                note=note,
                created_at=now,
                updated_at=now,
            )
            if await self._register_export(record, note):
                break
            other = await self.store.version(version)
            if other is None or other.state != "rejected":  # a gateway may have found the folder ready meanwhile
                raise RuntimeError(f"version {version} was registered meanwhile as {other and other.state}; not ours")
            # Another trainer's rejected round took the number (it has no folder): this folder is ours.
            _LOGGER.warning("version %d was registered by another process meanwhile; exporting again", version)
            shutil.rmtree(cfg.repository / "preftrack" / str(version), ignore_errors=True)
        else:
            raise RuntimeError("the version trained from scratch could not be registered: its numbers kept clashing")
        await self._advance_watermarks()  # the served lists in it are trained on too
        self._reservoir.add(examples)
        self._from_scratch = False
        _LOGGER.info(
            "bootstrap: version %d trained on %d examples (seq %d..%d)", version, len(examples), first_seq, last_seq
        )
        return version, (len(examples), first_seq, last_seq)

    async def _advance_watermarks(self) -> None:
        """Move the watermarks past the examples (and served lists) just trained on: in the store first, then in
        memory, so they never move without their commit; a store failure leaves the examples waiting for the
        next round."""
        await self.store.put_setting(WATERMARK_KEY, str(self._folded_seq))
        await self.store.put_setting(IMPRESSION_WATERMARK_KEY, repr(self._impressions_seen))
        self.watermark = self._folded_seq
        self._impression_watermark = self._impressions_seen
        self._pending = []
        self._folded_since_watermark = []

    async def _register_export(self, record: VersionRecord, reason: str) -> bool:
        """Register an exported version; if the store fails, remove its folder first (no gateway may find an
        export the registry never heard of) and raise, so the round is retried whole."""
        try:
            return await self.registry.register(record, actor="trainer", reason=reason)
        except StoreError:
            shutil.rmtree(self.config.repository / "preftrack" / str(record.version), ignore_errors=True)
            raise

    async def close(self) -> None:
        """Close the store."""
        await self.store.close()
