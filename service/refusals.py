"""Refusals an unauthenticated client can cause in bulk, logged with its address and summarised.

Every refused request is worth a line that says what was wrong and from where, but a flood of them would flood
a log drain too. So per event and client address, the first `REFUSAL_BURST` refusals in `REFUSAL_WINDOW_S` are
logged as they come (`log_refusal`), the rest only counted, and one `<event>.suppressed address=… count=N` line
gives the count once the window has ended (at the next refusal, or by `flush_refusals`, which the running
service calls every few seconds). `RefusalSummary` decides, with no I/O and an injectable clock; the logger is
the caller's.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

REFUSAL_BURST = 5  # logged one by one per (event, address) in a window...
REFUSAL_WINDOW_S = 60.0  # ...of this long; the rest are counted, and the count logged when it ends
REFUSAL_ADDRESSES = 1024  # (event, address) pairs tracked at once; beyond them, one pair for all other addresses
OTHER_ADDRESSES = "other"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Refusals counted but not logged: `count` of `event` from `address` in a window of `window_s`."""

    event: str
    address: str
    count: int
    window_s: float


@dataclass(slots=True)
class _Window:
    started: float
    logged: int = 0
    suppressed: int = 0


class RefusalSummary:
    """Which refusals to log one by one, and the counts of those that were not (no I/O; `clock` injectable).

    Each (event, address) has a window that opens at its first refusal and lasts `window_s`: its first `burst`
    refusals are logged, the rest counted. A window that has ended is reported (when it counted any) at the next
    `admit` of any pair, or by `ended()`, which a caller may run periodically. At most `max_pairs` pairs are
    tracked; a new address beyond them shares the pair (event, "other"), so memory stays bounded under a flood
    from many addresses.
    """

    def __init__(
        self,
        *,
        burst: int = REFUSAL_BURST,
        window_s: float = REFUSAL_WINDOW_S,
        max_pairs: int = REFUSAL_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.window_s, self._max_pairs, self._clock = burst, window_s, max_pairs, clock
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()  # oldest window first

    def admit(self, event: str, address: str) -> tuple[bool, list[Suppressed]]:
        """Whether this refusal is logged, and the counts of windows that have ended (to log first)."""
        now = self._clock()
        ended = self.ended(now)
        key = (event, address)
        if key not in self._windows and len(self._windows) >= self._max_pairs:
            key = (event, OTHER_ADDRESSES)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(started=now)
        if window.logged < self.burst:
            window.logged += 1
            return True, ended
        window.suppressed += 1
        return False, ended

    def ended(self, now: float | None = None) -> list[Suppressed]:
        """The windows that have ended, forgotten; those that counted refusals as `Suppressed`."""
        now = self._clock() if now is None else now
        reported = []
        while self._windows:
            (event, address), window = next(iter(self._windows.items()))
            if now - window.started < self.window_s:
                break
            del self._windows[event, address]
            if window.suppressed:
                reported.append(Suppressed(event, address, window.suppressed, self.window_s))
        return reported


class WarningLogger(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...


# One per process, as the log is: every app of the process shares its stdout, so they share its summary too.
summary = RefusalSummary()


def log_refusal(log: WarningLogger, event: str, address: str | None, **fields: object) -> None:
    """A refusal's WARNING line, with the client's address, unless its (event, address) is over the burst."""
    address = address or "unknown"
    logged, ended = summary.admit(event, address)
    flush_refusals(log, ended)
    if logged:
        log.warning(event, address=address, **fields)


def flush_refusals(log: WarningLogger, ended: list[Suppressed] | None = None) -> None:
    """One `<event>.suppressed` line per ended window that counted refusals (all that have ended by now if None)."""
    for window in summary.ended() if ended is None else ended:
        log.warning(f"{window.event}.suppressed", address=window.address, count=window.count, window_s=window.window_s)
