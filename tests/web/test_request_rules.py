"""What a request may send, judged from its method, path and headers alone (web/request_rules.py)."""

from __future__ import annotations

import pytest

from service.web.request_rules import (
    FORM_BODY_MAX,
    OTHER_BODY_MAX,
    VOICE_BODY_MAX,
    body_limit,
    logged_path,
    refusal,
    too_busy,
    too_large,
    too_slow,
)

SIGNED = (b"x-twilio-signature", b"abc=")
FORM = (b"content-type", b"application/x-www-form-urlencoded")


def _length(n: int | str) -> tuple[bytes, bytes]:
    return (b"content-length", str(n).encode())


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("POST", "/voice", VOICE_BODY_MAX),
        ("GET", "/voice", VOICE_BODY_MAX),
        ("POST", "/login", FORM_BODY_MAX),
        ("POST", "/logout", FORM_BODY_MAX),
        ("GET", "/login", OTHER_BODY_MAX),
        ("DELETE", "/api/calls/CA1", OTHER_BODY_MAX),
        ("POST", "/api/calls", OTHER_BODY_MAX),
    ],
)
def test_each_route_reads_at_most_its_own_bound(method: str, path: str, limit: int) -> None:
    assert body_limit(method, path) == limit


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "words"),
    [
        ("POST", "/voice", [FORM, _length(15_000_000)], 403, "missing X-Twilio-Signature"),
        ("POST", "/voice", [FORM, (b"X-Twilio-Signature", b"  ")], 403, "missing X-Twilio-Signature"),
        ("POST", "/voice", [SIGNED, FORM, _length(VOICE_BODY_MAX + 1)], 413, f"at most {VOICE_BODY_MAX}"),
        ("POST", "/login", [FORM, _length(15_000_000)], 413, "15000000 bytes"),
        ("POST", "/login", [(b"Content-Type", b"multipart/form-data; boundary=x"), _length(10)], 415, "multipart"),
        ("POST", "/voice", [SIGNED, (b"content-type", b"Multipart/Mixed")], 415, "multipart"),
        ("POST", "/login", [FORM, _length("12a")], 400, "not a number"),
        ("POST", "/login", [FORM, _length("9" * 13)], 400, "not a number"),
        ("POST", "/login", [FORM, _length(10), _length(11)], 400, "two different Content-Length"),
        ("GET", "/api/calls", [_length(OTHER_BODY_MAX + 1)], 413, f"at most {OTHER_BODY_MAX}"),
    ],
)
def test_refused_before_a_byte_of_body_is_read(
    method: str, path: str, headers: list[tuple[bytes, bytes]], status: int, words: str
) -> None:
    refused = refusal(method, path, headers, signatures_required=True)
    assert refused is not None
    assert refused.status == status
    assert words in refused.why


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/voice", [SIGNED, FORM, _length(VOICE_BODY_MAX)]),
        ("POST", "/voice", [SIGNED, FORM, (b"transfer-encoding", b"chunked")]),  # bounded as it is read
        ("GET", "/voice", [SIGNED]),
        ("POST", "/login", [FORM, _length(FORM_BODY_MAX), _length(FORM_BODY_MAX)]),  # the same twice is one
        ("GET", "/api/live", []),
    ],
)
def test_what_twilio_and_a_browser_send_is_read(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> None:
    assert refusal(method, path, headers, signatures_required=True) is None


def test_an_unsigned_voice_request_is_read_only_where_signatures_are_not_checked() -> None:
    """Insecure development (no TWILIO_AUTH_TOKEN) lets /voice in unsigned; its body is still bounded."""
    assert refusal("POST", "/voice", [FORM, _length(100)], signatures_required=False) is None
    too_big = refusal("POST", "/voice", [FORM, _length(VOICE_BODY_MAX + 1)], signatures_required=False)
    assert too_big is not None
    assert too_big.status == 413


def test_refusals_found_while_reading_say_the_bound() -> None:
    assert (too_large(4096).status, too_large(4096).why) == (413, "the body went past 4096 bytes, the most read here")
    assert (too_slow(10.0).status, too_slow(10.0).why) == (408, "the body did not arrive within 10 s")
    busy = too_busy("other", 256)
    assert (busy.status, busy.error) == (503, "busy")
    assert "256 other requests" in busy.why


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/api/numbers/+14155550167", "/api/numbers/**********67"),
        ("/api/numbers/7", "/api/numbers/7"),
        ("/api/numbers/", "/api/numbers/"),
        ("/api/calls/CA1", "/api/calls/CA1"),
        ("/voice", "/voice"),
    ],
)
def test_an_erasure_path_is_logged_with_its_number_masked(path: str, logged: str) -> None:
    """A refusal's log line names the path; an erasure's number in it keeps its last two characters only."""
    assert logged_path(path) == logged
