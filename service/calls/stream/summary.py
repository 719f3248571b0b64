"""The call.ended summary (pure, no I/O): what a stream's tracks counted, as the line's fields.

The same dict is logged (`call.ended`), stored with the call (`CallEnded.summary`) and shown by `calls show`;
its keys are the line's field names, which operators grep for, so they change only with the docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service import mulaw
from service.calls.counters import TrackCounters, engines_text


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """One engine stream's counters, and its bytes per second of call (16 000 when it carries both tracks)."""

    name: str  # the track, or `inbound+outbound`
    counters: TrackCounters
    bytes_per_second: int


def call_summary(
    streams: Sequence[StreamCounts],
    *,
    ended_by: str,
    duration_s: float,
    messages_missing: int,
    engine_error: str | None,
    offset_s: float,
    words_cut_ms: int,
) -> dict[str, Any]:
    """The summary of a stream whose engine streams counted `streams`."""
    counters = [stream.counters for stream in streams]
    return dict(  # noqa: C408 - keyword form: these are the call.ended line's field names
        ended_by=ended_by,
        duration_s=round(duration_s, 2),
        audio_s_sent=_seconds(sum(c.bytes_sent for c in counters)),
        frames_in=sum(c.frames_in for c in counters),
        finals=sum(c.finals for c in counters),
        interims=sum(c.interims for c in counters),
        audio_s_spooled=_seconds(sum(c.bytes_spooled for c in counters)),
        audio_s_lost=_seconds(sum(c.bytes_lost for c in counters)),
        spool_entries=",".join(entry for c in counters for entry in c.spool_entries),
        engines=", ".join(text for stream in streams if (text := engines_text(stream.name, stream.counters))),
        reconnects=sum(c.reconnects for c in counters),
        finals_repeated=sum(c.finals_repeated for c in counters),
        chunks_missing=sum(c.chunks_missing for c in counters),
        messages_missing=messages_missing,
        buffer_peak_s=buffer_peak_s(streams),
        keepalives=sum(c.keepalives for c in counters),
        deepgram_request_ids=",".join(rid for c in counters for rid in c.request_ids),
        deepgram_error=engine_error,
        offset_s=round(offset_s, 3),
        words_cut_ms=words_cut_ms,
    )


def buffer_peak_s(streams: Sequence[StreamCounts]) -> float:
    """The most audio any stream held for the engine at once, in seconds of the call (AUDIO_BUFFER_S's unit):
    an interleaved stream's bytes are seconds of both its tracks at once."""
    peaks = (stream.counters.peak_waiting_bytes / stream.bytes_per_second for stream in streams)
    return round(max(peaks, default=0.0), 2)


def _seconds(mulaw_bytes: int) -> float:
    return round(mulaw_bytes / mulaw.BYTES_PER_SECOND, 2)
