"""The service's exceptions. Foreign errors (SDK, websockets, httpx) are translated once, in `service/deepgram/`.

CallscribeError
├── TwilioProtocolError   a message from Twilio we cannot understand (malformed JSON, bad field, bad base64)
├── InvalidState          a well-formed message the stream's state forbids (media before start, second start)
├── SttError              Deepgram could not transcribe for us
│   ├── SttRejected       it refused us for good (401/403/400, 1008): retrying cannot help
│   └── SttUnavailable    it failed in a way that may pass (refused, timeout, 5xx, 1006/1011/1012/1013)
└── StreamApiError        Twilio's REST API could not start or stop a stream on a live call (the hand-over)
"""

from __future__ import annotations

import enum


class CallscribeError(Exception):
    """Base of every error the service raises on purpose."""


class TwilioProtocolError(CallscribeError):
    """A message on /media that does not follow Twilio's Media Streams protocol."""


class InvalidState(CallscribeError):
    """A message that is well-formed but not allowed in the stream's current state."""


class SttFailure(enum.StrEnum):
    """What went wrong with Deepgram when no HTTP status or close code says it: a fixed metric label."""

    NO_KEY = "no_key"  # DEEPGRAM_API_KEY is not set
    CONNECT_TIMEOUT = "connect_timeout"  # the connection did not open in time
    UNREACHABLE = "unreachable"  # refused, DNS, routing
    HANDSHAKE = "handshake"  # the WebSocket upgrade went wrong
    NETWORK = "network"  # the socket failed while sending or reading
    SILENT = "silent"  # Deepgram sent nothing for DEEPGRAM_RESULT_TIMEOUT_S while audio waited
    CLOSE_TIMEOUT = "close_timeout"  # no final results within DEEPGRAM_CLOSE_TIMEOUT_S of CloseStream
    MISSING_FINALS = "missing_finals"  # Deepgram closed without finals for all the audio
    INTERNAL = "internal"  # a bug in callscribe ended the track
    OTHER = "other"


class SttError(CallscribeError):
    """Deepgram could not transcribe: `reason` is what Deepgram (or the network) said, safe to log."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        close_code: int | None = None,
        failure: SttFailure | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.close_code = close_code
        self.failure = failure

    @property
    def kind(self) -> str:
        """A short, fixed label for metrics (`http_503`, `close_1011`, `silent`...): never the free-text reason."""
        if self.failure is not None:
            return self.failure.value
        if self.status is not None:
            return f"http_{self.status}"
        if self.close_code is not None:
            return f"close_{self.close_code}"
        return SttFailure.OTHER.value


class SttRejected(SttError):
    """Deepgram refused the request for good; do not retry."""


class SttUnavailable(SttError):
    """Deepgram failed in a way that may pass."""


class StreamApiError(CallscribeError):
    """Twilio could not be asked, or refused: `status` is the HTTP status (0 when nothing answered).

    Here rather than beside the client (`twilio/stream_api.py`), so the hand-over can catch it without loading
    twilio's REST client and aiohttp (a quarter of a second of start-up) where hand-over is off.
    """

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
