"""A clock the test moves, for code that takes an injected clock (the login limits, the refusal summary)."""

from __future__ import annotations


class Clock:
    """Monotonic seconds that stand still until the test sets `now`, instead of waiting a minute."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
