"""The stack's floor: the least a Twilio-to-Deepgram bridge can do on Hypercorn and deepgram-sdk.

`python -m benchmarks.run --floor` serves this ASGI app (`hypercorn benchmarks.floor:app`) instead of
callscribe, under the same load and the same Deepgram stand-in. Per Twilio message it does only what any
bridge must: parse the JSON (orjson), decode the base64, and await the SDK's `send_media` right there in the
connection's read loop, on connections that ask Deepgram for what callscribe asks by default. Per Deepgram
message: the SDK's parse, and for a result one JSON line on stdout (the line the benchmark reads result latency
from). Nothing else: no signature check, no validation, no timer, no reconnect, no spool, no database, no
metrics, no error handling. It is not a product; it answers one question: how much of callscribe's cost is the
stack's, and how much is callscribe's own.

It batches as callscribe is told to: with `AUDIO_BATCH_MS=N` (the runner's `--env` reaches every server), a
track's payloads are joined and sent once N ms of them are in, and what is left at `stop` goes before
CloseStream. So the floor at 400 ms is what Hypercorn and the SDK cost when they send what callscribe sends at
400 ms. `auto` sends each frame (an idle bridge sends at once, as callscribe's `auto` does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import sys
from typing import Any

import orjson
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.listen.v1 import ListenV1Results
from deepgram.listen.v1.socket_client import AsyncV1SocketClient

from benchmarks import floor_http
from benchmarks.floor_http import ASGIReceive, ASGISend

# The stand-in's address, in the variable the benchmark sets for callscribe too (http://127.0.0.1:PORT).
_REST_URL = os.environ.get("DEEPGRAM_URL", "http://127.0.0.1:1")
_LIVE_URL = _REST_URL.replace("http", "ws", 1)
CLIENT = AsyncDeepgramClient(
    api_key=os.environ.get("DEEPGRAM_API_KEY", "floor"),
    environment=DeepgramClientEnvironment(base=_REST_URL, production=_LIVE_URL, agent=_LIVE_URL, agent_rest=_REST_URL),
)
# What callscribe asks of Deepgram with its default settings (`service/deepgram/protocol.py::live_options`; a test
# keeps the two equal), so that a Deepgram which answers as asked (interim results, UtteranceEnd) sends the floor's
# SDK what it sends callscribe's. The benchmark's stand-in answers every connection alike (a result a second).
OPTIONS: dict[str, Any] = {
    "model": "nova-3",
    "language": "en-US",
    "encoding": "mulaw",
    "sample_rate": 8000,
    "channels": 1,
    "interim_results": True,
    "punctuate": True,
    "smart_format": True,
    "endpointing": 300,
    "utterance_end_ms": 1000,
    "request_options": {"additional_query_parameters": {"mip_opt_out": "true"}},
}
FRAME_MS = 20  # Twilio's frames


def frames_per_send(batch_ms: str) -> int:
    """AUDIO_BATCH_MS as whole frames per send: 1 for the default (20) and for `auto`."""
    return max(1, int(batch_ms) // FRAME_MS) if batch_ms.isdigit() else 1


FRAMES_PER_SEND = frames_per_send(os.environ.get("AUDIO_BATCH_MS", str(FRAME_MS)))


async def app(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
    """/media bridges, every HTTP request answers 200 (the runner's /healthz), lifespan is acknowledged."""
    if scope["type"] == "websocket":
        await bridge(receive, send)
    else:
        await floor_http.answer(scope, receive, send)


async def bridge(receive: ASGIReceive, send: ASGISend) -> None:
    """One Twilio stream: a Deepgram connection per track, each payload sent as it comes."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    sockets: dict[str, AsyncV1SocketClient] = {}
    batches: dict[str, list[bytes]] = {}
    readers: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack:
        while (message := await receive())["type"] == "websocket.receive":
            event = orjson.loads(message.get("text") or message["bytes"])
            kind = event["event"]
            if kind == "media":
                media = event["media"]
                batch = batches[media["track"]]
                batch.append(base64.b64decode(media["payload"]))
                if len(batch) >= FRAMES_PER_SEND:
                    await sockets[media["track"]].send_media(b"".join(batch))
                    batch.clear()
            elif kind == "start":
                for track in event["start"]["tracks"]:
                    socket = await stack.enter_async_context(CLIENT.listen.v1.connect(**OPTIONS))
                    sockets[track] = socket
                    batches[track] = []
                    readers.append(asyncio.create_task(print_results(socket)))
            elif kind == "stop":
                for track, socket in sockets.items():
                    if batches[track]:
                        await socket.send_media(b"".join(batches[track]))
                    await socket.send_close_stream()
                await asyncio.gather(*readers)
                await send({"type": "websocket.close", "code": 1000, "reason": ""})
                return


async def print_results(socket: AsyncV1SocketClient) -> None:
    async for message in socket:
        if isinstance(message, ListenV1Results) and message.channel.alternatives:
            line = {
                "event": "transcript",
                "text": message.channel.alternatives[0].transcript,
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
            }
            sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
