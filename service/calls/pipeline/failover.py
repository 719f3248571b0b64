"""Protocol layer (no I/O): which speech-to-text engine a new connection uses, primary or fallback.

`Failover` is the process's view, shared by every call: the primary is *down* once a track judged so (below),
and stays down until a probe of it answers (`primary_answered`); while it is down, new connections go to the
fallback. `TrackChoice` is one track's: which engine its next connection uses, and, after a failure, whether it
moves at once (no backoff wait) and why. The track replays what was not final on the new connection, as on any
reconnect (`ledger.py`), so a move loses and doubles nothing.

A failure of the primary moves a track when a fallback can fix it (`judge`):
- `refused`: the primary refused the key or the account (HTTP 401, 402, 403, or no key at all). A fallback with
  another key, project or host may take it. Refusals of what was asked (HTTP 400, closes 1002/1003/1007/1008)
  are not: the fallback gets the same request and would refuse it too, so the track spools as before.
- `unreachable`: a connection to it could not be opened (refused, timed out, 5xx, 429 at the upgrade).
- `failing`: connections opened but kept failing (drops, closes, silence) for DEEPGRAM_FAILOVER_AFTER_S.
A refusal is also remembered by the track: an engine that refused a track is not tried again by it, whatever
the process prefers, so a fallback with a wrong key sends its tracks back to the primary rather than to the spool.
The clock is injected: the tests are exact.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from service.errors import SttError, SttFailure, SttRejected
from service.stt.engine import FALLBACK, PRIMARY

# Refusals of who is asking (the key, the project's credit, the key's access), which another key or host may not
# make; everything else refused is about what was asked, and the same at any Deepgram.
REFUSALS_ANOTHER_MAY_TAKE = frozenset({401, 402, 403})


class Why(enum.StrEnum):
    """Why a track's engine changed: a fixed label for the log line and the metric."""

    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    FAILING = "failing"
    PRIMARY_ANSWERED = "primary_answered"  # a probe found the primary again: new connections go back to it


def judge(error: SttError, *, opened: bool, failing_for_s: float, after_s: float) -> Why | None:
    """Whether a failed connection's engine should be left for the other one, and why; None: retry it as before.

    `opened` says whether the connection had opened (else the attempt failed to connect); `failing_for_s` is
    how long the track's connections have been failing (its outage so far).
    """
    if isinstance(error, SttRejected):
        fixable = error.status in REFUSALS_ANOTHER_MAY_TAKE or error.failure is SttFailure.NO_KEY
        return Why.REFUSED if fixable else None
    if not opened:
        return Why.UNREACHABLE
    return Why.FAILING if failing_for_s >= after_s else None


@dataclass(frozen=True, slots=True)
class Move:
    """A track's engine changed between two connections."""

    from_engine: str
    to_engine: str
    why: Why


class Failover:
    """The process's choice of engine for new connections: the primary, unless it is down and there is a fallback.

    `on_change(down, why)` is told when the primary goes down or comes back (the adapter logs it and sets the
    metric); `probe_due` says when the probe should ask the primary again (every `probe_every_s` while down).
    """

    def __init__(
        self,
        *,
        has_fallback: bool,
        after_s: float,
        probe_every_s: float,
        clock: Callable[[], float],
        on_change: Callable[[bool, Why], None] | None = None,
    ) -> None:
        self.engines = (PRIMARY, FALLBACK) if has_fallback else (PRIMARY,)
        self.after_s = after_s
        self.probe_every_s = probe_every_s
        self._clock = clock
        self._on_change = on_change or _unreported
        self.down_since: float | None = None  # when the primary went down; None while it is up
        self.why: Why = Why.PRIMARY_ANSWERED  # why the primary is down, or that it answered
        self._probed_at = 0.0

    @property
    def has_fallback(self) -> bool:
        return len(self.engines) > 1

    @property
    def primary_down(self) -> bool:
        return self.down_since is not None

    def preferred(self) -> str:
        """The engine a new connection uses."""
        return FALLBACK if self.primary_down and self.has_fallback else PRIMARY

    def engines_in_order(self) -> tuple[str, ...]:
        """Every engine, the preferred first: the order the spool's batch transcription tries them in."""
        preferred = self.preferred()
        return (preferred, *(name for name in self.engines if name != preferred))

    def primary_failed(self, why: Why) -> None:
        """A track judged the primary down (`judge`); a no-op without a fallback, or when it is down already."""
        if not self.has_fallback or self.primary_down:
            return
        self.down_since = self._probed_at = self._clock()
        self.why = why
        self._on_change(True, why)

    def probe_due(self) -> bool:
        """The primary is down and was last asked (or went down) at least `probe_every_s` ago."""
        return self.primary_down and self._clock() - self._probed_at >= self.probe_every_s

    def probed(self, *, answered: bool) -> float:
        """A probe of the primary ended; when it answered, new connections go back to it. Returns how long it
        had been down (0.0 if it was not)."""
        now = self._clock()
        self._probed_at = now
        if not answered or self.down_since is None:
            return 0.0
        down_s = now - self.down_since
        self.down_since = None
        self.why = Why.PRIMARY_ANSWERED
        self._on_change(False, Why.PRIMARY_ANSWERED)
        return down_s


def _unreported(_down: bool, _why: Why) -> None:
    pass


class TrackChoice:
    """One track's engines: which its next connection uses, and whether a failure moves it at once."""

    def __init__(self, failover: Failover) -> None:
        self._failover = failover
        self.refused: set[str] = set()  # engines that refused this track: it does not ask them again
        self.last: str | None = None  # the engine of the track's last connection (attempt)
        self._why: Why | None = None  # why the next connection moves, when this track's failure decided it

    def failed(self, engine: str, error: SttError, *, opened: bool, failing_for_s: float) -> bool:
        """A connection (attempt) on `engine` failed: True when the track moves to another engine at once."""
        failover = self._failover
        why = judge(error, opened=opened, failing_for_s=failing_for_s, after_s=failover.after_s)
        if why is None:
            return False
        if why is Why.REFUSED:
            self.refused.add(engine)
        if engine == PRIMARY:
            failover.primary_failed(why)
        if self._next() == engine:
            return False
        self._why = why
        return True

    def next(self) -> tuple[str, Move | None]:
        """The engine for the next connection, and the move when it is not the last connection's."""
        engine, last = self._next(), self.last
        why, self._why = self._why, None
        self.last = engine
        if last is None or engine == last:
            return engine, None
        return engine, Move(last, engine, why or self._failover.why)

    def _next(self) -> str:
        """The process's preference, unless it refused this track: then the first engine that has not; when every
        one has (the track gives up before asking again), the preference."""
        preferred = self._failover.preferred()
        if preferred not in self.refused:
            return preferred
        return next((name for name in self._failover.engines if name not in self.refused), preferred)
