"""The gateway's core, free of protobuf: scoring, recommendation, ingestion and model readiness.

The servicers translate messages to and from these calls; everything here works with the project's own
dataclasses, so it can be reasoned about (and reused by the rollout controller) without gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from preftrack_gateway import contract, deployment, lists, snapshot
from preftrack_gateway.backoff import Backoff
from preftrack_gateway.config import GatewayConfig
from preftrack_gateway.errors import (
    FailedPreconditionError,
    InvalidRequestError,
    ModelNotReadyError,
    TritonUnavailableError,
)
from preftrack_gateway.features import FEATURE_NAMES, FeatureSpec, FeatureState, PointInTimeError
from preftrack_gateway.identities import Identities, caller_key
from preftrack_gateway.ingest import CommitHealth, GroupCommitWriter, ImpressionLog, WriteResult
from preftrack_gateway.learner import OnlineLearner
from preftrack_gateway.lists import NO_RULES, ListRules
from preftrack_gateway.privacy import Pseudonymiser
from preftrack_gateway.retrieval import Retriever
from preftrack_gateway.rollout import RolloutController, Route
from preftrack_gateway.schema import (
    MAX_ATTRIBUTES,
    MAX_CATEGORIES,
    MAX_CATEGORY_CHARS,
    MAX_CONTEXT_KEY_CHARS,
    MAX_CONTEXT_VALUE_CHARS,
    MAX_ID_CHARS,
    MAX_TITLE_CHARS,
    MIN_TIMESTAMP_S,
    Event,
    EventValidationError,
    Item,
    check_id,
    check_ids,
    query_terms,
    stable_hash,
    validate_event,
)
from preftrack_gateway.store import CATALOG_VERSION_KEY, Erasure, EventStore, Impression, StoreError
from preftrack_gateway.triton import TritonScorer

_LOGGER = logging.getLogger(__name__)

#: Events folded between two turns of the event loop (a 20,000-event commit folded at once would hold every other
#: call, health checks included, for seconds).
_FOLD_CHUNK = 100


def _event_time(event: Event) -> float:
    return event.timestamp_s


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
    sources: tuple[str, ...]  # per item, where retrieval found it ("" for candidates the caller sent)
    fewer_than_k: bool


_QUERY_MATCH = FEATURE_NAMES.index("query_text_match")
#: Events the follower folds per turn of the follow lock (a waiting commit gets the lock in between).
_FOLLOW_TURN_EVENTS = 20_000


def _check_attributes(field: str, attributes: Sequence[tuple[str, str]], most: int, *, empty_values: bool) -> None:
    """INVALID_ARGUMENT naming ``field`` unless there are at most ``most`` (name, value) pairs, names of 1 to
    ``MAX_CONTEXT_KEY_CHARS`` characters and values of at most ``MAX_CONTEXT_VALUE_CHARS`` (and not empty, unless
    ``empty_values``): an item's attributes, a user's."""
    shortest = 0 if empty_values else 1
    if len(attributes) > most or any(
        not 0 < len(name) <= MAX_CONTEXT_KEY_CHARS or not shortest <= len(value) <= MAX_CONTEXT_VALUE_CHARS
        for name, value in attributes
    ):
        values = f"at most {MAX_CONTEXT_VALUE_CHARS}" if empty_values else f"1-{MAX_CONTEXT_VALUE_CHARS}"
        raise InvalidRequestError(
            f"{field}: at most {most}, names of 1-{MAX_CONTEXT_KEY_CHARS} characters, values of {values}"
        )


def check_request_id(field: str, value: str) -> None:
    """:func:`~preftrack_gateway.schema.check_id` for a request's field: INVALID_ARGUMENT naming it."""
    try:
        check_id(field, value)
    except EventValidationError as exc:
        raise InvalidRequestError(str(exc), field=field) from None


def pseudonymous_user(core: GatewayCore, user_id: str, session_id: str = "") -> str:
    """Check a caller's raw user id (or anonymous session id) and return its pseudonym, the key an event is stored
    under; raises EventValidationError."""
    return caller_key(core.pseudonymise, user_id, session_id)


class _ItemInputs:
    """Each item's model inputs (its id, its primary category, its attribute slots) as one row of a table, made
    once per item until the item changes: a request takes its items' rows in one gather, not item by item."""

    _MOST = 1 << 20  # rows made before the table starts again (items replaced leave their old rows behind)

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._table = np.zeros((1024, 2 + contract.ATTRIBUTE_SLOTS), dtype=np.int64)
        self._made = 0

    def clear(self) -> None:
        self._rows.clear()
        self._made = 0

    def forget(self, item_id: str) -> None:
        self._rows.pop(item_id, None)

    def take(self, item_ids: Sequence[str], item: Callable[[str], Item]) -> np.ndarray:
        """The rows of ``item_ids`` (``item`` gives a catalogue entry), in order: shape (n, 2 + ATTRIBUTE_SLOTS)."""
        if self._made + len(item_ids) > self._MOST:  # before any row of this call is read: none is overwritten
            self.clear()
        rows = self._rows
        index = [rows.get(item_id, -1) for item_id in item_ids]
        if -1 in index:
            for k, item_id in enumerate(item_ids):
                if index[k] == -1:
                    index[k] = rows.get(item_id, -1)
                    if index[k] == -1:
                        index[k] = rows[item_id] = self._make(item(item_id))
        return self._table[index]

    def _make(self, item: Item) -> int:
        if self._made == len(self._table):  # room for twice as many (a new row is written whole)
            self._table = np.resize(self._table, (2 * self._made, self._table.shape[1]))
        row = self._made
        self._table[row, 0] = stable_hash(item.item_id)
        self._table[row, 1] = stable_hash(item.primary_category)
        self._table[row, 2:] = contract.item_attribute_ids(item)
        self._made += 1
        return row


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
        on_store_health: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.scorer = scorer
        self.features = FeatureState(spec or config.feature_spec(), retrieval=Retriever())
        self.pseudonymise = Pseudonymiser(config.pseudonym_key)
        self.writer = GroupCommitWriter(
            store,
            self._committed,  # features (and the per-event learner) of the settings start() settles on
            max_batch_events=config.commit_batch_events,
            max_pending_events=config.max_pending_events,
            health=CommitHealth(on_store_health or (lambda up: None)),
        )
        self.impressions = ImpressionLog(store)
        self._on_readiness = on_readiness or (lambda ready: None)
        self._health_task: asyncio.Task[None] | None = None
        self._triton_down_logged = False
        self._item_inputs = _ItemInputs()
        self.learner = OnlineLearner(self.features, config.label_spec(), config.online_config())
        self._version_check = self._check_versions_against(self.features.spec)
        self.rollout = RolloutController(
            store, scorer, config.rollout_policy(), self.features.spec, self._version_check
        )
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._settings = deployment.DeploymentSettings(self.features.spec, config.label_spec())
        self._erasures_seen = 0  # every erasure up to here is applied to this process's state
        self._own_erasures: set[int] = set()  # erasures made here, past the watermark
        self._next_retention = 0.0
        self._folded_seq = 0  # the log is folded into the features up to here
        self._catalog_version: str | None = None
        self._users_seq = 0  # the users' attribute tokens are read up to here
        self._forgets = 0  # forget_user calls so far (a users read that one overtook is read again)
        self._follow_lock = asyncio.Lock()
        self._follow_task: asyncio.Task[None] | None = None
        self.identities = Identities()
        self._rng = random.Random()  # the exploration policy's draws

    def _check_versions_against(self, spec: FeatureSpec) -> deployment.VersionCheck:
        return deployment.VersionCheck(spec.schema_hash(), self.config.model_repository, self.scorer.model_name)

    async def _committed(self, own: list[Event], last_seq: int) -> None:
        """After this process's commit, before its callers are answered: the log up to ``last_seq`` is folded,
        in log order, so the features hold the commit (and any other replica's events numbered before it)."""
        async with self._follow_lock:
            if last_seq <= self._folded_seq:
                return
            await self._sync_catalog()
            if own and last_seq - len(own) == self._folded_seq:  # nothing of anyone else's in between
                await self._fold(own)
                self._folded_seq = last_seq
                return
            await self._follow_log(up_to_seq=last_seq)

    async def _fold(self, events: Sequence[Event]) -> None:
        """Move the features with events (and label what they finalise for the per-event learner), in chunks
        with a turn of the event loop between them, so that a large batch does not hold every other call.

        In time order: the sums do not depend on the order, but an event older than what its keys hold already
        costs a re-sum of everything after it (many streams' messages in arrival order made 100-event folds take
        0.3 s)."""
        ordered = sorted(self.identities.translate(events), key=_event_time)
        for start in range(0, len(ordered), _FOLD_CHUNK):
            self.learner.fold(ordered[start : start + _FOLD_CHUNK])
            if start + _FOLD_CHUNK < len(ordered):
                await asyncio.sleep(0)

    async def _follow_log(self, *, up_to_seq: float = math.inf, max_events: float = math.inf) -> int:
        """Fold the events committed after ``_folded_seq`` by any process, in log order, up to sequence number
        ``up_to_seq`` and at most about ``max_events`` of them (call with ``_follow_lock`` held); returns how many.

        The bounds keep the lock's holder from reading an ever-growing tail: a commit waiting to answer its
        callers folds only up to its own events, and the follower takes the rest in turns."""
        await self._sync_catalog()
        folded = 0
        async for batch in self.store.events(after_seq=self._folded_seq, batch_size=5000):
            taken = [(seq, event) for seq, event in batch if seq <= up_to_seq]
            if taken:
                await self._fold([event for _, event in taken])
                self._folded_seq = taken[-1][0]
                folded += len(taken)
            if len(taken) < len(batch) or folded >= max_events:
                break
        return folded

    async def _sync_catalog(self) -> None:
        """Reload the catalogue when another replica changed it (before folding events that may name its items:
        an event is folded with its item's categories as they are then, the same on every replica)."""
        version = await self.store.get_setting(CATALOG_VERSION_KEY)
        if version == self._catalog_version:
            return
        items = await self.store.items()
        for item in items:
            self.features.upsert_item(item)
        self._items_changed([item.item_id for item in items])
        self._catalog_version = version

    async def _sync_users(self) -> None:
        """Take in the users' attribute tokens written by any process since the last turn, in the order written
        (the follower's turn: they are model inputs, not folded into features, so a commit need not wait for them).
        An erasure made here meanwhile may have deleted one of them: then they are read again at the next turn;
        one made elsewhere makes this process rebuild from the store."""
        forgets = self._forgets
        changed, last = await self.store.users_changed(after_seq=self._users_seq)
        async with self._follow_lock:
            if forgets != self._forgets:
                return
            for user_key, tokens in changed:
                self.features.upsert_user(user_key, tokens)
            self._users_seq = last

    async def _sync_identities(self) -> None:
        """Take in the sessions merged into users by any process since the last turn, in the order recorded: what
        this process folded under each session's key moves to its user's."""
        merges = await self.store.identities(after_seq=self.identities.seq)
        if not merges:
            return
        async with self._follow_lock:
            for seq, session_key, user_key in merges:
                if not self.identities.knows(session_key):
                    await self._merge(session_key, user_key)
                self.identities.seq = seq

    async def _merge(self, session_key: str, user_key: str) -> int:
        """Take in a merge at the fold position (call with ``_follow_lock`` held); returns how many events moved."""
        return await self.identities.merge(self.store, self.learner, session_key, user_key, up_to_seq=self._folded_seq)

    async def identify_user(self, session_id: str, user_id: str) -> tuple[int, bool]:
        """Merge an anonymous session into a user, for good: (events moved, whether it was merged already).

        Idempotent: the same merge again moves nothing. FAILED_PRECONDITION when the session belongs to another
        user already."""
        check_request_id("session_id", session_id)
        check_request_id("user_id", user_id)
        session_key, user_key = self.pseudonymise.session(session_id), self.pseudonymise(user_id)
        # No commit or fold in between: every event of the session is folded either before the move or after it
        # (then as the user's).
        async with self.writer.exclusive, self._follow_lock:
            added, owner = await self.store.merge_session(session_key, user_key, at=time.time())
            if owner != user_key:
                raise FailedPreconditionError(
                    "session_id belongs to another user already (a session is merged into one user, for good)"
                )
            if not added and self.identities.knows(session_key):
                return 0, True
            moved = await self._merge(session_key, user_key)
        _LOGGER.info("a session was merged into its user: %d events moved", moved)
        return moved, not added

    def caller(self, user_id: str, session_id: str = "") -> str:
        """The key a Score or Recommend call is answered for: the user's, or the anonymous session's (its user's
        once merged); INVALID_ARGUMENT naming the field when the ids are bad."""
        try:
            return self.identities.user_of(caller_key(self.pseudonymise, user_id, session_id))
        except EventValidationError as exc:
            raise InvalidRequestError(str(exc), field=exc.field) from None

    def _items_changed(self, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            self._item_inputs.forget(item_id)
        self.learner.forget_items(item_ids)

    async def _follower(self) -> None:
        """Follow the shared log: events committed through other replicas reach this one's features within
        about ``follow_interval_s``. While the store cannot be read, the turns back off (doubling to 5 s), one log
        line each."""
        backoff = Backoff(0.1, 5.0)
        while True:
            await asyncio.sleep(self.config.follow_interval_s + backoff.delay_s)
            try:
                await self._sync_users()
                await self._sync_identities()
                if self.writer.exclusive.locked():
                    # A commit of this process is under way: it folds the log up to its own events (any other
                    # replica's before them included) without reading back what it has in memory.
                    continue
                async with self._follow_lock:
                    await self._follow_log(max_events=_FOLLOW_TURN_EVENTS)
                if backoff.succeeded():
                    _LOGGER.info("following the event log again")
            except StoreError as exc:
                _LOGGER.warning("following the event log failed, will retry in %.1f s: %s", backoff.failed(), exc)
            except Exception:  # a bug must not stop the follower for good: log it and go on
                _LOGGER.exception("following the event log failed")
                await asyncio.sleep(1.0)

    async def _base_scores(
        self, user_keys: Sequence[str], item_ids: Sequence[str], rows: np.ndarray, version: int
    ) -> np.ndarray:
        """The serving version's own probabilities for labelled examples (the per-event learner's base)."""
        return await self.triton_scores(user_keys, item_ids, rows, version, self.config.triton_timeout_s)

    async def triton_scores(
        self,
        user_keys: str | Sequence[str],
        item_ids: Sequence[str],
        features: np.ndarray,
        version: int,
        timeout_s: float,
    ) -> np.ndarray:
        """One Triton request: a row per (user, item) with its behaviour features, scored by ``version``.
        ``user_keys`` is one pseudonymised user for every row, or one per row."""
        n = len(item_ids)
        if isinstance(user_keys, str):
            user_id, user_attributes = self._user_inputs(user_keys)
            user_ids = np.full(n, user_id, dtype=np.int64)
        else:
            distinct = {key: self._user_inputs(key) for key in dict.fromkeys(user_keys)}
            user_ids = np.array([distinct[key][0] for key in user_keys], dtype=np.int64)
            user_attributes = np.array([distinct[key][1] for key in user_keys], dtype=np.int64).reshape(
                n, contract.ATTRIBUTE_SLOTS
            )
        items = self._item_inputs.take(item_ids, self.features.item)
        return await self.scorer.score(
            user_ids,
            np.ascontiguousarray(items[:, 0]),
            np.ascontiguousarray(items[:, 1]),
            features,
            contract.attribute_ids(user_attributes, items[:, 2:]),
            version=version,
            timeout_s=timeout_s,
        )

    def _user_inputs(self, user_key: str) -> tuple[int, np.ndarray]:
        return stable_hash(user_key), contract.user_attribute_ids(self.features.user_tokens(user_key))

    async def start(self) -> None:
        """Settle the deployment's feature settings, rebuild the real-time features from the store, start the
        commit loop and the readiness probe. Raises ConfigError when explicit settings disagree with the store's."""
        settings = await deployment.gateway_settings(self.store, self.config)
        self._settings = settings
        self._version_check = self._check_versions_against(settings.features)
        self.rollout = RolloutController(
            self.store, self.scorer, self.config.rollout_policy(), settings.features, self._version_check
        )
        self._erasures_seen = await self.store.last_erasure_seq()  # the log read next holds none of them
        loaded = await self._load_state()
        self.features, self.learner, self._folded_seq, self._users_seq, self.identities = loaded
        self.writer.start()
        self.impressions.start()
        self.learner.start(self._base_scores, lambda: self.serving_version)
        await self.refresh_readiness()
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop(), name="readiness")
        self._follow_task = asyncio.get_running_loop().create_task(self._follower(), name="log-follower")

    async def _load_state(
        self, *, use_snapshot: bool = True
    ) -> tuple[FeatureState, OnlineLearner, int, int, Identities]:
        """Features and per-event learner rebuilt from the store's catalogue, users and event log (in time order),
        or from a snapshot and the log after it, the last event sequence number read and the users' one.

        The cyclic garbage collector is paused meanwhile: building millions of long-lived objects otherwise
        triggers collection after collection over all of them (measured: a third of a snapshot restart)."""
        paused = gc.isenabled()
        gc.disable()
        try:
            return await self._build_state(use_snapshot)
        finally:
            if paused:
                gc.enable()

    async def _build_state(self, use_snapshot: bool) -> tuple[FeatureState, OnlineLearner, int, int, Identities]:
        started = time.perf_counter()
        self._catalog_version = await self.store.get_setting(CATALOG_VERSION_KEY)
        items = await self.store.items()
        users, users_seq = await self.store.users_changed()
        taken = await self._read_snapshot() if use_snapshot else None
        features, after = (
            (taken.features, taken.folded_seq)
            if taken
            else (FeatureState(self._settings.features, retrieval=Retriever()), 0)
        )
        learner = OnlineLearner(features, self._settings.labels, self.config.online_config())
        if taken is not None:
            learner.correction, learner.labeller = taken.correction, taken.labeller
            learner.history, learner.base_version = taken.history, taken.base_version
        for item in items:
            features.upsert_item(item)
        features.users = {}
        for user_key, tokens in users:
            features.upsert_user(user_key, tokens)
        identities = taken.identities if taken is not None else Identities()
        for seq, session_key, user_key in await self.store.identities():
            if not identities.knows(session_key):  # merged after the snapshot: move what it folded as the session's
                await identities.merge(self.store, learner, session_key, user_key, up_to_seq=after)
            identities.seq = seq
        replayed: list[Event] = []
        last = after
        async for batch in self.store.events(after_seq=after):
            replayed.extend(event for _, event in batch)
            last = batch[-1][0]
        replayed = list(identities.translate(replayed))
        replayed.sort(key=_event_time)
        learner.rebuild(replayed)  # folds the features; relearns the newest examples once a version serves
        _LOGGER.info(
            "rebuilt features from %s%d events and %d items in %.2f s",
            f"a snapshot at seq {after} and " if taken is not None else "",
            len(replayed),
            len(features.catalog),
            time.perf_counter() - started,
        )
        return features, learner, last, users_seq, identities

    def _snapshot_settings(self) -> str:
        """What a snapshot must have been folded and learned with to stand in for the log: the deployment's
        settings and the per-event layer's (a correction learned with other settings is not this one)."""
        online = self.config.online_config().resolved(self._settings.labels)
        return f"{self._settings.to_json()} {online!r} steps={online.steps()}"

    async def _read_snapshot(self) -> snapshot.Snapshot | None:
        if not self.config.snapshot_dir:
            return None
        return snapshot.load(
            Path(self.config.snapshot_dir),
            settings=self._snapshot_settings(),
            erasures_seen=self._erasures_seen,
            last_seq=await self.store.last_seq(),
        )

    def save_snapshot(self) -> Path | None:
        """Write the real-time state at its log position into ``snapshot_dir`` (None: not configured). Blocks the
        event loop while it pickles (about a second per million events folded); call it when nothing else can
        move the state: at shutdown, or holding the commit and follow locks."""
        if not self.config.snapshot_dir:
            return None
        started = time.perf_counter()
        path = snapshot.save(
            Path(self.config.snapshot_dir),
            snapshot.Snapshot(
                settings=self._snapshot_settings(),
                folded_seq=self._folded_seq,
                erasures_seen=self._erasures_seen,
                features=self.features,
                correction=self.learner.correction,
                labeller=self.learner.labeller,
                history=self.learner.history,
                base_version=self.learner.base_version,
                identities=self.identities,
            ),
        )
        _LOGGER.info(
            "snapshot at seq %d written to %s in %.2f s", self._folded_seq, path, time.perf_counter() - started
        )
        return path

    async def _reload_state(self) -> None:
        """Rebuild the features from the store while serving with the old ones, then swap, with the events
        committed meanwhile folded in and no commit in between."""
        while True:
            forgets = self._forgets
            # Not from a snapshot: it may hold the forgotten.
            features, learner, last, users_seq, identities = await self._load_state(use_snapshot=False)
            async with self.writer.exclusive, self._follow_lock:
                if forgets != self._forgets:  # a user forgotten here meanwhile may be in what was read: again
                    _LOGGER.info("a user was forgotten during the rebuild; rebuilding again")
                    continue
                old, self.features, self.learner, self._folded_seq = self.learner, features, learner, last
                self.identities = identities
                # The catalogue and the users were read when the rebuild began: changes since then went to the old
                # state only. The catalogue is read again now; the users written since are taken in at the
                # follower's next turn.
                self._catalog_version, self._users_seq = None, users_seq
                await self._follow_log()
                self._item_inputs.clear()
                break
        await old.close()
        learner.start(self._base_scores, lambda: self.serving_version)

    async def forget_user(self, user_id: str, *, actor: str) -> Erasure:
        """Erase a user: their events and served lists leave the store and the real-time state (features,
        per-event learner), and the erasure is recorded under a ticket that names no one."""
        check_request_id("user_id", user_id)
        user_key = self.pseudonymise(user_id)
        # No commit or fold of the user's events, and no write of their served lists, in between.
        async with self.writer.exclusive, self._follow_lock, self.impressions.lock:
            self._forgets += 1
            self.impressions.drop_user(user_key)
            forgotten = await self.store.forget_user(user_key, ticket=uuid.uuid4().hex, at=time.time(), actor=actor)
            held = [event for seq, event in forgotten.events if seq <= self._folded_seq]  # the rest never came in
            # Their merged sessions' events were folded as theirs; the sessions' keys go with them.
            self.learner.forget(user_key, self.identities.translate(held), forgotten.impression_items)
            self.identities.drop_user(user_key)
        self.pseudonymise.forget(user_id)
        self._own_erasures.add(forgotten.erasure.seq)  # applied here; the watermark moves past it in order
        _LOGGER.info(
            "erasure %s by %s: %d events and %d served lists deleted",
            forgotten.erasure.ticket,
            actor,
            forgotten.erasure.events_deleted,
            forgotten.erasure.impressions_deleted,
        )
        return forgotten.erasure

    async def _catch_up_erasures(self) -> None:
        """Users forgotten through another process: this one rebuilds its state from the store without them.
        The watermark moves over erasures in order, so one made elsewhere is never skipped because this process
        made a later one itself."""
        new = await self.store.erasures(after_seq=self._erasures_seen, limit=1000)
        if not new:
            return
        if any(e.seq not in self._own_erasures for e in new):
            _LOGGER.info("users were forgotten through another process; rebuilding the features")
            await self._reload_state()
        self._erasures_seen = new[-1].seq
        self._own_erasures = {seq for seq in self._own_erasures if seq > self._erasures_seen}

    async def _apply_retention(self) -> None:
        """Delete raw events (and served lists) older than the retention setting, in bounded chunks."""
        days = self.config.event_retention_days
        if days <= 0 or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + 3600.0
        cutoff = time.time() - days * 86_400.0
        deleted = 0
        while (chunk := await self.store.delete_events_before(cutoff, limit=50_000)) > 0:
            deleted += chunk
            await asyncio.sleep(0)
        if deleted:
            _LOGGER.info("retention: deleted %d events and served lists older than %g days", deleted, days)

    @property
    def serving_version(self) -> int | None:
        """The stable version (None while none is ready)."""
        return self.rollout.stable

    async def refresh_readiness(self) -> bool:
        """Catch up with the registry and Triton (the rollout controller ships, loads and decides)."""
        try:
            ready = await self.rollout.refresh()
        except TritonUnavailableError as exc:
            if self.rollout.stable is not None or not self._triton_down_logged:
                _LOGGER.warning("%s", exc.message)
            self._triton_down_logged = True
            self.rollout.triton_lost()
            ready = False
        except StoreError as exc:
            # The registry cannot be read: nothing moves (a transition is one transaction), and scoring goes on
            # with the versions it knows; readiness stays as it was. The store's health logs the outage.
            if self.writer.health.up:
                _LOGGER.warning("reading the registry failed, will retry: %s", exc)
            return self.rollout.stable is not None
        else:
            self._triton_down_logged = False
        self._on_readiness(ready)
        return ready

    async def probe_store(self) -> bool:
        """Whether the store can commit, asked of the store itself: every health interval, so that health turns
        NOT_SERVING when it goes away with no traffic, and SERVING again when it is back (while it is down, with a
        real commit)."""
        health = self.writer.health
        try:
            await self.store.probe(write=not health.up)
        except StoreError as exc:
            health.failed(exc)
            return False
        if not health.up:  # the probe was a commit
            health.ok()
        return True

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            store_up = await self.probe_store()
            try:
                await self.refresh_readiness()
            except Exception:  # keep probing whatever happens
                _LOGGER.exception("readiness probe failed")
            if not store_up:
                continue  # housekeeping waits for the store
            try:
                await self._catch_up_erasures()
                await self._apply_retention()
            except StoreError as exc:
                _LOGGER.warning("store housekeeping failed, will retry: %s", exc)

    def as_of(self, as_of_s: float | None) -> float:
        now = time.time()
        if as_of_s is None:
            return now
        if not math.isfinite(as_of_s) or as_of_s < MIN_TIMESTAMP_S:
            raise InvalidRequestError("as_of must be a time after 1990-01-01")
        if as_of_s > now + self.config.max_future_skew_s:
            raise InvalidRequestError(f"as_of is {as_of_s - now:.0f} s in the future; check the client clock")
        return as_of_s

    def feature_rows(
        self, user_key: str, item_ids: Sequence[str], at_s: float, terms: Sequence[str] = ()
    ) -> np.ndarray:
        """The features of the user with each item as of ``at_s`` (a row per item); INVALID_ARGUMENT when that is
        older than the history kept (scores and audiences alike)."""
        try:
            return self.features.matrix(user_key, item_ids, at_s, terms)
        except PointInTimeError as exc:
            raise InvalidRequestError(
                f"the scoring time (as_of, or now) is older than the feature history kept for this user or these "
                f"items ({exc}); use a time within {self.features.retain_s / 3600:.0f} h of their latest events"
            ) from exc

    @staticmethod
    def _query(query: str) -> tuple[str, ...]:
        """The hashed terms of a Score / Recommend query (none when empty); the text goes no further."""
        if not query:
            return ()
        try:
            return query_terms(query)
        except EventValidationError as exc:
            raise InvalidRequestError(str(exc), field="query") from None

    async def _score_items(
        self, user_key: str, item_ids: Sequence[str], *, timeout_s: float, at_s: float, terms: Sequence[str] = ()
    ) -> tuple[np.ndarray, Route, np.ndarray, np.ndarray]:
        """Scores served (the routed version's, moved by the per-event correction), the route, the version's own
        scores, and the feature rows (with the search ``terms``, when given)."""
        route = self.rollout.route(user_key)
        rows = self.feature_rows(user_key, item_ids, at_s, terms)
        started = time.perf_counter()
        try:
            scores = await self.triton_scores(user_key, item_ids, rows.astype(np.float32), route.version, timeout_s)
        except Exception:
            self.rollout.observe(route, False, time.perf_counter() - started)
            raise
        self.rollout.observe(route, True, time.perf_counter() - started)
        return self.learner.adjust(user_key, item_ids, scores, rows), route, scores, rows

    def _shadow(
        self,
        route: Route,
        user_key: str,
        item_ids: Sequence[str],
        rows: np.ndarray,
        recommendation_id: str,
        at_s: float,
    ) -> None:
        """Score the shadowed candidate on the rows just answered, after the answer, and log its scores beside
        the stable version's (the answer never waits for it)."""
        candidate = route.shadow
        if candidate is None or len(self._shadow_tasks) >= 64:  # a slow candidate must not pile up work
            return

        async def run() -> None:
            try:
                raw = await self.triton_scores(
                    user_key, item_ids, rows.astype(np.float32), candidate, self.config.triton_timeout_s
                )
            except (TritonUnavailableError, ModelNotReadyError) as exc:
                _LOGGER.debug("shadow scoring of version %d failed: %s", candidate, exc.message)
                return
            scores = self.learner.adjust(user_key, item_ids, raw, rows)
            self.impressions.add(
                Impression(
                    recommendation_id=f"{recommendation_id}:shadow",
                    user_key=user_key,
                    item_ids=tuple(item_ids),
                    scores=tuple(float(s) for s in scores),
                    model_version=str(candidate),
                    timestamp_s=at_s,
                    arm="shadow",
                )
            )

        task = asyncio.get_running_loop().create_task(run(), name="shadow-score")
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    def _check_items(self, field: str, item_ids: Sequence[str]) -> None:
        if not item_ids:
            raise InvalidRequestError(f"{field} must name at least one item")
        if len(item_ids) > self.config.max_items_per_call:
            raise InvalidRequestError(
                f"{field} has {len(item_ids)} items; at most {self.config.max_items_per_call} per call"
            )
        try:
            check_ids(field, item_ids)
        except EventValidationError as exc:
            raise InvalidRequestError(str(exc), field=exc.field) from None

    async def score(
        self,
        user_id: str,
        item_ids: Sequence[str],
        *,
        timeout_s: float,
        as_of_s: float | None = None,
        query: str = "",
        session_id: str = "",
    ) -> Scored:
        """Score each item for the user (or the anonymous session), in the order given (features read as of
        ``as_of_s``, default now), for the search ``query`` when given."""
        user_key = self.caller(user_id, session_id)
        self._check_items("item_ids", item_ids)
        at_s = self.as_of(as_of_s)
        terms = self._query(query)
        scores, route, _, _ = await self._score_items(user_key, item_ids, timeout_s=timeout_s, at_s=at_s, terms=terms)
        return Scored(tuple(item_ids), tuple(float(s) for s in scores), route.version)

    async def recommend(
        self,
        user_id: str,
        candidates: Sequence[str],
        k: int,
        exclude: Sequence[str],
        *,
        timeout_s: float,
        as_of_s: float | None = None,
        query: str = "",
        rules: ListRules = NO_RULES,
        session_id: str = "",
        exploration: float | None = None,
    ) -> Recommended:
        """Rank the candidates (minus ``exclude`` and what the ``rules`` filter out) for the user; without
        candidates, retrieve them from the catalogue first. Return the top ``k`` and log the impression.

        With a search ``query``, items whose text holds more of the query's words come first, and the user's
        scores rank the items within each such tier: a search is answered with what it asked for, in the order
        this user prefers. Boosts multiply the scores before ranking; the diversity cap applies last. Then the
        exploration policy (``exploration``, default the gateway's setting; never with a query) may reorder the
        list, and the impression logs each item's propensity (:func:`lists.explore`)."""
        user_key = self.caller(user_id, session_id)
        share = self.config.exploration if exploration is None else exploration
        lists.check_exploration(share)
        if candidates:
            self._check_items("candidate_item_ids", candidates)
        if k < 1:
            raise InvalidRequestError("k must be >= 1")
        rules.validate()
        at_s = self.as_of(as_of_s)
        terms = self._query(query)
        pool, sources = lists.pool(
            self.features, user_key, candidates, exclude, rules, at_s=at_s, retrieve=self.config.retrieval_candidates
        )
        recommendation_id = uuid.uuid4().hex
        if not pool:
            return Recommended((), (), self.rollout.route(user_key).version, recommendation_id, (), True)
        scores, route, base, rows = await self._score_items(user_key, pool, timeout_s=timeout_s, at_s=at_s, terms=terms)
        # With a query: relevant first (the share of the query's words in the item's text), personal within a tier.
        top, ranked = lists.arrange(self.features, pool, scores, rows[:, _QUERY_MATCH] if terms else None, rules, k)
        top, propensities = lists.explore(top, 0.0 if terms else share, self._rng)
        self.learner.expose(user_key, [pool[i] for i in top], at_s, base[top], rows[top].tolist(), route.version)
        result = Recommended(
            tuple(pool[i] for i in top),
            tuple(float(ranked[i]) for i in top),
            route.version,
            recommendation_id,
            tuple(sources[i] for i in top),
            len(top) < k,
        )
        self.impressions.add(
            Impression(
                recommendation_id=recommendation_id,
                user_key=user_key,
                item_ids=result.item_ids,
                scores=result.scores,
                model_version=str(route.version),
                timestamp_s=at_s,
                arm=route.arm,
                query_terms=tuple(terms),
                propensities=propensities,
            )
        )
        if route.shadow is not None:
            self._shadow(route, user_key, result.item_ids, rows[top], recommendation_id, at_s)
        return result

    def similar_items(
        self, item_id: str, k: int, rules: ListRules, *, user_id: str = "", as_of_s: float | None = None
    ) -> list[tuple[str, float, str]]:
        """Items engaged with together with ``item_id``, best first (see :func:`lists.similar`)."""
        check_request_id("item_id", item_id)
        user_key = self.caller(user_id) if user_id else None
        return lists.similar(self.features, item_id, k, rules, at_s=self.as_of(as_of_s), user_key=user_key)

    def buy_again(self, user_id: str, k: int, rules: ListRules) -> list[tuple[str, float]]:
        """The user's bought items, the most due first (see :func:`lists.buy_again`)."""
        return lists.buy_again(self.features, self.caller(user_id), k, rules, at_s=self.as_of(None))

    def check(self, event: Event, *, now_s: float) -> Event:
        """Validate an event whose user id is already pseudonymised; returns it."""
        validate_event(event, now_s=now_s, max_future_skew_s=self.config.max_future_skew_s)
        if event.recommendation_id is not None and len(event.recommendation_id) > MAX_ID_CHARS:
            raise EventValidationError("recommendation_id", f"must be at most {MAX_ID_CHARS} characters")
        if event.context and not self.config.store_context:
            return dataclasses.replace(event, context={})
        return event

    async def ingest(self, events: Sequence[Event]) -> WriteResult:
        """Commit prepared events durably (idempotent by event_id); the features move before this returns."""
        if not events:
            return WriteResult(0, 0)
        return await self.writer.write(events)

    async def upsert_items(self, items: Sequence[Item]) -> int:
        """Add or replace catalogue items."""
        for index, item in enumerate(items):
            check_request_id(f"items[{index}].item_id", item.item_id)
            if not item.categories or any(not c for c in item.categories):
                raise InvalidRequestError(f"items[{index}].categories must hold at least one non-empty category")
            if len(item.categories) > MAX_CATEGORIES:
                raise InvalidRequestError(
                    f"items[{index}].categories has {len(item.categories)} categories; at most {MAX_CATEGORIES}"
                )
            for position, category in enumerate(item.categories):
                if len(category) > MAX_CATEGORY_CHARS:
                    raise InvalidRequestError(
                        f"items[{index}].categories[{position}] has {len(category)} characters; "
                        f"at most {MAX_CATEGORY_CHARS}"
                    )
            if not np.isfinite(item.price) or item.price < 0:
                raise InvalidRequestError(f"items[{index}].price must be a finite number >= 0")
            if item.stock is not None and item.stock < 0:
                raise InvalidRequestError(f"items[{index}].stock must be >= 0 (leave it unset when not tracked)")
            if len(item.title) > MAX_TITLE_CHARS:
                raise InvalidRequestError(
                    f"items[{index}].title has {len(item.title)} characters; at most {MAX_TITLE_CHARS}"
                )
            _check_attributes(f"items[{index}].attributes", item.attributes, MAX_ATTRIBUTES, empty_values=True)
        await self.store.upsert_items(items)
        for item in items:
            self.features.upsert_item(item)
        self._items_changed([item.item_id for item in items])
        return len(items)

    async def upsert_users(self, users: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> int:
        """Set users' attributes (user id, its (name, value) pairs; none clears them). Only pseudonymised tokens of
        the pairs are kept: the model reads them, no one can read them back."""
        prepared: list[tuple[str, tuple[str, ...]]] = []
        for index, (user_id, attributes) in enumerate(users):
            check_request_id(f"users[{index}].user_id", user_id)
            _check_attributes(f"users[{index}].attributes", attributes, contract.ATTRIBUTE_SLOTS, empty_values=False)
            # Sorted by the token, not by the name: a token's place must not tell which attribute it is.
            tokens = tuple(sorted(self.pseudonymise.attribute(name, value) for name, value in attributes))
            prepared.append((self.pseudonymise.uncached(user_id), tokens))
        forgets = self._forgets
        await self.store.upsert_users(prepared)
        async with self._follow_lock:
            if forgets == self._forgets:  # else one of them may be erased by now: the follower reads what is left
                for user_key, tokens in prepared:
                    self.features.upsert_user(user_key, tokens)
        return len(prepared)

    async def close(self) -> None:
        """Stop probing, commit what is queued, close the store and the Triton channel."""
        # A fold of the log in progress (the follower's, or a rebuild's after an erasure) ends first: never stop
        # one half-way, or the snapshot would hold a half-folded batch that the next start folds again.
        async with self.writer.exclusive, self._follow_lock:
            for task in (self._health_task, self._follow_task):
                if task is not None:
                    task.cancel()
        for task in list(self._shadow_tasks):
            task.cancel()
        await self.learner.close()
        await self.writer.close()
        await self.impressions.close()
        try:
            self.save_snapshot()  # everything queued is committed and folded; nothing else moves the state now
        except OSError as exc:
            _LOGGER.error("could not write the snapshot: %s", exc)
        await self.store.close()
        await self.scorer.close()
