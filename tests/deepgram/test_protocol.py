"""Deepgram's protocol without I/O: HTTP statuses as our errors, Deepgram's error bodies, the batch options.

`status_error` is the one table both clients use (the live upgrade and the pre-recorded API), so every row pins
the error's type, its exact reason (what logs, spool sidecars and tests read) and its metric `kind`.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.deepgram.protocol import LIVE_ONLY_OPTIONS, batch_options, error_message, status_error
from service.errors import SttRejected, SttUnavailable
from tests.helpers.service import make_settings

CHECK_OPTIONS = "; check the DEEPGRAM_* options"
BAD_KEY = (
    ": DEEPGRAM_API_KEY is wrong, revoked or expired; create a key at https://console.deepgram.com (API Keys), set"
    " DEEPGRAM_API_KEY and restart"
)
NO_ACCESS = (
    ": the key's project may not use this model or feature; check DEEPGRAM_MODEL and DEEPGRAM_OPTIONS, or use a key"
    " with more access (https://console.deepgram.com)"
)
NO_CREDIT = (
    ", Payment Required); add credit or a payment method at https://console.deepgram.com (Billing): new calls are"
    " transcribed live again at once, and spooled audio on the spool's next pass"
)
OUT_OF_CREDIT = "Deepgram refused the request: the Deepgram project is out of credit"


@pytest.mark.parametrize(
    ("status", "said", "at_upgrade", "error", "reason"),
    [
        # The live upgrade: no body to quote, and it says where it failed.
        (401, "", True, SttRejected, f"Deepgram rejected the API key (HTTP 401){BAD_KEY}"),
        (402, "", True, SttRejected, f"{OUT_OF_CREDIT} (HTTP 402{NO_CREDIT}"),
        (403, "", True, SttRejected, f"Deepgram refused access for this API key (HTTP 403){NO_ACCESS}"),
        (400, "", True, SttRejected, f"Deepgram refused the request (HTTP 400){CHECK_OPTIONS}"),
        (404, "", True, SttRejected, f"Deepgram refused the request (HTTP 404){CHECK_OPTIONS}"),
        (408, "", True, SttUnavailable, "Deepgram answered HTTP 408 at the upgrade"),
        (429, "", True, SttUnavailable, "Deepgram answered HTTP 429 at the upgrade"),
        (503, "", True, SttUnavailable, "Deepgram answered HTTP 503 at the upgrade"),
        (200, "", True, SttUnavailable, "Deepgram answered HTTP 200 at the upgrade"),
        (None, "", True, SttUnavailable, "Deepgram answered HTTP None at the upgrade"),
        # The pre-recorded API: Deepgram's own words after the status.
        (
            401,
            "Invalid credentials.",
            False,
            SttRejected,
            f"Deepgram rejected the API key (HTTP 401: Invalid credentials.){BAD_KEY}",
        ),
        (402, "No credits.", False, SttRejected, f"{OUT_OF_CREDIT} (HTTP 402: No credits.{NO_CREDIT}"),
        (
            403,
            "No access.",
            False,
            SttRejected,
            f"Deepgram refused access for this API key (HTTP 403: No access.){NO_ACCESS}",
        ),
        (400, "Bad audio.", False, SttRejected, f"Deepgram refused the request (HTTP 400: Bad audio.){CHECK_OPTIONS}"),
        (400, "", False, SttRejected, f"Deepgram refused the request (HTTP 400){CHECK_OPTIONS}"),
        (408, "", False, SttUnavailable, "Deepgram could not transcribe now (HTTP 408)"),
        (429, "Slow down.", False, SttUnavailable, "Deepgram could not transcribe now (HTTP 429: Slow down.)"),
        (500, "", False, SttUnavailable, "Deepgram could not transcribe now (HTTP 500)"),
        (502, "Bad gateway.", False, SttUnavailable, "Deepgram could not transcribe now (HTTP 502: Bad gateway.)"),
        (200, "", False, SttUnavailable, "Deepgram's answer was not a transcript (HTTP 200)"),
        (302, "", False, SttUnavailable, "Deepgram's answer was not a transcript (HTTP 302)"),
        (None, "", False, SttUnavailable, "Deepgram could not transcribe now (HTTP None)"),
    ],
)
def test_status_error(status: int | None, said: str, at_upgrade: bool, error: type, reason: str) -> None:
    """4xx is final except 408 and 429; everything else may pass. The reason says what Deepgram said, and where."""
    raised = status_error(status, said=said, at_upgrade=at_upgrade)
    assert type(raised) is error
    assert (raised.reason, str(raised), raised.status) == (reason, reason, status)
    assert raised.close_code is None
    assert raised.kind == (f"http_{status}" if status is not None else "other")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": "r"}, "Invalid credentials."),
        ({"err_code": "INVALID_AUTH"}, "INVALID_AUTH"),
        ({"error": "Bad Request", "reason": "No such model."}, "No such model."),
        ({"error": "Bad Request"}, "Bad Request"),
        ({"err_msg": "", "err_code": "EMPTY_MESSAGE"}, "EMPTY_MESSAGE"),
        ({"err_msg": "x" * 300}, "x" * 200),
        ({"request_id": "r"}, ""),
        ({}, ""),
        ("upstream connect error", ""),
        (None, ""),
        (["err_msg"], ""),
    ],
)
def test_error_message(body: object, said: str) -> None:
    """Deepgram's words from either of its error shapes, at most 200 characters; nothing from anything else."""
    assert error_message(body) == said


def test_batch_options_by_default() -> None:
    """The settings that apply to a WAV, with utterances; never the audio format (the WAV header says it)."""
    assert batch_options(make_settings(None)) == {
        "model": "nova-3",
        "language": "en-US",
        "punctuate": True,
        "smart_format": True,
        "utterances": True,
    }


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"deepgram_model": "nova-2", "deepgram_language": "fr"}, {"model": "nova-2", "language": "fr"}),
        ({"deepgram_punctuate": False, "deepgram_smart_format": False}, {"punctuate": False, "smart_format": False}),
        ({"deepgram_keyterms": "Acme,Zed"}, {"keyterm": ["Acme", "Zed"]}),
        (
            {"deepgram_options": "diarize=true"},
            {"request_options": {"additional_query_parameters": {"diarize": "true"}}},
        ),
        (
            {"deepgram_options": "redact=pci&redact=ssn"},
            {"request_options": {"additional_query_parameters": {"redact": ["pci", "ssn"]}}},
        ),
        # Names callscribe sets itself are not overridden by DEEPGRAM_OPTIONS.
        ({"deepgram_options": "model=x&utterances=false&language=de"}, {}),
        ({"deepgram_options": ""}, {}),
    ],
)
def test_batch_options_carry_the_settings(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each setting lands on its option; DEEPGRAM_OPTIONS travel as additional query parameters."""
    defaults = batch_options(make_settings(None))
    assert batch_options(make_settings(None, **overrides)) == {**defaults, **expected}


@pytest.mark.parametrize("name", sorted(LIVE_ONLY_OPTIONS))
def test_batch_options_drop_each_live_only_option(name: str) -> None:
    """A live-only DEEPGRAM_OPTIONS name would make every batch request a 400: it is dropped, the rest kept."""
    options = batch_options(make_settings(None, deepgram_options=f"{name}=1&redact=pci"))
    assert options["request_options"] == {"additional_query_parameters": {"redact": "pci"}}
    assert name not in options
