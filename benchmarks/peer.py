"""The peer: the design of Deepgram's own Python sample for Twilio, to measure callscribe against side by side.

`python -m benchmarks.run --peer` serves this (`python -m benchmarks.peer --port P`) beside callscribe, round
by round, under the same load and the same Deepgram stand-in. It was written here after reading Deepgram's
sample (github.com/deepgram-devs/deepgram-twilio-streaming-python, `twilio.py`), to the same design on the
same stack, and copies none of its code:

- a `websockets` server takes Twilio's stream; a `websockets` client (no SDK) opens one Deepgram connection
  per call as the socket opens, with `multichannel=true&channels=2`: the inbound track is channel 0, the
  outbound channel 1;
- each media message's payload is appended to its track's buffer; a gap in a track's `timestamp`s is filled
  with μ-law silence (0xFF), and the outbound track's clock starts with the inbound's first frame, so a
  track that starts late (a `<Dial>` ringing) is filled from there once it starts;
- once both buffers hold 0.4 s, the two are interleaved sample by sample (a slice assignment; the sample uses
  pydub) and queued for one sender task; a track that stops sending stalls both, as in the sample;
- at `stop` what is buffered short of 0.4 s is left unsent, as in the sample, and an empty binary message
  asks Deepgram to finish; the results are read until Deepgram closes.

Per result it writes one JSON line on stdout, the `transcript` line the benchmark reads result latency from
(the sample forwards each result to its subscribers). It has no signature check, no `/voice` (the sample's
TwiML is a TwiML Bin), no validation, reconnect, spool, database, metrics or error handling. `GET /healthz`
answers 200 so the runner can tell it is up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import json
import os
import signal
import sys
import urllib.parse
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

SEND_BYTES = 3200  # 0.4 s of 8 kHz μ-law per track, as the sample buffers
FRAME_MS = 20
BYTES_PER_MS = 8
SILENCE = b"\xff"
OPTIONS = "model=nova-3&encoding=mulaw&sample_rate=8000&channels=2&multichannel=true"


class Mixer:
    """The two tracks of one call, aligned on their timestamps, out as interleaved 0.4 s chunks."""

    def __init__(self) -> None:
        self._buffers = {"inbound": bytearray(), "outbound": bytearray()}
        self._last_ms: dict[str, int] = {}

    def add(self, track: str, timestamp_ms: int, payload: bytes) -> None:
        """One media message: silence for any gap since the track's last frame, then its audio."""
        if track == "inbound" and track not in self._last_ms:
            self._last_ms.setdefault("outbound", timestamp_ms - FRAME_MS)  # the outbound's clock starts here
        buffer = self._buffers[track]
        last = self._last_ms.get(track)
        if last is not None and timestamp_ms > last + FRAME_MS:
            buffer.extend(SILENCE * (BYTES_PER_MS * (timestamp_ms - last - FRAME_MS)))
        self._last_ms[track] = timestamp_ms
        buffer.extend(payload)

    def ready(self) -> list[bytes]:
        """Every whole 0.4 s both tracks have, interleaved (inbound, outbound, inbound, ...)."""
        inbound, outbound = self._buffers["inbound"], self._buffers["outbound"]
        chunks = []
        while len(inbound) >= SEND_BYTES and len(outbound) >= SEND_BYTES:
            mixed = bytearray(2 * SEND_BYTES)
            mixed[0::2] = inbound[:SEND_BYTES]
            mixed[1::2] = outbound[:SEND_BYTES]
            del inbound[:SEND_BYTES], outbound[:SEND_BYTES]
            chunks.append(bytes(mixed))
        return chunks


async def bridge(twilio: ServerConnection, listen_url: str, api_key: str) -> None:
    """One Twilio stream: one Deepgram connection, a sender task, a results task, and the read loop."""
    async with connect(
        listen_url, additional_headers={"Authorization": f"Token {api_key}"}, compression=None, max_size=None
    ) as deepgram:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        tasks = [asyncio.create_task(send_audio(deepgram, queue)), asyncio.create_task(print_results(deepgram))]
        with contextlib.suppress(ConnectionClosed):
            await read_twilio(twilio, queue)
        queue.put_nowait(b"")  # the deprecated CloseStream, as the sample sends it
        await asyncio.wait(tasks)
    await twilio.close()


async def read_twilio(twilio: ServerConnection, queue: asyncio.Queue[bytes]) -> None:
    mixer = Mixer()
    async for message in twilio:
        event = json.loads(message)
        kind = event["event"]
        if kind == "media":
            media = event["media"]
            mixer.add(media["track"], int(media["timestamp"]), base64.b64decode(media["payload"]))
            for chunk in mixer.ready():
                queue.put_nowait(chunk)
        elif kind == "stop":
            return


async def send_audio(deepgram: ClientConnection, queue: asyncio.Queue[bytes]) -> None:
    while True:
        chunk = await queue.get()
        await deepgram.send(chunk)
        if not chunk:
            return


async def print_results(deepgram: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in deepgram:
            result: dict[str, Any] = json.loads(message)
            alternatives = result.get("channel", {}).get("alternatives") if result.get("type") == "Results" else None
            if alternatives:
                line = {
                    "event": "transcript",
                    "channel": result["channel_index"][0],
                    "text": alternatives[0]["transcript"],
                    "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
                }
                sys.stdout.write(json.dumps(line) + "\n")


def _health(connection: ServerConnection, request: Request) -> Response | None:
    path = urllib.parse.urlsplit(request.path).path
    if path == "/media":
        return None
    if path == "/healthz":
        return connection.respond(200, "ok\n")
    return connection.respond(404, "no such endpoint\n")


async def serve_until_stopped(port: int) -> None:
    rest_url = os.environ.get("DEEPGRAM_URL", "http://127.0.0.1:1")
    listen_url = f"{rest_url.replace('http', 'ws', 1)}/v1/listen?{OPTIONS}"
    api_key = os.environ.get("DEEPGRAM_API_KEY", "peer")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def handle(twilio: ServerConnection) -> None:
        await bridge(twilio, listen_url, api_key)

    async with serve(handle, "127.0.0.1", port, process_request=_health, compression=None, ping_interval=None):
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(serve_until_stopped(args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
