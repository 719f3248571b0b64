"""Stream tokens: a token opens only the stream it was issued for, while it is fresh, and nothing else gets in."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.twilio.stream_tokens import (
    MAX_CLOCK_SKEW_S,
    PARAMETER,
    Claim,
    Purpose,
    Refusal,
    TokenRefused,
    derive_key,
    issue,
    numbers,
    verify,
)

KEY = derive_key("auth-token")
NOW = 1_760_000_000
CLAIM = Claim(
    Purpose.VOICE, "AC" + "1" * 32, "CA" + "2" * 32, "inbound_track", NOW, from_number="+14155550100",
    to_number="+14155550111",
)  # fmt: skip
TOKEN = issue(KEY, CLAIM)


def parameters_of(claim: Claim) -> dict[str, str]:
    """The stream's other parameters as /voice forwards them beside the token (none for an empty number)."""
    both = {"from": claim.from_number, "to": claim.to_number, "direction": "inbound"}
    return {name: value for name, value in both.items() if value}


def check(token: str | None, *, claim: Claim = CLAIM, now: float = NOW + 5, ttl_s: float = 300.0,
          purposes: frozenset[Purpose] = frozenset({Purpose.VOICE})) -> Purpose:  # fmt: skip
    return verify(
        KEY, token, account_sid=claim.account_sid, call_sid=claim.call_sid, track=claim.track,
        parameters=parameters_of(claim), now=now, ttl_s=ttl_s, purposes=purposes,
    )  # fmt: skip


def flip_first_mac_character(token: str) -> str:
    head, mac = token.rsplit(".", 1)
    return f"{head}.{'B' if mac[0] != 'B' else 'C'}{mac[1:]}"


def test_the_issued_token_opens_its_own_stream() -> None:
    """A token /voice issued is accepted for the call, account and track it names."""
    assert check(TOKEN) is Purpose.VOICE


def test_a_token_fits_in_a_twilio_parameter() -> None:
    """Twilio caps a <Parameter>'s name and value together under 500 characters."""
    assert len(PARAMETER) + len(TOKEN) < 500


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"call_sid": "CA" + "3" * 32}, Refusal.NOT_FOR_THIS_STREAM),
        ({"account_sid": "AC" + "9" * 32}, Refusal.NOT_FOR_THIS_STREAM),
        ({"track": "both_tracks"}, Refusal.NOT_FOR_THIS_STREAM),
        ({"call_sid": CLAIM.call_sid[:-1]}, Refusal.NOT_FOR_THIS_STREAM),
        ({"from_number": "+19005550199"}, Refusal.NOT_FOR_THIS_STREAM),
        ({"to_number": "+19005550199"}, Refusal.NOT_FOR_THIS_STREAM),
        ({"from_number": ""}, Refusal.NOT_FOR_THIS_STREAM),
        # The numbers swapped, or moved across their boundary: each field is length-prefixed under the MAC.
        ({"from_number": CLAIM.to_number, "to_number": CLAIM.from_number}, Refusal.NOT_FOR_THIS_STREAM),
        ({"from_number": CLAIM.from_number + "+", "to_number": CLAIM.to_number[1:]}, Refusal.NOT_FOR_THIS_STREAM),
    ],
)
def test_a_token_for_another_stream_is_refused(changed: dict[str, str], reason: Refusal) -> None:
    """A token copied to another call, account or track setting, or beside other numbers, does not verify."""
    with pytest.raises(TokenRefused) as refused:
        check(TOKEN, claim=dataclasses.replace(CLAIM, **changed))
    assert refused.value.reason is reason


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (NOW + 301, Refusal.EXPIRED),
        (NOW + 10_000, Refusal.EXPIRED),
        (NOW - MAX_CLOCK_SKEW_S - 1, Refusal.FROM_THE_FUTURE),
    ],
)
def test_a_token_outside_its_time_is_refused(now: float, reason: Refusal) -> None:
    """Older than the TTL, or issued further ahead than clocks drift, is refused."""
    with pytest.raises(TokenRefused) as refused:
        check(TOKEN, now=now)
    assert refused.value.reason is reason


@pytest.mark.parametrize("now", [NOW, NOW + 300, NOW - MAX_CLOCK_SKEW_S])
def test_the_edges_of_its_time_are_accepted(now: float) -> None:
    """Up to the TTL itself, and a clock up to MAX_CLOCK_SKEW_S behind, still verify."""
    assert check(TOKEN, now=now) is Purpose.VOICE


def test_a_purpose_not_allowed_here_is_refused() -> None:
    """A hand-over token does not open a first stream, and a /voice token does not hand over."""
    handover = issue(KEY, dataclasses.replace(CLAIM, purpose=Purpose.HANDOVER))
    with pytest.raises(TokenRefused) as refused:
        check(handover)
    assert refused.value.reason is Refusal.WRONG_PURPOSE
    with pytest.raises(TokenRefused):
        check(TOKEN, purposes=frozenset({Purpose.HANDOVER}))
    assert check(handover, purposes=frozenset(Purpose)) is Purpose.HANDOVER


def test_changing_the_purpose_in_the_token_breaks_it() -> None:
    """The purpose is under the MAC: editing `voice` into `handover` is caught."""
    forged = TOKEN.replace(".voice.", ".handover.")
    with pytest.raises(TokenRefused) as refused:
        check(forged, purposes=frozenset(Purpose))
    assert refused.value.reason is Refusal.NOT_FOR_THIS_STREAM


def test_another_key_does_not_verify() -> None:
    """A token made with another secret (another deployment's) is refused."""
    other = issue(derive_key("another-auth-token"), CLAIM)
    with pytest.raises(TokenRefused) as refused:
        check(other)
    assert refused.value.reason is Refusal.NOT_FOR_THIS_STREAM


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, Refusal.MISSING),
        ("", Refusal.MISSING),
        ("v2", Refusal.MALFORMED),
        ("v3" + TOKEN[2:], Refusal.MALFORMED),
        (TOKEN + ".x", Refusal.MALFORMED),
        (TOKEN.replace(".voice.", ".admin."), Refusal.MALFORMED),
        (TOKEN.replace(f".{NOW}.", ".-5."), Refusal.MALFORMED),
        (TOKEN.replace(f".{NOW}.", ".9999999999999."), Refusal.MALFORMED),
        (TOKEN[:-2], Refusal.MALFORMED),
        (TOKEN + "A", Refusal.MALFORMED),
        (TOKEN[:-1] + "!", Refusal.MALFORMED),
        (flip_first_mac_character(TOKEN), Refusal.NOT_FOR_THIS_STREAM),
    ],
)
def test_malformed_tokens_are_refused_with_the_reason(token: str | None, reason: Refusal) -> None:
    """Each kind of broken token gets its own reason."""
    with pytest.raises(TokenRefused) as refused:
        check(token)
    assert refused.value.reason is reason


def version_1_token(claim: Claim) -> str:
    """A token as callscribe issued it before the numbers were covered: v1, its MAC over the rest alone."""
    fields = ("v1", claim.purpose.value, claim.account_sid, claim.call_sid, claim.track, str(claim.issued_at))
    message = "".join(f"{len(field)}:{field}" for field in fields)
    mac = base64.urlsafe_b64encode(hmac.new(KEY, message.encode(), hashlib.sha256).digest()).decode().rstrip("=")
    return f"v1.{claim.purpose.value}.{claim.issued_at}.{mac}"


def test_a_token_of_the_earlier_version_is_refused_as_outdated() -> None:
    """A real v1 token vouches for no numbers, so it lets in no stream, whatever numbers ride beside it."""
    with pytest.raises(TokenRefused) as refused:
        check(version_1_token(CLAIM))
    assert refused.value.reason is Refusal.OUTDATED
    assert "does not cover the call's numbers" in str(refused.value)


def test_the_numbers_are_read_from_the_forwarded_parameters() -> None:
    """`from` and `to` as the stream's parameters carry them, "" where /voice forwarded none."""
    assert numbers({"from": "+1", "to": "+2", "direction": "inbound"}) == ("+1", "+2")
    assert numbers({"direction": "inbound"}) == ("", "")


def test_the_refusal_message_never_holds_the_token() -> None:
    """What a refusal says (and so the log line and the close reason) names the problem, not the token."""
    with pytest.raises(TokenRefused) as refused:
        check(TOKEN, now=NOW + 10_000)
    assert TOKEN not in str(refused.value)
    assert TOKEN.rsplit(".", 1)[1] not in str(refused.value)


@given(token=st.text(max_size=200), call_sid=st.text(max_size=40), account_sid=st.text(max_size=40))
def test_any_input_is_accepted_only_with_the_right_token_or_refused(
    token: str, call_sid: str, account_sid: str
) -> None:
    """Whatever a stream sends, verify returns or raises TokenRefused: never another exception, never a pass."""
    try:
        verify(
            KEY, token, account_sid=account_sid, call_sid=call_sid, track="inbound_track", parameters={}, now=NOW,
            ttl_s=300, purposes=frozenset(Purpose),
        )  # fmt: skip
    except TokenRefused:
        return
    pytest.fail("a token nobody issued was accepted")
