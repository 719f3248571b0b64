"""Protocol layer (pure): what a track knows about its engine side (its speech-to-text connections): the state
it is in, and its connection.

`EngineState` is the one answer to "what is this track's engine side doing?"; `EngineSide.move` is
the only place it changes, along `_MOVES`. `Connection` is the open connection with its clocks: the sender
and the receiver of that connection read and set them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from service.stt.engine import LiveStream


class EngineState(enum.Enum):
    """Where a track's Deepgram side is:

        CONNECTING -> OPEN                    a connection opened (it replays first what is not yet final)
        OPEN <-> IDLE                         the sender caught up and sleeps, or woke (one frame per message)
        OPEN, IDLE -> CONNECTING              the connection failed: back off, reconnect, replay
        CONNECTING, OPEN, IDLE -> DRAINING    no more input: Twilio's stream ended, or the spool takes the rest
        DRAINING -> CLOSED                    Deepgram made everything final
        any -> FAILED                         live transcription gave up on the track

    Any other move is no move: DRAINING outlasts a reconnect (the new connection only drains), and an ended
    track stays ended. Replaying is no state of its own: a connection opened after a failed one replays its
    first `replay_bytes`, paced, and then only catches up.
    """

    CONNECTING = "connecting"  # no connection yet, or backing off between two; audio waits in the ledger
    OPEN = "open"  # connected: the sender task sends the ledger (a replay paced), and KeepAlive when idle
    IDLE = "idle"  # connected, caught up, the sender asleep: the read loop sends new frames itself
    DRAINING = "draining"  # no more input for Deepgram: flush, CloseStream, wait (bounded) for the last finals
    CLOSED = "closed"  # Deepgram made all the audio it was sent final
    FAILED = "failed"  # live gave up (rejected, outage too long, a bug): the rest of the track is spooled


_MOVES: Final[Mapping[EngineState, frozenset[EngineState]]] = MappingProxyType(
    {
        EngineState.CONNECTING: frozenset({EngineState.OPEN, EngineState.DRAINING, EngineState.FAILED}),
        EngineState.OPEN: frozenset(
            {EngineState.IDLE, EngineState.CONNECTING, EngineState.DRAINING, EngineState.FAILED}
        ),
        EngineState.IDLE: frozenset(
            {EngineState.OPEN, EngineState.CONNECTING, EngineState.DRAINING, EngineState.FAILED}
        ),
        EngineState.DRAINING: frozenset({EngineState.CLOSED, EngineState.FAILED}),
        EngineState.CLOSED: frozenset({EngineState.FAILED}),
        EngineState.FAILED: frozenset(),
    }
)

# Compared on every frame: a module constant is one lookup, an Enum member as a class attribute ~50 ns on 3.11.
IDLE: Final = EngineState.IDLE
DRAINING: Final = EngineState.DRAINING


class EngineSide:
    """A track's Deepgram state, shared by the track and its sender."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = EngineState.CONNECTING

    def move(self, to: EngineState) -> None:
        """The one place the state changes; a move `_MOVES` does not list is no move."""
        if to in _MOVES[self.state]:
            self.state = to


@dataclass(slots=True)
class Connection:
    """One open Deepgram connection and its clocks (loop time)."""

    live: LiveStream
    replay_bytes: int = 0  # the connection's first bytes that are a replay (pending when it opened after a failure)
    started_at: float = 0.0  # when its sender started: the replay pace counts from here
    last_sent_at: float = 0.0  # the last message to Deepgram: KeepAlive is due DEEPGRAM_KEEPALIVE_S later
    last_heard_at: float = 0.0  # the last message from Deepgram, for DEEPGRAM_RESULT_TIMEOUT_S
    produced_results: bool = False  # a final came: if the connection fails now, a fresh outage begins

    def start_clocks(self, now: float) -> None:
        self.started_at = self.last_sent_at = self.last_heard_at = now
