"""Simulator, I/O part: place a call against a running service as Twilio would.

`simulate_call` POSTs the voice webhook, reads the TwiML, opens the Media Stream WebSocket and paces the
prepared messages (`messages.py`) on an absolute clock, recording exactly what went out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from service import mulaw
from service.simulator.messages import (
    CallResult,
    CallSpec,
    Outgoing,
    SimulatorError,
    StreamRequest,
    connect_url,
    new_stream_sid,
    parse_twiml,
    plan_messages,
    post_url,
    stream_parameters,
    twilio_signature,
    webhook_form,
    with_headers,
)

WEBHOOK_TIMEOUT_S = 15.0  # how long Twilio waits for a voice webhook before failing the call
OPEN_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 5.0  # after `stop` (or our own close), how long the server gets to close the socket
MEDIA_PATH = "/media"  # where the service takes streams (its TwiML says the same)
MAX_INCOMING_BYTES = 64 * 1024  # a <Start> stream is one-way: the server has nothing big to send us


@dataclass
class _Progress:
    """What has gone out so far; mutated by the sender, so a cancelled sender still leaves an exact record."""

    sent: dict[str, bytearray]
    frames_sent: dict[str, int]
    all_sent: bool = False


async def simulate_call(
    base_url: str,
    spec: CallSpec,
    *,
    auth_token: str | None,
    voice_path: str = "/voice",
    voice_url: str | None = None,
    sign: bool = True,
    signature_override: str | None = None,
    ws_headers: Mapping[str, str] | None = None,
    http_headers: Mapping[str, str] | None = None,
) -> CallResult:
    """Place `spec` against the service at `base_url` as Twilio would, and report what happened.

    voice_url: the webhook URL as configured in Twilio (what gets signed), e.g. the public https:// one;
    the POST goes to its path on base_url. Default: base_url + voice_path.
    Signatures are sent when `sign` and `auth_token` are both set; `signature_override` replaces the
    computed value on both requests; a signature header in `http_headers`/`ws_headers` replaces it on that
    request only.
    Raises SimulatorError when the service is unreachable or answers TwiML Twilio could not follow.
    """
    signed_voice_url = voice_url or f"{base_url.rstrip('/')}{voice_path}"
    form = webhook_form(spec)
    signature = _signature(auth_token, signed_voice_url, form, sign=sign, override=signature_override)
    headers = with_headers({"X-Twilio-Signature": signature} if signature else {}, http_headers)
    status, twiml = await _post_webhook(post_url(base_url, signed_voice_url), form, headers)
    request = parse_twiml(twiml) if 200 <= status < 300 else None  # Twilio follows TwiML only from a 2xx
    result = _result(spec, status, twiml, request)
    if request is None:
        return result
    signature = _signature(auth_token, request.url, {}, sign=sign, override=signature_override)
    upgrade_headers = with_headers({"x-twilio-signature": signature} if signature else {}, ws_headers)
    assert result.stream_sid is not None
    planned = plan_messages(spec, result.stream_sid, request.tracks, stream_parameters(spec, request.params))
    await _stream(connect_url(base_url, request.url), upgrade_headers, spec, planned, result)
    return result


async def replay_stream(
    base_url: str,
    spec: CallSpec,
    *,
    auth_token: str,
    stream_sid: str,
    custom_parameters: Mapping[str, str],
    track_setting: str = "inbound_track",
    stream_url: str | None = None,
    ws_headers: Mapping[str, str] | None = None,
) -> CallResult:
    """Open /media without any /voice webhook, as someone holding a captured upgrade signature could.

    Twilio signs the upgrade over the stream URL alone, so the signature is the same for every call: this is
    that signature, with a `start` that claims `spec.call_sid`, `stream_sid` and whatever parameters are given.
    `stream_url`: the URL the captured signature was made for (default: base_url's host); `ws_headers` are
    added to the upgrade (a `Host` among them is sent as the Host, see `_stream`).
    """
    stream_url = stream_url or f"wss://{urlsplit(base_url).netloc}{MEDIA_PATH}"
    request = StreamRequest(url=stream_url, track_setting=track_setting, params=dict(custom_parameters))
    result = _result(spec, 0, "", request)
    result.stream_sid = stream_sid
    result.replayed = True
    headers = {"x-twilio-signature": twilio_signature(auth_token, stream_url, {}), **(ws_headers or {})}
    planned = plan_messages(spec, stream_sid, request.tracks, stream_parameters(spec, request.params))
    await _stream(connect_url(base_url, stream_url), headers, spec, planned, result)
    return result


def _signature(
    auth_token: str | None, url: str, params: Mapping[str, str], *, sign: bool, override: str | None
) -> str | None:
    if not sign or auth_token is None:
        return None
    return override if override is not None else twilio_signature(auth_token, url, params)


def _result(spec: CallSpec, status: int, twiml: str, request: StreamRequest | None) -> CallResult:
    tracks = request.tracks if request else ()
    return CallResult(
        voice_status=status,
        twiml=twiml,
        stream_url=request.url if request else None,
        stream_params=dict(request.params) if request else {},
        track_setting=request.track_setting if request else None,
        stream_sid=new_stream_sid() if request else None,
        sent={track: bytearray() for track in tracks},
        frames_sent=dict.fromkeys(tracks, 0),
        close_code=None,
        close_reason=None,
        upgrade_status=None,
        spec_call_sid=spec.call_sid,
    )


async def _post_webhook(url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> tuple[int, str]:
    try:
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S) as client:
            response = await client.post(url, data=dict(form), headers=dict(headers))
    except httpx.HTTPError as exc:
        raise SimulatorError(f"POST {url} failed: {exc!r}") from exc
    return response.status_code, response.text


async def _stream(
    url: str, headers: Mapping[str, str], spec: CallSpec, planned: list[Outgoing], result: CallResult
) -> None:
    """Open the stream, send the plan, wait for the close; fills in `result`'s stream fields.

    A `Host` among `headers` is sent as the upgrade's Host while the socket still goes to `url`'s address, as
    a proxy that routes by Host (Heroku's router, ngrok) forwards it.
    """
    sent = {name: value for name, value in headers.items() if name.lower() != "host"}
    host = next((value for name, value in headers.items() if name.lower() == "host"), None)
    address: dict[str, object] = {}
    if host is not None:
        target = urlsplit(url)
        address = {"host": target.hostname, "port": target.port, "proxy": None}
        url = target._replace(netloc=host).geturl()
    try:
        socket = await connect(
            url,
            additional_headers=sent,
            **address,  # type: ignore[arg-type]
            compression=None,  # Twilio does not negotiate permessage-deflate
            max_size=MAX_INCOMING_BYTES,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_WAIT_S,
            ping_interval=None,  # keep the wire to the messages Twilio documents
        )
    except InvalidStatus as exc:
        result.upgrade_status = exc.response.status_code
        return
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        raise SimulatorError(f"WebSocket {url} failed to open: {exc!r}") from exc
    progress = _Progress(result.sent, result.frames_sent)
    try:
        result.closed_by = await _run_stream(
            socket,
            planned,
            spec.speed,
            progress,
            stop_planned=spec.send_stop and spec.send_start,
            hold_open_s=spec.hold_open_s,
        )
    finally:
        await socket.close()
    result.all_sent = progress.all_sent
    result.close_code, result.close_reason = socket.close_code, socket.close_reason


async def _run_stream(
    socket: ClientConnection,
    planned: list[Outgoing],
    speed: float,
    progress: _Progress,
    *,
    stop_planned: bool,
    hold_open_s: float = 0.0,
) -> str:
    """Send while watching for the server's close; returns who closed the socket first."""
    sender = asyncio.ensure_future(_send_all(socket, planned, speed, progress))
    closed = asyncio.ensure_future(_until_closed(socket))
    try:
        await asyncio.wait({sender, closed}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():
            sender.result()  # re-raise anything unexpected from the sender
        if closed.done() or not progress.all_sent:
            return "server"  # it closed before we were through (the sender stops at ConnectionClosed)
        if stop_planned or hold_open_s:
            # After `stop` the server should close; a held socket waits for the server to give up on it.
            await asyncio.wait({closed}, timeout=max(CLOSE_WAIT_S if stop_planned else 0.0, hold_open_s))
            if closed.done():
                return "server"
        await socket.close()  # no stop (as when Twilio drops), or the server kept the socket open
        return "simulator"
    finally:
        for task in (sender, closed):
            task.cancel()
        # wait() never raises the tasks' CancelledError, so our own cancellation still propagates.
        await asyncio.wait({sender, closed})


async def _send_all(socket: ClientConnection, planned: list[Outgoing], speed: float, progress: _Progress) -> None:
    """Send each prepared message at its slot on an absolute clock, so sleep overshoot never accumulates."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for message in planned:
            if message.slot is not None and speed > 0:
                await asyncio.sleep(max(0.0, started + message.slot * mulaw.FRAME_S / speed - loop.time()))
            await socket.send(message.text)
            if message.track is not None:
                progress.sent[message.track] += message.payload
                progress.frames_sent[message.track] += 1
    except ConnectionClosed:
        return  # the server closed first; _until_closed reports it
    progress.all_sent = True


async def _until_closed(socket: ClientConnection) -> None:
    """Read (and drop) anything the server sends, until the socket has fully closed."""
    try:
        while True:
            await socket.recv()
    except ConnectionClosed:
        await socket.wait_closed()
