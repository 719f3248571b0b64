"""`TwilioSignatures`, the one check /voice and /media make: the token, or CALLSCRIBE_INSECURE_DEV without one."""

from __future__ import annotations

from typing import Any

import pytest

from service.simulator.messages import twilio_signature
from service.twilio.signatures import TwilioSignatures
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings

URL = "https://calls.example.org/voice"
FORM = {"CallSid": "CA" + "1" * 32, "From": "+15005550006"}


@pytest.mark.parametrize(
    ("overrides", "usable", "state"),
    [
        ({}, True, "set"),
        ({"callscribe_insecure_dev": True}, True, "set"),  # a token is always checked
        ({"twilio_auth_token": None}, False, "MISSING (every Twilio request will be refused)"),
        (
            {"twilio_auth_token": None, "callscribe_insecure_dev": True},
            True,
            "MISSING (CALLSCRIBE_INSECURE_DEV=1: signatures unchecked)",
        ),
    ],
)
def test_what_the_settings_allow(overrides: dict[str, Any], usable: bool, state: str) -> None:
    signatures = TwilioSignatures(make_settings(**overrides))
    assert (signatures.usable, signatures.token_state()) == (usable, state)


@pytest.mark.parametrize("insecure_dev", [False, True])
def test_a_token_is_always_checked(insecure_dev: bool) -> None:
    signatures = TwilioSignatures(make_settings(callscribe_insecure_dev=insecure_dev))
    assert signatures.refusal(URL, FORM, twilio_signature(TWILIO_TOKEN, URL, FORM)) is None
    assert signatures.refusal(URL, FORM, None) == "missing X-Twilio-Signature header"
    wrong = signatures.refusal(URL, FORM, twilio_signature("another-token", URL, FORM))
    assert wrong is not None
    assert wrong.startswith(f"X-Twilio-Signature does not match {URL}")
    forged_form = signatures.refusal(URL, {**FORM, "From": "+15005550009"}, twilio_signature(TWILIO_TOKEN, URL, FORM))
    assert forged_form is not None


def test_no_token_refuses_unless_insecure_dev_which_says_so(log_lines: LogLines) -> None:
    refused = TwilioSignatures(make_settings(twilio_auth_token=None)).refusal(URL, FORM, "anything")
    assert refused is not None
    assert refused.startswith("TWILIO_AUTH_TOKEN is not set")
    assert not log_lines.events("signature.unchecked")

    unchecked = TwilioSignatures(make_settings(twilio_auth_token=None, callscribe_insecure_dev=True))
    assert unchecked.refusal(URL, FORM, None) is None
    assert log_lines.events("signature.unchecked", url=URL)


def test_a_mismatch_names_the_likely_cause() -> None:
    """Same host: the token is the likely cause. A stale PUBLIC_URL: both hosts, and the PUBLIC_URL to set."""
    signatures = TwilioSignatures(make_settings())
    wrong = signatures.refusal(URL, FORM, twilio_signature("another-token", URL, FORM), request_url=URL)
    assert wrong is not None
    assert "most likely a wrong TWILIO_AUTH_TOKEN" in wrong
    moved = "https://new.example.org/voice"
    stale = signatures.refusal(URL, FORM, twilio_signature(TWILIO_TOKEN, moved, FORM), request_url=moved)
    assert stale is not None
    assert "Twilio signed it for host new.example.org, but PUBLIC_URL says calls.example.org" in stale
    assert stale.endswith("set PUBLIC_URL to https://new.example.org and restart")
    neither = signatures.refusal(URL, FORM, twilio_signature("another-token", moved, FORM), request_url=moved)
    assert neither is not None
    assert "the request claimed host new.example.org, PUBLIC_URL says calls.example.org" in neither
    assert signatures.refusal(moved, FORM, twilio_signature(TWILIO_TOKEN, moved, FORM), request_url=URL) is None
