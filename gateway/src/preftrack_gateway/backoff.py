"""A delay that doubles after each failure up to a ceiling and is forgotten after a success: the one rule for
retrying a store that went away (its connections, the log follower, the continual trainer)."""

from __future__ import annotations


class Backoff:
    """The delay before the next try: 0 until a failure, then ``first_s`` doubling to ``max_s``.

    >>> b = Backoff(0.1, 0.3)
    >>> b.failed(), b.failed(), b.failed()
    (0.1, 0.2, 0.3)
    >>> b.succeeded(), b.delay_s
    (True, 0.0)
    """

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = 0.0

    def failed(self) -> float:
        """One more failure; returns the new delay."""
        self.delay_s = min(self.max_s, max(self.first_s, 2 * self.delay_s))
        return self.delay_s

    def succeeded(self) -> bool:
        """A success: the delay goes back to 0; returns whether it was backing off."""
        was = self.delay_s > 0
        self.delay_s = 0.0
        return was
