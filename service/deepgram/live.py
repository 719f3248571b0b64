"""I/O adapter (layer: deepgram): Deepgram's v1 live API through deepgram-sdk, as the seam's `LiveEngine`.

`prerecorded.py` is the pre-recorded client. The SDK 7.x live client has no reconnect and no KeepAlive of its
own: Deepgram leaves both to the client (https://developers.deepgram.com/docs/audio-keep-alive,
https://developers.deepgram.com/docs/recovering-from-connection-errors-and-timeouts-when-live-streaming-audio).
This adapter only opens, sends, reads and translates errors once, into `SttRejected` / `SttUnavailable` (HTTP
statuses through `protocol.status_error`, shared with the pre-recorded client). Policy lives in `calls/`: when
to reconnect in `calls/pipeline/track.py`, when to send KeepAlive and CloseStream in `calls/pipeline/sender.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import websockets.exceptions
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.listen.v1 import (
    ListenV1Error,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from deepgram.listen.v1.socket_client import AsyncV1SocketClient

from service.deepgram.environment import DeepgramAddress, primary_address
from service.deepgram.protocol import is_fatal_close, live_options, status_error
from service.errors import SttFailure, SttRejected, SttUnavailable
from service.settings import Settings
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
            with _translated("sending audio"):
                await self._socket.send_media(audio)

    async def keep_alive(self) -> None:
        with _translated("sending KeepAlive"):
            await self._socket.send_keep_alive()

    async def close_stream(self) -> None:
        with _translated("sending CloseStream"):
            await self._socket.send_close_stream()

    async def events(self) -> AsyncIterator[SttEvent]:
        """Deepgram's messages until it closes normally; an abnormal close raises SttError."""
        with _translated("reading results"):
            async for message in self._socket:
                for event in to_events(message):
                    yield event


class DeepgramLive:
    """Deepgram's v1 live API as a `LiveEngine`. One per process: the SDK client is reused, not built per call."""

    max_channels = 2  # multichannel=true: both tracks of a call on one connection

    def __init__(self, settings: Settings, address: DeepgramAddress | None = None) -> None:
        """Deepgram at `address` (the primary, DEEPGRAM_URL and DEEPGRAM_API_KEY, unless given)."""
        self._settings = settings
        self._address = address = address or primary_address(settings)
        key = address.api_key
        self._client = (
            _with_fixed_headers(AsyncDeepgramClient(api_key=key.get_secret_value(), environment=address.environment()))
            if key is not None
            else None
        )

    @property
    def name(self) -> str:
        return self._address.name

    @property
    def configured(self) -> bool:
        return self._client is not None

    @contextlib.asynccontextmanager
    async def connect(self, *, channels: int, diarize: bool) -> AsyncIterator[LiveConnection]:
        """Open a live connection for `channels` interleaved channels (`protocol.live_options`)."""
        options = live_options(self._settings, channels=channels, diarize=diarize)
        if self._client is None:
            raise SttRejected(f"{self._address.key_setting} is not set", failure=SttFailure.NO_KEY)
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(self._settings.deepgram_connect_timeout_s):
                    socket = await stack.enter_async_context(self._client.listen.v1.connect(**options))
            except TimeoutError as exc:
                raise SttUnavailable(
                    f"Deepgram did not open the connection within {self._settings.deepgram_connect_timeout_s:g} s",
                    failure=SttFailure.CONNECT_TIMEOUT,
                ) from exc
            except ApiError as exc:
                raise status_error(exc.status_code, at_upgrade=True) from exc
            except OSError as exc:
                raise SttUnavailable(
                    f"cannot reach Deepgram: {type(exc).__name__}: {exc.strerror or exc}",
                    failure=SttFailure.UNREACHABLE,
                ) from exc
            except websockets.exceptions.WebSocketException as exc:
                raise SttUnavailable(
                    f"Deepgram handshake failed: {type(exc).__name__}", failure=SttFailure.HANDSHAKE
                ) from exc
            yield LiveConnection(socket)


def _with_fixed_headers(client: AsyncDeepgramClient) -> AsyncDeepgramClient:
    """The client, with its request headers built once instead of on every connect.

    The SDK's `get_headers` reads its own version from the package metadata (importlib.metadata parses the
    METADATA file) and asks `platform` each time: 0.7-0.9 ms per connection, 55-70 ms of one core when 40
    both-track calls (80 connections) start together. The headers never change for a client, so each connect
    gets a copy of the first (a copy: the SDK adds to the dict it is given).
    """
    wrapper = client._client_wrapper  # deepgram-sdk 7.17 (pinned); tests/deepgram checks the headers it sends
    headers = wrapper.get_headers()
    wrapper.get_headers = lambda: dict(headers)  # type: ignore[method-assign]
    return client


@contextlib.contextmanager
def _translated(doing: str) -> Iterator[None]:
    """Turn a websockets close into SttRejected/SttUnavailable with Deepgram's code and reason."""
    try:
        yield
    except websockets.exceptions.ConnectionClosedOK as exc:
        raise SttUnavailable(f"Deepgram closed the connection while {doing}", close_code=_code(exc)) from exc
    except websockets.exceptions.ConnectionClosed as exc:
        code = _code(exc)
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        said = f"close {code} {reason}".strip() if code is not None else "dropped the connection (no close frame)"
        error_type = SttRejected if is_fatal_close(code) else SttUnavailable
        raise error_type(f"Deepgram {said} while {doing}", close_code=code or 1006) from exc
    except OSError as exc:
        raise SttUnavailable(f"network error while {doing}: {type(exc).__name__}", failure=SttFailure.NETWORK) from exc


def _code(exc: websockets.exceptions.ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None


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
