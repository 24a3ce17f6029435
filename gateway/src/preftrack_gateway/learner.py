"""The gateway's per-event learner: labels committed events, scores them with the serving version, learns.

It owns the :class:`~preftrack_gateway.online.Correction` of one gateway process. Committed events come in
through :meth:`OnlineLearner.observe` (right after the features move), served lists through
:meth:`OnlineLearner.expose`. An example whose label is final gets its feature row read at its own time (exact,
see :mod:`preftrack_gateway.features`), waits for the background task, is scored by the serving version in one
Triton batch with the others, and is learned from. Scores served afterwards carry the correction.

The correction is a residual on the version that serves. When another version starts serving, the learner
learns the newest examples it kept (:class:`~preftrack_gateway.online.History`, at most ``rebuild_examples``)
again, from zero, on the new version's logits, and then swaps the new correction in (:meth:`OnlineLearner.rebase`):
what the new version absorbed from them is not counted twice, and what it did not is learned again. Until the
swap (seconds), scores carry the old correction on the new version.

What one user teaches the weights every user shares is bounded by the example's influence
(:func:`~preftrack_gateway.features.influence`: from the user's actions within a minute either side of it). A load's
first examples look like anyone's, so where the minute after an example has not passed yet (in event time) its
user's own weights learn at once and the shared ones wait for the rest of that minute, then take the step scaled by
the influence counted then (:meth:`OnlineLearner._release`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import numpy as np

from preftrack_gateway.features import (
    INFLUENCE_WINDOW_S,
    NUM_FEATURES,
    FeatureState,
    LabelSpec,
    PointInTimeError,
    influence,
)
from preftrack_gateway.online import (
    Correction,
    Example,
    History,
    Labeller,
    OnlineConfig,
    SharedStep,
    logit,
    sigmoid,
)
from preftrack_gateway.schema import Event

_LOGGER = logging.getLogger(__name__)

#: (user keys, item ids, feature rows, version) -> the version's probabilities, one per row.
BaseScorer = Callable[[Sequence[str], Sequence[str], np.ndarray, int], Awaitable[np.ndarray]]

_BATCH = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    """The shared part of an example's step, waiting until its user's actions around it are known."""

    user: str
    timestamp_s: float
    step: SharedStep
    number: int  # in the history (-1: not kept)
    learned_at: float  # monotonic seconds


def _served_logit(example: Example, version: int) -> float | None:
    """The logit an example was served with, when it can stand for ``version``'s: it was that version's, or there
    is no row to score the example again. None: ``version`` must score it."""
    if example.base_logit is not None and (example.version == version or example.row is None):
        return example.base_logit
    return None


class OnlineLearner:
    """Per-event learning on top of the serving version (see the module docstring)."""

    def __init__(self, features: FeatureState, labels: LabelSpec, config: OnlineConfig | None = None) -> None:
        self.config = (config or OnlineConfig()).resolved(labels)
        self.features = features
        self.correction = Correction(self.config)
        self.labeller = Labeller(features.spec, labels, max_pending=self.config.max_pending)
        # Labelled examples waiting to be learned from, with when they were labelled (monotonic seconds).
        self._ready: collections.deque[tuple[Example, float, float]] = collections.deque(maxlen=self.config.max_pending)
        self._delays_s: collections.deque[float] = collections.deque(maxlen=10_000)  # labelled -> learned
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.skipped = 0  # examples whose row could not be read exactly (older than the retained history)
        self.learned_on: collections.Counter[int] = collections.Counter()  # updates per base version
        self._erased: set[str] = set()  # users forgotten while a batch was being scored: skip their examples
        self.history = History(self.config.rebuild_examples, NUM_FEATURES)  # learned again on a new version
        self.base_version: int | None = None  # the version the correction is a residual on
        self.rebases = 0
        self._erasures = 0  # forget() calls so far: a rebase that saw one starts again
        self._rebasing = False
        self._changed_items: set[str] = set()  # catalogue changes while rebasing: the new correction's cache
        # Shared parts of steps waiting for their influence, by when their window ends (event time): see _learn.
        self._held: list[tuple[float, int, _Held]] = []
        self._held_count = 0

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def _queue(self, labelled: Iterable[tuple[Example, float]]) -> None:
        now = time.monotonic()
        for example, label in labelled:
            if example.base_logit is None and example.row is None:
                self.skipped += 1  # its features could not be read exactly: never learn from a guess
                continue
            self._ready.append((example, label, now))

    def fold(self, events: Sequence[Event]) -> None:
        """Committed events: each example event's feature row is read at its own time, then every event is
        folded into the features, then the labels they finalise are queued for learning."""
        if not self.enabled:
            self.features.update_many(events)
            return
        rows: list[list[float] | None] = []
        for event in events:
            row = None
            if self.labeller.is_example(event):
                with contextlib.suppress(PointInTimeError):  # arrived later than the history its keys keep: None
                    row = self.features.example_row(event)
            rows.append(row)
            self.features.update(event)
        self._queue(self.labeller.observe(events, rows))
        if self._ready:
            self._wake.set()

    def expose(
        self,
        user: str,
        item_ids: Sequence[str],
        timestamp_s: float,
        base_scores: np.ndarray,
        rows: Sequence[Sequence[float]],
        version: int,
    ) -> None:
        """A served list, with the probabilities of the version that served it (before the correction), that
        version, and the rows."""
        if self.enabled:
            self.features.served(user, timestamp_s)
            self.labeller.expose(user, item_ids, timestamp_s, logit(base_scores), rows, version=version)

    def forget_items(self, item_ids: Iterable[str]) -> None:
        """Items whose catalogue entry changed: the correction's cached hashes of them go."""
        item_ids = list(item_ids)
        self.correction.forget_items(item_ids)
        if self._rebasing:
            self._changed_items.update(item_ids)

    def rebuild(self, events: Sequence[Event], *, chunk: int = 5000) -> None:
        """Fold the event log (time order) into the features and relearn from its newest examples (only the
        newest ``rebuild_examples`` labelled examples are kept; they are learned once a version serves).

        In chunks: the labeller closes attribution windows at the end of each call, so one call over the whole log
        would hold every unlabelled example pending at once (and shed them beyond ``max_pending``)."""
        for start in range(0, len(events), chunk):
            self.fold(events[start : start + chunk])
        keep = self.config.rebuild_examples
        while len(self._ready) > keep:
            self._ready.popleft()

    def forget(self, user: str, events: Iterable[Event], served_items: Iterable[str]) -> None:
        """Erase a user: the features drop the user's sums and take ``events`` out of the items' sums; the
        examples waiting for a label or for learning go; the user's own weights (their bias and crosses with
        every item they did something with or were shown) are reset to a new user's."""
        events = list(events)
        self.features.forget(user, events)
        items = self.labeller.forget(user) | {e.item_id for e in events} | set(served_items)
        items.update(example.item_id for example, _, _ in self._ready if example.user == user)
        kept = [entry for entry in self._ready if entry[0].user != user]
        self._ready.clear()
        self._ready.extend(kept)
        self._erased.add(user)
        self._erasures += 1
        self._held = [entry for entry in self._held if entry[2].user != user]
        heapq.heapify(self._held)
        self.history.forget(user)
        self.correction.forget(user, [self.features.item(i) for i in items])

    def adjust(
        self, user: str, item_ids: Sequence[str], scores: np.ndarray, rows: np.ndarray | Sequence[Sequence[float]]
    ) -> np.ndarray:
        """The served scores: the version's probabilities moved by the learned correction (``rows``: the items'
        feature rows)."""
        if not self.enabled or self.correction.updates == 0:
            return scores
        base = logit(scores)
        offsets = self.correction.offsets(user, [self.features.item(i) for i in item_ids], rows, base)
        return sigmoid(base + offsets).astype(scores.dtype)

    def start(self, base_scores: BaseScorer, serving_version: Callable[[], int | None]) -> None:
        """Start learning in the background; ``base_scores`` asks Triton, ``serving_version`` names the version."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(base_scores, serving_version), name="online-learner"
            )

    async def _run(self, base_scores: BaseScorer, serving_version: Callable[[], int | None]) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # once a second at least: has another version started serving?
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            self._release()
            version = serving_version()
            if version is not None and version != self.base_version:
                await self._switch(base_scores, version)
            while self._ready:
                version = serving_version()
                if version is None:
                    await asyncio.sleep(0.5)  # no version yet: learn once one serves
                    continue
                if version != self.base_version:
                    await self._switch(base_scores, version)
                    continue
                batch = [self._ready.popleft() for _ in range(min(_BATCH, len(self._ready)))]
                try:
                    base = await self._base(batch, base_scores, version)
                except Exception as exc:  # Triton down or the version gone: retry this batch later
                    if len(self._ready) + len(batch) <= (self._ready.maxlen or 0):
                        self._ready.extendleft(reversed(batch))
                    else:
                        self.skipped += len(batch)
                    _LOGGER.warning("online learner: scoring the base version failed (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                self._learn(batch, base, version)
                self._release()
                await asyncio.sleep(0)  # let calls in

    async def _switch(self, base_scores: BaseScorer, version: int) -> None:
        """Make the correction a residual on ``version``: learn the kept examples again on its logits (nothing to
        learn again before the first version, or with nothing kept). A failure is retried a second later."""
        if self.base_version is not None and self.correction.updates > 0:
            try:
                if not await self.rebase(base_scores, version):
                    return  # users were forgotten meanwhile each time: try again at the next turn
            except Exception as exc:
                _LOGGER.warning("online learner: relearning on version %d failed (%s); retrying", version, exc)
                await asyncio.sleep(1.0)
                return
        self.base_version = version

    async def rebase(self, base_scores: BaseScorer, version: int, *, attempts: int = 3) -> bool:
        """Learn the kept examples again, from zero and in the order first learned, on ``version``'s logits, and
        swap the result in. The scoring yields to calls between batches; a user forgotten meanwhile starts it
        again (at most ``attempts`` times; then the old correction stays, and False is returned)."""
        started = time.perf_counter()
        catalog = self.features.item
        for _ in range(attempts):
            erasures = self._erasures
            self._rebasing, self._changed_items = True, set()
            try:
                kept = self.history.examples()
                fresh = Correction(self.config)
                for start in range(0, len(kept), _BATCH):
                    chunk = kept[start : start + _BATCH]
                    probs = await base_scores(
                        [e.user for e, _, _ in chunk],
                        [e.item_id for e, _, _ in chunk],
                        np.array([e.row for e, _, _ in chunk], dtype=np.float32),
                        version,
                    )
                    for (example, label, weight), base in zip(chunk, logit(probs), strict=True):
                        coordinates = fresh.coordinates(example.user, catalog(example.item_id), example.row)
                        # Counted again: for a step still held, more of its user's actions may have come since.
                        weight = min(weight, influence(self.features.activity(example.user, example.timestamp_s)))
                        fresh.learn(coordinates, base, label, weight)
                    await asyncio.sleep(0)
            finally:
                self._rebasing = False
            if erasures != self._erasures:
                continue
            fresh.forget_items(self._changed_items)
            self.correction = fresh
            self._held = []  # the old correction's; the new one learned those examples whole
            self.rebases += 1
            _LOGGER.info(
                "online learner: relearned %d examples on version %d (it now serves) in %.2f s",
                len(kept),
                version,
                time.perf_counter() - started,
            )
            return True
        _LOGGER.warning("online learner: users were forgotten during each relearning; trying again later")
        return False

    async def _base(
        self, batch: list[tuple[Example, float, float]], base_scores: BaseScorer, version: int
    ) -> np.ndarray:
        """The serving version's logit of each example (known already for a list that this version served)."""
        to_score = [k for k, (example, _, _) in enumerate(batch) if _served_logit(example, version) is None]
        base = np.zeros(len(batch))
        if to_score:
            probs = await base_scores(
                [batch[k][0].user for k in to_score],
                [batch[k][0].item_id for k in to_score],
                np.array([batch[k][0].row for k in to_score], dtype=np.float32),
                version,
            )
            base[to_score] = logit(probs)
        return base

    def _learn(self, batch: list[tuple[Example, float, float]], base: np.ndarray, version: int) -> None:
        catalog = self.features.item
        now = time.monotonic()
        for k, (example, label, labelled_at) in enumerate(batch):
            if example.user in self._erased:
                continue
            self._delays_s.append(now - labelled_at)
            served = _served_logit(example, version)
            base_logit = base[k] if served is None else served
            features = self.correction.coordinates(example.user, catalog(example.item_id), example.row)
            weight = influence(self.features.activity(example.user, example.timestamp_s))
            if weight == 0.0 or example.timestamp_s + INFLUENCE_WINDOW_S <= self.labeller.horizon_s:
                self.correction.learn(features, base_logit, label, weight)  # nothing more will change its influence
                self.history.add(example, label, weight)
            else:
                # The user's actions after it may still come, and more of them can only lower its influence (a
                # load's first examples look like anyone's): the shared coordinates wait (see _release).
                _, step = self.correction.learn_own(features, base_logit, label)
                number = self.history.add(example, label, weight)
                held = _Held(example.user, example.timestamp_s, step, number, now)
                heapq.heappush(self._held, (example.timestamp_s + INFLUENCE_WINDOW_S, self._held_count, held))
                self._held_count += 1
        self.learned_on[version] += len(batch)
        self._erased.clear()  # later batches were taken after the erasure: they hold none of its examples
        if self.correction.updates % 10_000 < len(batch):
            status = self.status()
            _LOGGER.info(
                "online learner: %d updates (%s; step shares %s), %d waiting for labels, %d skipped; labelled -> "
                "learned p50 %.1f ms, p90 %.1f ms",
                self.correction.updates,
                ", ".join(f"v{v}: {n}" for v, n in sorted(self.learned_on.items())),
                ", ".join(f"{member}: {share:.2f}" for member, share in self.correction.mixture().items()),
                self.labeller.pending,
                self.skipped,
                1000 * status["delay_p50_s"],  # type: ignore[operator]
                1000 * status["delay_p90_s"],  # type: ignore[operator]
            )

    def _release(self, *, everything: bool = False) -> None:
        """Take the held shared steps whose window has ended (in event time, or a window's length ago in wall time
        where no later event came; ``everything``: all of them), each scaled by its influence counted now."""
        horizon, now = self.labeller.horizon_s, time.monotonic()
        while self._held and (
            everything or self._held[0][0] <= horizon or now - self._held[0][2].learned_at >= INFLUENCE_WINDOW_S
        ):
            _, _, held = heapq.heappop(self._held)
            weight = influence(self.features.activity(held.user, held.timestamp_s))
            self.correction.learn_shared(held.step, weight)
            self.history.reweigh(held.number, weight)

    def status(self) -> dict[str, object]:
        """What the learner has done, for logs and metrics."""
        return {
            "updates": self.correction.updates,
            "waiting_for_labels": self.labeller.pending,
            "ready": len(self._ready),
            "held": len(self._held),
            "skipped": self.skipped,
            "learned_on_versions": dict(self.learned_on),
            "base_version": self.base_version,
            "rebases": self.rebases,
            "step_shares": self.correction.mixture(),
            "delay_p50_s": float(np.percentile(self._delays_s, 50)) if self._delays_s else 0.0,
            "delay_p90_s": float(np.percentile(self._delays_s, 90)) if self._delays_s else 0.0,
        }

    async def close(self) -> None:
        """Stop the background task, and take the held shared steps with what is known now (a snapshot follows)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._release(everything=True)
