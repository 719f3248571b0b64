"""Wiring layer: the one proxy hop callscribe trusts (Heroku's router, ngrok) for the public scheme and host.

Hypercorn's ProxyFixMiddleware applies X-Forwarded-Proto/-Host, so the URLs we build and check Twilio's
signatures against are the public ones; `WebsocketSchemeFix` undoes the one thing it gets wrong for Quart.
"""

from __future__ import annotations

from typing import Final

from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope


def behind_one_proxy(app: ASGIFramework) -> ASGIFramework:
    """`app`, seeing the scheme and host the client used, as the one proxy in front of it reports them."""
    return ProxyFixMiddleware(app, mode="legacy", trusted_hops=1)


class WebsocketSchemeFix:
    """Proxies say `X-Forwarded-Proto: https` for a wss:// connection, and ProxyFix copies that into the
    WebSocket scope; Werkzeug's routing then refuses the upgrade (400). Map it back to ws/wss."""

    _SCHEMES: Final = {"http": "ws", "https": "wss"}

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket" and scope["scheme"] in self._SCHEMES:
            scope = {**scope, "scheme": self._SCHEMES[scope["scheme"]]}
        await self.app(scope, receive, send)
