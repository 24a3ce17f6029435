"""One PostgreSQL connection that reopens itself: the only place the PostgreSQL store connects, and the only
place that decides when to try again after the server went away (a restart, a failover, a network blip).

A call on a lost connection fails (:class:`StoreError`, nothing committed) and the next call reconnects. While
the server cannot be reached, reconnection attempts back off (0.1 s doubling to ``max_backoff_s``) and a call
in between fails at once, saying when the next attempt is: no busy loop, and one log line per attempt.
"""

from __future__ import annotations

import logging
import time

import psycopg

from preftrack_gateway.backoff import Backoff
from preftrack_gateway.store.base import StoreError

_LOGGER = logging.getLogger(__name__)

#: Seconds a connection attempt may take before it counts as failed (a server that does not answer at all).
CONNECT_TIMEOUT_S = 5


def describe(exc: psycopg.Error) -> str:
    """The message of a PostgreSQL failure, saying whether the connection itself went away.

    >>> describe(psycopg.OperationalError("the connection is lost"))
    'PostgreSQL: the connection was lost (the connection is lost); it reconnects by itself'
    """
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return f"PostgreSQL: the connection was lost ({text}); it reconnects by itself"
    return f"PostgreSQL: {text}"


class PgLink:
    """A connection to ``url`` (autocommit) that is opened again, with backoff, once it is lost.

    Not safe for concurrent use by itself: the store serialises each link's users with a lock.
    """

    def __init__(self, url: str, name: str, *, max_backoff_s: float = 2.0) -> None:
        self._url = url
        self._name = name
        self._conn: psycopg.AsyncConnection | None = None
        self._backoff = Backoff(0.1, max_backoff_s)
        self._retry_at = 0.0
        self._last_error = ""

    @property
    def backoff_s(self) -> float:
        """Seconds until the next reconnection attempt is allowed (0 when connected or free to try)."""
        return max(0.0, self._retry_at - time.monotonic()) if self._conn is None else 0.0

    async def connect(self) -> psycopg.AsyncConnection:
        """The live connection, opened now if it was lost; raises :class:`StoreError` if it cannot be."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if self._conn is not None:  # lost: psycopg closes a connection whose server went away
            _LOGGER.warning("PostgreSQL %s connection lost; reconnecting", self._name)
            self._conn = None
        wait_s = self._retry_at - time.monotonic()
        if wait_s > 0:
            raise StoreError(
                f"PostgreSQL is unreachable ({self._last_error}); the next connection attempt is in {wait_s:.1f} s",
                retry_after_s=wait_s,
            )
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            self._last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            wait_s = self._backoff.failed()
            self._retry_at = time.monotonic() + wait_s
            _LOGGER.warning(
                "PostgreSQL %s connection failed (%s); next attempt in %.1f s", self._name, self._last_error, wait_s
            )
            raise StoreError(
                f"PostgreSQL is unreachable ({self._last_error}); the next connection attempt is in {wait_s:.1f} s",
                retry_after_s=wait_s,
            ) from exc
        if self._backoff.succeeded():
            _LOGGER.info("PostgreSQL %s connection restored", self._name)
        self._retry_at = 0.0
        return self._conn

    async def close(self) -> None:
        """Close the connection (if open); a later :meth:`connect` opens a new one."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
