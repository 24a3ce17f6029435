"""The rollout controller: which version serves each user, and when a candidate is promoted or rolled back.

One controller runs in each gateway replica; the state they share lives in the event store, so every replica
routes a user the same way and any process may restart:
- the registry (:mod:`preftrack_gateway.registry`) says which version is ``serving`` (the stable one) and which,
  if any, is the candidate (``canary`` or ``shadow``);
- the setting ``rollout`` holds the canary fraction, whether automatic decisions are paused, and a pinned version;
- the salt of the canary assignment is derived from the candidate's registry entry, identical everywhere.

Routing: a user is on the canary arm when a keyed hash of (salt, user) falls below the fraction, so assignment
is sticky per user and the share converges to the fraction exactly. A shadowed candidate never answers: on a
sample of calls it scores the same rows after the answer is sent, and both scores are logged.

Decisions: :class:`~preftrack_gateway.outcomes.OutcomeTracker` follows the served lists (impressions, which
carry their arm) and the feedback that names them by ``recommendation_id``, in the store, so every replica sees
the same outcomes. :mod:`preftrack_gateway.sequential` turns per-arm outcomes into promote / roll back / wait;
error rate and latency of the candidate's calls (per replica) roll back at once on a breach.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from preftrack_gateway import offpolicy, sequential
from preftrack_gateway.errors import GatewayError, InvalidRequestError, ModelNotReadyError, NotFoundError
from preftrack_gateway.features import FeatureSpec
from preftrack_gateway.outcomes import CallHealth, OutcomeTracker
from preftrack_gateway.policy import ROLLOUT_MODES, RolloutPolicy
from preftrack_gateway.registry import CANDIDATE_STATES, Move, Registry, TransitionError, lineage, lineage_root
from preftrack_gateway.store import EventStore, VersionRecord

if TYPE_CHECKING:  # the controller is given these; importing them here would be circular (config → policy)
    from preftrack_gateway.deployment import VersionCheck
    from preftrack_gateway.triton import TritonScorer

_LOGGER = logging.getLogger(__name__)

SETTINGS_KEY = "rollout"

T = TypeVar("T")


class RolloutConflictError(GatewayError):
    """The rollout is not in a state that allows this (FAILED_PRECONDITION); the message says what is."""

    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Where one call goes: the version that answers, its arm, and a shadow candidate to score afterwards."""

    version: int
    arm: str
    shadow: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SharedSettings:
    """The rollout's run-time settings every replica reads from the store."""

    fraction: float
    paused: bool = False
    pinned: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, default_fraction: float) -> SharedSettings:
        data = json.loads(text) if text else {}
        return cls(
            fraction=float(data.get("fraction", default_fraction)),
            paused=bool(data.get("paused", False)),
            pinned=None if data.get("pinned") is None else int(data["pinned"]),
        )


def assignment(salt: str, user_key: str) -> float:
    """A user's position in [0, 1) for a rollout: uniform over users, fixed for one salt."""
    digest = hashlib.blake2b(user_key.encode(), key=salt.encode()[:64], digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _salt(record: VersionRecord) -> str:
    # The moment the version became a candidate, stored in the registry: the same for every replica, new for
    # every rollout (a version rolled out again later gets another assignment).
    return f"{record.version}:{record.updated_at!r}"


def _check_lineage(version: int, records: Mapping[int, VersionRecord]) -> None:
    """Refuse to put out a version that does not descend from the newest version trained from nothing
    (:func:`registry.lineage_root`): its weights may hold the events of users forgotten since."""
    allowed = lineage(records)
    if allowed is not None and version not in allowed:
        raise RolloutConflictError(
            f"version {version} does not descend from version {lineage_root(records)}, the newest trained from "
            "nothing (after users were forgotten, weights from before it must not serve again); roll out one of "
            "its descendants"
        )


class RolloutController:
    """Owns version state for one gateway replica: reads it from the store, routes calls, moves versions."""

    def __init__(
        self,
        store: EventStore,
        scorer: TritonScorer,
        policy: RolloutPolicy,
        spec: FeatureSpec,
        check: VersionCheck,
        *,
        actor: str | None = None,
    ) -> None:
        self.store = store
        self.registry = Registry(store)
        self.scorer = scorer
        self.policy = policy
        self.spec = spec
        self.version_check = check
        self.actor = actor or f"gateway@{socket.gethostname()}:{os.getpid()}"
        self.stable: int | None = None
        self.candidate: int | None = None
        self.mode = ""
        self.settings = SharedSettings(fraction=policy.fraction)
        self._salt = ""
        self.tracker: OutcomeTracker | None = None
        self.health = CallHealth()
        self.last_comparison: sequential.Comparison | None = None
        self._last_check = 0.0
        self._shadow_counter = 0
        self._journaled_outcomes = -1
        # Asking Triton again to load what it could not load backs off (1 s doubling to 10 s): a new deployment's
        # repository stays empty until its first version is trained, and a version that cannot load reloads
        # SavedModels at every try.
        self._load_backoff_s = 1.0
        self._next_load = 0.0
        self._failed_load: list[int] | None = None  # the versions the last failed load asked for ([]: the model)
        # One change at a time: a refresh (every second, from the health loop) and an operator's call both read
        # the registry, ask Triton to load versions (seconds each) and route by what they read; interleaved, a
        # refresh that read the registry before an operator's roll back would route back to the old version, and
        # its load would unload the new one.
        self._lock = asyncio.Lock()

    # --- routing -----------------------------------------------------------------------------------------

    def route(self, user_key: str) -> Route:
        """The version that answers this user now (raises ModelNotReadyError when none is ready)."""
        stable = self.stable
        if stable is None:
            raise ModelNotReadyError(f"no version of model {self.scorer.model_name} is ready in Triton yet")
        candidate = self.candidate
        if candidate is None:
            return Route(stable, "stable")
        if self.mode == "canary":
            if assignment(self._salt, user_key) < self.settings.fraction:
                return Route(candidate, "canary")
            return Route(stable, "stable")
        self._shadow_counter += 1
        sample = self.policy.shadow_sample
        take = sample > 0 and int(self._shadow_counter * sample) != int((self._shadow_counter - 1) * sample)
        return Route(stable, "stable", candidate if take else None)

    def observe(self, route: Route, ok: bool, latency_s: float) -> None:
        """A finished call; the candidate arm's feed the SLO check."""
        if route.arm == "canary":
            self.health.observe(ok, latency_s)

    def triton_lost(self) -> None:
        """Triton cannot be reached: answer UNAVAILABLE until a refresh finds it again."""
        self.stable = None

    # --- reading the shared state --------------------------------------------------------------------------

    async def _records(self) -> dict[int, VersionRecord]:
        return {r.version: r for r in await self.registry.versions()}

    async def _exclusive(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run an operator's ``operation`` under the lock, and to its end even if the call that asked for it is
        cancelled (a client's deadline, while it waited for a refresh's loads): a version is never left halfway
        (``loading``, say) by a call given up on."""

        async def locked() -> T:
            async with self._lock:
                return await operation

        return await asyncio.shield(asyncio.ensure_future(locked()))

    async def refresh(self) -> bool:
        """Catch up with the shared state and Triton; ship a newly exported version; decide a rollout when due.

        Returns whether a version serves: the stable version is known and ready in Triton (registered serving but
        not loadable, for example after a restart onto a Triton that cannot load it, is not ready: health says so
        instead of scoring calls failing). Raises TritonUnavailableError when Triton cannot be reached.
        """
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> bool:
        ready = set(await self.scorer.ready_versions())
        self.settings = SharedSettings.from_json(await self.store.get_setting(SETTINGS_KEY), self.policy.fraction)
        records = await self._records()
        stable = self._stable_record(records)
        candidate = next((r for r in records.values() if r.state in CANDIDATE_STATES), None)
        wanted = [r.version for r in (stable, candidate) if r is not None]
        if wanted and not set(wanted) <= ready and self._may_load(wanted):
            self._loaded(wanted, await self._load(wanted))
            ready = set(await self.scorer.ready_versions())
        if stable is None:
            stable = await self._bootstrap(ready, records)
            records = await self._records()
        if candidate is not None and candidate.version not in ready:
            await self._move([Move(candidate.version, "failed", "not ready in Triton")], "candidate failed to load")
            candidate = None
        if (
            stable is not None
            and candidate is None
            and self.settings.pinned is None
            and await self._is_ready(stable.version, ready)
        ):
            # (Not while the stable version cannot load: a rollout would load it with the new one, fail, and mark
            # the new one failed for good.)
            candidate = await self._ship_exported(stable, records)
            if candidate is not None and candidate.state == "serving":
                stable, candidate = candidate, None
        self._adopt(stable, candidate)
        if self.candidate is not None and time.monotonic() - self._last_check >= self.policy.check_interval_s:
            self._last_check = time.monotonic()
            await self.check()
        return self.stable is not None and await self._is_ready(self.stable, ready)

    async def _is_ready(self, version: int, ready: set[int]) -> bool:
        """Whether ``version`` is ready in Triton (``ready``, read earlier in this refresh, or Triton again: a load
        or a rollout since may have changed it)."""
        return version in ready or version in set(await self.scorer.ready_versions())

    def _may_load(self, versions: list[int]) -> bool:
        """Whether to ask Triton to load ``versions`` now: the ones it could not load last time only after the
        backoff, any others at once."""
        return versions != self._failed_load or time.monotonic() >= self._next_load

    def _loaded(self, versions: list[int], ok: bool) -> None:
        """Note how asking Triton to load ``versions`` went: a failure backs off (1 s doubling to 10 s)."""
        if ok:
            self._failed_load, self._load_backoff_s = None, 1.0
        else:
            self._failed_load, self._next_load = versions, time.monotonic() + self._load_backoff_s
            self._load_backoff_s = min(2 * self._load_backoff_s, 10.0)

    @staticmethod
    def _stable_record(records: dict[int, VersionRecord]) -> VersionRecord | None:
        serving = [r for r in records.values() if r.state == "serving"]
        return max(serving, key=lambda r: r.version) if serving else None

    def _adopt(self, stable: VersionRecord | None, candidate: VersionRecord | None) -> None:
        new_stable = None if stable is None else stable.version
        if new_stable != self.stable:
            _LOGGER.info("stable version: %s -> %s", self.stable, new_stable)
        self.stable = new_stable
        if candidate is None:
            if self.candidate is not None:
                _LOGGER.info("rollout of version %d ended", self.candidate)
            self.candidate, self.mode, self.tracker = None, "", None
            return
        salt = _salt(candidate)
        if candidate.version != self.candidate or salt != self._salt or candidate.state != self.mode:
            _LOGGER.info(
                "rollout of version %d as %s (fraction %.3f, assignment salt %s)",
                candidate.version,
                candidate.state,
                self.settings.fraction,
                hashlib.sha256(salt.encode()).hexdigest()[:8],
            )
            self.tracker = OutcomeTracker(
                self.store, self.spec, candidate.version, self.policy.window_s, since_s=candidate.updated_at
            )
            self.health = CallHealth()
        self.candidate, self.mode, self._salt = candidate.version, candidate.state, salt

    async def _sync(self) -> None:
        """Route by the registry as it is now (right after this replica changed it)."""
        records = await self._records()
        self._adopt(
            self._stable_record(records), next((r for r in records.values() if r.state in CANDIDATE_STATES), None)
        )

    async def _load(self, versions: Sequence[int]) -> bool:
        """Make ``versions`` ready in Triton (others may stay loaded until a later load replaces them)."""
        if set(versions) <= set(await self.scorer.ready_versions()):
            return True
        try:
            await self.scorer.load_versions(sorted(set(versions)))
        except ModelNotReadyError as exc:
            _LOGGER.error("%s", exc.message)
            return False
        return set(versions) <= set(await self.scorer.ready_versions())

    async def _load_to_replace(self, version: int, stable: int | None) -> bool:
        """Make ``version`` ready to take over from ``stable``: both loaded, so that calls on their way to
        ``stable`` finish. When that fails and ``stable`` was not ready in Triton before (its files broken or
        gone: nothing was scored with it), ``version`` alone, so that an operator can always move off a version
        that cannot serve. False when ``version`` does not load (a ready ``stable`` is then loaded again)."""
        if stable is None:
            return await self._load([version])
        was_ready = stable in set(await self.scorer.ready_versions())
        if await self._load([version, stable]):
            return True
        if was_ready:
            await self._load([stable])  # whatever the failed load left, the serving version stays ready
            return False
        _LOGGER.warning("version %d does not load in Triton; loading version %d alone in its place", stable, version)
        return await self._load([version])

    async def _move(self, moves: Sequence[Move], reason: str, details: dict[str, object] | None = None) -> bool:
        ok = await self.registry.move(moves, actor=self.actor, reason=reason, details=details)
        if ok:
            _LOGGER.info("%s: %s", ", ".join(f"version {m.version} -> {m.to}" for m in moves), reason)
        return ok

    async def _refuse(self, record: VersionRecord | None, version: int, note: str) -> None:
        _LOGGER.error("refusing version %d: %s", version, note)
        if record is None:
            now = time.time()
            await self.registry.register(
                VersionRecord(version=version, state="failed", note=note, created_at=now, updated_at=now),
                actor=self.actor,
                reason=note,
            )
        elif record.state != "failed":
            await self._move([Move(version, "failed", note)], note)

    async def _bootstrap(self, ready: set[int], records: dict[int, VersionRecord]) -> VersionRecord | None:
        """No version is registered serving: serve the newest ready one whose schema fits (asks Triton to load
        the model when none is ready)."""
        if not ready and self._may_load([]):  # [] stands for the model as its repository configures it
            try:
                await self.scorer.load()
                self._loaded([], True)
            except ModelNotReadyError as exc:
                _LOGGER.warning("%s (next try in %.0f s)", exc.message, self._load_backoff_s)
                self._loaded([], False)
            ready = set(await self.scorer.ready_versions())
        for version in sorted(ready, reverse=True):
            record = records.get(version)
            if record is not None and record.state in ("failed", "rejected", "rolled_back"):
                continue
            note = self.version_check.refusal(version, None if record is None else record.metrics)
            if note is not None:
                await self._refuse(record, version, note)
                continue
            reason = "first version: found ready in Triton"
            if record is None:
                now = time.time()
                fresh = VersionRecord(version=version, state="serving", note=reason, created_at=now, updated_at=now)
                await self.registry.register(fresh, actor=self.actor, reason=reason)
            elif record.state in CANDIDATE_STATES:
                await self._move([Move(version, "serving")], reason)
            else:
                if record.state != "loading":
                    await self._move([Move(version, "loading")], reason)
                await self._move([Move(version, "serving")], reason)
            return self._stable_record(await self._records())
        return None

    async def _ship_exported(self, stable: VersionRecord, records: dict[int, VersionRecord]) -> VersionRecord | None:
        """Take the newest version the trainer exported into a rollout (policy mode); older ones are superseded.

        An exported version that does not descend from the newest version trained from nothing
        (:func:`registry.lineage_root`: ``continual --from-scratch`` after users were forgotten) is retired
        instead: weights from before that version never go out again through a later one."""
        exported = sorted((r for r in records.values() if r.state == "exported"), key=lambda r: r.version)
        allowed = lineage(records)
        stale = [r for r in exported if allowed is not None and r.version not in allowed]
        if stale:
            note = f"not warm-started from version {lineage_root(records)}, the newest trained from nothing"
            await self._move([Move(r.version, "retired", note) for r in stale], note)
            exported = [r for r in exported if r not in stale]
        if not exported:
            return None
        newest = exported[-1]
        superseded = [Move(r.version, "retired", f"superseded by version {newest.version}") for r in exported[:-1]]
        if superseded:
            await self._move(superseded, f"superseded by version {newest.version}")
        mode = self.policy.mode
        judged, why = offpolicy.verdict(newest.metrics.get("offpolicy"))
        if judged == "behind":  # the log says users would do worse with it: no user needs to find out
            await self._move([Move(newest.version, "retired", why)], f"not rolled out: {why}")
            return None
        try:
            return await self._start(newest.version, mode, None, actor=self.actor, reason=f"exported; policy {mode}")
        except (RolloutConflictError, TransitionError) as exc:
            _LOGGER.info("version %d not rolled out: %s", newest.version, exc)
            return None

    # --- admin operations (also used by the automatic path) -----------------------------------------------

    async def start(
        self, version: int, mode: str, fraction: float | None, *, actor: str, reason: str
    ) -> VersionRecord | None:
        """Roll out ``version`` as canary (``fraction``), shadow, or directly; returns its new record."""
        return await self._exclusive(self._start(version, mode, fraction, actor=actor, reason=reason))

    async def _start(
        self, version: int, mode: str, fraction: float | None, *, actor: str, reason: str
    ) -> VersionRecord | None:
        if mode not in ROLLOUT_MODES:
            raise InvalidRequestError(f"mode must be one of {', '.join(ROLLOUT_MODES)}")
        if fraction is not None and not 0 < fraction <= 1:
            raise InvalidRequestError("fraction must lie in (0, 1]")
        records = await self._records()
        record = records.get(version)
        if record is None:
            raise NotFoundError(f"version {version} is not in the registry")
        stable = self._stable_record(records)
        if stable is None:
            raise RolloutConflictError("no stable version serves yet; a rollout needs one to compare with")
        busy = next((r for r in records.values() if r.state in CANDIDATE_STATES), None)
        if busy is not None:
            raise RolloutConflictError(f"version {busy.version} is already in a {busy.state} rollout; decide it first")
        if record.state not in ("exported", "retired"):
            raise RolloutConflictError(f"version {version} is {record.state}; only exported or retired ones roll out")
        _check_lineage(version, records)
        note = self.version_check.refusal(version, record.metrics)
        if note is not None:
            await self._refuse(record, version, note)
            raise RolloutConflictError(f"version {version} refused: {note}")
        # A canary or shadow compares with the serving version, which must load (else loading both fails, and the
        # new version would be failed for the serving one's fault); a direct rollout replaces it.
        if mode != "direct" and not await self._load([stable.version]):
            raise RolloutConflictError(
                f"a {mode} rollout compares version {version} with the serving version {stable.version}, which does "
                f"not load in Triton; put a version that loads in its place first: roll back, start version "
                f"{version} as direct, or pin it (which ships nothing automatically until unpinned)"
            )
        if not await self.registry.move([Move(version, "loading")], actor=actor, reason=reason, records=records):
            raise RolloutConflictError(f"version {version} changed meanwhile; try again")
        if not await self._load_to_replace(version, stable.version):
            await self._move([Move(version, "failed", "failed to load in Triton")], "failed to load in Triton")
            raise RolloutConflictError(f"version {version} failed to load in Triton; it is registered failed")
        if fraction is not None or mode == "canary":
            if fraction is None:  # the trainer's holdout may show the serving version plainly behind
                fraction, why = sequential.opening_fraction(record.metrics, self.policy.fraction)
                reason = f"{reason}; canary {fraction:g}: {why}"
            await self._put_settings(dataclasses.replace(self.settings, fraction=fraction))
        if mode == "direct":
            await self.registry.move(
                [Move(version, "serving"), Move(stable.version, "retired")], actor=actor, reason=f"{reason} (direct)"
            )
        else:
            await self.registry.move(
                [Move(version, mode)], actor=actor, reason=reason, details={"fraction": self.settings.fraction}
            )
        await self._sync()
        return await self.registry.get(version)

    async def _put_settings(self, settings: SharedSettings) -> None:
        self.settings = settings
        await self.store.put_setting(SETTINGS_KEY, settings.to_json())

    async def _candidate_record(self) -> tuple[VersionRecord, VersionRecord, dict[int, VersionRecord]]:
        records = await self._records()
        candidate = next((r for r in records.values() if r.state in CANDIDATE_STATES), None)
        stable = self._stable_record(records)
        if candidate is None or stable is None:
            raise RolloutConflictError("no rollout in progress")
        return candidate, stable, records

    async def set_fraction(self, fraction: float, *, actor: str) -> None:
        if not 0 < fraction <= 1:
            raise InvalidRequestError("fraction must lie in (0, 1]")
        async with self._lock:  # (a refresh reads the settings and may write them back)
            candidate, _, _ = await self._candidate_record()
            await self._put_settings(dataclasses.replace(self.settings, fraction=fraction))
        await self.registry.record(
            candidate.version, "fraction", actor=actor, message=f"fraction {fraction}", details={"fraction": fraction}
        )

    async def set_mode(self, mode: str, *, actor: str) -> None:
        """Switch a running rollout between canary and shadow."""
        if mode not in CANDIDATE_STATES:
            raise InvalidRequestError("mode must be canary or shadow")
        candidate, _, _ = await self._candidate_record()
        if candidate.state != mode:
            await self.registry.move([Move(candidate.version, mode)], actor=actor, reason=f"switch to {mode}")

    async def promote(self, *, actor: str, reason: str, details: dict[str, object] | None = None) -> int:
        """Make the candidate the stable version (the old stable is retired, kept loaded for a roll back)."""
        return await self._exclusive(self._promote(actor=actor, reason=reason, details=details))

    async def _promote(self, *, actor: str, reason: str, details: dict[str, object] | None = None) -> int:
        candidate, stable, records = await self._candidate_record()
        if not await self.registry.move(
            [Move(candidate.version, "serving"), Move(stable.version, "retired")],
            actor=actor,
            reason=reason,
            details=details,
            records=records,
        ):
            raise RolloutConflictError("the rollout changed meanwhile (another replica decided it); re-read it")
        await self._sync()
        _LOGGER.info("promoted version %d over %d: %s", candidate.version, stable.version, reason)
        return candidate.version

    async def roll_back(self, *, actor: str, reason: str, details: dict[str, object] | None = None) -> int:
        """End the candidate's rollout, or, with none, put the previous stable version back. Returns the version
        that serves afterwards."""
        return await self._exclusive(self._roll_back(actor=actor, reason=reason, details=details))

    async def _roll_back(self, *, actor: str, reason: str, details: dict[str, object] | None = None) -> int:
        records = await self._records()
        candidate = next((r for r in records.values() if r.state in CANDIDATE_STATES), None)
        stable = self._stable_record(records)
        if stable is None:
            raise RolloutConflictError("no stable version serves; nothing to roll back to")
        if candidate is not None:
            moves = [Move(candidate.version, "rolled_back", reason[:500])]
            if not await self.registry.move(moves, actor=actor, reason=reason, details=details, records=records):
                raise RolloutConflictError("the rollout changed meanwhile (another replica decided it); re-read it")
            # The candidate stays loaded: calls already routed to it (here, or by replicas that have not re-read the
            # registry yet) finish; the next rollout loads exactly {stable, new}.
            await self._sync()
            _LOGGER.warning("rolled back version %d: %s", candidate.version, reason)
            return stable.version
        allowed = lineage(records)
        retired = [
            r
            for r in records.values()
            if r.state == "retired" and r.version != stable.version and (allowed is None or r.version in allowed)
        ]
        if not retired:
            raise RolloutConflictError(
                f"version {stable.version} serves and no earlier version of its lineage (from version "
                f"{lineage_root(records)}, the newest trained from nothing) was retired"
            )
        previous = max(retired, key=lambda r: (r.updated_at, r.version))
        if not await self._load_to_replace(previous.version, stable.version):
            raise RolloutConflictError(
                f"version {previous.version}, the newest retired, does not load in Triton; pin an earlier retired "
                "version instead (preftrack-admin versions lists them)"
            )
        moves = [Move(stable.version, "rolled_back", reason[:500]), Move(previous.version, "serving")]
        if not await self.registry.move(moves, actor=actor, reason=reason, details=details, records=records):
            raise RolloutConflictError("the registry changed meanwhile; re-read it")
        await self._sync()
        return previous.version

    async def pause(self, paused: bool, *, actor: str) -> None:
        async with self._lock:  # (a refresh reads the settings and may write them back)
            await self._put_settings(dataclasses.replace(self.settings, paused=paused))
        version = self.candidate or self.stable or 0
        await self.registry.record(version, "pause", actor=actor, message="paused" if paused else "resumed")

    async def pin(self, version: int | None, *, actor: str) -> None:
        """Serve ``version`` as the stable one and ship nothing automatically (None: unpin)."""
        await self._exclusive(self._pin(version, actor=actor))

    async def _pin(self, version: int | None, *, actor: str) -> None:
        if version is None:
            await self._put_settings(dataclasses.replace(self.settings, pinned=None))
            await self.registry.record(self.stable or 0, "pin", actor=actor, message="unpinned")
            return
        records = await self._records()
        record = records.get(version)
        if record is None:
            raise NotFoundError(f"version {version} is not in the registry")
        stable = self._stable_record(records)
        if record.state not in ("serving", "retired", "exported", *CANDIDATE_STATES):
            raise RolloutConflictError(f"version {version} is {record.state}; it cannot serve")
        _check_lineage(version, records)
        if record.state != "serving":
            note = self.version_check.refusal(version, record.metrics)
            if note is not None:
                raise RolloutConflictError(f"version {version} refused: {note}")
            if not await self._load_to_replace(version, None if stable is None else stable.version):
                raise RolloutConflictError(f"version {version} does not load in Triton")
            moves = []
            other = next((r for r in records.values() if r.state in CANDIDATE_STATES and r.version != version), None)
            if other is not None:
                moves.append(Move(other.version, "rolled_back", f"version {version} pinned"))
            if record.state in ("exported", "retired"):
                await self.registry.move([Move(version, "loading")], actor=actor, reason="pin", records=records)
            moves.append(Move(version, "serving"))
            if stable is not None:
                moves.append(Move(stable.version, "retired"))
            if not await self.registry.move(moves, actor=actor, reason=f"pinned version {version}"):
                raise RolloutConflictError("the registry changed meanwhile; try again")
            await self._sync()
        await self._put_settings(dataclasses.replace(self.settings, pinned=version))
        await self.registry.record(version, "pin", actor=actor, message=f"pinned version {version}")

    # --- the automatic decision -----------------------------------------------------------------------------

    async def check(self) -> sequential.Comparison | None:
        """Read new outcomes, compare the arms, and (unless paused) promote or roll back."""
        tracker, candidate = self.tracker, self.candidate
        if tracker is None or candidate is None:
            return None
        await tracker.poll()
        comparison = tracker.compare(self.mode, self.policy)
        self.last_comparison = comparison
        details = {
            "mode": self.mode,
            "fraction": self.settings.fraction,
            "arms": tracker.summary(),
            "calls": self.health.summary(),
            "comparison": comparison.to_dict(),
        }
        breach = self.health.breach(self.policy) if self.mode == "canary" else None
        action, reason = comparison.decision, comparison.reason
        if breach is not None:
            action, reason = "roll_back", f"SLO breach: {breach}"
        outcomes = comparison.n_stable + comparison.n_candidate
        if outcomes != self._journaled_outcomes or action != "wait" or breach is not None:
            self._journaled_outcomes = outcomes  # a check is journaled when there is something new to say
            await self.registry.record(candidate, "check", actor=self.actor, message=reason, details=details)
        if not self.policy.auto or self.settings.paused or action == "wait":
            return comparison
        try:
            if action == "promote":
                await self._promote(actor=self.actor, reason=f"automatic: {reason}", details=details)
            elif action == "roll_back":
                await self._roll_back(actor=self.actor, reason=f"automatic: {reason}", details=details)
        except RolloutConflictError as exc:
            _LOGGER.info("decision on version %d not applied: %s", candidate, exc.message)
        return comparison

    def status(self) -> dict[str, object]:
        """What this replica routes and sees now."""
        return {
            "stable": self.stable,
            "candidate": self.candidate,
            "mode": self.mode,
            "fraction": self.settings.fraction,
            "paused": self.settings.paused or not self.policy.auto,
            "pinned": self.settings.pinned,
            "arms": None if self.tracker is None else self.tracker.summary(),
            "calls": self.health.summary(),
            "comparison": None if self.last_comparison is None else self.last_comparison.to_dict(),
        }
