"""Wiring layer: the one proxy hop callscribe trusts (Heroku's router, ngrok), and what it is trusted for.

Trusted from the one hop in front of us, each header's **last** value (the one that hop set or appended; what a
client sent before it stays in front):
- `X-Forwarded-Proto`: the scheme the client used (Heroku's router sets it; ngrok appends it).
- `X-Forwarded-For`: the client's address, for the login limits and the log lines (both append it).

Not trusted: `X-Forwarded-Host`. Heroku's router passes a client's own `X-Forwarded-Host` through untouched and
ngrok keeps the client's if there was one, so any client could choose the host Twilio's signatures are checked
against. The `Host` header is what both route by: a request that reached us through them names one of this
deployment's own hosts. A server that clients can reach without such a router in front must set PUBLIC_URL
(docs/failures.md).

Behind a proxy that says the client came over plain http, the page redirects to https (a password typed there
would cross the network in clear) and its forms refuse to be posted; responses to https carry HSTS, so a
browser never tries http again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, HTTPScope, Scope

HSTS: Final = (b"strict-transport-security", b"max-age=31536000")
_NOT_PAGES: Final = ("/api/", "/voice", "/media", "/healthz", "/readyz", "/metrics")


def behind_one_proxy(app: ASGIFramework) -> ASGIFramework:
    """`app`, seeing the scheme and client address the one proxy in front of it reports, and the page on https."""
    return _OneProxy(app)


def last_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The last comma-separated value of the last header named `name`: what the nearest hop said."""
    found: bytes | None = None
    for key, value in headers:
        if key.lower() == name:
            found = value
    if found is None:
        return None
    last = found.decode("latin-1").rsplit(",", 1)[-1].strip()
    return last or None


class _OneProxy:
    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        proto = last_value(headers, b"x-forwarded-proto")
        address = last_value(headers, b"x-forwarded-for")
        changed = dict(scope)
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                changed["scheme"] = "wss" if secure else "ws"
            else:
                changed["scheme"] = proto
        if address is not None:
            client = scope.get("client")
            port = client[1] if client else 0
            changed["client"] = (address, port)
        if scope["type"] == "http" and proto is not None:
            http_scope: HTTPScope = changed  # type: ignore[assignment]
            if proto == "http" and _is_page(scope["path"]):
                await _to_https(http_scope, send)
                return
            if proto == "https":
                send = _with_hsts(send)
        await self.app(changed, receive, send)  # type: ignore[arg-type]


def _is_page(path: str) -> bool:
    return not path.startswith(_NOT_PAGES)


async def _to_https(scope: HTTPScope, send: ASGISendCallable) -> None:
    """The page over plain http: a GET goes to the same URL on https; a form post is refused, never read."""
    host = last_value(scope["headers"], b"host") or ""
    if scope["method"] in ("GET", "HEAD"):
        path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        query = scope["query_string"].decode("latin-1")
        location = f"https://{host}{path}" + (f"?{query}" if query else "")
        status, headers, body = 308, [(b"location", location.encode("latin-1"))], b"the page is served on https\n"
    else:
        status, headers, body = 403, [], b"the page's forms are taken on https only\n"
    headers += [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers, "trailers": False})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _with_hsts(send: ASGISendCallable) -> ASGISendCallable:
    async def sending(message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], HSTS]}
        await send(message)

    return sending
