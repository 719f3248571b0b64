"""`python -m service twilio configure | restore`: the number's voice webhook pointed at PUBLIC_URL/voice and put
back, through the real `twilio` client against the REST stand-in (TWILIO_API_URL), with the old webhook kept in
the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.cli.twilio_number import NOT_MIGRATED
from service.storage import migrate, number_backups
from service.storage.number_backups import SavedWebhook
from service.storage.schema import create_engine
from tests.helpers.databases import database_url, postgres_url, sqlite_url
from tests.helpers.fakes.twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest

__all__ = ["database_url", "postgres_url"]  # fixtures: SQLite and PostgreSQL, and PostgreSQL alone

PUBLIC_URL = "https://calls.example.com"
NUMBER = "+14155550100"
OTHER_NUMBER = "+14155550111"
ORIGINAL_URL = "https://demo.twilio.com/welcome/voice/"


@pytest.fixture
def rest(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilioRest]:
    """The stand-in, and the settings `configure` needs of Twilio: PUBLIC_URL and the account's credentials."""
    with FakeTwilioRest() as fake:
        for name, value in {
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_URL": fake.url,
            "PUBLIC_URL": PUBLIC_URL,
        }.items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.fixture
def twilio(rest: FakeTwilioRest, monkeypatch: pytest.MonkeyPatch, database_url: str) -> FakeTwilioRest:
    """`rest`, with DATABASE_URL: a fresh SQLite file, or a PostgreSQL database the release phase migrated."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    if not database_url.startswith("sqlite"):
        asyncio.run(migrate.upgrade(database_url))  # the release phase's `db upgrade`
    return rest


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["twilio", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def backups(url: str) -> list[SavedWebhook]:
    """The backups the database holds for the stand-in's account."""

    async def read() -> list[SavedWebhook]:
        engine = create_engine(url)
        try:
            return await number_backups.saved_for(engine, ACCOUNT_SID)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def posts(twilio: FakeTwilioRest) -> list[dict[str, list[str]]]:
    return [request.form for request in twilio.requests if request.method == "POST"]


def test_configure_points_the_number_here_and_restore_puts_it_back(twilio, database_url, capsys) -> None:
    """The old webhook goes to the database before the change; restore puts it back and deletes the backup."""
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL, voice_method="GET")
    code, out, _ = run(capsys, "configure", "--number", NUMBER)
    assert code == 0
    assert (number.voice_url, number.voice_method) == (f"{PUBLIC_URL}/voice", "POST")
    assert f"voice URL now {ORIGINAL_URL} (GET)\nwill become   {PUBLIC_URL}/voice (POST)\n" in out
    assert f"{NUMBER} now calls {PUBLIC_URL}/voice (POST)" in out
    [saved] = backups(database_url)
    assert (saved.number_sid, saved.phone_number, saved.voice_url, saved.voice_method) == (
        number.sid, NUMBER, ORIGINAL_URL, "GET",
    )  # fmt: skip
    assert posts(twilio) == [{"VoiceUrl": [f"{PUBLIC_URL}/voice"], "VoiceMethod": ["POST"]}]
    assert AUTH_TOKEN not in out

    code, out, _ = run(capsys, "restore")
    assert code == 0
    assert (number.voice_url, number.voice_method) == (ORIGINAL_URL, "GET")
    assert f"{NUMBER} calls {ORIGINAL_URL} (GET) again" in out
    assert backups(database_url) == []
    assert not list(Path.cwd().glob("*.json")), "no backup file left in the working directory"


def test_configure_twice_keeps_the_original_in_the_backup(twilio, database_url, capsys) -> None:
    """The second run finds callscribe's own URL and changes nothing; a third, after a change in the console,
    still keeps the first original, and says so."""
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL)
    assert run(capsys, "configure", "--number", NUMBER)[0] == 0
    code, out, _ = run(capsys, "configure", "--number", NUMBER)
    assert code == 0
    assert "already calls" in out
    assert [saved.voice_url for saved in backups(database_url)] == [ORIGINAL_URL]
    number.voice_url = "https://elsewhere.example.com/voice"  # changed in the console meanwhile
    code, out, _ = run(capsys, "configure", "--number", NUMBER)
    assert code == 0
    assert f"kept the backup saved earlier: {ORIGINAL_URL} (POST)" in out
    assert [saved.voice_url for saved in backups(database_url)] == [ORIGINAL_URL]
    assert run(capsys, "restore", "--number", NUMBER)[0] == 0
    assert number.voice_url == ORIGINAL_URL


def test_dry_run_shows_the_change_and_makes_none(twilio, database_url, capsys) -> None:
    """--dry-run prints the number, its webhook now and what it would become; no POST reaches Twilio, no backup."""
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL, voice_method="GET")
    code, out, _ = run(capsys, "configure", "--number", NUMBER, "--dry-run")
    assert code == 0
    assert out == (
        f"number        {NUMBER} ({number.sid})\n"
        f"voice URL now {ORIGINAL_URL} (GET)\n"
        f"will become   {PUBLIC_URL}/voice (POST)\n"
        "--dry-run: nothing changed\n"
    )
    assert [request.method for request in twilio.requests] == ["GET"]
    assert (number.voice_url, number.voice_method) == (ORIGINAL_URL, "GET")
    if database_url.startswith("sqlite"):
        assert not list(Path.cwd().iterdir()), "a dry run creates no database file"
    else:
        assert backups(database_url) == []


def test_restore_with_several_backups_needs_the_number(twilio, database_url, capsys) -> None:
    """Two numbers configured: restore without --number names both and changes nothing; with it, only that one."""
    first = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL)
    second = twilio.add_number(OTHER_NUMBER, voice_url="https://second.example.com/voice")
    assert run(capsys, "configure", "--number", NUMBER)[0] == 0
    assert run(capsys, "configure", "--number", OTHER_NUMBER)[0] == 0
    code, _, err = run(capsys, "restore")
    assert code == 2
    assert f"saved webhooks of {NUMBER}, {OTHER_NUMBER}: pass --number" in err
    assert run(capsys, "restore", "--number", OTHER_NUMBER)[0] == 0
    assert (first.voice_url, second.voice_url) == (f"{PUBLIC_URL}/voice", "https://second.example.com/voice")
    assert [saved.phone_number for saved in backups(database_url)] == [NUMBER]


def test_configure_leaves_a_number_on_a_twiml_app_alone(twilio, database_url, capsys) -> None:
    """A TwiML App answers that number's calls, not its voice URL: nothing is changed, nothing saved."""
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL, voice_application_sid="AP" + "c" * 32)
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert "calls go to TwiML App AP" in err
    assert number.voice_url == ORIGINAL_URL
    assert posts(twilio) == []
    assert backups(database_url) == []


def test_configure_with_bad_credentials_changes_nothing(twilio, monkeypatch, capsys) -> None:
    """Twilio's 401 (error 20003) is reported, without the token, and the number keeps its webhook."""
    number = twilio.add_number(NUMBER, voice_url=ORIGINAL_URL)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    code, out, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert "HTTP 401, error 20003" in err
    assert "wrong-token" not in out + err
    assert number.voice_url == ORIGINAL_URL


def test_configure_an_unknown_number_fails(twilio, capsys) -> None:
    """A number the account does not have is named in the refusal."""
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert f"has no number {NUMBER}" in err


def test_configure_needs_the_public_url(twilio, monkeypatch, capsys) -> None:
    """Without PUBLIC_URL there is no webhook to set: a usage error before Twilio is asked anything."""
    monkeypatch.delenv("PUBLIC_URL")
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 2
    assert "set PUBLIC_URL" in err
    assert twilio.requests == []


def test_restore_without_a_backup_says_so(twilio, capsys) -> None:
    """Restore with no saved webhook says so and asks nothing of Twilio."""
    code, _, err = run(capsys, "restore")
    assert code == 1
    assert f"nothing to restore: no saved webhook of any number for {ACCOUNT_SID}" in err
    assert twilio.requests == []


def test_configure_on_a_postgres_database_not_migrated_changes_nothing(rest, postgres_url, monkeypatch, capsys) -> None:
    """PostgreSQL keeps the release phase: without `db upgrade` there is nowhere to keep the backup, so Twilio is
    not even asked. (A SQLite file is migrated, as `serve` does: the round trip above starts from none.)"""
    asyncio.run(migrate.downgrade(postgres_url, "base"))
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    number = rest.add_number(NUMBER, voice_url=ORIGINAL_URL)
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert err == f"{NOT_MIGRATED}\n"
    assert rest.requests == []
    assert number.voice_url == ORIGINAL_URL


def test_configure_with_the_database_down_changes_nothing(rest, monkeypatch, tmp_path, capsys) -> None:
    """A database that cannot be opened (a directory where the file should be): its error's type, no request."""
    (tmp_path / "calls.sqlite3").mkdir()
    monkeypatch.setenv("DATABASE_URL", sqlite_url(tmp_path / "calls.sqlite3"))
    rest.add_number(NUMBER, voice_url=ORIGINAL_URL)
    code, _, err = run(capsys, "configure", "--number", NUMBER)
    assert code == 1
    assert err == "cannot reach the database (the SQLite path is not a file): check DATABASE_URL\n"
    assert str(tmp_path) not in err
    assert rest.requests == []
