"""JSON answers and bearer-token checks shared by the API (`api.py`) and the operator's routes (`ops.py`)."""

from __future__ import annotations

import hmac
import json

import structlog
from quart import Response, request

from service.refusals import log_refusal
from service.web.request_rules import logged_path

log = structlog.get_logger("callscribe.api")


def bearer_refusal(token: bytes | None, setting: str, *, disabled: str) -> Response | None:
    """503 while `token` is unset, 401 without the right `Authorization: Bearer` token; None lets it through."""
    if token is None:
        return refuse(503, "api_disabled", disabled)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return refuse(401, "unauthorized", f"send Authorization: Bearer <{setting}>", challenge="Bearer")
    # Constant time, so response timing does not tell how much of a guessed token was right.
    if not hmac.compare_digest(given.strip().encode(), token):
        return refuse(401, "unauthorized", "wrong bearer token", challenge='Bearer error="invalid_token"')
    return None


def json_response(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, content_type="application/json")


def error_response(status: int, error: str, message: str, **extra: str) -> Response:
    return json_response({"error": error, "message": message, **extra}, status)


def refuse(
    status: int, error: str, why: str, *, parameter: str | None = None, challenge: str | None = None
) -> Response:
    """A 4xx/503 answer, logged as one `api.refused` line with the address (the token never appears in it).

    Past 5 a minute from one address the lines are counted instead (`log_refusal`): a flood is one summary line.
    """
    named = {"parameter": parameter} if parameter else {}
    fields = {"status": status, "error": error, "why": why, "method": request.method, "path": logged_path(request.path)}
    log_refusal(log, "api.refused", request.remote_addr, **fields, **named)
    response = error_response(status, error, why, **named)
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    return no_store(response)


def no_store(response: Response) -> Response:
    # Transcripts are personal data: no shared cache or browser cache should keep them.
    response.headers["Cache-Control"] = "no-store"
    return response
