"""Orchestration: where one track's audio goes when live transcription cannot take it, through the `Spool` port.

`Spool` and `SpoolSegment` are the port; `service/spool/directory.py` implements them, and the app passes
one in (calls/ does not import spool/: imports point downwards). A segment's disk errors never end a call:
`GuardedSegment` counts the audio it could not keep as lost and says so once. Each track's tally (the call's
coverage) gets the entry each segment became, with its audio and why it was spooled, or its audio as lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from service.calls.counters import CallInfo, TrackCounters
from service.calls.coverage import SpoolPiece, TrackTally


class SpoolSegment(Protocol):
    def write(self, mulaw: bytes) -> None: ...
    def close(self) -> Any: ...


class Spool(Protocol):
    def open_segment(
        self, *, call_sid: str, stream_sid: str, track: str, start_s: float, reason: str
    ) -> SpoolSegment: ...


class GuardedSegment:
    """A spool segment whose disk errors are counted and said once, instead of ending the call."""

    def __init__(
        self,
        open_segment: Callable[[], SpoolSegment],
        counters: TrackCounters,
        log: Any,
        *,
        tally: TrackTally | None = None,
        reason: str = "",
    ) -> None:
        self._counters = counters
        self._log = log
        self._tally = tally or TrackTally()
        self._reason = reason
        self._written = 0  # bytes in the segment, for the track's coverage once it is an entry
        self._segment: SpoolSegment | None = None
        try:
            self._segment = open_segment()
        except OSError as exc:
            self._lost(exc)

    def write(self, mulaw: bytes) -> None:
        if self._segment is not None:
            try:
                self._segment.write(mulaw)
            except OSError as exc:
                self._lost(exc)
            else:
                self._counters.bytes_spooled += len(mulaw)
                self._written += len(mulaw)
                return
        self._counters.bytes_lost += len(mulaw)
        self._tally.spool_failed += len(mulaw)

    def close(self) -> Any:
        if self._segment is None:
            return None
        try:
            entry = self._segment.close()
        except OSError as exc:
            self._lost(exc)
            return None
        if entry is not None and self._written:
            self._tally.spooled.append(SpoolPiece(str(getattr(entry, "id", entry)), self._written, self._reason))
        return entry

    def _lost(self, error: OSError) -> None:
        self._segment = None
        # What the segment held never becomes an entry: for the call's coverage, lost with the rest.
        self._tally.spool_failed += self._written
        self._written = 0
        self._log.error("audio.lost", why=f"cannot write the spool: {error.strerror or error}")


class _Spooling:
    """What both spoolers share: live transcription giving up on their audio."""

    segment: GuardedSegment | SplitSegment | None

    def start(self, start_s: float, reason: str) -> GuardedSegment | SplitSegment:
        raise NotImplementedError

    def stretch(self, start_s: float, audio: bytes, reason: str) -> None:
        raise NotImplementedError

    def take_over(self, start_s: float, audio: bytes, reason: str, *, stream_open: bool) -> None:
        """Live transcription gave up: `audio` (not final, from `start_s`) and, while the stream is open, what comes."""
        if self.segment is None and (audio or stream_open):
            self.start(start_s, reason).write(audio)
        else:
            # Already spooling newer audio: this older stretch gets its own entry.
            self.stretch(start_s, audio, reason)


class TrackSpooler(_Spooling):
    """One track's spool entries: the open segment its new audio goes to, and closed stretches of older audio."""

    def __init__(self, spool: Spool, *, call: CallInfo, track: str, counters: TrackCounters, log: Any) -> None:
        # While set, the track's new audio goes here instead of to Deepgram (`TrackStream.push` reads it).
        self.segment: GuardedSegment | None = None
        self._spool = spool
        self._call = call
        self._track = track
        self._counters = counters
        self._log = log

    def start(self, start_s: float, reason: str) -> GuardedSegment:
        """From `start_s` on the call's timeline, the track's audio goes to a spool segment (until `close`)."""
        self.segment = self._open(start_s, reason)
        self._log.warning("audio.spooling", track=self._track, from_s=round(start_s, 2), why=reason)
        return self.segment

    def stretch(self, start_s: float, audio: bytes, reason: str) -> None:
        """One closed spool entry for a stretch of audio (none for no audio)."""
        if not audio:
            return
        segment = self._open(start_s, reason)
        segment.write(audio)
        self._record(segment.close())
        self._log.warning("audio.spooling", track=self._track, from_s=round(start_s, 2), why=reason)

    def close(self) -> None:
        """The open segment, if any, becomes a complete entry."""
        if self.segment is not None:
            self._record(self.segment.close())
            self.segment = None

    def _open(self, start_s: float, reason: str) -> GuardedSegment:
        return GuardedSegment(
            lambda: self._spool.open_segment(
                call_sid=self._call.call_sid, stream_sid=self._call.stream_sid, track=self._track,
                start_s=start_s + self._call.offset_s, reason=reason,
            ),
            self._counters,
            self._log.bind(track=self._track),
            tally=self._counters.tallies.setdefault(self._track, TrackTally()),
            reason=reason,
        )  # fmt: skip

    def _record(self, entry: Any) -> None:
        if entry is not None:
            self._counters.spool_entries.append(str(getattr(entry, "id", entry)))


class SplitSegment:
    """A spool segment for interleaved audio: each channel's samples go to its own track's segment."""

    def __init__(self, segments: list[GuardedSegment]) -> None:
        self._segments = segments

    def write(self, mulaw: bytes) -> None:
        count = len(self._segments)
        for channel, segment in enumerate(self._segments):
            segment.write(mulaw[channel::count])

    def close(self) -> list[Any]:
        return [segment.close() for segment in self._segments]


class ChannelSpooler(_Spooling):
    """Both tracks' spool entries when they share one Deepgram connection: the interleaved audio is split back
    into one mono entry per track, so the spool and batch see exactly what a connection per track leaves."""

    def __init__(self, spoolers: list[TrackSpooler]) -> None:
        self.segment: SplitSegment | None = None  # as `TrackSpooler.segment`
        self._spoolers = spoolers

    def start(self, start_s: float, reason: str) -> SplitSegment:
        self.segment = SplitSegment([spooler.start(start_s, reason) for spooler in self._spoolers])
        return self.segment

    def stretch(self, start_s: float, audio: bytes, reason: str) -> None:
        count = len(self._spoolers)
        for channel, spooler in enumerate(self._spoolers):
            spooler.stretch(start_s, audio[channel::count], reason)

    def close(self) -> None:
        for spooler in self._spoolers:
            spooler.close()
        self.segment = None  # as `TrackSpooler.close`: new audio no longer goes to closed segments
        self.segment = None
