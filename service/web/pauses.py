"""Wiring layer: `POST /api/calls/{call_sid}/pause` and `/resume`, on the API's blueprint (its bearer token).

Either may reach any worker of any dyno: the request changes the call's pause record (`storage/controls.py`,
audited with who asked) and waits up to `CONFIRM_S` for the process holding the call's stream to apply it
(`calls/pausing.py`). 200 says it took effect and where on the call's timeline (`at_s`); 202 says it is recorded
and not yet applied (no process has the call's stream right now: it applies when the stream starts or moves).
Both are idempotent: asking for the state a call is already in changes nothing and answers its record. The
body is optional JSON: `by` (who asks, for the audit log) and, for a pause, `max_s` (it resumes by itself then;
TRANSCRIPTION_PAUSE_MAX_S when not given).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from quart import Blueprint, Response, request
from sqlalchemy.ext.asyncio import AsyncEngine

from service.settings import Settings
from service.storage import controls
from service.storage.audit import ACTOR_RULE, Audited, valid_actor
from service.storage.controls import PauseState, Refused
from service.times import utc_now
from service.web.responses import json_response, refuse

CONFIRM_S: Final = 2.0  # how long a request waits for the holding process to apply it before answering 202
MAX_S_LIMIT: Final = 14_400  # four hours: a pause that long is a mistake, not a card


class BadBody(ValueError):
    """A body we cannot use; the 400 names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class PauseBody:
    by: str | None = None
    max_s: float | None = None


def parse_body(raw: str | bytes, *, pausing: bool) -> PauseBody:
    """The optional JSON object: `by` (a name, `audit.valid_actor`) and, pausing, `max_s`."""
    if not raw.strip():
        return PauseBody()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody("body", "must be a JSON object, or empty") from exc
    if not isinstance(body, dict):
        raise BadBody("body", "must be a JSON object, or empty")
    allowed = ("by", "max_s") if pausing else ("by",)
    for name in body:
        if name not in allowed:
            raise BadBody(name, f"unknown field; this route takes {' and '.join(allowed)}")
    by = body.get("by")
    if by is not None and (not isinstance(by, str) or not valid_actor(by)):
        raise BadBody("by", ACTOR_RULE)
    max_s = body.get("max_s")
    if max_s is not None and (
        isinstance(max_s, bool)
        or not isinstance(max_s, int | float)
        or not math.isfinite(max_s)
        or not 1 <= max_s <= MAX_S_LIMIT
    ):
        raise BadBody("max_s", f"must be a number of seconds from 1 to {MAX_S_LIMIT}")
    return PauseBody(by=by, max_s=float(max_s) if max_s is not None else None)


def pause_json(state: PauseState) -> dict[str, Any]:
    return {
        "call_sid": state.call_sid,
        "paused": state.paused,
        "changed": state.changed,
        "applied": state.applied_at_s is not None or state.version == 0,
        "at_s": round(state.applied_at_s, 2) if state.applied_at_s is not None else None,
        "changed_at": state.changed_at.isoformat() if state.changed_at else None,
        "changed_by": state.changed_by or None,
        "resume_at": state.resume_at.isoformat() if state.resume_at else None,
        "version": state.version,
    }


def add_pause_routes(blueprint: Blueprint, settings: Settings, engine_provider: Callable[[], AsyncEngine]) -> None:
    """The two routes, on the API's blueprint (which authenticates every request first)."""
    routes = _PauseRoutes(settings, engine_provider)
    blueprint.add_url_rule("/calls/<call_sid>/pause", view_func=routes.pause, methods=["POST"])
    blueprint.add_url_rule("/calls/<call_sid>/resume", view_func=routes.resume, methods=["POST"])


class _PauseRoutes:
    def __init__(self, settings: Settings, engine_provider: Callable[[], AsyncEngine]) -> None:
        self._default_max_s = settings.transcription_pause_max_s or None
        self._engine = engine_provider

    async def pause(self, call_sid: str) -> Response:
        return await self._change(call_sid, pausing=True)

    async def resume(self, call_sid: str) -> Response:
        return await self._change(call_sid, pausing=False)

    async def _change(self, call_sid: str, *, pausing: bool) -> Response:
        if request.args:
            name = next(iter(request.args))
            return refuse(400, "bad_request", "unknown parameter; this route takes a JSON body", parameter=name)
        try:
            body = parse_body(await request.get_data(), pausing=pausing)
        except BadBody as exc:
            return refuse(400, "bad_request", exc.message, parameter=exc.field)
        who = Audited.of(body.by, f"api {request.remote_addr or 'unknown'}")
        max_s = (body.max_s or self._default_max_s) if pausing else None
        engine = self._engine()
        state = await controls.change_pause(engine, call_sid, paused=pausing, who=who, max_s=max_s, now=utc_now())
        if state is Refused.UNKNOWN_CALL:
            return refuse(404, "not_found", f"no call {call_sid}")
        if state is Refused.CALL_ENDED:
            return refuse(409, "call_ended", f"call {call_sid} is not in progress: there is nothing to pause or resume")
        assert isinstance(state, PauseState)
        if state.version and state.applied_at_s is None:
            state = await controls.wait_applied(engine, state, CONFIRM_S)
        answer = pause_json(state)
        return json_response(answer, status=200 if answer["applied"] else 202)
