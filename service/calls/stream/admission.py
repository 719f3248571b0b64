"""Orchestration: whether a stream's `start` is believed, before any Deepgram connection opens for it.

Twilio's upgrade signature covers the `wss://` URL alone, so it is the same for every call: it proves that
Twilio (or someone who once saw a Twilio upgrade) is on the line, not which call this is. A `start` is let in
only when, in this order:

1. its `accountSid` is TWILIO_ACCOUNT_SID, when that is set;
2. its stream token (`twilio/stream_tokens.py`, issued by /voice for this call, account and track setting, and
   for the `from` and `to` parameters beside it) is valid and fresh; with STREAM_TOKENS=off a stream without
   one is let in, with a warning;
3. its `streamSid` is not live, and its call has never had a first stream, unless the token is a hand-over's:
   in this process (`RecentStreams`, which remembers them as long as a token for them could still be fresh),
   then across processes and restarts through the database (`StreamClaims`, implemented in
   `storage/streams.py`, whose record of a call's first stream outlives the call's deletion and retention:
   a replayed `/voice` request mints a fresh token, so only that record refuses its stream), and a call that
   record says was given its outcome without one (not streamed: no stream within STREAM_START_TIMEOUT_S of
   /voice's answer, which its `call.not_streamed` event announced) gets none later.

Every refusal is one `AdmissionRefused` whose text is the close reason and the log line (never the token).
When the database cannot answer the cross-process question in time, the stream is let in on the other
checks, and the log says so: refusing real calls whenever the database is slow would block transcripts,
which is what these checks are for.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from service.settings import Settings
from service.twilio.protocol import Start
from service.twilio.stream_tokens import MAX_CLOCK_SKEW_S, PARAMETER, Purpose, TokenRefused, verify

log: Any = structlog.get_logger("callscribe.admission")

# The <Stream track> setting a stream's `start.tracks` stands for (what the token was issued for).
TRACK_SETTINGS: dict[frozenset[str], str] = {
    frozenset({"inbound"}): "inbound_track",
    frozenset({"outbound"}): "outbound_track",
    frozenset({"inbound", "outbound"}): "both_tracks",
}
ANY_PURPOSE = frozenset(Purpose)


class AdmissionRefused(Exception):
    """The stream is not let in; the message says why (close 1008 and one log line)."""


class ClaimOutcome(enum.StrEnum):
    """What the database says of a stream that wants to start."""

    CLAIMED = "claimed"  # it is this stream's now
    STREAM_TAKEN = "stream_taken"  # a stream with this streamSid already started
    CALL_TAKEN = "call_taken"  # the call has had its first stream, even if since deleted (and this is no hand-over)
    NOT_STREAMED = "not_streamed"  # the call was recorded as never streamed: its stream came too late
    UNCHECKED = "unchecked"  # the database did not answer in time: nothing is known


class StreamClaims(Protocol):
    """The port to the database's record of streams (`storage/streams.py`)."""

    async def claim(
        self, *, call_sid: str, stream_sid: str, purpose: str, track: str, first_stream: bool
    ) -> ClaimOutcome: ...


@dataclass(frozen=True, slots=True)
class Admission:
    """A `start` that passed the checks that need no I/O: what it may do, and its parameters without the token."""

    purpose: Purpose | None  # None: let in without a token (STREAM_TOKENS=off)
    track: str  # the track setting its tracks stand for
    parameters: dict[str, str]  # start.customParameters without the token: what may be kept, logged and sent on

    @property
    def first_stream(self) -> bool:
        """Whether this is a call's first stream (every stream but a hand-over's)."""
        return self.purpose is not Purpose.HANDOVER


class RecentStreams:
    """The streams and first streams this process let in lately: kept as long as a token for them could
    still be fresh, which is as long as a repeat of their `start` could pass the token check."""

    def __init__(self, keep_s: float, clock: Callable[[], float]) -> None:
        self._keep_s = keep_s
        self._clock = clock
        self._streams: dict[str, float] = {}  # streamSid -> when it may be forgotten
        self._calls: dict[str, float] = {}  # CallSid of a first stream -> when it may be forgotten

    def refusal(self, stream_sid: str, call_sid: str, *, first_stream: bool) -> str | None:
        self._forget_old()
        if stream_sid in self._streams:
            return f"stream {stream_sid} has already started"
        if first_stream and call_sid in self._calls:
            return f"call {call_sid} already has its stream (only a hand-over may start another)"
        return None

    def remember(self, stream_sid: str, call_sid: str, *, first_stream: bool) -> None:
        until = self._clock() + self._keep_s
        self._streams[stream_sid] = until
        if first_stream:
            self._calls[call_sid] = until

    def _forget_old(self) -> None:
        now = self._clock()
        for seen in (self._streams, self._calls):
            for key in [key for key, until in seen.items() if until <= now]:
                del seen[key]


class StreamGate:
    """This process's admission of streams: the checks, in order, and what they remember."""

    def __init__(
        self,
        settings: Settings,
        *,
        key: bytes | None,
        claims: StreamClaims,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._key = key
        self._claims = claims
        self._clock = clock
        self.recent = RecentStreams(settings.stream_token_ttl_s + MAX_CLOCK_SKEW_S, clock)

    def check(self, start: Start) -> Admission:
        """The checks that need no I/O; raises AdmissionRefused. A stream let in here is remembered at once, so
        a second `start` for it in this process is refused even before the database has answered."""
        self._check_account(start.account_sid)
        track = TRACK_SETTINGS[frozenset(start.tracks)]
        purpose = self._check_token(start, track)
        admission = Admission(purpose=purpose, track=track, parameters=without_token(start.custom_parameters))
        why = self.recent.refusal(start.stream_sid, start.call_sid, first_stream=admission.first_stream)
        if why is not None:
            raise AdmissionRefused(why)
        self.recent.remember(start.stream_sid, start.call_sid, first_stream=admission.first_stream)
        return admission

    async def claim(self, start: Start, admission: Admission) -> None:
        """The cross-process check, through the database; raises AdmissionRefused."""
        outcome = await self._claims.claim(
            call_sid=start.call_sid, stream_sid=start.stream_sid, purpose=str(admission.purpose or ""),
            track=admission.track, first_stream=admission.first_stream,
        )  # fmt: skip
        if outcome is ClaimOutcome.STREAM_TAKEN:
            raise AdmissionRefused(f"stream {start.stream_sid} has already started (in another process)")
        if outcome is ClaimOutcome.CALL_TAKEN:
            # The database's record outlives the call's deletion and retention, and this process's own memory.
            why = "recorded for good; only a hand-over may start another"
            raise AdmissionRefused(f"call {start.call_sid} already had its stream ({why})")
        if outcome is ClaimOutcome.NOT_STREAMED:
            # Its outcome, and its call.not_streamed event, went out: a call ends in one terminal event.
            raise AdmissionRefused(
                f"call {start.call_sid} was recorded as not streamed: its stream did not start within "
                f"STREAM_START_TIMEOUT_S ({self._settings.stream_start_timeout_s:g} s) of /voice's answer"
            )
        if outcome is ClaimOutcome.UNCHECKED:
            log.warning(
                "stream.claim_unchecked",
                why="the database did not answer: let in on the token and this process's own record",
            )

    def _check_account(self, account_sid: str) -> None:
        expected = self._settings.twilio_account_sid
        if expected is not None and account_sid != expected:
            raise AdmissionRefused(f"stream for account {account_sid[:34]}, not TWILIO_ACCOUNT_SID")

    def _check_token(self, start: Start, track: str) -> Purpose | None:
        token = start.custom_parameters.get(PARAMETER)
        if token is None and self._settings.stream_tokens == "off":
            log.warning("stream.token_missing", why="STREAM_TOKENS=off: let in without a stream token")
            return None
        if self._key is None:
            # No secret to check a token with: only reachable with CALLSCRIBE_INSECURE_DEV and no auth token.
            log.warning("stream.token_unchecked", why="no TWILIO_AUTH_TOKEN or STREAM_TOKEN_SECRET to check it with")
            return None
        try:
            return verify(
                self._key, token, account_sid=start.account_sid, call_sid=start.call_sid, track=track,
                parameters=start.custom_parameters, now=self._clock(), ttl_s=self._settings.stream_token_ttl_s,
                purposes=ANY_PURPOSE,
            )  # fmt: skip
        except TokenRefused as exc:
            raise AdmissionRefused(f"stream token refused ({exc.reason.value}): {exc}") from None


def without_token(parameters: Mapping[str, str]) -> dict[str, str]:
    """The stream's parameters as they may be stored, logged and sent on: everything but the token."""
    return {name: value for name, value in parameters.items() if name != PARAMETER}
