"""The interfaces a speech-to-text engine implements (pure: types only).

The call pipeline (`calls/pipeline/`) opens a `LiveStream` per connection from a `LiveEngine`, and the spool
worker hands WAVs to a `BatchEngine`. Errors are the service's own (`service.errors`): `SttRejected` when
retrying cannot help, `SttUnavailable` when it may. Policy stays with the callers: when to reconnect, replay,
keep a stream alive, give up or spool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

from service.stt.events import BatchAnswer, SttEvent

# The engines a process may have, by name (the `name` of each): in logs, metrics and the call's record.
PRIMARY: Final = "primary"  # DEEPGRAM_URL
FALLBACK: Final = "fallback"  # DEEPGRAM_FALLBACK_URL, which a track moves to when the primary fails


class LiveStream(Protocol):
    """One open live connection."""

    async def send_audio(self, audio: bytes) -> None:
        """Twilio's mu-law bytes as they came (interleaved sample by sample when the stream has two channels)."""
        ...

    async def keep_alive(self) -> None:
        """Keep an idle connection open, the way the engine expects (never audio the pipeline did not send)."""
        ...

    async def close_stream(self) -> None:
        """No more audio: the engine finishes its results, says `SttMetadata` and closes."""
        ...

    def events(self) -> AsyncIterator[SttEvent]:
        """The engine's answers until it closes normally; an abnormal close raises SttError."""
        ...


class LiveEngine(Protocol):
    """Opens live connections to one engine at one address."""

    @property
    def name(self) -> str:
        """Which engine, in logs, metrics and the call's record: `primary` or `fallback`."""
        ...

    @property
    def configured(self) -> bool:
        """It has what it needs to connect (an API key)."""
        ...

    @property
    def max_channels(self) -> int:
        """How many channels one connection can carry (2 with multichannel, 1 for a mono-only engine)."""
        ...

    def connect(self, *, channels: int, diarize: bool) -> AbstractAsyncContextManager[LiveStream]:
        """Open a connection for `channels` interleaved mu-law 8 kHz channels."""
        ...


class BatchEngine(Protocol):
    """Transcribes a whole WAV at once."""

    @property
    def name(self) -> str:
        """Which engine: `primary` or `fallback`."""
        ...

    async def transcribe(self, wav: bytes) -> BatchAnswer:
        """The engine's answer for one WAV file's bytes; SttError if it cannot give one."""
        ...


def said_by_each(said: Sequence[tuple[str, str]]) -> str:
    """What one engine said, as it is; what several said as `primary: ...; fallback: ...`."""
    if len(said) == 1:
        return said[0][1]
    return "; ".join(f"{name}: {reason}" for name, reason in said)
