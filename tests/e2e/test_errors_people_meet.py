"""The errors people meet on a first deployment, each seen as its one log line, which names the cause and the fix
(docs/troubleshooting.md lists them with the same words): a wrong Twilio auth token on /voice and on /media, a
public (ngrok) URL that changed, a stream that never came after /voice, and Deepgram refusing the key (401) or
the account (402, out of credit)."""

from __future__ import annotations

import datetime

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import InvalidStatus

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec, twilio_signature
from service.storage.streams import STREAMS
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import RunningService, make_settings, running_service
from tests.helpers.twilio_stream import open_media
from tests.helpers.waiting import eventually

FORM = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "1" * 32, "From": "+15005550006", "To": "+15005550001"}
OLD_TUNNEL = "old-tunnel.ngrok-free.app"
NEW_TUNNEL = "new-tunnel.ngrok-free.app"
# What reaches us through ngrok: the Host it routed by, passed through, and the headers it adds.
THROUGH_NGROK = {
    "Host": NEW_TUNNEL,
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": NEW_TUNNEL,
    "X-Forwarded-For": "198.51.100.7",
}


async def post_voice(url: str, signed_url: str, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    signature = {"X-Twilio-Signature": twilio_signature(token, signed_url, FORM)}
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/voice", data=FORM, headers={**signature, **(headers or {})})


async def test_a_wrong_auth_token_on_voice_names_the_token_and_where_to_find_it(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """Signed with another account's token: 403, and the line says TWILIO_AUTH_TOKEN is the likely cause."""
    async with running_service(make_settings(deepgram)) as service:
        response = await post_voice(service.url, f"{service.url}/voice", "another-accounts-token")
    assert response.status_code == 403
    [refused] = log_lines.events("voice.refused")
    assert refused["why"].startswith(f"X-Twilio-Signature does not match {service.url}/voice: most likely a wrong")
    assert "TWILIO_AUTH_TOKEN (it must be the Auth Token of the Twilio account that owns the number" in refused["why"]
    assert "another-accounts-token" not in log_lines.text()


async def test_a_wrong_auth_token_on_the_media_upgrade_says_the_same(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """The /media upgrade signed with another token: 403 before Deepgram, the same cause and fix."""
    async with running_service(make_settings(deepgram)) as service:
        host = service.url.split("://", 1)[1]
        signature = twilio_signature("another-accounts-token", f"wss://{host}/media", {})
        with pytest.raises(InvalidStatus) as refused_upgrade:
            await open_media(service.url, headers={"X-Twilio-Signature": signature})
    assert refused_upgrade.value.response.status_code == 403
    [refused] = log_lines.events("media.refused")
    assert refused["why"].startswith(f"X-Twilio-Signature does not match wss://{host}/media: most likely a wrong")
    assert deepgram.upgrade_attempts == 0


async def test_a_changed_ngrok_url_names_both_hosts_and_the_setting_to_fix(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """ngrok restarted under a new host and the number follows it, but PUBLIC_URL still names the old one: the
    signature is Twilio's for the new host, and the line says so, with the PUBLIC_URL to set."""
    settings = make_settings(deepgram, public_url=f"https://{OLD_TUNNEL}")
    async with running_service(settings) as service:
        response = await post_voice(service.url, f"https://{NEW_TUNNEL}/voice", TWILIO_TOKEN, THROUGH_NGROK)
    assert response.status_code == 403
    [refused] = log_lines.events("voice.refused")
    assert refused["why"] == (
        f"X-Twilio-Signature does not match https://{OLD_TUNNEL}/voice: Twilio signed it for host {NEW_TUNNEL}, but "
        f"PUBLIC_URL says {OLD_TUNNEL} (did the ngrok or public URL change?); set PUBLIC_URL to https://{NEW_TUNNEL}"
        " and restart"
    )


async def test_another_host_and_another_token_names_both_hosts_and_both_causes(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """Neither URL matches the signature: the line names the claimed host and PUBLIC_URL's, and the token."""
    settings = make_settings(deepgram, public_url=f"https://{OLD_TUNNEL}")
    async with running_service(settings) as service:
        response = await post_voice(service.url, f"https://{NEW_TUNNEL}/voice", "another-token", THROUGH_NGROK)
    assert response.status_code == 403
    [refused] = log_lines.events("voice.refused")
    assert f"the request claimed host {NEW_TUNNEL}, PUBLIC_URL says {OLD_TUNNEL}" in refused["why"]
    assert "TWILIO_AUTH_TOKEN is the Auth Token of the account that owns the number" in refused["why"]


@pytest.mark.parametrize(
    ("status", "cause", "fix"),
    [
        (
            401,
            "Deepgram rejected the API key (HTTP 401): DEEPGRAM_API_KEY is wrong, revoked or expired",
            "create a key at https://console.deepgram.com (API Keys), set DEEPGRAM_API_KEY and restart",
        ),
        (
            402,
            "the Deepgram project is out of credit (HTTP 402, Payment Required)",
            "add credit or a payment method at https://console.deepgram.com (Billing)",
        ),
    ],
)
async def test_deepgram_refusing_the_key_or_the_account_says_why_and_what_to_do(
    deepgram: FakeDeepgram, log_lines: LogLines, status: int, cause: str, fix: str
) -> None:
    """Deepgram answers the live upgrade 401 or 402: one `deepgram.failed` line with the cause and the fix, the
    call's audio spooled (not lost), and no retry (retrying cannot fix either)."""
    deepgram.faults.reject_status = status
    spec = CallSpec(inbound=call_audio(91, 0.5), speed=0)
    async with running_service(make_settings(deepgram)) as service:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert result.close_code == 1000
    [failed] = log_lines.events("deepgram.failed", call_sid=spec.call_sid)
    assert cause in failed["why"]
    assert fix in failed["why"]
    assert failed["action"] == "spooling for batch"
    assert deepgram.upgrade_attempts == 1
    assert not log_lines.events("deepgram.reconnecting")
    [ended] = log_lines.events("call.ended", call_sid=spec.call_sid)
    assert ended["audio_s_spooled"] == 0.5


async def test_a_voice_answer_no_stream_followed_is_logged_with_what_to_check(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """/voice streamed the call, but Twilio never opened the stream: after STREAM_START_TIMEOUT_S one
    `voice.no_stream` line names the stream URL and what to check. A call whose stream another process took (the
    database has its stream) is not reported."""
    elsewhere = "CA" + "7" * 32
    settings = make_settings(deepgram, stream_start_timeout_s=0.5)
    async with running_service(settings) as service:
        host = service.url.split("://", 1)[1]
        engine = await eventually(lambda: started_store(service))
        async with engine.begin() as connection:
            await connection.execute(insert(STREAMS).values(
                stream_sid="MZ" + "7" * 32, call_sid=elsewhere, purpose="voice", track="inbound_track",
                first_stream=True, started_at=datetime.datetime.now(datetime.UTC),
            ))  # fmt: skip
        for call_sid in (elsewhere, FORM["CallSid"]):
            async with httpx.AsyncClient() as client:
                form = {**FORM, "CallSid": call_sid}
                signature = twilio_signature(TWILIO_TOKEN, f"{service.url}/voice", form)
                answered = await client.post(
                    f"{service.url}/voice", data=form, headers={"X-Twilio-Signature": signature}
                )
            assert answered.status_code == 200
        missing = await log_lines.wait_for("voice.no_stream", call_sid=FORM["CallSid"])
        await log_lines.wait_for("voice.stream_elsewhere", call_sid=elsewhere)
    assert missing["stream_url"] == f"wss://{host}/media"
    assert "no stream of it started within STREAM_START_TIMEOUT_S (0.5 s)" in missing["why"]
    assert f"check that wss://{host}/media reaches this service" in missing["fix"]
    assert "31920" in missing["fix"]
    assert not log_lines.events("voice.no_stream", call_sid=elsewhere)


def started_store(service: RunningService) -> AsyncEngine | None:
    """The service's database engine once its store has started (Hypercorn's start-up), else None."""
    try:
        return service.service.store.engine
    except RuntimeError:
        return None


async def test_a_stream_that_starts_here_ends_the_watch_at_once(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """A simulated call's stream starts: its watch is over before its deadline, with no database look-up."""
    spec = CallSpec(inbound=call_audio(92, 0.5), speed=0)
    async with running_service(make_settings(deepgram, stream_start_timeout_s=60)) as service:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        assert service.service.stream_watch.watched == 0
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert result.close_code == 1000
    assert not log_lines.events("voice.no_stream")
    assert not log_lines.events("voice.stream_elsewhere")
