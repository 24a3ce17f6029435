"""Client of the gateway's insights API (``preftrack.insights.v1``): what users prefer and how it changes.

    from preftrack.insights import InsightsClient
    with InsightsClient("localhost:50051", api_key=ANALYST_KEY) as insights:
        profile = insights.profile("u-42")                 # top categories, attributes, items; shifts
        best = insights.audience(user_ids, item_id="i-7", k=1000)  # who is most likely to want item i-7
        trends = insights.trends(window_s=7 * 86400)       # categories and attributes rising or falling

preftrack stores only pseudonyms of user ids, so an audience is ranked from the user ids the shop supplies.
Errors are the SDK's (:mod:`preftrack.errors`); a client key gets :class:`~preftrack.errors.PermissionDeniedError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import grpc
from google.protobuf.duration_pb2 import Duration

from preftrack._channel import TLS, StubClient
from preftrack._convert import seconds, timestamp
from preftrack.errors import translate
from preftrack.insights.v1 import insights_service_pb2 as pb
from preftrack.insights.v1 import insights_service_pb2_grpc

_DIRECTIONS = {pb.DIRECTION_RISING: "rising", pb.DIRECTION_FALLING: "falling", pb.DIRECTION_STEADY: "steady"}


@dataclasses.dataclass(frozen=True)
class Affinity:
    """A user's share of engagement with a category, attribute ("name=value") or item, and where it is going."""

    key: str
    score: float
    short_term: float
    long_term: float
    trend: float
    direction: str  # "rising", "falling" or "steady"


@dataclasses.dataclass(frozen=True)
class Shift:
    """A moment the user's category preferences changed materially: top categories before and after."""

    at_s: float
    event_index: int
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Profile:
    """A user's preference profile as of a time (``events_used`` 0: the user is unknown)."""

    as_of_s: float
    events_used: int
    categories: tuple[Affinity, ...]
    attributes: tuple[Affinity, ...]
    items: tuple[Affinity, ...]
    shifts: tuple[Shift, ...]
    last_shift: Shift | None
    #: (time, category -> share) over the user's history, when asked for.
    history: tuple[tuple[float, dict[str, float]], ...] = ()


@dataclasses.dataclass(frozen=True)
class Trend:
    """A category's or attribute's share of the shop's engagement, recent window against the one before."""

    key: str
    kind: str  # "category" or "attribute"
    share_recent: float
    share_before: float
    change: float
    events_recent: int
    events_before: int


@dataclasses.dataclass(frozen=True)
class Trends:
    rising: tuple[Trend, ...]
    falling: tuple[Trend, ...]
    start_s: float
    end_s: float
    events_recent: int
    events_before: int


def _affinities(items: Iterable[pb.Affinity]) -> tuple[Affinity, ...]:
    return tuple(
        Affinity(a.key, a.score, a.short_term, a.long_term, a.trend, _DIRECTIONS.get(a.direction, "steady"))
        for a in items
    )


def _shift(s: pb.Shift) -> Shift:
    return Shift(seconds(s.time), int(s.event_index), tuple(s.before), tuple(s.after))


def _trends(items: Iterable[pb.Trend]) -> tuple[Trend, ...]:
    return tuple(
        Trend(t.key, t.kind, t.share_recent, t.share_before, t.change, int(t.events_recent), int(t.events_before))
        for t in items
    )


class InsightsClient(StubClient):
    """Talks to a gateway's InsightsService. ``api_key`` is an analyst or admin key (PREFTRACK_ANALYST_KEYS)."""

    def __init__(
        self, target: str, *, api_key: str | None = None, timeout_s: float = 60.0, tls: TLS | None = None
    ) -> None:
        stub = insights_service_pb2_grpc.InsightsServiceStub
        super().__init__(stub, target, api_key=api_key, timeout_s=timeout_s, tls=tls)

    def profile(self, user_id: str, *, as_of_s: float | None = None, top: int = 5, history_points: int = 0) -> Profile:
        """The user's top categories, attributes and items with trends, and their preference shifts, as of
        ``as_of_s`` (default now); with ``history_points``, their category shares over time too."""
        request = pb.GetProfileRequest(user_id=user_id, top=top, history_points=history_points)
        if as_of_s is not None:
            request.as_of.CopyFrom(timestamp(as_of_s))
        r = self._call(self._stub.GetProfile, request)
        return Profile(
            as_of_s=seconds(r.as_of),
            events_used=int(r.events_used),
            categories=_affinities(r.categories),
            attributes=_affinities(r.attributes),
            items=_affinities(r.items),
            shifts=tuple(_shift(s) for s in r.shifts),
            last_shift=_shift(r.last_shift) if r.HasField("last_shift") else None,
            history=tuple((seconds(p.time), dict(p.category_shares)) for p in r.history),
        )

    def iter_audience(
        self,
        user_ids: Sequence[str],
        *,
        item_id: str | None = None,
        category: str | None = None,
        k: int = 0,
        min_score: float = 0.0,
        as_of_s: float | None = None,
    ) -> Iterator[tuple[str, float]]:
        """(user id, score) of the given users, best first, as the gateway streams them: for ``item_id``, or
        for ``category`` (its most popular items). ``k`` keeps the best k (0: all); ``min_score`` drops the rest."""
        if (item_id is None) == (category is None):
            raise ValueError("name exactly one target: item_id or category")
        request = pb.RankAudienceRequest(user_ids=list(user_ids), k=k, min_score=min_score)
        if item_id is not None:
            request.item_id = item_id
        else:
            request.category = category or ""
        if as_of_s is not None:
            request.as_of.CopyFrom(timestamp(as_of_s))
        try:
            for chunk in self._stub.RankAudience(request, timeout=self.timeout_s, metadata=self._metadata):
                for member in chunk.members:
                    yield member.user_id, float(member.score)
        except grpc.RpcError as exc:
            raise translate(exc) from exc

    def audience(self, user_ids: Sequence[str], **target: object) -> list[tuple[str, float]]:
        """:meth:`iter_audience` collected into a list."""
        return list(self.iter_audience(user_ids, **target))  # type: ignore[arg-type]

    def trends(self, *, window_s: float = 7 * 86_400.0, top: int = 10, as_of_s: float | None = None) -> Trends:
        """Categories and attributes whose share of engagement rose or fell most: the window ending at
        ``as_of_s`` (default now) against the window before it."""
        request = pb.GetTrendsRequest(top=top, window=Duration(seconds=int(window_s), nanos=int(window_s % 1 * 1e9)))
        if as_of_s is not None:
            request.as_of.CopyFrom(timestamp(as_of_s))
        r = self._call(self._stub.GetTrends, request)
        return Trends(
            _trends(r.rising),
            _trends(r.falling),
            seconds(r.window_start),
            seconds(r.window_end),
            int(r.events_recent),
            int(r.events_before),
        )
