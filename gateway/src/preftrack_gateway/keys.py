"""API keys of one role, each configured as the key itself or as ``sha256:<hex digest>`` of it."""

from __future__ import annotations

import hashlib
import hmac


class Keys:
    """A role's keys; a presented token is compared in constant time.

    >>> keys = Keys(("plain-key", "sha256:" + hashlib.sha256(b"hashed-key").hexdigest()))
    >>> keys.match(b"plain-key"), keys.match(b"hashed-key"), keys.match(b"other"), bool(Keys(()))
    (True, True, False, False)
    """

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._raw = tuple(k.encode() for k in keys if not k.startswith("sha256:"))
        self._digests = tuple(bytes.fromhex(k.removeprefix("sha256:")) for k in keys if k.startswith("sha256:"))

    def __bool__(self) -> bool:
        return bool(self._raw or self._digests)

    def match(self, token: bytes) -> bool:
        digest = hashlib.sha256(token).digest()
        return any(hmac.compare_digest(token, k) for k in self._raw) or any(
            hmac.compare_digest(digest, d) for d in self._digests
        )
