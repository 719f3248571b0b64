"""The stand-in's live server: a protocol-faithful fake of Deepgram's live speech-to-text WebSockets
(`/v1/listen`, and Flux's `/v2/listen`).

Layer: the Deepgram stand-in (outside the server's layers, like the simulator). The tests' fake Deepgram is this
module (tests/helpers/fakes/deepgram_server.py re-exports it), and `python -m service standin` serves it to a
user (`server.py`), so the two cannot drift. The real `deepgram-sdk` client talks to it over a real socket on
127.0.0.1, so tests exercise the same handshake, frames and close codes the service meets in production
(https://developers.deepgram.com/reference/speech-to-text-api/listen-streaming).

Two parts, in the sans-I/O shape of python-websockets:

* `TranscriptionSession` is pure: audio bytes and control messages in, the JSON messages Deepgram would
  send out. "Transcription" is deterministic and derived from the audio itself (`words.py`: hashed words for
  the tests, readable ones for the command), so a test can predict every word (`expected_words`) and notice
  audio that went to the wrong call. With `language=multi` each
  word also has a language picked by its audio (`language_for`, `expected_languages`), and each result the
  languages of its words, most words first, as Nova-3's code-switching reports them.
* `FakeDeepgram` is the thin I/O adapter: a `websockets.asyncio.server` that authenticates, records
  everything, drives a session per connection and injects the faults listed in `Faults`.

Vendor behaviour mirrored here:
https://developers.deepgram.com/docs/lower-level-websockets (message shapes),
https://developers.deepgram.com/docs/finalize, https://developers.deepgram.com/docs/close-stream,
https://developers.deepgram.com/docs/audio-keep-alive (NET-0001 after about 10 s without audio or text),
https://developers.deepgram.com/docs/stt-troubleshooting-websocket-data-and-net-errors (NET-0000, NET-0001).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import http
import json
import logging
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, NoReturn, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from service.standin.words import WordChooser, hashed_word, said, saying

__all__ = [
    "FakeDeepgram",
    "Faults",
    "FluxOptions",
    "FluxSession",
    "ListenOptions",
    "MultichannelSession",
    "RecordedConnection",
    "TranscriptionSession",
    "expected_languages",
    "expected_words",
    "is_silence",
    "language_for",
    "languages_of",
    "said",
    "saying",
    "word_for",
]

Message = dict[str, Any]

_logger = logging.getLogger(__name__)
# The fake's websockets traffic gets its own logger, kept at WARNING: the service's tests capture every log
# line, and the fake's "connection open"/"server listening" lines would read like the service's. Lower it
# to debug the fake.
_server_logger = logging.getLogger(f"{__name__}.websockets")
_server_logger.setLevel(logging.WARNING)

LISTEN_PATH = "/v1/listen"
FLUX_PATH = "/v2/listen"  # Deepgram Flux: turns instead of results (`FluxSession`)
MULAW_SILENCE = frozenset({0xFF, 0x7F})  # mu-law encodes zero amplitude as 0xFF (and -0 as 0x7F)
WORD_CONFIDENCE = 0.99
MODEL_UUID = "1dbdfb4d-85b2-4659-8c1d-0e7ce4b5a8b5"  # fixed: real Deepgram reports one uuid per model build
MODEL_VERSION = "2025-01-01.0"
DEFAULT_SAMPLE_RATE = 8000  # Twilio's 8 kHz; also used when the client names no encoding
MULTI = "multi"  # the `language` that asks Nova-3 for code-switching, and a language on every word
MULTI_LANGUAGES = ("en", "es")  # what the fake "hears" with language=multi: each word one of these
SHUTDOWN_CLOSE_TIMEOUT_S = 1.0  # bound each close handshake so stopping the fake never hangs on a silent peer


# ----------------------------------------------------------------------------------------------------
# Deterministic "speech recognition"
# ----------------------------------------------------------------------------------------------------

word_for: WordChooser = hashed_word  # the tests' default hearing; the stand-in command's is `readable_word`


def language_for(window: bytes) -> str:
    """With language=multi, the language of the word the fake hears in `window`: picked by the window's audio,
    so about half the words of a call are in each of MULTI_LANGUAGES."""
    return MULTI_LANGUAGES[int(hashlib.sha256(window).hexdigest()[7], 16) % len(MULTI_LANGUAGES)]


def languages_of(languages: list[str]) -> list[str]:
    """A result's `languages` for its words' languages: most words first, a tie in the order first heard."""
    return [language for language, _ in collections.Counter(languages).most_common()]


def is_silence(window: bytes) -> bool:
    """True when every byte is mu-law silence; such a window yields no word."""
    return all(byte in MULAW_SILENCE for byte in window)


def speaker_for_window(index: int) -> int:
    """With diarize=true the fake hears two voices taking turns: windows 0-2 speaker 0, 3-5 speaker 1, ..."""
    return (index // 3) % 2


def expected_words(audio: bytes, window_bytes: int = 4000, words: WordChooser = word_for) -> list[str]:
    """The words of every final for a stream of `audio` that ends with CloseStream, in order.

    The trailing partial window counts too, because CloseStream flushes it.
    """
    windows = (audio[i : i + window_bytes] for i in range(0, len(audio), window_bytes))
    return [words(window) for window in windows if not is_silence(window)]


def expected_languages(audio: bytes, window_bytes: int = 4000) -> list[str]:
    """With language=multi, the language of each of `expected_words(audio)`, in the same order."""
    windows = (audio[i : i + window_bytes] for i in range(0, len(audio), window_bytes))
    return [language_for(window) for window in windows if not is_silence(window)]


# ----------------------------------------------------------------------------------------------------
# Options and the pure per-connection session
# ----------------------------------------------------------------------------------------------------


class BadRequestError(ValueError):
    """A query Deepgram would answer with HTTP 400."""


def _flag(query: dict[str, list[str]], name: str) -> bool:
    # The SDK encodes bools as "true"/"false" (core/query_encoder.py); Deepgram also accepts any case.
    return _first(query, name, "false").lower() == "true"


def _first(query: dict[str, list[str]], name: str, default: str) -> str:
    values = query.get(name)
    return values[0] if values else default


T = TypeVar("T")


def _parsed(query: dict[str, list[str]], name: str, parse: Callable[[str], T], kind: str) -> T | None:
    """A query parameter's first value through `parse`, None when absent; a 400 naming it when it does not parse."""
    if name not in query:
        return None
    raw = query[name][0]
    try:
        return parse(raw)
    except ValueError:
        raise BadRequestError(f"{name}={raw!r} is not {kind}") from None


def _positive_int(query: dict[str, list[str]], name: str) -> int | None:
    value = _parsed(query, name, int, "an integer")
    if value is not None and value <= 0:
        raise BadRequestError(f"{name}={query[name][0]!r} must be positive")
    return value


@dataclass(frozen=True, kw_only=True)
class ListenOptions:
    """The query parameters that change what the fake sends back."""

    model: str = "nova-3"
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int = 1
    multichannel: bool = False  # with channels > 1: each channel transcribed on its own (`MultichannelSession`)
    interim_results: bool = False
    vad_events: bool = False
    utterance_end_ms: int | None = None
    diarize: bool = False
    language: str = "en"

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> ListenOptions:
        """Parse a `/v1/listen` query; raise `BadRequestError` where Deepgram answers 400."""
        options = cls(
            model=_first(query, "model", "nova-3"),
            encoding=_first(query, "encoding", "") or None,
            sample_rate=_positive_int(query, "sample_rate"),
            channels=_positive_int(query, "channels") or 1,
            multichannel=_flag(query, "multichannel"),
            interim_results=_flag(query, "interim_results"),
            vad_events=_flag(query, "vad_events"),
            utterance_end_ms=_positive_int(query, "utterance_end_ms"),
            diarize=_flag(query, "diarize"),
            language=_first(query, "language", "en"),
        )
        if options.encoding is not None and options.sample_rate is None:
            raise BadRequestError("sample_rate is required when encoding is set")
        return options

    @property
    def sample_width(self) -> int:
        """Bytes per sample of one channel: 2 for linear16, 1 for mu-law."""
        return 2 if self.encoding == "linear16" else 1

    @property
    def bytes_per_second(self) -> int:
        """Audio bytes per second of stream time: 8,000 for 8 kHz mu-law, 16,000 for 8 kHz linear16."""
        return (self.sample_rate or DEFAULT_SAMPLE_RATE) * self.sample_width * self.channels

    @property
    def split_channels(self) -> bool:
        """True when each channel gets results of its own (`multichannel=true` with more than one channel)."""
        return self.multichannel and self.channels > 1


@dataclass(frozen=True)
class _Window:
    start: int  # byte offsets into the connection's audio
    end: int
    word: str | None  # None for silence
    language: str = ""  # what language_for hears in it (reported only with language=multi)


class TranscriptionSession:
    """Sans-I/O model of one live transcription: audio and control messages in, Deepgram messages out.

    Audio is cut into windows of `window_bytes`; each voiced window is one word. Every `words_per_final`
    windows (silent ones included) become one final. `Finalize` and `CloseStream` also flush the partial
    window, after which windowing restarts at the current byte offset.
    """

    def __init__(
        self,
        options: ListenOptions,
        *,
        request_id: str,
        window_bytes: int = 4000,
        words_per_final: int = 4,
        channel: tuple[int, int] = (0, 1),
        words: WordChooser = word_for,
    ) -> None:
        if window_bytes <= 0 or words_per_final <= 0:
            raise ValueError("window_bytes and words_per_final must be positive")
        self.options = options
        self.request_id = request_id
        self._channel = list(channel)  # (this channel, channels): every message's channel_index
        self._window_bytes = window_bytes
        self._words_per_final = words_per_final
        self._words = words
        self._bps = options.bytes_per_second
        self._window = bytearray()  # the window being filled
        self._window_start = 0  # its byte offset
        self._pending: list[_Window] = []  # complete windows not yet in a final
        self._speaking = False  # SpeechStarted already sent for the current segment
        self._heard = 0
        self._sha256 = hashlib.sha256()

    @property
    def bytes_heard(self) -> int:
        """Audio bytes fed so far."""
        return self._heard

    def feed(self, audio: bytes) -> list[Message]:
        """Take audio; return the SpeechStarted/interim/final/UtteranceEnd messages now due, in order."""
        self._heard += len(audio)
        self._sha256.update(audio)
        out: list[Message] = []
        offset = 0
        while offset < len(audio):
            take = self._window_bytes - len(self._window)
            self._window += audio[offset : offset + take]
            offset += take
            if len(self._window) == self._window_bytes:
                out += self._on_window_complete()
        return out

    def finalize(self) -> list[Message]:
        """`Finalize`: all pending audio (partial window included) as one final, `from_finalize: true`."""
        out = self._close_partial_window()
        windows = self._take_pending()
        out.append(self._results(windows, is_final=True, speech_final=False, from_finalize=True))
        return out + self._utterance_end(windows)

    def close_stream(self) -> list[Message]:
        """`CloseStream` (or an empty binary frame): flush what is pending as a final, then `Metadata`."""
        out = self._close_partial_window()
        windows = self._take_pending()
        if windows:
            out.append(self._results(windows, is_final=True, speech_final=True, from_finalize=False))
            out += self._utterance_end(windows)
        out.append(self.metadata())
        return out

    def metadata(self) -> Message:
        """The `Metadata` message Deepgram sends before closing with 1000."""
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._sha256.hexdigest(),
            "created": created.replace("+00:00", "Z"),
            "duration": self._heard / self._bps,
            "channels": self.options.channels,
        }

    def _on_window_complete(self) -> list[Message]:
        out = self._add_window(bytes(self._window))
        if self.options.interim_results:
            out.append(self._results(self._pending, is_final=False, speech_final=False, from_finalize=False))
        if len(self._pending) >= self._words_per_final:
            windows = self._take_pending()
            out.append(self._results(windows, is_final=True, speech_final=True, from_finalize=False))
            out += self._utterance_end(windows)
        return out

    def _close_partial_window(self) -> list[Message]:
        return self._add_window(bytes(self._window)) if self._window else []

    def _add_window(self, audio: bytes) -> list[Message]:
        word = None if is_silence(audio) else self._words(audio)
        language = language_for(audio) if word is not None and self.options.language == MULTI else ""
        window = _Window(self._window_start, self._window_start + len(audio), word, language)
        self._window.clear()
        self._window_start = window.end
        self._pending.append(window)
        if word is None or self._speaking or not self.options.vad_events:
            return []
        self._speaking = True
        return [{"type": "SpeechStarted", "channel": self._channel[:1], "timestamp": window.start / self._bps}]

    def _take_pending(self) -> list[_Window]:
        windows, self._pending = self._pending, []
        self._speaking = False  # the next voiced window starts a new segment
        return windows

    def _utterance_end(self, windows: list[_Window]) -> list[Message]:
        # Deepgram only reports an utterance end after words, so a silent final has none.
        voiced = [window for window in windows if window.word is not None]
        if self.options.utterance_end_ms is None or not voiced:
            return []
        return [{"type": "UtteranceEnd", "channel": self._channel, "last_word_end": voiced[-1].end / self._bps}]

    def _results(self, windows: list[_Window], *, is_final: bool, speech_final: bool, from_finalize: bool) -> Message:
        start = windows[0].start if windows else self._window_start
        end = windows[-1].end if windows else start
        words = [self._word(window) for window in windows if window.word is not None]
        alternative: Message = {
            "transcript": " ".join(word["word"] for word in words),
            "confidence": WORD_CONFIDENCE if words else 0.0,
            "words": words,
        }
        if self.options.language == MULTI:
            alternative["languages"] = languages_of([word["language"] for word in words])
        return {
            "type": "Results",
            "channel_index": self._channel,
            "duration": (end - start) / self._bps,
            "start": start / self._bps,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative]},
            "metadata": {
                "request_id": self.request_id,
                "model_uuid": MODEL_UUID,
                "model_info": {
                    "name": f"general-{self.options.model}",
                    "version": MODEL_VERSION,
                    "arch": self.options.model,
                },
            },
        }

    def _word(self, window: _Window) -> Message:
        word: Message = {
            "word": window.word,
            "start": window.start / self._bps,
            "end": window.end / self._bps,
            "confidence": WORD_CONFIDENCE,
            "punctuated_word": window.word,
        }
        if self.options.diarize:
            word["speaker"] = speaker_for_window(window.start // self._window_bytes)
        if self.options.language == MULTI:
            word["language"] = window.language
        return word


class MultichannelSession:
    """`multichannel=true`: the interleaved audio split per channel, one `TranscriptionSession` each.

    Deepgram transcribes each channel on its own and says which in `channel_index: [channel, channels]`; times
    are seconds of stream time (a channel's own bytes), and one `Metadata` covers the whole stream.
    """

    def __init__(
        self,
        options: ListenOptions,
        *,
        request_id: str,
        window_bytes: int = 4000,
        words_per_final: int = 4,
        words: WordChooser = word_for,
    ) -> None:
        self.options = options
        self.request_id = request_id
        mono = dataclasses.replace(options, channels=1, multichannel=False)
        self.channels = [
            TranscriptionSession(
                mono, request_id=request_id, window_bytes=window_bytes, words_per_final=words_per_final,
                channel=(index, options.channels), words=words,
            )
            for index in range(options.channels)
        ]  # fmt: skip
        self._frame = options.sample_width * options.channels  # one sample of every channel
        self._rest = b""  # a trailing partial frame, kept for the next message
        self._sha256 = hashlib.sha256()

    @property
    def bytes_heard(self) -> int:
        return sum(session.bytes_heard for session in self.channels) + len(self._rest)

    def channel_audio(self, audio: bytes) -> list[bytes]:
        """Interleaved whole frames split into one byte string per channel."""
        width, count = self.options.sample_width, self.options.channels
        return [
            b"".join(audio[at + index * width : at + (index + 1) * width] for at in range(0, len(audio), self._frame))
            if width > 1
            else audio[index::count]
            for index in range(count)
        ]

    def feed(self, audio: bytes) -> list[Message]:
        """Take interleaved audio; every channel's messages now due, channel 0's first."""
        self._sha256.update(audio)
        audio = self._rest + audio
        whole = len(audio) - len(audio) % self._frame
        self._rest = audio[whole:]
        out: list[Message] = []
        for session, part in zip(self.channels, self.channel_audio(audio[:whole]), strict=True):
            out += session.feed(part)
        return out

    def finalize(self) -> list[Message]:
        """`Finalize`: a final for every channel."""
        return [message for session in self.channels for message in session.finalize()]

    def close_stream(self) -> list[Message]:
        """`CloseStream`: every channel's last finals, then one `Metadata` for the stream."""
        out = [message for session in self.channels for message in session.close_stream()[:-1]]
        return [*out, self.metadata()]

    def metadata(self) -> Message:
        """One `Metadata`: the whole stream's hash, its duration in stream time, its channel count."""
        metadata = self.channels[0].metadata()
        metadata["sha256"] = self._sha256.hexdigest()
        metadata["duration"] = self.bytes_heard / self.options.bytes_per_second
        metadata["channels"] = self.options.channels
        return metadata


# ----------------------------------------------------------------------------------------------------
# Flux (/v2/listen): turns
# ----------------------------------------------------------------------------------------------------

# What /v2/listen takes (deepgram-sdk 7.17 `listen.v2.connect`); anything else is HTTP 400, as on Deepgram.
FLUX_QUERY = frozenset(
    {
        "model", "encoding", "sample_rate", "eot_threshold", "eager_eot_threshold", "eot_timeout_ms", "keyterm",
        "language_hint", "profanity_filter", "numerals", "redact", "mip_opt_out", "tag",
    }
)  # fmt: skip


def _bounded(query: dict[str, list[str]], name: str, low: float, high: float) -> float | None:
    value = _parsed(query, name, float, "a number")
    if value is not None and not low <= value <= high:
        raise BadRequestError(f"{name}={query[name][0]!r} must be between {low:g} and {high:g}")
    return value


@dataclass(frozen=True, kw_only=True)
class FluxOptions:
    """The `/v2/listen` query parameters that change what the fake sends back."""

    model: str = "flux-general-en"
    eager_eot_threshold: float | None = None  # set: EagerEndOfTurn (and TurnResumed) before EndOfTurn

    @property
    def multilingual(self) -> bool:
        return "multi" in self.model

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> FluxOptions:
        """Parse a `/v2/listen` query; raise `BadRequestError` where Flux answers 400 (unknown options too)."""
        unknown = sorted(set(query) - FLUX_QUERY)
        if unknown:
            raise BadRequestError(f"Flux does not support: {', '.join(unknown)}")
        model = _first(query, "model", "")
        if not model.startswith("flux-"):
            raise BadRequestError(f"model={model!r} is not a Flux model")
        if "encoding" in query and "sample_rate" not in query:
            raise BadRequestError("sample_rate is required when encoding is set")
        if any(value != "numbers" for value in query.get("redact", [])):
            raise BadRequestError("Flux redacts numbers only")
        if "language_hint" in query and "multi" not in model:
            raise BadRequestError("language_hint needs flux-general-multi")
        _bounded(query, "eot_threshold", 0.5, 1.0)
        _bounded(query, "eot_timeout_ms", 500, 60_000)
        return cls(model=model, eager_eot_threshold=_bounded(query, "eager_eot_threshold", 0.3, 0.9))


class FluxSession:
    """Sans-I/O model of one Flux connection: audio in, `Connected` and `TurnInfo` messages out.

    The fake's word-per-window model (`TranscriptionSession`), grouped into turns: a turn is a run of voiced
    windows. Its first voiced window opens it (`StartOfTurn`), a silent window ends it (`EndOfTurn`); with
    `eager_eot_threshold` the first silent window is an `EagerEndOfTurn`, a voiced one after it a `TurnResumed`,
    and a second silent one the `EndOfTurn`, whose transcript is then the eager one's. At every 0.25 s of audio
    with nothing else to say, an `Update` tells the turn so far (or, with no turn open, `""`); its
    `audio_window_end` is the end of the last whole window, the audio whose words are decided. On
    flux-general-multi each turn says its words' languages (`language_for`), most words first. `CloseStream`
    hears the partial window, ends the open turn, and the connection closes (no Metadata on v2).
    """

    def __init__(
        self, options: FluxOptions, *, request_id: str, window_bytes: int = 4000, words: WordChooser = word_for
    ) -> None:
        if window_bytes <= 0 or window_bytes % 2:
            raise ValueError("window_bytes must be positive and even")
        self.options = options
        self.request_id = request_id
        self._window_bytes = window_bytes
        self._half = window_bytes // 2  # Flux's Update period: 0.25 s of 8 kHz mu-law with 0.5 s windows
        self._window = bytearray()
        self._heard = 0
        self._decided = 0  # bytes whose words are decided: whole windows
        self._sequence = 0
        self._turn_index = 0
        self._turn: list[_Window] = []  # the open turn's voiced windows
        self._turn_start: int | None = None
        self._after_turn = 0  # where the last turn ended
        self._eager = False  # an EagerEndOfTurn was sent and not resumed
        self._languages: dict[int, str] = {}  # a voiced window's start -> its language (multi)
        self._words = words

    @property
    def bytes_heard(self) -> int:
        return self._heard

    def connected(self) -> Message:
        return self._message({"type": "Connected", "request_id": self.request_id})

    def feed(self, audio: bytes) -> list[Message]:
        """Take audio; return the TurnInfo messages now due, in order."""
        out: list[Message] = []
        offset = 0
        while offset < len(audio):
            take = self._half - self._heard % self._half
            piece = audio[offset : offset + take]
            offset += len(piece)
            self._heard += len(piece)
            self._window += piece
            if self._heard % self._half:
                continue
            said = self._on_window() if len(self._window) == self._window_bytes else []
            out += said or [self._turn_info("Update")]
        return out

    def close_stream(self) -> list[Message]:
        """`CloseStream`: the partial window heard, the open turn ended."""
        out = self._on_window() if self._window else []
        if self._turn_start is not None:
            out.append(self._end_of_turn())
        return out

    def _on_window(self) -> list[Message]:
        audio = bytes(self._window)
        window = _Window(self._heard - len(audio), self._heard, None if is_silence(audio) else self._words(audio))
        self._window.clear()
        self._decided = window.end
        if window.word is not None:
            if self.options.multilingual:
                self._languages[window.start] = language_for(audio)
            return self._voiced(window)
        if self._turn_start is None:
            return []
        if self.options.eager_eot_threshold is not None and not self._eager:
            self._eager = True
            return [self._turn_info("EagerEndOfTurn")]
        return [self._end_of_turn()]

    def _voiced(self, window: _Window) -> list[Message]:
        self._turn.append(window)
        if self._turn_start is None:
            self._turn_start = window.start
            return [self._turn_info("StartOfTurn")]
        if self._eager:
            self._eager = False
            return [self._turn_info("TurnResumed")]
        return []

    def _end_of_turn(self) -> Message:
        message = self._turn_info("EndOfTurn")
        self._turn, self._turn_start, self._eager = [], None, False
        self._after_turn = self._decided
        self._turn_index += 1
        return message

    def _turn_info(self, event: str) -> Message:
        start = self._turn_start if self._turn_start is not None else self._after_turn
        words: list[Message] = [
            {"word": w.word, "confidence": WORD_CONFIDENCE, "start": w.start / 8000, "end": w.end / 8000}
            for w in self._turn
        ]
        message: Message = {
            "type": "TurnInfo",
            "request_id": self.request_id,
            "event": event,
            "turn_index": self._turn_index,
            "audio_window_start": start / 8000,
            "audio_window_end": self._decided / 8000,
            "transcript": " ".join(word["word"] for word in words),
            "words": words,
            "end_of_turn_confidence": 0.9 if event in {"EndOfTurn", "EagerEndOfTurn"} else 0.1,
        }
        if event == "EndOfTurn":
            message["trigger"] = "model"
        if self.options.multilingual and self._turn:
            message["languages"] = languages_of([self._languages[w.start] for w in self._turn])
        return self._message(message)

    def _message(self, message: Message) -> Message:
        message["sequence_id"] = self._sequence
        self._sequence += 1
        return message


# ----------------------------------------------------------------------------------------------------
# What the tests configure and what they inspect
# ----------------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """Injectable misbehaviour; every field may be changed at runtime, between or within tests."""

    reject_status: int | None = None  # answer the upgrade with this HTTP status (e.g. 401, 403, 503)...
    reject_count: int | None = None  # ...for this many upgrades, then accept (None = always); counts down
    hang_handshake: bool = False  # accept TCP, never answer the HTTP upgrade (held until the fake stops)
    hold_handshake: asyncio.Event | None = None  # answer upgrades only once this is set (a slow Deepgram)
    close_after_bytes: int | None = None  # after this many audio bytes on a connection, close with:
    close_code: int = 1011
    close_reason: str = "NET-0000"
    drop_after_bytes: int | None = None  # after this many audio bytes, abort TCP with no close frame (1006)
    silent: bool = False  # keep the socket open but never send anything (and never close on CloseStream)
    # after this many audio bytes, send nothing more while audio still flows (and never close on CloseStream):
    # the stall reported of Flux, a socket that stays open with no TurnInfo
    stall_after_bytes: int | None = None
    flux_warning: str | None = None  # Flux: send a Warning with this code right after Connected
    flux_error: str | None = None  # Flux: send an Error with this code right after Connected, then close 1011
    idle_timeout_s: float = 10.0  # no audio or text for this long -> close 1011 "NET-0001"
    send_garbage: bool = False  # also send one malformed JSON text frame and one {"type":"Mystery"} early
    # close_after_bytes, drop_after_bytes, silent and stall_after_bytes apply to this many connections (in accept
    # order), then the fake behaves again: a Deepgram that drops once and is fine on reconnect. None: every connection.
    fault_connections: int | None = None


@dataclass(kw_only=True)
class RecordedConnection:
    """Everything one accepted `/v1/listen` connection sent and received."""

    query: dict[str, list[str]]  # parsed query string of /v1/listen or /v2/listen
    path: str = LISTEN_PATH  # which API: LISTEN_PATH (v1) or FLUX_PATH
    headers: dict[str, str]  # request headers, lower-case names
    audio: bytearray = field(default_factory=bytearray)  # every binary frame's bytes, concatenated, in order
    audio_frames: list[bytes] = field(default_factory=list)  # each binary frame as received
    audio_times: list[float] = field(default_factory=list)  # each binary frame's arrival (the loop's clock)
    control: list[dict[str, Any]] = field(default_factory=list)  # every text frame that parsed to a JSON object
    sent: list[dict[str, Any]] = field(default_factory=list)  # every JSON message the fake sent back, in order
    request_id: str  # uuid4; also in the 101 response's dg-request-id, results' metadata and Metadata
    close_code: int | None = None  # close code the fake sent (also an echo); None: TCP dropped or still open
    close_reason: str | None = None
    client_close_code: int | None = None  # close code the client sent, if it sent one
    rejected_text: list[str] = field(default_factory=list)  # text frames that were not JSON objects
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # set when the connection ended for any reason

    def option(self, name: str) -> str | None:
        """First value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def messages(self, message_type: str) -> list[dict[str, Any]]:
        """Messages of one `type` the fake sent, in order."""
        return [message for message in self.sent if message.get("type") == message_type]

    def finals(self) -> list[dict[str, Any]]:
        """The final `Results` the fake sent (on Flux, the `EndOfTurn` TurnInfo), in order."""
        if self.path == FLUX_PATH:
            return self.turn_events("EndOfTurn")
        return [message for message in self.messages("Results") if message["is_final"]]

    def turn_events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The TurnInfo messages Flux sent (of one `event`, if given), in order."""
        return [turn for turn in self.messages("TurnInfo") if event is None or turn["event"] == event]

    def final_words(self, channel: int | None = None) -> list[str]:
        """Every word of every final (of one channel, if given), in order (compare with `expected_words`)."""
        if self.path == FLUX_PATH:
            return [word["word"] for turn in self.finals() for word in turn["words"]]
        finals = [final for final in self.finals() if channel is None or final["channel_index"][0] == channel]
        return [word["word"] for final in finals for word in final["channel"]["alternatives"][0]["words"]]


# ----------------------------------------------------------------------------------------------------
# The I/O adapter
# ----------------------------------------------------------------------------------------------------


class _FakeServerConnection(ServerConnection):
    """A server connection that carries its request id and options, and registers itself with its fake.

    Registration lets `FakeDeepgram.__aexit__` abort connections still in the HTTP handshake (a hung upgrade
    or a client that never sent a request), which `websockets` would otherwise wait on forever with no open
    timeout.
    """

    registry: ClassVar[set[_FakeServerConnection]] = set()  # replaced by a per-fake subclass
    request_id: str
    options: ListenOptions | FluxOptions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.request_id = str(uuid.uuid4())
        self.options = ListenOptions()
        self.registry.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        super().connection_lost(exc)


def _connection_class(registry: set[_FakeServerConnection]) -> type[_FakeServerConnection]:
    class _Registered(_FakeServerConnection):
        pass

    _Registered.registry = registry
    return _Registered


def _json_response(status: int, body: Message, request_id: str) -> Response:
    data = json.dumps(body).encode()
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:  # a status the standard library does not name, e.g. from a Faults experiment
        phrase = "Error"
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
            ("dg-request-id", request_id),
        ]
    )
    return Response(status, phrase, headers, data)


def _error_response(status: int, code: str, message: str, request_id: str) -> Response:
    # The shape of Deepgram's REST and handshake errors.
    body = {"err_code": code, "err_msg": message, "request_id": request_id}
    response = _json_response(status, body, request_id)
    response.headers["dg-error"] = message
    return response


class _Stop(Exception):
    """The connection handler is done: the fake closed or dropped the connection."""


class _ConnectionHandler:
    """Drives one accepted connection: records frames, feeds the session, applies faults, sends replies."""

    def __init__(self, fake: FakeDeepgram, ws: _FakeServerConnection, record: RecordedConnection) -> None:
        self._fake = fake
        self._ws = ws
        self._record = record
        self._session: TranscriptionSession | MultichannelSession | FluxSession
        if isinstance(ws.options, FluxOptions):
            self._session = FluxSession(
                ws.options, request_id=record.request_id, window_bytes=fake.window_bytes, words=fake.words
            )
        else:
            session = MultichannelSession if ws.options.split_channels else TranscriptionSession
            self._session = session(
                ws.options,
                request_id=record.request_id,
                window_bytes=fake.window_bytes,
                words_per_final=fake.words_per_final,
                words=fake.words,
            )
        self._stalled = False
        loop = asyncio.get_running_loop()
        self._last_input = loop.time()  # opening counts as the first "input" for the audio-start deadline
        self._audio_started = False

    async def run(self) -> None:
        """Serve until the client or the fake ends the connection."""
        if isinstance(self._session, FluxSession):
            await self._send([self._session.connected()])
            await self._flux_faults()
        if self._fake.faults.send_garbage:
            await self._send_garbage()
        with contextlib.suppress(_Stop):
            while True:
                await self._receive_one()

    async def _receive_one(self) -> None:
        deadline = self._last_input + self._fake.faults.idle_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                frame = await self._ws.recv()  # recv() is cancellation-safe in websockets' asyncio API
        except TimeoutError:
            await self._close(1011, "NET-0001")
        if isinstance(frame, bytes):
            await self._on_audio(frame)
        else:
            await self._on_text(frame)

    async def _on_audio(self, frame: bytes) -> None:
        before = len(self._record.audio)
        self._record.audio_frames.append(frame)
        self._record.audio_times.append(asyncio.get_running_loop().time())
        self._record.audio += frame
        self._audio_started = True
        self._last_input = asyncio.get_running_loop().time()
        if not frame:  # an empty binary frame is Deepgram's deprecated close signal
            await self._close_stream()
            return
        faults = self._fake.faults
        faulty = self._faulty()
        close_at = _threshold(faults.close_after_bytes if faulty else None, before, len(frame))
        drop_at = _threshold(faults.drop_after_bytes if faulty else None, before, len(frame))
        cut = min((at for at in (close_at, drop_at) if at is not None), default=len(frame))
        stall_at = _threshold(faults.stall_after_bytes if faulty else None, before, len(frame))
        await self._send(self._session.feed(frame[: cut if stall_at is None else min(cut, stall_at)]))
        if stall_at is not None:
            self._stalled = True  # what it hears from here on, it never answers
        if drop_at is not None and drop_at == cut:
            await self._drop()
        if close_at is not None:
            await self._close(faults.close_code, faults.close_reason)

    async def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            message = None
        if not isinstance(message, dict):
            self._record.rejected_text.append(text)
            await self._send_schema_error(text, "Failed to deserialize text message: not a JSON object.")
            return
        self._record.control.append(message)
        if self._audio_started:  # before the first audio only audio resets the idle timer (docs: keep-alive)
            self._last_input = asyncio.get_running_loop().time()
        await self._on_control(message, text)

    async def _on_control(self, message: Message, text: str) -> None:
        kind = message.get("type")
        if isinstance(self._session, FluxSession) and kind != "CloseStream":
            # Flux has no KeepAlive or Finalize (and ForceEndTurn needs server-side enablement): an Error, then close.
            description = f"Unparsable client message: {kind!r}."
            await self._send([{"type": "Error", "code": "UNPARSABLE_CLIENT_MESSAGE", "description": description}])
            await self._close(1008, "UNPARSABLE_CLIENT_MESSAGE")
        if kind == "KeepAlive":
            return
        if kind == "Finalize" and not isinstance(self._session, FluxSession):  # Flux closed above
            await self._send(self._session.finalize())
        elif kind == "CloseStream":
            await self._close_stream()
        else:
            await self._send_schema_error(text, f"Unknown message type: {kind!r}.")

    async def _close_stream(self) -> None:
        if self._silent() or self._stalled:  # a silent Deepgram never answers, not even with a close
            return
        await self._send(self._session.close_stream())
        await self._close(1000, "")

    async def _send_schema_error(self, text: str, description: str) -> None:
        await self._send([{"type": "Error", "variant": "SchemaError", "description": description, "message": text}])

    async def _flux_faults(self) -> None:
        faults = self._fake.faults
        if faults.flux_warning is not None:
            warning = {"type": "Warning", "request_id": self._record.request_id, "sequence_id": 1}
            await self._send([{**warning, "code": faults.flux_warning, "description": "Injected warning."}])
        if faults.flux_error is not None:
            await self._send(
                [{"type": "Error", "sequence_id": 1, "code": faults.flux_error, "description": "Injected."}]
            )
            await self._close(1011, faults.flux_error)

    async def _send_garbage(self) -> None:
        if self._silent():
            return
        if isinstance(self._session, FluxSession):
            await self._ws.send('{"type": "TurnInfo", "event": "Upd')  # truncated JSON, not recorded
        else:
            await self._ws.send('{"type": "Results", "channel_index": [0, 1')  # truncated JSON, not recorded
        await self._send([{"type": "Mystery", "request_id": self._record.request_id}])

    def _faulty(self) -> bool:
        """Whether this connection is one the fault fields apply to (see Faults.fault_connections)."""
        limit = self._fake.faults.fault_connections
        return limit is None or self._fake.connections.index(self._record) < limit

    def _silent(self) -> bool:
        return self._fake.faults.silent and self._faulty()

    async def _send(self, messages: list[Message]) -> None:
        if self._silent() or self._stalled:
            return
        for message in messages:
            self._record.sent.append(message)
            await self._ws.send(json.dumps(message))

    async def _close(self, code: int, reason: str) -> NoReturn:
        await self._ws.close(code, reason)
        raise _Stop

    async def _drop(self) -> NoReturn:
        # abort() discards the write buffer and sends no close frame: the client sees 1006.
        self._ws.transport.abort()
        await self._ws.wait_closed()
        raise _Stop


def _threshold(limit: int | None, before: int, size: int) -> int | None:
    """How many bytes of this frame to hear before `limit` total bytes is reached; None if not reached."""
    if limit is None or before + size < limit:
        return None
    return max(0, limit - before)


class FakeDeepgram:
    """A fake Deepgram live STT server on 127.0.0.1 (OS-chosen port), used as an async context manager."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        window_bytes: int = 4000,
        words_per_final: int = 4,
        faults: Faults | None = None,
        words: WordChooser = word_for,
        record: bool = True,
    ) -> None:
        if window_bytes <= 0 or words_per_final <= 0:
            raise ValueError("window_bytes and words_per_final must be positive")
        self.api_key = api_key  # None: any key is taken (the stand-in command, which has no account to check)
        self.words = words
        self.record = record  # False: a connection's record (its audio above all) is let go when it ends
        self.window_bytes = window_bytes
        self.words_per_final = words_per_final
        self.faults = faults if faults is not None else Faults()
        self.connections: list[RecordedConnection] = []  # accepted connections, in accept order
        self.upgrade_attempts = 0  # every HTTP upgrade request, rejected ones included
        self._live: set[_FakeServerConnection] = set()
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._server: Server | None = None
        self._port: int | None = None

    async def __aenter__(self) -> FakeDeepgram:
        if self._server is not None:
            raise RuntimeError("FakeDeepgram is already running")
        self._stopping.clear()
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            process_response=self._process_response,
            create_connection=_connection_class(self._live),
            open_timeout=None,  # hang_handshake must last until stop; __aexit__ aborts what is still pending
            close_timeout=SHUTDOWN_CLOSE_TIMEOUT_S,
            compression=None,  # Deepgram does not negotiate permessage-deflate
            logger=_server_logger,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop listening, close open connections with 1001, abort pending handshakes; idempotent."""
        if self._server is None:
            return
        self._stopping.set()  # releases hung handshakes
        for connection in list(self._live):
            if connection.state is State.CONNECTING:
                connection.transport.abort()
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    @property
    def port(self) -> int:
        """The TCP port the OS picked."""
        if self._port is None:
            raise RuntimeError("FakeDeepgram is not started; use `async with FakeDeepgram() as fake`")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`: what the app's DEEPGRAM_URL setting takes."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """`ws://127.0.0.1:PORT`: the live-socket base (the SDK appends /v1/listen)."""
        return f"ws://127.0.0.1:{self.port}"

    async def wait_for_connections(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - the tests wait with explicit timeouts, failing fast
    ) -> None:
        """Wait until at least `n` connections have been accepted; raise TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.connections) < n:
                self._connected.clear()
                await self._connected.wait()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        assert isinstance(connection, _FakeServerConnection)
        self.upgrade_attempts += 1
        request_id = connection.request_id
        if self.faults.hang_handshake:
            return await self._hang(connection)
        if self.faults.hold_handshake is not None:
            await self.faults.hold_handshake.wait()
        rejected = self._take_rejection()
        if rejected is not None:
            return _error_response(rejected, "INJECTED_FAULT", "Rejected by Faults.reject_status.", request_id)
        url = urllib.parse.urlsplit(request.path)
        if url.path not in {LISTEN_PATH, FLUX_PATH}:
            return _error_response(404, "NOT_FOUND", f"No such endpoint: {url.path}", request_id)
        if not self._authorized(request.headers.get_all("Authorization")):
            return _error_response(401, "INVALID_AUTH", "Invalid credentials.", request_id)
        options = FluxOptions if url.path == FLUX_PATH else ListenOptions
        try:
            connection.options = options.from_query(urllib.parse.parse_qs(url.query))
        except BadRequestError as exc:
            return _error_response(400, "Bad Request", str(exc), request_id)
        return None

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        # Real Deepgram names the request id on the 101 response too; clients log it for support tickets.
        if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
            assert isinstance(connection, _FakeServerConnection)
            response.headers["dg-request-id"] = connection.request_id

    async def _hang(self, connection: _FakeServerConnection) -> Response:
        await self._stopping.wait()
        # Never answer: drop the TCP connection. websockets still wants a response, but it cannot be sent on
        # an aborted transport; a rejection (not None, which would accept) keeps the handler from running.
        connection.transport.abort()
        return _error_response(503, "SHUTTING_DOWN", "The fake is stopping.", connection.request_id)

    def _take_rejection(self) -> int | None:
        faults = self.faults
        if faults.reject_status is None or faults.reject_count == 0:
            return None
        if faults.reject_count is not None:
            faults.reject_count -= 1
        return faults.reject_status

    def _authorized(self, authorization: list[str]) -> bool:
        if len(authorization) != 1:  # none, or ambiguous repeats
            return False
        scheme, _, credential = authorization[0].partition(" ")
        return scheme.lower() in {"token", "bearer"} and bool(credential) and self.api_key in {None, credential}

    async def _handle(self, connection: ServerConnection) -> None:
        assert isinstance(connection, _FakeServerConnection)
        assert connection.request is not None
        url = urllib.parse.urlsplit(connection.request.path)
        record = RecordedConnection(
            query=urllib.parse.parse_qs(url.query),
            path=url.path,
            headers={name.lower(): value for name, value in connection.request.headers.raw_items()},
            request_id=connection.request_id,
        )
        self.connections.append(record)
        self._connected.set()
        _logger.debug("fake deepgram: connection %s opened", record.request_id)
        try:
            await _ConnectionHandler(self, connection, record).run()
        except ConnectionClosed:
            pass  # the client closed or vanished; nothing left to answer
        except Exception:
            # Whatever a client sends, the fake answers like a server with a bug: 1011, never a crash.
            _logger.exception("fake deepgram: connection handler failed")
            await connection.close(1011, "internal error")
        finally:
            _finish(record, connection)
            if not self.record:
                self.connections.remove(record)  # a long-running stand-in would otherwise keep every call's audio

    def __repr__(self) -> str:
        return f"FakeDeepgram(port={self._port}, connections={len(self.connections)})"


def _finish(record: RecordedConnection, connection: ServerConnection) -> None:
    protocol = connection.protocol
    if protocol.close_sent is not None:
        record.close_code = protocol.close_sent.code
        record.close_reason = protocol.close_sent.reason
    if protocol.close_rcvd is not None:
        record.client_close_code = protocol.close_rcvd.code
    record.closed.set()
    _logger.debug("fake deepgram: connection %s closed (%s)", record.request_id, record.close_code)
