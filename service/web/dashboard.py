"""Wiring layer: the page at `/`: a login, the calls on now above the recent ones, and each call's live transcript.

Server-rendered (Jinja templates in `templates/`) with a little plain JavaScript (`static/live.js`) that reads the
live feed (`/api/live`, with the session cookie) and updates the page; no build step. Every page but the login
needs a session (`login_tokens.py`): without one, or with a bad or expired one, the answer is a redirect to the
login page, never a transcript. The forms carry CSRF tokens; the pages are sent with a strict Content-Security-
Policy (scripts and styles from this origin only) and `Cache-Control: no-store`.
"""

from __future__ import annotations

import datetime
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from quart import Blueprint, Response, g, render_template, request
from sqlalchemy.ext.asyncio import AsyncEngine
from werkzeug.datastructures import MultiDict

from service import captions
from service.live.format import format_id
from service.live.hub import LiveHub
from service.logs import log_refusal
from service.settings import Settings
from service.storage import queries
from service.web import login_tokens
from service.web.api import BadParameter, ListQuery, parse_list_query

log = structlog.get_logger("callscribe.dashboard")

SESSION_COOKIE: Final = "callscribe_session"
CSRF_COOKIE: Final = "callscribe_csrf"
DOWNLOADS: Final[dict[str, captions.Format]] = {"txt": "text", "srt": "srt", "vtt": "vtt", "json": "json"}
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
RECENT_CALLS: Final = 50


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The page's parts: the key its sessions are signed with (None: no password set), the feed and the database."""

    settings: Settings
    key: bytes | None
    hub: Callable[[], LiveHub]
    engine: Callable[[], AsyncEngine]

    def signed_in(self) -> bool:
        """Whether the request carries a session this process can check and that has not expired."""
        return self.key is not None and login_tokens.session_valid(
            self.key, request.cookies.get(SESSION_COOKIE), now=time.time()
        )


def dashboard_key(settings: Settings) -> bytes | None:
    secret = settings.dashboard_password or settings.api_token
    return login_tokens.derive_key(secret.get_secret_value().encode()) if secret is not None else None


def dashboard_blueprint(dashboard: Dashboard) -> Blueprint:
    blueprint = Blueprint(
        "dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/assets"
    )
    pages = _Pages(dashboard)
    blueprint.add_url_rule("/", view_func=pages.calls, methods=["GET"])
    blueprint.add_url_rule("/login", view_func=pages.login_form, methods=["GET"])
    blueprint.add_url_rule("/login", view_func=pages.login, methods=["POST"])
    blueprint.add_url_rule("/logout", view_func=pages.logout, methods=["POST"])
    blueprint.add_url_rule("/calls/<call_sid>", view_func=pages.call, methods=["GET"])
    blueprint.add_url_rule("/calls/<call_sid>/transcript.<extension>", view_func=pages.download, methods=["GET"])
    blueprint.after_request(_secure_headers)
    return blueprint


class _Pages:
    def __init__(self, dashboard: Dashboard) -> None:
        self._d = dashboard

    async def calls(self) -> Response:
        if not self._d.signed_in():
            return _to_login()
        hub = self._d.hub()
        # Taken before the database is read: the feed replays what comes after, so nothing falls in between.
        since = hub.buffer.last_id or hub.buffer.floor
        engine = self._d.engine()
        active = (await queries.list_calls(engine, active=True, limit=queries.MAX_LIMIT)).calls
        search, problem = _search(request.args)
        if search is None:
            found = await queries.list_calls(engine, limit=RECENT_CALLS)
            recent = [c for c in found.calls if c.ended_at is not None]
        else:
            found = await queries.list_calls(
                engine, limit=RECENT_CALLS, number=search.number, since=search.since, until=search.until, words=search.q
            )
            recent = list(found.calls)
        board = hub.board.calls
        rows = [_call_row(c, board.get(c.call_sid)) for c in active]
        rows += [_board_row(sid, fields) for sid, fields in board.items() if sid not in {c.call_sid for c in active}]
        body = await render_template(
            "calls.html", active=rows, recent=[_call_row(c, None) for c in recent], since=format_id(since),
            csrf=self._csrf_field(), searched=search is not None, problem=problem, form=request.args,
        )  # fmt: skip
        return self._with_csrf_cookie(Response(body, content_type="text/html; charset=utf-8"))

    async def call(self, call_sid: str) -> Response:
        if not self._d.signed_in():
            return _to_login()
        engine = self._d.engine()
        hub = self._d.hub()
        # The page shows the stored finals, then replays every event the feed still keeps (finals it shows
        # already are skipped by their key): what the database has not yet written is in the replay.
        since = format_id(hub.buffer.floor)
        call = await queries.get_call(engine, call_sid)
        board = hub.board.calls.get(call_sid)
        if call is None and board is None:
            body = await render_template("missing.html", call_sid=call_sid, csrf=self._csrf_field())
            return self._with_csrf_cookie(Response(body, status=404, content_type="text/html; charset=utf-8"))
        utterances = await queries.get_utterances(engine, call_sid)
        row = _call_row(call, board) if call is not None else _board_row(call_sid, board or {})
        body = await render_template(
            "call.html", call=row, utterances=[_utterance_row(u) for u in utterances],
            lanes=_lanes(utterances), downloads=list(DOWNLOADS), since=since, csrf=self._csrf_field(),
        )  # fmt: skip
        return self._with_csrf_cookie(Response(body, content_type="text/html; charset=utf-8"))

    async def download(self, call_sid: str, extension: str) -> Response:
        if not self._d.signed_in():
            return _to_login()
        fmt = DOWNLOADS.get(extension)
        engine = self._d.engine()
        if fmt is None or await queries.get_call(engine, call_sid) is None:
            return Response("no such transcript\n", status=404, content_type="text/plain; charset=utf-8")
        body = captions.render(await queries.get_utterances(engine, call_sid), fmt)
        response = Response(body, content_type=captions.CONTENT_TYPES[fmt])
        response.headers["Content-Disposition"] = f'attachment; filename="{call_sid}.{extension}"'
        return response

    async def login_form(self, *, failed: bool = False) -> Response:
        body = await render_template(
            "login.html", failed=failed, configured=self._d.key is not None, csrf=self._csrf_field()
        )
        status = 401 if failed else 200 if self._d.key is not None else 503
        return self._with_csrf_cookie(Response(body, status=status, content_type="text/html; charset=utf-8"))

    async def login(self) -> Response:
        form = await request.form
        key = self._d.key
        if key is None or not self._csrf_ok(form.get("csrf")):
            log.warning("dashboard.refused", why="login form without a valid CSRF token" if key else "no password set")
            return await self.login_form(failed=True)
        given = form.get("password", "").encode()
        secret = self._d.settings.dashboard_password or self._d.settings.api_token
        assert secret is not None  # key is derived from it
        if not hmac.compare_digest(given, secret.get_secret_value().encode()):
            log_refusal(log, "dashboard.login_failed", request.remote_addr, why="wrong password")
            return await self.login_form(failed=True)
        lifetime_s = self._d.settings.dashboard_session_hours * 3600
        session = login_tokens.issue_session(key, now=time.time(), lifetime_s=lifetime_s)
        log.info("dashboard.login")
        response = _see_other("/")
        response.set_cookie(
            SESSION_COOKIE, session, max_age=int(lifetime_s), secure=True, httponly=True, samesite="Lax", path="/"
        )
        return response

    async def logout(self) -> Response:
        form = await request.form
        if self._d.key is None or not self._csrf_ok(form.get("csrf")):
            log.warning("dashboard.refused", why="logout form without a valid CSRF token")
            return Response("refused: reload the page and try again\n", status=403, content_type="text/plain")
        response = _see_other("/login")
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
        return response

    # --- CSRF: a random cookie per visitor, and its HMAC in every form ------------------------------------

    def _csrf_cookie(self) -> str:
        given = request.cookies.get(CSRF_COOKIE)
        if given:
            return given
        if "csrf_cookie" not in g:
            g.csrf_cookie = login_tokens.new_csrf_cookie()  # set with this response (`_with_csrf_cookie`)
        return str(g.csrf_cookie)

    def _csrf_field(self) -> str:
        return login_tokens.csrf_token(self._d.key, self._csrf_cookie()) if self._d.key is not None else ""

    def _csrf_ok(self, token: str | None) -> bool:
        assert self._d.key is not None
        return login_tokens.csrf_valid(self._d.key, request.cookies.get(CSRF_COOKIE), token)

    def _with_csrf_cookie(self, response: Response) -> Response:
        if CSRF_COOKIE not in request.cookies and "csrf_cookie" in g:
            response.set_cookie(CSRF_COOKIE, g.csrf_cookie, secure=True, httponly=True, samesite="Strict", path="/")
        return response


def _see_other(location: str) -> Response:
    return Response("", status=303, headers={"Location": location})


SEARCH_FIELDS: Final = frozenset({"q", "number", "since", "until"})


def _search(args: MultiDict[str, str]) -> tuple[ListQuery | None, str]:
    """The search form's query (None: no search), or why it cannot be used (then no search either)."""
    given = MultiDict([(name, value) for name, value in args.items(multi=True) if name in SEARCH_FIELDS and value])
    if not given:
        return None, ""
    try:
        return parse_list_query(given), ""
    except BadParameter as exc:
        return None, f"{exc.parameter}: {exc.message}"


def _to_login() -> Response:
    response = _see_other("/login")
    if request.cookies.get(SESSION_COOKIE):
        log.info("dashboard.session_refused", why="expired or not issued with this password")
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


def _secure_headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _call_row(call: queries.CallRecord, board: dict[str, Any] | None) -> dict[str, Any]:
    states = (board or {}).get("states") or {}
    return {
        "call_sid": call.call_sid, "from_number": call.from_number, "to_number": call.to_number,
        "direction": call.direction, "tracks": list(call.tracks), "started_at": _iso(call.started_at),
        "ended_at": _iso(call.ended_at) if call.ended_at else "", "status": call.status,
        "state": _state(states, active=call.ended_at is None), "ended_by": call.ended_by or "",
    }  # fmt: skip


def _board_row(call_sid: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A call the feed knows is on but the database does not have yet (its first write still queued)."""
    return {
        "call_sid": call_sid, "from_number": fields.get("from_number", ""), "to_number": fields.get("to_number", ""),
        "direction": fields.get("direction", ""), "tracks": fields.get("tracks", []),
        "started_at": fields.get("started_at", ""), "ended_at": "", "status": "active",
        "state": _state(fields.get("states") or {}, active=True), "ended_by": "",
    }  # fmt: skip


def _state(states: dict[str, str], *, active: bool) -> str:
    if not active:
        return "ended"
    values = set(states.values())
    for worst in ("spooled", "reconnecting", "handed_over"):
        if worst in values:
            return worst
    return "streaming" if values else "starting"


def _utterance_row(utterance: queries.UtteranceRecord) -> dict[str, Any]:
    return {
        "key": f"{utterance.track}:{round(utterance.start * 1000)}", "speaker": utterance.speaker,
        "track": utterance.track, "start": utterance.start, "end": utterance.end, "text": utterance.text,
        "clock": clock(utterance.start),
    }  # fmt: skip


def _lanes(utterances: list[queries.UtteranceRecord]) -> list[str]:
    """The call's speakers so far, in the order they first spoke (the page adds a lane for each new one)."""
    return list(dict.fromkeys(u.speaker for u in utterances))


def clock(seconds: float) -> str:
    """`mm:ss.cc` (with hours past the first), as the text export writes it."""
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}:" if hours else "") + f"{minutes:02d}:{rest:05.2f}"


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
