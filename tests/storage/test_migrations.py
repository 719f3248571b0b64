"""Migrations: from empty, down and up again, on SQLite and PostgreSQL, give exactly the schema of
service/storage/schema.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from service.cli import db as db_cli
from service.storage import migrate, queries
from service.storage.schema import Base, create_engine, search_object
from tests.helpers.databases import database_url, sqlite_url
from tests.helpers.paths import ROOT

__all__ = ["database_url"]  # the fixture, parametrized over SQLite and PostgreSQL

# The generic families the two backends' reflected types are compared in (PostgreSQL reflects Float as DOUBLE
# PRECISION, SQLite reflects DateTime without its zone); lengths and time zones are compared where kept.
_FAMILIES = (sa.Text, sa.String, sa.DateTime, sa.Float, sa.Integer, sa.JSON, sa.Boolean, sa.LargeBinary)


def _family(column_type: Any) -> str:
    for family in _FAMILIES:
        if isinstance(column_type, family):
            return family.__name__
    return type(column_type).__name__


def _column(column_type: Any, nullable: bool, dialect: str) -> tuple[Any, ...]:
    length = getattr(column_type, "length", None) if isinstance(column_type, sa.String) else None
    timezone = getattr(column_type, "timezone", None) if dialect == "postgresql" else None
    return _family(column_type), length, timezone, nullable


def reflected_schema(connection: Connection) -> dict[str, Any]:
    """Tables as the database reports them (SQLAlchemy inspection), leaving out Alembic's own table."""
    inspector = sa.inspect(connection)
    dialect = connection.dialect.name
    schema: dict[str, Any] = {}
    for table in inspector.get_table_names():
        if table == "alembic_version" or search_object(table):  # the search index has its own tests below
            continue
        schema[table] = {
            "columns": {c["name"]: _column(c["type"], c["nullable"], dialect) for c in inspector.get_columns(table)},
            "primary_key": inspector.get_pk_constraint(table),
            "indexes": {
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table) if not search_object(i["name"])
            },
            "foreign_keys": {
                (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]),
                 fk["options"].get("ondelete"))
                for fk in inspector.get_foreign_keys(table)
            },
        }  # fmt: skip
    return schema


def declared_schema(dialect: str) -> dict[str, Any]:
    """The same shape, from the models in service/storage/schema.py."""
    schema: dict[str, Any] = {}
    for table in Base.metadata.sorted_tables:
        schema[table.name] = {
            "columns": {c.name: _column(c.type, bool(c.nullable), dialect) for c in table.columns},
            "primary_key": {"name": table.primary_key.name, "constrained_columns": [c.name for c in table.primary_key]},
            "indexes": {(i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes},
            "foreign_keys": {
                (fk.name, tuple(fk.column_keys), fk.referred_table.name, tuple(e.column.name for e in fk.elements),
                 fk.ondelete)
                for fk in table.foreign_key_constraints
            },
        }  # fmt: skip
    return schema


def _normalise(schema: dict[str, Any], dialect: str) -> dict[str, Any]:
    for table in schema.values():
        table["primary_key"] = {
            "name": table["primary_key"]["name"], "constrained_columns": table["primary_key"]["constrained_columns"]
        }  # fmt: skip
        if dialect == "sqlite":
            # SQLite does not keep a primary key's or a foreign key's constraint name.
            table["primary_key"]["name"] = None
            table["foreign_keys"] = {(None, *fk[1:]) for fk in table["foreign_keys"]}
    return schema


async def inspect(url: str) -> tuple[str, dict[str, Any], list[Any], str | None]:
    """(dialect, reflected schema, Alembic's differences from the models, revision) of the database at `url`."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:

            def look(sync: Connection) -> tuple[str, dict[str, Any], list[Any], str | None]:
                opts = {"compare_type": True, "include_name": lambda name, *_: not search_object(name)}
                context = MigrationContext.configure(sync, opts=opts)
                differences = compare_metadata(context, Base.metadata)
                return sync.dialect.name, reflected_schema(sync), differences, context.get_current_revision()

            return await connection.run_sync(look)
    finally:
        await engine.dispose()


async def assert_schema_is_the_models(url: str) -> None:
    dialect, reflected, differences, revision = await inspect(url)
    assert _normalise(reflected, dialect) == _normalise(declared_schema(dialect), dialect)
    assert differences == []
    assert revision == migrate.head()


async def test_migrations_from_empty_give_the_models_schema(database_url: str) -> None:
    """An empty database upgraded to head has exactly the tables, columns, keys and indexes that
    service/storage/schema.py declares."""
    assert await migrate.current_revision(database_url) is None
    await migrate.upgrade(database_url)
    await assert_schema_is_the_models(database_url)
    assert await migrate.is_at_head(database_url)


async def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    """0001 down to base leaves no tables; base up to 0001 again (and head twice) gives the same schema."""
    await migrate.upgrade(database_url, "0001")
    await migrate.downgrade(database_url, "base")
    _, reflected, _, revision = await inspect(database_url)
    assert (reflected, revision) == ({}, None)
    assert not await migrate.is_at_head(database_url)
    await migrate.upgrade(database_url)
    await migrate.upgrade(database_url)  # already there: nothing to do
    await assert_schema_is_the_models(database_url)


async def test_0002_keeps_stored_utterances_and_their_keys_both_ways(database_url: str) -> None:
    """Utterances stored at 0001 keep their call/track/start keys (and get an empty stream) up to 0002; back down to
    0001 they are still there, and the schema is 0001's again."""
    await migrate.upgrade(database_url, "0001")
    _, at_0001, _, _ = await inspect(database_url)
    await run(database_url, INSERT_CALL, INSERT_UTTERANCE)
    await migrate.upgrade(database_url)
    assert await run(database_url, "SELECT key, stream_sid, text FROM utterances") == [("CA1/inbound/500", "", "Hi.")]
    await migrate.downgrade(database_url, "0001")
    _, reflected, _, revision = await inspect(database_url)
    assert (reflected, revision) == (at_0001, "0001")
    assert await run(database_url, "SELECT key, text FROM utterances") == [("CA1/inbound/500", "Hi.")]


async def test_0003_adds_number_backups_and_takes_them_away(database_url: str) -> None:
    """0003 adds only `number_backups` on top of 0002, which holds a backup; down to 0002 the schema is 0002's."""
    await migrate.upgrade(database_url, "0002")
    _, at_0002, _, _ = await inspect(database_url)
    await migrate.upgrade(database_url, "0003")
    _, at_0003, _, _ = await inspect(database_url)
    assert set(at_0003) - set(at_0002) == {"number_backups"}
    assert {name: at_0003[name] for name in at_0002} == at_0002
    await run(database_url, INSERT_BACKUP)
    assert await run(database_url, "SELECT phone_number, voice_url FROM number_backups") == [
        ("+14155550100", "https://demo.twilio.com/welcome/voice/")
    ]
    await migrate.downgrade(database_url, "0002")
    _, reflected, _, revision = await inspect(database_url)
    assert (reflected, revision) == (at_0002, "0002")


INSERT_BACKUP = (
    "INSERT INTO number_backups (number_sid, account_sid, phone_number, voice_url, voice_method, saved_at) VALUES"
    " ('PN1', 'AC1', '+14155550100', 'https://demo.twilio.com/welcome/voice/', 'POST', '2025-01-02 03:04:05+00:00')"
)


async def search_objects(url: str) -> set[tuple[Any, ...]]:
    """The search index's tables, triggers and indexes, with their DDL as the database keeps it."""
    if url.startswith("sqlite"):
        rows = await run(url, "SELECT type, name, sql FROM sqlite_master WHERE name LIKE 'utterances_fts%'")
    else:
        rows = await run(url, "SELECT 'index', indexname, indexdef FROM pg_indexes WHERE tablename = 'utterances'")
    return {row for row in rows if search_object(row[1])}


async def test_0004_indexes_the_calls_stored_before_it_and_goes_away_down(database_url: str) -> None:
    """Calls stored at 0002 are found by their words once 0004 is applied; new, changed and deleted utterances
    keep the index right; down to 0002 the index is gone and the schema is 0002's again."""
    await migrate.upgrade(database_url, "0002")
    _, at_0002, _, _ = await inspect(database_url)
    await run(database_url, INSERT_CALL, INSERT_UTTERANCE.replace("'Hi.'", "'Hello, my order is late.'"))
    await migrate.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        found = [c.call_sid for c in (await queries.list_calls(engine, words="ORDER late")).calls]
        assert found == ["CA1"]
        assert (await queries.list_calls(engine, words="order early")).calls == ()
        async with engine.begin() as connection:
            await connection.exec_driver_sql(
                "UPDATE utterances SET text = 'Refund please.' WHERE key = 'CA1/inbound/500'"
            )
        assert (await queries.list_calls(engine, words="order")).calls == ()
        assert [c.call_sid for c in (await queries.list_calls(engine, words="refund")).calls] == ["CA1"]
        assert await queries.delete_call(engine, "CA1")
        assert (await queries.list_calls(engine, words="refund")).calls == ()
    finally:
        await engine.dispose()
    assert await search_objects(database_url)
    await migrate.downgrade(database_url, "0002")
    _, reflected, _, revision = await inspect(database_url)
    assert (reflected, revision) == (at_0002, "0002")
    assert await search_objects(database_url) == set()


async def test_create_all_builds_the_search_index_0004_builds(database_url: str) -> None:
    """A database made from the models (the tests' databases) has the very search index the migration makes."""
    await migrate.upgrade(database_url)
    migrated = await search_objects(database_url)
    await migrate.downgrade(database_url, "base")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()
    assert await search_objects(database_url) == migrated
    # SQLite: the FTS5 table, its four shadow tables and three triggers; PostgreSQL: the GIN index.
    assert len(migrated) == (8 if database_url.startswith("sqlite") else 1)


async def test_0005_adds_the_hand_over_columns_and_drops_them_without_touching_transcripts(database_url: str) -> None:
    """Up to 0005 a stored call reads as not handed over and its streams as not ended; back down to 0002 the
    call and its utterances are all still there (no table copied, so no cascade), and the schema is 0002's."""
    await migrate.upgrade(database_url, "0002")
    _, at_0002, _, _ = await inspect(database_url)
    await run(database_url, INSERT_CALL, INSERT_UTTERANCE, INSERT_STREAM)
    await migrate.upgrade(database_url, "0005")
    assert await run(database_url, "SELECT handed_over FROM calls") in ([(False,)], [(0,)])
    assert await run(database_url, "SELECT ended_at FROM streams") == [(None,)]
    await migrate.downgrade(database_url, "0002")
    _, reflected, _, revision = await inspect(database_url)
    assert (reflected, revision) == (at_0002, "0002")
    assert await run(database_url, "SELECT key, text FROM utterances") == [("CA1/inbound/500", "Hi.")]
    assert await run(database_url, "SELECT call_sid FROM calls") == [("CA1",)]


async def test_0006_records_the_calls_that_had_a_stream_and_goes_away_down(database_url: str) -> None:
    """Up to 0006 each stored call and each first stream already claimed is in `streamed_calls` once (at its
    earliest time), a hand-over's stream alone is not; back down to 0005 the table is gone, the rest untouched."""
    await migrate.upgrade(database_url, "0005")
    _, at_0005, _, _ = await inspect(database_url)
    handover = INSERT_STREAM.replace("'MZ1', 'CA1', 'voice'", "'MZ3', 'CA3', 'handover'").replace("true", "false")
    only_a_call = INSERT_CALL.replace("'CA1', 'MZ1'", "'CA4', 'MZ4'")
    earlier_claim = INSERT_STREAM.replace("'MZ1', 'CA1'", "'MZ2', 'CA2'").replace("2025-01-02", "2025-01-01")
    later_call = INSERT_CALL.replace("'CA1', 'MZ1'", "'CA2', 'MZ2'")
    await run(database_url, INSERT_CALL, INSERT_STREAM, handover, only_a_call, earlier_claim, later_call)
    await migrate.upgrade(database_url, "0006")
    recorded = await run(database_url, "SELECT call_sid, first_stream_at FROM streamed_calls ORDER BY call_sid")
    assert [call_sid for call_sid, _ in recorded] == ["CA1", "CA2", "CA4"]
    assert [str(at)[:10] for _, at in recorded] == ["2025-01-02", "2025-01-01", "2025-01-02"]
    await migrate.downgrade(database_url, "0005")
    _, reflected, _, revision = await inspect(database_url)
    assert (reflected, revision) == (at_0005, "0005")
    assert await run(database_url, "SELECT call_sid FROM calls ORDER BY call_sid") == [("CA1",), ("CA2",), ("CA4",)]
    assert len(await run(database_url, "SELECT stream_sid FROM streams")) == 3


async def test_0007_gives_stored_utterances_no_languages_and_drops_them_without_touching_transcripts(
    database_url: str,
) -> None:
    """Up to 0007 an utterance stored before reads as in no language said (`[]`) and a new one keeps its list;
    back down to 0006 both utterances and their words (each word's language in them) are still there, and the
    schema is 0006's."""
    await migrate.upgrade(database_url, "0006")
    _, at_0006, _, _ = await inspect(database_url)
    await run(database_url, INSERT_CALL, INSERT_UTTERANCE)
    await migrate.upgrade(database_url, "0007")
    assert await run(database_url, "SELECT languages FROM utterances") in ([("[]",)], [([],)])
    words = '[{"word": "hola", "language": "es"}]'
    spanish = INSERT_UTTERANCE.replace("CA1/inbound/500", "CA1/inbound/1500").replace("0.5, 1.0", "1.5, 2.0")
    spanish = spanish.replace("words, source,", "words, source, languages,").replace(
        "'[]', 'live',", f"'{words}', 'live', '[\"es\", \"en\"]',"
    )
    await run(database_url, spanish)
    stored = await run(database_url, "SELECT languages, words FROM utterances ORDER BY start")
    assert [json.loads(languages) if isinstance(languages, str) else languages for languages, _ in stored] == [
        [],
        ["es", "en"],
    ]
    await migrate.downgrade(database_url, "0006")
    _, reflected, _, revision = await inspect(database_url)
    assert (reflected, revision) == (at_0006, "0006")
    kept = await run(database_url, "SELECT key, words FROM utterances ORDER BY start")
    assert [(key, json.loads(words) if isinstance(words, str) else words) for key, words in kept] == [
        ("CA1/inbound/500", []),
        ("CA1/inbound/1500", [{"word": "hola", "language": "es"}]),
    ]


INSERT_STREAM = (
    "INSERT INTO streams (stream_sid, call_sid, purpose, track, first_stream, started_at) VALUES"
    " ('MZ1', 'CA1', 'voice', 'inbound_track', true, '2025-01-02 03:04:05+00:00')"
)
INSERT_CALL = (
    "INSERT INTO calls (call_sid, stream_sid, account_sid, from_number, to_number, direction, custom_parameters,"
    " tracks, started_at, status, deepgram_request_ids, audio_s_inbound, audio_s_outbound, summary) VALUES"
    " ('CA1', 'MZ1', '', '', '', '', '{}', '[]', '2025-01-02 03:04:05+00:00', 'completed', '[]', 0, 0, '{}')"
)
INSERT_UTTERANCE = (
    'INSERT INTO utterances (key, call_sid, track, speaker, start, "end", text, confidence, words, source,'
    " created_at) VALUES ('CA1/inbound/500', 'CA1', 'inbound', 'caller', 0.5, 1.0, 'Hi.', 0.9, '[]', 'live',"
    " '2025-01-02 03:04:05+00:00')"
)


async def run(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Plain SQL in one transaction (the models describe the newest schema, not the one a test may be at): the
    last statement's rows, if it has any."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                result = await connection.exec_driver_sql(statement)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def test_check_and_current_work_without_an_event_loop(tmp_path: Path) -> None:
    """`check` says False on an empty database and True once upgraded; `current` names the revision."""
    url = sqlite_url(tmp_path / "cli.sqlite3")
    assert (migrate.current(url), migrate.check(url)) == (None, False)
    db_main(["db", "upgrade"], url)
    assert (migrate.current(url), migrate.check(url)) == (migrate.head(), True)


def test_db_commands_upgrade_and_report_the_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`db current` exits 1 before `db upgrade` and 0 after, and neither prints the database URL."""
    url = sqlite_url(tmp_path / "cli.sqlite3")
    assert db_main(["db", "current"], url, monkeypatch) == 1
    assert "run `python -m service db upgrade`" in capsys.readouterr().out
    assert db_main(["db", "upgrade"], url, monkeypatch) == 0
    assert db_main(["db", "current"], url, monkeypatch) == 0
    output = capsys.readouterr().out
    assert f"{migrate.head()} (newest)" in output
    assert str(tmp_path) not in output


def db_main(argv: list[str], url: str, monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    """`python -m service db ...` as `service/cli/__init__.py` registers it, with DATABASE_URL set."""
    with pytest.MonkeyPatch.context() as patch:
        (monkeypatch or patch).setenv("DATABASE_URL", url)
        parser = argparse.ArgumentParser()
        db_cli.add_commands(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        result: int = args.handler(args)
        return result


async def test_two_processes_starting_on_one_sqlite_file_migrate_it_once(tmp_path: Path) -> None:
    """Hypercorn's workers start together: the lock lets one migrate; the other finds the schema at head."""
    url = sqlite_url(tmp_path / "shared.sqlite3")
    first, second = await asyncio.gather(migrate.upgrade_sqlite(url), migrate.upgrade_sqlite(url))
    assert sorted([first, second], key=str) == [(None, migrate.head()), None]
    assert await migrate.is_at_head(url)
    assert await migrate.upgrade_sqlite(url) is None  # at head: nothing to do, no Alembic run


def test_the_named_head_is_the_newest_migration_script() -> None:
    """HEAD_REVISION (what the start-up and /readyz checks compare with) moves with every new migration."""
    assert migrate.head() == ScriptDirectory.from_config(migrate.config()).get_current_head()


async def test_the_revision_read_without_alembic_is_alembics_own(database_url: str) -> None:
    """The one-query check reads what Alembic writes: nothing before a migration, then each revision on the way."""
    assert await migrate.current_revision(database_url) is None
    for revision in ("0001", "0003", migrate.head()):
        await migrate.upgrade(database_url, revision)
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                alembics = await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
        finally:
            await engine.dispose()
        assert await migrate.current_revision(database_url) == alembics == revision


def test_a_start_up_on_a_migrated_sqlite_file_does_not_load_alembic(tmp_path: Path) -> None:
    """Alembic (with Mako and Pygments) is loaded to migrate, not to find that nothing needs migrating."""
    url = sqlite_url(tmp_path / "migrated.sqlite3")
    db_main(["db", "upgrade"], url)
    script = (
        "import asyncio, sys\n"
        "from service.storage import migrate\n"
        f"assert asyncio.run(migrate.upgrade_sqlite({url!r})) is None\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in {'alembic', 'mako', 'pygments'}))\n"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, with a script written here
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_only_a_sqlite_file_is_migrated_at_start_up() -> None:
    assert migrate.sqlite_file("sqlite+aiosqlite:///callscribe.sqlite3") == Path("callscribe.sqlite3")
    assert migrate.sqlite_file("sqlite:////var/data/db.sqlite3?timeout=0.2") == Path("/var/data/db.sqlite3")
    assert migrate.sqlite_file("sqlite+aiosqlite://") is None
    assert migrate.sqlite_file("postgres://user:secret@db.example.com:5432/calls") is None


@pytest.mark.parametrize("problem", ["the SQLite path is not a file", "the SQLite file's directory does not exist"])
async def test_db_commands_on_a_sqlite_file_that_cannot_be_opened_say_so_in_one_line(
    tmp_path: Path, problem: str
) -> None:
    """A directory where the file should be, or no directory for it: one line naming the problem, exit 1, no
    traceback, and none of aiosqlite's late "Event loop is closed" from its worker thread (a real process)."""
    if problem.endswith("not a file"):
        path = tmp_path / "calls.sqlite3"
        path.mkdir()
    else:
        path = tmp_path / "gone" / "calls.sqlite3"
    for command in ("current", "upgrade"):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "db", command, cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "DATABASE_URL": sqlite_url(path)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        expected = f"cannot reach the database ({problem}): check DATABASE_URL\n"
        assert (process.returncode, out.decode(), err.decode()) == (1, "", expected)
    assert migrate.sqlite_open_problem(sqlite_url(path)) == problem
    assert not (tmp_path / "gone").exists()
    assert migrate.sqlite_open_problem(sqlite_url(tmp_path / "new.sqlite3")) is None
    assert migrate.sqlite_open_problem("postgres://user:secret@db.example.com:5432/calls") is None
