"""Plain data (no I/O): which call a stream is, and what each of its tracks counted.

The session, its tracks, their spoolers and the meter share these. A frame only adds to the plain integers
of `TrackCounters`; `meter.py` turns them into metrics once a second, and `session.py` into the call.ended
line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.calls.coverage import TrackTally


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The call a stream belongs to, as Twilio's `start` message gave it."""

    call_sid: str
    stream_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    offset_s: float = 0.0  # where the stream starts on the call's timeline (a hand-over's new stream: later than 0)


@dataclass(slots=True)
class TrackCounters:
    frames_in: int = 0
    bytes_sent: int = 0  # to Deepgram, replays included
    messages_sent: int = 0  # audio messages to Deepgram (one per frame, or per batch with AUDIO_BATCH_MS)
    bytes_spooled: int = 0
    bytes_lost: int = 0  # could not be spooled either (disk full, spool not writable)
    peak_waiting_bytes: int = 0  # most audio held in memory for Deepgram at once (bounded by AUDIO_BUFFER_S)
    interims: int = 0
    finals: int = 0
    finals_repeated: int = 0  # finals for audio already final, not emitted again
    keepalives: int = 0
    reconnects: int = 0
    request_ids: list[str] = field(default_factory=list)
    spool_entries: list[str] = field(default_factory=list)
    # (engine, from_s, to_s): the stretches of the call each engine's finals settled, in order (`engines_text`)
    engines: list[tuple[str, float, float]] = field(default_factory=list)
    # Per track it carries (both, on a shared connection): where its audio went, for the call's coverage.
    tallies: dict[str, TrackTally] = field(default_factory=dict)

    @property
    def chunks_missing(self) -> int:
        """The gaps in Twilio's own chunk numbers, on every track this stream carries (each track's tally)."""
        return sum(tally.chunks_missing for tally in self.tallies.values())


def engines_text(track: str, counters: TrackCounters) -> str:
    """Which engine transcribed what, for the call.ended line: `inbound primary 0-12.5, inbound fallback 12.5-30`."""
    return ", ".join(f"{track} {engine} {start_s:g}-{end_s:g}" for engine, start_s, end_s in counters.engines)
