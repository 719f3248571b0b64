"""The inbound floor: what reading Twilio's stream costs on Hypercorn, before anything is done with it.

`python -m benchmarks.run --inbound-floor` serves this ASGI app (`hypercorn benchmarks.inbound_floor:app`) in
each round, in turn with callscribe, under the same load. Per Twilio message it does what any server of Media
Streams must and nothing more: receive the WebSocket message through Hypercorn (wsproto), parse its JSON
(orjson) and, for media, decode the base64 payload. The audio then goes nowhere: no Deepgram connection, no
send, no result, no log, no state beyond the loop. `/voice` answers as the other floor's does (the load generator
asks for each call's stream first, as Twilio does); any other HTTP request answers 200 (the runner's /healthz).

The runner's figure against it is callscribe's CPU divided by this one's, round by round: the part of callscribe's
cost that Hypercorn's reading already sets, and what is left that is ours (or the SDK's) to cut.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from benchmarks import floor_http
from benchmarks.floor_http import ASGIReceive, ASGISend


async def app(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
    """/media is read and decoded, every HTTP request answers 200 (the runner's /healthz), lifespan is acknowledged.

    HTTP and the lifespan as `floor.app` answers them (`floor_http`), without importing it: the SDK it loads is no
    part of this floor."""
    if scope["type"] == "websocket":
        await read(receive, send)
    else:
        await floor_http.answer(scope, receive, send)


async def read(receive: ASGIReceive, send: ASGISend) -> None:
    """One Twilio stream: each message parsed, each payload decoded and dropped; closed normally at `stop`."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        event = orjson.loads(message.get("text") or message["bytes"])
        kind = event["event"]
        if kind == "media":
            base64.b64decode(event["media"]["payload"])
        elif kind == "stop":
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
