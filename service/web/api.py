"""Wiring layer: the read API under /api, a Quart Blueprint. Routes check, hand over and shape JSON.

The reading is `queries.py`'s and the transcript formats are `captions.py`'s; this module only
authenticates, turns query strings into typed arguments (or a 400 naming the parameter), and answers. Every
answer under /api is JSON (transcripts aside, in the format asked for), errors included: unknown paths
and wrong methods too, and they are authenticated first, so an unauthenticated client learns nothing.

`service/web/openapi.json` documents every route, parameter and response; the tests hold real responses to it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from quart import Blueprint, Response, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from werkzeug.datastructures import MIMEAccept, MultiDict
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from service import captions
from service.captions import Format
from service.settings import Settings
from service.storage import analyses, audit, erasure, queries, reports, search_terms
from service.storage.audit import Audited, AuditRecord
from service.storage.erasure import BadNumber
from service.storage.queries import AlertRecord, CallRecord, CursorError
from service.times import as_utc, utc_now
from service.web.erasing import Eraser, StreamUnreachable, erasure_json
from service.web.pauses import add_pause_routes
from service.web.request_rules import logged_path
from service.web.responses import bearer_refusal, error_response, json_response, no_store, refuse

log = structlog.get_logger("callscribe.api")

PREFIX: Final = "/api"
OPENAPI_PATH: Final = Path(__file__).with_name("openapi.json")
LIST_PARAMETERS: Final = frozenset({"limit", "cursor", "number", "since", "until", "active", "q"})
MAX_SEARCH_CHARS: Final = 200
MAX_NUMBER_CHARS: Final = 64  # the numbers' columns are as wide (storage/schema.py)
MAX_MOMENT_CHARS: Final = 64  # the longest ISO 8601 form fromisoformat takes is 32 characters
MAX_AUDIT_LIMIT: Final = 500
# What `Accept` may name for a transcript, best first when the client does not mind (*/*).
MEDIA_TYPES: Final[dict[str, Format]] = {
    "application/json": "json",
    "text/plain": "text",
    "application/x-subrip": "srt",
    "text/vtt": "vtt",
}


class BadParameter(ValueError):
    """A query parameter we cannot use; the 400 names it and says what it accepts."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class NotAcceptable(ValueError):
    """The Accept header names no transcript format we give."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    """`GET /api/calls`'s query string, checked and typed."""

    limit: int = queries.DEFAULT_LIMIT
    cursor: str | None = None
    number: str | None = None
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    active: bool | None = None
    q: str | None = None  # words said: calls one of whose utterances holds them all


def api_blueprint(
    settings: Settings, engine_provider: Callable[[], AsyncEngine], eraser: Eraser | None = None
) -> Blueprint:
    """The /api blueprint; `engine_provider` is called per request because the app makes the engine at startup;
    `eraser` reaches what the process keeps beside the database (the database alone without one)."""
    api = _Api(settings, engine_provider, eraser or Eraser(engine_provider))
    blueprint = Blueprint("api", __name__, url_prefix=PREFIX)
    blueprint.before_request(api.authenticate)
    blueprint.after_request(no_store)
    blueprint.add_url_rule("/calls", view_func=api.list_calls, methods=["GET"])
    blueprint.add_url_rule("/calls/<call_sid>", view_func=api.get_call, methods=["GET"])
    blueprint.add_url_rule("/calls/<call_sid>", view_func=api.delete_call, methods=["DELETE"])
    blueprint.add_url_rule("/calls/<call_sid>/transcript", view_func=api.transcript, methods=["GET"])
    blueprint.add_url_rule("/calls/<call_sid>/report", view_func=api.report, methods=["GET"])
    blueprint.add_url_rule("/numbers/<number>", view_func=api.erase_number, methods=["DELETE"])
    blueprint.add_url_rule("/audit", view_func=api.audit, methods=["GET"])
    blueprint.add_url_rule("/openapi.json", view_func=api.openapi, methods=["GET"])
    add_pause_routes(blueprint, settings, engine_provider)
    blueprint.register_error_handler(SQLAlchemyError, api.database_error)
    blueprint.register_error_handler(HTTPException, _http_error)
    # Unknown paths and methods never reach a blueprint: only app-wide handlers see them. These answer for
    # /api paths only and hand every other path's error back unchanged.
    blueprint.app_errorhandler(NotFound)(api.unrouted)
    blueprint.app_errorhandler(MethodNotAllowed)(api.unrouted)
    return blueprint


class _Api:
    """The routes' state: the token, the engine provider and the OpenAPI document."""

    def __init__(self, settings: Settings, engine_provider: Callable[[], AsyncEngine], eraser: Eraser) -> None:
        self._token = settings.api_token.get_secret_value().encode() if settings.api_token else None
        self._engine = engine_provider
        self._eraser = eraser
        self._openapi = OPENAPI_PATH.read_bytes()

    async def authenticate(self) -> Response | None:
        """Before every route: 503 while API_TOKEN is unset, 401 without the right bearer token."""
        return bearer_refusal(self._token, "API_TOKEN", disabled="set API_TOKEN to turn the API on")

    async def list_calls(self) -> Response:
        try:
            query = parse_list_query(request.args)
        except BadParameter as exc:
            return bad_parameter(exc)
        page = await queries.list_calls(
            self._engine(), limit=query.limit, cursor=query.cursor, number=query.number,
            since=query.since, until=query.until, active=query.active, words=query.q,
        )  # fmt: skip
        engine = self._engine()
        sids = [call.call_sid for call in page.calls]
        summaries = await analyses.summaries(engine, sids)
        coverage = await queries.get_coverage(engine, sids)
        calls = [
            {**call_json(call, coverage.get(call.call_sid)), "analysis_summary": summaries.get(call.call_sid)}
            for call in page.calls
        ]
        return json_response({"calls": calls, "next_cursor": page.next_cursor})

    async def get_call(self, call_sid: str) -> Response:
        engine = self._engine()
        call = await queries.get_call(engine, call_sid)
        if call is None:
            return not_found(call_sid)
        alerts = await queries.get_alerts(engine, call_sid)
        coverage = await queries.get_coverage(engine, [call_sid], per_track=True)
        return json_response(
            {
                **call_json(call, coverage.get(call_sid)),
                "alerts": [alert_json(alert) for alert in alerts],
                "analysis": await analyses.stored_analysis(engine, call_sid),
            }
        )

    async def delete_call(self, call_sid: str) -> Response:
        try:
            who = _requester(request.args)
            erased = await self._eraser.delete_call(call_sid, who)
        except BadParameter as exc:
            return bad_parameter(exc)
        except StreamUnreachable as exc:
            return _stream_unreachable(exc)
        if not erased.counts["calls"]:
            return not_found(call_sid)
        log.info("api.call_deleted", call_sid=call_sid)
        response = Response(b"", status=204)
        del response.headers["Content-Type"]  # Quart defaults to text/html; a 204 has no content to type
        return response

    async def erase_number(self, number: str) -> Response:
        """Every call to or from `number`, erased; the counts. The number itself is never logged, only masked."""
        try:
            who = _requester(request.args)
            erasure.checked_number(number)
        except BadParameter as exc:
            return bad_parameter(exc)
        except BadNumber as exc:
            return bad_parameter(BadParameter("number", str(exc)))
        try:
            erased = await self._eraser.erase_number(number, who)
        except StreamUnreachable as exc:
            return _stream_unreachable(exc)
        return json_response(erasure_json(number, erased))

    async def audit(self) -> Response:
        try:
            subject, limit = _audit_query(request.args)
        except BadParameter as exc:
            return bad_parameter(exc)
        entries = await audit.audit_entries(self._engine(), subject=subject, limit=limit)
        return json_response({"entries": [audit_json(entry) for entry in entries]})

    async def transcript(self, call_sid: str) -> Response:
        try:
            fmt = choose_format(request.args, request.accept_mimetypes)
        except BadParameter as exc:
            return bad_parameter(exc)
        except NotAcceptable as exc:
            return refuse(406, "not_acceptable", str(exc))
        engine = self._engine()
        if await queries.get_call(engine, call_sid) is None:
            return not_found(call_sid)
        body = captions.render(await queries.get_utterances(engine, call_sid), fmt)
        response = Response(body, content_type=captions.CONTENT_TYPES[fmt])
        response.headers["Vary"] = "Accept"  # the same URL answers in several formats
        return response

    async def report(self, call_sid: str) -> Response:
        """The call's one report, as `call.completed` carries it, read now (batch's and analysis's since included)."""
        if request.args:
            return bad_parameter(BadParameter(next(iter(request.args)), "unknown parameter; this route takes none"))
        async with self._engine().connect() as connection:
            event = await reports.call_report(connection, call_sid, utc_now())
        return not_found(call_sid) if event is None else json_response(event["data"])

    async def openapi(self) -> Response:
        return Response(self._openapi, content_type="application/json")

    async def database_error(self, error: SQLAlchemyError) -> Response:
        log.error("api.database_error", method=request.method, path=logged_path(request.path), exc_info=error)
        return error_response(
            503, "database_unavailable", "the database is unreachable or failed; the service log has the error"
        )

    async def unrouted(self, error: HTTPException) -> Response | HTTPException:
        """404/405 for paths no route matched: JSON under /api (after authenticating), unchanged elsewhere."""
        if request.path != PREFIX and not request.path.startswith(PREFIX + "/"):
            return error
        refused = await self.authenticate()
        if refused is not None:
            return refused
        if isinstance(error, MethodNotAllowed):
            response = refuse(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")
            response.headers["Allow"] = ", ".join(error.valid_methods or ())
            return response
        return refuse(404, "not_found", f"no such path: {request.path}")


def parse_list_query(args: MultiDict[str, str]) -> ListQuery:
    """`GET /api/calls`'s parameters, or BadParameter naming the first one that is wrong."""
    for name in args:
        if name not in LIST_PARAMETERS:
            # A misspelt filter (`?activ=true`) would otherwise silently list every call.
            raise BadParameter(name, f"unknown parameter; this route takes {', '.join(sorted(LIST_PARAMETERS))}")
    query = ListQuery(
        limit=_limit(_single(args, "limit")),
        cursor=_cursor(_single(args, "cursor")),
        number=_number(_single(args, "number")),
        since=_moment(_single(args, "since"), "since"),
        until=_moment(_single(args, "until"), "until"),
        active=_active(_single(args, "active")),
        q=search_words(_single(args, "q")),
    )
    if query.since is not None and query.until is not None and query.until <= query.since:
        raise BadParameter("until", "must be later than since")
    return query


def choose_format(args: MultiDict[str, str], accept: MIMEAccept) -> Format:
    """`?format=` when given, else the best match for `Accept`, else JSON."""
    for name in args:
        if name != "format":
            raise BadParameter(name, "unknown parameter; this route takes format")
    given = _single(args, "format")
    if given is not None:
        if given not in captions.FORMATS:
            raise BadParameter("format", f"must be one of {', '.join(captions.FORMATS)}")
        return given
    if not accept:  # no Accept header (or an empty one): the client takes anything
        return "json"
    best = accept.best_match(MEDIA_TYPES)
    if best is None:
        raise NotAcceptable(f"Accept names none of {', '.join(MEDIA_TYPES)}; or ask with ?format=")
    return MEDIA_TYPES[best]


def _single(args: MultiDict[str, str], name: str) -> str | None:
    values = args.getlist(name)
    if len(values) > 1:
        raise BadParameter(name, "given more than once")
    return values[0] if values else None


def _limit(value: str | None) -> int:
    if value is None:
        return queries.DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= queries.MAX_LIMIT:
        raise BadParameter("limit", f"must be a whole number from 1 to {queries.MAX_LIMIT}")
    return int(value)


def _cursor(value: str | None) -> str | None:
    if value is not None:
        try:
            queries.decode_cursor(value)
        except CursorError as exc:
            raise BadParameter("cursor", str(exc)) from exc
    return value


def _number(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise BadParameter("number", "must not be empty; leave it out to list every number")
    if value != value.strip():
        # `?number=+1415…` arrives as " 1415…" (a + in a query string is a space) and would match nothing.
        raise BadParameter("number", "starts or ends with a space; send + as %2B, such as ?number=%2B14155550100")
    if len(value) > MAX_NUMBER_CHARS:
        raise BadParameter("number", f"must be at most {MAX_NUMBER_CHARS} characters, as a stored number is")
    if not value.isprintable():
        # PostgreSQL refuses a NUL in text outright: without this it was a 503, as if the database were down.
        raise BadParameter("number", "must be printable text (no control characters)")
    return value


def _moment(value: str | None, name: str) -> datetime.datetime | None:
    """`?since=`/`?until=` in UTC; without an offset the time is UTC, the zone every stored time is in."""
    if value is None:
        return None
    if len(value) > MAX_MOMENT_CHARS or not value.isascii():
        raise BadParameter(
            name, f"must be an ISO 8601 date or date-time in ASCII, at most {MAX_MOMENT_CHARS} characters"
        )
    try:
        return as_utc(datetime.datetime.fromisoformat(value))
    except ValueError as exc:
        raise BadParameter(name, "must be an ISO 8601 date or date-time, such as 2025-01-02T03:04:05Z") from exc
    except OverflowError as exc:
        # 9999-12-31T23:59:59-01:00 parses, but is in the year 10000 in UTC: past the calendar Python counts in.
        raise BadParameter(name, "must fall within the years 1 to 9999 once turned into UTC") from exc


def search_words(value: str | None) -> str | None:
    """`?q=`: words said (search_terms.py cuts them into words); BadParameter when it holds none or is too long."""
    if value is None:
        return None
    if len(value) > MAX_SEARCH_CHARS:
        raise BadParameter("q", f"must be at most {MAX_SEARCH_CHARS} characters")
    if not search_terms.terms(value):
        raise BadParameter("q", "must hold at least one word (letters or digits)")
    return value


def _active(value: str | None) -> bool | None:
    if value is None:
        return None
    if value not in {"true", "false"}:
        raise BadParameter("active", "must be true or false")
    return value == "true"


def _requester(args: MultiDict[str, str]) -> Audited:
    """Who asks (`?by=`, optional: else "api") and from where, for the audit log."""
    for name in args:
        if name != "by":
            raise BadParameter(name, "unknown parameter; this route takes by")
    by = _single(args, "by")
    if by is not None and not audit.valid_actor(by):
        raise BadParameter("by", audit.ACTOR_RULE)
    return Audited.of(by, f"api {request.remote_addr or '-'}")


def _audit_query(args: MultiDict[str, str]) -> tuple[str | None, int]:
    for name in args:
        if name not in {"subject", "limit"}:
            raise BadParameter(name, "unknown parameter; this route takes limit, subject")
    subject = _single(args, "subject")
    if subject is not None and (not subject or len(subject) > MAX_NUMBER_CHARS * 2 or not subject.isprintable()):
        raise BadParameter("subject", "must be a CallSid or a masked number (+*********00), printable, at most 128")
    given = _single(args, "limit")
    if given is None:
        return subject, 100
    if not given.isascii() or not given.isdigit() or not 1 <= int(given) <= MAX_AUDIT_LIMIT:
        raise BadParameter("limit", f"must be a whole number from 1 to {MAX_AUDIT_LIMIT}")
    return subject, int(given)


def _stream_unreachable(exc: StreamUnreachable) -> Response:
    why = f"Redis (REDIS_URL) did not answer ({exc}); nothing was erased: ask again once it does"
    return refuse(503, "live_stream_unavailable", why)


def audit_json(entry: AuditRecord) -> dict[str, Any]:
    """One audit entry as the API's JSON object (the `AuditEntry` schema in openapi.json)."""
    return {
        "id": entry.id, "at": _timestamp(entry.at), "action": entry.action, "actor": entry.actor, "via": entry.via,
        "subject": entry.subject, "detail": entry.detail,
    }  # fmt: skip


def call_json(call: CallRecord, coverage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One call as the API's JSON object (the `Call` schema in openapi.json), with its coverage (`calls/coverage.py`'s
    `summarize`; null while no stream of it has ended, or for a call stored before coverage was counted)."""
    return {
        "call_sid": call.call_sid,
        "stream_sid": call.stream_sid,
        "account_sid": call.account_sid,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "direction": call.direction,
        "custom_parameters": call.custom_parameters,
        "tracks": list(call.tracks),
        "started_at": _timestamp(call.started_at),
        "ended_at": None if call.ended_at is None else _timestamp(call.ended_at),
        "status": call.status,
        "ended_by": call.ended_by,
        "deepgram_request_ids": list(call.deepgram_request_ids),
        "audio_s_inbound": call.audio_s_inbound,
        "audio_s_outbound": call.audio_s_outbound,
        "summary": call.summary,
        "handed_over": call.handed_over,
        "alert_count": call.alert_count,
        "coverage": coverage,
    }


def alert_json(alert: AlertRecord) -> dict[str, Any]:
    """One live alert as the API's JSON object (the `Alert` schema in openapi.json; `call.alert`'s data)."""
    return {
        "alert_id": alert.alert_id, "rule": alert.rule, "kind": alert.kind, "speaker": alert.speaker,
        "track": alert.track, "phrase": alert.phrase, "text": alert.text, "start": alert.start, "end": alert.end,
        "raised_at": _timestamp(alert.raised_at),
    }  # fmt: skip


def _timestamp(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def bad_parameter(exc: BadParameter) -> Response:
    return refuse(400, "bad_request", exc.message, parameter=exc.parameter)


def not_found(call_sid: str) -> Response:
    return refuse(404, "not_found", f"no call {call_sid}")


async def _http_error(error: HTTPException) -> Response:
    # Anything else Quart raises inside /api routes (a 500 when exceptions do not propagate, a 413) as JSON.
    code = error.code or 500
    name = (error.name or "error").lower().replace(" ", "_")
    return error_response(code, name, error.description or error.name or "error")
