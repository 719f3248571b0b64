"""Wiring layer: the page at `/`: a login, the calls on now above the recent ones, and each call's live transcript.

Server-rendered (Jinja templates in `templates/`) with a little plain JavaScript (`static/live.js`) that reads the
live feed (`/api/live`, with the session cookie) and updates the page; no build step. Every page but the login
needs a session (`login_tokens.py`): without one, or with a bad or expired one, the answer is a redirect to the
login page, never a transcript. The forms carry CSRF tokens; the pages are sent with a strict Content-Security-
Policy (scripts and styles from this origin only) and `Cache-Control: no-store`.

A login is refused with 429 and `Retry-After` past the attempts `login_limits.py` allows from its address or from
everyone, before its password is looked at. The password is checked through scrypt in a worker thread, at most
`KDF_AT_ONCE` at a time, so neither the event loop that carries the calls nor the memory waits on guesses.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import structlog
from quart import Blueprint, Response, render_template, request
from sqlalchemy.ext.asyncio import AsyncEngine
from werkzeug.datastructures import MultiDict

from service import captions
from service.calls.coverage import short_text
from service.live.format import format_id
from service.live.hub import LiveHub
from service.refusals import log_refusal
from service.settings import Settings
from service.storage import analyses, queries, reports
from service.storage.statuses import CallStatus
from service.times import utc_now
from service.web import login_tokens
from service.web.api import BadParameter, ListQuery, parse_list_query
from service.web.login_limits import LoginLimits
from service.web.page_secret import server_secret

log = structlog.get_logger("callscribe.dashboard")

SESSION_COOKIE: Final = "callscribe_session"
CSRF_COOKIE: Final = "callscribe_csrf"
DOWNLOADS: Final[dict[str, captions.Format]] = {"txt": "text", "srt": "srt", "vtt": "vtt", "json": "json"}
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
FAVICON: Final = "favicon.svg"
RECENT_CALLS: Final = 50
FIRST_LINE_CHARS: Final = 60  # a call's first line in the list, cut at a word's end
# A call's state on the list, each with its colour (style.css) and, for whoever does not see the colour, its text
# and this meaning (the cell's title and the legend); the feed's `call.state` events move a call between them.
STATES: Final = {
    "starting": "the stream has started; the first connection to Deepgram is opening",
    "streaming": "transcribed live",
    "reconnecting": "Deepgram's connection dropped: the audio is kept and replayed when it is back",
    "spooled": "the audio waits in the spool for batch transcription",
    "handed_over": "the stream moved to another process (a restart): the call goes on there",
    "paused": "transcription paused on request (a card being read out): nothing of it is heard or kept",
}
KDF_AT_ONCE: Final = 2  # scrypt checks at once: 16 MiB and one core each


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The page's parts: its keys (None: no password set), the feed, the database and the login limits."""

    settings: Settings
    keys: login_tokens.PageKeys | None
    hub: Callable[[], LiveHub]
    engine: Callable[[], AsyncEngine]
    limits: LoginLimits = field(default_factory=lambda: LoginLimits(time.monotonic))
    # What the transcripts are when DEEPGRAM_URL is the Deepgram stand-in (a banner on every page); None for Deepgram.
    standin: Callable[[], Awaitable[str | None]] | None = None
    kdf_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(KDF_AT_ONCE))

    @property
    def lifetime_s(self) -> float:
        return self.settings.dashboard_session_hours * 3600

    def signed_in(self) -> bool:
        """Whether the request carries a session this process can check, not expired and not too long-lived."""
        return self.keys is not None and login_tokens.session_valid(
            self.keys, request.cookies.get(SESSION_COOKIE), now=time.time(), lifetime_s=self.lifetime_s
        )


def dashboard_keys(settings: Settings) -> login_tokens.PageKeys | None:
    """The page's keys from the server's secret and the password (one scrypt), or None when there is no password.

    No password, no secret: a run without the page never writes a secret file.
    """
    password = settings.dashboard_password or settings.api_token
    if password is None:
        return None
    secret = server_secret(settings)
    log.info("dashboard.secret", source=secret.source)
    if settings.session_secret is None and not settings.database_url.startswith("sqlite"):
        log.warning(
            "dashboard.secret_local",
            why="SESSION_SECRET is unset: sessions are signed with this machine's own secret, so a login made on "
            "another dyno or host is not accepted here; set SESSION_SECRET, the same everywhere",
        )
    return login_tokens.page_keys(secret.value, password.get_secret_value().encode())


async def _standin_context(dashboard: Dashboard) -> dict[str, Any]:
    return {"standin": await dashboard.standin() if dashboard.standin is not None else None}


def dashboard_blueprint(dashboard: Dashboard) -> Blueprint:
    blueprint = Blueprint(
        "dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/assets"
    )
    # Every page says when its transcripts are the stand-in's placeholder words (`make try`), never speech.
    blueprint.context_processor(partial(_standin_context, dashboard))
    pages = _Pages(dashboard)
    blueprint.add_url_rule("/", view_func=pages.calls, methods=["GET"])
    blueprint.add_url_rule("/login", view_func=pages.login_form, methods=["GET"])
    blueprint.add_url_rule("/login", view_func=pages.login, methods=["POST"])
    blueprint.add_url_rule("/logout", view_func=pages.logout, methods=["POST"])
    # The page links its icon; this answers the browsers that ask for it anyway (a JSON route opened in a tab).
    # Its bytes are kept (a few hundred): no file is opened per request, and none can be left open by a client.
    icon = (Path(__file__).resolve().parent / "static" / FAVICON).read_bytes()
    blueprint.add_url_rule("/favicon.ico", "icon", view_func=partial(_icon, icon), methods=["GET"])
    blueprint.add_url_rule("/calls/<call_sid>", view_func=pages.call, methods=["GET"])
    blueprint.add_url_rule("/calls/<call_sid>/transcript.<extension>", view_func=pages.download, methods=["GET"])
    blueprint.add_url_rule("/calls/<call_sid>/report.json", view_func=pages.report, methods=["GET"])
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
        # A call /voice answered whose stream has not started is on, but not here yet: the feed adds it when its
        # stream starts, and a call whose stream never starts has no feed event to take it away again.
        on = (await queries.list_calls(engine, active=True, limit=queries.MAX_LIMIT)).calls
        active = [c for c in on if c.stream_sid]
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
        lines = await queries.first_lines(engine, [c.call_sid for c in (*active, *recent)])
        rows = [_call_row(c, board.get(c.call_sid), first_line=lines.get(c.call_sid, "")) for c in active]
        rows += [_board_row(sid, fields) for sid, fields in board.items() if sid not in {c.call_sid for c in active}]
        summaries = await analyses.summaries(engine, [c.call_sid for c in recent])
        coverage = await queries.get_coverage(engine, [c.call_sid for c in recent])
        recent_rows = [
            _call_row(c, None, coverage=coverage.get(c.call_sid), first_line=lines.get(c.call_sid, ""))
            | {"analysis_summary": summaries.get(c.call_sid)}
            for c in recent
        ]
        body = await render_template(
            "calls.html", active=rows, recent=recent_rows, since=format_id(since), states=STATES,
            csrf=self._csrf_field(), searched=search is not None, problem=problem, form=request.args,
        )  # fmt: skip
        return Response(body, content_type="text/html; charset=utf-8")

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
            return Response(body, status=404, content_type="text/html; charset=utf-8")
        utterances = await queries.get_utterances(engine, call_sid)
        alerts = await queries.get_alerts(engine, call_sid)
        coverage = (await queries.get_coverage(engine, [call_sid])).get(call_sid)
        row = _call_row(call, board, coverage=coverage) if call is not None else _board_row(call_sid, board or {})
        language = captions.call_language(utterances)
        analysis = await analyses.stored_analysis(engine, call_sid)
        feelings = _utterance_sentiments(analysis)
        rows = [_utterance_row(u, language) for u in utterances]
        body = await render_template(
            "call.html", call=row, utterances=[r | {"sentiment": feelings.get(r["key"])} for r in rows],
            analysis=analysis,
            lanes=_lanes(utterances), downloads=list(DOWNLOADS), since=since, csrf=self._csrf_field(),
            alerts=[_alert_row(alert) for alert in alerts],
        )  # fmt: skip
        return Response(body, content_type="text/html; charset=utf-8")

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

    async def report(self, call_sid: str) -> Response:
        """The call's one report as a file: what `GET /api/calls/{call_sid}/report` answers."""
        if not self._d.signed_in():
            return _to_login()
        async with self._d.engine().connect() as connection:
            event = await reports.call_report(connection, call_sid, utc_now())
        if event is None:
            return Response("no such call\n", status=404, content_type="text/plain; charset=utf-8")
        response = Response(json.dumps(event["data"], ensure_ascii=False), content_type="application/json")
        response.headers["Content-Disposition"] = f'attachment; filename="{call_sid}.report.json"'
        return response

    async def login_form(
        self, *, failed: bool = False, retry_after: int | None = None, cookies_dropped: bool = False
    ) -> Response:
        """The login page; over plain http from a host not loopback it says first that a login cannot work there.

        `cookies_dropped`: a login was just posted without the form's cookie from such an origin, so the browser
        dropped it: that is the answer, not "wrong password".
        """
        keys = self._d.keys
        cookie = self._login_csrf_cookie()
        body = await render_template(
            "login.html", failed=failed and not cookies_dropped, retry_after=retry_after, configured=keys is not None,
            csrf=login_tokens.login_csrf_token(keys, cookie) if keys is not None and cookie else "",
            insecure=_insecure_origin(), dropped=cookies_dropped,
        )  # fmt: skip
        status = 429 if retry_after else 403 if cookies_dropped else 401 if failed else 200 if keys is not None else 503
        response = Response(body, status=status, content_type="text/html; charset=utf-8")
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        if cookie and cookie != request.cookies.get(CSRF_COOKIE):
            response.set_cookie(CSRF_COOKIE, cookie, secure=True, httponly=True, samesite="Strict", path="/")
        return response

    async def login(self) -> Response:
        keys = self._d.keys
        address = request.remote_addr or "unknown"
        if keys is None:
            log_refusal(log, "dashboard.refused", address, why="no password set")
            return await self.login_form(failed=True)
        # Before the form is read: a locked-out address costs no parsing and no scrypt.
        if (wait := self._d.limits.retry_after(address)) is not None:
            return await self._limited(address, wait)
        cookie = request.cookies.get(CSRF_COOKIE)
        # Read only with a CSRF cookie the server signed: no form of ours comes without one.
        form = await request.form if login_tokens.csrf_cookie_valid(keys, cookie) else None
        if form is None or not login_tokens.login_csrf_valid(keys, cookie, form.get("csrf")):
            return await self._form_refused(address)
        # Counted before the check, so attempts in flight count too (asked again: others may have come meanwhile).
        if (wait := self._d.limits.attempt(address)) is not None:
            return await self._limited(address, wait)
        given = form.get("password", "").encode()
        async with self._d.kdf_slots:
            matches = await asyncio.to_thread(login_tokens.password_matches, keys, given)
        if not matches:
            log_refusal(log, "dashboard.login_failed", address, why="wrong password")
            return await self.login_form(failed=True)
        self._d.limits.succeeded(address)
        lifetime_s = self._d.lifetime_s
        session = login_tokens.issue_session(keys, now=time.time(), lifetime_s=lifetime_s)
        log.info("dashboard.login", address=address)
        response = _see_other("/")
        response.set_cookie(
            SESSION_COOKIE, session, max_age=int(lifetime_s), secure=True, httponly=True, samesite="Lax", path="/"
        )
        return response

    async def _form_refused(self, address: str) -> Response:
        """A login form without a valid CSRF token: sent with no cookie from an origin whose Secure cookies the
        browser drops, the answer says why; otherwise it is refused as an old form or a wrong password."""
        if (insecure := _insecure_origin()) is not None and CSRF_COOKIE not in request.cookies:
            log_refusal(log, "dashboard.refused", address, why=_DROPPED_WHY.format(host=insecure["host"]))
            return await self.login_form(cookies_dropped=True)
        log_refusal(log, "dashboard.refused", address, why="login form without a valid CSRF token")
        return await self.login_form(failed=True)

    async def _limited(self, address: str, wait: int) -> Response:
        limits = self._d.limits
        log_refusal(
            log,
            "dashboard.login_limited",
            address,
            why=f"more than {limits.per_address} login attempts from this address or {limits.overall} from everyone "
            f"in {limits.window_s:g} s",
            retry_after_s=wait,
        )
        return await self.login_form(retry_after=wait)

    async def logout(self) -> Response:
        # Without a valid session there is nothing to log out and no token to match: the form is not even read.
        if not self._d.signed_in() or self._d.keys is None:
            return _to_login()
        session = request.cookies.get(SESSION_COOKIE)
        token = (await request.form).get("csrf")
        if not login_tokens.session_csrf_valid(self._d.keys, session, token):
            log_refusal(log, "dashboard.refused", request.remote_addr, why="logout form without a valid CSRF token")
            return Response("refused: reload the page and try again\n", status=403, content_type="text/plain")
        response = _see_other("/login")
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
        return response

    # --- CSRF: the login form's token goes with a signed cookie, a signed-in page's with the session -------------

    def _login_csrf_cookie(self) -> str:
        """The visitor's `csrf` cookie if the server signed it, else a new one (a made-up value is never used)."""
        keys = self._d.keys
        if keys is None:
            return ""
        given = request.cookies.get(CSRF_COOKIE)
        return given if login_tokens.csrf_cookie_valid(keys, given) and given else login_tokens.new_csrf_cookie(keys)

    def _csrf_field(self) -> str:
        """A signed-in page's forms' token (the logout form): bound to the session it was shown with."""
        session = request.cookies.get(SESSION_COOKIE)
        if self._d.keys is None or not session:
            return ""
        return login_tokens.session_csrf_token(self._d.keys, session)


_DROPPED_WHY: Final = (
    "login over plain http at {host}: the browser dropped the page's Secure cookies; open the page over https "
    "or on localhost"
)


def _insecure_origin() -> dict[str, str] | None:
    """The request's host and a loopback address to use instead, when its origin is one whose `Secure` cookies a
    browser drops (plain http, not loopback); None when a login can work from where the request came."""
    host = request.host
    if login_tokens.secure_cookies_kept(request.scheme, host):
        return None
    port = login_tokens.host_port(host)
    return {"host": host, "local": f"http://localhost{':' + port if port else ''}/", "port": port or "80"}


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
    if request.cookies.get(SESSION_COOKIE):  # any client can send one: summarised per address like every refusal
        log_refusal(
            log, "dashboard.session_refused", request.remote_addr,
            why="expired, longer-lived than DASHBOARD_SESSION_HOURS, or not issued with this secret and password",
        )  # fmt: skip
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


async def _icon(body: bytes) -> Response:
    return Response(body, content_type="image/svg+xml; charset=utf-8")


def _secure_headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _call_row(
    call: queries.CallRecord,
    board: dict[str, Any] | None,
    *,
    coverage: dict[str, Any] | None = None,
    first_line: str = "",
) -> dict[str, Any]:
    states = (board or {}).get("states") or {}
    ended = call.ended_at is not None
    not_streamed = call.status == CallStatus.NOT_STREAMED
    return {
        **_coverage_fields(coverage, ended=ended),
        "call_sid": call.call_sid, "from_number": call.from_number, "to_number": call.to_number,
        "direction": call.direction, "tracks": list(call.tracks), "started_at": _iso(call.started_at),
        "ended_at": _iso(call.ended_at) if call.ended_at else "", "status": call.status,
        "state": "not_streamed" if not_streamed else _state(states, active=call.ended_at is None),
        "ended_by": call.ended_by or "",
        "alerts": call.alert_count,
        # Why no stream of the call started, and what to check (`summary` of a not_streamed call).
        "reason": str(call.summary.get("reason", "")) if not_streamed else "",
        "fix": str(call.summary.get("fix", "")) if not_streamed else "",
        "first_line": shortened(first_line),
    }  # fmt: skip


def _board_row(call_sid: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A call the feed knows is on but the database does not have yet (its first write still queued)."""
    return {
        "call_sid": call_sid, "from_number": fields.get("from_number", ""), "to_number": fields.get("to_number", ""),
        "direction": fields.get("direction", ""), "tracks": fields.get("tracks", []),
        "started_at": fields.get("started_at", ""), "ended_at": "", "status": "active",
        "state": _state(fields.get("states") or {}, active=True), "ended_by": "", "alerts": 0,
        "reason": "", "fix": "", "first_line": "",
        **_coverage_fields(None, ended=False),
    }  # fmt: skip


def _coverage_fields(coverage: dict[str, Any] | None, *, ended: bool) -> dict[str, Any]:
    """What the pages say of a call's coverage: a few words for the list, a line above the call's lanes (its kind
    colours it), and what the feed does for a call that has ended (live words no longer; batch's still may)."""
    if coverage is None:
        line = "Coverage: not recorded for this call" if ended else "Coverage is counted when the call ends"
        kind = "unknown"
    elif coverage["complete"]:
        line, kind = f"Transcript complete: all {coverage['audio_s']:g} s of audio transcribed", "complete"
    else:
        line, kind = f"Transcript incomplete: {coverage['missing']}", "incomplete"
    waiting = coverage is not None and coverage["waiting_s"] > 0
    feed = ("call ended: words from batch appear here as they come" if waiting else "call ended") if ended else ""
    return {"coverage": short_text(coverage), "coverage_line": line, "coverage_kind": kind, "feed_ended": feed}


def shortened(text: str, limit: int = FIRST_LINE_CHARS) -> str:
    """`text` cut to at most `limit` characters at a word's end, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(",.;:") + "…"


def _state(states: dict[str, str], *, active: bool) -> str:
    if not active:
        return "ended"
    values = set(states.values())
    for worst in ("paused", "spooled", "reconnecting", "handed_over"):
        if worst in values:
            return worst
    return "streaming" if values else "starting"


def _utterance_row(utterance: queries.UtteranceRecord, language: str | None) -> dict[str, Any]:
    """One final as the page shows it; `language` its own when it differs from the call's (a small tag)."""
    return {
        "key": f"{utterance.track}:{round(utterance.start * 1000)}", "speaker": utterance.speaker,
        "track": utterance.track, "start": utterance.start, "end": utterance.end, "text": utterance.text,
        "clock": clock(utterance.start), "language": captions.differs(utterance, language),
        "spoken": utterance.languages[0] if utterance.languages else None, "words": len(utterance.words),
    }  # fmt: skip


def _alert_row(alert: queries.AlertRecord) -> dict[str, Any]:
    """One alert as the page lists it (and, for `said`, highlights at its words: live.js reads the data)."""
    return {
        "alert_id": alert.alert_id, "rule": alert.rule, "kind": alert.kind, "speaker": alert.speaker,
        "track": alert.track, "text": alert.text, "start": alert.start, "end": alert.end, "clock": clock(alert.start),
        "window": f"{alert.end:g}",
    }  # fmt: skip


def _utterance_sentiments(analysis: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each analysed utterance's sentiment by its row's key (track and start, as `_utterance_row` makes it)."""
    if analysis is None:
        return {}
    scored = (analysis.get("sentiment") or {}).get("utterances") or []
    return {f"{entry['track']}:{round(entry['start'] * 1000)}": entry for entry in scored}


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
