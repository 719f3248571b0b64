"""Entry point for the `hypercorn` command (Procfile, `make run`): `hypercorn 'service.asgi:create()'`."""

from __future__ import annotations

from hypercorn.typing import ASGIFramework

from service import logs
from service.app import asgi_app
from service.cli import load_settings


def create() -> ASGIFramework:
    """Read settings (exiting with a clear message if one is bad), set up logs, build the app."""
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    return asgi_app(settings, handle_sigterm=True)
