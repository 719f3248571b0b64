"""Orchestration: a stopping process hands its calls' streams to another one, through Twilio's REST API.

Twilio never reopens a stream the server closed, so on SIGTERM each live stream asks Twilio for a second stream
of its call (`Calls/{CallSid}/Streams`, `twilio/stream_api.py`) to the same public `/media` URL, with the same
track setting, the call's parameters and a hand-over token (`twilio/stream_tokens.py`, purpose `handover`, which
`/voice` never issues). The router sends it to a process that is still taking calls: another dyno, or with
preboot the new release's. The sequence, on the call's timeline:

1. `t_ask`: the old stream holds its words from here on (`StreamShare.hold_from`) and asks Twilio.
2. The new stream's `start` reaches the other process, whose gate lets it in only with that token, and records
   it in the database's `streams` table (its `started_at`): `offset_s` on the call's timeline.
3. The old process sees that row (it polls the table: the database is already what every process shares for
   admission, and a row there means the new stream is not only started at Twilio but let in, claimed and
   buffering; a Twilio status callback would need a public route and says only the former), and both sides
   compute the cut, `offset_s + OVERLAP_S`.
4. The old stream goes on until its audio is `OVERLAP_S` past the cut, so a word spoken across the cut is whole
   in it, then ends (`handed_over`) and Twilio is asked to stop it; its last finals keep the words before the cut.
5. Its end is written to the database after its last words; the new stream, which held its words until then,
   lets them out: the words from the cut on, after the old stream's, in every log, table and webhook.

When no one can take over (hand-over off, Twilio's API unreachable or refusing, among which a call with no room
left for the second stream under Twilio's 4 forks per call, no process letting the new stream in within
HANDOVER_TIMEOUT_S), the call is drained as before and the log says why, once per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from service.errors import StreamApiError
from service.twilio.stream_tokens import PARAMETER, Claim, Purpose, issue, numbers

if TYPE_CHECKING:
    from service.calls.counters import CallInfo
    from service.calls.handover.stitching import StreamShare
    from service.calls.stream.ending import Ending
    from service.calls.transcript import Transcript
    from service.twilio.stream_api import StreamApi

log: Any = structlog.get_logger("callscribe.handover")

OVERLAP_S = 1.0  # the cut lies this far into the overlap, and the old stream goes on this far past it
POLL_S = 0.05  # how often the database (and the old stream's audio) is looked at while handing over
RELEASE_AFTER_S = 40.0  # the longest a new stream holds its words for an old one that never says it ended


class StreamRecords(Protocol):
    """The port to the database's record of a call's streams (`storage/streams.py`)."""

    async def offset_s(self, call_sid: str, stream_sid: str) -> float | None:
        """Where the stream started on the call's timeline; None while it has no row (or the call's first has none)."""
        ...

    async def others_live(self, call_sid: str, stream_sid: str) -> bool:
        """Whether a stream of the call that started before this one has not ended yet."""
        ...


async def wait_until_others_ended(records: StreamRecords, call_sid: str, stream_sid: str, timeout_s: float) -> bool:
    """Wait (bounded) until the streams this one took over from have ended; False if the bound came first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not await records.others_live(call_sid, stream_sid):
                return True
        except Exception as exc:  # noqa: BLE001 - an outage only delays the words: the bound still holds
            log.warning("handover.lookup_failed", error=type(exc).__name__)
        await asyncio.sleep(POLL_S)
    return False


class HandingOver(Protocol):
    """What a hand-over needs of a live stream (`stream/session.py`'s `CallSession`): named here, so hand-over
    and the session each know the other only through this."""

    call: CallInfo | None
    share: StreamShare
    ended_by: Ending | None
    stream_url: str
    track_setting: str

    @property
    def started(self) -> bool: ...

    def heard_until_s(self) -> float: ...

    def emit_now(self, transcripts: list[Transcript]) -> None: ...

    def hand_over_done(self) -> None: ...

    def cancel_handover(self) -> None: ...


class Handover:
    """One process's hand-over of its live streams, at SIGTERM."""

    def __init__(
        self,
        api: StreamApi,
        records: StreamRecords,
        *,
        key: bytes,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._records = records
        self._key = key
        self._timeout_s = timeout_s
        self._clock = clock

    async def hand_over_all(self, sessions: Sequence[HandingOver]) -> None:
        """Hand over every started stream at once; each that cannot be is drained as before."""
        live = [session for session in sessions if session.started and session.ended_by is None]
        await asyncio.gather(*(self.hand_over(session) for session in live))

    async def hand_over(self, session: HandingOver) -> bool:
        """Move one stream's call to a new stream elsewhere; False (and one log line why) if it cannot be."""
        call = session.call
        assert call is not None  # started
        with structlog.contextvars.bound_contextvars(call_sid=call.call_sid, stream_sid=call.stream_sid):
            try:
                await self._move(session)
            except HandoverFailed as exc:
                session.cancel_handover()
                log.warning("handover.skipped", why=str(exc), action="draining the stream as without hand-over")
                return False
            except Exception:
                # A bug here must not keep this call, or any other, from being drained.
                session.cancel_handover()
                log.exception("handover.failed", action="draining the stream as without hand-over")
                return False
            return True

    async def _move(self, session: HandingOver) -> None:
        call = session.call
        assert call is not None
        asked_at = session.heard_until_s()
        session.share.hold_from(asked_at)
        new_sid = await self._ask_twilio(session)
        offset = await self._wait_for(call.call_sid, new_sid)
        cut = offset + OVERLAP_S
        session.emit_now(session.share.cut_after(cut))
        await self._overlap_until(session, cut + OVERLAP_S)
        session.hand_over_done()
        log.info(
            "handover.done", new_stream_sid=new_sid, cut_s=round(cut, 3), waited_s=round(offset - asked_at, 3),
            overlap_s=round(session.heard_until_s() - offset, 3),
        )  # fmt: skip
        try:
            await self._api.stop_stream(call.call_sid, call.stream_sid)
        except StreamApiError as exc:
            log.info("handover.stop_failed", why=str(exc), action="the shutdown closes the old stream")

    async def _ask_twilio(self, session: HandingOver) -> str:
        call = session.call
        assert call is not None
        from_number, to_number = numbers(call.custom_parameters)  # the first stream's, which its token covered
        claim = Claim(
            Purpose.HANDOVER, call.account_sid, call.call_sid, session.track_setting, int(self._clock()),
            from_number=from_number, to_number=to_number,
        )  # fmt: skip
        parameters = {**call.custom_parameters, PARAMETER: issue(self._key, claim)}
        try:
            return await self._api.start_stream(
                call.call_sid, url=session.stream_url, track=session.track_setting, parameters=parameters
            )
        except StreamApiError as exc:
            raise HandoverFailed(str(exc)) from None

    async def _wait_for(self, call_sid: str, new_sid: str) -> float:
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            try:
                offset = await self._records.offset_s(call_sid, new_sid)
            except Exception as exc:  # noqa: BLE001 - the database may come back within the bound
                log.warning("handover.lookup_failed", error=type(exc).__name__)
                offset = None
            if offset is not None:
                return offset
            await asyncio.sleep(POLL_S)
        await self._stop_quietly(call_sid, new_sid)
        raise HandoverFailed(
            f"no process let the new stream {new_sid} in within HANDOVER_TIMEOUT_S ({self._timeout_s:g} s): "
            "one dyno and no preboot, or every other process busy or stopping"
        )

    async def _stop_quietly(self, call_sid: str, stream_sid: str) -> None:
        """A new stream that no one let in yet may still be, later: Twilio stops it, so it transcribes nothing twice."""
        try:
            await self._api.stop_stream(call_sid, stream_sid)
        except StreamApiError as exc:
            log.info("handover.stop_failed", stream=stream_sid, why=str(exc))

    async def _overlap_until(self, session: HandingOver, until_s: float) -> None:
        """The old stream goes on until its audio reaches `until_s` (or Twilio stops sending it)."""
        deadline = time.monotonic() + (until_s - session.heard_until_s()) * 2 + self._timeout_s
        # A timer, not an event set per frame: the read loop's 50 frames a second stay untouched.
        while session.heard_until_s() < until_s and session.ended_by is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)


class HandoverFailed(Exception):
    """Why a stream was not handed over; the text is the log line's `why`."""
