"""Test support: the fake Deepgram live STT server (`/v1/listen`, Flux's `/v2/listen`), which is the stand-in's
(`service/standin/live.py`), so the tests and `python -m service standin` cannot drift apart.

What the tests add: `FakeDeepgram.environment()`, an SDK environment pointing every base at the fake (only
`service.deepgram` may import the SDK in the product, so that convenience stays here). The tests hear hashed
words by default (`word_for`: unique per window); `FakeDeepgram(words=readable_word)` hears readable ones.
"""

from __future__ import annotations

from deepgram import DeepgramClientEnvironment

from service.standin import live
from service.standin.live import (
    FLUX_PATH,
    LISTEN_PATH,
    BadRequestError,
    Faults,
    FluxOptions,
    FluxSession,
    ListenOptions,
    MultichannelSession,
    RecordedConnection,
    TranscriptionSession,
    expected_languages,
    expected_words,
    is_silence,
    language_for,
    languages_of,
    said,
    saying,
    word_for,
)
from service.standin.words import readable_word

__all__ = [
    "FLUX_PATH",
    "LISTEN_PATH",
    "BadRequestError",
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
    "readable_word",
    "said",
    "saying",
    "word_for",
]


class FakeDeepgram(live.FakeDeepgram):
    """The stand-in's live server, with an SDK environment for the tests' own clients."""

    def environment(self) -> DeepgramClientEnvironment:
        """An SDK environment pointing every base at this fake."""
        return DeepgramClientEnvironment(base=self.url, production=self.ws_url, agent=self.ws_url, agent_rest=self.url)
