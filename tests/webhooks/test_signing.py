"""Webhook signatures as a receiver checks them: which deliveries `verify` refuses, and why."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from service.webhooks.signing import sign, verify

SECRET = "whsec-signing"
NOW = 1_800_000_000
BODY = b'{"id":"e1"}'
GOOD = sign(SECRET, NOW, BODY)


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    """The documented recipe, computed independently, so a receiver in another language can follow it."""
    digest = hmac.new(SECRET.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"v1={digest}"


@pytest.mark.parametrize(
    ("timestamp", "body", "signature", "now", "why"),
    [
        (str(NOW), BODY, GOOD, NOW, None),
        (str(NOW), BODY, GOOD, NOW + 300, None),  # the tolerance's edge is still fresh
        (str(NOW), BODY, GOOD, NOW - 300, None),  # a clock a little behind the sender's
        (str(NOW), BODY, f" {GOOD} ", NOW, None),
        (str(NOW), BODY, f"v1=00,{GOOD}", NOW, None),  # rotating secrets: any one may match
        (str(NOW), BODY, GOOD, NOW + 301, "timestamp is more than 300 s away from now (a replay?)"),
        (str(NOW), BODY, GOOD, NOW - 301, "timestamp is more than 300 s away from now (a replay?)"),
        ("", BODY, GOOD, NOW, "timestamp is not an integer"),
        ("1800000000.5", BODY, GOOD, NOW, "timestamp is not an integer"),
        ("soon", BODY, GOOD, NOW, "timestamp is not an integer"),
        (str(NOW + 1), BODY, GOOD, NOW, "signature does not match"),  # the timestamp is signed too
        (str(NOW), BODY + b" ", GOOD, NOW, "signature does not match"),
        (str(NOW), BODY, "", NOW, "signature does not match"),
        (str(NOW), BODY, GOOD.removeprefix("v1="), NOW, "signature does not match"),
        (str(NOW), BODY, GOOD.upper(), NOW, "signature does not match"),
    ],
)
def test_verify_refuses_with_a_reason(timestamp: str, body: bytes, signature: str, now: float, why: str | None) -> None:
    assert verify(SECRET, timestamp=timestamp, body=body, signature=signature, now=now) == why


def test_the_tolerance_is_the_receivers_choice() -> None:
    assert verify(SECRET, timestamp=str(NOW), body=BODY, signature=GOOD, now=NOW + 30, tolerance_s=60) is None
    why = verify(SECRET, timestamp=str(NOW), body=BODY, signature=GOOD, now=NOW + 61, tolerance_s=60)
    assert why == "timestamp is more than 60 s away from now (a replay?)"
