"""The call's product (no I/O): a `Transcript` is one result placed on the call's timeline, with its speaker.

Live results (`calls/pipeline/timeline.py`) and batch results (`spool/worker.py`) both become `Transcript`s, and
`transcript_data` turns one into data, once: the log line, the stored row (and from it the webhooks and the API)
and the live feed all derive their shapes from that dict, each leaving out only what it names, so a field added
here reaches them all.

Who speaks is decided here and nowhere else: Twilio's inbound track is the caller (SPEAKER_INBOUND), the
outbound track the other party (SPEAKER_OUTBOUND), and a diarized single-track final is split into one
transcript per voice, each piece keeping its own words' languages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.stt.events import Word, languages_of

if TYPE_CHECKING:  # types only: this module stays importable without the settings' dependencies
    from service.settings import Settings


@dataclass(frozen=True, slots=True)
class Transcript:
    """One interim or final result, placed on the call's timeline (seconds from the start of the stream)."""

    call_sid: str
    stream_sid: str
    track: str
    is_final: bool
    speech_final: bool
    from_finalize: bool
    text: str
    start: float
    end: float
    confidence: float
    words: tuple[Word, ...] = field(repr=False)
    request_id: str | None
    batch: bool = False  # transcribed later from the spool, through the pre-recorded API
    speaker: str = ""  # SPEAKER_INBOUND / SPEAKER_OUTBOUND for the track ("caller", "agent")
    languages: tuple[str, ...] = ()  # BCP-47 tags spoken in it, most words first; () when the engine did not say


TranscriptSink = Callable[[Transcript], None]
TRANSCRIPT_FIELDS: tuple[str, ...] = tuple(item.name for item in dataclasses.fields(Transcript))


def transcript_data(transcript: Transcript, *, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """The transcript as data: every field by its name, in JSON's types (tuples as lists, each word a dict).

    The one place a `Transcript` becomes data; every sink derives its shape from this dict, so a new field
    appears in all of them. `leave_out` names fields a sink does without (the feed's words), which are then
    not even built.
    """
    return {name: _as_data(getattr(transcript, name)) for name in TRANSCRIPT_FIELDS if name not in leave_out}


def _as_data(value: object) -> object:
    if isinstance(value, tuple):
        return [_as_data(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: getattr(value, item.name) for item in dataclasses.fields(value)}
    return value


def speaker_for(settings: Settings, track: str) -> str:
    """Who speaks on a track: Twilio's inbound track is the caller, outbound the other party."""
    return settings.speaker_inbound if track == "inbound" else settings.speaker_outbound


def of_words(transcript: Transcript, words: tuple[Word, ...], speaker: str | None = None) -> Transcript:
    """`transcript` narrowed to some of its `words` (at least one): their text, times, mean confidence and
    languages (the whole's, when no word says its own), and `speaker` if given."""
    return dataclasses.replace(
        transcript,
        text=" ".join(word.punctuated_word or word.word for word in words),
        start=words[0].start,
        end=words[-1].end,
        confidence=round(sum(word.confidence for word in words) / len(words), 3),
        words=words,
        speaker=transcript.speaker if speaker is None else speaker,
        languages=languages_of(words) or transcript.languages,
    )


def by_speaker(transcript: Transcript) -> list[Transcript]:
    """A diarized final as one transcript per run of one voice, labelled "speaker 1", "speaker 2", ..."""
    runs = speaker_runs(transcript.words)
    if len(runs) <= 1 and (not runs or runs[0][0] is None):
        return [transcript]
    return [
        of_words(transcript, words, speaker=f"speaker {speaker + 1}" if speaker is not None else transcript.speaker)
        for speaker, words in runs
    ]


def speaker_runs(words: tuple[Word, ...]) -> list[tuple[int | None, tuple[Word, ...]]]:
    """Consecutive words by the same diarized speaker, in order: [(speaker, words), ...]."""
    runs: list[tuple[int | None, list[Word]]] = []
    for word in words:
        if runs and runs[-1][0] == word.speaker:
            runs[-1][1].append(word)
        else:
            runs.append((word.speaker, [word]))
    return [(speaker, tuple(run)) for speaker, run in runs]
