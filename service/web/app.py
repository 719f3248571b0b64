"""Wiring layer: the app, put together from its parts. Nothing here does work of its own.

`asgi_app(settings)` builds everything a process needs (no module-level state), so tests build apps with
their own settings: the runtime (runtime.py), the Quart app with every route but /media (`create_app`), and
/media as plain ASGI in front of it (media.py, media_socket.py), all behind the request guard (guard.py) and
one trusted proxy (proxy.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from hypercorn.typing import ASGIFramework
from quart import Quart, Response, request

from service.calls.events import CallObserver
from service.calls.observers import LogObserver
from service.settings import Settings
from service.web.api import api_blueprint
from service.web.dashboard import Dashboard, dashboard_blueprint, dashboard_keys
from service.web.guard import RequestGuard
from service.web.live import live_blueprint
from service.web.login_limits import LoginLimits
from service.web.media import MediaStreams
from service.web.media_socket import MediaRoute
from service.web.ops import ops_blueprint
from service.web.proxy import behind_one_proxy
from service.web.readiness import readiness
from service.web.request_rules import VOICE_BODY_MAX
from service.web.responses import bearer_refusal
from service.web.runtime import Runtime
from service.web.voice import voice_blueprint


@dataclass(frozen=True, slots=True)
class ServedApp:
    """What Hypercorn serves (`asgi`), and the runtime behind it, for whoever must look inside (the tests)."""

    asgi: ASGIFramework
    runtime: Runtime


def create_app(runtime: Runtime, *, login_clock: Callable[[], float] = time.monotonic) -> Quart:
    """The Quart app of `runtime`: start-up and shutdown, /voice, the API and the operator's routes.

    `login_clock` is what the page's login limits count by (tests move it instead of waiting a minute).
    """
    app = Quart("callscribe", static_folder=None)  # the page's files are its blueprint's (/assets)
    # The guard (guard.py) reads every body before Quart does; these are a second line behind it.
    app.config["MAX_CONTENT_LENGTH"] = VOICE_BODY_MAX
    app.config["BODY_TIMEOUT"] = runtime.settings.http_body_timeout_s
    app.before_serving(runtime.announce)
    app.after_serving(runtime.shutdown)
    app.register_blueprint(voice_blueprint(runtime))
    # The engine is made at startup (before_serving), so the API asks for it per request.
    app.register_blueprint(api_blueprint(runtime.settings, lambda: runtime.store.engine, runtime.eraser))
    dashboard = Dashboard(
        runtime.settings,
        dashboard_keys(runtime.settings),
        lambda: runtime.live,
        lambda: runtime.store.engine,
        LoginLimits(login_clock),
        standin=runtime.standin,
    )
    app.register_blueprint(live_blueprint(runtime.settings, lambda: runtime.live, _bearer_or_session(dashboard)))
    app.register_blueprint(dashboard_blueprint(dashboard))
    app.register_blueprint(ops_blueprint(runtime.settings, lambda: readiness(runtime)))
    return app


def _bearer_or_session(dashboard: Dashboard) -> Callable[[], Awaitable[Response | None]]:
    """The live feed's check: the API's bearer token, or (without an Authorization header) the page's session."""
    settings = dashboard.settings
    token = settings.api_token.get_secret_value().encode() if settings.api_token else None

    async def authorize() -> Response | None:
        if "Authorization" not in request.headers and dashboard.signed_in():
            return None
        return bearer_refusal(token, "API_TOKEN", disabled="set API_TOKEN to turn the API on")

    return authorize


def asgi_app(
    settings: Settings,
    *,
    observers: Sequence[CallObserver] | None = None,
    handle_sigterm: bool = False,
    stop_server: Callable[[], None] | None = None,
    login_clock: Callable[[], float] = time.monotonic,
) -> ServedApp:
    """The app as Hypercorn serves it: one proxy hop trusted, every HTTP request guarded (bounded before it is
    read), /media straight from ASGI, the rest through Quart."""
    runtime = Runtime(settings, observers or [LogObserver()], handle_sigterm=handle_sigterm, stop_server=stop_server)
    quart_app = cast(ASGIFramework, create_app(runtime, login_clock=login_clock))
    routed = MediaRoute(quart_app, MediaStreams(runtime).serve)
    guarded = RequestGuard(
        routed,
        signatures_required=runtime.signatures.checked,
        body_timeout_s=settings.http_body_timeout_s,
        voice_in_progress=2 * settings.max_calls,
        other_in_progress=settings.http_max_in_progress,
    )
    return ServedApp(asgi=behind_one_proxy(guarded), runtime=runtime)
