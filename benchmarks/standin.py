"""Harness process: a cheap, protocol-faithful stand-in for Deepgram's live sockets (`/v1/listen`, and Flux's
`/v2/listen`).

`python -m benchmarks.standin --ready-file F --record-file R` listens on 127.0.0.1 (port 0 = OS-chosen, written
to F once listening), runs until SIGTERM/SIGINT, then writes what it received to R as one JSON object.

It shares a core with the load generator, so it does as little as possible per frame: one clock read per
binary message, one dict insert per 160-byte frame, no logging, no task per frame. Every 1 s of audio on a
connection it sends one `Results` (interim and final alternate) whose first word is `t<wall-clock ns>`, read
just before sending (a final then says `ALERT_PHRASE`, for the run's alert rule); a `multichannel=true&channels=2`
connection (the peer's, `benchmarks/peer.py`) is de-interleaved into its two channels, and each channel gets its
own `Results` (`channel_index`) per second.
On `/v2/listen` (Flux) it sends `Connected`, then per second an `Update` (interim) and an `EndOfTurn` (final)
in turn, with the same words, and on CloseStream the open turn's end and a close 1000 (Flux has no Metadata).
So the run can match each result to the service's `transcript` log line (whose timestamp is wall clock too).
Message shapes copy tests/fakes/deepgram_server.py, which the real SDK parses
(https://developers.deepgram.com/docs/lower-level-websockets); it is not imported, because tests/ is not a
package the harness should depend on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import signal
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from benchmarks.records import own_cpu_seconds, write_atomically
from benchmarks.tagging import FRAME_BYTES, frame_keys, key_fields

LISTEN_PATH = "/v1/listen"
FLUX_PATH = "/v2/listen"
BYTES_PER_SECOND = 8000  # 8 kHz μ-law, what the service asks for
RESULT_EVERY_BYTES = BYTES_PER_SECOND  # one Results message per second of audio per connection
CONFIDENCE = 0.99
MODEL_UUID = "1dbdfb4d-85b2-4659-8c1d-0e7ce4b5a8b5"
MODEL_INFO = '{"name":"general-nova-3","version":"2025-01-01.0","arch":"nova-3"}'
CLOSE_TIMEOUT_S = 2.0  # bounds each close handshake when stopping, so a silent peer cannot hold the exit
# Said in every final after its `t<ns>` word: the run's ALERT_RULES rule (benchmarks/run.py) has it as its phrase
# for the caller, so each caller final raises an alert, whose latency the run measures (`analysis.alert_latencies`).
ALERT_PHRASE = "cancel my account"
MAX_MESSAGE_BYTES = 1 << 20  # a batched send of 100 ms is 800 bytes; replays after a reconnect are larger


@dataclass
class Recorder:
    """Everything the run needs from this process, kept cheap to fill."""

    received: dict[bytes, int] = field(default_factory=dict)  # frame key -> monotonic ns of its first receipt
    untagged_frames: int = 0
    silent_frames: int = 0  # μ-law silence a bridge filled in (a gap, a track not streaming yet): no tag, no loss
    duplicate_frames: int = 0  # frames received again (the service replays audio after a reconnect)
    connections: int = 0
    results_sent: int = 0
    closed_by_close_stream: int = 0

    def to_json(self, cpu_s: float, wall_s: float) -> dict[str, Any]:
        """The record file's content: receipts as parallel arrays (compact, and quick to join)."""
        fields = [key_fields(key) for key in self.received]
        return {
            "cpu_s": cpu_s,
            "wall_s": wall_s,
            "connections": self.connections,
            "results_sent": self.results_sent,
            "closed_by_close_stream": self.closed_by_close_stream,
            "untagged_frames": self.untagged_frames,
            "silent_frames": self.silent_frames,
            "duplicate_frames": self.duplicate_frames,
            "received": {
                "call": [call for call, _, _ in fields],
                "track": [track for _, track, _ in fields],
                "seq": [seq for _, _, seq in fields],
                "ns": list(self.received.values()),
            },
        }


def results_message(
    request_id: str,
    text: str,
    start_s: float,
    duration_s: float,
    *,
    is_final: bool,
    from_finalize: bool,
    channel: tuple[int, int] = (0, 1),
) -> str:
    """A `Results` message with `text`'s words, built as a string (no dict, no json.dumps) because it is per second."""
    end_s = start_s + duration_s
    final = "true" if is_final else "false"
    word = _words(text, start_s, end_s, punctuated=True)
    return (
        f'{{"type":"Results","channel_index":[{channel[0]},{channel[1]}],"duration":{duration_s},"start":{start_s},'
        f'"is_final":{final},"speech_final":{final},"from_finalize":{"true" if from_finalize else "false"},'
        f'"channel":{{"alternatives":[{{"transcript":"{text}","confidence":{CONFIDENCE},"words":[{word}]}}]}},'
        f'"metadata":{{"request_id":"{request_id}","model_uuid":"{MODEL_UUID}","model_info":{MODEL_INFO}}}}}'
    )


def metadata_message(request_id: str, duration_s: float) -> str:
    """The `Metadata` message Deepgram sends after CloseStream, before closing with 1000."""
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": "0" * 64,  # the real one hashes the audio; nothing reads it, and hashing costs CPU
            "created": created,
            "duration": duration_s,
            "channels": 1,
        }
    )


def turn_info_message(
    request_id: str, sequence: int, event: str, *, turn_index: int, text: str, start_s: float, end_s: float
) -> str:
    """A Flux `TurnInfo` with `text`'s words, built as a string (per second, like `results_message`)."""
    word = _words(text, start_s, end_s, punctuated=False)
    trigger = ',"trigger":"model"' if event == "EndOfTurn" else ""
    return (
        f'{{"type":"TurnInfo","request_id":"{request_id}","sequence_id":{sequence},"event":"{event}",'
        f'"turn_index":{turn_index},"audio_window_start":{start_s},"audio_window_end":{end_s},'
        f'"transcript":"{text}","words":[{word}],"end_of_turn_confidence":0.9{trigger}}}'
    )


def _words(text: str, start_s: float, end_s: float, *, punctuated: bool) -> str:
    """`text`'s words as JSON array items, sharing start_s to end_s equally."""
    said = text.split(" ")
    step = (end_s - start_s) / len(said)
    items = []
    for index, word in enumerate(said):
        times = f'"start":{start_s + index * step},"end":{start_s + (index + 1) * step}'
        extra = f',"punctuated_word":"{word}"' if punctuated else ""
        items.append(f'{{"word":"{word}",{times},"confidence":{CONFIDENCE}{extra}}}')
    return ",".join(items)


SILENT_FRAME = b"\xff" * 160


class _Channel:
    """One channel of a connection's audio: its bytes so far, and where its next final starts."""

    def __init__(self, index: int, count: int) -> None:
        self.index = (index, count)  # Deepgram's channel_index: [channel, channels]
        self.heard = 0  # bytes of this channel's audio
        self.final_end = 0  # byte offset up to which a final was sent
        self.next_result_at = RESULT_EVERY_BYTES
        self.final_next = False  # interim and final results alternate
        self.carry = b""  # a frame split across two messages (never, with whole 20 ms frames)


class _Connection:
    """One accepted `/v1/listen` socket: record frames, answer with results, honour the control messages."""

    def __init__(self, ws: ServerConnection, recorder: Recorder) -> None:
        self._ws = ws
        self._recorder = recorder
        self._request_id = str(uuid.uuid4())
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query) if ws.request else {}
        multichannel = query.get("multichannel", ["false"])[0].lower() == "true"
        count = int(query.get("channels", ["1"])[0]) if multichannel else 1
        self._channels = [_Channel(index, count) for index in range(count)]
        path = urllib.parse.urlsplit(ws.request.path).path if ws.request else LISTEN_PATH
        self._flux = path == FLUX_PATH  # one channel; TurnInfo instead of Results
        self._sequence = 0  # Flux numbers every message it sends
        self._turn_index = 0

    async def run(self) -> None:
        """Serve until either side closes."""
        if self._flux:
            await self._ws.send(json.dumps({"type": "Connected", "request_id": self._request_id, "sequence_id": 0}))
            self._sequence = 1
        async for message in self._ws:
            if isinstance(message, bytes):
                await self._on_audio(message)
            else:
                await self._on_text(message)

    async def _on_audio(self, audio: bytes) -> None:
        if not audio:  # an empty binary frame is Deepgram's deprecated CloseStream
            await self._close_stream()
            return
        now = time.monotonic_ns()  # one clock read for every frame of this message
        channels = self._channels
        if len(channels) == 1:
            self._record(audio, now)
            await self._heard(channels[0], len(audio))
            return
        for channel in channels:  # interleaved sample by sample: channel c is every len(channels)-th byte
            fresh = audio[channel.index[0] :: len(channels)]
            samples = channel.carry + fresh
            whole = len(samples) - len(samples) % FRAME_BYTES
            self._record(samples[:whole], now)
            channel.carry = samples[whole:]
            await self._heard(channel, len(fresh))

    def _record(self, audio: bytes, now: int) -> None:
        recorder = self._recorder
        received = recorder.received
        for offset, key in enumerate(frame_keys(audio)):
            if not key:
                frame = audio[offset * FRAME_BYTES : (offset + 1) * FRAME_BYTES]
                if frame == SILENT_FRAME:
                    recorder.silent_frames += 1
                else:
                    recorder.untagged_frames += 1
            elif key in received:
                recorder.duplicate_frames += 1
            else:
                received[key] = now

    async def _heard(self, channel: _Channel, size: int) -> None:
        channel.heard += size
        if channel.heard >= channel.next_result_at:
            channel.next_result_at = (channel.heard // RESULT_EVERY_BYTES + 1) * RESULT_EVERY_BYTES
            is_final, channel.final_next = channel.final_next, not channel.final_next
            await self._send_results(channel, is_final=is_final, from_finalize=False)

    async def _on_text(self, text: str) -> None:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            return  # not a control message we know; real Deepgram would answer an Error, the service sends none
        if kind == "Finalize" and not self._flux:
            for channel in self._channels:
                await self._send_results(channel, is_final=True, from_finalize=True)
        elif kind == "CloseStream":
            await self._close_stream()
        # KeepAlive (and anything else) needs no answer

    async def _close_stream(self) -> None:
        for channel in self._channels:
            if channel.heard > channel.final_end:
                await self._send_results(channel, is_final=True, from_finalize=False)
        if not self._flux:
            await self._ws.send(metadata_message(self._request_id, self._channels[0].heard / BYTES_PER_SECOND))
        self._recorder.closed_by_close_stream += 1
        await self._ws.close(1000)

    async def _send_results(self, channel: _Channel, *, is_final: bool, from_finalize: bool) -> None:
        start_s = channel.final_end / BYTES_PER_SECOND
        duration_s = (channel.heard - channel.final_end) / BYTES_PER_SECOND
        if is_final:
            channel.final_end = channel.heard
        text = f"t{time.time_ns()}"  # wall clock, as late as possible: result latency starts here
        if is_final:
            text += " " + ALERT_PHRASE
        if self._flux:
            await self._send_turn(text, start_s, start_s + duration_s, is_final=is_final)
            return
        message = results_message(
            self._request_id,
            text,
            start_s,
            duration_s,
            is_final=is_final,
            from_finalize=from_finalize,
            channel=channel.index,
        )
        await self._ws.send(message)
        self._recorder.results_sent += 1

    async def _send_turn(self, text: str, start_s: float, end_s: float, *, is_final: bool) -> None:
        """Flux: the turn so far as an `Update`, or its `EndOfTurn` (the next turn then opens a second later)."""
        event = "EndOfTurn" if is_final else "Update"
        message = turn_info_message(
            self._request_id,
            self._sequence,
            event,
            turn_index=self._turn_index,
            text=text,
            start_s=start_s,
            end_s=end_s,
        )
        self._sequence += 1
        if is_final:
            self._turn_index += 1
        await self._ws.send(message)
        self._recorder.results_sent += 1


def _only_listen(connection: ServerConnection, request: Request) -> Response | None:
    # Any token is accepted (the service sends `Authorization: Token <key>`); only the path is checked.
    if urllib.parse.urlsplit(request.path).path not in {LISTEN_PATH, FLUX_PATH}:
        return connection.respond(404, "no such endpoint\n")
    return None


async def serve_until_stopped(port: int, ready_file: Path, recorder: Recorder) -> None:
    """Listen on 127.0.0.1:`port`, write the bound port to `ready_file`, serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def handle(ws: ServerConnection) -> None:
        recorder.connections += 1
        # ConnectionClosed: the service vanished or the stand-in is stopping; what was received is recorded.
        with contextlib.suppress(ConnectionClosed):
            await _Connection(ws, recorder).run()

    async with serve(
        handle,
        "127.0.0.1",
        port,
        process_request=_only_listen,
        compression=None,  # Deepgram does not negotiate permessage-deflate
        ping_interval=None,  # keep the wire to Deepgram's messages, and the CPU to the frames
        close_timeout=CLOSE_TIMEOUT_S,
        max_size=MAX_MESSAGE_BYTES,
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        write_atomically(ready_file, f"{bound}\n")
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve, then write the record file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: the OS picks)")
    parser.add_argument("--ready-file", type=Path, required=True, help="written with the bound port once listening")
    parser.add_argument("--record-file", type=Path, required=True, help="written with the receipts on exit")
    args = parser.parse_args(argv)
    recorder = Recorder()
    started = time.monotonic()
    asyncio.run(serve_until_stopped(args.port, args.ready_file, recorder))
    record = recorder.to_json(own_cpu_seconds(), time.monotonic() - started)
    write_atomically(args.record_file, json.dumps(record, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
