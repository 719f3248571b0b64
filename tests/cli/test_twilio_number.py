"""`python -m service twilio configure | restore`: the number's voice webhook pointed at PUBLIC_URL/voice and put
back, through the real `twilio` client against the REST stand-in (TWILIO_API_URL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from tests.helpers.fakes.twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest

PUBLIC_URL = "https://calls.example.com"
NUMBER = "+14155550100"
ORIGINAL_URL = "https://demo.twilio.com/welcome/voice/"


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as fake:
        for name, value in {
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_URL": fake.url,
            "PUBLIC_URL": PUBLIC_URL,
        }.items():
            monkeypatch.setenv(name, value)
        yield fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["twilio", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_configure_points_the_number_here_and_restore_puts_it_back(twilio, tmp_path: Path, capsys) -> None:
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL, voice_method="GET")
    code, out, _ = run(capsys, "configure", "--number", NUMBER)
    assert code == 0
    assert (number.voice_url, number.voice_method) == (f"{PUBLIC_URL}/voice", "POST")
    assert f"now calls {PUBLIC_URL}/voice (POST); it called {ORIGINAL_URL} (GET)" in out
    backup = json.loads((tmp_path / "callscribe-twilio-number.json").read_text())
    assert backup == {
        "account_sid": ACCOUNT_SID,
        "sid": number.sid,
        "phone_number": NUMBER,
        "voice_url": ORIGINAL_URL,
        "voice_method": "GET",
    }
    [_, update] = twilio.requests
    assert update.method == "POST"
    assert update.form == {"VoiceUrl": [f"{PUBLIC_URL}/voice"], "VoiceMethod": ["POST"]}
    assert AUTH_TOKEN not in out

    code, out, _ = run(capsys, "restore")
    assert code == 0
    assert (number.voice_url, number.voice_method) == (ORIGINAL_URL, "GET")
    assert f"{NUMBER} calls {ORIGINAL_URL} (GET) again" in out
    assert not (tmp_path / "callscribe-twilio-number.json").exists()


def test_configure_twice_keeps_the_original_in_the_backup(twilio, tmp_path: Path, capsys) -> None:
    """The second run finds callscribe's own URL: it changes nothing and the backup still holds the original."""
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL)
    assert run(capsys, "configure", "--number", NUMBER)[0] == 0
    code, out, _ = run(capsys, "configure", "--number", NUMBER)
    assert code == 0
    assert "already calls" in out
    assert json.loads((tmp_path / "callscribe-twilio-number.json").read_text())["voice_url"] == ORIGINAL_URL
    number.voice_url = "https://elsewhere.example.com/voice"  # changed in the console meanwhile
    assert run(capsys, "configure", "--number", NUMBER)[0] == 0
    assert json.loads((tmp_path / "callscribe-twilio-number.json").read_text())["voice_url"] == ORIGINAL_URL


def test_configure_leaves_a_number_on_a_twiml_app_alone(twilio, tmp_path: Path, capsys) -> None:
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL, voice_application_sid="AP" + "c" * 32)
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert "calls go to TwiML App AP" in err
    assert number.voice_url == ORIGINAL_URL
    assert not (tmp_path / "callscribe-twilio-number.json").exists()


def test_configure_with_bad_credentials_changes_nothing(twilio, monkeypatch, tmp_path: Path, capsys) -> None:
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    code, out, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert "HTTP 401, error 20003" in err
    assert "wrong-token" not in out + err
    assert number.voice_url == ORIGINAL_URL


def test_configure_an_unknown_number_fails(twilio, capsys) -> None:
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert f"has no number {NUMBER}" in err


def test_configure_needs_the_public_url(twilio, monkeypatch, capsys) -> None:
    monkeypatch.delenv("PUBLIC_URL")
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 2
    assert "set PUBLIC_URL" in err
    assert twilio.requests == []


def test_restore_without_a_backup_says_so(twilio, capsys) -> None:
    code, _, err = run(capsys, "restore")
    assert code == 1
    assert "nothing to restore" in err
