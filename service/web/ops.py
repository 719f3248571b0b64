"""Wiring layer: the operator's routes. `/healthz` (alive), `/readyz` (can take calls), `/metrics` (Prometheus).

What `/readyz` checks is readiness.py's. The health routes carry no personal data and answer without a token,
as load balancers and uptime checks expect. `/metrics` takes METRICS_TOKEN, or API_TOKEN when that is unset,
as a bearer token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Blueprint, Response

from service import metrics
from service.settings import Settings
from service.web.readiness import Readiness
from service.web.responses import bearer_refusal, json_response


def ops_blueprint(settings: Settings, readiness: Callable[[], Awaitable[Readiness]]) -> Blueprint:
    ops = Blueprint("ops", __name__)
    token = settings.metrics_token or settings.api_token
    metrics_token = token.get_secret_value().encode() if token is not None else None

    @ops.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @ops.get("/readyz")
    async def readyz() -> Response:
        answer = await readiness()
        body = {"status": "ready" if answer.ready else "not ready", "checks": answer.checks}
        return json_response(body, 200 if answer.ready else 503)

    @ops.get("/metrics")
    async def metrics_route() -> Response:
        refused = bearer_refusal(
            metrics_token, "METRICS_TOKEN", disabled="set METRICS_TOKEN (or API_TOKEN) to turn /metrics on"
        )
        if refused is not None:
            return refused
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    return ops
