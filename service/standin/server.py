"""The Deepgram stand-in on one port: `python -m service standin`, and `make try`'s Deepgram.

Deepgram serves its live WebSockets (`/v1/listen`, Flux's `/v2/listen`) and its REST APIs (pre-recorded
`/v1/listen`, text intelligence `/v1/read`, `/v1/projects`) at one host, and DEEPGRAM_URL names that one host
for both. Here they are the tests' two fakes (`live.FakeDeepgram`, `rest.FakeDeepgramBatch`), each on its own
loopback port, behind one listening socket that reads a request's head and splices the connection through to
the live server when it asks for a WebSocket upgrade and to the REST one otherwise. The fakes stay exactly what
the tests drive; the router only moves bytes.

Its words are readable (`words.readable_word`) and are placeholders: chosen from the audio by a hash, the same
audio giving the same words, never speech recognition. Every answer of the REST side carries `STANDIN_HEADER`,
and `GET /v1/projects` names the project `PROJECT_NAME`, so `python -m service demo` can tell a user that a
transcript came from the stand-in.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from types import TracebackType
from typing import Final

from service.standin.live import FakeDeepgram
from service.standin.rest import FakeDeepgramBatch
from service.standin.words import WordChooser, readable_word

STANDIN_HEADER: Final = "callscribe-standin"  # on every REST answer; `demo` looks for it
PLACEHOLDER_NOTE: Final = "placeholder words chosen from the audio, not speech recognition"
PROJECT_NAME: Final = "callscribe stand-in"
MAX_HEAD_BYTES: Final = 64 * 1024  # a request head longer than this is refused (431)
SPLICE_CHUNK: Final = 64 * 1024
UPGRADE: Final = b"websocket"
KEPT_REQUESTS: Final = 1000  # `StandIn.requests` keeps the latest this many

_logger = logging.getLogger(__name__)


def is_websocket_upgrade(head: bytes) -> bool:
    """Whether an HTTP/1.1 request head (request line and headers) asks for a WebSocket upgrade."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and UPGRADE in value.strip().lower():
            return True
    return False


def request_line(head: bytes) -> str:
    """The method and path of a request head, without the query (for the stand-in's one line per request)."""
    method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    return f"{method} {rest.split(' ', 1)[0].split('?', 1)[0]}"


class StandIn:
    """Deepgram's live, pre-recorded and text-intelligence APIs on `host:port` (port 0: one the OS picks), as an
    async context manager. Any API key is taken: there is no account to check it against."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, words: WordChooser = readable_word) -> None:
        self.host = host
        self.live = FakeDeepgram(api_key=None, words=words, record=False)
        self.rest = FakeDeepgramBatch(
            api_key=None,
            words=words,
            project_name=PROJECT_NAME,
            headers={STANDIN_HEADER: PLACEHOLDER_NOTE},
            record=False,
        )
        # "METHOD /path" of the requests routed, in order (the latest KEPT_REQUESTS)
        self.requests: collections.deque[str] = collections.deque(maxlen=KEPT_REQUESTS)
        self._port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> StandIn:
        await self.live.__aenter__()
        await self.rest.__aenter__()
        try:
            self._server = await asyncio.start_server(self._route, self.host, self._port, limit=MAX_HEAD_BYTES)
        except OSError:
            await self._stop_fakes()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        await self._stop_fakes()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("StandIn is not started; use `async with StandIn() as standin`")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """`http://HOST:PORT`: what DEEPGRAM_URL takes (the live socket is the same host with ws://)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def _stop_fakes(self) -> None:
        await self.live.stop()
        await self.rest.__aexit__(None, None, None)

    async def _route(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        backend: asyncio.StreamWriter | None = None
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                writer.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n")
                return
            except asyncio.IncompleteReadError:
                return  # the client went before finishing its request: nothing to answer
            line = request_line(head)
            self.requests.append(line)
            _logger.info("%s", line)  # one line per request, as a server's access log (the query may be long)
            port = self.live.port if is_websocket_upgrade(head) else self.rest.port
            backend_reader, backend = await asyncio.open_connection("127.0.0.1", port)
            self._writers.add(backend)
            backend.write(head)
            await asyncio.gather(_pump(reader, backend), _pump(backend_reader, writer))
        except ConnectionError:
            pass  # either side went away; both are closed below
        finally:
            for side in (writer, backend):
                if side is not None:
                    self._writers.discard(side)
                    await _close(side)

    def __repr__(self) -> str:
        return f"StandIn({self.url if self._server is not None else 'stopped'})"


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from `reader` to `writer` until end of stream, then end `writer`'s side too (half-close)."""
    try:
        while data := await reader.read(SPLICE_CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
