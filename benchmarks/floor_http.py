"""What both floors answer besides the stream (`floor.py`, `inbound_floor.py`): `/voice` as the load generator
asks it for each call's stream (as Twilio does; nothing is checked), any other HTTP request 200 (the runner's
/healthz), and the lifespan acknowledged. Nothing heavy is imported here, so the inbound floor loads no SDK."""

from __future__ import annotations

from typing import Any

ASGIReceive = Any
ASGISend = Any


async def answer(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
    """An HTTP request or the lifespan; a WebSocket is the floor's own."""
    if scope["type"] == "http" and scope["path"] == "/voice":
        host = dict(scope["headers"]).get(b"host", b"127.0.0.1").decode()
        twiml = f'<Response><Start><Stream url="wss://{host}/media" track="both_tracks"/></Start></Response>'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": twiml.encode()})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok\n"})
    elif scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
