"""Protocol layer (no I/O): one stream's side of its call's pause ("pause and resume", PCI DSS's practice while a
caller reads out a card).

The call's pause is one record in the database (`PauseControl`, `call_controls`), changed by the API from any
process; the process holding the stream applies each new version once (`StreamPause.apply`). While paused, every
frame Twilio sends is replaced by mu-law silence of the same length (`silenced`) before anything else sees it: the
engine, the ledger, the spool and the replay after a reconnect hear silence, the connection and the call's
timeline stay whole, and the audio's seconds are counted as paused (`coverage.py`). On resume (or at the
stream's end while paused) the pause becomes one `[paused]` final on the call's timeline (`marker`), its span the
pause's.

A version is applied at most once and never backwards, so a resume cannot undo a later pause, and a control read
twice (two polls, a hand-over's two streams) moves nothing the second time.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from service.calls.transcript import Transcript
from service.stt.events import Word

MARKER = "[paused]"
MUTE = 0xFF  # mu-law's silence


@dataclass(frozen=True, slots=True)
class PauseControl:
    """A call's pause as the database holds it: `version` grows with each change."""

    call_sid: str
    version: int
    paused: bool
    by: str  # who changed it last (the audit log has the whole story)
    resume_at: datetime.datetime | None = None  # the pause's maximum length runs out then

    def expired(self, now: datetime.datetime) -> bool:
        """A pause whose maximum length has run out: it is to resume by itself."""
        return self.paused and self.resume_at is not None and now >= self.resume_at


@dataclass(frozen=True, slots=True)
class Paused:
    """The stream went quiet at `at_s` on the call's timeline."""

    at_s: float
    by: str
    resume_at: datetime.datetime | None


@dataclass(frozen=True, slots=True)
class Resumed:
    """The stream hears the call again: it was paused from `start_s` to `end_s`."""

    start_s: float
    end_s: float
    by: str


class StreamPause:
    """Whether this stream is paused, since when, and each track's audio that silence replaced (bytes)."""

    def __init__(self) -> None:
        self.version = 0  # the last control version applied
        self.on = False
        self.since_s = 0.0
        self.muted: dict[str, int] = {}  # bytes of each track replaced by silence
        self._silence = b""

    def apply(self, control: PauseControl, at_s: float) -> Paused | Resumed | None:
        """Take a newer control at `at_s` (how far the stream has come); what moved, or None (an old version, or
        the same state again)."""
        if control.version <= self.version:
            return None
        self.version = control.version
        if control.paused == self.on:
            return None
        self.on = control.paused
        if control.paused:
            self.since_s = at_s
            return Paused(at_s, control.by, control.resume_at)
        return Resumed(self.since_s, max(at_s, self.since_s), control.by)

    def end(self, at_s: float) -> Resumed | None:
        """The stream ends: a pause still on ends here."""
        if not self.on:
            return None
        self.on = False
        return Resumed(self.since_s, max(at_s, self.since_s), "")

    def silenced(self, track: str, payload: bytes) -> bytes:
        """Silence as long as `payload`, counted against `track` (called only while `on`)."""
        size = len(payload)
        self.muted[track] = self.muted.get(track, 0) + size
        if len(self._silence) < size:
            self._silence = bytes([MUTE]) * size
        return self._silence if len(self._silence) == size else self._silence[:size]


def marker(call_sid: str, stream_sid: str, track: str, speaker: str, resumed: Resumed) -> Transcript:
    """The pause as one final on the call's timeline: `[paused]`, spanning it, nothing of what was said."""
    word = Word(word=MARKER, start=resumed.start_s, end=resumed.end_s, confidence=1.0, punctuated_word=MARKER)
    return Transcript(
        call_sid=call_sid, stream_sid=stream_sid, track=track, is_final=True, speech_final=True, from_finalize=False,
        text=MARKER, start=resumed.start_s, end=resumed.end_s, confidence=1.0, words=(word,), request_id=None,
        speaker=speaker,
    )  # fmt: skip


def is_marker(transcript: Transcript) -> bool:
    """A pause's marker (`marker`): no engine's result is only "[paused]" with no request behind it."""
    return transcript.text == MARKER and transcript.request_id is None and transcript.is_final
