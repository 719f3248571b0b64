"""Per-call stream tokens (pure, no I/O): what makes a `/media` stream prove which call it is.

Twilio signs the `/media` upgrade over the `wss://` URL alone, so that signature is the same for every call and
never expires: whoever sees it once can open streams forever. `/voice` therefore puts a token in the
`<Stream>` as a `<Parameter>`; Twilio hands it back in `start.customParameters`, and `/media` believes nothing
a stream claims until the token checks out for that call.

A token is `v2.<purpose>.<issued_at>.<mac>`: the HMAC-SHA256, under a key of callscribe's own, of the purpose,
the account, the CallSid, the track setting, the Unix second it was issued and the call's `from` and `to` as
`/voice` forwarded them (the <Parameter>s of `twiml.FORWARDED_FIELDS`), base64url without padding.
It names no call itself (the stream's `start` does), so a token copied to another call, account or track
setting, with other numbers beside it, or altered in any way, fails the MAC; one older than STREAM_TOKEN_TTL_S
has expired. The purpose keeps a hand-over token (issued by callscribe to start a second stream on a live call)
from being one `/voice` hands out, and the other way round. 63 to 66 characters: well under Twilio's 500 for a
parameter's name and value.

`v1` tokens (before the numbers were covered) are refused as `OUTDATED`: they vouch for the call but not for
the numbers beside it, so a `start` carrying one could show any caller.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

PARAMETER = "callscribe_token"  # the <Parameter name>; never stored, logged or passed on with the others
VERSION = "v2"
_OLD_VERSIONS = frozenset({"v1"})  # issued by an earlier callscribe: refused, and the log says so
# The forwarded <Parameter>s (twiml.FORWARDED_FIELDS) a token vouches for: what the stored call shows as its numbers.
FROM = "from"
TO = "to"
MAX_CLOCK_SKEW_S = 60  # a token from a process whose clock runs ahead, not one from the future
_KEY_LABEL = b"callscribe stream token key v1"
_MAC_BYTES = 32


class Purpose(enum.StrEnum):
    """Who may issue a token, and so what the stream may do."""

    VOICE = "voice"  # handed out by /voice: the call's first stream
    HANDOVER = "handover"  # issued by callscribe itself to move a live call's stream to another process


_PURPOSES = frozenset(purpose.value for purpose in Purpose)


class Refusal(enum.StrEnum):
    """Why a stream's token is refused: the fixed part of the log line and the close reason."""

    MISSING = "missing"
    MALFORMED = "malformed"
    OUTDATED = "outdated"
    NOT_FOR_THIS_STREAM = "not_for_this_stream"
    EXPIRED = "expired"
    FROM_THE_FUTURE = "from_the_future"
    WRONG_PURPOSE = "wrong_purpose"


_EXPLANATIONS = {
    Refusal.MISSING: f"no {PARAMETER} parameter: the stream was not started by this service's /voice answer",
    Refusal.MALFORMED: "the stream token is not one this service issues",
    Refusal.OUTDATED: "the stream token is of an earlier version (v1), which does not cover the call's numbers",
    # With the refusal's prefix, exactly the 123 bytes a WebSocket close reason may hold.
    Refusal.NOT_FOR_THIS_STREAM: "the stream token was issued for another call, account, track or from/to numbers",
    Refusal.EXPIRED: "the stream token has expired (STREAM_TOKEN_TTL_S)",
    Refusal.FROM_THE_FUTURE: "the stream token was issued in the future (check the clocks)",
    Refusal.WRONG_PURPOSE: "the stream token was issued for another purpose",
}


class TokenRefused(ValueError):
    """The token does not let this stream in; `reason` says why, without the token."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(_EXPLANATIONS[reason])
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claim:
    """What a token vouches for: one stream of one call, with the track setting it was asked for and the numbers
    forwarded beside it."""

    purpose: Purpose
    account_sid: str
    call_sid: str
    track: str  # the <Stream track> setting: inbound_track, outbound_track or both_tracks
    issued_at: int  # Unix seconds
    from_number: str  # the `from` <Parameter> as forwarded ("" when the webhook had no From)
    to_number: str  # the `to` <Parameter> as forwarded ("" when the webhook had no To)


def numbers(parameters: Mapping[str, str]) -> tuple[str, str]:
    """(from, to) as a stream's parameters carry them, "" where absent: what a token is issued and checked for."""
    return parameters.get(FROM, ""), parameters.get(TO, "")


def derive_key(secret: str) -> bytes:
    """The token key from STREAM_TOKEN_SECRET or TWILIO_AUTH_TOKEN: never the secret itself, so a token's MAC
    says nothing about the auth token that signs Twilio's requests."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def issue(key: bytes, claim: Claim) -> str:
    """The token for `claim`."""
    return f"{VERSION}.{claim.purpose.value}.{claim.issued_at}.{_encode(_mac(key, claim))}"


def verify(
    key: bytes,
    token: str | None,
    *,
    account_sid: str,
    call_sid: str,
    track: str,
    parameters: Mapping[str, str],
    now: float,
    ttl_s: float,
    purposes: frozenset[Purpose],
) -> Purpose:
    """The token's purpose when it was issued for this stream and the numbers among its `parameters`, is fresh
    and has an allowed purpose.

    Raises TokenRefused (and nothing else) for any other input, whatever it holds.
    """
    if not token:
        raise TokenRefused(Refusal.MISSING)
    purpose, issued_at, mac = _parse(token)
    from_number, to_number = numbers(parameters)
    claim = Claim(
        purpose=purpose, account_sid=account_sid, call_sid=call_sid, track=track, issued_at=issued_at,
        from_number=from_number, to_number=to_number,
    )  # fmt: skip
    # Constant time: how much of a guessed MAC was right must not show in the time it takes to refuse it.
    if not hmac.compare_digest(mac, _mac(key, claim)):
        raise TokenRefused(Refusal.NOT_FOR_THIS_STREAM)
    if issued_at > now + MAX_CLOCK_SKEW_S:
        raise TokenRefused(Refusal.FROM_THE_FUTURE)
    if now - issued_at > ttl_s:
        raise TokenRefused(Refusal.EXPIRED)
    if purpose not in purposes:
        raise TokenRefused(Refusal.WRONG_PURPOSE)
    return purpose


def _parse(token: str) -> tuple[Purpose, int, bytes]:
    parts = token.split(".")
    if len(parts) == 4 and parts[0] in _OLD_VERSIONS:
        raise TokenRefused(Refusal.OUTDATED)
    if len(parts) != 4 or parts[0] != VERSION:
        raise TokenRefused(Refusal.MALFORMED)
    _, purpose, issued_at, mac = parts
    if purpose not in _PURPOSES or not (issued_at.isascii() and issued_at.isdigit()):
        raise TokenRefused(Refusal.MALFORMED)
    if len(issued_at) > 12:  # past the year 33000: not a time this service wrote
        raise TokenRefused(Refusal.MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenRefused(Refusal.MALFORMED) from exc
    if len(raw) != _MAC_BYTES or _encode(raw) != mac:  # one spelling only
        raise TokenRefused(Refusal.MALFORMED)
    return Purpose(purpose), int(issued_at), raw


def _mac(key: bytes, claim: Claim) -> bytes:
    # Each field length-prefixed: a stream's claims come from its `start` message, which anyone holding the
    # upgrade signature can write, so no choice of field values may give another claim's message.
    fields = (
        VERSION, claim.purpose.value, claim.account_sid, claim.call_sid, claim.track, str(claim.issued_at),
        claim.from_number, claim.to_number,
    )  # fmt: skip
    message = "".join(f"{len(field)}:{field}" for field in fields)
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
