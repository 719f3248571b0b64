"""Wiring layer: every HTTP request judged before its body is read, then read within bounds, in front of the app.

`RequestGuard` is plain ASGI, so nothing of a refused request reaches Quart: not its form parser, not its body
buffer. In order:

1. **In progress, per pool.** `/voice` (Twilio's webhook) and every other route each have their own bound on
   requests in progress in this process; past it the answer is 503 at once. A flood of the page's or the API's
   URLs cannot take the slots Twilio's webhook needs, and a flood of `/voice` is refused unsigned (below) or
   bounded by its own pool.
2. **The headers** (`request_rules.refusal`): an unsigned `/voice`, a multipart body, a Content-Length past the
   route's bound: answered without reading a byte of body.
3. **The body**, read here whole, up to the route's bound and within HTTP_BODY_TIMEOUT_S: a body that grows past
   the bound gets 413, one that trickles in gets 408. Only then does the app run, with the body replayed to it,
   so no route ever waits on a client's body.

Each refusal is one log line (`voice.refused` for /voice, else `http.refused`, with the client's address,
summarised past a burst from one address: `refusals.log_refusal`) and closes the connection, since the rest of
its body was never read (what the client still sends is drained until it pauses, `_drain`). WebSockets pass by:
/media has bounds of its own (media.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final

import structlog
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    HTTPScope,
    Scope,
)

from service.refusals import log_refusal
from service.web import request_rules
from service.web.request_rules import Refusal, logged_path

log = structlog.get_logger("callscribe.http")

DRAIN_PAUSE_S: Final = 0.05  # a refused client that sends nothing for this long has stopped sending


@dataclass(slots=True)
class Pool:
    """Requests in progress of one kind, and the most there may be."""

    name: str
    bound: int
    in_progress: int = 0


class RequestGuard:
    """ASGI middleware: pools, then headers, then a bounded body, before `app` sees an HTTP request."""

    def __init__(
        self,
        app: ASGIFramework,
        *,
        signatures_required: bool,
        body_timeout_s: float,
        voice_in_progress: int,
        other_in_progress: int,
    ) -> None:
        self.app = app
        self.signatures_required = signatures_required
        self.body_timeout_s = body_timeout_s
        self.voice = Pool("voice", voice_in_progress)
        self.other = Pool("other", other_in_progress)

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        pool = self.voice if path == request_rules.VOICE_PATH else self.other
        why = (
            request_rules.too_busy(pool.name, pool.bound)
            if pool.in_progress >= pool.bound
            else request_rules.refusal(method, path, scope["headers"], signatures_required=self.signatures_required)
        )
        if why is not None:
            await self._refuse(scope, receive, send, why)
            return
        # /voice's headers cannot tell Twilio from a forgery (its signature covers the body), so a /voice request
        # takes its slot only once its body is whole: bodies trickled with any X-Twilio-Signature hold connections
        # for HTTP_BODY_TIMEOUT_S at most, never Twilio's pool. Elsewhere the slot counts from the headers on.
        taken = pool is not self.voice
        if taken:
            pool.in_progress += 1
        try:
            limit = request_rules.body_limit(method, path)
            body = await self._read_body(receive, limit)
            if isinstance(body, Refusal):
                await self._refuse(scope, receive, send, body)
                return
            if body is None:
                return  # the client left before its body was whole: nobody to answer
            if not taken:
                if pool.in_progress >= pool.bound:
                    await self._refuse(scope, receive, send, request_rules.too_busy(pool.name, pool.bound))
                    return
                pool.in_progress += 1
                taken = True
            await self.app(scope, _replaying(body, receive), send)
        finally:
            if taken:
                pool.in_progress -= 1

    async def _read_body(self, receive: ASGIReceiveCallable, limit: int) -> bytes | Refusal | None:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    if message["type"] != "http.request":
                        continue
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        return request_rules.too_large(limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            return request_rules.too_slow(self.body_timeout_s)

    async def _refuse(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable, why: Refusal
    ) -> None:
        """Say why (`_answer`), then drop what the client still sends (`_drain`)."""
        await _answer(scope, send, why)
        await self._drain(receive)

    async def _drain(self, receive: ASGIReceiveCallable) -> None:
        """What the client still sends after its refusal, read and dropped until it stops or leaves.

        Hypercorn hands a body over through a queue of ten messages; once it is full, the connection's reader
        waits for the app to take one, and an app that has returned never will: the connection's task and the
        queued body would stay in memory for good. Reading until the client pauses (or leaves, or the body
        ends) lets the reader see the close; a client that keeps sending is read for HTTP_BODY_TIMEOUT_S at most.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    try:
                        message = await asyncio.wait_for(receive(), DRAIN_PAUSE_S)
                    except TimeoutError:
                        return  # nothing waiting: the reader is not held
                    if message["type"] == "http.disconnect" or not message.get("more_body", False):
                        return


def _replaying(body: bytes, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """The app's `receive`: the body read already, whole, then the client's own (its disconnect)."""
    given = False

    async def replay() -> ASGIReceiveEvent:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(scope: HTTPScope, send: ASGISendCallable, why: Refusal) -> None:
    """The refusal's one log line (summarised past a burst from one address) and its answer, closing."""
    client = scope.get("client")
    log_refusal(
        log,
        "voice.refused" if scope["path"] == request_rules.VOICE_PATH else "http.refused",
        client[0] if client else None,
        status=why.status,
        error=why.error,
        why=why.why,
        method=scope["method"],
        path=logged_path(scope["path"]),
    )
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    if why.status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": why.status, "headers": headers, "trailers": False})
    await send({"type": "http.response.body", "body": f"{why.why}\n".encode(), "more_body": False})
