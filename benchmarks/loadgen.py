"""Harness process: N Twilio Media Streams calls at real-time pace against the service's `/media`.

`python -m benchmarks.loadgen --url ws://127.0.0.1:PORT/media --calls N --tracks 1|2 --start together|staggered
--duration-s D --token TOKEN --out FILE` prepares every message first (with service/simulator/messages.py's own
`plan_messages`, so the wire format is exactly the simulator's, which follows Twilio's), then plays them.

Why it is shaped this way:
- It shares a core with the Deepgram stand-in, so sending must cost little: no JSON or base64 while playing,
  and ONE scheduler task sends whatever is due for every call (a heap of due times) instead of a sleeping task
  per call. Each frame is due at call start + k x 20 ms on the monotonic clock, so lateness never accumulates.
  The send time (read just before `send`) and the planned time give the harness's own send lag, so a
  saturated harness shows up as lag rather than being blamed on the service.
- Each payload is tagged (benchmarks/tagging.py) so the stand-in can say when each frame arrived.
- It POSTs /voice for every call first, signed as Twilio signs it, and gives each stream the <Parameter>s its
  TwiML named (the stream token among them), as Twilio does; `--no-voice` leaves that out, for a server with
  no /voice (the peer, `benchmarks/peer.py`). The upgrade is signed too: the wss:// URL, no parameters.
- `--ringing-s S` (both tracks): the outbound track sends nothing for its first S seconds, as while a
  `<Dial>` rings; its media then starts with Twilio's timestamps (ms since the stream's start) and chunk 1.
- Sockets open CONNECT_LEAD_S before their call starts; `connected` goes out on open, `start` right before the
  first media message, `stop` one slot after the last, then the call waits (bounded) for the service's close.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from benchmarks.records import own_cpu_seconds, write_atomically
from benchmarks.tagging import FRAME_BYTES, pack_frame
from service.simulator.messages import (
    CallSpec,
    new_stream_sid,
    parse_twiml,
    plan_messages,
    twilio_signature,
    webhook_form,
)

FRAME_NS = 20_000_000  # one media message per track every 20 ms
TRACK_NAMES = ("inbound", "outbound")  # track index 0 and 1, in the order of Twilio's start.tracks
CONNECT_LEAD_S = 1.0  # sockets open this long before their call's first frame is due
START_MARGIN_S = 0.5  # after preparing, before the first socket opens
OPEN_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 10.0  # after `stop`, how long the service gets to close the socket
NOT_CONNECTED_RETRY_NS = 1_000_000  # a call whose socket is still opening is looked at again 1 ms later
VOICE_CONCURRENCY = 20  # voice webhooks in flight at once while preparing
MAX_INCOMING_BYTES = 64 * 1024  # the service sends nothing on a <Start> stream but the close


@dataclass
class Call:
    """One call: its prepared messages, its schedule and what happened to it."""

    index: int
    tracks: int
    frames: int  # media messages per track
    start_ns: int  # planned monotonic time of `start` and of media slot 0
    connected_text: str
    start_text: str
    media: list[list[tuple[int, str]]]  # per slot: (track index, message) for each track that sends in it
    stop_text: str
    sent_ns: list[list[int]] = field(default_factory=list)  # per track, per slot: monotonic ns before send; 0 = not
    next_slot: int = 0
    ws: ClientConnection | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # stop sent, or the call failed
    connect_ns: int = 0
    connected_ns: int = 0
    stop_sent_ns: int = 0
    error: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: str | None = None  # "service" (expected) or "loadgen" (the service kept it open)

    def __post_init__(self) -> None:
        self.sent_ns = [[0] * self.frames for _ in range(self.tracks)]

    def record(self) -> dict[str, Any]:
        """This call in the output file."""
        return {
            "index": self.index,
            "start_ns": self.start_ns,
            "frames_planned": self.frames,
            "connect_ns": self.connect_ns,
            "connected_ns": self.connected_ns,
            "stop_sent_ns": self.stop_sent_ns,
            "sent_ns": self.sent_ns,
            "error": self.error,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "closed_by": self.closed_by,
        }


def call_spec(index: int, tracks: int, frames: int) -> CallSpec:
    """Call `index`: tagged silence as the audio of each track."""
    names = TRACK_NAMES[:tracks]
    audio = {name: b"".join(pack_frame(index, track, seq) for seq in range(frames)) for track, name in enumerate(names)}
    return CallSpec(inbound=audio["inbound"], outbound=audio.get("outbound"))


async def stream_parameters(media_url: str, token: str, specs: list[CallSpec]) -> list[dict[str, str]]:
    """Each call's voice webhook first, signed as Twilio signs it: the <Parameter>s its TwiML gives the call's
    stream, the stream token among them. Done before the clock starts: it is not part of the load measured."""
    parts = urlsplit(media_url)
    voice_url = f"http://{parts.netloc}/voice"
    limit = asyncio.Semaphore(VOICE_CONCURRENCY)

    async def one(client: httpx.AsyncClient, spec: CallSpec) -> dict[str, str]:
        form = webhook_form(spec)
        async with limit:
            response = await client.post(voice_url, data=form, headers={"X-Twilio-Signature": twilio_signature(
                token, voice_url, form)})  # fmt: skip
        request = parse_twiml(response.text) if response.status_code == 200 else None
        if request is None:
            raise RuntimeError(f"/voice answered {response.status_code} without a <Stream>: {response.text[:200]}")
        return request.params

    async with httpx.AsyncClient(timeout=OPEN_TIMEOUT_S) as client:
        return list(await asyncio.gather(*(one(client, spec) for spec in specs)))


def prepare_call(
    index: int, spec: CallSpec, parameters: dict[str, str], tracks: int, frames: int, *, ringing_frames: int = 0
) -> Call:
    """Every message of call `index`, as the simulator builds them; the outbound's first `ringing_frames` left out."""
    names = TRACK_NAMES[:tracks]
    planned = plan_messages(spec, new_stream_sid(), names, parameters)
    if len(planned) != 3 + frames * tracks or any(len(m.payload) != FRAME_BYTES for m in planned[2:-1]):
        raise RuntimeError("the simulator's plan does not have one 160-byte media message per track and slot")
    texts = [message.text for message in planned]
    if ringing_frames:
        texts = ringing(texts, ringing_frames)
    media: list[list[tuple[int, str]]] = [[] for _ in range(frames)]
    for slot, track, text in slots_of(texts[2:-1]):
        media[slot].append((names.index(track), text))
    return Call(
        index=index,
        tracks=tracks,
        frames=frames,
        start_ns=0,
        connected_text=texts[0],
        start_text=texts[1],
        media=media,
        stop_text=texts[-1],
    )


def slots_of(media: list[str]) -> list[tuple[int, str, str]]:
    """(slot, track, message) of each media message: its slot is its timestamp in 20 ms frames."""
    out = []
    for text in media:
        fields = json.loads(text)["media"]
        out.append((int(fields["timestamp"]) // 20, str(fields["track"]), text))
    return out


def ringing(texts: list[str], silent_frames: int) -> list[str]:
    """The plan without the outbound's first `silent_frames` media messages; sequence numbers stay gapless and
    the outbound's chunks count from 1 when it starts, as Twilio numbers them."""
    kept: list[str] = []
    for text in texts:
        message = json.loads(text)
        media = message.get("media")
        if media is not None and media["track"] == "outbound":
            chunk = int(media["chunk"]) - silent_frames
            if chunk < 1:
                continue
            media["chunk"] = str(chunk)
        if "sequenceNumber" in message:
            message["sequenceNumber"] = str(len(kept))  # `connected` has none, `start` is 1
        kept.append(json.dumps(message, separators=(",", ":")))
    return kept


def start_offsets_ns(calls: int, start: str, stagger_s: float) -> list[int]:
    """Each call's start after t0: all 0 ("together"), or spread evenly over `stagger_s` ("staggered")."""
    if start == "together":
        return [0] * calls
    return [round(index * stagger_s * 1e9 / calls) for index in range(calls)]


async def _send_due(call: Call, now: int) -> int | None:
    """Send what call `call` has due now; return when it is next due, None once it is finished."""
    ws = call.ws
    if call.finished.is_set():
        return None
    if ws is None:
        return now + NOT_CONNECTED_RETRY_NS
    slot = call.next_slot
    try:
        if slot >= call.frames:
            call.stop_sent_ns = time.monotonic_ns()
            await ws.send(call.stop_text)
            call.finished.set()
            return None
        if slot == 0:
            await ws.send(call.start_text)
        for track, text in call.media[slot]:
            call.sent_ns[track][slot] = time.monotonic_ns()
            await ws.send(text)
    except ConnectionClosed as exc:
        call.error = f"closed by the service before stop: {exc.rcvd.code if exc.rcvd else 1006}"
        call.finished.set()
        return None
    call.next_slot = slot + 1
    return call.start_ns + (slot + 1) * FRAME_NS


async def schedule(calls: list[Call]) -> None:
    """The one sending task: pop every call whose next message is due, send it, push its next due time."""
    heap = [(call.start_ns, call.index) for call in calls]
    heapq.heapify(heap)
    while heap:
        due, index = heap[0]
        now = time.monotonic_ns()
        if due > now:
            await asyncio.sleep((due - now) / 1e9)
            continue
        heapq.heappop(heap)
        next_due = await _send_due(calls[index], now)
        if next_due is not None:
            heapq.heappush(heap, (next_due, index))


async def _sleep_until(deadline_ns: int) -> None:
    delay = deadline_ns - time.monotonic_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)


async def run_call(call: Call, url: str, signature: str) -> None:
    """Open the call's socket just before its start, hand it to the scheduler, wait for stop and the close."""
    await _sleep_until(call.start_ns - int(CONNECT_LEAD_S * 1e9))
    call.connect_ns = time.monotonic_ns()
    try:
        ws = await connect(
            url,
            additional_headers={"X-Twilio-Signature": signature},
            compression=None,  # Twilio does not negotiate permessage-deflate
            ping_interval=None,  # keep the wire to the messages Twilio documents
            max_size=MAX_INCOMING_BYTES,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_WAIT_S,
        )
    except InvalidStatus as exc:
        call.error = f"upgrade refused: HTTP {exc.response.status_code}"
        call.finished.set()
        return
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        call.error = f"connect failed: {exc!r}"
        call.finished.set()
        return
    call.connected_ns = time.monotonic_ns()
    try:
        await ws.send(call.connected_text)
        call.ws = ws
        await call.finished.wait()
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await ws.wait_closed()
            call.closed_by = "service"
        except TimeoutError:
            call.closed_by = "loadgen"
    except ConnectionClosed:
        call.error = call.error or "closed by the service before start"
        call.finished.set()
    finally:
        await ws.close()
        call.close_code, call.close_reason = ws.close_code, ws.close_reason


async def play(calls: list[Call], url: str, token: str, timeout_s: float) -> None:
    """Run every call and the scheduler; bounded by `timeout_s`, after which what is left is abandoned."""
    netloc = urlsplit(url).netloc
    # The service checks the signature of wss://<Host>/media; websockets sends Host = the URL's host:port.
    signature = twilio_signature(token, f"wss://{netloc}/media", {})
    tasks = [asyncio.create_task(run_call(call, url, signature)) for call in calls]
    tasks.append(asyncio.create_task(schedule(calls)))
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.wait(tasks)  # never raises the tasks' errors; they are read below
    for call in calls:
        if not call.finished.is_set() and call.error is None:
            call.error = "timed out"
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError("a load generator task failed") from task.exception()


def main(argv: list[str] | None = None) -> int:
    """Prepare, play, write the record file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__)
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/media")
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--tracks", type=int, choices=(1, 2), default=1, help="1: inbound; 2: both_tracks")
    parser.add_argument("--start", choices=("together", "staggered"), default="together")
    parser.add_argument("--stagger-s", type=float, default=5.0, help="staggered starts spread over this long")
    parser.add_argument("--duration-s", type=float, required=True, help="audio per call and track, in seconds")
    parser.add_argument("--token", required=True, help="the service's TWILIO_AUTH_TOKEN, to sign the upgrade")
    parser.add_argument("--out", type=Path, required=True, help="JSON record of every send")
    parser.add_argument("--no-voice", action="store_true", help="no /voice first: the streams carry no parameters")
    parser.add_argument("--ringing-s", type=float, default=0.0, help="both tracks: the outbound silent this long")
    args = parser.parse_args(argv)
    if urlsplit(args.url).hostname != "127.0.0.1":
        parser.error("the load generator only targets 127.0.0.1")
    started = time.monotonic()
    frames = max(1, round(args.duration_s / 0.02))
    offsets = start_offsets_ns(args.calls, args.start, args.stagger_s)
    specs = [call_spec(index, args.tracks, frames) for index in range(args.calls)]
    if args.no_voice:
        parameters: list[dict[str, str]] = [{} for _ in specs]
    else:
        parameters = asyncio.run(stream_parameters(args.url, args.token, specs))
    ringing_frames = round(args.ringing_s / 0.02) if args.tracks == len(TRACK_NAMES) else 0
    prepared = [
        prepare_call(index, spec, params, args.tracks, frames, ringing_frames=ringing_frames)
        for index, (spec, params) in enumerate(zip(specs, parameters, strict=True))
    ]
    prepare_s = time.monotonic() - started
    prepare_cpu_s = own_cpu_seconds()
    t0 = time.monotonic_ns() + int((START_MARGIN_S + CONNECT_LEAD_S) * 1e9)
    for call, offset in zip(prepared, offsets, strict=True):
        call.start_ns = t0 + offset
    timeout_s = START_MARGIN_S + CONNECT_LEAD_S + max(offsets) / 1e9 + args.duration_s + OPEN_TIMEOUT_S + CLOSE_WAIT_S
    asyncio.run(play(prepared, args.url, args.token, timeout_s))
    record = {
        "cpu_s": own_cpu_seconds(),
        "wall_s": time.monotonic() - started,
        "prepare_s": prepare_s,
        "prepare_cpu_s": prepare_cpu_s,  # spent before the first socket opened: not part of playing
        "t0_ns": t0,
        "frame_ns": FRAME_NS,
        "tracks": args.tracks,
        "calls": [call.record() for call in prepared],
    }
    write_atomically(args.out, json.dumps(record, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
