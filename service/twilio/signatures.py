"""Twilio request signatures, for the `/voice` webhook and the `/media` WebSocket upgrade (twilio layer).

https://www.twilio.com/docs/usage/webhooks/webhooks-security. `urls.py` rebuilds the public URL Twilio
signed; here it is checked against TWILIO_AUTH_TOKEN. `TwilioSignatures` is the one place both routes ask,
so the CALLSCRIBE_INSECURE_DEV escape hatch behaves the same on both.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

import structlog
from twilio.request_validator import RequestValidator

from service.settings import Settings
from service.twilio.stream_tokens import derive_key

log = structlog.get_logger("callscribe.twilio")


def refusal(
    token: str | None, url: str, params: Mapping[str, str], signature: str | None, *, request_url: str | None = None
) -> str | None:
    """Why a request must be refused, or None when its signature is Twilio's for `url`.

    `request_url` is the URL as the request itself names it (its Host), when that is not `url` (PUBLIC_URL's):
    a refusal then says which host the request claimed, and whether the signature was Twilio's for that one.
    """
    if token is None:
        return "TWILIO_AUTH_TOKEN is not set (set it, or CALLSCRIBE_INSECURE_DEV=1 for local work)"
    if not signature:
        return "missing X-Twilio-Signature header"
    # Twilio adds form fields without notice, so every field is passed; the validator compares in constant
    # time and tries the URL with and without a port.
    validator = RequestValidator(token)
    if validator.validate(url, params, signature):
        return None
    if request_url is None or _host(request_url) == _host(url):
        return (
            f"X-Twilio-Signature does not match {url}: most likely a wrong TWILIO_AUTH_TOKEN (it must be the Auth "
            "Token of the Twilio account that owns the number: Twilio console, Account info; after rotating it, "
            "set the new one and restart), else a proxy that changed the URL Twilio called (set PUBLIC_URL)"
        )
    public, claimed = _host(url), _host(request_url)
    if validator.validate(request_url, params, signature):
        return (
            f"X-Twilio-Signature does not match {url}: Twilio signed it for host {claimed}, but PUBLIC_URL says "
            f"{public} (did the ngrok or public URL change?); set PUBLIC_URL to https://{claimed} and restart"
        )
    return (
        f"X-Twilio-Signature does not match {url}: the request claimed host {claimed}, PUBLIC_URL says {public}; "
        "check that PUBLIC_URL is the URL the number calls (an ngrok URL changes on each start) and that "
        "TWILIO_AUTH_TOKEN is the Auth Token of the account that owns the number"
    )


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


class TwilioSignatures:
    """The signature check of this process's settings: TWILIO_AUTH_TOKEN, or none at all when it is unset
    and CALLSCRIBE_INSECURE_DEV=1 (local work; every unchecked request says so in the log)."""

    def __init__(self, settings: Settings) -> None:
        self._token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        self._insecure_dev = settings.callscribe_insecure_dev

    @property
    def usable(self) -> bool:
        """Can Twilio's requests get in at all: a token to check them with, or the insecure escape hatch."""
        return bool(self._token) or self._insecure_dev

    @property
    def checked(self) -> bool:
        """Whether requests must carry a signature at all (False only in insecure development, with no token)."""
        return not (self._token is None and self._insecure_dev)

    def token_state(self) -> str:
        """What `service.ready` says about TWILIO_AUTH_TOKEN (never the token)."""
        if self._token:
            return "set"
        if self._insecure_dev:
            return "MISSING (CALLSCRIBE_INSECURE_DEV=1: signatures unchecked)"
        return "MISSING (every Twilio request will be refused)"

    def refusal(
        self, url: str, params: Mapping[str, str], signature: str | None, *, request_url: str | None = None
    ) -> str | None:
        """Why the request for `url` must be refused, or None to let it in (`request_url`: see `refusal`)."""
        if self._token is None and self._insecure_dev:
            log.warning("signature.unchecked", why="CALLSCRIBE_INSECURE_DEV=1 and no TWILIO_AUTH_TOKEN", url=url)
            return None
        return refusal(self._token, url, params, signature, request_url=request_url)


def stream_token_key(settings: Settings) -> bytes | None:
    """The key stream tokens are made and checked with (STREAM_TOKEN_SECRET, else TWILIO_AUTH_TOKEN); None when
    neither is set, and then no stream can prove its call."""
    secret = settings.stream_token_secret or settings.twilio_auth_token
    return derive_key(secret.get_secret_value()) if secret is not None else None
