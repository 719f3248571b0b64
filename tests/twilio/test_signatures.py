"""Twilio signatures on /voice and on the /media upgrade: valid, missing, wrong, behind a proxy, PUBLIC_URL."""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from service.simulator.client import replay_stream, simulate_call
from service.simulator.messages import CallSpec, twilio_signature
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import open_media

FORM = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "1" * 32, "From": "+15005550006", "To": "+15005550001"}


async def _post_voice(
    url: str, signed_url: str, token: str | None, headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = dict(headers or {})
    if token is not None:
        sent["X-Twilio-Signature"] = twilio_signature(token, signed_url, FORM)
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/voice", data=FORM, headers=sent)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (None, "missing X-Twilio-Signature"),
        ("not-the-token", "does not match"),
    ],
)
async def test_voice_refuses_unsigned_or_wrongly_signed_requests(
    deepgram: FakeDeepgram, log_lines: LogLines, token: str | None, why: str
) -> None:
    """/voice answers 403 and logs why, for a missing signature and one made with another token."""
    async with running_service(make_settings(deepgram)) as service:
        response = await _post_voice(service.url, f"{service.url}/voice", token)
    assert response.status_code == 403
    [refused] = log_lines.events("voice.refused")
    assert why in refused["why"]


async def test_voice_refuses_a_signature_over_another_url(deepgram: FakeDeepgram) -> None:
    """A signature made for a different URL (a replay to another endpoint) is refused."""
    async with running_service(make_settings(deepgram)) as service:
        response = await _post_voice(service.url, f"{service.url}/other", TWILIO_TOKEN)
    assert response.status_code == 403


async def test_voice_accepts_get_as_twilio_allows(deepgram: FakeDeepgram) -> None:
    """A GET webhook is signed over the URL with its query string and no body."""
    async with running_service(make_settings(deepgram)) as service:
        url = f"{service.url}/voice?CallSid=CA9&From=%2B15005550006"
        signature = twilio_signature(TWILIO_TOKEN, url, {})
        async with httpx.AsyncClient() as client:
            response = await client.get(url, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    assert '<Parameter name="from" value="+15005550006" />' in response.text


async def test_no_token_refuses_everything_unless_insecure_dev(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Without TWILIO_AUTH_TOKEN requests are refused; CALLSCRIBE_INSECURE_DEV=1 lets them in with a warning."""
    async with running_service(make_settings(deepgram, twilio_auth_token=None)) as service:
        refused = await _post_voice(service.url, f"{service.url}/voice", TWILIO_TOKEN)
    assert refused.status_code == 403
    assert "TWILIO_AUTH_TOKEN is not set" in log_lines.events("voice.refused")[0]["why"]

    settings = make_settings(deepgram, twilio_auth_token=None, callscribe_insecure_dev=True)
    async with running_service(settings) as service:
        allowed = await _post_voice(service.url, f"{service.url}/voice", None)
    assert allowed.status_code == 200
    assert log_lines.events("signature.unchecked")


async def test_media_upgrade_without_a_valid_signature_never_reaches_deepgram(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """A missing or wrong upgrade signature is refused with 403 before any Deepgram connection opens."""
    async with running_service(make_settings(deepgram)) as service:
        host = service.url.split("://")[1]
        with pytest.raises(InvalidStatus) as missing:
            await open_media(service.url, headers={"X-Twilio-Signature": ""})
        with pytest.raises(InvalidStatus) as http_scheme:
            await open_media(service.url, signed_url=f"https://{host}/media")  # the scheme Twilio does not sign
    assert missing.value.response.status_code == 403
    assert http_scheme.value.response.status_code == 403
    assert len(log_lines.events("media.refused")) == 2
    assert deepgram.upgrade_attempts == 0


async def test_behind_a_tls_proxy_urls_are_the_public_ones(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """Behind Heroku's router (the public Host, X-Forwarded-Proto) /voice checks https://PUBLIC and streams to
    wss://PUBLIC."""
    proxy = {"Host": "calls.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    spec = CallSpec(inbound=call_audio(41, 1.0), speed=0)
    async with running_service(make_settings(deepgram)) as service:
        response = await _post_voice(service.url, "https://calls.example.org/voice", TWILIO_TOKEN, proxy)
        assert response.status_code == 200
        assert 'url="wss://calls.example.org/media"' in response.text
        result = await simulate_call(
            service.url,
            spec,
            auth_token=TWILIO_TOKEN,
            voice_url="https://calls.example.org/voice",
            http_headers=proxy,
            ws_headers=proxy,
        )
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert result.stream_url == "wss://calls.example.org/media"
    assert result.close_code == 1000
    assert bytes(deepgram.connections[0].audio) == spec.inbound


@pytest.mark.parametrize("forwarded", ["staging.example.org", "prod.example.org, staging.example.org"])
async def test_a_signature_made_for_another_host_is_refused_whatever_x_forwarded_host_says(
    deepgram: FakeDeepgram, log_lines: LogLines, forwarded: str
) -> None:
    """Requests captured on another deployment of the same account (staging, an old tunnel) are signed for its
    host; X-Forwarded-Host is any client's to set (Heroku passes it through, ngrok keeps a client's), so naming
    that host there must not make the signature fit, on /voice or on the /media upgrade."""
    staging = "https://staging.example.org"
    spec = CallSpec(inbound=call_audio(43, 0.2), speed=0)
    claimed = {"Host": "prod.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Host": forwarded}
    async with running_service(make_settings(deepgram)) as service:
        voice = await _post_voice(service.url, f"{staging}/voice", TWILIO_TOKEN, claimed)
        stream = await replay_stream(
            service.url, spec, auth_token=TWILIO_TOKEN, stream_sid="MZ" + "4" * 32, custom_parameters={},
            ws_headers=claimed, stream_url="wss://staging.example.org/media",
        )  # fmt: skip
    assert voice.status_code == 403
    assert stream.upgrade_status == 403
    assert "does not match https://prod.example.org/voice" in log_lines.events("voice.refused")[0]["why"]
    assert len(log_lines.events("media.refused")) == 1
    assert deepgram.connections == []


async def test_public_url_is_what_signatures_are_checked_against(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """With PUBLIC_URL, the webhook and the stream are validated against it, whatever the Host header says."""
    spec = CallSpec(inbound=call_audio(42, 1.0), speed=0)
    settings = make_settings(deepgram, public_url="https://transcripts.example.net")
    async with running_service(settings) as service:
        local = await _post_voice(service.url, f"{service.url}/voice", TWILIO_TOKEN)
        assert local.status_code == 403
        result = await simulate_call(
            service.url, spec, auth_token=TWILIO_TOKEN, voice_url="https://transcripts.example.net/voice"
        )
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert result.stream_url == "wss://transcripts.example.net/media"
    assert result.close_code == 1000
