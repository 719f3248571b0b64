"""A webhook receiver for tests: a real HTTP server that verifies each signature as a customer would, and checks
every event it accepts against its type's schema in service/web/openapi.json (`event_problem`).

`Clock` is the time both the sender and the receiver read, so a test can move it to reach a retry or a replay.
An event that does not match its schema is kept in `Receiver.invalid`; `wait_for` and the end of `serving`
fail the test on it, so every test that receives webhooks checks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from jsonschema import Draft202012Validator
from quart import Quart, request
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.helpers.paths import ROOT

SECRET = "whsec-test"
OPENAPI = ROOT / "service" / "web" / "openapi.json"
_DOCUMENT = "urn:callscribe:openapi"  # the document's own address, which its "#/components/..." refs are read in


@functools.cache
def _validators() -> dict[str, Draft202012Validator]:
    """A validator per event type, from `WebhookEvent`'s discriminator: `type` to its event's schema."""
    document = json.loads(OPENAPI.read_text())
    registry: Registry[Any] = Registry().with_resource(_DOCUMENT, Resource(document, specification=DRAFT202012))
    mapping = document["components"]["schemas"]["WebhookEvent"]["discriminator"]["mapping"]
    return {
        event_type: Draft202012Validator(
            {"$ref": _DOCUMENT + pointer}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        for event_type, pointer in mapping.items()
    }


def event_problem(event: Any) -> str | None:
    """Why `event` is not a webhook event as openapi.json describes it (its type's schema), or None if it is."""
    event_type = event.get("type") if isinstance(event, dict) else None
    validator = _validators().get(event_type) if isinstance(event_type, str) else None
    if validator is None:
        return f"type {event_type!r} is none of openapi.json's webhook events ({', '.join(_validators())})"
    errors = sorted(validator.iter_errors(event), key=lambda error: list(error.absolute_path))
    if not errors:
        return None
    return "; ".join(f"{'/'.join(map(str, error.absolute_path)) or '(event)'}: {error.message}" for error in errors)


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
        self.invalid: list[str] = []  # what each event that fails its schema got wrong
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
        event = json.loads(body)
        problem = event_problem(event)
        if problem is not None:
            self.invalid.append(f"{event.get('id', '(no id)')}: {problem}")
        self.accepted.append(event)
        self.arrived.set()
        return "", 204

    def check_schemas(self) -> None:
        """Fail the test if an event that arrived does not match its schema."""
        assert not self.invalid, "webhook events unlike openapi.json's schemas:\n" + "\n".join(self.invalid)

    async def wait_for(self, event_type: str, timeout: float = 10.0) -> None:
        """Until an event of `event_type` has been accepted."""
        async with asyncio.timeout(timeout):
            while not any(event["type"] == event_type for event in self.accepted):
                self.check_schemas()
                self.arrived.clear()
                await self.arrived.wait()
        self.check_schemas()


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
    receiver.check_schemas()  # after the test's own body, which did not fail: every delivery matched its schema
