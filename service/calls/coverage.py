"""Protocol layer (no I/O): where every second of a call's audio went, per stream and per track.

Each stream's tracks count what happened to their audio as it happened (`TrackTally`, in bytes of one track:
8 000 a second); at the stream's end `stream_parts` turns the tally into `Part`s, one per category, per lost
reason and per spool entry, in whole milliseconds so that sums are exact. A part is what the database stores
(keyed by call, stream, track and `Part.key`): storing the same parts again changes nothing, and a call's
coverage is the sum over all its streams' parts (`summarize`), whatever their order (a hand-over gives a call
two or more streams). When batch transcribes a spool entry, or gives up on it, `apply_outcome` moves that
entry's part from `waiting` to `batch` or `lost`: seconds move, none are made or lost.

The categories of a track always sum to the audio Twilio delivered on it plus the chunks Twilio numbered but
never sent (`TrackTally.total_ms`); `live` is the rest once the measured ones are taken, because audio leaves a
track's ledger only final (live, or replayed), to the spool, or counted lost.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

BYTES_PER_SECOND = 8000  # one track's mu-law (`service/mulaw.py`): a byte is 1/8 ms
CHUNK_MS = 20  # Twilio's media chunks: a missing chunk number is 20 ms of audio never delivered


class Category(enum.StrEnum):
    """What became of a stretch of a track's audio (the strings the database stores)."""

    LIVE = "live"  # final from the live engine, the first time it was sent
    REPLAYED = "replayed"  # final from a live engine after a reconnect or a move to the fallback resent it
    BATCH = "batch"  # transcribed by batch from the spool
    WAITING = "waiting"  # in the spool, not transcribed yet (the reason: why it was spooled)
    LOST = "lost"  # never transcribed, and never will be (the reason: a `Lost`)
    PAUSED = "paused"  # deliberately not transcribed: the call's transcription was paused (silence went instead)


class Lost(enum.StrEnum):
    """Why audio was lost: each place the pipeline drops audio, named."""

    CHUNKS_MISSING = "chunks_missing"  # a gap in Twilio's chunk numbers: audio Twilio never delivered
    CHANNEL_LAG = "channel_lag"  # one track too far behind the other on a shared connection (DEEPGRAM_CHANNEL_LAG_MS)
    SPOOL_FAILED = "spool_failed"  # could not be written to the spool (disk full, not writable)
    SPOOL_EXPIRED = "spool_expired"  # batch never managed it within SPOOL_RETENTION_DAYS


LOST_WHY: dict[str, str] = {
    Lost.CHUNKS_MISSING: "gaps in Twilio's chunk numbers",
    Lost.CHANNEL_LAG: "came later than DEEPGRAM_CHANNEL_LAG_MS behind the other track",
    Lost.SPOOL_FAILED: "could not be written to the spool",
    Lost.SPOOL_EXPIRED: "not transcribed by batch within SPOOL_RETENTION_DAYS",
}
SPOOL_PREFIX = "spool:"  # a part that is one spool entry is keyed by the entry's id behind this


@dataclass(frozen=True, slots=True)
class Part:
    """A stretch of one stream's track in one category: `key` names it for good within the stream and track (a
    category, `lost:<reason>`, or `spool:<entry id>`), so storing it twice is storing it once."""

    track: str
    key: str
    category: Category
    ms: int
    reason: str = ""  # waiting: why it was spooled; lost: a `Lost`; else ""


@dataclass(frozen=True, slots=True)
class SpoolPiece:
    """One spool entry's audio of a track, and why it was spooled."""

    entry_id: str
    size: int  # bytes of the track
    reason: str


@dataclass(slots=True)
class TrackTally:
    """What one track counted as its audio came and went, in bytes of the track (and Twilio's missing chunks)."""

    received: int = 0  # delivered by Twilio
    chunks_missing: int = 0
    channel_lag: int = 0  # cut: it came after its place had been padded over (`interleave.py`)
    spool_failed: int = 0
    replayed: int = 0  # made final by a connection's replay
    paused: int = 0  # delivered while the call's transcription was paused: silence went on in its place
    spooled: list[SpoolPiece] = field(default_factory=list)

    @property
    def total_ms(self) -> int:
        return _ms(self.received) + self.chunks_missing * CHUNK_MS


@dataclass(frozen=True, slots=True)
class Outcome:
    """What batch did with one spool entry: transcribed it (`lost_reason` empty), or gave up on it."""

    call_sid: str
    stream_sid: str
    track: str
    entry_id: str
    lost_reason: str = ""


def _ms(size: int) -> int:
    return round(size * 1000 / BYTES_PER_SECOND)


def stored_part(track: str, key: str, category: str, ms: int, reason: str) -> Part:
    """A part as the database stores it (`storage/schema.py`'s `coverage` table), read back."""
    return Part(track, key, Category(category), ms, reason)


def spool_key(entry_id: str) -> str:
    return SPOOL_PREFIX + entry_id


def track_parts(track: str, tally: TrackTally) -> list[Part]:
    """The parts of one track of one stream. Each measured stretch is taken from the track's total in turn (paused,
    lost, waiting, replayed), never beyond it: on a shared connection the spool gets a track's padding too (silence
    the interleaver added, `interleave.py`), which is no audio Twilio sent. `live` is what remains."""
    left = tally.total_ms
    measured: list[tuple[str, Category, int, str]] = [(Category.PAUSED, Category.PAUSED, _ms(tally.paused), "")]
    measured += [
        (f"lost:{reason}", Category.LOST, ms, str(reason))
        for reason, ms in (
            (Lost.CHUNKS_MISSING, tally.chunks_missing * CHUNK_MS),
            (Lost.CHANNEL_LAG, _ms(tally.channel_lag)),
            (Lost.SPOOL_FAILED, _ms(tally.spool_failed)),
        )
    ]
    measured += [
        (spool_key(piece.entry_id), Category.WAITING, _ms(piece.size), piece.reason) for piece in tally.spooled
    ]
    measured.append((Category.REPLAYED, Category.REPLAYED, _ms(tally.replayed), ""))
    parts = []
    for key, category, wanted, reason in measured:
        ms = min(wanted, left)
        left -= ms
        if ms or category in {Category.REPLAYED, Category.PAUSED}:
            parts.append(Part(track, str(key), category, ms, reason))
    parts.append(Part(track, Category.LIVE, Category.LIVE, left))
    return parts


def stream_parts(tallies: Mapping[str, TrackTally]) -> list[Part]:
    """Every track's parts of one stream."""
    return [part for track, tally in tallies.items() for part in track_parts(track, tally)]


def apply_outcome(parts: Iterable[Part], outcome: Outcome) -> list[Part]:
    """The parts after batch transcribed (or gave up on) `outcome`'s entry: only a waiting part moves."""
    key = spool_key(outcome.entry_id)
    category = Category.LOST if outcome.lost_reason else Category.BATCH
    return [
        replace(part, category=category, reason=outcome.lost_reason)
        if part.track == outcome.track and part.key == key and part.category is Category.WAITING
        else part
        for part in parts
    ]


# --- The coverage shown: a call's parts summed -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """Seconds (as ms) per category, and the waiting and lost ones per reason."""

    by_category: dict[str, int]
    waiting: dict[str, int]
    lost: dict[str, int]

    @property
    def total_ms(self) -> int:
        return sum(self.by_category.values())

    @property
    def complete(self) -> bool:
        return not self.by_category[Category.WAITING] and not self.by_category[Category.LOST]


def totals(parts: Iterable[Part]) -> Totals:
    """The parts' sums (any order: a sum)."""
    by_category = dict.fromkeys(Category, 0)
    waiting: dict[str, int] = {}
    lost: dict[str, int] = {}
    for part in parts:
        by_category[part.category] += part.ms
        if part.category is Category.WAITING and part.ms:
            waiting[part.reason] = waiting.get(part.reason, 0) + part.ms
        elif part.category is Category.LOST and part.ms:
            lost[part.reason] = lost.get(part.reason, 0) + part.ms
    return Totals({str(name): ms for name, ms in by_category.items()}, waiting, lost)


def missing_text(sums: Totals) -> str:
    """One line for what the transcript lacks ("" when complete): each waiting reason, then each lost one, the
    largest first: `5.1 s waiting for batch: DEEPGRAM_API_KEY is not set; 0.4 s lost: gaps in Twilio's chunk
    numbers`."""
    said = [f"{_s(ms):g} s waiting for batch: {reason}" for reason, ms in _largest_first(sums.waiting)]
    said += [f"{_s(ms):g} s lost: {LOST_WHY.get(reason, reason)}" for reason, ms in _largest_first(sums.lost)]
    return "; ".join(said)


def summarize(parts: Iterable[Part], *, per_track: bool = False) -> dict[str, Any]:
    """The coverage object the API, the export, `call.completed`, the command line and the page show."""
    parts = list(parts)
    sums = totals(parts)
    shown = _shown(sums)
    shown["complete"] = sums.complete
    shown["missing"] = missing_text(sums)
    if per_track:
        tracks = sorted({part.track for part in parts})
        shown["tracks"] = {track: _shown(totals(p for p in parts if p.track == track)) for track in tracks}
    return shown


def _shown(sums: Totals) -> dict[str, Any]:
    shown: dict[str, Any] = {"audio_s": _s(sums.total_ms)}
    shown.update({f"{name}_s": _s(ms) for name, ms in sums.by_category.items()})
    shown["waiting"] = [{"reason": reason, "seconds": _s(ms)} for reason, ms in _largest_first(sums.waiting)]
    shown["lost"] = [
        {"reason": reason, "why": LOST_WHY.get(reason, reason), "seconds": _s(ms)}
        for reason, ms in _largest_first(sums.lost)
    ]
    return shown


def short_text(coverage: Mapping[str, Any] | None) -> str:
    """A few words for a list: `complete`, `5.1 s waiting`, `0.4 s lost`, or `-` before the stream's end."""
    if coverage is None:
        return "-"
    if coverage["complete"]:
        return "complete"
    said = [f"{coverage[f'{name}_s']:g} s {name}" for name in ("waiting", "lost") if coverage[f"{name}_s"]]
    return ", ".join(said)


def _largest_first(by_reason: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))


def _s(ms: int) -> float:
    return round(ms / 1000, 2)
