"""The TwiML /voice answers, and the ready-to-paste documents in twiml/ that must stay equal to them."""

from __future__ import annotations

import re
import time
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from service.simulator.messages import twilio_signature
from service.twilio.stream_tokens import PARAMETER, Purpose, TokenRefused, derive_key, verify
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.paths import ROOT
from tests.helpers.service import make_settings, running_service

TWIML_DIR = ROOT / "twiml"
PUBLIC_URL = "https://callscribe.example.com"
# TwiML Bins fill {{From}}-style templates from the call; /voice fills them from the webhook's form.
TEMPLATE_FORM = {"From": "{{From}}", "To": "{{To}}", "Direction": "{{Direction}}"}

DOCUMENTS: dict[str, dict[str, Any]] = {
    "transcribe-caller.xml": {},
    "forward-and-transcribe-caller.xml": {"forward_to": "+15555550100"},
    "forward-and-transcribe-both-sides.xml": {"forward_to": "+15555550100", "stream_track": "both_tracks"},
}


async def _voice(settings_overrides: dict[str, Any], form: dict[str, str]) -> httpx.Response:
    settings = make_settings(public_url=PUBLIC_URL, **settings_overrides)
    async with running_service(settings) as service, httpx.AsyncClient() as client:
        signature = twilio_signature(TWILIO_TOKEN, f"{PUBLIC_URL}/voice", form)
        return await client.post(f"{service.url}/voice", data=form, headers={"X-Twilio-Signature": signature})


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
async def test_twiml_documents_equal_what_voice_answers(name: str) -> None:
    """Each file in twiml/ is byte for byte what /voice answers with the settings it documents, but for the
    stream token, which a bin cannot compute (it needs STREAM_TOKENS=off, see twiml/README.md)."""
    response = await _voice(DOCUMENTS[name], TEMPLATE_FORM)
    assert response.status_code == 200
    answer, token_parameters = re.subn(r'<Parameter name="callscribe_token" value="[^"]*" />', "", response.text)
    assert token_parameters == 1
    assert (TWIML_DIR / name).read_text().strip() == answer


def test_every_twiml_document_is_covered() -> None:
    """No document in twiml/ escapes the equality test above."""
    assert sorted(p.name for p in TWIML_DIR.glob("*.xml")) == sorted(DOCUMENTS)


async def test_voice_streams_then_says_and_pauses() -> None:
    """Default answer: <Start><Stream wss://PUBLIC_HOST/media> with the call's fields, then <Say> and <Pause>."""
    form = {"CallSid": "CA1", "From": "+15005550006", "To": "+15005550001", "Direction": "inbound"}
    response = await _voice({"greeting": "Hello there.", "pause_s": 120}, form)
    assert response.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(response.text)  # noqa: S314 - our own server's answer
    assert [child.tag for child in root] == ["Start", "Say", "Pause"]
    stream = root.find("Start/Stream")
    assert stream is not None
    assert stream.attrib == {
        "url": "wss://callscribe.example.com/media",
        "track": "inbound_track",
        "name": "callscribe",
    }
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    token = params.pop(PARAMETER)
    assert params == {"from": "+15005550006", "to": "+15005550001", "direction": "inbound"}
    claim = {"account_sid": "", "call_sid": "CA1", "track": "inbound_track", "now": time.time(), "ttl_s": 300}
    voice = frozenset({Purpose.VOICE})
    assert verify(derive_key(TWILIO_TOKEN), token, **claim, parameters=params, purposes=voice) is Purpose.VOICE
    with pytest.raises(TokenRefused):  # the token covers the numbers it was handed out with
        verify(derive_key(TWILIO_TOKEN), token, **claim, parameters={**params, "from": "+1900"}, purposes=voice)
    assert root.findtext("Say") == "Hello there."
    pause = root.find("Pause")
    assert pause is not None
    assert pause.attrib["length"] == "120"


async def test_voice_dials_forward_to_after_starting_the_stream() -> None:
    """With FORWARD_TO the stream is started first and the call is then connected with <Dial>."""
    response = await _voice({"forward_to": "+14155550100", "stream_track": "both_tracks"}, {"CallSid": "CA1"})
    root = ElementTree.fromstring(response.text)  # noqa: S314 - our own server's answer
    assert [child.tag for child in root] == ["Start", "Dial"]
    assert root.findtext("Dial") == "+14155550100"
    stream = root.find("Start/Stream")
    assert stream is not None
    assert stream.attrib["track"] == "both_tracks"
