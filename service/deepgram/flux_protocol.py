"""Deepgram Flux's protocol (layer: deepgram, pure, no I/O): what we ask Flux for, and its turns as the seam's events.

Flux (`/v2/listen`, models `flux-general-en` and `flux-general-multi`) answers with `TurnInfo` messages instead of
v1's `Results`: a turn opens (`StartOfTurn`), grows (`Update`, about every 0.25 s of audio), may end early
(`EagerEndOfTurn`, then `TurnResumed` if the speaker goes on) and ends (`EndOfTurn`, whose transcript is the
whole turn). `flux.py` turns the SDK's messages into `TurnInfo` below and hands them to `FluxTurns`, which says
what they mean for the call: interims, one final per turn, turn boundaries, and how much audio is settled.

Flux refuses options it does not know with HTTP 400 at the upgrade, so `flux_refusals` names at start-up every
setting and DEEPGRAM_OPTIONS name that would make each call fail that way.
https://developers.deepgram.com/reference/speech-to-text/listen-flux
https://developers.deepgram.com/docs/flux/quickstart
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from service import mulaw
from service.deepgram.protocol import AUDIO_LAYOUT_OPTIONS, is_flux, option_pairs, pass_through_options
from service.stt.events import SttEvent, SttMetadata, SttResult, SttSettled, SttTurn, TurnMoment, Word

if TYPE_CHECKING:  # annotations only: settings.py pulls in pydantic-settings, which imports asyncio
    from service.settings import Settings

# DEEPGRAM_OPTIONS names Flux takes besides what callscribe sets itself (deepgram-sdk 7.17, `listen.v2.connect`).
FLUX_OPTIONS: Final = frozenset(
    {
        "eot_threshold", "eager_eot_threshold", "eot_timeout_ms", "keyterm", "language_hint", "profanity_filter",
        "numerals", "redact", "mip_opt_out", "tag",
    }
)  # fmt: skip

# v1 options Flux refuses, each with what a Flux setup does instead: the start-up refusal says it.
REFUSED_OPTIONS: Final = {
    "smart_format": "Flux formats its transcripts itself",
    "punctuate": "Flux punctuates its transcripts itself",
    "diarize": "Flux does not separate voices; stream both_tracks to keep the two sides apart",
    "interim_results": "Flux always sends interim results (Update); DEEPGRAM_INTERIM_RESULTS=false hides them",
    "endpointing": "Flux ends turns itself: DEEPGRAM_EOT_THRESHOLD and DEEPGRAM_EOT_TIMEOUT_MS tune it",
    "utterance_end_ms": "Flux ends turns itself: DEEPGRAM_EOT_THRESHOLD and DEEPGRAM_EOT_TIMEOUT_MS tune it",
    "vad_events": "Flux says when a turn starts (StartOfTurn) instead",
    "language": "flux-general-en is English only, flux-general-multi detects the language "
    "(DEEPGRAM_LANGUAGE_HINT guides it)",
    "keywords": "Flux takes keyterms (DEEPGRAM_KEYTERMS)",
    "search": "not on Flux",
    "replace": "not on Flux",
    "dictation": "not on Flux",
    "filler_words": "not on Flux",
    "no_delay": "not on Flux",
    "detect_entities": "not on Flux",
    "extra": "not on Flux; use tag",
    "callback": "not on Flux",
    "callback_method": "not on Flux",
}
REDACT_ON_FLUX: Final = frozenset({"numbers"})  # Flux redacts numbers only (no pci, pii, phi, ssn)
MULTI_MODEL: Final = "multi"  # a Flux model whose name says it is multilingual takes language_hint

# Flux has no KeepAlive message; audio keeps it open, silence too. An idle connection gets this much mu-law
# silence per keep-alive: Deepgram's advised size of one message (20-250 ms).
KEEPALIVE_SILENCE: Final = bytes([mulaw.SILENCE]) * (mulaw.BYTES_PER_SECOND // 10)


# Words in a FatalError's code that say the request itself is wrong: retrying the same request cannot help.
_CLIENT_FAULTS: Final = ("INVALID", "UNPARSABLE", "UNSUPPORTED", "BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN")


def fatal_error_is_final(code: str) -> bool:
    """Whether Flux's `Error` (it closes after one) says the request is wrong, not that Flux failed for now.

    Flux's codes are an open set in SCREAMING_SNAKE_CASE; one that does not name a fault of the request (an
    INTERNAL_SERVER_ERROR, a timeout, a code this release does not know) may pass, so it is retried.
    """
    return any(word in code.upper() for word in _CLIENT_FAULTS)


@dataclass(frozen=True, slots=True)
class FluxRefusal:
    """A setting the chosen API cannot honour: the variable to change, the option it would send, and why."""

    variable: str
    option: str
    why: str

    @property
    def message(self) -> str:
        return f"{self.option}: {self.why}"


# v1 settings whose default asks for a v1-only option: refused on Flux only when set explicitly to ask for it.
_V1_SETTINGS: Final = (
    ("deepgram_smart_format", "smart_format"),
    ("deepgram_punctuate", "punctuate"),
    ("deepgram_diarize", "diarize"),
    ("deepgram_vad_events", "vad_events"),
    ("deepgram_endpointing_ms", "endpointing"),
    ("deepgram_utterance_end_ms", "utterance_end_ms"),
)
_FLUX_SETTINGS: Final = (
    "deepgram_eot_threshold",
    "deepgram_eager_eot_threshold",
    "deepgram_eot_timeout_ms",
    "deepgram_language_hint",
)


def flux_refusals(settings: Settings) -> list[FluxRefusal]:
    """The settings that do not fit DEEPGRAM_MODEL's API, for a start-up refusal naming each one.

    On Flux: the v1 settings set explicitly to ask for what Flux refuses (their defaults only apply to v1),
    DEEPGRAM_OPTIONS names Flux refuses or does not know, redaction other than numbers, a language hint or a
    non-English DEEPGRAM_LANGUAGE on an English-only model. On v1: the Flux-only settings, which v1 would
    silently ignore.
    """
    model = settings.deepgram_model
    if not is_flux(model):
        return [
            FluxRefusal(name.upper(), name.removeprefix("deepgram_"), f"only Flux models take it, not {model}")
            for name in _FLUX_SETTINGS
            if getattr(settings, name) not in (None, ())
        ]
    multi = MULTI_MODEL in model
    found = [
        (name.upper(), option, REFUSED_OPTIONS[option])
        for name, option in _V1_SETTINGS
        if name in settings.model_fields_set and getattr(settings, name)
    ]
    if not multi and not settings.deepgram_language.lower().startswith("en"):
        found.append(("DEEPGRAM_LANGUAGE", "language", REFUSED_OPTIONS["language"]))
    if not multi and settings.deepgram_language_hint:
        found.append(("DEEPGRAM_LANGUAGE_HINT", "language_hint", "only flux-general-multi takes it"))
    found += _option_refusals(settings.deepgram_extra_options, multi=multi)
    return [FluxRefusal(variable, option, f"Flux ({model}) does not take it: {why}") for variable, option, why in found]


def _option_refusals(pairs: list[tuple[str, str]], *, multi: bool) -> list[tuple[str, str, str]]:
    """Each DEEPGRAM_OPTIONS name (or redaction) Flux would refuse, once, in order."""
    found: dict[str, str] = {}
    for name, value in pairs:
        refusal = _option_refusal(name, value, multi=multi)
        if refusal is not None:
            found.setdefault(*refusal)
    return [("DEEPGRAM_OPTIONS", option, why) for option, why in found.items()]


def _option_refusal(name: str, value: str, *, multi: bool) -> tuple[str, str] | None:
    """(option, why) when Flux would refuse DEEPGRAM_OPTIONS' `name=value`: the one rule start-up refuses by and
    `flux_options` filters by. None when Flux takes it, or when it is the audio's layout, which callscribe sets
    itself and ignores (with a start-up warning)."""
    if name in AUDIO_LAYOUT_OPTIONS:
        return None
    if name in REFUSED_OPTIONS:
        return name, REFUSED_OPTIONS[name]
    if name not in FLUX_OPTIONS:
        return name, "not an option Flux knows"
    if name == "language_hint" and not multi:
        return name, "only flux-general-multi takes it"
    if name == "redact" and value not in REDACT_ON_FLUX:
        return f"redact={value}", "Flux redacts numbers only"
    return None


def flux_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments for the SDK's `listen.v2.connect`, for Twilio's mu-law 8 kHz audio (one channel).

    Flux settings left unset are not sent (Flux's own defaults apply). DEEPGRAM_OPTIONS names Flux takes travel
    as additional query parameters; any other name was refused at start-up (`flux_refusals`) and is left out
    here, so a setting that slipped past start-up cannot make every connection fail with HTTP 400.
    """
    options: dict[str, Any] = {"model": settings.deepgram_model, "encoding": "mulaw", "sample_rate": mulaw.SAMPLE_RATE}
    for option, value in (
        ("eot_threshold", settings.deepgram_eot_threshold),
        ("eager_eot_threshold", settings.deepgram_eager_eot_threshold),
        ("eot_timeout_ms", settings.deepgram_eot_timeout_ms),
    ):
        if value is not None:
            options[option] = value
    if settings.deepgram_keyterms:
        options["keyterm"] = list(settings.deepgram_keyterms)
    multi = MULTI_MODEL in settings.deepgram_model
    if settings.deepgram_language_hint and multi:
        options["language_hint"] = list(settings.deepgram_language_hint)
    # REDACT's names Flux does not take are left out, not refused: callscribe's own redactor covers them.
    accepted = [pair for pair in option_pairs(settings) if _option_refusal(*pair, multi=multi) is None]
    extra = pass_through_options(accepted, reserved=options.keys())
    if extra:
        options["request_options"] = {"additional_query_parameters": extra}
    return options


def ignored_flux_options(settings: Settings) -> list[tuple[str, str]]:
    """DEEPGRAM_OPTIONS names `flux_options` drops because callscribe sets them, each with why; for a start-up
    warning (the ones Flux refuses stop start-up instead)."""
    fixed = set(flux_options(settings.model_copy(update={"deepgram_options": ""})).keys()) | AUDIO_LAYOUT_OPTIONS
    names = sorted({name for name, _ in settings.deepgram_extra_options if name in fixed})
    return [(name, "callscribe sets it itself; Flux takes one channel a connection") for name in names]


# ----------------------------------------------------------------------------------------------------
# Inserted silence: the engine's timeline and the pipeline's
# ----------------------------------------------------------------------------------------------------


class SilenceClock:
    """The audio of one connection as Flux heard it: the pipeline's audio, and the silence the adapter added.

    Flux reports times on what it heard, which includes the keep-alive silence (`KEEPALIVE_SILENCE`); the
    pipeline's ledger counts only its own audio. `to_audio` takes the inserted stretches back out, so every time
    the adapter reports is on the pipeline's timeline: a time inside a stretch of silence is its start.
    """

    def __init__(self) -> None:
        self.audio_bytes = 0  # the pipeline's audio sent
        self._heard = 0  # bytes Flux heard: audio and silence
        self._starts: list[int] = []  # each stretch of silence: where it starts on Flux's timeline (bytes)
        self._lengths: list[int] = []  # and how long it is
        self._before: list[int] = []  # and how much silence came before it

    def audio(self, size: int) -> None:
        self.audio_bytes += size
        self._heard += size

    def silence(self, size: int) -> None:
        if self._starts and self._starts[-1] + self._lengths[-1] == self._heard:
            self._lengths[-1] += size  # keep-alives back to back: one stretch
        else:
            self._before.append(self._before[-1] + self._lengths[-1] if self._starts else 0)
            self._starts.append(self._heard)
            self._lengths.append(size)
        self._heard += size

    @property
    def audio_s(self) -> float:
        return self.audio_bytes / mulaw.BYTES_PER_SECOND

    def to_audio(self, heard_s: float) -> float:
        """A time on Flux's timeline (seconds) on the pipeline's: the silence inserted before it taken out."""
        at = heard_s * mulaw.BYTES_PER_SECOND
        index = bisect.bisect_right(self._starts, at) - 1
        if index < 0:
            return heard_s
        removed = self._before[index] + min(self._lengths[index], at - self._starts[index])
        return (at - removed) / mulaw.BYTES_PER_SECOND


# ----------------------------------------------------------------------------------------------------
# Turns as the seam's events
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FluxWord:
    word: str
    confidence: float
    start: float | None = None  # Flux may leave a word untimed
    end: float | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class TurnInfo:
    """One `TurnInfo` message, as `flux.py` reads it from the SDK (times in seconds on Flux's timeline)."""

    event: str  # StartOfTurn, Update, EagerEndOfTurn, TurnResumed, EndOfTurn (an open set)
    turn_index: int
    start: float  # audio_window_start
    end: float  # audio_window_end
    transcript: str
    words: tuple[FluxWord, ...] = ()
    languages: tuple[str, ...] = ()
    request_id: str | None = None


# How far back a turn Flux opens may start, before the end of the window it reported last (its `Update`s come
# every 0.25 s): that much of the heard audio stays unsettled while no turn is open, so a replay has it.
REACH_BACK_S: Final = 1.0

_MOMENTS: Final = {
    "StartOfTurn": TurnMoment.STARTED,
    "EagerEndOfTurn": TurnMoment.EAGER_END,
    "TurnResumed": TurnMoment.RESUMED,
}


class FluxTurns:
    """One Flux connection's turns, as the seam's events, all timed on the pipeline's audio (`SilenceClock`).

    `Update` is an interim (none when `interim_results` is off, none while no turn has words, and none when the
    turn's transcript has not changed since the last: Flux sends one every 0.25 s, words or not), `EndOfTurn` a
    final that is the whole turn (`speech_final`, its `turn_index`), `StartOfTurn`/`EagerEndOfTurn`/`TurnResumed`
    an `SttTurn`. Every message also says what is settled (`SttSettled`): the audio before the open turn's start,
    which no later message can change, or, with no turn open, what Flux has heard (`audio_window_end`) less
    `REACH_BACK_S`, never before the last turn's end. The margin is there because Flux opens a turn once it is
    sure someone speaks, with a window that starts where the speech did, before the end of the window it last
    reported: audio settled up to that end would be missing from a replay after a failure in that instant.
    """

    def __init__(self, clock: SilenceClock, *, interim_results: bool = True) -> None:
        self._clock = clock
        self._interims = interim_results
        self._open_start: float | None = None  # the open turn's start on Flux's timeline; None: no turn open
        self._heard = 0.0  # the furthest audio_window_end, on Flux's timeline
        self._turn_ended = 0.0  # the last EndOfTurn's audio_window_end: no later turn reaches back before it
        self._said = ""  # the open turn's transcript as last reported (interim or turn event)
        self.request_id: str | None = None  # `ListenV2Connected`'s, or the upgrade's dg-request-id

    def on_turn(self, turn: TurnInfo) -> tuple[SttEvent, ...]:
        """What one TurnInfo means: its result or turn boundary (if any), then what is now settled."""
        self._heard = max(self._heard, turn.end)
        if self._open_start is None and (turn.event in _MOMENTS or turn.words or turn.transcript):
            self._open_start = turn.start  # a turn with words is open, even if its StartOfTurn was missed
        event = self._meaning(turn)
        if turn.event == "EndOfTurn":
            self._open_start, self._said = None, ""
            self._turn_ended = max(self._turn_ended, turn.end)
        settled = SttSettled(until_s=self._clock.to_audio(self.settled_s))
        return (event, settled) if event is not None else (settled,)

    @property
    def settled_s(self) -> float:
        """How far Flux's results are final, on Flux's timeline."""
        if self._open_start is not None:
            return self._open_start
        return max(self._turn_ended, self._heard - REACH_BACK_S, 0.0)

    def _meaning(self, turn: TurnInfo) -> SttResult | SttTurn | None:
        moment = _MOMENTS.get(turn.event)
        if moment is not None:
            self._said = turn.transcript
            start, end = self._clock.to_audio(turn.start), self._clock.to_audio(turn.end)
            return SttTurn(moment=moment, turn_index=turn.turn_index, text=turn.transcript, start=start, end=end)
        if turn.event == "EndOfTurn":
            return self._result(turn, final=True)
        if turn.event == "Update" and self._interims and turn.transcript != self._said:
            self._said = turn.transcript
            return self._result(turn, final=False)
        return None  # an Update with nothing said, or an event this release does not know

    def _result(self, turn: TurnInfo, *, final: bool) -> SttResult:
        to_audio = self._clock.to_audio
        start, end = to_audio(turn.start), to_audio(turn.end)
        words = tuple(
            Word(
                word=word.word,
                start=to_audio(word_start),
                end=to_audio(word_end),
                confidence=word.confidence,
                punctuated_word=word.word,  # Flux's words come punctuated and cased
                language=word.language,
            )
            for word, (word_start, word_end) in zip(turn.words, spread_times(turn), strict=True)
        )
        confidence = sum(word.confidence for word in turn.words) / len(turn.words) if turn.words else 0.0
        return SttResult(
            is_final=final,
            speech_final=final,
            from_finalize=False,
            start=start,
            duration=max(0.0, end - start),
            text=turn.transcript,
            confidence=confidence,
            words=words,
            request_id=turn.request_id or self.request_id,
            languages=turn.languages,
            turn_index=turn.turn_index,
        )

    def closed(self) -> tuple[SttEvent, ...]:
        """Flux closed normally after CloseStream: every turn has ended, so all audio sent is settled, and the
        stream's last word is said as v1's Metadata would (`SttMetadata`: the request id, the audio sent).

        Should Flux close with a turn still open (its EndOfTurn never came), only the audio before that turn is
        settled: the pipeline then finds audio without finals and replays it, rather than lose the turn.
        """
        audio_s = self._clock.audio_s
        settled = audio_s if self._open_start is None else self._clock.to_audio(self._open_start)
        return (SttMetadata(request_id=self.request_id or "", duration=audio_s), SttSettled(until_s=settled))


def spread_times(turn: TurnInfo) -> list[tuple[float, float]]:
    """Each word's (start, end) on Flux's timeline; a word Flux left untimed gets its share of the window.

    The turn's window (`audio_window_start` to `_end`) is cut into as many equal slices as the turn has words,
    and word i takes slice i for the time it lacks (its start, its end, or both), so untimed words keep their
    order inside the turn and never reach outside it; a word with both times keeps them.
    """
    count = len(turn.words)
    span = max(0.0, turn.end - turn.start) / count if count else 0.0
    times: list[tuple[float, float]] = []
    for index, word in enumerate(turn.words):
        start = word.start if word.start is not None else turn.start + index * span
        end = word.end if word.end is not None else max(start, turn.start + (index + 1) * span)
        times.append((start, end))
    return times
