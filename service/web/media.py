"""Wiring layer: `/media`, the WebSocket Twilio streams each call's audio to; `session.py` does the work.

The upgrade is refused (403) unless Twilio signed it, and closed with 1013 (try again later) above
MAX_CALLS or while shutting down; at the bound on sockets that have not started, the oldest of them is closed
to make room (`calls/registry.py`). A socket then has
STREAM_START_TIMEOUT_S to send a `start` that the stream gate lets in (`calls/stream/admission.py`); once started,
it is finished as if Twilio had hung up when it sends nothing for STREAM_IDLE_TIMEOUT_S. Served as plain ASGI
(media_socket.py): the message loop of a started stream runs 50 times a second per track, so it stays one
loop with nothing between the socket and the session, and its idle deadline is moved by a timer a few times
per timeout, never per message.
"""

from __future__ import annotations

import asyncio

import structlog

from service.calls.stream.messages import Reject
from service.calls.stream.session import CallSession
from service.refusals import log_refusal
from service.twilio import close_codes
from service.twilio.urls import request_stream_url, stream_url
from service.web.media_socket import TwilioSocket
from service.web.readiness import busy_reason
from service.web.runtime import Runtime

log = structlog.get_logger("callscribe.app")
IDLE_CHECKS_PER_TIMEOUT = 4  # how often the idle deadline is looked at: it fires between 1 and 1.25 timeouts


class MediaStreams:
    """The /media handler: one `serve` per stream, each with its own `CallSession`."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def serve(self, socket: TwilioSocket) -> None:
        """One stream, from the upgrade to the close."""
        if not await self._admitted(socket):
            return
        try:
            await self._stream(socket)
        except Exception:
            # A bug in one call's handling ends that call only, and says so (the process and other calls go on).
            log.exception("media.internal_error")
            await socket.close(close_codes.INTERNAL_ERROR, "callscribe internal error")

    async def _admitted(self, socket: TwilioSocket) -> bool:
        """Accept the upgrade if Twilio signed it and a call fits now; otherwise refuse it, and say why."""
        runtime = self._runtime
        url = stream_url(runtime.settings, socket.host)
        signature, claimed = socket.header("X-Twilio-Signature"), request_stream_url(socket.host)
        why = runtime.signatures.refusal(url, {}, signature, request_url=claimed)
        if why is not None:
            log_refusal(log, "media.refused", socket.client_address, status=403, why=why)
            await socket.refuse(403, "Forbidden: stream not signed by Twilio\n")  # the upgrade fails
            return False
        await socket.accept()
        busy = busy_reason(runtime.calls, runtime.settings)
        if busy is not None:
            log.warning("media.refused", close_code=close_codes.TRY_AGAIN_LATER, why=busy)
            await socket.close(close_codes.TRY_AGAIN_LATER, busy)
            return False
        await self._make_room()
        return True

    async def _make_room(self) -> None:
        """At the bound on sockets waiting for `start`, the one that has waited longest makes way for this one."""
        calls, bound = self._runtime.calls, self._runtime.settings.max_unstarted_streams
        while calls.waiting >= bound and (oldest := calls.oldest_waiting()) is not None:
            await oldest.push_out(bound)

    async def _stream(self, socket: TwilioSocket) -> None:
        runtime = self._runtime
        session = CallSession(
            settings=runtime.settings,
            engines=runtime.stt,
            spool=runtime.spool,
            observer=runtime.observer,
            close_twilio=socket.close,
            gate=runtime.gate,
            stream_url=stream_url(runtime.settings, socket.host),
            records=runtime.records,
        )
        runtime.calls.add(session)
        runtime.tasks.start(runtime.calls.forget_when_finished(session))
        try:
            if await self._until_started(socket, session):
                await self._relay(socket, session)
        finally:
            # Also when Twilio hung up or the handler was cancelled: the session's own tasks finish Deepgram's side.
            session.twilio_ended()

    async def _until_started(self, socket: TwilioSocket, session: CallSession) -> bool:
        """Twilio's messages up to its `start`, which must come (and be let in) within STREAM_START_TIMEOUT_S.

        True when the stream started; False when it was closed instead.
        """
        timeout_s = self._runtime.settings.stream_start_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while (message := await socket.receive()) is not None:
                    reject = session.on_message(message)
                    if reject is None and session.starting:
                        reject = await self._start(session)
                    if await self._closed_after(socket, session, reject):
                        return False
                    if session.started:
                        return True
        except TimeoutError:
            why = f"no start message within STREAM_START_TIMEOUT_S ({timeout_s:g} s)"
            log.warning("media.refused", close_code=close_codes.POLICY_VIOLATION, why=why)
            await socket.close(close_codes.POLICY_VIOLATION, why)
        return False

    async def _start(self, session: CallSession) -> Reject | None:
        """A start that passed the session's own checks: room for it here, then the cross-process check."""
        busy = busy_reason(self._runtime.calls, self._runtime.settings)
        if busy is not None:  # MAX_CALLS filled up while this socket waited for its start
            return session.refuse(close_codes.TRY_AGAIN_LATER, busy)
        reject = await session.finish_start()
        if reject is None:
            self._runtime.calls.started(session)
            await self._runtime.pauses.join(session)  # a paused call's new stream hears nothing of the pause
        if session.call is not None:
            self._runtime.stream_watch.arrived(session.call.call_sid)
        return reject

    async def _relay(self, socket: TwilioSocket, session: CallSession) -> None:
        """A started stream's messages to its session until it ends, or goes quiet for STREAM_IDLE_TIMEOUT_S."""
        idle_s = self._runtime.settings.stream_idle_timeout_s
        try:
            async with asyncio.timeout(None) as deadline:
                watch = IdleWatch(session, deadline, idle_s)
                try:
                    while (message := await socket.receive()) is not None:
                        reject = session.on_message(message)
                        if reject is not None:
                            await socket.close(reject.code, reject.reason)
                            return
                        if session.pushed:
                            await session.send_pushed()
                        if session.ended_by is not None:
                            await socket.close(close_codes.NORMAL, "stream stopped")
                            return
                finally:
                    watch.stop()
        except TimeoutError:
            if not deadline.expired():
                raise  # not ours: a timeout from further down, for the per-stream handler above
            reject = session.went_idle(idle_s)
            await socket.close(reject.code, reject.reason)

    @staticmethod
    async def _closed_after(socket: TwilioSocket, session: CallSession, reject: Reject | None) -> bool:
        """Close the socket if the last message ended the stream (a rejection, or `stop`); True if it did."""
        if reject is not None:
            await socket.close(reject.code, reject.reason)
            return True
        if session.ended_by is not None:
            await socket.close(close_codes.NORMAL, "stream stopped")
            return True
        return False


class IdleWatch:
    """Moves a stream's idle deadline while messages keep coming, by looking a few times per timeout.

    Reading the clock or moving a timer per message would cost every frame; instead a timer looks at the
    session's message count every `idle_s / IDLE_CHECKS_PER_TIMEOUT` and pushes the deadline on if it grew.
    """

    def __init__(self, session: CallSession, deadline: asyncio.Timeout, idle_s: float) -> None:
        self._session = session
        self._deadline = deadline
        self._idle_s = idle_s
        self._loop = asyncio.get_running_loop()
        self._seen = session.messages_in
        deadline.reschedule(self._loop.time() + idle_s)
        self._timer = self._loop.call_later(idle_s / IDLE_CHECKS_PER_TIMEOUT, self._look)

    def _look(self) -> None:
        count = self._session.messages_in
        if count != self._seen:
            self._seen = count
            self._deadline.reschedule(self._loop.time() + self._idle_s)
        self._timer = self._loop.call_later(self._idle_s / IDLE_CHECKS_PER_TIMEOUT, self._look)

    def stop(self) -> None:
        self._timer.cancel()
