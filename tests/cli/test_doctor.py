"""`python -m service doctor`: the settings as resolved, then Deepgram, the database, Twilio's signature, the public
URL and the number's voice webhook, each OK, WARN or FAIL, against real servers on 127.0.0.1.

Deepgram is the batch fake (`GET /v1/projects` checks the key); Twilio's REST API is its stand-in, reached by
the real `twilio` client through TWILIO_API_URL; the database is a SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.cli.checks import Status, check_deepgram_retention, check_handover_room, check_public_url
from service.settings import Settings
from service.storage import migrate
from tests.helpers.databases import sqlite_url
from tests.helpers.fakes.deepgram_batch import PROJECTS_PATH, FakeDeepgramBatch
from tests.helpers.fakes.twilio_rest import (
    ACCOUNT_SID,
    API_KEY_SECRET,
    API_KEY_SID,
    AUTH_TOKEN,
    FakeTwilioRest,
)

DEEPGRAM_SECRET = "dg-doctor-key-7f3a9c"  # distinctive, so "no secret in the output" means something
PUBLIC_URL = "https://calls.example.com"
NUMBER = "+14155550100"
SECRETS = (DEEPGRAM_SECRET, AUTH_TOKEN, API_KEY_SECRET)


@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgramBatch]:
    async with FakeDeepgramBatch(api_key=DEEPGRAM_SECRET) as fake:
        yield fake


@pytest.fixture
def twilio() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as fake:
        yield fake


@pytest.fixture
async def healthy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, deepgram: FakeDeepgramBatch, twilio: FakeTwilioRest
) -> FakeTwilioRest:
    """A set-up with nothing wrong: a key Deepgram takes, a migrated database, the number pointed at /voice."""
    url = sqlite_url(tmp_path / "doctor.sqlite3")
    await migrate.upgrade(url)
    for name, value in {
        "DEEPGRAM_API_KEY": DEEPGRAM_SECRET,
        "DEEPGRAM_URL": deepgram.url,
        "DATABASE_URL": url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_API_URL": twilio.url,
        "PUBLIC_URL": PUBLIC_URL,
    }.items():
        monkeypatch.setenv(name, value)
    twilio.add_number(NUMBER, voice_url=f"{PUBLIC_URL}/voice", voice_method="POST")
    return twilio


async def run_doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`python -m service doctor ARGV` in this process (in a thread: the fakes serve on this event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["doctor", *argv])
    return code, capsys.readouterr().out


async def doctor_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code, out = await run_doctor(capsys, "--json", *argv)
    return code, json.loads(out)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: the OS gave it to a socket that is closed again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def statuses(report: dict[str, object]) -> dict[str, str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {check["name"]: check["status"] for check in checks}


def check(report: dict[str, object], name: str) -> dict[str, str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    [found] = [entry for entry in checks if entry["name"] == name]
    return found


async def test_a_healthy_set_up_passes_every_check(healthy, deepgram, capsys) -> None:
    """Every check OK, exit 0, and the exact webhook to set; Deepgram and Twilio were asked with the credentials."""
    code, out = await run_doctor(capsys, "--number", NUMBER)
    assert code == 0, out
    for name in ("deepgram", "database", "signatures", "public_url", "twilio_number"):
        assert f"OK    {name}" in out
    assert f"Webhook {PUBLIC_URL}/voice, HTTP POST" in out
    assert "Result: ready (0 FAIL, 0 WARN)" in out
    [key_check] = deepgram.requests
    assert (key_check.method, key_check.path) == ("GET", PROJECTS_PATH)
    assert key_check.headers["authorization"] == f"Token {DEEPGRAM_SECRET}"
    [lookup] = healthy.requests
    assert lookup.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers.json"
    assert lookup.query["PhoneNumber"] == [NUMBER]
    assert lookup.username == ACCOUNT_SID


async def test_settings_are_listed_with_secrets_as_set_or_unset(healthy, capsys) -> None:
    """Every setting is printed with its value, but a secret only as `set`/`unset`, in text and in JSON."""
    _, out = await run_doctor(capsys, "--number", NUMBER)
    _, report = await doctor_json(capsys, "--number", NUMBER)
    for secret in SECRETS:
        assert secret not in out
        assert secret not in json.dumps(report)
    settings = report["settings"]
    assert isinstance(settings, dict)
    assert set(settings) == {name.upper() for name in Settings.model_fields}
    assert settings["DEEPGRAM_API_KEY"] == {"value": "set", "source": "set"}
    assert settings["API_TOKEN"] == {"value": "unset", "source": "default"}
    assert settings["PUBLIC_URL"] == {"value": PUBLIC_URL, "source": "set"}
    assert settings["DEEPGRAM_MODEL"] == {"value": "nova-3", "source": "default"}


async def test_json_is_the_same_report(healthy, capsys) -> None:
    code, report = await doctor_json(capsys, "--number", NUMBER)
    assert code == 0
    assert report["ok"] is True
    assert statuses(report) == {
        **dict.fromkeys(
            (
                "deepgram",
                "database",
                "signatures",
                "public_url",
                "twilio_number",
                "handover_room",
                "deepgram_retention",
            ),
            "OK",
        ),
        "deepgram_fallback": "SKIP",  # no DEEPGRAM_FALLBACK_URL
    }
    assert report["webhook"] == {"url": f"{PUBLIC_URL}/voice", "method": "POST"}


async def test_the_rest_api_is_called_with_the_api_key_pair_when_set(healthy, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TWILIO_API_KEY_SID", API_KEY_SID)
    monkeypatch.setenv("TWILIO_API_KEY_SECRET", API_KEY_SECRET)
    code, report = await doctor_json(capsys, "--number", NUMBER)
    assert code == 0, report
    assert [request.username for request in healthy.requests] == [API_KEY_SID]
    assert API_KEY_SECRET not in json.dumps(report)


async def test_a_key_deepgram_refuses_fails(healthy, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "not-the-key")
    code, report = await doctor_json(capsys)
    assert code == 1
    deepgram = check(report, "deepgram")
    assert deepgram["status"] == "FAIL"
    assert "refused the key (HTTP 401)" in deepgram["reason"]
    assert "not-the-key" not in json.dumps(report)


async def test_no_deepgram_key_fails(healthy, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY")
    code, report = await doctor_json(capsys)
    assert code == 1
    assert check(report, "deepgram")["status"] == "FAIL"
    assert "DEEPGRAM_API_KEY is unset" in check(report, "deepgram")["reason"]


async def test_deepgram_unreachable_says_offline(healthy, monkeypatch, capsys) -> None:
    """Nothing listens where DEEPGRAM_URL points (a fake that has stopped): a clear offline message."""
    async with FakeDeepgramBatch() as gone:
        closed_url = gone.url
    monkeypatch.setenv("DEEPGRAM_URL", closed_url)
    code, report = await doctor_json(capsys)
    assert code == 1
    deepgram = check(report, "deepgram")
    assert deepgram["status"] == "FAIL"
    assert f"Deepgram is unreachable at {closed_url} (ConnectError)" in deepgram["reason"]


async def test_a_database_not_migrated_fails_with_the_upgrade_to_run(healthy, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url(tmp_path / "empty.sqlite3"))
    code, report = await doctor_json(capsys)
    assert code == 1
    database = check(report, "database")
    assert database["status"] == "FAIL"
    assert f"newest is {migrate.head()}" in database["reason"]
    assert database["fix"] == "run `python -m service db upgrade`"


async def test_a_database_down_fails_with_the_error_type_never_the_url(healthy, monkeypatch, capsys) -> None:
    """Nothing listens where DATABASE_URL points, as when the server is down: the error's type, not the URL."""
    monkeypatch.setenv("DATABASE_URL", f"postgresql://callscribe:pw@127.0.0.1:{closed_port()}/calls")
    code, report = await doctor_json(capsys)
    assert code == 1
    database = check(report, "database")
    assert database["status"] == "FAIL"
    assert database["reason"] in {
        "cannot reach the database (ConnectionRefusedError)",
        "cannot reach the database (OSError)",  # asyncpg's "Multiple exceptions" on hosts with several addresses
    }
    assert "127.0.0.1" not in database["reason"] + database["fix"]


async def test_a_sqlite_file_in_a_missing_directory_fails(healthy, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url(tmp_path / "no-such-directory" / "calls.sqlite3"))
    code, report = await doctor_json(capsys)
    assert code == 1
    database = check(report, "database")
    assert database["status"] == "FAIL"
    assert "directory does not exist" in database["reason"]
    assert "no-such-directory" not in database["reason"] + database["fix"]
    assert not (tmp_path / "no-such-directory").exists()


async def test_a_password_in_a_url_setting_is_masked(healthy, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://callscribe:hunter2-db@127.0.0.1:1/calls")
    _, out = await run_doctor(capsys)
    assert "hunter2-db" not in out
    assert "postgresql://***@127.0.0.1:1/calls" in out


async def test_credentials_in_any_url_are_masked_in_settings_and_checks(healthy, deepgram, monkeypatch, capsys) -> None:
    """A password in DEEPGRAM_URL or PUBLIC_URL, a webhook's query-string token, a number's basic-auth voice URL:
    each shown with `***` in its place, in the settings, the checks and the webhook line, in text and in JSON."""
    host = deepgram.url.split("://", 1)[1]
    monkeypatch.setenv("DEEPGRAM_URL", f"http://dg-user:dg-pass-41c9@{host}")
    monkeypatch.setenv("PUBLIC_URL", "https://tw-user:pub-pass-77e2@calls.example.com")
    monkeypatch.setenv("TRANSCRIPT_WEBHOOK_URL", "https://hooks.example.com/in?token=hook-token-5d1b&v=2")
    monkeypatch.setenv("WEBHOOK_SECRET", "webhook-secret-0a8f")
    healthy.numbers.clear()
    healthy.add_number(NUMBER, voice_url="https://old:voice-pass-3e6a@old.example.com/voice")
    _, out = await run_doctor(capsys, "--number", NUMBER)
    _, report = await doctor_json(capsys, "--number", NUMBER)
    for secret in ("dg-user", "dg-pass-41c9", "tw-user", "pub-pass-77e2", "hook-token-5d1b", "voice-pass-3e6a"):
        assert secret not in out
        assert secret not in json.dumps(report)
    settings = report["settings"]
    assert isinstance(settings, dict)
    assert settings["DEEPGRAM_URL"]["value"] == f"http://***@{host}"
    assert settings["PUBLIC_URL"]["value"] == "https://***@calls.example.com"
    assert settings["TRANSCRIPT_WEBHOOK_URL"]["value"] == "https://hooks.example.com/in?token=***&v=***"
    assert f"http://***@{host}" in check(report, "deepgram")["reason"]
    assert check(report, "public_url")["reason"] == "webhook URL https://***@calls.example.com/voice (POST)"
    assert check(report, "twilio_number")["reason"] == (
        "voice URL is https://***@old.example.com/voice, not https://***@calls.example.com/voice"
    )
    assert report["webhook"] == {"url": "https://***@calls.example.com/voice", "method": "POST"}


async def test_a_number_answered_by_a_twiml_app_warns(healthy, capsys) -> None:
    """With a TwiML App on the number, Twilio ignores its voice URL: a warning (exit 0), naming the App."""
    healthy.numbers.clear()
    healthy.add_number(NUMBER, voice_url=f"{PUBLIC_URL}/voice", voice_application_sid="AP" + "a" * 32)
    code, report = await doctor_json(capsys, "--number", NUMBER)
    assert code == 0
    number = check(report, "twilio_number")
    assert number["status"] == "WARN"
    assert "TwiML App AP" in number["reason"]
    assert f"{PUBLIC_URL}/voice" in number["fix"]


async def test_a_number_on_a_sip_trunk_warns(healthy, capsys) -> None:
    healthy.numbers.clear()
    healthy.add_number(NUMBER, voice_url=f"{PUBLIC_URL}/voice", trunk_sid="TK" + "b" * 32)
    code, report = await doctor_json(capsys, "--number", NUMBER)
    assert code == 0
    assert check(report, "twilio_number")["status"] == "WARN"
    assert "SIP trunk TK" in check(report, "twilio_number")["reason"]


async def test_a_number_pointed_elsewhere_warns_with_the_url_to_set(healthy, capsys) -> None:
    healthy.numbers.clear()
    healthy.add_number(NUMBER, voice_url="https://demo.twilio.com/welcome/voice/")
    code, out = await run_doctor(capsys, "--number", NUMBER)
    assert code == 0
    assert f"WARN  twilio_number voice URL is https://demo.twilio.com/welcome/voice/, not {PUBLIC_URL}/voice" in out
    assert f"fix: set the number's 'A call comes in' webhook to {PUBLIC_URL}/voice, HTTP POST" in out


async def test_an_unknown_number_fails(healthy, capsys) -> None:
    """Twilio's PhoneNumber filter matches partial numbers: only the exact number counts."""
    healthy.add_number("+14155550199", voice_url=f"{PUBLIC_URL}/voice")
    code, report = await doctor_json(capsys, "--number", "+1415555010")
    assert code == 1
    number = check(report, "twilio_number")
    assert number["status"] == "FAIL"
    assert number["reason"] == f"account {ACCOUNT_SID} has no number +1415555010"


async def test_bad_twilio_credentials_fail_with_twilios_error(healthy, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-twilio-token")
    code, report = await doctor_json(capsys, "--number", NUMBER)
    assert code == 1
    number = check(report, "twilio_number")
    assert number["status"] == "FAIL"
    assert "HTTP 401, error 20003: Authenticate" in number["reason"]
    assert "wrong-twilio-token" not in json.dumps(report)
    assert [request.status for request in healthy.requests] == [401]


async def test_without_a_number_the_twilio_check_is_skipped(healthy, capsys) -> None:
    code, report = await doctor_json(capsys)
    assert code == 0
    assert check(report, "twilio_number")["status"] == "SKIP"
    assert healthy.requests == []


async def test_with_hand_over_on_the_doctor_says_how_much_room_other_forks_of_a_call_have(healthy, capsys) -> None:
    """Hand-over on (account SID and auth token): the inbound stream is 1 of Twilio's 4 forks, 2 during a
    hand-over, so other forks of a call may use 2; said in the text report as in the JSON one."""
    code, out = await run_doctor(capsys)
    _, report = await doctor_json(capsys)
    assert code == 0
    room = check(report, "handover_room")
    assert room["status"] == "OK"
    assert room["reason"].splitlines() == [
        "a call answered by /voice has one inbound_track stream (1 of Twilio's 4 forks per call), and a hand-over "
        "opens a second one like it before closing the first (2 at once)",
        "so other forks of the call (another <Stream>, a <Siprec>, which takes 2) may use 2 at most: past that, "
        "Twilio refuses the second stream and the call is drained instead of handed over",
    ]
    assert "OK    handover_room a call answered by /voice has one inbound_track stream" in out
    assert f"{'':22}so other forks of the call" in out


@pytest.mark.parametrize(
    ("settings", "status", "says"),
    [
        ({"stream_track": "both_tracks"}, Status.OK, "no room for any other fork"),
        ({"stream_track": "outbound_track"}, Status.OK, "may use 2 at most"),
        ({"handover": "off"}, Status.SKIP, "hand-over is off"),
        ({"twilio_account_sid": None}, Status.SKIP, "hand-over is off"),
    ],
)
def test_the_room_left_for_other_forks_follows_the_track_and_is_skipped_with_hand_over_off(
    settings: dict[str, object], status: Status, says: str
) -> None:
    """both_tracks takes 2 of the 4 forks, 4 during a hand-over: none left, and the fix named; one track leaves 2;
    with hand-over off (or no account to ask Twilio with) there is nothing to count."""
    base: dict[str, object] = {"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN}
    result = check_handover_room(Settings(**{**base, **settings}))
    assert result.status == status
    assert says in result.reason
    if settings.get("stream_track") == "both_tracks":
        assert "STREAM_TRACK=inbound_track" in result.reason


async def test_a_bad_setting_is_the_one_failure(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TWILIO_API_URL", "https://api.twilio.com/2010-04-01")
    code, out = await run_doctor(capsys)
    assert code == 1
    assert "FAIL  settings" in out
    assert "TWILIO_API_URL: Value error, must be a bare base URL with no path or query" in out


async def test_a_malformed_number_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        await run_doctor(capsys, "--number", "4155550100")
    assert exit_info.value.code == 2
    assert "E.164" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("public_url", "status"),
    [
        ("https://calls.example.com", Status.OK),
        ("http://calls.example.com", Status.WARN),
        ("http://localhost:5001", Status.FAIL),
        ("https://127.0.0.1", Status.FAIL),
        ("https://10.0.0.5", Status.FAIL),
        (None, Status.WARN),
    ],
)
def test_the_public_url_must_be_https_and_reachable_from_twilio(public_url: str | None, status: Status) -> None:
    assert check_public_url(Settings(public_url=public_url)).status == status


async def test_the_fallback_deepgram_is_checked_with_its_own_key(healthy, deepgram, monkeypatch, capsys) -> None:
    """With DEEPGRAM_FALLBACK_URL, the fallback's key is asked of the fallback: taken is OK, refused is a WARN
    (calls are still transcribed, they just cannot move there), never a secret in the output."""
    _, report = await doctor_json(capsys)
    assert check(report, "deepgram_fallback")["status"] == "SKIP"
    async with FakeDeepgramBatch(api_key="dg-fallback-key-51c0") as fallback:
        monkeypatch.setenv("DEEPGRAM_FALLBACK_URL", fallback.url)
        monkeypatch.setenv("DEEPGRAM_FALLBACK_API_KEY", "dg-fallback-key-51c0")
        code, report = await doctor_json(capsys)
        assert code == 0
        assert check(report, "deepgram_fallback")["status"] == "OK"
        assert fallback.requests[-1].headers["authorization"] == "Token dg-fallback-key-51c0"
        monkeypatch.delenv("DEEPGRAM_FALLBACK_API_KEY")  # the primary's key, which this Deepgram does not take
        code, out = await run_doctor(capsys)
        assert code == 0
        assert "WARN  deepgram_fallback" in out
        assert "refused the fallback's key (HTTP 401): calls cannot move there when the primary fails" in out
        assert fallback.requests[-1].headers["authorization"] == f"Token {DEEPGRAM_SECRET}"
        assert "dg-fallback-key-51c0" not in out


@pytest.mark.parametrize(
    ("values", "status"),
    [
        ({}, Status.OK),
        ({"deepgram_mip_opt_out": False}, Status.WARN),
        ({"deepgram_mip_opt_out": False, "deepgram_options": "mip_opt_out=true"}, Status.OK),
        ({"deepgram_options": "mip_opt_out=false"}, Status.WARN),
    ],
)
def test_the_doctor_says_what_deepgram_keeps(values: dict[str, object], status: Status) -> None:
    """mip_opt_out as it will be sent (DEEPGRAM_OPTIONS' own wins), and how to keep requests in one region."""
    check = check_deepgram_retention(Settings(_env_file=None, **values))  # type: ignore[arg-type]
    assert check.status is status
    assert "regional endpoint" in check.reason
    assert ("Model Improvement Program" in check.reason) is (status is Status.WARN)
