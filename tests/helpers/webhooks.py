"""A webhook receiver for tests: a real HTTP server that verifies each signature as a customer would.

`Clock` is the time both the sender and the receiver read, so a test can move it to reach a retry or a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request

from service.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "whsec-test"
T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


class Clock:
    """The tests' time: T0 until a test moves `now` (to reach a retry, say); `real()` is the wall clock."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    @staticmethod
    def real() -> Callable[[], datetime.datetime]:
        return lambda: datetime.datetime.now(datetime.UTC)


class Receiver:
    """A real HTTP receiver: verifies every signature, fails the first `failures` requests, records the rest.

    With `answer_when`, each request waits for that event before it is answered (`holding` says one is waiting).
    """

    def __init__(
        self, clock: Callable[[], datetime.datetime], failures: int = 0, *, answer_when: asyncio.Event | None = None
    ) -> None:
        self.clock = clock
        self.failures = failures
        self.answer_when = answer_when
        self.holding = asyncio.Event()
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.requests = 0
        self.arrived = asyncio.Event()
        self.app = Quart("receiver")
        self.app.add_url_rule("/hook", view_func=self.hook, methods=["POST"])

    async def hook(self) -> tuple[str, int]:
        self.requests += 1
        body = await request.get_data()
        if self.answer_when is not None:
            self.holding.set()
            await self.answer_when.wait()
        why = verify(
            SECRET,
            timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
            body=body,
            signature=request.headers.get(SIGNATURE_HEADER, ""),
            now=self.clock().timestamp(),  # the tests' clock is the sender's and the receiver's
        )
        if why is not None:
            self.refused.append(why)
            return why, 401
        if self.failures:
            self.failures -= 1
            return "try later", 503
        self.accepted.append(json.loads(body))
        self.arrived.set()
        return "", 204

    async def wait_for(self, event_type: str, timeout: float = 10.0) -> None:
        """Until an event of `event_type` has been accepted."""
        async with asyncio.timeout(timeout):
            while not any(event["type"] == event_type for event in self.accepted):
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[str]:
    """`receiver` served by Hypercorn on 127.0.0.1, a port the OS picked; yields the hook's URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    stop = asyncio.Event()
    # The socket listens already, so a request sent before Hypercorn's first accept() waits in the backlog.
    task = asyncio.create_task(serve(receiver.app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        stop.set()
        await task
