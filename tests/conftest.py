"""Shared fixtures: the fake Deepgram, the real app served by Hypercorn on a real port, and its log lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog
from hypercorn.asyncio import serve
from hypercorn.config import Config

from service import logs
from service.settings import Settings
from service.web.app import asgi_app
from service.web.runtime import Runtime
from tests.helpers.fakes.deepgram_server import FakeDeepgram

TWILIO_TOKEN = "twilio-test-token"
DEEPGRAM_KEY = "test-key"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Settings come only from what each test passes: no stray variables, no .env from the checkout."""
    for name in list(os.environ):
        if name.upper() in {field.upper() for field in Settings.model_fields}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@dataclass
class LogLines:
    buffer: io.StringIO

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines() if line.strip()]

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [
            line for line in self.all() if line.get("event") == name and all(line.get(k) == v for k, v in match.items())
        ]

    def text(self) -> str:
        return self.buffer.getvalue()

    async def wait_for(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first line of event `name` matching `match`, waiting for it to be written."""
        async with asyncio.timeout(timeout):
            while True:
                found = self.events(name, **match)
                if found:
                    return found[0]
                await asyncio.sleep(0.02)


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every log line the service writes, as parsed JSON (LOG_FORMAT=json, the real renderer)."""
    buffer = io.StringIO()
    logs.configure("DEBUG", "json", stream=buffer)
    yield LogLines(buffer)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers.clear()


@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(api_key=DEEPGRAM_KEY) as fake:
        yield fake


def make_settings(deepgram: FakeDeepgram | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "deepgram_api_key": DEEPGRAM_KEY,
        "deepgram_url": deepgram.url if deepgram else "http://127.0.0.1:9",
        "twilio_auth_token": TWILIO_TOKEN,
        "deepgram_keepalive_s": 1.0,
        "deepgram_close_timeout_s": 3.0,
        "deepgram_connect_timeout_s": 3.0,
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
async def running_service(settings: Settings) -> AsyncIterator[RunningService]:
    """The real ASGI app (with ProxyFix) served by Hypercorn on 127.0.0.1, a port the OS picked."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # Hypercorn owns (and closes) the socket from here
    config.graceful_timeout = 5
    config.accesslog = None
    served = asgi_app(settings)
    app = served.asgi
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await _wait_until_listening(port)
        yield RunningService(url=f"http://127.0.0.1:{port}", port=port, app=app, service=served.runtime)
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=15)


async def _wait_until_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError("hypercorn did not start listening")


@pytest.fixture
def service_factory() -> Callable[[Settings], contextlib.AbstractAsyncContextManager[RunningService]]:
    return running_service
