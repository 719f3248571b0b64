"""The public URLs Twilio uses to reach us: the webhook URL it signs, and the `<Stream url>` it connects to.

Twilio signs the URL exactly as it was configured (the webhook) or as written in the TwiML (the stream's
`wss://` URL, with no parameters). Behind a TLS-terminating proxy the app sees http/ws, so the public URL is
rebuilt from PUBLIC_URL, or else from the request's Host header and its scheme as the one trusted proxy hop's
X-Forwarded-Proto gives it (`web/proxy.py`; never X-Forwarded-Host, which any client can set). Pure string
work (twilio layer): `signatures.py` checks against these URLs.
"""

from __future__ import annotations

from service.settings import Settings

MEDIA_PATH = "/media"  # where Twilio streams a call's audio; the /media route serves this path


def public_host(settings: Settings, host_header: str) -> str:
    """The host Twilio reaches us at: PUBLIC_URL's, else the (proxy-corrected) Host header."""
    if settings.public_url:
        return settings.public_url.split("://", 1)[1]
    return _first_host(host_header)


def webhook_url(settings: Settings, *, scheme: str, host_header: str, path: str, query: str) -> str:
    """The URL Twilio signed for a webhook request: the configured URL, query string included."""
    base = settings.public_url or f"{scheme}://{_first_host(host_header)}"
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def request_webhook_url(*, scheme: str, host_header: str, path: str, query: str) -> str:
    """The webhook URL as the request itself names it, PUBLIC_URL aside: what to compare when PUBLIC_URL's fails."""
    base = f"{scheme}://{_first_host(host_header)}{path}"
    return f"{base}?{query}" if query else base


def stream_url(settings: Settings, host_header: str) -> str:
    """The `<Stream url>`: Twilio only speaks wss://, whatever the app itself sees behind the proxy."""
    return f"wss://{public_host(settings, host_header)}{MEDIA_PATH}"


def request_stream_url(host_header: str) -> str:
    """The stream URL as the upgrade itself names it, PUBLIC_URL aside."""
    return f"wss://{_first_host(host_header)}{MEDIA_PATH}"


def _first_host(host_header: str) -> str:
    return host_header.split(",", 1)[0].strip()
