"""The gateway's core, free of protobuf: scoring, recommendation, ingestion and model readiness.

The servicers translate messages to and from these calls; everything here works with the project's own
dataclasses, so it can be reasoned about (and reused by the rollout controller) without gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np

from preftrack_gateway import deployment
from preftrack_gateway.config import GatewayConfig
from preftrack_gateway.errors import InvalidRequestError, ModelNotReadyError, TritonUnavailableError
from preftrack_gateway.features import FeatureSpec, FeatureState, PointInTimeError
from preftrack_gateway.ingest import GroupCommitWriter, ImpressionLog, WriteResult
from preftrack_gateway.learner import OnlineLearner
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.schema import (
    MAX_ID_CHARS,
    MIN_TIMESTAMP_S,
    Event,
    EventValidationError,
    Item,
    check_id,
    stable_hash,
    validate_event,
)
from preftrack_gateway.store import EventStore, Impression, VersionRecord
from preftrack_gateway.triton import TritonScorer

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Scored:
    """Scores for items, in the order asked, and the version that produced them."""

    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    model_version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Recommended:
    """A ranked list (best first) with its recommendation id."""

    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    model_version: int
    recommendation_id: str


def _check_id(field: str, value: str) -> None:
    if not value or not value.strip():
        raise InvalidRequestError(f"{field} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequestError(f"{field} must be at most {MAX_ID_CHARS} characters")


def pseudonymous_user(core: GatewayCore, user_id: str) -> str:
    """Check a caller's raw user id and return its pseudonym; raises EventValidationError."""
    check_id("user_id", user_id)
    return core.pseudonymise(user_id)


class GatewayCore:
    """State and behaviour shared by the servicers of one gateway process."""

    def __init__(
        self,
        config: GatewayConfig,
        store: EventStore,
        scorer: TritonScorer,
        *,
        spec: FeatureSpec | None = None,
        on_readiness: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.scorer = scorer
        self.features = FeatureState(spec or config.feature_spec())
        self.pseudonymise = Pseudonymiser(config.pseudonym_key)
        self.writer = GroupCommitWriter(
            store,
            self._committed,  # features (and the per-event learner) of the settings start() settles on
            max_batch_events=config.commit_batch_events,
            max_pending_events=config.max_pending_events,
        )
        self.impressions = ImpressionLog(store)
        self.serving_version: int | None = None
        self._on_readiness = on_readiness or (lambda ready: None)
        self._health_task: asyncio.Task[None] | None = None
        self._triton_down_logged = False
        self._hashes: dict[str, tuple[int, int]] = {}
        self.learner = OnlineLearner(self.features, config.label_spec(), config.online_config())
        self._version_check = self._check_versions_against(self.features.spec)

    def _check_versions_against(self, spec: FeatureSpec) -> deployment.VersionCheck:
        return deployment.VersionCheck(spec.schema_hash(), self.config.model_repository, self.scorer.model_name)

    def _committed(self, events: Sequence[Event]) -> None:
        """Committed events move the features, then label what they finalise for the per-event learner."""
        self.learner.fold(events)

    async def _base_scores(
        self, user_keys: Sequence[str], item_ids: Sequence[str], rows: np.ndarray, version: int
    ) -> np.ndarray:
        """The serving version's own probabilities for labelled examples (the per-event learner's base)."""
        user_hashes = np.array([stable_hash(u) for u in user_keys], dtype=np.int64)
        return await self._triton_scores(user_hashes, item_ids, rows, version, self.config.triton_timeout_s)

    async def _triton_scores(
        self, user_hashes: np.ndarray, item_ids: Sequence[str], features: np.ndarray, version: int, timeout_s: float
    ) -> np.ndarray:
        """One Triton request: a row per (user, item) with its behaviour features, scored by ``version``."""
        hashes = np.array([self._item_hashes(i) for i in item_ids], dtype=np.int64).reshape(len(item_ids), 2)
        return await self.scorer.score(
            user_hashes,
            np.ascontiguousarray(hashes[:, 0]),
            np.ascontiguousarray(hashes[:, 1]),
            features,
            version=version,
            timeout_s=timeout_s,
        )

    async def start(self) -> None:
        """Settle the deployment's feature settings, rebuild the real-time features from the store, start the
        commit loop and the readiness probe. Raises ConfigError when explicit settings disagree with the store's."""
        settings = await deployment.gateway_settings(self.store, self.config)
        self.features = FeatureState(settings.features)
        self.learner = OnlineLearner(self.features, settings.labels, self.config.online_config())
        self._version_check = self._check_versions_against(settings.features)
        started = time.perf_counter()
        for item in await self.store.items():
            self.features.upsert_item(item)
        replayed: list[Event] = []
        async for batch in self.store.events():
            replayed.extend(event for _, event in batch)
        replayed.sort(key=lambda e: e.timestamp_s)
        self.learner.rebuild(replayed)  # folds the features; relearns the newest examples once a version serves
        _LOGGER.info(
            "rebuilt features from %d events and %d items in %.2f s",
            len(replayed),
            len(self.features.catalog),
            time.perf_counter() - started,
        )
        self.writer.start()
        self.impressions.start()
        self.learner.start(self._base_scores, lambda: self.serving_version)
        await self.refresh_readiness()
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop(), name="readiness")

    def _schema_refusal(self, version: int, record: VersionRecord | None) -> str | None:
        """Why a version must not serve (it was trained on other feature definitions), or None."""
        return self._version_check.refusal(version, None if record is None else record.metrics)

    async def _refuse(self, version: int, record: VersionRecord | None, note: str) -> None:
        """Register a version ``failed`` with ``note`` (once), so it is never served."""
        if record is not None and record.state == "failed" and record.note == note:
            return
        _LOGGER.error("refusing version %d: %s", version, note)
        now = time.time()
        if record is None:
            record = VersionRecord(version=version, state="failed", note=note, created_at=now, updated_at=now)
        await self.store.put_version(dataclasses.replace(record, state="failed", note=note, updated_at=now))

    async def _ship_exported(self, ready: list[int]) -> list[int]:
        """Load the newest version the trainer exported; switch traffic once it is ready. Returns ready versions.

        A version trained on other feature definitions than the deployment's is refused (registered ``failed``).
        """
        records = await self.store.versions()
        exported = [r for r in records if r.state == "exported" and r.version > (self.serving_version or 0)]
        if not exported:
            return ready
        candidate = exported[-1]
        now = time.time()
        note = self._schema_refusal(candidate.version, candidate)
        if note is not None:
            await self._refuse(candidate.version, candidate, note)
            return ready
        await self.store.put_version(dataclasses.replace(candidate, state="loading", updated_at=now))
        try:
            await self.scorer.load_versions([v for v in (self.serving_version, candidate.version) if v is not None])
            ready = await self.scorer.ready_versions()
        except (ModelNotReadyError, TritonUnavailableError) as exc:
            _LOGGER.error(
                "version %d failed to load; version %s keeps serving: %s",
                candidate.version,
                self.serving_version,
                exc.message,
            )
            await self.store.put_version(
                dataclasses.replace(candidate, state="failed", note=exc.message[:500], updated_at=time.time())
            )
            return await self.scorer.ready_versions()
        if candidate.version not in ready:
            await self.store.put_version(
                dataclasses.replace(candidate, state="failed", note="not ready after load", updated_at=time.time())
            )
            return ready
        previous = self.serving_version
        # The switch: from the next request on, calls pin the new version; calls in flight finish on the old one,
        # which stays loaded until the next version replaces it.
        self.serving_version = candidate.version
        await self.store.put_version(dataclasses.replace(candidate, state="serving", updated_at=time.time()))
        for old in records:  # the previous version (or, at start, whichever the registry still says serves)
            if old.version != candidate.version and (old.version == previous or old.state == "serving"):
                await self.store.put_version(dataclasses.replace(old, state="retired", updated_at=time.time()))
        for other in exported[:-1]:  # superseded before they were ever loaded
            await self.store.put_version(
                dataclasses.replace(other, state="retired", note="superseded", updated_at=time.time())
            )
        _LOGGER.info("now serving version %d (was %s)", candidate.version, previous)
        return ready

    async def _register_serving(self, version: int, record: VersionRecord | None) -> bool:
        """Register a version found ready in Triton as serving, unless its feature schema is refused (False)."""
        note = self._schema_refusal(version, record)
        if note is not None:
            await self._refuse(version, record, note)
            return False
        now = time.time()
        if record is None:
            await self.store.put_version(
                VersionRecord(
                    version=version, state="serving", note="found ready in Triton", created_at=now, updated_at=now
                )
            )
        elif record.state != "serving":
            await self.store.put_version(dataclasses.replace(record, state="serving", updated_at=now))
        return True

    async def refresh_readiness(self) -> bool:
        """Find the version to serve, ship a newly exported one, reload the model if Triton lost it."""
        try:
            versions = await self.scorer.ready_versions()
            if versions:
                versions = await self._ship_exported(versions)
            if not versions:
                _LOGGER.warning("no ready version of %s; asking Triton to load it", self.scorer.model_name)
                try:
                    await self.scorer.load()
                except ModelNotReadyError as exc:
                    _LOGGER.warning("%s", exc.message)
                versions = await self.scorer.ready_versions()
        except TritonUnavailableError as exc:
            if self.serving_version is not None or not self._triton_down_logged:
                _LOGGER.warning("%s", exc.message)
            self._triton_down_logged = True
            versions = []
        else:
            self._triton_down_logged = False
        version: int | None = None
        if self.serving_version in versions:
            version = self.serving_version
        elif versions:
            # Registered serving first, then the newest; a version refused for its feature schema is skipped
            # (Triton may keep it loaded, but no call is ever pinned to it).
            records = {r.version: r for r in await self.store.versions()}
            for candidate in sorted(
                versions, key=lambda v: (v in records and records[v].state == "serving", v), reverse=True
            ):
                if await self._register_serving(candidate, records.get(candidate)):
                    version = candidate
                    break
        if version != self.serving_version:
            _LOGGER.info("serving version changed: %s -> %s", self.serving_version, version)
        self.serving_version = version
        self._on_readiness(version is not None)
        return version is not None

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.refresh_readiness()
            except Exception:  # keep probing whatever happens
                _LOGGER.exception("readiness probe failed")

    def _version(self) -> int:
        if self.serving_version is None:
            raise ModelNotReadyError(f"no version of model {self.scorer.model_name} is ready in Triton yet")
        return self.serving_version

    def _item_hashes(self, item_id: str) -> tuple[int, int]:
        cached = self._hashes.get(item_id)
        if cached is None:
            cached = (stable_hash(item_id), stable_hash(self.features.item(item_id).primary_category))
            if len(self._hashes) < 1_000_000:
                self._hashes[item_id] = cached
        return cached

    def _as_of(self, as_of_s: float | None) -> float:
        now = time.time()
        if as_of_s is None:
            return now
        if not math.isfinite(as_of_s) or as_of_s < MIN_TIMESTAMP_S:
            raise InvalidRequestError("as_of must be a time after 1990-01-01")
        if as_of_s > now + self.config.max_future_skew_s:
            raise InvalidRequestError(f"as_of is {as_of_s - now:.0f} s in the future; check the client clock")
        return as_of_s

    async def _score_items(
        self, user_key: str, item_ids: Sequence[str], *, timeout_s: float, at_s: float
    ) -> tuple[np.ndarray, int, np.ndarray]:
        """Scores served (the version's, moved by the per-event correction), the version, its own scores."""
        version = self._version()
        try:
            rows = self.features.rows(user_key, item_ids, at_s)
        except PointInTimeError as exc:
            raise InvalidRequestError(
                f"the scoring time (as_of, or now) is older than the feature history kept for this user or these "
                f"items ({exc}); use a time within {self.features.retain_s / 3600:.0f} h of their latest events"
            ) from exc
        user_hashes = np.full(len(item_ids), stable_hash(user_key), dtype=np.int64)
        features = np.array(rows, dtype=np.float32)
        scores = await self._triton_scores(user_hashes, item_ids, features, version, timeout_s)
        return self.learner.adjust(user_key, item_ids, scores, rows), version, scores

    def _check_items(self, field: str, item_ids: Sequence[str]) -> None:
        if not item_ids:
            raise InvalidRequestError(f"{field} must name at least one item")
        if len(item_ids) > self.config.max_items_per_call:
            raise InvalidRequestError(
                f"{field} has {len(item_ids)} items; at most {self.config.max_items_per_call} per call"
            )
        for index, item_id in enumerate(item_ids):
            _check_id(f"{field}[{index}]", item_id)

    async def score(
        self,
        user_id: str,
        item_ids: Sequence[str],
        *,
        timeout_s: float,
        as_of_s: float | None = None,
    ) -> Scored:
        """Score each item for the user, in the order given (features read as of ``as_of_s``, default now)."""
        _check_id("user_id", user_id)
        self._check_items("item_ids", item_ids)
        at_s = self._as_of(as_of_s)
        scores, version, _ = await self._score_items(
            self.pseudonymise(user_id), item_ids, timeout_s=timeout_s, at_s=at_s
        )
        return Scored(tuple(item_ids), tuple(float(s) for s in scores), version)

    async def recommend(
        self,
        user_id: str,
        candidates: Sequence[str],
        k: int,
        exclude: Sequence[str],
        *,
        timeout_s: float,
        as_of_s: float | None = None,
    ) -> Recommended:
        """Rank the candidates (minus ``exclude``) for the user; return the top ``k`` and log the impression."""
        _check_id("user_id", user_id)
        self._check_items("candidate_item_ids", candidates)
        if k < 1:
            raise InvalidRequestError("k must be >= 1")
        at_s = self._as_of(as_of_s)
        excluded = set(exclude)
        pool = list(dict.fromkeys(c for c in candidates if c not in excluded))
        user_key = self.pseudonymise(user_id)
        recommendation_id = uuid.uuid4().hex
        if not pool:
            return Recommended((), (), self._version(), recommendation_id)
        scores, version, base = await self._score_items(user_key, pool, timeout_s=timeout_s, at_s=at_s)
        top = np.argsort(-scores, kind="stable")[:k]
        self.learner.expose(user_key, [pool[i] for i in top], at_s, base[top])
        result = Recommended(
            tuple(pool[i] for i in top), tuple(float(scores[i]) for i in top), version, recommendation_id
        )
        self.impressions.add(
            Impression(
                recommendation_id=recommendation_id,
                user_key=user_key,
                item_ids=result.item_ids,
                scores=result.scores,
                model_version=str(version),
                timestamp_s=at_s,
            )
        )
        return result

    def check(self, event: Event, *, now_s: float) -> Event:
        """Validate an event whose user id is already pseudonymised; returns it."""
        validate_event(event, now_s=now_s, max_future_skew_s=self.config.max_future_skew_s)
        if event.recommendation_id is not None and len(event.recommendation_id) > MAX_ID_CHARS:
            raise EventValidationError("recommendation_id", f"must be at most {MAX_ID_CHARS} characters")
        return event

    async def ingest(self, events: Sequence[Event]) -> WriteResult:
        """Commit prepared events durably (idempotent by event_id); the features move before this returns."""
        if not events:
            return WriteResult(0, 0)
        return await self.writer.write(events)

    async def upsert_items(self, items: Sequence[Item]) -> int:
        """Add or replace catalogue items."""
        for index, item in enumerate(items):
            _check_id(f"items[{index}].item_id", item.item_id)
            if not item.categories or any(not c for c in item.categories):
                raise InvalidRequestError(f"items[{index}].categories must hold at least one non-empty category")
            if not np.isfinite(item.price) or item.price < 0:
                raise InvalidRequestError(f"items[{index}].price must be a finite number >= 0")
        await self.store.upsert_items(items)
        for item in items:
            self.features.upsert_item(item)
            self._hashes.pop(item.item_id, None)
        return len(items)

    async def close(self) -> None:
        """Stop probing, commit what is queued, close the store and the Triton channel."""
        if self._health_task is not None:
            self._health_task.cancel()
        await self.learner.close()
        await self.writer.close()
        await self.impressions.close()
        await self.store.close()
        await self.scorer.close()
