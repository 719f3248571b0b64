"""Protocol layer (pure): how a Twilio stream ended, as a closed set plus a rejection's reason.

`EndedBy` is what the calls metric is labelled with (a label takes a fixed set of values, never free text);
`Ending` adds the reason a stream was rejected, and its `str()` is what the call.ended line and the
database keep: "stop", "twilio_disconnected", "shutdown", "handed_over", or "rejected: <reason>".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EndedBy(enum.StrEnum):
    STOP = "stop"  # Twilio's stop message
    TWILIO_DISCONNECTED = "twilio_disconnected"  # the socket closed while streaming, without a stop
    IDLE_TIMEOUT = (
        "idle_timeout"  # the stream sent nothing for STREAM_IDLE_TIMEOUT_S: finished as if Twilio had hung up
    )
    SHUTDOWN = "shutdown"  # this process is stopping
    HANDED_OVER = "handed_over"  # this process is stopping, and a new stream of the call took over elsewhere
    REJECTED = "rejected"  # callscribe closed the stream over bad input


@dataclass(frozen=True, slots=True)
class Ending:
    how: EndedBy
    detail: str = ""  # why a stream was rejected; empty for the others

    @classmethod
    def rejected(cls, reason: str) -> Ending:
        return cls(EndedBy.REJECTED, reason)

    def __str__(self) -> str:
        if self.how is EndedBy.REJECTED:
            return f"{self.how.value}: {self.detail}"
        return self.how.value
