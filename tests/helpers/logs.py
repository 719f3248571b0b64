"""The service's log lines as a test reads them: parsed JSON, filtered by event, waited for."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from tests.helpers.waiting import eventually


@dataclass
class LogLines:
    buffer: io.StringIO

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines() if line.strip()]

    def events(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [
            line for line in self.all() if line.get("event") == name and all(line.get(k) == v for k, v in match.items())
        ]

    def text(self) -> str:
        return self.buffer.getvalue()

    async def wait_for(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first line of event `name` matching `match`, waiting for it to be written."""
        found = await eventually(lambda: self.events(name, **match), timeout=timeout)
        return found[0]


def final_words(log_lines: LogLines, call_sid: str, track: str = "inbound") -> list[str]:
    """Every word of the call's logged finals on `track`, in the order they were logged."""
    finals = log_lines.events("transcript", call_sid=call_sid, track=track, is_final=True)
    return [word for line in finals for word in line["text"].split()]
