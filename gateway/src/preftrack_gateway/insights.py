"""What users prefer, for merchandisers and CRM analysts: a user's profile, an audience for a campaign, and the
shop's trends. The InsightsService RPCs call these; the gateway's other parts never do.

- A **profile** is built from the user's own events read from the store (their latest ``MAX_PROFILE_EVENTS``
  before the time asked for), so it can be read as of any time and never depends on the order events arrived.
- An **audience** ranks the users a shop names by the stable version's score for an item (or the mean over a
  category's most popular items), read like Score does: same features, same per-event correction (a canary's
  users are ranked by the stable version too, so one list has one version). Users are scored in chunks, the
  best ``k`` kept in a heap, so memory grows with ``k`` (or the number of users when all are returned), never
  with more.
- **Trends** compare each category's and attribute's share of the shop's engagement in a recent window with
  the window before, counted by the store (one grouped query per window) and weighed like a profile's
  engagement (a rating of any value weighs as a liked one there).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import AsyncIterator, Sequence

import numpy as np

from preftrack_gateway.errors import InvalidRequestError, ModelNotReadyError, NotFoundError
from preftrack_gateway.profile import Profile, ProfileSpec, build_profile, category_history
from preftrack_gateway.service import GatewayCore, check_request_id

#: A profile reads at most the user's latest this-many events.
MAX_PROFILE_EVENTS = 10_000
#: Most history points a profile returns, and most entries per list.
MAX_HISTORY_POINTS = 500
MAX_TOP = 100
#: A category audience is scored on the category's this-many most popular items.
CATEGORY_ITEMS = 3
#: Users scored per Triton request while ranking an audience, and members per streamed chunk.
_AUDIENCE_CHUNK_USERS = 256
AUDIENCE_CHUNK_MEMBERS = 1000
_DAY_S = 86_400.0


@dataclasses.dataclass(frozen=True)
class ProfileAnswer:
    """A user's profile, and their category shares over time when asked for."""

    profile: Profile
    history: list[tuple[float, dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class AudienceChunk:
    """Members (user id as sent, score), best first; ``ranked`` is set on the last chunk."""

    members: list[tuple[str, float]]
    model_version: int
    ranked: int | None = None


@dataclasses.dataclass(frozen=True)
class Trend:
    """A category's or attribute's share of engagement in the recent window and the one before."""

    key: str
    kind: str
    share_recent: float
    share_before: float
    events_recent: int
    events_before: int

    @property
    def change(self) -> float:
        return self.share_recent - self.share_before


@dataclasses.dataclass(frozen=True)
class Trends:
    """The largest rises and falls, best first, over [start_s, end_s) against the window before."""

    rising: list[Trend]
    falling: list[Trend]
    start_s: float
    end_s: float
    events_recent: int
    events_before: int


def _check_top(name: str, value: int, default: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= MAX_TOP:
        raise InvalidRequestError(f"{name} must lie in [1, {MAX_TOP}] (0: the default, {default})")
    return value


class Insights:
    """The analyst API's answers, over one gateway's state and store."""

    def __init__(self, core: GatewayCore, spec: ProfileSpec | None = None) -> None:
        self._core = core
        self.spec = spec or ProfileSpec()

    async def profile(
        self, user_id: str, *, as_of_s: float | None = None, top: int = 0, history_points: int = 0
    ) -> ProfileAnswer:
        """The user's profile as of ``as_of_s`` (default now), from their own events in the store."""
        check_request_id("user_id", user_id)
        top = _check_top("top", top, 5)
        if history_points and not 2 <= history_points <= MAX_HISTORY_POINTS:
            raise InvalidRequestError(f"history_points must be 0 (no history) or lie in [2, {MAX_HISTORY_POINTS}]")
        core = self._core
        at_s = core.as_of(as_of_s)
        events = await core.store.user_events(core.pseudonymise(user_id), before_s=at_s, limit=MAX_PROFILE_EVENTS)
        catalog = core.features.catalog
        profile = build_profile(events, catalog, as_of_s=at_s, spec=self.spec, top=top)
        history = category_history(events, catalog, points=history_points, spec=self.spec) if history_points else []
        return ProfileAnswer(profile, history)

    def _target_items(self, item_id: str, category: str, at_s: float) -> list[str]:
        """The items an audience is scored on: the item, or the category's most popular ones."""
        catalog = self._core.features.catalog
        if item_id:
            check_request_id("item_id", item_id)
            if item_id not in catalog:
                raise NotFoundError(f"item_id {item_id!r} is not in the catalogue; add it with UpsertItems first")
            return [item_id]
        if not category or len(category) > 256:
            raise InvalidRequestError("set the target: item_id or category (a category of at most 256 characters)")
        members = [i for i, item in catalog.items() if category in item.categories]
        if not members:
            raise NotFoundError(f"no catalogue item has the category {category!r}; check its spelling")
        popularity = self._core.features.popularity(members, at_s)
        order = sorted(range(len(members)), key=lambda k: (-popularity[k], members[k]))
        return [members[k] for k in order[:CATEGORY_ITEMS]]

    async def audience(
        self,
        user_ids: Sequence[str],
        *,
        item_id: str = "",
        category: str = "",
        k: int = 0,
        min_score: float = 0.0,
        as_of_s: float | None = None,
        timeout_s: float,
    ) -> AsyncIterator[AudienceChunk]:
        """Rank ``user_ids`` by their score for the target, best first, in chunks."""
        core = self._core
        limit = core.config.max_audience_users
        if not user_ids:
            raise InvalidRequestError("user_ids must name at least one user")
        if len(user_ids) > limit:
            raise InvalidRequestError(
                f"user_ids has {len(user_ids)} users; at most {limit} per call (PREFTRACK_MAX_AUDIENCE_USERS): "
                "split the list and merge the answers by score"
            )
        if k < 0:
            raise InvalidRequestError("k must be >= 0 (0: every user)")
        if not (math.isfinite(min_score) and 0.0 <= min_score <= 1.0):
            raise InvalidRequestError("min_score must lie in [0, 1]")
        at_s = core.as_of(as_of_s)
        targets = self._target_items(item_id, category, at_s)
        for index, user_id in enumerate(user_ids):
            check_request_id(f"user_ids[{index}]", user_id)
        version = core.rollout.stable
        if version is None:
            raise ModelNotReadyError("no model version is serving yet; retry when the gateway is ready")
        distinct = list(dict.fromkeys(user_ids))
        kept: list[tuple[float, int]] = []  # (score, -position): a min-heap of the best k, or everything
        for start in range(0, len(distinct), _AUDIENCE_CHUNK_USERS):
            chunk = distinct[start : start + _AUDIENCE_CHUNK_USERS]
            scores = await self._score_users(chunk, targets, at_s, version, timeout_s)
            for offset, score in enumerate(scores):
                if score < min_score:
                    continue
                entry = (float(score), -(start + offset))
                if not k:
                    kept.append(entry)
                elif len(kept) < k:
                    heapq.heappush(kept, entry)
                elif entry > kept[0]:
                    heapq.heapreplace(kept, entry)
        kept.sort(reverse=True)
        if not kept:
            yield AudienceChunk([], version, ranked=len(distinct))
            return
        for start in range(0, len(kept), AUDIENCE_CHUNK_MEMBERS):
            members = [(distinct[-position], score) for score, position in kept[start : start + AUDIENCE_CHUNK_MEMBERS]]
            last = start + AUDIENCE_CHUNK_MEMBERS >= len(kept)
            yield AudienceChunk(members, version, ranked=len(distinct) if last else None)

    async def _score_users(
        self, user_ids: Sequence[str], targets: Sequence[str], at_s: float, version: int, timeout_s: float
    ) -> np.ndarray:
        """Each user's mean score over the target items, by ``version`` with the per-event correction."""
        core = self._core
        keys = [core.pseudonymise.uncached(u) for u in user_ids]
        rows = np.concatenate([core.feature_rows(key, targets, at_s) for key in keys])
        n = len(targets)
        items = list(targets) * len(keys)
        per_row = [key for key in keys for _ in range(n)]
        raw = await core.triton_scores(per_row, items, rows.astype(np.float32), version, timeout_s)
        adjusted = np.concatenate(
            [
                core.learner.adjust(key, targets, raw[i * n : (i + 1) * n], rows[i * n : (i + 1) * n])
                for i, key in enumerate(keys)
            ]
        )
        return adjusted.reshape(len(keys), n).mean(axis=1)

    async def trends(self, *, window_s: float = 0.0, top: int = 0, as_of_s: float | None = None) -> Trends:
        """The categories and attributes whose share of engagement rose or fell most, recent window vs before."""
        window_s = window_s or 7 * _DAY_S
        if not 60.0 <= window_s <= 365 * _DAY_S:
            raise InvalidRequestError("window must lie between 1 minute and 365 days")
        top = _check_top("top", top, 10)
        core = self._core
        end = core.as_of(as_of_s)
        start = end - window_s
        recent = await core.store.engagement(start, end)
        before = await core.store.engagement(start - window_s, start)
        catalog = core.features.catalog
        spec = self.spec

        def weight(event_type: str) -> float:  # counted by type: every rating weighs as a liked one
            return spec.weight(event_type, spec.rating_threshold)

        def shares(counts: list[tuple[str, str, int]]) -> tuple[dict[tuple[str, str], list[float]], int]:
            totals: dict[tuple[str, str], list[float]] = {}
            events = 0
            for item_id, event_type, count in counts:
                events += count
                item = catalog.get(item_id)
                categories = item.categories if item is not None else ("unknown",)
                attributes = item.attributes if item is not None else ()
                w = weight(event_type) * count
                for category in categories:
                    entry = totals.setdefault(("category", category), [0.0, 0.0])
                    entry[0] += w / len(categories)
                    entry[1] += count
                for name, value in attributes:
                    entry = totals.setdefault(("attribute", f"{name}={value}"), [0.0, 0.0])
                    entry[0] += w
                    entry[1] += count
            return totals, events

        now, n_recent = shares(recent)
        then, n_before = shares(before)
        mass: dict[str, list[float]] = {"category": [0.0, 0.0], "attribute": [0.0, 0.0]}
        for index, table in enumerate((now, then)):
            for (kind, _), (w, _) in table.items():
                mass[kind][index] += w
        found = []
        for kind_key in now.keys() | then.keys():
            kind, key = kind_key
            w_now, c_now = now.get(kind_key, (0.0, 0.0))
            w_then, c_then = then.get(kind_key, (0.0, 0.0))
            found.append(
                Trend(
                    key,
                    kind,
                    w_now / mass[kind][0] if mass[kind][0] else 0.0,
                    w_then / mass[kind][1] if mass[kind][1] else 0.0,
                    int(c_now),
                    int(c_then),
                )
            )
        rising = sorted((t for t in found if t.change > 0), key=lambda t: (-t.change, t.key))[:top]
        falling = sorted((t for t in found if t.change < 0), key=lambda t: (t.change, t.key))[:top]
        return Trends(rising, falling, start, end, n_recent, n_before)
