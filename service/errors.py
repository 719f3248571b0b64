"""The service's exceptions. Foreign errors (SDK, websockets) are translated once, in `stt.py`.

CallscribeError
├── TwilioProtocolError   a message from Twilio we cannot understand (malformed JSON, bad field, bad base64)
├── InvalidState          a well-formed message the stream's state forbids (media before start, second start)
└── SttError              Deepgram could not transcribe for us
    ├── SttRejected       it refused us for good (401/403/400, 1008): retrying cannot help
    └── SttUnavailable    it failed in a way that may pass (refused, timeout, 5xx, 1006/1011/1012/1013)
"""

from __future__ import annotations


class CallscribeError(Exception):
    """Base of every error the service raises on purpose."""


class TwilioProtocolError(CallscribeError):
    """A message on /media that does not follow Twilio's Media Streams protocol."""


class InvalidState(CallscribeError):
    """A message that is well-formed but not allowed in the stream's current state."""


class SttError(CallscribeError):
    """Deepgram could not transcribe: `reason` is what Deepgram (or the network) said, safe to log."""

    def __init__(
        self, reason: str, *, status: int | None = None, close_code: int | None = None, kind: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.close_code = close_code
        self._kind = kind

    @property
    def kind(self) -> str:
        """A short, fixed label for metrics (`http_503`, `close_1011`, `silent`...): never the free-text reason."""
        if self._kind:
            return self._kind
        if self.status is not None:
            return f"http_{self.status}"
        if self.close_code is not None:
            return f"close_{self.close_code}"
        return "other"


class SttRejected(SttError):
    """Deepgram refused the request for good; do not retry."""


class SttUnavailable(SttError):
    """Deepgram failed in a way that may pass."""
