"""The service under test: its settings for a test, and the real ASGI app served by Hypercorn on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from service.settings import Settings
from service.web.app import asgi_app
from service.web.runtime import Runtime
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.waiting import eventually


def make_settings(deepgram: FakeDeepgram | None = None, **overrides: Any) -> Settings:
    """Settings for the test tokens and `deepgram` (a closed port without it), short timeouts, `overrides` on top."""
    values: dict[str, Any] = {
        "deepgram_api_key": DEEPGRAM_KEY,
        "deepgram_url": deepgram.url if deepgram else "http://127.0.0.1:9",
        "twilio_auth_token": TWILIO_TOKEN,
        "deepgram_keepalive_s": 1.0,
        "deepgram_close_timeout_s": 3.0,
        "deepgram_connect_timeout_s": 3.0,
        # On in production (Settings' default, tested in tests/deepgram/test_live_options.py); off here so that
        # the tests that compare the exact options asked for compare only what they are about.
        "deepgram_mip_opt_out": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class RunningService:
    url: str
    port: int
    app: Any
    service: Runtime  # the app's runtime: its calls, store and spool (`ServedApp.runtime`)


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings,
    *,
    send_buffer: int | None = None,
    login_clock: Callable[[], float] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[RunningService]:
    """The real ASGI app (its proxy middleware and request guard included) served by Hypercorn on 127.0.0.1, on a
    port the OS picked.

    `host` "0.0.0.0" serves every address, as `make run` does (reachable at 127.0.0.1 still); `port` a given one
    (a restart on the port a client is reconnecting to).

    `send_buffer` sets SO_SNDBUF on the listener, which the connections it accepts inherit (Linux): a client
    that stops reading then holds the server up after a few kilobytes instead of megabytes. `login_clock` is
    the clock the page's login limits count by.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    listener.bind((host, port))
    listener.listen(128)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # Hypercorn owns (and closes) the socket from here
    config.graceful_timeout = 5
    config.accesslog = None
    served = asgi_app(settings) if login_clock is None else asgi_app(settings, login_clock=login_clock)
    app = served.asgi
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await eventually(lambda: accepts_connections(port), timeout=5.0, interval=0.01)
        yield RunningService(url=f"http://127.0.0.1:{port}", port=port, app=app, service=served.runtime)
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=15)


async def accepts_connections(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:`port` opens (it is closed again at once)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True
