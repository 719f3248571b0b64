"""I/O adapter: Twilio's /media WebSocket as plain ASGI, in front of Quart.

Through Quart, every message from Twilio crossed Quart's own queue and task on top of Hypercorn's; at 50
messages a second per track that was the largest share of the worker's CPU that callscribe could remove
(docs/benchmarks.md). /media needs nothing Quart adds (its routing, its request context), so `MediaRoute`
serves it straight from Hypercorn's ASGI calls, and every other route still goes to Quart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope, WebsocketScope

from service.twilio import close_codes
from service.twilio.urls import MEDIA_PATH


class TwilioSocket:
    """One /media connection, as the few calls `MediaStreams` (media.py) makes on it."""

    def __init__(self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._connect_taken = False
        self._closed = False

    def header(self, name: str) -> str | None:
        """A request header of the upgrade (the last one of that name), or None."""
        wanted = name.lower().encode("latin-1")
        found = None
        for key, value in self._scope["headers"]:
            if key.lower() == wanted:
                found = value.decode("latin-1")
        return found

    @property
    def host(self) -> str:
        return self.header("host") or ""

    @property
    def client_address(self) -> str | None:
        """The client's address (the trusted proxy's X-Forwarded-For, as `behind_one_proxy` set it), if known."""
        client = self._scope.get("client")
        return client[0] if client else None

    async def refuse(self, status: int, body: str) -> None:
        """Answer the upgrade with an HTTP error instead of a WebSocket (before `accept`)."""
        await self._expect_connect()
        self._closed = True
        if "websocket.http.response" in (self._scope.get("extensions") or {}):
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await self._send({"type": "websocket.http.response.body", "body": body.encode(), "more_body": False})
        else:  # the ASGI server answers 403 for a close before accept
            await self._send({"type": "websocket.close", "code": close_codes.POLICY_VIOLATION, "reason": None})

    async def accept(self) -> None:
        await self._expect_connect()
        await self._send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    async def receive(self) -> str | bytes | None:
        """The next message; None once Twilio's side of the socket is closed."""
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else message.get("bytes") or b""
        self._closed = True  # websocket.disconnect
        return None

    async def close(self, code: int, reason: str) -> None:
        """Close once; later calls (a session closing while Twilio hangs up) do nothing."""
        if self._closed:
            return
        self._closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def _expect_connect(self) -> None:
        # ASGI's first event on a WebSocket is websocket.connect; an app must take it before answering.
        if not self._connect_taken:
            self._connect_taken = True
            await self._receive()


MediaHandler = Callable[[TwilioSocket], Awaitable[None]]


class MediaRoute:
    """WebSocket connections to /media go to `handler`; everything else (HTTP, lifespan) to `app`."""

    def __init__(self, app: ASGIFramework, handler: MediaHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket" and scope["path"] == MEDIA_PATH:
            await self.handler(TwilioSocket(scope, receive, send))
        else:
            await self.app(scope, receive, send)
