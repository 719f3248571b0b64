"""A speech-to-text engine behind the seam (`service/stt/engine.py`) with no socket: for the call pipeline's
unit tests (`tests/calls/test_session.py`), which then run in milliseconds and can look at every connection.

It hears what the fake Deepgram server hears (`deepgram_server.word_for`: one word per 0.5 s window of
non-silent audio), answers each whole window with a final and settles it, and on `close_stream` finishes the
partial window, says `SttMetadata` and ends. Faults: refuse connections (`refuse`), or break a connection once
it has heard some bytes (`break_after_bytes`), as a dropped socket would (the events raise SttUnavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from service import mulaw
from service.errors import SttError, SttUnavailable
from service.stt.events import SttEvent, SttMetadata, SttResult, SttSettled, Word
from tests.helpers.fakes.deepgram_server import is_silence, word_for

WINDOW_BYTES = 4000  # 0.5 s of mu-law, the fake server's window


@dataclass
class FakeStream:
    """One connection: what it heard, and the events it owes."""

    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    audio: bytearray = field(default_factory=bytearray)
    keepalives: int = 0
    closed: bool = False
    break_after_bytes: int | None = None
    _answered: int = 0  # bytes already answered with a final
    _queue: asyncio.Queue[SttEvent | SttError | None] = field(default_factory=asyncio.Queue)

    async def send_audio(self, audio: bytes) -> None:
        if self.closed:
            raise SttUnavailable("the fake engine's connection is closed", close_code=1000)
        self.audio += audio
        if self.break_after_bytes is not None and len(self.audio) >= self.break_after_bytes:
            self.closed = True
            self._queue.put_nowait(SttUnavailable("the fake engine dropped the connection", close_code=1006))
            return
        while len(self.audio) - self._answered >= WINDOW_BYTES:
            self._final(WINDOW_BYTES)

    async def keep_alive(self) -> None:
        self.keepalives += 1

    async def close_stream(self) -> None:
        if self.closed:
            raise SttUnavailable("the fake engine's connection is closed", close_code=1000)
        self.closed = True
        if len(self.audio) > self._answered:
            self._final(len(self.audio) - self._answered)
        duration = len(self.audio) / mulaw.BYTES_PER_SECOND
        self._queue.put_nowait(SttMetadata(request_id=self.request_id, duration=duration))
        self._queue.put_nowait(SttSettled(until_s=duration))
        self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[SttEvent]:
        while (event := await self._queue.get()) is not None:
            if isinstance(event, SttError):
                raise event
            yield event

    def _final(self, size: int) -> None:
        window = bytes(self.audio[self._answered : self._answered + size])
        start, end = self._answered / mulaw.BYTES_PER_SECOND, (self._answered + size) / mulaw.BYTES_PER_SECOND
        self._answered += size
        words = () if is_silence(window) else (Word(word_for(window), start, end, 0.9),)
        text = " ".join(word.word for word in words)
        result = SttResult(
            is_final=True, speech_final=True, from_finalize=False, start=start, duration=end - start, text=text,
            confidence=0.9, words=words, request_id=self.request_id,
        )  # fmt: skip
        self._queue.put_nowait(result)
        self._queue.put_nowait(SttSettled(until_s=end))


@dataclass
class FakeEngine:
    """A `LiveEngine` whose connections are `FakeStream`s, kept in `connections`."""

    name: str = "primary"
    configured: bool = True
    max_channels: int = 1
    refuse: SttError | None = None  # every connect raises it
    break_after_bytes: int | None = None  # the next connection breaks once it heard this much (then cleared)
    request_id: str | None = None  # every connection's, when given (Flux may give none: "")
    connections: list[FakeStream] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def connect(self, *, channels: int, diarize: bool) -> AsyncIterator[FakeStream]:
        assert channels <= self.max_channels, "the pipeline asked for more channels than the engine has"
        if self.refuse is not None:
            raise self.refuse
        stream = FakeStream(break_after_bytes=self.break_after_bytes)
        if self.request_id is not None:
            stream.request_id = self.request_id
        self.break_after_bytes = None
        self.connections.append(stream)
        yield stream
