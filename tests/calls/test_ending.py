"""How a stream ended: a closed set for the metric, the same text as before for the log and the database."""

from __future__ import annotations

import pytest

from service.calls.meter import ended_by_label
from service.calls.stream.ending import EndedBy, Ending


@pytest.mark.parametrize(
    ("ending", "kept", "label"),
    [
        (Ending(EndedBy.STOP), "stop", "stop"),
        (Ending(EndedBy.TWILIO_DISCONNECTED), "twilio_disconnected", "twilio_disconnected"),
        (Ending(EndedBy.SHUTDOWN), "shutdown", "shutdown"),
        (Ending.rejected("bad message: not JSON"), "rejected: bad message: not JSON", "rejected"),
        # A reason with a colon of its own stays whole, and never reaches the label.
        (
            Ending.rejected("media for track 'x: y' not in start"),
            "rejected: media for track 'x: y' not in start",
            "rejected",
        ),
        (None, None, "closed_before_start"),  # the socket closed before Twilio's start
    ],
)
def test_ended_by(ending: Ending | None, kept: str | None, label: str) -> None:
    assert (None if ending is None else str(ending)) == kept
    assert ended_by_label(ending) == label
