"""End to end: one captured upgrade signature opens nothing. Each attack a Twilio upgrade signature allows is
played against the real app on a real port, and refused before any Deepgram connection opens for it."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli.simulate import add_arguments, run
from service.simulator.client import replay_stream, simulate_call
from service.simulator.messages import CallResult, CallSpec, new_stream_sid
from service.storage import migrate
from service.storage.retention import purge
from service.times import utc_now
from service.twilio.stream_tokens import PARAMETER
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.databases import shared_database
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines, final_words
from tests.helpers.paths import SAMPLES
from tests.helpers.service import make_settings, running_service
from tests.helpers.twilio_stream import token_parameters
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

API_TOKEN = "api-t0ken"
PUBLIC_URL = "https://callscribe.example.com"  # the host Twilio signs for, the same across restarts
ACCOUNT = "AC" + "5ca1ab1e" * 4  # the simulator's account


async def replayed(url: str, spec: CallSpec, parameters: dict[str, str], stream_sid: str | None = None) -> CallResult:
    """A stream opened with the captured (call-independent) upgrade signature and a start of the attacker's own."""
    return await replay_stream(
        url, spec, auth_token=TWILIO_TOKEN, stream_sid=stream_sid or new_stream_sid(), custom_parameters=parameters
    )


async def test_a_replayed_upgrade_with_a_forged_start_is_refused(deepgram: FakeDeepgram, log_lines: LogLines) -> None:
    """No /voice, no token: close 1008 naming the missing token, no Deepgram connection, nothing stored."""
    async with running_service(make_settings(deepgram)) as service:
        result = await replayed(service.url, CallSpec(inbound=call_audio(1, 1.0)), {"from": "+1"})
    assert result.close_code == 1008
    assert "no callscribe_token parameter" in (result.close_reason or "")
    [rejected] = log_lines.events("twilio.rejected")
    assert "no callscribe_token parameter" in rejected["why"]
    assert deepgram.connections == []
    assert log_lines.events("call.started") == []


async def test_a_token_for_another_call_an_old_token_and_another_account_are_refused(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """A real token copied to another call, one past STREAM_TOKEN_TTL_S, or a start for another account."""
    settings = make_settings(deepgram, twilio_account_sid=ACCOUNT)
    attacker = CallSpec(inbound=call_audio(2, 1.0))  # real-time pace: refused streams close cleanly
    somebody_else = CallSpec(inbound=b"", call_sid="CA" + "7" * 32)
    other_account = CallSpec(inbound=call_audio(3, 1.0), account_sid="AC" + "0" * 32)
    async with running_service(settings) as service:
        copied = await replayed(service.url, attacker, token_parameters(somebody_else))
        stale = await replayed(service.url, attacker, token_parameters(attacker, issued_at=int(time.time()) - 301))
        foreign = await simulate_call(service.url, other_account, auth_token=TWILIO_TOKEN)  # via /voice
    assert [result.close_code for result in (copied, stale, foreign)] == [1008, 1008, 1008]
    assert "issued for another call" in (copied.close_reason or "")
    assert "expired" in (stale.close_reason or "")
    assert "not TWILIO_ACCOUNT_SID" in (foreign.close_reason or "")
    assert deepgram.connections == []
    for parameters in (token_parameters(somebody_else), token_parameters(attacker)):
        assert parameters[PARAMETER].rsplit(".", 1)[1] not in log_lines.text()  # no token in any log line


@pytest.mark.parametrize("shown", [{"from": "+19005550199"}, {"to": "+19005550199"}, {"from": None}])
async def test_a_start_showing_other_numbers_than_voice_was_given_is_refused(
    deepgram: FakeDeepgram, log_lines: LogLines, shown: dict[str, str | None]
) -> None:
    """A real /voice answer's token, with the start's `from` or `to` changed (or dropped): close 1008 naming the
    numbers, no Deepgram connection, no call stored or logged."""
    spec = CallSpec(inbound=call_audio(8, 1.0), parameter_overrides=shown)
    async with running_service(make_settings(deepgram)) as service:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
    assert result.close_code == 1008
    assert "from/to numbers" in (result.close_reason or "")
    [rejected] = log_lines.events("twilio.rejected")
    assert rejected["why"] == result.close_reason  # the whole reason fits a close frame
    assert deepgram.connections == []
    assert log_lines.events("call.started") == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("gone_by", ["delete", "retention"])
async def test_a_replayed_voice_request_after_the_call_is_gone_and_a_restart_is_refused(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path, kind: str, gone_by: str
) -> None:
    """The same signed /voice request and stream played again after DELETE /api/calls/{sid} (or RETENTION_DAYS)
    and a restart on the same database: /voice mints a fresh token, but the call already had its stream, so
    the stream is refused 1008 and nothing is transcribed, stored or sent to the webhook again."""
    spec = CallSpec(inbound=call_audio(9, 1.0), speed=0)
    receiver = Receiver(Clock.real())
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with serving(receiver) as hook_url, shared_database(kind, tmp_path) as url:
        await migrate.upgrade(url)
        settings = make_settings(
            deepgram, database_url=url, api_token=API_TOKEN, public_url=PUBLIC_URL, retention_days=30,
            transcript_webhook_url=hook_url, webhook_secret=SECRET, db_journal_path=tmp_path / "journal.jsonl",
        )  # fmt: skip
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            first = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN, voice_url=f"{PUBLIC_URL}/voice")
            await receiver.wait_for("call.completed")
            if gone_by == "delete":
                deleted = await client.delete(f"{service.url}/api/calls/{spec.call_sid}", headers=auth)
                assert deleted.status_code == 204
        if gone_by == "retention":
            assert await purge(settings, now=utc_now() + datetime.timedelta(days=31)) == 1
        events = len(receiver.accepted)
        async with running_service(settings) as service, httpx.AsyncClient() as client:  # a new process
            # At Twilio's pace, as the refused streams above: a flood still in flight could reset the close.
            again = dataclasses.replace(spec, speed=1.0)
            replay = await simulate_call(service.url, again, auth_token=TWILIO_TOKEN, voice_url=f"{PUBLIC_URL}/voice")
            stored = await client.get(f"{service.url}/api/calls/{spec.call_sid}", headers=auth)
    assert first.close_code == 1000
    assert replay.voice_status == 200
    assert replay.stream_params[PARAMETER] != first.stream_params[PARAMETER]  # a fresh token, as good as the first
    assert replay.close_code == 1008
    assert f"call {spec.call_sid} already had its stream" in (replay.close_reason or "")
    [rejected] = log_lines.events("twilio.rejected")
    assert rejected["call_sid"] == spec.call_sid
    assert len(deepgram.connections) == 1  # the first call's
    assert stored.status_code == 404
    assert len(receiver.accepted) == events


async def _victims_call(
    deepgram: FakeDeepgram, log_lines: LogLines, directory: Path, *, attack: bool
) -> tuple[str, list[dict[str, Any]], list[int | None]]:
    """The victim's call (same CallSid and audio every time), with or without the attacks on it while it is live:
    its stored transcript as text, the webhook events it produced (without their times and StreamSid), the
    attacks' close codes."""
    victim = CallSpec(inbound=call_audio(601, 2.0), call_sid="CA" + "6" * 32, speed=1.0)
    receiver = Receiver(Clock.real())
    closes: list[int | None] = []
    async with serving(receiver) as hook_url:
        settings = make_settings(
            deepgram, database_url=f"sqlite+aiosqlite:///{directory}/calls.sqlite3", api_token=API_TOKEN,
            transcript_webhook_url=hook_url, webhook_secret=SECRET, db_journal_path=directory / "journal.jsonl",
        )  # fmt: skip
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        await migrate.upgrade(settings.database_url)
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            earlier = len(log_lines.events("call.started", call_sid=victim.call_sid))  # the other run's
            call = asyncio.create_task(simulate_call(service.url, victim, auth_token=TWILIO_TOKEN))
            started = await eventually(lambda: log_lines.events("call.started", call_sid=victim.call_sid)[earlier:])
            started = started[0]
            if attack:
                attacker = CallSpec(inbound=call_audio(999, 2.0), call_sid=victim.call_sid)
                stolen = token_parameters(victim)  # as good as the victim's own: same call, fresh
                same_stream = await replayed(service.url, attacker, stolen, stream_sid=started["stream_sid"])
                new_stream = await replayed(service.url, attacker, stolen)
                closes = [same_stream.close_code, new_stream.close_code]
            result = await call
            await receiver.wait_for("call.completed")
            response = await client.get(
                f"{service.url}/api/calls/{victim.call_sid}/transcript?format=text",
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            )
    assert result.close_code == 1000
    events = [{"type": event["type"], "data": _timeless(event["data"])} for event in receiver.accepted]
    return response.text, events, closes


def _timeless(data: dict[str, Any]) -> dict[str, Any]:
    """An event without what differs between two runs of the same call: its times, and its StreamSid (the
    simulator makes one per run)."""
    return {key: value for key, value in data.items() if key not in {"started_at", "ended_at", "stream_sid"}}


async def test_a_second_stream_for_a_live_call_is_refused_and_changes_nothing(
    deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path
) -> None:
    """With the victim's own fresh token, the same streamSid or a new one for the live call: both 1008, and the
    victim's stored transcript and webhook events are byte for byte what they are without the attack."""
    alone = await _victims_call(deepgram, log_lines, tmp_path / "alone", attack=False)
    attacked = await _victims_call(deepgram, log_lines, tmp_path / "attacked", attack=True)
    assert attacked[2] == [1008, 1008]
    assert attacked[:2] == alone[:2]
    stored_words = [word for line in alone[0].splitlines() for word in line.split(": ", 1)[1].split()]
    assert stored_words == expected_words(call_audio(601, 2.0))
    reasons = [line["why"] for line in log_lines.events("twilio.rejected")]
    assert any("has already started" in why for why in reasons)
    assert any("already has its stream" in why for why in reasons)


async def test_sockets_that_never_start_cannot_keep_a_real_call_out(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """With MAX_CALLS=2, more silent sockets than the waiting bound: each new one pushes out the oldest, /readyz
    and /voice are unaffected, and a real call still gets its stream and its transcript."""
    settings = make_settings(deepgram, max_calls=2, stream_start_timeout_s=6)
    holder = CallSpec(inbound=b"", speed=0, send_start=False, hold_open_s=10)
    async with running_service(settings) as service, httpx.AsyncClient() as client:
        holders = [asyncio.create_task(replayed(service.url, holder, {})) for _ in range(5)]
        await log_lines.wait_for("media.pushed_out")  # the fifth pushed out the first (the bound is 4)
        ready = await client.get(f"{service.url}/readyz")
        real = CallSpec(inbound=call_audio(4, 1.0), speed=0)
        result = await simulate_call(service.url, real, auth_token=TWILIO_TOKEN)
        await log_lines.wait_for("call.ended", call_sid=real.call_sid)
        closed = await asyncio.gather(*holders)
    assert ready.status_code == 200
    assert result.close_code == 1000
    assert final_words(log_lines, real.call_sid) == expected_words(real.inbound)
    assert [r.close_code for r in closed] == [1008] * 5  # pushed out by newer sockets, or timed out
    assert len(log_lines.events("media.pushed_out")) == 2  # by the fifth holder, then by the real call
    assert len(deepgram.connections) == 1


async def test_a_socket_without_a_start_is_closed_after_the_start_timeout(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """STREAM_START_TIMEOUT_S bounds how long a socket may sit without a start."""
    settings = make_settings(deepgram, stream_start_timeout_s=0.5)
    async with running_service(settings) as service:
        result = await replayed(service.url, CallSpec(inbound=b"", send_start=False, hold_open_s=10), {})
    assert result.close_code == 1008
    assert "STREAM_START_TIMEOUT_S (0.5 s)" in (result.close_reason or "")
    assert log_lines.events("media.refused", close_code=1008)


async def test_a_started_stream_that_goes_quiet_is_finished_like_a_hang_up(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """Past STREAM_IDLE_TIMEOUT_S of silence from Twilio the stream is closed, its audio finished and summarised."""
    settings = make_settings(deepgram, stream_idle_timeout_s=1)
    spec = CallSpec(inbound=call_audio(5, 1.0), speed=0, send_stop=False, hold_open_s=10)
    async with running_service(settings) as service:
        result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
        ended = await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert result.close_code == 1008
    assert "STREAM_IDLE_TIMEOUT_S (1 s)" in (result.close_reason or "")
    assert ended["ended_by"] == "idle_timeout"
    assert final_words(log_lines, spec.call_sid) == expected_words(spec.inbound)


async def test_with_stream_tokens_off_a_token_less_stream_is_let_in_with_a_warning(
    deepgram: FakeDeepgram, log_lines: LogLines
) -> None:
    """STREAM_TOKENS=off (TwiML Bins): warned at start-up and per stream; one live stream per call still holds."""
    settings = make_settings(deepgram, stream_tokens="off")
    spec = CallSpec(inbound=call_audio(6, 2.0), speed=1.0)
    async with running_service(settings) as service:
        call = asyncio.create_task(replayed(service.url, spec, {"from": spec.from_number}))
        started = await log_lines.wait_for("call.started", call_sid=spec.call_sid)
        second = await replayed(service.url, CallSpec(inbound=call_audio(7, 1.0), call_sid=spec.call_sid), {})
        first = await call
        await log_lines.wait_for("call.ended", call_sid=spec.call_sid)
    assert started["stream_sid"] == first.stream_sid
    assert first.close_code == 1000
    assert final_words(log_lines, spec.call_sid) == expected_words(spec.inbound)
    assert second.close_code == 1008
    assert log_lines.events("settings.stream_tokens_off")
    assert len(log_lines.events("stream.token_missing")) == 2


async def test_the_simulate_command_plays_the_replayed_upgrade(
    deepgram: FakeDeepgram, log_lines: LogLines, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m service simulate --replay-upgrade --call-sid CA…` is refused 1008, and says so (exit 1)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    async with running_service(make_settings(deepgram)) as service:
        # Real-time pace, as Twilio sends: a flood of frames still in flight when the server closes can reset the
        # connection before the client reads the close frame (a 1006 that says nothing about the service).
        argv = [str(SAMPLES / "hello.wav"), "--url", service.url, "--speed", "1", "--auth-token", TWILIO_TOKEN]
        argv += ["--replay-upgrade", "--call-sid", "CA" + "8" * 32, "--parameter", "from=+14155550100"]
        exit_code = await asyncio.to_thread(run, parser.parse_args(argv))
    assert exit_code == 1
    assert "1008" in capsys.readouterr().err
    [rejected] = log_lines.events("twilio.rejected")
    assert rejected["call_sid"] == "CA" + "8" * 32
    assert deepgram.connections == []
