"""The registry's bound on sockets waiting for `start`: which one makes room for a newer socket."""

from __future__ import annotations

from typing import Any

from service.calls.registry import Calls
from service.metrics import CALLS_ACTIVE


class Socket:
    """Stands for a session: all the registry asks of one here is whether it still awaits its start."""

    def __init__(self, *, awaiting_start: bool) -> None:
        self.awaiting_start = awaiting_start


def test_the_oldest_socket_without_a_start_makes_room_and_one_mid_start_never_does() -> None:
    """A socket whose start is being let in (a real call, its database claim in flight) is skipped."""
    calls = Calls(max_calls=2)
    starting, silent, later = Socket(awaiting_start=False), Socket(awaiting_start=True), Socket(awaiting_start=True)
    sessions: list[Any] = [starting, silent, later]
    for session in sessions:
        calls.add(session)
    try:
        assert calls.oldest_waiting() is silent
        assert calls.oldest_waiting() is later
        assert calls.oldest_waiting() is None
        assert calls.waiting == 1  # the one mid-start still waits, and still counts
    finally:
        CALLS_ACTIVE.dec(len(sessions))  # `add` counted them in the process-wide gauge
