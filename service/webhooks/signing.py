"""Protocol layer (no I/O): how callscribe signs webhook deliveries, and how a receiver verifies them.

Each POST carries `Callscribe-Timestamp` (Unix seconds) and `Callscribe-Signature: v1=<hex>`, the
HMAC-SHA256 with WEBHOOK_SECRET of `"{timestamp}.{body}"`. Signing the timestamp with the body lets a
receiver refuse replays: a delivery whose timestamp is older than its tolerance is refused even though
its signature is right. Every event also carries a stable `id`, so a receiver can drop a repeat.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "Callscribe-Timestamp"
SIGNATURE_HEADER = "Callscribe-Signature"
EVENT_HEADER = "Callscribe-Event-Id"
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(
    secret: str, *, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> str | None:
    """Why a delivery must be refused, or None when it is genuine and fresh. For receivers and tests."""
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "timestamp is not an integer"
    if abs(now - sent_at) > tolerance_s:
        return f"timestamp is more than {tolerance_s:g} s away from now (a replay?)"
    expected = sign(secret, sent_at, body)
    # Several signatures may be sent while a secret is rotated; any one that matches is enough.
    if not any(hmac.compare_digest(expected, candidate.strip()) for candidate in signature.split(",")):
        return "signature does not match"
    return None
