"""A track's Deepgram state: the moves that happen, and the ones that must not."""

from __future__ import annotations

import pytest

from service.calls.pipeline.engine_state import EngineSide, EngineState

CONNECTING, OPEN, IDLE = EngineState.CONNECTING, EngineState.OPEN, EngineState.IDLE
DRAINING, CLOSED, FAILED = EngineState.DRAINING, EngineState.CLOSED, EngineState.FAILED


@pytest.mark.parametrize(
    ("start", "to", "after"),
    [
        (CONNECTING, OPEN, OPEN),  # a connection opened
        (OPEN, IDLE, IDLE),  # the sender caught up and sleeps: the read loop may send
        (IDLE, OPEN, OPEN),  # it woke
        (OPEN, CONNECTING, CONNECTING),  # the connection failed: reconnect
        (IDLE, DRAINING, DRAINING),  # Twilio's stop while the sender sleeps
        (CONNECTING, DRAINING, DRAINING),  # stop while reconnecting: the next connection only drains
        (DRAINING, OPEN, DRAINING),  # ... so opening it does not bring the input back
        (DRAINING, CONNECTING, DRAINING),  # a failure while draining: still draining after the reconnect
        (DRAINING, IDLE, DRAINING),  # the read loop must never send once input ended
        (DRAINING, CLOSED, CLOSED),  # everything final
        (CONNECTING, CLOSED, CONNECTING),  # never closed without draining first
        (OPEN, FAILED, FAILED),  # live gave up
        (CLOSED, FAILED, FAILED),  # a bug after the close still gives up (and spools) the track
        (CLOSED, DRAINING, CLOSED),  # a late stop does not reopen an ended track
        (FAILED, DRAINING, FAILED),  # ... nor a failed one
        (FAILED, OPEN, FAILED),
    ],
)
def test_moves(start: EngineState, to: EngineState, after: EngineState) -> None:
    side = EngineSide()
    side.state = start
    side.move(to)
    assert side.state is after


def test_a_track_starts_connecting() -> None:
    assert EngineSide().state is CONNECTING
