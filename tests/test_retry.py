"""Backoff and outage accounting: pure functions of their inputs."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from service.retry import HEALTHY_AFTER_S, Outage, backoff


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=2**32))
def test_backoff_stays_within_its_bounds(attempt: int, seed: int) -> None:
    """Every delay is in [0, min(cap, base * 2**(attempt-1))]."""
    delay = backoff(attempt, base_s=0.25, cap_s=8.0, rng=random.Random(seed))
    assert 0.0 <= delay <= min(8.0, 0.25 * 2 ** min(max(attempt - 1, 0), 30))


def test_backoff_grows_then_caps() -> None:
    """With the random source at its top the ceiling doubles per attempt up to the cap."""

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    delays = [backoff(n, base_s=0.25, cap_s=2.0, rng=Top()) for n in range(1, 7)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_connection_that_dies_at_once_keeps_counting() -> None:
    """Connect-then-drop without results counts as another failure of the same outage."""
    outage = Outage(limit_s=10)
    outage.failed(now=0.0)
    outage.connection_ended(opened_at=1.0, now=1.5, produced_results=False)
    assert outage.attempts == 2
    assert outage.started_at == 0.0
    assert not outage.exhausted(now=9.9)
    assert outage.exhausted(now=10.0)


def test_a_healthy_connection_starts_a_fresh_outage() -> None:
    """A connection that produced results, or lived long enough, resets the count."""
    outage = Outage(limit_s=10)
    outage.failed(now=0.0)
    outage.connection_ended(opened_at=1.0, now=2.0, produced_results=True)
    assert (outage.attempts, outage.started_at) == (1, 2.0)
    outage.connection_ended(opened_at=3.0, now=3.0 + HEALTHY_AFTER_S, produced_results=False)
    assert (outage.attempts, outage.started_at) == (1, 3.0 + HEALTHY_AFTER_S)


def test_an_outage_says_how_long_it_has_lasted() -> None:
    """From its first failure on (0 before any, and again once it has recovered)."""
    outage = Outage()
    assert outage.failing_for_s(5.0) == 0.0
    outage.failed(5.0)
    outage.failed(7.0)
    assert outage.failing_for_s(8.5) == 3.5
    outage.recovered()
    assert outage.failing_for_s(9.0) == 0.0
