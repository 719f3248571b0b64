"""Wiring layer: `GET /api/live`, the live feed as Server-Sent Events (https://html.spec.whatwg.org/#server-sent-events).

Authenticated like the rest of /api (bearer API_TOKEN), or by the page's session cookie (the `authorize` it
is given). The subscription is made, and what the client missed after `Last-Event-ID` queued, before the
first byte goes out; then each event is one `id:`/`event:`/`data:` frame, and a comment line every
LIVE_HEARTBEAT_S of silence keeps proxies from closing the connection. The hub (`service/live/hub.py`) never
waits for this loop: a client too slow to keep up is dropped there, and this loop sends its last
`feed.dropped` event and ends the response. When the process stops, every feed ends first (before Hypercorn's
graceful shutdown, which an open response would hold) with `feed.closing`, whose `retry:` tells the client when
to reconnect. When LIVE_MAX_SUBSCRIBERS already read, an authenticated client gets
503 `feed_full` with `Retry-After`, and one `live.refused` line with its address.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import structlog
from quart import Blueprint, Response, request

from service.live.format import BadEventId, EventId, LiveEvent, format_id, parse_id
from service.live.hub import FeedFull, LiveHub, Subscriber
from service.refusals import log_refusal
from service.settings import Settings
from service.web.responses import error_response, no_store, refuse

log = structlog.get_logger("callscribe.live")

PARAMETERS: Final = frozenset({"call_sid", "last_event_id"})
CALL_SID: Final = re.compile(r"[A-Za-z0-9]{1,64}")
RETRY_MS: Final = 2000  # EventSource's wait before it reconnects: after a network error, and after `feed.closing`
OPENING: Final = b": callscribe live feed\nretry: %d\n\n" % RETRY_MS  # the headers and this go out at once
HEARTBEAT: Final = b": heartbeat\n\n"
FULL_RETRY_AFTER_S: Final = 30  # long enough for a page or two to close; a client that obeys does not hammer

Authorize = Callable[[], Awaitable[Response | None]]  # None lets the request through


def live_blueprint(settings: Settings, hub: Callable[[], LiveHub], authorize: Authorize) -> Blueprint:
    """The /api/live route; `authorize` decides who may read (bearer token, or the page's session)."""
    blueprint = Blueprint("live", __name__)

    async def live() -> Response:
        refused = await authorize()
        if refused is not None:
            return refused
        try:
            call_sid, last_id = parse_live_query()
        except _BadQuery as exc:
            return refuse(400, "bad_request", exc.message, parameter=exc.parameter)
        try:
            subscriber = hub().subscribe(call_sid, last_id)
        except FeedFull as exc:
            return feed_full(str(exc))
        log.info(
            "live.subscribed", call_sid=call_sid, last_event_id=format_id(last_id) if last_id else None,
            replayed=len(subscriber.queue), subscribers=hub().subscribers,
        )  # fmt: skip
        response = Response(feed_chunks(hub(), subscriber, settings.live_heartbeat_s), content_type="text/event-stream")
        response.timeout = None  # a feed is open for as long as the client reads it
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"  # proxies that buffer (nginx) would hold the events back
        return response

    blueprint.add_url_rule("/api/live", view_func=live, methods=["GET"])
    return blueprint


def feed_full(why: str) -> Response:
    """503 feed_full with Retry-After, and one line saying from where (repeated refusals are summarised by address)."""
    log_refusal(log, "live.refused", request.remote_addr, status=503, error="feed_full", why=why)
    response = no_store(error_response(503, "feed_full", f"{why}; try again in {FULL_RETRY_AFTER_S} s"))
    response.headers["Retry-After"] = str(FULL_RETRY_AFTER_S)
    return response


class _BadQuery(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


def parse_live_query() -> tuple[str | None, EventId | None]:
    """`?call_sid=` and the id to replay after (`Last-Event-ID`, or `?last_event_id=` for a first connection)."""
    for name in request.args:
        if name not in PARAMETERS:
            raise _BadQuery(name, f"unknown parameter; this route takes {', '.join(sorted(PARAMETERS))}")
        if len(request.args.getlist(name)) > 1:
            raise _BadQuery(name, "given more than once")
    call_sid = request.args.get("call_sid")
    if call_sid is not None and not CALL_SID.fullmatch(call_sid):
        raise _BadQuery("call_sid", "must be a call SID (letters and digits), such as CA0123…")
    given = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    name = "Last-Event-ID" if request.headers.get("Last-Event-ID") else "last_event_id"
    try:
        return call_sid, None if given is None else parse_id(given)
    except BadEventId as exc:
        raise _BadQuery(name, str(exc)) from exc


async def feed_chunks(hub: LiveHub, subscriber: Subscriber, heartbeat_s: float) -> AsyncIterator[bytes]:
    """The response body of one feed: the opening, then each burst of events as one chunk, heartbeats between."""
    try:
        yield OPENING
        while not subscriber.finished:
            item = await subscriber.next(heartbeat_s)
            if item is None:
                if not subscriber.finished:
                    yield HEARTBEAT
            else:
                # With it, everything else already queued: the results of calls that started together come in the
                # same instant, and one write per burst, not per event, keeps a page's cost off the calls' audio.
                yield b"".join(_frame(queued) for queued in (item, *subscriber.take_queued()))
        log.info("live.ended", why=subscriber.ended)
    finally:
        hub.feed_ended(subscriber)


def _frame(item: LiveEvent | bytes) -> bytes:
    return item.frame() if isinstance(item, LiveEvent) else item
