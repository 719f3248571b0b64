"""What an unauthenticated client on the internet can do to the service, and what it cannot (issue 19's probe).

The service answers on the event loop that forwards every call's audio, so a request is judged before its body is
read (web/guard.py, web/request_rules.py) and the page is served on https only behind a proxy (web/proxy.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service import mulaw
from service.refusals import REFUSAL_BURST
from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.processes import start_web
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import streaming
from tests.helpers.waiting import eventually

HUGE = 15_000_000  # the probe's body: 15 MB of `a=1&a=1&...`, under Quart's own 16 MB limit


def _post_huge(port: int, path: str, headers: str, *, chunked: bool = False) -> int:
    """POST 15 MB of form to `path` from a plain socket (its own thread), as an attacker would; the status line's
    code, read while the body is still being sent (0 when no answer came)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}"
            f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
        )
        sock.sendall(head.encode())
        answer = bytearray()

        def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := sock.recv(4096):
                    answer.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        piece = b"a=1&" * 16_384  # 64 KiB
        with contextlib.suppress(OSError):  # the server closes the connection once it has answered
            for _ in range(HUGE // len(piece)):
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
                if answer:
                    break
        reader.join(timeout=10)
    status = bytes(answer).split(b" ", 2)
    return int(status[1]) if len(status) > 1 and status[1].isdigit() else 0


def _frame_delays(deepgram: FakeDeepgram, sent_at: list[float]) -> list[float]:
    """Each frame's time from Twilio's side to Deepgram's: when the byte that ends it arrived, less when it left."""
    [connection] = deepgram.connections
    delays, received, frame = [], 0, 0
    for size, arrived in zip(map(len, connection.audio_frames), connection.audio_times, strict=True):
        received += size
        while frame < len(sent_at) and (frame + 1) * mulaw.FRAME_BYTES <= received:
            delays.append(arrived - sent_at[frame])
            frame += 1
    return delays


async def test_huge_forms_are_refused_unread_while_a_call_streams(deepgram: FakeDeepgram, tmp_path: Path) -> None:
    """Ten 15 MB forms at once, to /voice (unsigned, or signed by anyone and chunked) and /login, are refused
    before they are parsed, and a live call's frames keep reaching Deepgram within 50 ms (main took 12.7 s to
    forward 5 s of audio under four of them)."""
    process, url = await start_web(deepgram, tmp_path)
    port = int(url.rsplit(":", 1)[1])
    attacks = [
        *[("/voice", "", False, 403)] * 4,
        *[("/voice", "X-Twilio-Signature: forged=\r\n", True, 413)] * 2,
        *[("/login", "", False, 413)] * 4,
    ]
    spec = CallSpec(inbound=call_audio(71, 3.0), speed=1)
    sent_at: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        async with streaming(url, spec) as stream:
            frames = len(spec.inbound) // mulaw.FRAME_BYTES
            await stream.send_media(25)  # the call is under way (its Deepgram connection open) before the attack
            sent_at.extend(loop.time() for _ in range(25))
            attack = asyncio.gather(
                *(
                    asyncio.to_thread(_post_huge, port, path, head, chunked=chunked)
                    for path, head, chunked, _ in attacks
                )
            )
            start = loop.time()
            for index in range(25, frames):
                await asyncio.sleep(max(0.0, start + (index - 25) * 0.02 - loop.time()))
                sent_at.append(loop.time())
                await stream.send_media(1)
            statuses = await attack
        await eventually(lambda: len(deepgram.connections[0].audio) >= frames * mulaw.FRAME_BYTES)
    finally:
        process.terminate()
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert statuses == [status for *_, status in attacks]
    delays = _frame_delays(deepgram, sent_at)[25:]
    assert len(delays) == frames - 25
    assert statistics.quantiles(delays, n=20)[-1] < 0.050, f"p95 forward delay {max(delays):.3f} s at worst"
    log = stdout.decode()
    errors = [line for line in log.splitlines() if '"level": "error"' in line]
    assert not errors, "\n".join(errors)
    lines = [json.loads(line) for line in log.splitlines()]
    login = [line for line in lines if line["event"] == "http.refused"]
    assert [line["why"] for line in login] == ["a body of 15000000 bytes; at most 4096 are read here"] * 4
    # Seven /voice refusals (start_web's own unsigned probe too) from one address: a burst, then a count.
    voice = [line for line in lines if line["event"] == "voice.refused"]
    assert len(voice) == REFUSAL_BURST
    assert {line["address"] for line in voice + login} == {"127.0.0.1"}


async def test_a_trickled_body_is_cut(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """A body sent a byte at a time is answered 408 once HTTP_BODY_TIMEOUT_S has passed, and its socket closed."""
    async with running_service(make_settings(deepgram, http_body_timeout_s=1.0)) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        answer = asyncio.ensure_future(reader.read())  # everything until the server closes
        for _ in range(100):
            if answer.done():
                break
            writer.write(b"a")
            await asyncio.wait([answer], timeout=0.2)
        body = await asyncio.wait_for(answer, timeout=5)
        writer.close()
    assert body.startswith(b"HTTP/1.1 408"), body
    [refused] = log_lines.events("http.refused")
    assert refused["status"] == 408
    assert refused["why"] == "the body did not arrive within 1 s"


@contextlib.asynccontextmanager
async def held_requests(port: int, count: int, head: bytes = b"POST /login HTTP/1.1\r\n") -> AsyncIterator[None]:
    """`count` requests (to /login unless `head` says otherwise) whose bodies never finish arriving, held open
    until the block ends."""
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + b"Host: x\r\nContent-Length: 100\r\n\r\na")
        writers.append(writer)
    try:
        yield
    finally:
        for writer in writers:
            writer.close()


async def test_requests_held_open_cannot_keep_twilio_out(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Past HTTP_MAX_IN_PROGRESS the page, the API and the health checks get 503 with Retry-After at once, but
    Twilio's webhook has a pool of its own: a call still gets its TwiML and streams."""
    settings = make_settings(deepgram, http_max_in_progress=8, http_body_timeout_s=30.0)
    spec = CallSpec(inbound=call_audio(72, 0.5), speed=0)
    async with running_service(settings) as service, httpx.AsyncClient() as client:
        async with held_requests(service.port, 8):
            busy = await eventually(
                lambda: _status_if(client, f"{service.url}/healthz", 503), timeout=5.0, interval=0.02
            )
            result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        healthy = await eventually(lambda: _status_if(client, f"{service.url}/healthz", 200), timeout=5.0)
    assert busy.headers["Retry-After"] == "1"
    assert "8 other requests are in progress" in busy.text
    assert (result.voice_status, result.close_code) == (200, 1000)
    assert healthy.status_code == 200
    assert log_lines.events("http.refused", status=503)


async def test_forged_webhooks_trickling_their_bodies_cannot_fill_twilios_pool(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """/voice requests with any X-Twilio-Signature whose bodies never arrive hold a connection each, not a slot of
    the /voice pool (twice MAX_CALLS): Twilio's own webhook still gets its TwiML and the call streams."""
    settings = make_settings(deepgram, max_calls=1, http_body_timeout_s=30.0)
    spec = CallSpec(inbound=call_audio(73, 0.5), speed=0)
    forged = (
        b"POST /voice HTTP/1.1\r\nX-Twilio-Signature: forged=\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    )
    async with running_service(settings) as service, held_requests(service.port, 3, head=forged):
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
    assert (result.voice_status, result.close_code) == (200, 1000)
    assert not log_lines.events("http.refused", status=503)


async def _status_if(client: httpx.AsyncClient, url: str, status: int) -> httpx.Response | None:
    response = await client.get(url)
    return response if response.status_code == status else None


async def test_multipart_is_refused_where_nothing_takes_it(deepgram: FakeDeepgram) -> None:
    async with running_service(make_settings(deepgram)) as service, httpx.AsyncClient() as client:
        response = await client.post(f"{service.url}/login", files={"password": ("p", b"x" * 100)})
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("method", "path", "status", "location"),
    [
        ("GET", "/login?next=%2F", 308, "https://calls.example.org/login?next=%2F"),
        ("GET", "/", 308, "https://calls.example.org/"),
        ("POST", "/login", 403, None),
    ],
)
async def test_the_page_over_plain_http_behind_a_proxy_goes_to_https(
    deepgram: FakeDeepgram, method: str, path: str, status: int, location: str | None
) -> None:
    """A password typed at http://.../login would cross the network in clear: the page redirects to https, and
    its form is never read over http."""
    proxy = {"Host": "calls.example.org", "X-Forwarded-Proto": "http"}
    async with running_service(make_settings(deepgram, api_token="t" * 32)) as service, httpx.AsyncClient() as client:
        response = await client.request(method, f"{service.url}{path}", headers=proxy, data={"password": "x"})
    assert response.status_code == status
    assert response.headers.get("Location") == location


async def test_https_answers_carry_hsts_and_local_http_is_left_alone(deepgram: FakeDeepgram) -> None:
    async with running_service(make_settings(deepgram, api_token="t" * 32)) as service, httpx.AsyncClient() as client:
        secure = await client.get(f"{service.url}/login", headers={"X-Forwarded-Proto": "https"})
        local = await client.get(f"{service.url}/login")
        api = await client.get(f"{service.url}/api/calls", headers={"X-Forwarded-Proto": "http"})
    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert local.status_code == 200
    assert "Strict-Transport-Security" not in local.headers
    assert api.status_code == 401  # the API is not redirected: a client's bearer token has already crossed
