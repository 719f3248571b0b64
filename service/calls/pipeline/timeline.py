"""Protocol layer (pure): Deepgram's results, timed on their connection, placed on the call's timeline.

Each connection to Deepgram starts at the first byte not yet final (`ledger.py`), so its times are shifted
by that offset: the connection's 0.0 is `offset_s` into the call. After a reconnect, the replay may give
again a final for audio that was final before; `repeats_a_final` says which ones, and the track counts
them (`finals_repeated`) instead of emitting them twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.calls.events import TurnChanged
from service.calls.transcript import Transcript, by_speaker

if TYPE_CHECKING:
    from service.stt.events import SttResult, SttTurn, Word


@dataclass(frozen=True, slots=True)
class TrackTimeline:
    """One track's results as the call's transcripts: whose they are, and whether voices are split."""

    call_sid: str
    stream_sid: str
    track: str
    speaker: str  # SPEAKER_INBOUND / SPEAKER_OUTBOUND for the track
    diarize: bool  # a final is split into one transcript per voice

    def transcripts(self, result: SttResult, offset_s: float) -> list[Transcript]:
        """`result` from a connection that starts `offset_s` into the call, as transcripts on the call's timeline."""
        transcript = Transcript(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            track=self.track,
            is_final=result.is_final,
            speech_final=result.speech_final,
            from_finalize=result.from_finalize,
            text=result.text,
            start=round(result.start + offset_s, 3),
            end=round(result.end + offset_s, 3),
            confidence=result.confidence,
            words=shifted(result.words, offset_s),
            request_id=result.request_id,
            speaker=self.speaker,
            languages=result.languages,
        )
        if self.diarize and result.is_final:
            return by_speaker(transcript)
        return [transcript]

    def turn(self, event: SttTurn, offset_s: float) -> TurnChanged:
        """A turn boundary from a connection that starts `offset_s` into the call, on the call's timeline."""
        return TurnChanged(
            call_sid=self.call_sid, stream_sid=self.stream_sid, track=self.track, moment=str(event.moment),
            turn_index=event.turn_index, text=event.text, start=round(event.start + offset_s, 3),
            end=round(event.end + offset_s, 3),
        )  # fmt: skip


def shifted(words: tuple[Word, ...], offset_s: float) -> tuple[Word, ...]:
    """Word times on the call's timeline, to the millisecond."""
    if not offset_s:
        return words
    return tuple(
        dataclasses.replace(word, start=round(word.start + offset_s, 3), end=round(word.end + offset_s, 3))
        for word in words
    )


def repeats_a_final(end_s: float, duration_s: float, last_final_end_s: float) -> bool:
    """A final (ending at `end_s` on the call's timeline) for audio an earlier final already covered.

    Finals come in order, so one that ends no later than the last one is a stretch replayed after a
    reconnect. A final with no duration covers no audio, so it repeats none.
    """
    return end_s <= last_final_end_s and duration_s > 0
