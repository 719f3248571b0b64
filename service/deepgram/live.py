"""I/O adapter (layer: deepgram): Deepgram's v1 live API through deepgram-sdk, as the seam's `LiveEngine`.

`prerecorded.py` is the pre-recorded client. The SDK 7.x live client has no reconnect and no KeepAlive of its
own: Deepgram leaves both to the client (https://developers.deepgram.com/docs/audio-keep-alive,
https://developers.deepgram.com/docs/recovering-from-connection-errors-and-timeouts-when-live-streaming-audio).
This adapter only opens, sends, reads and translates errors once, into `SttRejected` / `SttUnavailable`
(`sockets.py`, shared with the Flux adapter `flux.py`). Policy lives in `calls/`: when
to reconnect in `calls/pipeline/track.py`, when to send KeepAlive and CloseStream in `calls/pipeline/sender.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from deepgram.listen.v1 import (
    ListenV1Error,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from deepgram.listen.v1.socket_client import AsyncV1SocketClient

from service.deepgram.protocol import live_options
from service.deepgram.sockets import AddressedEngine, SocketFailure, opened, stt_error, translated
from service.stt.events import (
    SttEvent,
    SttMetadata,
    SttResult,
    SttServerError,
    SttSettled,
    SttSpeechStarted,
    SttUtteranceEnd,
    Word,
    languages_of,
)


class LiveConnection:
    """One open Deepgram v1 live socket (the seam's `LiveStream`): send audio and control messages, read events."""

    def __init__(self, socket: AsyncV1SocketClient) -> None:
        self._socket = socket

    async def send_audio(self, audio: bytes) -> None:
        # Never send b"": Deepgram reads an empty frame as the deprecated close signal.
        if audio:
            try:
                await self._socket.send_media(audio)
            except SocketFailure as exc:  # `translated`, without its generator: this runs once per frame
                raise stt_error(exc, "sending audio") from exc

    async def keep_alive(self) -> None:
        with translated("sending KeepAlive"):
            await self._socket.send_keep_alive()

    async def close_stream(self) -> None:
        with translated("sending CloseStream"):
            await self._socket.send_close_stream()

    async def events(self) -> AsyncIterator[SttEvent]:
        """Deepgram's messages until it closes normally; an abnormal close raises SttError."""
        with translated("reading results"):
            async for message in self._socket:
                for event in to_events(message):
                    yield event


class DeepgramLive(AddressedEngine):
    """Deepgram's v1 live API as a `LiveEngine`, at the primary's address unless given one. One per process: the
    SDK client is reused, not built per call."""

    max_channels = 2  # multichannel=true: both tracks of a call on one connection

    @contextlib.asynccontextmanager
    async def connect(self, *, channels: int, diarize: bool) -> AsyncIterator[LiveConnection]:
        """Open a live connection for `channels` interleaved channels (`protocol.live_options`)."""
        sdk = self._sdk()
        options = live_options(self._settings, channels=channels, diarize=diarize)
        async with contextlib.AsyncExitStack() as stack:
            connecting = sdk.listen.v1.connect(**options)
            socket = await opened(stack, connecting, self._settings.deepgram_connect_timeout_s)
            yield LiveConnection(socket)


def to_events(message: object) -> tuple[SttEvent, ...]:  # noqa: PLR0911 - one return per message type
    """One SDK message as the seam's events; () for what we do not use (unknown types arrive as None).

    Deepgram v1 settles audio two ways: a final settles its channel's audio up to its end, and Metadata, its
    last word on a stream, all the audio it processed.
    """
    if isinstance(message, ListenV1Results):
        result = _result(message)
        if result is None:
            return ()
        if result.is_final:
            return (result, SttSettled(until_s=result.end, channel=result.channel))
        return (result,)
    if isinstance(message, ListenV1Metadata):
        duration = float(message.duration or 0.0)
        return (SttMetadata(request_id=str(message.request_id), duration=duration), SttSettled(until_s=duration))
    if isinstance(message, ListenV1UtteranceEnd):
        return (SttUtteranceEnd(last_word_end=float(message.last_word_end or 0.0)),)
    if isinstance(message, ListenV1SpeechStarted):
        return (SttSpeechStarted(timestamp=float(message.timestamp or 0.0)),)
    if isinstance(message, ListenV1Error):
        return (SttServerError(description=str(message.description or message.message or "unknown error")),)
    return ()


def _result(message: ListenV1Results) -> SttResult | None:
    # Deepgram sends known types with missing fields unvalidated (None values): guard every access.
    alternatives = message.channel.alternatives if message.channel is not None else None
    if not alternatives:
        return None
    best = alternatives[0]
    words = tuple(
        Word(
            word=str(w.word),
            start=float(w.start),
            end=float(w.end),
            confidence=float(w.confidence),
            punctuated_word=w.punctuated_word,
            speaker=int(w.speaker) if w.speaker is not None else None,
            language=w.language or None,
        )
        for w in (best.words or ())
    )
    channel_index = message.channel_index or [0]
    return SttResult(
        is_final=bool(message.is_final),
        speech_final=bool(message.speech_final),
        from_finalize=bool(message.from_finalize),
        start=float(message.start or 0.0),
        duration=float(message.duration or 0.0),
        text=str(best.transcript or ""),
        confidence=float(best.confidence or 0.0),
        words=words,
        request_id=message.metadata.request_id if message.metadata is not None else None,
        channel=int(channel_index[0]),
        # language=multi: Deepgram's own list, most words first; "can be absent on audio that switches
        # languages", and then the words tell.
        languages=tuple(best.languages) if best.languages else languages_of(words),
    )
