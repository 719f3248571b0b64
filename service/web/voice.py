"""Wiring layer: `/voice`, Twilio's voice webhook. Checks Twilio's signature, then answers the TwiML that
streams the call to /media (or, above MAX_CALLS or while shutting down, lets the call go on without one).

Every call answered here is recorded (queued through the store, never awaited): on, waiting for its stream,
which `StreamWatch` checks for; or, answered busy, at once as not streamed, with why (`call.not_streamed`)."""

from __future__ import annotations

import time

import structlog
from quart import Blueprint, Response, request

from service.refusals import log_refusal
from service.storage.statuses import NotStreamed
from service.twilio.stream_tokens import PARAMETER, Claim, Purpose, issue, numbers
from service.twilio.twiml import stream_parameters, voice_response
from service.twilio.urls import request_webhook_url, stream_url, webhook_url
from service.web.readiness import busy_reason
from service.web.runtime import Runtime

log = structlog.get_logger("callscribe.app")
COLUMN_CHARS = 64  # the calls table's widest text column for a SID or a number
BUSY_FIX = (
    "raise MAX_CALLS if this process has the room (CPU, memory, Deepgram's concurrency), or run more processes; "
    "calls answered while shutting down are the ones a deploy's restart met"
)


def voice_blueprint(runtime: Runtime) -> Blueprint:
    voice = Blueprint("voice", __name__)

    @voice.route("/voice", methods=["POST", "GET"])
    async def answer() -> Response | tuple[str, int]:
        """Answer TwiML that streams the call to /media, then the next verb."""
        form = dict((await request.form).items()) if request.method == "POST" else {}
        signature = request.headers.get("X-Twilio-Signature")
        why = runtime.signatures.refusal(_signed_url(runtime), form, signature, request_url=_request_url())
        if why is not None:
            log_refusal(log, "voice.refused", request.remote_addr, status=403, why=why)
            return "Forbidden: request not signed by Twilio\n", 403
        fields = form if request.method == "POST" else dict(request.args.items())
        forwarded = stream_parameters(fields)
        _record_answer(runtime, fields, forwarded)
        stream = _stream_unless_busy(runtime, fields)
        if stream is not None:
            runtime.stream_watch.expect(fields.get("CallSid", ""), stream)
        parameters = forwarded | _stream_token(runtime, fields, forwarded)
        twiml = voice_response(runtime.settings, stream_url=stream, parameters=parameters)
        return Response(twiml, content_type="text/xml; charset=utf-8")

    return voice


def _signed_url(runtime: Runtime) -> str:
    """The URL Twilio signed this request for (PUBLIC_URL's, or the proxy-corrected request's)."""
    return webhook_url(
        runtime.settings,
        scheme=request.scheme,
        host_header=request.host,
        path=request.path,
        query=request.query_string.decode("latin-1"),
    )


def _request_url() -> str:
    """The URL this request names (its proxy-corrected scheme and Host), PUBLIC_URL aside."""
    query = request.query_string.decode("latin-1")
    return request_webhook_url(scheme=request.scheme, host_header=request.host, path=request.path, query=query)


def _record_answer(runtime: Runtime, fields: dict[str, str], forwarded: dict[str, str]) -> None:
    """The call's row, as answered here (a request without a CallSid has no call to record)."""
    call_sid = fields.get("CallSid", "")
    if call_sid:
        from_number, to_number = (number[:COLUMN_CHARS] for number in numbers(forwarded))
        runtime.store.call_answered(
            call_sid=call_sid, account_sid=fields.get("AccountSid", "")[:COLUMN_CHARS], from_number=from_number,
            to_number=to_number, direction=forwarded.get("direction", "")[:32],
        )  # fmt: skip


def _stream_unless_busy(runtime: Runtime, fields: dict[str, str]) -> str | None:
    busy = busy_reason(runtime.calls, runtime.settings)
    if busy is not None:
        # The call goes on without a transcript rather than failing for the caller.
        call_sid = fields.get("CallSid", "")
        log.warning("voice.not_streaming", call_sid=call_sid, why=busy)
        if call_sid:
            reason = f"/voice answered this call without a stream: {busy}; the call went on untranscribed"
            runtime.store.call_not_streamed(call_sid, how=NotStreamed.BUSY, reason=reason, fix=BUSY_FIX)
        return None
    return stream_url(runtime.settings, request.host)


def _stream_token(runtime: Runtime, fields: dict[str, str], forwarded: dict[str, str]) -> dict[str, str]:
    """The <Parameter> that lets this call's stream in at /media: a token for this call, account and track, and
    for the numbers `forwarded` beside it (`stream_parameters`: cut to length)."""
    if runtime.token_key is None:
        return {}  # no secret to make one with (CALLSCRIBE_INSECURE_DEV without TWILIO_AUTH_TOKEN)
    from_number, to_number = numbers(forwarded)
    claim = Claim(
        purpose=Purpose.VOICE,
        account_sid=fields.get("AccountSid", ""),
        call_sid=fields.get("CallSid", ""),
        track=runtime.settings.stream_track,
        issued_at=int(time.time()),
        from_number=from_number,
        to_number=to_number,
    )
    return {PARAMETER: issue(runtime.token_key, claim)}
