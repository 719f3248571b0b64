"""The page's session and CSRF tokens (service/web/login_tokens.py)."""

from __future__ import annotations

import pytest

from service.web import login_tokens

KEY = login_tokens.derive_key(b"passw0rd")


def test_a_session_is_good_until_it_expires() -> None:
    """A session issued now is valid within its lifetime and not a second after."""
    session = login_tokens.issue_session(KEY, now=1000.0, lifetime_s=60)
    assert login_tokens.session_valid(KEY, session, now=1059.0)
    assert not login_tokens.session_valid(KEY, session, now=1060.0)


@pytest.mark.parametrize("value", [None, "", "garbage", "1.2", "1.2.3.4", "x1000.nonce.mac", "99999999999.n.0000"])
def test_anything_not_issued_is_no_session(value: str | None) -> None:
    """Malformed values, a non-numeric expiry or a made-up MAC are refused."""
    assert not login_tokens.session_valid(KEY, value, now=0.0)


def test_an_altered_or_foreign_session_is_refused() -> None:
    """A later expiry written in, or a session of another password, fails the MAC."""
    session = login_tokens.issue_session(KEY, now=1000.0, lifetime_s=60, nonce="n")
    _, nonce, mac = session.split(".")
    assert not login_tokens.session_valid(KEY, f"99999.{nonce}.{mac}", now=1000.0)
    assert not login_tokens.session_valid(login_tokens.derive_key(b"other"), session, now=1000.0)


def test_a_csrf_token_belongs_to_its_cookie() -> None:
    """The form's token checks against its own cookie only; a missing one is no token."""
    cookie = login_tokens.new_csrf_cookie()
    token = login_tokens.csrf_token(KEY, cookie)
    assert login_tokens.csrf_valid(KEY, cookie, token)
    assert not login_tokens.csrf_valid(KEY, login_tokens.new_csrf_cookie(), token)
    assert not login_tokens.csrf_valid(KEY, cookie, None)
    assert not login_tokens.csrf_valid(KEY, None, token)
