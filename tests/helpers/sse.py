"""A client of the live feed (`GET /api/live`) for tests: Server-Sent Events parsed as the HTML standard says.

`FeedReader` reads in a task of its own and keeps every event and comment, so a test can place calls and then
await what the feed said (`wait_for`), or look at the whole of it once the reader is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.helpers.waiting import eventually


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: dict[str, Any]
    id: str | None  # the event's own `id:` line (None for the feed's own events, which carry none)


@dataclass
class FeedReader:
    """One subscriber: `url` is the service's, `headers` its credentials, `params` the query string."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    ended: bool = False  # the server ended the response
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FeedReader:
        self._task = asyncio.create_task(self._read())
        await eventually(lambda: self.comments or self.status not in (None, 200) or self.ended, timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", f"{self.url}/api/live", headers=self.headers, params=self.params) as response,
        ):
            self.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                return
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                self._line(line, fields)
            self.ended = True

    def _line(self, line: str, fields: dict[str, str]) -> None:
        if line == "":
            if "data" in fields:
                self.events.append(
                    SseEvent(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))
                )
            fields.clear()
        elif line.startswith(":"):
            self.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    def of(self, kind: str, **match: Any) -> list[SseEvent]:
        return [e for e in self.events if e.event == kind and all(e.data.get(k) == v for k, v in match.items())]

    @property
    def last_id(self) -> str | None:
        ids = [event.id for event in self.events if event.id is not None]
        return ids[-1] if ids else None

    async def wait_for(self, kind: str, timeout: float = 15.0, **match: Any) -> SseEvent:
        found = await eventually(lambda: self.of(kind, **match), timeout=timeout, interval=0.02)
        return found[0]
