"""Protocol layer (pure, no I/O): Twilio's messages on one stream, read and checked before anything acts on them.

`TwilioMessages.read` bounds a message's size before parsing it, parses it (`twilio/protocol.py`), moves the
stream's state, and counts what Twilio numbered but never delivered; what fails becomes a `Reject` with the close
code and reason the session sends. The session (`session.py`) acts on the events it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import InvalidState, TwilioProtocolError
from service.twilio import close_codes
from service.twilio.protocol import Media, Start, StreamState, TwilioEvent, Unknown, parse, transition

CLOSE_REASON_BYTES = 123  # the most a WebSocket close frame's reason may hold


@dataclass(frozen=True, slots=True)
class Reject:
    """Close Twilio's WebSocket with this code and reason."""

    code: int
    reason: str


def close_reason(reason: str) -> str:
    """`reason` as a close frame can carry it: cut to 123 bytes, never mid-character."""
    return reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")


class TwilioMessages:
    """One stream's messages as Twilio sent them: counted, bounded, parsed, and in the order the protocol allows."""

    __slots__ = ("_last_sequence", "_max_bytes", "_unknown", "count", "missing", "state")

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self.state = StreamState.AWAITING_CONNECTED
        self.count = 0  # every message Twilio sent on this stream (for /metrics)
        self.missing = 0  # messages Twilio numbered and never delivered
        self._last_sequence = 0
        self._unknown: set[str] = set()

    def read(self, data: str | bytes) -> TwilioEvent | Reject:
        """The event one message is, or why the stream must be closed for it."""
        self.count += 1
        if len(data) > self._max_bytes:
            return Reject(
                close_codes.MESSAGE_TOO_BIG,
                f"message of {len(data)} bytes is over MAX_MESSAGE_BYTES ({self._max_bytes})",
            )
        try:
            event = parse(data)
            self.state = transition(self.state, event)
        except TwilioProtocolError as exc:
            return Reject(close_codes.INVALID_PAYLOAD, f"bad message: {exc}")
        except InvalidState as exc:
            return Reject(close_codes.POLICY_VIOLATION, str(exc))
        if isinstance(event, Media):  # the hot path: 50 a second per track
            number = event.sequence_number
            if self._last_sequence and number > self._last_sequence + 1:  # a jump: messages never delivered
                self.missing += number - self._last_sequence - 1
            self._last_sequence = max(self._last_sequence, number)
        elif isinstance(event, Start):
            self._last_sequence = event.sequence_number  # Twilio numbers every message after `connected`
        return event

    def first_of_its_kind(self, event: Unknown) -> bool:
        """An event type this stream has not sent before (each unknown type is said once per stream)."""
        if event.event in self._unknown:
            return False
        self._unknown.add(event.event)
        return True
