"""Pseudonymisation: user ids, and users' attributes, are replaced by a keyed hash before they are stored, logged
or scored."""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymiser:
    """HMAC-SHA256 of the user id under a secret key, truncated to 128 bits (hex).

    >>> p = Pseudonymiser("a-secret-of-16-chars")
    >>> p("alice") == p("alice") != p("bob"), len(p("alice"))
    (True, 32)
    """

    __slots__ = ("_cache", "_key", "_session_key")

    #: Pseudonyms remembered (active users repeat: the HMAC is the costliest step of ingesting an event).
    CACHE_SIZE = 200_000

    def __init__(self, key: str) -> None:
        self._key = key.encode("utf-8")
        self._cache: dict[str, str] = {}
        # Sessions are hashed under a key derived from the secret: no session id can take a user id's pseudonym.
        self._session_key = hmac.new(self._key, b"preftrack anonymous sessions", hashlib.sha256).digest()

    def _digest(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def __call__(self, user_id: str) -> str:
        found = self._cache.get(user_id)
        if found is None:
            found = self._digest(user_id)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[user_id] = found
        return found

    def uncached(self, user_id: str) -> str:
        """The pseudonym, not remembered (an audience's users are looked up once)."""
        found = self._cache.get(user_id)
        return found if found is not None else self._digest(user_id)

    def attribute(self, name: str, value: str) -> str:
        """A user's attribute (``age_band`` = ``25-34``, say) as a token: the keyed hash of the pair, domain-separated
        from user ids. Neither the name nor the value is stored; equal pairs give equal tokens, which is all the
        model needs.

        >>> p = Pseudonymiser("a-secret-of-16-chars")
        >>> p.attribute("gender", "F") == p.attribute("gender", "F") != p.attribute("gender", "M")
        True
        """
        return self._digest(f"\x1eattribute\x1f{name}\x1f{value}")

    def session(self, session_id: str) -> str:
        """An anonymous session's pseudonym: a keyed hash under a key of its own, so that it never equals a user's.

        >>> p = Pseudonymiser("a-secret-of-16-chars")
        >>> p.session("s-1") == p.session("s-1") != p("s-1")
        True
        """
        return hmac.new(self._session_key, session_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def forget(self, user_id: str) -> None:
        """Drop a user's cached pseudonym."""
        self._cache.pop(user_id, None)

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymiser(<key hidden>)"
