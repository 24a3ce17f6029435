"""Synchronous client of the preftrack gateway."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from preftrack import _convert
from preftrack._channel import TLS, channel_options, metadata, open_channel
from preftrack.errors import InvalidRequestError, PreftrackError, translate
from preftrack.types import (
    Boost,
    Diversity,
    FeedbackEvent,
    FeedbackSummary,
    Item,
    ItemFilter,
    Recommendation,
    ScoredItem,
    Scores,
    SimilarItems,
    User,
)
from preftrack.v1 import feedback_service_pb2_grpc, scoring_service_pb2_grpc

T = TypeVar("T")


class Client:
    """Talks to a preftrack gateway over gRPC.

    Args:
        target: ``host:port`` of the gateway.
        api_key: sent as ``authorization: Bearer <key>`` when the gateway requires one.
        timeout_s: default deadline of each call.
        max_attempts: attempts per call when the gateway is UNAVAILABLE or asks to be retried later (2 to 5).
        stream_timeout_s: default deadline of a whole :meth:`stream` (it carries many batches).
        max_message_bytes: largest message sent or received.
        tls: connect over TLS (:class:`preftrack.TLS`: CA file, client certificate for mTLS); None: plaintext.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 4,
        max_message_bytes: int = 16 * 1024 * 1024,
        tls: TLS | None = None,
        stream_timeout_s: float = 300.0,
    ) -> None:
        self._channel = open_channel(
            target,
            channel_options(max_attempts=max_attempts, max_message_bytes=max_message_bytes),
            tls,
        )
        self._scoring = scoring_service_pb2_grpc.ScoringServiceStub(self._channel)
        self._feedback = feedback_service_pb2_grpc.FeedbackServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = metadata(api_key)
        self.timeout_s = timeout_s
        self.stream_timeout_s = stream_timeout_s

    def _call(self, method, request, timeout_s: float | None):
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as e:
            raise translate(e) from e

    def score(
        self,
        user_id: str,
        item_ids: Sequence[str],
        *,
        context: Mapping[str, str] | None = None,
        as_of_s: float | None = None,
        query: str = "",
        session_id: str = "",
        timeout_s: float | None = None,
    ) -> Scores:
        """Score each item for the user; the answer keeps the request's order.

        ``as_of_s`` scores as of that time (replays, backtests); default now. ``query``: what the user is searching
        for now, if anything (scores then reflect each item's relevance to it; the text is never stored).
        ``session_id``: an anonymous visitor's session instead of a user (pass ``""`` as ``user_id``).
        """
        request = _convert.score_request(user_id, item_ids, context, as_of_s, query, session_id)
        return _convert.scores(self._call(self._scoring.Score, request, timeout_s))

    def recommend(
        self,
        user_id: str,
        candidates: Sequence[str] = (),
        k: int = 10,
        *,
        exclude: Sequence[str] = (),
        context: Mapping[str, str] | None = None,
        as_of_s: float | None = None,
        query: str = "",
        item_filter: ItemFilter | None = None,
        boosts: Sequence[Boost] = (),
        diversity: Diversity | None = None,
        session_id: str = "",
        exploration: float | None = None,
        timeout_s: float | None = None,
    ) -> Recommendation:
        """The ``k`` best items for the user, best first (logged as an impression); for the search ``query``
        when given.

        ``candidates``: the items to rank; none: the gateway retrieves candidates from the catalogue. Only items
        passing ``item_filter`` come back, scores multiplied by the ``boosts``, at most ``diversity.max_per_value``
        per attribute value; ``fewer_than_k`` says when fewer than k passed. ``session_id``: an anonymous visitor's
        session instead of a user (pass ``""`` as ``user_id``). ``exploration``: the share of lists the gateway's
        exploration policy may reorder, in [0, 0.5] (default: the gateway's setting)."""
        rules = _convert.Rules(item_filter, tuple(boosts), diversity, session_id, exploration)
        try:
            request = _convert.recommend_request(user_id, candidates, k, exclude, context, as_of_s, query, rules)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), "INVALID_ARGUMENT") from exc
        return _convert.recommendation(self._call(self._scoring.Recommend, request, timeout_s))

    def similar_items(
        self,
        item_id: str,
        k: int = 10,
        *,
        item_filter: ItemFilter | None = None,
        user_id: str = "",
        timeout_s: float | None = None,
    ) -> SimilarItems:
        """Items engaged with together with ``item_id``, best first (popular items of its category when it has too
        few); ``user_id`` names whose purchases ``item_filter.exclude_bought_within_days`` means."""
        request = _convert.similar_request(item_id, k, item_filter, user_id)
        return _convert.similar(self._call(self._scoring.SimilarItems, request, timeout_s))

    def buy_again(
        self, user_id: str, k: int = 10, *, item_filter: ItemFilter | None = None, timeout_s: float | None = None
    ) -> tuple[ScoredItem, ...]:
        """Items the user bought before, the most due for buying again first (score: time since the last purchase
        over the item's usual re-buy interval; 0 where nobody has bought it twice yet)."""
        request = _convert.buy_again_request(user_id, k, item_filter)
        return _convert.bought_again(self._call(self._scoring.BuyAgain, request, timeout_s))

    def send(
        self, events: FeedbackEvent | Sequence[FeedbackEvent], *, timeout_s: float | None = None
    ) -> FeedbackSummary:
        """Store one event or a batch, all or nothing; returns once they are durable."""
        batch = [events] if isinstance(events, FeedbackEvent) else list(events)
        try:
            request = _convert.send_request(batch)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), "INVALID_ARGUMENT") from exc
        return _convert.send_summary(self._call(self._feedback.SendFeedback, request, timeout_s))

    def stream(
        self, events: Iterable[FeedbackEvent], *, batch_size: int = 1000, timeout_s: float | None = None
    ) -> FeedbackSummary:
        """Stream events in batches (lazily: any iterable, however long); events the gateway or the SDK refuses
        are skipped and reported in the summary, the rest are stored."""
        batcher = _convert.StreamBatcher(batch_size)
        try:
            response = self._feedback.StreamFeedback(
                batcher.requests(events), timeout=timeout_s or self.stream_timeout_s, metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise translate(e) from e
        return batcher.summary(response)

    def identify_user(self, session_id: str, user_id: str, *, timeout_s: float | None = None) -> int:
        """Merge an anonymous session into the user it turned out to be (at login): the session's events count as
        the user's from then on. Returns how many events moved (0 when merged before: it is idempotent)."""
        request = _convert.identify_request(session_id, user_id)
        return int((self._call(self._feedback.IdentifyUser, request, timeout_s)).events_moved)

    def upsert_items(self, items: Sequence[Item], *, timeout_s: float | None = None) -> int:
        """Add or replace catalogue items; returns how many."""
        response = self._call(self._feedback.UpsertItems, _convert.upsert_request(items), timeout_s)
        return int(response.upserted)

    def upsert_users(self, users: Sequence[User], *, timeout_s: float | None = None) -> int:
        """Set users' attributes (replacing what each had); returns how many users."""
        response = self._call(self._feedback.UpsertUsers, _convert.upsert_users_request(users), timeout_s)
        return int(response.upserted)

    def healthy(self, *, timeout_s: float | None = None) -> bool:
        """Whether the gateway reports SERVING (a model is ready)."""
        try:
            response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=""), timeout_s)
        except PreftrackError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def feedback_sender(self, *, batch_size: int = 500, flush_interval_s: float = 0.2, max_queued: int = 100_000):
        """A background sender that batches events; see :class:`preftrack.sender.FeedbackSender`."""
        from preftrack.sender import FeedbackSender

        return FeedbackSender(self, batch_size=batch_size, flush_interval_s=flush_interval_s, max_queued=max_queued)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
