"""Protocol layer (pure, no I/O): how many login attempts the page takes, per client address and overall.

A sliding window: at most `per_address` attempts from one address and `overall` from everyone within
`window_s` seconds. An attempt is counted when it is let through to the password check (before the check, so
attempts in flight count too); the right password clears its address's count; a refused attempt is not
counted, so a locked-out address is free again one window after its first counted attempt. Memory is bounded by
construction: an address is kept only while it has an attempt in the window, and the window holds at most
`overall` attempts, so at most `overall` addresses are ever tracked.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Final

PER_ADDRESS: Final = 10
OVERALL: Final = 100
WINDOW_S: Final = 60.0


class LoginLimits:
    """The attempts of the last `window_s` seconds, by the injected `clock` (monotonic seconds)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        per_address: int = PER_ADDRESS,
        overall: int = OVERALL,
        window_s: float = WINDOW_S,
    ) -> None:
        self._clock = clock
        self.per_address = per_address
        self.overall = overall
        self.window_s = window_s
        self._by_address: dict[str, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again (whole, at least 1), or None when it may try now."""
        now = self._clock()
        self._forget_before(now - self.window_s)
        waits = []
        mine = self._by_address.get(address)
        if mine is not None and len(mine) >= self.per_address:
            waits.append(mine[-self.per_address] + self.window_s - now)
        if len(self._all) >= self.overall:
            waits.append(self._all[-self.overall] + self.window_s - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def attempt(self, address: str) -> int | None:
        """Count an attempt from `address` and return None, or return `retry_after` (then nothing is counted)."""
        wait = self.retry_after(address)
        if wait is not None:
            return wait
        now = self._clock()
        self._by_address.setdefault(address, collections.deque()).append(now)
        self._all.append(now)
        return None

    def succeeded(self, address: str) -> None:
        """The right password from `address`: its count starts again (the overall one keeps the attempt)."""
        self._by_address.pop(address, None)

    @property
    def tracked(self) -> int:
        """Addresses with an attempt in the window (at most `overall`)."""
        return len(self._by_address)

    def _forget_before(self, horizon: float) -> None:
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for address in list(self._by_address):  # at most `overall` of them
            times = self._by_address[address]
            while times and times[0] <= horizon:
                times.popleft()
            if not times:
                del self._by_address[address]
