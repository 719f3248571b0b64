"""Protocol layer (pure, no I/O): the page's session cookie and the CSRF tokens of its forms.

A session is `<expiry>.<nonce>.<mac>`: the expiry in Unix seconds, a random nonce, and an HMAC-SHA256 of both under
a key derived from the password (DASHBOARD_PASSWORD, else API_TOKEN). Nothing is stored: any process with the same
password checks it, a changed password ends every session, and an expired or altered one is no session. A form's
CSRF token is the HMAC of the visitor's `csrf` cookie (a random value set with the form), so a page on another
site can neither read nor forge it (double submit, signed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

SESSION_KEY_LABEL: Final = b"callscribe dashboard session v1"
CSRF_LABEL: Final = b"csrf:"


def derive_key(password: bytes) -> bytes:
    return hmac.new(password, SESSION_KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def issue_session(key: bytes, *, now: float, lifetime_s: float, nonce: str | None = None) -> str:
    expiry = int(now + lifetime_s)
    nonce = nonce or secrets.token_hex(16)
    body = f"{expiry}.{nonce}"
    return f"{body}.{_mac(key, body.encode())}"


def session_valid(key: bytes, value: str | None, *, now: float) -> bool:
    """Whether `value` is a session this key issued that has not expired."""
    if not value or value.count(".") != 2:
        return False
    expiry, nonce, mac = value.split(".")
    if not expiry.isascii() or not expiry.isdigit():
        return False
    if not hmac.compare_digest(_mac(key, f"{expiry}.{nonce}".encode()), mac):
        return False
    return int(expiry) > now


def new_csrf_cookie() -> str:
    return secrets.token_hex(16)


def csrf_token(key: bytes, cookie: str) -> str:
    return _mac(key, CSRF_LABEL + cookie.encode())


def csrf_valid(key: bytes, cookie: str | None, token: str | None) -> bool:
    """Whether the form's `token` belongs with the visitor's `csrf` cookie."""
    if not cookie or not token:
        return False
    return hmac.compare_digest(csrf_token(key, cookie), token)
