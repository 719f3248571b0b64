"""End to end on a real port: every call that reached /voice ends in exactly one terminal webhook event. A call
whose stream never opens gets `call.not_streamed` (no_stream) and its row says why; a stream that comes after
that is refused; a call answered busy gets `call.not_streamed` (busy); a normal call gets `call.completed` only.
Every delivery is checked against its schema by the receiver."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import expect
from websockets.exceptions import ConnectionClosed

from service.simulator.client import replay_stream
from service.simulator.messages import CallSpec, build_messages, parse_twiml, twilio_signature, webhook_form
from service.storage import queries
from tests.e2e.test_page import PASSWORD, log_in
from tests.helpers.audio import call_audio
from tests.helpers.browser import chromium
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import open_media, token_parameters
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

API_TOKEN = "api-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def answer_voice(url: str, spec: CallSpec) -> httpx.Response:
    """POST /voice for `spec`'s call, signed as Twilio signs."""
    form = webhook_form(spec)
    signature = twilio_signature(TWILIO_TOKEN, f"{url}/voice", form)
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/voice", data=form, headers={"X-Twilio-Signature": signature})


async def stored_call(url: str, call_sid: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/api/calls/{call_sid}", headers=AUTH)
    assert response.status_code == 200, response.text
    return dict(response.json())


def terminal(receiver: Receiver, call_sid: str) -> list[str]:
    """The terminal events `call_sid` received, in order."""
    return [
        event["type"]
        for event in receiver.accepted
        if event["type"] in {"call.completed", "call.not_streamed"} and event["data"]["call_sid"] == call_sid
    ]


async def test_a_call_whose_stream_never_opens_gets_one_call_not_streamed_and_a_late_stream_is_refused(
    deepgram: FakeDeepgram, log_lines: LogLines, migrated_url: str, tmp_path: Path
) -> None:
    """/voice streams the call, Twilio never opens the stream: after STREAM_START_TIMEOUT_S one `call.not_streamed`
    with no_stream, the reason and what to check; the API shows the call not_streamed with the same reason. The
    stream that turns up afterwards (with /voice's own token) is refused with 1008 saying why, and no
    `call.completed` ever follows."""
    spec = CallSpec(inbound=call_audio(401, 0.5), speed=0)
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url:
        settings = make_settings(
            deepgram, database_url=migrated_url, api_token=API_TOKEN, transcript_webhook_url=hook_url,
            webhook_secret=SECRET, db_journal_path=tmp_path / "journal.jsonl", stream_start_timeout_s=0.5,
        )  # fmt: skip
        async with running_service(settings) as service:
            answered = await answer_voice(service.url, spec)
            request = parse_twiml(answered.text)
            assert request is not None  # streamed: a <Stream> that nobody opens
            await receiver.wait_for("call.not_streamed")
            call = await stored_call(service.url, spec.call_sid)
            late = await replay_stream(
                service.url, spec, auth_token=TWILIO_TOKEN, stream_sid="MZ" + spec.call_sid[2:],
                custom_parameters=request.params,
            )  # fmt: skip
            await log_lines.wait_for("twilio.rejected", call_sid=spec.call_sid)
    [event] = [event for event in receiver.accepted if event["type"] == "call.not_streamed"]
    data = event["data"]
    assert (event["id"], data["call_sid"], data["from"], data["to"], data["ended_by"]) == (
        f"call.not_streamed:{spec.call_sid}", spec.call_sid, spec.from_number, spec.to_number, "no_stream",
    )  # fmt: skip
    assert "no stream of it started within STREAM_START_TIMEOUT_S (0.5 s)" in data["reason"]
    assert "31920" in data["fix"]
    assert (call["status"], call["ended_by"], call["stream_sid"]) == ("not_streamed", "no_stream", "")
    assert call["summary"] == {"reason": data["reason"], "fix": data["fix"]}
    assert late.close_code == 1008
    assert f"call {spec.call_sid} was recorded as not streamed" in (late.close_reason or "")
    assert terminal(receiver, spec.call_sid) == ["call.not_streamed"]
    assert len(deepgram.connections) == 0  # the late stream never reached Deepgram


async def test_a_busy_answer_gets_call_not_streamed_and_a_normal_call_only_call_completed(
    deepgram: FakeDeepgram, log_lines: LogLines, migrated_url: str, tmp_path: Path
) -> None:
    """At MAX_CALLS /voice answers without a stream: that call gets one `call.not_streamed` (busy) at once, with
    MAX_CALLS in its reason. The call that held the place streams, ends and gets one `call.completed`, and no
    `call.not_streamed` after its deadline has passed."""
    streaming = CallSpec(inbound=call_audio(402, 0.5), speed=0, call_sid="CA" + "4" * 32)
    busy = CallSpec(inbound=call_audio(403, 0.5), speed=0, call_sid="CA" + "5" * 32)
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url:
        settings = make_settings(
            deepgram, database_url=migrated_url, api_token=API_TOKEN, transcript_webhook_url=hook_url,
            webhook_secret=SECRET, db_journal_path=tmp_path / "journal.jsonl", stream_start_timeout_s=0.5,
            max_calls=1,
        )  # fmt: skip
        async with running_service(settings) as service:
            answered = await answer_voice(service.url, streaming)
            assert parse_twiml(answered.text) is not None
            socket = await open_media(service.url)
            messages = _messages(streaming)
            for message in messages[:2]:  # connected, start: the one call this process takes
                await socket.send(message)
            await deepgram.wait_for_connections(1)
            refused = await answer_voice(service.url, busy)
            assert parse_twiml(refused.text) is None  # no <Stream>: the call goes on untranscribed
            await receiver.wait_for("call.not_streamed")
            for message in messages[2:]:
                await socket.send(message)
            await _closed(socket)
            await receiver.wait_for("call.completed")
            busy_call = await stored_call(service.url, busy.call_sid)
            # The streaming call's watch ended when its stream started: past its deadline nothing more comes.
            assert service.service.stream_watch.watched == 0
            await eventually(lambda: log_lines.events("webhooks.delivered", call_sid=streaming.call_sid))
    [event] = [event for event in receiver.accepted if event["type"] == "call.not_streamed"]
    assert (event["data"]["call_sid"], event["data"]["ended_by"]) == (busy.call_sid, "busy")
    assert "callscribe is at MAX_CALLS (1)" in event["data"]["reason"]
    assert "MAX_CALLS" in event["data"]["fix"]
    assert (busy_call["status"], busy_call["ended_by"]) == ("not_streamed", "busy")
    assert terminal(receiver, busy.call_sid) == ["call.not_streamed"]
    assert terminal(receiver, streaming.call_sid) == ["call.completed"]
    assert not log_lines.events("voice.no_stream")


def _messages(spec: CallSpec) -> list[str]:
    """The stream's messages, connected to stop, with the stream token /voice gives."""
    parameters = token_parameters(spec, **{"from": spec.from_number, "to": spec.to_number})
    return build_messages(spec, "MZ" + spec.call_sid[2:], ["inbound"], parameters)


async def _closed(socket: Any) -> None:
    """Until the server closes the stream (after `stop`, with the call's last finals)."""
    try:
        async with asyncio.timeout(10):
            while True:
                await socket.recv()
    except ConnectionClosed:
        return


async def test_the_page_lists_a_call_that_never_streamed_with_its_reason(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """In a real Chromium: a call answered and waiting for its stream is not among the calls on now; once recorded
    as not streamed it is in the recent list, marked so, with its reason as the cell's title, and its page says
    why there is no transcript and what to check."""
    spec = CallSpec(inbound=call_audio(404, 0.5), speed=0, from_number="+15005550177")
    settings = make_settings(deepgram, dashboard_password=PASSWORD, stream_start_timeout_s=1.0)
    async with running_service(settings) as service, chromium() as browser:
        url = f"http://localhost:{service.port}"
        page = await (await browser.new_context()).new_page()
        await log_in(page, url)
        await answer_voice(service.url, spec)
        await service.service.store.wait_idle()  # its row is in: on, waiting for its stream
        await page.reload()
        await expect(page.locator("#feed-status")).to_have_text("live")
        await expect(page.locator(f'tr[data-call-sid="{spec.call_sid}"]')).to_have_count(0)
        await log_lines.wait_for("voice.no_stream", call_sid=spec.call_sid)
        await eventually(lambda: _not_streamed_stored(service.service.store.engine, spec.call_sid))
        await page.reload()
        row = page.locator(f'#recent tr[data-call-sid="{spec.call_sid}"]')
        await expect(row).to_contain_text("+15005550177")
        state = row.locator(".state")
        await expect(state).to_have_text("no_stream not streamed")
        await expect(state).to_have_attribute("title", re.compile(r"no stream of it started within STREAM_START"))
        await expect(page.locator(f'#active tr[data-call-sid="{spec.call_sid}"]')).to_have_count(0)
        await row.locator("a").click()
        notice = page.locator("#not-streamed")
        await expect(notice).to_contain_text("No stream of this call started (no_stream): /voice answered this call")
        await expect(notice).to_contain_text("To check: look the call up in Twilio's debugger")
        await expect(page.locator("#call-state")).to_have_text("not_streamed")


async def _not_streamed_stored(engine: Any, call_sid: str) -> bool:
    call = await queries.get_call(engine, call_sid)
    return call is not None and call.status == "not_streamed"
