"""I/O adapter (layer: deepgram): Deepgram Flux (`/v2/listen`) through deepgram-sdk, as the seam's `LiveEngine`.

Flux is turn-based and mono: one channel a connection (`max_channels = 1`, so the call session gives each track
its own), and its `TurnInfo` messages become the seam's events in `flux_protocol.FluxTurns`. This adapter only
opens, sends, reads and translates errors (`sockets.py`, shared with the v1 adapter `live.py`).

Flux has no KeepAlive message: audio keeps a connection open, silence too, while the WebSocket's own pings
(which the SDK's client sends every 20 s) only keep the TCP path warm. So `keep_alive` sends 100 ms of mu-law
silence, and a `SilenceClock` takes it back out of every time Flux reports: the pipeline sees only its own audio.
After CloseStream, Flux sends its last turns and closes with 1000, without v1's Metadata: the adapter then says
that all audio sent is settled, with the request id (`ListenV2Connected`'s, or the upgrade's `dg-request-id`).
https://developers.deepgram.com/docs/flux/quickstart
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from deepgram.listen.v2 import (
    ListenV2Connected,
    ListenV2FatalError,
    ListenV2TurnInfo,
    ListenV2TurnInfoWordsItem,
    ListenV2Warning,
)
from deepgram.listen.v2.socket_client import AsyncV2SocketClient

from service.deepgram.flux_protocol import (
    KEEPALIVE_SILENCE,
    FluxTurns,
    FluxWord,
    SilenceClock,
    TurnInfo,
    fatal_error_is_final,
    flux_options,
)
from service.deepgram.sockets import AddressedEngine, SocketFailure, opened, stt_error, translated
from service.errors import SttFailure, SttRejected, SttUnavailable
from service.stt.events import SttEvent, SttServerError


class FluxConnection:
    """One open Flux socket (the seam's `LiveStream`): audio out, turns in, on the pipeline's audio timeline."""

    def __init__(self, socket: AsyncV2SocketClient, *, interim_results: bool, request_id: str | None) -> None:
        self._socket = socket
        self._clock = SilenceClock()
        self._turns = FluxTurns(self._clock, interim_results=interim_results)
        self._turns.request_id = request_id
        self._closing = False  # CloseStream sent: a normal close then means every turn has ended

    async def send_audio(self, audio: bytes) -> None:
        if audio:
            self._clock.audio(len(audio))  # counted first: Flux's answers to it may come before the await returns
            try:
                await self._socket.send_media(audio)
            except SocketFailure as exc:  # `translated`, without its generator: this runs once per frame
                raise stt_error(exc, "sending audio") from exc

    async def keep_alive(self) -> None:
        """100 ms of silence: Flux has no KeepAlive message, and closes a connection that hears nothing."""
        self._clock.silence(len(KEEPALIVE_SILENCE))
        with translated("sending silence to keep Flux open"):
            await self._socket.send_media(KEEPALIVE_SILENCE)

    async def close_stream(self) -> None:
        self._closing = True
        with translated("sending CloseStream"):
            await self._socket.send_close_stream()

    async def events(self) -> AsyncIterator[SttEvent]:
        """Flux's turns until it closes normally; an abnormal close, or Flux's `Error`, raises SttError."""
        turns = self._turns
        with translated("reading results"):
            async for message in self._socket:
                for event in self._meaning(message):
                    yield event
        if self._closing:
            for event in turns.closed():
                yield event

    def _meaning(self, message: object) -> tuple[SttEvent, ...]:
        if isinstance(message, ListenV2TurnInfo):
            try:
                info = _turn_info(message)
            except (TypeError, ValueError) as exc:  # a field of the wrong type: this message is skipped, not the call
                return (SttServerError(description=f"Flux sent a TurnInfo that cannot be read ({exc}): skipped"),)
            return self._turns.on_turn(info)
        if isinstance(message, ListenV2Connected):
            self._turns.request_id = str(message.request_id or "") or self._turns.request_id
        elif isinstance(message, ListenV2Warning):
            return (SttServerError(description=f"{message.code}: {message.description}"),)
        elif isinstance(message, ListenV2FatalError):
            code = str(message.code or "UNKNOWN")
            reason = f"Flux sent Error {code}: {message.description}"
            if fatal_error_is_final(code):
                raise SttRejected(reason, failure=SttFailure.OTHER)
            raise SttUnavailable(reason, failure=SttFailure.OTHER)
        return ()  # Configure answers (we send no Configure), binary frames, unknown types (None)


def _turn_info(message: ListenV2TurnInfo) -> TurnInfo:
    # Deepgram sends known types with missing fields unvalidated (None values): guard every access.
    return TurnInfo(
        event=str(message.event),
        turn_index=int(message.turn_index or 0),
        start=float(message.audio_window_start or 0.0),
        end=float(message.audio_window_end or 0.0),
        transcript=str(message.transcript or ""),
        words=tuple(_word(word) for word in (message.words or ()) if word.word),  # a word with no text is none
        languages=tuple(message.languages or ()),
        request_id=message.request_id,
    )


def _word(word: ListenV2TurnInfoWordsItem) -> FluxWord:
    language = getattr(word, "language", None)  # not in the SDK's model; kept when Flux sends it (extra="allow")
    return FluxWord(
        word=str(word.word),
        confidence=float(word.confidence or 0.0),
        start=float(word.start) if word.start is not None else None,
        end=float(word.end) if word.end is not None else None,
        language=str(language) if language else None,
    )


class DeepgramFlux(AddressedEngine):
    """Deepgram Flux as a `LiveEngine`, at the primary's address unless given one. One per process: the SDK client
    is reused, not built per call."""

    max_channels = 1  # Flux transcribes one mono channel a connection

    @contextlib.asynccontextmanager
    async def connect(self, *, channels: int, diarize: bool) -> AsyncIterator[FluxConnection]:
        """Open a Flux connection for one channel (`flux_protocol.flux_options`)."""
        sdk = self._sdk()
        if channels != 1 or diarize:  # the session asks neither of an engine with max_channels 1 (start-up refuses
            # DEEPGRAM_DIARIZE on Flux): a caller that does is a bug, said rather than transcribed wrongly
            raise SttRejected(f"Flux takes one channel without diarization, not channels={channels}, diarize={diarize}")
        settings = self._settings
        async with contextlib.AsyncExitStack() as stack:
            connecting = sdk.listen.v2.connect(**flux_options(settings))
            socket = await opened(stack, connecting, settings.deepgram_connect_timeout_s)
            yield FluxConnection(
                socket, interim_results=settings.deepgram_interim_results, request_id=_upgrade_request_id(socket)
            )


def _upgrade_request_id(socket: AsyncV2SocketClient) -> str | None:
    """The `dg-request-id` of the 101 answer, until `ListenV2Connected` says it (the SDK keeps the legacy
    websockets protocol, whose `response_headers` has it, as `_websocket`: deepgram-sdk 7.17 is pinned)."""
    headers = getattr(getattr(socket, "_websocket", None), "response_headers", None)
    value = headers.get("dg-request-id") if headers is not None else None
    return str(value) if value else None
