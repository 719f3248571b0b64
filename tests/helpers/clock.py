"""Clocks the test moves: one for code that takes an injected clock (the login limits, the refusal summary), and
the running loop's own, for code that asks the loop for the time (`virtual_time`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


class Clock:
    """Monotonic seconds that stand still until the test sets `now`, instead of waiting a minute."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def virtual_time(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """The running loop on a clock of its own: time stands still while anything is ready to run, and jumps to
    the next timer when nothing is. Timers fire in order at their exact times, with no real waiting, so a test
    can say "sent at 0.08 s", not "sent within a second or so".

    Only for code without I/O (a fake connection, not a socket): the loop polls its selector without waiting,
    so a socket's data would seem to arrive the moment the next timer is due.
    """
    selector: Any = getattr(loop, "_selector")  # noqa: B009 - asyncio's selector loop keeps it private
    real_select = selector.select
    scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled")  # noqa: B009 - its heap of timers
    now = [loop.time()]

    def select(timeout: float | None = None) -> Any:
        if timeout is not None and timeout > 0:
            # Nothing to run until the next timer: go there at once, to its very time (not now + timeout, which
            # floating point may leave a hair short of it).
            now[0] = max(now[0], scheduled[0].when()) if scheduled else now[0] + timeout
        return real_select(0 if timeout is not None else None)

    loop.time = lambda: now[0]  # type: ignore[method-assign]
    selector.select = select
    try:
        yield
    finally:
        del selector.select
        del loop.time  # type: ignore[attr-defined]
