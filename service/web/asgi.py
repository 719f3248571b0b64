"""Entry point for the `hypercorn` command (Procfile, `make run`): `hypercorn 'service.web.asgi:create()'`."""

from __future__ import annotations

from hypercorn.typing import ASGIFramework

from service import logs
from service.settings import load_settings
from service.web.app import asgi_app
from service.web.runtime import start_up_problems


def create() -> ASGIFramework:
    """Read settings (exiting with a clear message if one is bad), set up logs, build the app."""
    settings = load_settings(start_up_problems)
    logs.configure(settings.log_level, settings.log_format)
    return asgi_app(settings, handle_sigterm=True).asgi
