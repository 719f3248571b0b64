"""A hand-driven Twilio stream for tests that need control the simulator does not give (pauses, bad input)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping

from websockets.asyncio.client import ClientConnection, connect

from service.simulator.messages import CallSpec, build_messages, twilio_signature
from service.twilio.stream_tokens import PARAMETER, Claim, Purpose, derive_key, issue, numbers
from tests.helpers.credentials import TWILIO_TOKEN

TRACK_SETTINGS = {
    ("inbound",): "inbound_track",
    ("outbound",): "outbound_track",
    ("inbound", "outbound"): "both_tracks",
}


def token_parameters(
    spec: CallSpec, tracks: tuple[str, ...] = ("inbound",), *, issued_at: int | None = None, **extra: str
) -> dict[str, str]:
    """The stream's <Parameter>s as /voice gives them: a stream token for `spec`'s call (signed with the tests'
    TWILIO_AUTH_TOKEN, like the service's own) and for the `from` and `to` among `extra`, and `extra`."""
    from_number, to_number = numbers(extra)
    claim = Claim(
        purpose=Purpose.VOICE,
        account_sid=spec.account_sid,
        call_sid=spec.call_sid,
        track=TRACK_SETTINGS[tracks],
        issued_at=int(time.time()) if issued_at is None else issued_at,
        from_number=from_number,
        to_number=to_number,
    )
    return {PARAMETER: issue(derive_key(TWILIO_TOKEN), claim), **extra}


async def open_media(
    base_url: str, *, headers: Mapping[str, str] | None = None, signed_url: str | None = None
) -> ClientConnection:
    """Connect to /media as Twilio does: signed over the wss:// URL (by default the server's own host)."""
    host = base_url.split("://", 1)[1]
    signature = twilio_signature(TWILIO_TOKEN, signed_url or f"wss://{host}/media", {})
    return await connect(
        f"ws://{host}/media",
        additional_headers={"X-Twilio-Signature": signature, **(headers or {})},
        compression=None,
        open_timeout=5,
    )


class TwilioStream:
    """connected and start already sent; send the call's media in steps, then stop."""

    def __init__(self, socket: ClientConnection, messages: list[str]) -> None:
        self.socket = socket
        self._media = [m for m in messages if json.loads(m)["event"] == "media"]
        self._stop = messages[-1]
        self._sent = 0

    async def send_media(self, frames: int | None = None) -> None:
        end = len(self._media) if frames is None else min(len(self._media), self._sent + frames)
        for message in self._media[self._sent : end]:
            await self.socket.send(message)
        self._sent = end

    async def stop(self) -> None:
        await self.socket.send(self._stop)


@contextlib.asynccontextmanager
async def streaming(
    base_url: str, spec: CallSpec, tracks: tuple[str, ...] = ("inbound",)
) -> AsyncIterator[TwilioStream]:
    """A signed stream of `tracks` for `spec`; on exit: the rest of the media, stop, and the server's close."""
    parameters = token_parameters(spec, tracks, **{"from": spec.from_number})
    messages = build_messages(spec, "MZ" + spec.call_sid[2:], list(tracks), parameters)
    socket = await open_media(base_url)
    try:
        for message in messages[:2]:  # connected, start
            await socket.send(message)
        stream = TwilioStream(socket, messages)
        yield stream
        await stream.send_media()
        await stream.stop()
        await socket.wait_closed()
    finally:
        await socket.close()
