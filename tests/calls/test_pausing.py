"""`PauseWatch` when the database does not answer: the records' port says so as its one error, the watch says it
once in the log, the calls go on as they are, and it says when the records answer again."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from service.calls.pausing import ControlsUnavailable, PauseWatch
from service.calls.stream.pause import PauseControl
from service.storage.controls import DatabaseControls
from service.storage.schema import create_engine
from tests.helpers.logs import LogLines

NOW = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC)


async def test_a_database_that_does_not_answer_is_the_ports_one_error() -> None:
    engine = create_engine("postgresql://callscribe:x@127.0.0.1:9/callscribe")  # nothing listens on port 9
    controls = DatabaseControls(lambda: engine)
    try:
        with pytest.raises(ControlsUnavailable):
            await controls.of_calls(["CA1"])
        with pytest.raises(ControlsUnavailable):
            await controls.applied("CA1", 1, 2.0)
    finally:
        await engine.dispose()


class Records:
    """Pause records that fail until `answering`; what the watch wrote back."""

    def __init__(self) -> None:
        self.answering = False
        self.written: list[tuple[str, int, float]] = []

    async def of_calls(self, call_sids: Any) -> list[PauseControl]:
        if not self.answering:
            raise ControlsUnavailable("ConnectionRefusedError") from ConnectionRefusedError()
        return [PauseControl("CA1", 1, paused=True, by="agent-7")]

    async def applied(self, call_sid: str, version: int, at_s: float) -> None:
        self.written.append((call_sid, version, at_s))

    async def expire(self, control: PauseControl, now: datetime.datetime) -> PauseControl | None:
        return None


class Session:
    """What the watch sees of a session: its call, whether it is on, and the pauses it was given."""

    def __init__(self) -> None:
        self.call = SimpleNamespace(call_sid="CA1")
        self.active = True
        self.given: list[PauseControl] = []

    def apply_pause(self, control: PauseControl) -> float | None:
        self.given.append(control)
        return 3.5


async def test_the_watch_says_an_outage_once_and_applies_once_the_records_answer(log_lines: LogLines) -> None:
    records, session = Records(), Session()
    watch = PauseWatch(lambda: [session], records, clock=lambda: NOW)  # type: ignore[list-item]
    await watch.poll()
    await watch.poll()
    assert [line["error"] for line in log_lines.events("pause.controls_unreadable")] == ["ConnectionRefusedError"]
    assert session.given == []
    records.answering = True
    await watch.poll()
    assert len(log_lines.events("pause.controls_readable")) == 1
    assert session.given == [PauseControl("CA1", 1, paused=True, by="agent-7")]
    assert records.written == [("CA1", 1, 3.5)]
