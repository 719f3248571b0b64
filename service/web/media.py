"""Wiring layer: `/media`, the WebSocket Twilio streams each call's audio to; `session.py` does the work.

The upgrade is refused (403) unless Twilio signed it, and closed with 1013 (try again later) above
MAX_CALLS or while shutting down. Served as plain ASGI (media_socket.py): the message loop below runs 50
times a second per track, so it stays one loop with nothing between the socket and the session.
"""

from __future__ import annotations

import structlog

from service.calls.session import CallSession
from service.twilio import close_codes
from service.twilio.urls import stream_url
from service.web.media_socket import TwilioSocket
from service.web.readiness import busy_reason
from service.web.runtime import Runtime

log = structlog.get_logger("callscribe.app")


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
        why = runtime.signatures.refusal(url, {}, socket.header("X-Twilio-Signature"))
        if why is not None:
            log.warning("media.refused", status=403, why=why)
            await socket.refuse(403, "Forbidden: stream not signed by Twilio\n")  # the upgrade fails
            return False
        await socket.accept()
        busy = busy_reason(runtime.calls, runtime.settings)
        if busy is not None:
            log.warning("media.refused", close_code=close_codes.TRY_AGAIN_LATER, why=busy)
            await socket.close(close_codes.TRY_AGAIN_LATER, busy)
            return False
        return True

    async def _stream(self, socket: TwilioSocket) -> None:
        runtime = self._runtime
        session = CallSession(
            settings=runtime.settings,
            stt=runtime.stt,
            spool=runtime.spool,
            observer=runtime.observer,
            close_twilio=socket.close,
        )
        runtime.calls.add(session)
        runtime.tasks.start(runtime.calls.forget_when_finished(session))
        try:
            while (message := await socket.receive()) is not None:
                reject = session.on_message(message)
                if reject is not None:
                    await socket.close(reject.code, reject.reason)
                    return
                await session.send_pushed()
                if session.ended_by is not None:
                    await socket.close(close_codes.NORMAL, "stream stopped")
                    return
        finally:
            # Also when Twilio hung up or the handler was cancelled: the session's own tasks finish Deepgram's side.
            session.twilio_ended()
