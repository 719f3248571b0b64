"""Test support: one call in progress at Twilio, with every Media Stream the call has, fed from one clock.

Layer: test fake. Twilio plays a call's audio in real time, and each stream of the call gets the frames from the
moment it opened: a stream started on a live call (`POST .../Calls/{CallSid}/Streams.json`, answered by
`FakeTwilioRest`) begins at the audio the call is at, with its own `chunk`s and `timestamp`s from 1 and 0, while
the streams already open go on with theirs. `LiveCall` does that: `place` posts the voice webhook as Twilio
does, follows the TwiML's `<Start><Stream>`, and plays the call; `open_stream` is what the REST stand-in calls to
start another stream, to the URL it was given, through `route` (the router: the `wss://` URL Twilio was given, to
the address of the process that gets the connection). Messages are the simulator's (`service/simulator`); the
call's audio is the caller's (`spec.inbound`) on the inbound track and, on a stream that asks for the outbound
track, the agent's (`spec.outbound`, as long or shorter; silence without it, as the simulator sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from service import mulaw
from service.simulator.audio import frames
from service.simulator.messages import (
    TRACKS_BY_SETTING,
    CallSpec,
    connected_text,
    media_text,
    parse_twiml,
    post_url,
    start_text,
    stop_text,
    track_audio,
    twilio_signature,
    webhook_form,
)

Route = Callable[[str], str]  # the wss:// URL Twilio was given -> the ws:// URL it connects to


@dataclass
class CallStream:
    """One stream of the call, as Twilio keeps it: its SID, socket, counters and what went out on it."""

    sid: str
    url: str
    tracks: tuple[str, ...]
    parameters: dict[str, str]
    socket: ClientConnection | None = None
    first_slot: int | None = None  # the call's frame its first media carried
    slots_sent: int = 0
    sequence: int = 1
    status: str = "in-progress"  # Twilio's Stream statuses: in-progress, stopped
    close_code: int | None = None
    close_reason: str | None = None
    opened_at: float | None = None  # time.time() when its start went out
    closed_at: float | None = None
    connect_error: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class LiveCall:
    """A call Twilio is playing: its audio at real time to every open stream of it."""

    def __init__(self, spec: CallSpec, *, auth_token: str, route: Route) -> None:
        self.spec = spec
        self._auth_token = auth_token
        self.route = route
        self._frames = {track: frames(track_audio(spec, track)) for track in ("inbound", "outbound")}
        self.streams: list[CallStream] = []
        self.slot = 0  # the call's next frame
        self._loop = asyncio.get_running_loop()
        self._player: asyncio.Task[None] | None = None
        self._openings: set[asyncio.Task[None]] = set()
        self.finished = asyncio.Event()

    @property
    def call_sid(self) -> str:
        return self.spec.call_sid

    @property
    def in_progress(self) -> bool:
        return not self.finished.is_set()

    async def place(self, base_url: str, voice_url: str) -> CallStream:
        """The voice webhook as Twilio posts it (signed over `voice_url`), then the TwiML's stream, played."""
        form = webhook_form(self.spec)
        headers = {"X-Twilio-Signature": twilio_signature(self._auth_token, voice_url, form)}
        async with httpx.AsyncClient() as client:
            answer = await client.post(post_url(base_url, voice_url), data=form, headers=headers)
        answer.raise_for_status()
        request = parse_twiml(answer.text)
        assert request is not None, answer.text
        stream = self._new_stream(request.url, request.track_setting or "inbound_track", request.params)
        await self._open(stream)
        self.play()
        return stream

    def play(self) -> None:
        """Start the call's audio clock (`place` does, once its first stream is open)."""
        self._player = asyncio.create_task(self._play(), name="twilio-call")

    def open_stream_threadsafe(self, url: str, track: str, parameters: Mapping[str, str]) -> CallStream:
        """From the REST stand-in's thread: the new stream at once (Twilio answers before it connects)."""
        stream = self._new_stream(url, track, dict(parameters))
        self._loop.call_soon_threadsafe(self._start_opening, stream)
        return stream

    def stop_stream_threadsafe(self, stream: CallStream) -> None:
        """From the REST stand-in's thread: `stop` on the stream, then its socket closed."""
        stream.status = "stopped"
        self._loop.call_soon_threadsafe(self._start_closing, stream)

    async def hang_up(self) -> None:
        """The call ends now (the test is over): no more audio, every stream's socket closed."""
        if self._player is not None:
            self._player.cancel()
            await asyncio.gather(self._player, return_exceptions=True)
        for stream in self.streams:
            if stream.socket is not None:
                await stream.socket.close()
        await asyncio.gather(*self._openings, return_exceptions=True)
        self.finished.set()

    def stream(self, sid: str) -> CallStream | None:
        return next((stream for stream in self.streams if stream.sid == sid), None)

    async def wait(self, timeout: float) -> None:
        """Until the call's audio has all been played and every stream is closed."""
        async with asyncio.timeout(timeout):
            await self.finished.wait()
            for stream in self.streams:
                await stream.closed.wait()

    # --- Playing -------------------------------------------------------------------------------------------

    def _new_stream(self, url: str, track: str, parameters: dict[str, str]) -> CallStream:
        stream = CallStream("MZ" + secrets.token_hex(16), url, TRACKS_BY_SETTING[track], parameters)
        self.streams.append(stream)
        return stream

    def _start_opening(self, stream: CallStream) -> None:
        self._keep(self._open(stream))

    def _start_closing(self, stream: CallStream) -> None:
        self._keep(self._stop(stream))

    def _keep(self, work: Coroutine[Any, Any, None]) -> None:
        # asyncio keeps only weak references to tasks: these live until they finish, or `hang_up`.
        task = asyncio.ensure_future(work)
        self._openings.add(task)
        task.add_done_callback(self._openings.discard)

    async def _open(self, stream: CallStream) -> None:
        headers = {"X-Twilio-Signature": twilio_signature(self._auth_token, stream.url, {})}
        try:
            socket = await connect(self.route(stream.url), additional_headers=headers, compression=None, open_timeout=5)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            stream.connect_error, stream.status = type(exc).__name__, "stopped"  # Twilio: stream-error
            stream.closed.set()
            return
        stream.socket = socket
        try:
            await socket.send(connected_text())
            await socket.send(start_text(self.spec, stream.sid, stream.tracks, stream.parameters, stream.sequence))
        except ConnectionClosed:  # the server closed it at once (busy, or stopping): Twilio's stream-error
            self._closed(stream)
            return
        stream.first_slot, stream.opened_at = self.slot, time.time()
        self._keep(self._watch(stream))

    async def _watch(self, stream: CallStream) -> None:
        """The server's close (a <Start> stream gets nothing else from it)."""
        assert stream.socket is not None
        with contextlib.suppress(ConnectionClosed):
            async for _ in stream.socket:
                pass
        self._closed(stream)

    def _closed(self, stream: CallStream) -> None:
        if stream.socket is not None and stream.close_code is None:
            stream.close_code, stream.close_reason = stream.socket.close_code, stream.socket.close_reason
        if stream.closed_at is None:
            stream.closed_at = time.time()
        stream.status = "stopped"
        stream.closed.set()

    async def _play(self) -> None:
        started = time.monotonic() - self.slot * mulaw.FRAME_MS / 1000
        for slot in range(self.slot, len(self._frames["inbound"])):
            await asyncio.sleep(max(0.0, started + slot * mulaw.FRAME_MS / 1000 - time.monotonic()))
            for stream in self.streams:
                await self._send_frame(stream, slot)
            self.slot = slot + 1
        for stream in list(self.streams):
            if not stream.closed.is_set():
                await self._stop(stream)
        self.finished.set()

    async def _send_frame(self, stream: CallStream, slot: int) -> None:
        if stream.socket is None or stream.first_slot is None or stream.status != "in-progress":
            return
        own = slot - stream.first_slot
        for track in stream.tracks:
            track_frames = self._frames[track]
            if slot >= len(track_frames):  # a shorter track just ends, as Twilio's does
                continue
            stream.sequence += 1
            message = media_text(
                stream.sid, track, stream.sequence, chunk=own + 1, timestamp_ms=own * mulaw.FRAME_MS,
                payload=track_frames[slot],
            )  # fmt: skip
            try:
                await stream.socket.send(message)
            except ConnectionClosed:
                self._closed(stream)
                return
        stream.slots_sent += 1

    async def _stop(self, stream: CallStream) -> None:
        if stream.socket is None:
            stream.closed.set()
            return
        with contextlib.suppress(ConnectionClosed):
            await stream.socket.send(stop_text(self.spec, stream.sid, stream.sequence + 1))
        stream.status = "stopped"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await stream.socket.wait_closed()
        await stream.socket.close()
        self._closed(stream)

    def heard(self, stream: CallStream, track: str = "inbound") -> bytes:
        """The audio of `track` that went out on `stream`."""
        assert stream.first_slot is not None
        return b"".join(self._frames[track][stream.first_slot : stream.first_slot + stream.slots_sent])
