"""Twilio request signatures, for the `/voice` webhook and the `/media` WebSocket upgrade.

Twilio signs the URL exactly as it was configured (the webhook) or as written in the TwiML (the stream's
`wss://` URL, with no parameters): https://www.twilio.com/docs/usage/webhooks/webhooks-security. Behind a
TLS-terminating proxy the app sees http/ws, so the public URL is rebuilt from PUBLIC_URL, or else from the
request's scheme and host after Hypercorn's ProxyFixMiddleware applied X-Forwarded-Proto/-Host.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from service.settings import Settings

MEDIA_PATH = "/media"


def public_host(settings: Settings, host_header: str) -> str:
    """The host Twilio reaches us at: PUBLIC_URL's, else the (proxy-corrected) Host header."""
    if settings.public_url:
        return settings.public_url.split("://", 1)[1]
    return host_header.split(",", 1)[0].strip()


def webhook_url(settings: Settings, *, scheme: str, host_header: str, path: str, query: str) -> str:
    """The URL Twilio signed for a webhook request: the configured URL, query string included."""
    base = settings.public_url or f"{scheme}://{host_header.split(',', 1)[0].strip()}"
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def stream_url(settings: Settings, host_header: str) -> str:
    """The `<Stream url>`: Twilio only speaks wss://, whatever the app itself sees behind the proxy."""
    return f"wss://{public_host(settings, host_header)}{MEDIA_PATH}"


def refusal(token: str | None, url: str, params: Mapping[str, str], signature: str | None) -> str | None:
    """Why a request must be refused, or None when its signature is Twilio's."""
    if token is None:
        return "TWILIO_AUTH_TOKEN is not set (set it, or CALLSCRIBE_INSECURE_DEV=1 for local work)"
    if not signature:
        return "missing X-Twilio-Signature header"
    # Twilio adds form fields without notice, so every field is passed; the validator compares in constant
    # time and tries the URL with and without a port.
    if not RequestValidator(token).validate(url, params, signature):
        return f"X-Twilio-Signature does not match {url} (wrong TWILIO_AUTH_TOKEN, or a URL other than Twilio's)"
    return None
