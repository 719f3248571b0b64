"""Protocol layer (no I/O): when to retry (a Deepgram connection, the transcript database), and how long to wait.

Full-jitter exponential backoff (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
the n-th retry waits a uniform random time in [0, min(cap, base * 2**n)], so many calls that lost Deepgram at
the same moment do not come back at the same moment. The random source is injected so tests are exact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# A connection must live this long, or return a final, before its failure stops counting against the
# backoff: a broken endpoint that accepts and then drops at once must not become a tight loop.
HEALTHY_AFTER_S = 5.0


def backoff(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry)."""
    ceiling = min(cap_s, base_s * 2 ** min(max(attempt - 1, 0), 30))
    return rng.uniform(0.0, ceiling)


@dataclass
class Outage:
    """Failures since something last worked (a track's Deepgram connection, the store's database); decides when
    to give up (never, without a limit)."""

    limit_s: float = math.inf
    attempts: int = 0
    started_at: float | None = None

    def connection_ended(self, *, opened_at: float, now: float, produced_results: bool) -> None:
        """A connection failed; one that was healthy first starts a fresh outage."""
        if produced_results or now - opened_at >= HEALTHY_AFTER_S:
            self.recovered()
        self.failed(now)

    def recovered(self) -> None:
        """It works again: the next failure starts a fresh outage."""
        self.attempts = 0
        self.started_at = None

    def failed(self, now: float) -> None:
        self.attempts += 1
        if self.started_at is None:
            self.started_at = now

    def failing_for_s(self, now: float) -> float:
        """How long this outage has lasted at `now`; 0 when none has begun."""
        return now - self.started_at if self.started_at is not None else 0.0

    def exhausted(self, now: float) -> bool:
        """True when Deepgram has been out for longer than the limit: spool instead of retrying."""
        return self.started_at is not None and now - self.started_at >= self.limit_s
