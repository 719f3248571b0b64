"""What a speech-to-text engine answers (pure, no I/O), whichever engine it is.

Times are seconds from the start of the audio sent on that connection (a batch answer's: from the start of the
WAV); `calls/pipeline/timeline.py` places them on the call's timeline. Adapters (`service/deepgram/`) map their
vendor's messages onto these and nothing else: the call pipeline knows no vendor's message.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float
    punctuated_word: str | None = None
    speaker: int | None = None  # the voice, when the engine separates voices on one channel (diarization)
    language: str | None = None  # BCP-47, when the engine tells each word's language (language=multi, Flux multi)


def languages_of(words: Iterable[Word]) -> tuple[str, ...]:
    """The languages of the `words` that say theirs, most words first (a tie: the one heard first), as Deepgram
    orders a result's `languages`; () when none says."""
    counts = collections.Counter(word.language for word in words if word.language)
    return tuple(language for language, _ in counts.most_common())


@dataclass(frozen=True, slots=True)
class SttResult:
    """A stretch of transcript: an interim (is_final False), which a later result replaces, or a final.

    A final from a turn-based engine (Flux) is one whole turn, `turn_index` naming it.
    """

    is_final: bool
    speech_final: bool  # the speaker paused: an endpoint (v1) or the end of a turn (Flux)
    from_finalize: bool
    start: float
    duration: float
    text: str
    confidence: float
    words: tuple[Word, ...] = field(repr=False)
    request_id: str | None
    channel: int = 0
    languages: tuple[str, ...] = ()  # the languages spoken in it, most words first; () when the engine does not say
    turn_index: int | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class SttSettled:
    """The engine will never again change its results for the audio before `until_s`: that audio is final.

    Each adapter says when (Deepgram v1: a final's end, and Metadata's duration; Flux: the start of the open
    turn, or the end of the audio it has heard when no turn is open), so the pipeline keeps for a replay exactly
    the audio that is not settled. `channel` None: every channel of the connection.
    """

    until_s: float
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class SttMetadata:
    """The engine's last word on a stream closed at our request: its request id, and the audio it processed."""

    request_id: str
    duration: float


@dataclass(frozen=True, slots=True)
class SttUtteranceEnd:
    last_word_end: float


@dataclass(frozen=True, slots=True)
class SttSpeechStarted:
    timestamp: float


class TurnMoment(enum.StrEnum):
    """A turn-based engine's boundaries, for integrators who act on turns (Flux's TurnInfo events)."""

    STARTED = "turn.started"  # StartOfTurn: someone began speaking
    EAGER_END = "turn.eager_end"  # EagerEndOfTurn: probably done; the final may still change, or the turn resume
    RESUMED = "turn.resumed"  # TurnResumed: the speaker went on after an eager end


@dataclass(frozen=True, slots=True)
class SttTurn:
    """A turn boundary (the turn's end itself comes as its final `SttResult`)."""

    moment: TurnMoment
    turn_index: int
    text: str  # the turn's transcript so far
    start: float
    end: float
    channel: int = 0


@dataclass(frozen=True, slots=True)
class SttServerError:
    """The engine said something went wrong without closing (Deepgram's `Error` message, Flux's `Warning`)."""

    description: str


SttEvent = SttResult | SttSettled | SttMetadata | SttUtteranceEnd | SttSpeechStarted | SttTurn | SttServerError


@dataclass(frozen=True, slots=True)
class BatchUtterance:
    """One stretch of a batch answer, in seconds from the start of the WAV.

    An utterance when the engine sent utterances (it has its own span); otherwise a channel's best alternative,
    whose span is None (its words, if any, give it).
    """

    text: str
    confidence: float
    words: tuple[Word, ...] = field(repr=False)
    start: float | None
    end: float | None
    languages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """A batch engine's answer to one WAV."""

    utterances: tuple[BatchUtterance, ...]
    request_id: str | None
