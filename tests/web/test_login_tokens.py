"""The page's password check, session and CSRF tokens (service/web/login_tokens.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from service.web import login_tokens

SECRET = b"s" * 64
PASSWORD = b"right-passw0rd"
KEYS = login_tokens.page_keys(SECRET, PASSWORD)
DAY = 86400.0


def test_the_password_is_checked_through_the_salted_hash() -> None:
    """The right password matches; a wrong one, or one past the length bound, does not."""
    assert login_tokens.password_matches(KEYS, PASSWORD)
    assert not login_tokens.password_matches(KEYS, b"wrong-passw0rd")
    assert not login_tokens.password_matches(KEYS, PASSWORD + b"x" * login_tokens.MAX_PASSWORD_BYTES)
    assert KEYS.password_hash != hashlib.sha256(PASSWORD).digest()
    assert login_tokens.page_keys(b"t" * 64, PASSWORD).salt != KEYS.salt  # each deployment its own salt


def test_what_the_login_page_hands_out_confirms_no_guessed_password() -> None:
    """The probe's oracle: knowing the right password (as a guesser who hit it would) without the server's secret
    verifies neither a session nor a login form's CSRF pair, by the old derivation or by the new one."""
    cookie = login_tokens.new_csrf_cookie(KEYS)
    token = login_tokens.login_csrf_token(KEYS, cookie)
    session = login_tokens.issue_session(KEYS, now=1000.0, lifetime_s=60)
    old_key = hmac.new(PASSWORD, b"callscribe dashboard session v1", hashlib.sha256).digest()
    old_token = hmac.new(old_key, b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()
    assert token != old_token
    guesser = login_tokens.page_keys(b"", PASSWORD)  # the password right, the secret unknown
    assert not login_tokens.login_csrf_valid(guesser, cookie, token)
    assert not login_tokens.session_valid(guesser, session, now=1000.0, lifetime_s=60)
    assert login_tokens.login_csrf_valid(KEYS, cookie, token)


def test_a_session_is_good_until_it_expires() -> None:
    """A session issued now is valid within its lifetime and not a second after."""
    session = login_tokens.issue_session(KEYS, now=1000.0, lifetime_s=60)
    assert login_tokens.session_valid(KEYS, session, now=1059.0, lifetime_s=60)
    assert not login_tokens.session_valid(KEYS, session, now=1060.0, lifetime_s=60)


def test_a_session_signed_with_the_real_key_but_living_too_long_is_refused() -> None:
    """The server caps the expiry: a year-long session (right MAC) is refused when the lifetime is a day, and
    an expiry of 4000 digits is refused without being read as a number."""
    forged = login_tokens.issue_session(KEYS, now=1000.0, lifetime_s=365 * DAY)
    assert not login_tokens.session_valid(KEYS, forged, now=1000.0, lifetime_s=DAY)
    huge = "9" * 4000
    mac = hmac.new(KEYS.session, f"{huge}.n".encode(), hashlib.sha256).hexdigest()
    assert not login_tokens.session_valid(KEYS, f"{huge}.n.{mac}", now=1000.0, lifetime_s=DAY)


@pytest.mark.parametrize("value", [None, "", "garbage", "1.2", "1.2.3.4", "x1000.nonce.mac", "99999999999.n.0000"])
def test_anything_not_issued_is_no_session(value: str | None) -> None:
    """Malformed values, a non-numeric expiry or a made-up MAC are refused."""
    assert not login_tokens.session_valid(KEYS, value, now=0.0, lifetime_s=DAY)


def test_an_altered_or_foreign_session_is_refused() -> None:
    """A later expiry written in, or a session of another secret or password, fails the MAC."""
    session = login_tokens.issue_session(KEYS, now=1000.0, lifetime_s=60, nonce="n")
    _, nonce, mac = session.split(".")
    assert not login_tokens.session_valid(KEYS, f"1030.{nonce}.{mac}", now=1000.0, lifetime_s=60)
    for other in (login_tokens.page_keys(b"o" * 64, PASSWORD), login_tokens.page_keys(SECRET, b"other-passw0rd")):
        assert not login_tokens.session_valid(other, session, now=1000.0, lifetime_s=60)


def test_a_login_token_needs_a_cookie_the_server_signed() -> None:
    """The login form's token checks against its own signed cookie only; a made-up cookie is refused whatever
    token comes with it, even one computed with the server's own key (what a client cannot do)."""
    cookie = login_tokens.new_csrf_cookie(KEYS)
    token = login_tokens.login_csrf_token(KEYS, cookie)
    assert login_tokens.csrf_cookie_valid(KEYS, cookie)
    assert not login_tokens.login_csrf_valid(KEYS, login_tokens.new_csrf_cookie(KEYS), token)
    assert not login_tokens.login_csrf_valid(KEYS, cookie, None)
    assert not login_tokens.login_csrf_valid(KEYS, None, token)
    for made_up in ("abc", "abc.def", f"{cookie}x", "a.b.c"):
        assert not login_tokens.csrf_cookie_valid(KEYS, made_up)
        assert not login_tokens.login_csrf_valid(KEYS, made_up, login_tokens.login_csrf_token(KEYS, made_up))


def test_a_signed_in_forms_token_belongs_to_its_session() -> None:
    """The logout form's token checks against the session it was shown with, not another one."""
    session = login_tokens.issue_session(KEYS, now=1000.0, lifetime_s=60)
    token = login_tokens.session_csrf_token(KEYS, session)
    assert login_tokens.session_csrf_valid(KEYS, session, token)
    assert not login_tokens.session_csrf_valid(KEYS, login_tokens.issue_session(KEYS, now=1000.0, lifetime_s=60), token)
    assert not login_tokens.session_csrf_valid(KEYS, session, None)
    assert not login_tokens.session_csrf_valid(KEYS, None, token)


@pytest.mark.parametrize(
    ("scheme", "host"),
    [
        ("https", "calls.example.com"), ("https", "192.168.1.20:5001"), ("wss", "calls.example.com"),
        ("http", "localhost"), ("http", "LOCALHOST:5001"), ("http", "app.localhost:5001"),
        ("http", "127.0.0.1:5001"), ("http", "127.8.9.1"), ("http", "[::1]:5001"), ("http", "[::1]"),
    ],
)  # fmt: skip
def test_a_browser_keeps_secure_cookies_over_https_or_on_a_loopback_host(scheme: str, host: str) -> None:
    assert login_tokens.secure_cookies_kept(scheme, host)


@pytest.mark.parametrize(
    "host",
    ["192.168.1.20:5001", "10.0.0.2", "calls.example.com", "localhost.example.com:5001", "[fe80::1]:5001", "::1x", ""],
)
def test_a_browser_drops_secure_cookies_over_plain_http_from_any_other_host(host: str) -> None:
    """The Host a visitor typed decides: a LAN address, a name, a name that only starts like `localhost`."""
    assert not login_tokens.secure_cookies_kept("http", host)


@pytest.mark.parametrize(
    ("host", "name", "port"),
    [
        ("192.168.1.20:5001", "192.168.1.20", "5001"), ("calls.example.com", "calls.example.com", None),
        ("[fe80::1]:8080", "fe80::1", "8080"), ("[::1]", "::1", None), ("::1", "::1", None),
        ("example.com:", "example.com", None), ("example.com:x", "example.com", None),
    ],
)  # fmt: skip
def test_a_host_header_splits_into_its_name_and_port(host: str, name: str, port: str | None) -> None:
    assert (login_tokens.host_name(host), login_tokens.host_port(host)) == (name, port)
