"""How many login attempts the page takes (service/web/login_limits.py)."""

from __future__ import annotations

from service.web.login_limits import LoginLimits


class Clock:
    """Monotonic seconds the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_eleventh_attempt_in_a_minute_waits_for_the_first_to_age_out() -> None:
    """Ten attempts from one address go through; the eleventh is refused with the seconds left, and counts nothing."""
    clock = Clock()
    limits = LoginLimits(clock)
    for _ in range(10):
        assert limits.attempt("10.0.0.1") is None
        clock.now += 1
    assert limits.attempt("10.0.0.1") == 50
    assert limits.retry_after("10.0.0.2") is None  # another address is not locked
    clock.now = 1060.0
    assert limits.attempt("10.0.0.1") is None  # the first aged out; refusals did not extend the lock
    assert limits.attempt("10.0.0.1") == 1


def test_the_right_password_starts_the_address_again() -> None:
    """`succeeded` clears the address's count, so a person who mistyped a few times is not locked later."""
    clock = Clock()
    limits = LoginLimits(clock, per_address=3)
    for _ in range(3):
        limits.attempt("a")
    assert limits.retry_after("a") is not None
    limits.succeeded("a")
    assert limits.attempt("a") is None


def test_everyone_together_is_limited_too() -> None:
    """Attempts spread over many addresses stop at the overall bound, for a new address as well."""
    clock = Clock()
    limits = LoginLimits(clock, per_address=10, overall=100)
    for n in range(100):
        assert limits.attempt(f"10.0.{n // 250}.{n % 250}") is None
    assert limits.attempt("192.0.2.1") == 60
    clock.now += 60
    assert limits.attempt("192.0.2.1") is None


def test_memory_stays_bounded_by_the_overall_limit() -> None:
    """A flood from a hundred thousand addresses keeps at most `overall` of them, and forgets them once the window
    has passed."""
    clock = Clock()
    limits = LoginLimits(clock, overall=100)
    for n in range(100_000):
        limits.attempt(f"addr-{n}")
        clock.now += 0.01
    assert limits.tracked <= 100
    clock.now += 61
    assert limits.retry_after("x") is None
    assert limits.tracked == 0
