"""Entry point for the `hypercorn` command (Procfile, `make run`): `hypercorn 'service.web.asgi:create()'`."""

from __future__ import annotations

from collections.abc import Callable

from hypercorn.typing import ASGIFramework

from service import logs
from service.settings import load_settings
from service.web.app import asgi_app
from service.web.runtime import start_up_problems


def create(stop_server: Callable[[], None] | None = None) -> ASGIFramework:
    """Read settings (exiting with a clear message if one is bad), set up logs, build the app. `stop_server` stops
    the server the app runs in, once SIGTERM's drain is done (`serve` in-process); without it the drain raises
    SIGINT, which stops the `hypercorn` command's server."""
    settings = load_settings(start_up_problems)
    logs.configure(settings.log_level, settings.log_format)
    return asgi_app(settings, handle_sigterm=True, stop_server=stop_server).asgi
