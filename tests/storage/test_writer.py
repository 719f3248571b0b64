"""The transcript store on SQLite and a real PostgreSQL: rows, idempotence, outages, the journal, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, make_url, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from service.alerts.matching import SAID, Alert
from service.calls.events import CallEnded, CallStarted
from service.calls.stream.admission import ClaimOutcome
from service.calls.transcript import Transcript
from service.settings import Settings
from service.storage import queries
from service.storage.journal import Journal
from service.storage.retention import purge
from service.storage.schema import Call, Stream, Utterance, WebhookDelivery, create_engine
from service.storage.streams import DatabaseStreamClaims
from service.storage.writer import TranscriptStore
from service.storage.writes import (
    call_ended_write,
    call_started_write,
    decode,
    describe,
    encode,
    is_permanent,
    utterance_key,
    utterance_write,
)
from service.stt.events import Word
from tests.helpers.databases import database_down, database_url, migrated_url, postgres_url
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually

__all__ = ["database_url", "migrated_url", "postgres_url"]  # fixtures: SQLite and PostgreSQL

T0 = datetime.datetime(2025, 3, 4, 10, 0, 0, tzinfo=datetime.UTC)


def settings_for(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(None, database_url=url, db_journal_path=tmp_path / "journal.jsonl", **overrides)


def new_store(settings: Settings, **options: Any) -> TranscriptStore:
    """A store that retries quickly (10-100 ms) with seeded jitter, so tests are quick and repeatable."""
    return TranscriptStore(settings, rng=random.Random(4), retry_base_s=0.01, retry_cap_s=0.1, **options)


def started(call_sid: str = "CA1", at: datetime.datetime = T0) -> CallStarted:
    return CallStarted(
        call_sid=call_sid, stream_sid=f"MZ{call_sid}", account_sid="AC1", from_number="+14155550100",
        to_number="+14155550199", direction="inbound", tracks=("inbound", "outbound"),
        custom_parameters={"ticket": "42"}, started_at=at,
    )  # fmt: skip


def result(
    call_sid: str, track: str, start: float, text: str, *, is_final: bool = True, batch: bool = False
) -> Transcript:
    words = tuple(
        Word(word=w.lower(), start=start + i * 0.3, end=start + i * 0.3 + 0.25, confidence=0.9, punctuated_word=w)
        for i, w in enumerate(text.split())
    )
    return Transcript(
        call_sid=call_sid, stream_sid=f"MZ{call_sid}", track=track, is_final=is_final, speech_final=is_final,
        from_finalize=False, text=text, start=start, end=start + 0.3 * len(words), confidence=0.91, words=words,
        request_id="req-1", batch=batch, speaker={"inbound": "caller", "outbound": "agent"}[track],
    )  # fmt: skip


def ended(call_sid: str = "CA1", at: datetime.datetime = T0 + datetime.timedelta(seconds=30)) -> CallEnded:
    return CallEnded(
        call_sid=call_sid, stream_sid=f"MZ{call_sid}", ended_at=at, ended_by="stop",
        deepgram_request_ids=("req-1", "req-2"), audio_s_by_track={"inbound": 29.5, "outbound": 28.0},
        summary={"finals": 3, "dropped_frames": 0},
    )  # fmt: skip


def a_call(store: TranscriptStore, call_sid: str = "CA1") -> None:
    """One both-track call: its start, interims and finals (one from batch), and its end."""
    store.call_started(started(call_sid))
    store.transcript(result(call_sid, "inbound", 0.5, "Hello", is_final=False))
    store.transcript(result(call_sid, "inbound", 0.5, "Hello there."))
    store.transcript(result(call_sid, "outbound", 1.25, "Hi, how can I help?"))
    store.transcript(result(call_sid, "inbound", 3.0, "About my order", is_final=False))
    store.transcript(result(call_sid, "inbound", 3.0, "About my order.", batch=True))
    store.call_ended(ended(call_sid))


async def rows(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every call and utterance row, as column dicts, in a stable order."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            calls = (await connection.execute(select(Call.__table__).order_by(Call.call_sid))).mappings().all()
            utterances = (
                await connection.execute(select(Utterance.__table__).order_by(Utterance.call_sid, Utterance.start))
            ).mappings().all()  # fmt: skip
    finally:
        await engine.dispose()
    return [dict(row) for row in calls], [dict(row) for row in utterances]


def naive_utc(moment: datetime.datetime) -> datetime.datetime:
    # SQLite hands datetimes back without their zone; PostgreSQL with it.
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


async def idle(store: TranscriptStore, timeout: float = 20.0) -> None:
    await asyncio.wait_for(store.wait_idle(), timeout)


async def test_a_calls_events_become_rows(migrated_url: str, tmp_path: Path) -> None:
    """A call becomes one call row and one utterance per final (speaker, track, times, words, source); no interims."""
    store = new_store(settings_for(migrated_url, tmp_path))
    await store.start()
    a_call(store)
    await idle(store)
    await store.stop(5)
    [call], utterances = await rows(migrated_url)
    assert {key: call[key] for key in ("call_sid", "stream_sid", "account_sid", "from_number", "to_number")} == {
        "call_sid": "CA1", "stream_sid": "MZCA1", "account_sid": "AC1", "from_number": "+14155550100",
        "to_number": "+14155550199",
    }  # fmt: skip
    assert (call["direction"], call["tracks"], call["custom_parameters"]) == (
        "inbound",
        ["inbound", "outbound"],
        {"ticket": "42"},
    )
    assert naive_utc(call["started_at"]) == naive_utc(T0)
    assert naive_utc(call["ended_at"]) == naive_utc(T0 + datetime.timedelta(seconds=30))
    assert (call["status"], call["ended_by"], call["deepgram_request_ids"]) == ("completed", "stop", ["req-1", "req-2"])
    assert (call["audio_s_inbound"], call["audio_s_outbound"]) == (29.5, 28.0)
    assert call["summary"] == {"finals": 3, "dropped_frames": 0}
    assert [(u["track"], u["speaker"], u["start"], u["text"], u["source"]) for u in utterances] == [
        ("inbound", "caller", 0.5, "Hello there.", "live"),
        ("outbound", "agent", 1.25, "Hi, how can I help?", "live"),
        ("inbound", "caller", 3.0, "About my order.", "batch"),
    ]
    first = utterances[0]
    assert (first["key"], first["end"], first["confidence"]) == ("CA1/MZCA1/inbound/500", 1.1, 0.91)
    assert first["words"] == [
        {"word": "hello", "start": 0.5, "end": 0.75, "confidence": 0.9, "punctuated_word": "Hello", "speaker": None,
         "language": None},
        {"word": "there.", "start": 0.8, "end": 1.05, "confidence": 0.9, "punctuated_word": "there.", "speaker": None,
         "language": None},
    ]  # fmt: skip
    assert first["languages"] == []
    assert (store.counters.written, store.counters.journaled, store.counters.failures) == (5, 0, 0)


async def test_the_same_events_twice_make_no_second_row(migrated_url: str, tmp_path: Path) -> None:
    """Every event delivered twice (in the same store and by a new one) leaves the same rows; the call stays ended."""
    settings = settings_for(migrated_url, tmp_path)
    first = new_store(settings)
    await first.start()
    a_call(first)
    a_call(first)
    await idle(first)
    await first.stop(5)
    once = await rows(migrated_url)
    second = new_store(settings)
    await second.start()
    a_call(second)
    second.call_started(started())  # a late duplicate of the start must not reopen the call
    await idle(second)
    await second.stop(5)
    calls, utterances = await rows(migrated_url)
    assert len(calls) == 1
    assert len(utterances) == 3
    assert calls[0]["status"] == "completed"
    assert [u["key"] for u in utterances] == [u["key"] for u in once[1]]
    assert [u["created_at"] for u in utterances] == [u["created_at"] for u in once[1]]


async def test_two_streams_of_one_call_keep_their_own_words(migrated_url: str, tmp_path: Path) -> None:
    """A second stream claiming the call (a hand-over, or a replayed `start`) with finals at the same start on the
    same track stores them beside the first stream's, never over them; each stream's batch final lands on its own
    live final."""
    store = new_store(settings_for(migrated_url, tmp_path))
    await store.start()
    store.call_started(started("CA1"))
    store.transcript(result("CA1", "inbound", 0.5, "The real words."))
    store.transcript(dataclasses.replace(result("CA1", "inbound", 0.5, "Injected words."), stream_sid="MZother"))
    store.transcript(result("CA1", "inbound", 0.5, "The real words, again.", batch=True))
    await idle(store)
    await store.stop(5)
    _, utterances = await rows(migrated_url)
    assert sorted((u["key"], u["stream_sid"], u["text"], u["source"]) for u in utterances) == [
        ("CA1/MZCA1/inbound/500", "MZCA1", "The real words, again.", "batch"),
        ("CA1/MZother/inbound/500", "MZother", "Injected words.", "live"),
    ]


async def test_a_stream_handed_over_marks_the_call_and_its_stream_but_leaves_the_call_going(
    migrated_url: str, tmp_path: Path
) -> None:
    """The old stream's end at a hand-over: the call says handed over, stays active and gets no call.completed; the
    stream's row gets its end; the new stream's end completes the call, once, with call.completed saying so."""
    settings = settings_for(
        migrated_url, tmp_path, transcript_webhook_url="https://example.com/hook", webhook_secret="s"
    )
    engine = create_engine(migrated_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Stream), [
                {"stream_sid": "MZCA1", "call_sid": "CA1", "purpose": "voice", "track": "inbound_track",
                 "first_stream": True, "started_at": T0},
                {"stream_sid": "MZnew", "call_sid": "CA1", "purpose": "handover", "track": "inbound_track",
                 "first_stream": False, "started_at": T0 + datetime.timedelta(seconds=20)},
            ])  # fmt: skip
        store = new_store(settings)
        await store.start()
        store.call_started(started())
        store.transcript(result("CA1", "inbound", 0.5, "Before the cut."))
        store.call_ended(dataclasses.replace(ended(), ended_by="handed_over"))
        await idle(store)
        [call], _ = await rows(migrated_url)
        assert (call["status"], call["handed_over"], call["ended_at"], call["ended_by"]) == ("active", True, None, None)
        async with engine.connect() as connection:
            streams = dict((await connection.execute(select(Stream.stream_sid, Stream.ended_at))).all())
            kinds = (await connection.execute(select(WebhookDelivery.event_type))).scalars().all()
        assert streams["MZCA1"] is not None
        assert streams["MZnew"] is None
        assert list(kinds) == ["utterance.final"]
        store.call_ended(dataclasses.replace(ended(), stream_sid="MZnew"))
        await idle(store)
        await store.stop(5)
        [call], _ = await rows(migrated_url)
        assert (call["status"], call["handed_over"], call["ended_by"]) == ("completed", True, "stop")
        async with engine.connect() as connection:
            payloads = (await connection.execute(select(WebhookDelivery.payload))).scalars().all()
        [completed] = [payload for payload in payloads if payload["type"] == "call.completed"]
        assert completed["data"]["handed_over"] is True
    finally:
        await engine.dispose()


async def test_the_outbox_keeps_a_batchs_order_so_call_completed_follows_the_last_final(
    migrated_url: str, tmp_path: Path
) -> None:
    """A call's finals and its end committed in one batch are due in that order: call.completed comes last."""
    settings = settings_for(
        migrated_url, tmp_path, transcript_webhook_url="https://example.com/hook", webhook_secret="s"
    )
    store = new_store(settings)
    await store.start()
    store_call(store, "CA1", finals=3)  # no await in between: the writer takes all five in one batch
    await idle(store)
    await store.stop(5)
    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as connection:
            due = select(WebhookDelivery.event_type).order_by(WebhookDelivery.created_at, WebhookDelivery.event_id)
            kinds = (await connection.execute(due)).scalars().all()
    finally:
        await engine.dispose()
    assert list(kinds) == ["utterance.final"] * 3 + ["call.completed"]


async def test_an_utterance_before_its_call_gets_a_stand_in_row_that_the_call_fills_in(
    migrated_url: str, tmp_path: Path
) -> None:
    """A batch utterance with no call row makes a minimal one; call_ended and a late call_started complete it."""
    later = T0 + datetime.timedelta(hours=2)
    store = new_store(settings_for(migrated_url, tmp_path), clock=lambda: later)
    await store.start()
    store.transcript(result("CA9", "inbound", 12.0, "Spooled words.", batch=True))
    await idle(store)
    [call], [utterance] = await rows(migrated_url)
    assert (call["call_sid"], call["stream_sid"], call["status"], call["account_sid"]) == ("CA9", "MZCA9", "active", "")
    assert naive_utc(call["started_at"]) == naive_utc(later)
    assert (utterance["key"], utterance["source"]) == (utterance_key("CA9", "MZCA9", "inbound", 12.0), "batch")
    store.call_ended(ended("CA9"))
    store.call_started(started("CA9"))  # replayed after its end: fills in, never reopens
    await idle(store)
    await store.stop(5)
    [call], _ = await rows(migrated_url)
    assert (call["status"], call["ended_by"], call["account_sid"], call["from_number"]) == (
        "completed", "stop", "AC1", "+14155550100",
    )  # fmt: skip
    assert (call["tracks"], call["custom_parameters"]) == (["inbound", "outbound"], {"ticket": "42"})
    assert naive_utc(call["started_at"]) == naive_utc(T0)  # the real start, not the stand-in's


async def test_the_database_going_away_mid_call_loses_nothing_and_doubles_nothing(
    migrated_url: str, tmp_path: Path, log_lines: LogLines
) -> None:
    """Down mid-call: writes wait in memory, then the journal; back up, all of them land once and the journal goes."""
    settings = settings_for(migrated_url, tmp_path, db_queue_max=10)
    store = new_store(settings)
    await store.start()
    store.call_started(started())
    for index in range(3):
        store.transcript(result("CA1", "inbound", index, f"Before the outage {index}."))
    await idle(store)
    async with database_down(migrated_url):
        for index in range(3, 30):  # 27 finals: past DB_QUEUE_MAX, so most go to the journal
            track = "inbound" if index % 2 else "outbound"
            store.transcript(result("CA1", track, index, f"During {index}", is_final=False))
            store.transcript(result("CA1", track, index, f"During the outage {index}."))
        store.transcript(result("CA1", "outbound", 4.0, "During the outage 4."))  # a repeat: same utterance
        store.call_ended(ended())
        await log_lines.wait_for("store.unavailable")
        await eventually(lambda: store.counters.journaled == 29 - 10)
        assert len(store.journal.path.read_bytes().splitlines()) == 19
        assert store.counters.written == 4
    await idle(store)
    await store.stop(5)
    [call], utterances = await rows(migrated_url)
    assert call["status"] == "completed"
    assert [u["start"] for u in utterances] == [float(index) for index in range(30)]
    assert [u["text"] for u in utterances][3:5] == ["During the outage 3.", "During the outage 4."]
    assert not store.journal.path.exists()
    counters = store.counters
    assert (counters.written, counters.journaled, counters.replayed, counters.lost) == (4 + 29, 19, 19, 0)
    assert counters.failures >= 1
    [unavailable] = log_lines.events("store.unavailable")
    assert unavailable["error"]  # the error's type, e.g. "OperationalError <- ..."
    [recovered] = log_lines.events("store.recovered")
    assert recovered["failures"] == counters.failures
    assert len(log_lines.events("store.journaling")) == 1
    assert len(log_lines.events("store.journal_replayed")) == 1
    password = make_url(migrated_url).password
    assert migrated_url not in log_lines.text()
    assert not password or str(password) not in log_lines.text()


async def test_a_full_queue_is_journaled_and_replayed_once_by_the_next_process(
    migrated_url: str, tmp_path: Path
) -> None:
    """Past the queue bound the rest, and at stop the queue too, are journaled in order; the next store replays once."""
    settings = settings_for(migrated_url, tmp_path, db_queue_max=10)
    first = new_store(settings)
    await first.start()
    async with database_down(migrated_url):
        store_call(first, "CA2", finals=25)
        await eventually(lambda: first.counters.journaled == 27 - 10)
        await first.stop(0.3)
    assert (first.counters.written, first.counters.journaled) == (0, 27)
    journaled = [decode(line + b"\n") for line in first.journal.path.read_bytes().splitlines()]
    assert [write.kind for write in journaled] == ["call_started"] + ["utterance"] * 25 + ["call_ended"]
    assert [write.row["start"] for write in journaled[1:-1]] == [float(index) for index in range(25)]
    assert journaled[0] == call_started_write(started("CA2"))  # every field, datetimes included
    second = new_store(settings)
    await second.start()
    await idle(second)
    await second.stop(5)
    assert (second.counters.replayed, second.counters.written) == (27, 27)
    assert not second.journal.path.exists()
    third = new_store(settings)
    await third.start()
    await third.stop(5)
    assert third.counters.replayed == 0
    [call], utterances = await rows(migrated_url)
    assert (call["call_sid"], call["status"], call["account_sid"]) == ("CA2", "completed", "AC1")
    assert [u["text"] for u in utterances] == [f"Words {index}." for index in range(25)]


async def test_each_process_journals_to_its_own_slot_and_what_dead_ones_left_is_adopted(
    migrated_url: str, tmp_path: Path
) -> None:
    """Two live stores (two Hypercorn workers) journal to two files; the next store replays both, each write once."""
    settings = settings_for(migrated_url, tmp_path, db_queue_max=10)
    first, second = new_store(settings), new_store(settings)
    await first.start()
    await second.start()
    assert (first.journal.path.name, second.journal.path.name) == ("journal.jsonl", "journal.1.jsonl")
    async with database_down(migrated_url):
        store_call(first, "CA1", finals=12)
        store_call(second, "CA2", finals=12)
        await first.stop(0.2)
        await second.stop(0.2)
    assert (first.counters.journaled, second.counters.journaled) == (14, 14)
    third = new_store(settings)
    await third.start()
    await idle(third)
    await third.stop(5)
    assert (third.journal.path.name, third.counters.replayed) == ("journal.jsonl", 28)
    assert not first.journal.path.exists()
    assert not second.journal.path.exists()
    calls, utterances = await rows(migrated_url)
    assert [(call["call_sid"], call["status"]) for call in calls] == [("CA1", "completed"), ("CA2", "completed")]
    assert len(utterances) == 24


async def test_a_journal_that_cannot_be_read_is_retried_and_the_writer_lives_on(
    migrated_url: str, tmp_path: Path, log_lines: LogLines
) -> None:
    """A journal path the writer cannot read (here a directory) is logged and retried, never the writer's end."""
    settings = settings_for(migrated_url, tmp_path)
    settings.db_journal_path.mkdir()
    (settings.db_journal_path / "not-a-journal").write_bytes(b"x")
    store = new_store(settings)
    await store.start()
    failed = await log_lines.wait_for("store.journal_retry")
    assert failed["error"] == "IsADirectoryError"
    shutil.rmtree(settings.db_journal_path)
    store_call(store, "CA3", finals=2)
    await idle(store)
    await store.stop(5)
    assert store.counters.journal_failures >= 1
    assert store.counters.written == 4
    [call], utterances = await rows(migrated_url)
    assert call["call_sid"] == "CA3"
    assert [u["text"] for u in utterances] == ["Words 0.", "Words 1."]


def store_call(store: TranscriptStore, call_sid: str, finals: int) -> None:
    store.call_started(started(call_sid))
    for index in range(finals):
        store.transcript(result(call_sid, "inbound", index, f"Words {index}."))
    store.call_ended(ended(call_sid))


def commits(store: TranscriptStore) -> list[int]:
    """A list that grows by one for each transaction the store's engine commits."""
    counted: list[int] = []
    event.listen(store.engine.sync_engine, "commit", lambda _connection: counted.append(1))
    return counted


async def test_finals_given_one_at_a_time_gather_into_one_transaction_that_wait_idle_takes_at_once(
    migrated_url: str, tmp_path: Path
) -> None:
    """Finals of two calls (one with no start yet) and an alert, each given while the writer waits for more: one
    transaction, as soon as somebody waits for them (the gather is a minute here), with the rows each write makes
    alone: CA2's stand-in row, and the later delivery of an utterance over the earlier one."""
    store = new_store(settings_for(migrated_url, tmp_path), gather_s=60)
    await store.start()
    counted = commits(store)
    store.call_started(started("CA1"))
    await store.wait_idle()
    given = [
        result("CA1", "inbound", 0.5, "Hello there."),
        result("CA2", "inbound", 0.5, "Other call."),
        result("CA1", "outbound", 1.25, "Hi, how can I help?"),
        result("CA1", "inbound", 0.5, "Hello there, again.", batch=True),  # the same utterance: it replaces it
    ]
    for transcript in given:
        store.transcript(transcript)
        await asyncio.sleep(0)  # the loop runs between them, as it does between the calls' results
    store.alert(
        Alert(
            alert_id="CA2-cancel", call_sid="CA2", rule="cancel", kind=SAID, speaker="caller", track="inbound",
            phrase="other call", text="Other call.", start=0.5, end=1.1, raised_at=T0,
        )
    )  # fmt: skip
    await idle(store)
    assert (len(counted), store.counters.written) == (2, 6)  # the start's transaction, then one for the rest
    assert [alert.alert_id for alert in await queries.get_alerts(store.engine, "CA2")] == ["CA2-cancel"]
    await store.stop(5)
    calls, utterances = await rows(migrated_url)
    assert [(call["call_sid"], call["stream_sid"]) for call in calls] == [("CA1", "MZCA1"), ("CA2", "MZCA2")]
    assert sorted((u["call_sid"], u["track"], u["text"], u["source"]) for u in utterances) == [
        ("CA1", "inbound", "Hello there, again.", "batch"),
        ("CA1", "outbound", "Hi, how can I help?", "live"),
        ("CA2", "inbound", "Other call.", "live"),
    ]


async def started_with_finals(store: TranscriptStore, call_sid: str, finals: int) -> None:
    """The store started, its call's start written, then `finals` finals given, which gather."""
    await store.start()
    store.call_started(started(call_sid))
    await eventually(lambda: store.counters.written == 1)
    for index in range(finals):
        store.transcript(result(call_sid, "inbound", index, f"Words {index}."))


async def test_gathered_writes_go_in_when_the_gather_ends_or_the_store_stops(migrated_url: str, tmp_path: Path) -> None:
    """Finals alone, nobody waiting: they are in the database once the gather is over. A stop does not wait for
    the gather: what was gathering goes to the database, not the journal."""
    settings = settings_for(migrated_url, tmp_path)
    brief = new_store(settings, gather_s=0.05)
    await started_with_finals(brief, "CA4", finals=3)
    await eventually(lambda: brief.counters.written == 4)
    await brief.stop(5)
    long = new_store(settings, gather_s=60)
    await started_with_finals(long, "CA5", finals=2)
    await asyncio.wait_for(long.stop(5), 10)
    assert (long.counters.written, long.counters.journaled) == (3, 0)
    _, utterances = await rows(migrated_url)
    assert [u["call_sid"] for u in utterances] == ["CA4"] * 3 + ["CA5"] * 2


async def test_a_calls_start_or_end_does_not_wait_for_the_gather(migrated_url: str, tmp_path: Path) -> None:
    """Only finals and alerts gather (for a minute here): a call's start is written at once, and its end takes the
    finals gathering before it along, with nobody waiting for them."""
    store = new_store(settings_for(migrated_url, tmp_path), gather_s=60)
    await store.start()
    store.call_started(started("CA6"))
    await eventually(lambda: store.counters.written == 1)
    store.transcript(result("CA6", "inbound", 0.5, "Gathering."))
    await asyncio.sleep(0)
    store.transcript(result("CA6", "inbound", 1.5, "Still gathering."))
    await asyncio.sleep(0)
    store.call_ended(ended("CA6"))
    await eventually(lambda: store.counters.written == 4)
    await store.stop(5)
    [call], utterances = await rows(migrated_url)
    assert (call["status"], [u["text"] for u in utterances]) == ("completed", ["Gathering.", "Still gathering."])


async def test_a_write_the_database_refuses_is_dropped_alone(postgres_url: str, tmp_path: Path) -> None:
    """A row PostgreSQL rejects (a track name longer than its column) is logged and dropped; its batch still lands."""
    store = new_store(settings_for(postgres_url, tmp_path))
    await store.start()
    store.call_started(started("CA3"))
    store.transcript(result("CA3", "inbound", 1.0, "Kept before."))
    store.transcript(dataclasses.replace(result("CA3", "inbound", 2.0, "Refused."), track="x" * 40))
    store.transcript(result("CA3", "outbound", 3.0, "Kept after."))
    await idle(store)
    await store.stop(5)
    _, utterances = await rows(postgres_url)
    assert [u["text"] for u in utterances] == ["Kept before.", "Kept after."]
    assert (store.counters.rejected, store.counters.written) == (1, 3)


async def test_a_stored_call_is_recorded_as_streamed_even_when_its_claim_went_unchecked(
    migrated_url: str, tmp_path: Path
) -> None:
    """A stream let in while the database did not answer has no claim row: its call_started records the call as
    streamed, so a first stream of it is refused from then on, after the call's deletion too."""
    store = new_store(settings_for(migrated_url, tmp_path))
    await store.start()
    store.call_started(started("CA1"))
    await idle(store)
    await store.stop(5)
    engine = create_engine(migrated_url)
    try:
        assert await queries.delete_call(engine, "CA1") is True
        claims = DatabaseStreamClaims(lambda: engine)
        outcome = await claims.claim(
            call_sid="CA1", stream_sid="MZ2", purpose="voice", track="inbound_track", first_stream=True
        )
    finally:
        await engine.dispose()
    assert outcome is ClaimOutcome.CALL_TAKEN


async def test_purge_deletes_old_calls_with_their_utterances_and_deliveries_only(
    migrated_url: str, tmp_path: Path
) -> None:
    """Calls started before RETENTION_DAYS go, with their utterances and webhook deliveries; newer ones stay whole."""
    now = T0 + datetime.timedelta(days=40)
    settings = settings_for(migrated_url, tmp_path, retention_days=30)
    # The store itself keeps no retention: its own purge, on the real clock, would race the one under test.
    store = new_store(settings_for(migrated_url, tmp_path))
    await store.start()
    store_call(store, "CAold", finals=2)  # started at T0: 40 days before `now`
    store.call_started(started("CAnew", at=now - datetime.timedelta(days=1)))
    store.transcript(result("CAnew", "inbound", 0.0, "Recent words."))
    await idle(store)
    await store.stop(5)
    await add_deliveries(migrated_url, ["CAold", "CAnew"], now)
    assert await purge(settings, now=now) == 1
    calls, utterances = await rows(migrated_url)
    assert [call["call_sid"] for call in calls] == ["CAnew"]
    assert [u["text"] for u in utterances] == ["Recent words."]
    assert await delivery_calls(migrated_url) == ["CAnew"]
    assert await purge(settings, now=now) == 0


async def test_start_purges_now_and_then_periodically_when_retention_is_set(
    migrated_url: str, tmp_path: Path, log_lines: LogLines
) -> None:
    """With RETENTION_DAYS set, the store purges at start and again each interval; old calls go without a command."""
    now = T0 + datetime.timedelta(days=10)
    settings = settings_for(migrated_url, tmp_path, retention_days=7)
    store = new_store(settings, clock=lambda: now, purge_interval_s=0.05)
    await store.start()
    store_call(store, "CAold", finals=1)
    await idle(store)
    await log_lines.wait_for("store.purged", calls=1)
    await store.stop(5)
    assert await rows(migrated_url) == ([], [])


def test_the_journal_cuts_off_a_line_a_crash_left_half_written(tmp_path: Path) -> None:
    """A torn last line is cut off at start-up, so the next append cannot run into it; complete lines all read back."""
    journal = Journal(tmp_path / "journal.jsonl")
    writes = [call_started_write(started(f"CA{index}")) for index in range(3)]
    journal.append(writes)
    with journal.path.open("ab") as file:
        file.write(encode(call_started_write(started("CAtorn")))[:25])
    assert journal.recover() == sum(len(encode(write)) for write in writes)
    journal.append([call_started_write(started("CA3"))])
    read, end, skipped = journal.read(0, 100)
    assert [write.call_sid for write in read] == ["CA0", "CA1", "CA2", "CA3"]
    assert (end, skipped) == (journal.size(), 0)


async def test_stopping_a_store_that_never_reached_the_database_journals_everything(tmp_path: Path) -> None:
    """No database at all (a directory that does not exist): stop() puts every write, in order, in the journal."""
    url = f"sqlite:///{tmp_path}/missing/dir/callscribe.sqlite3"
    store = new_store(settings_for(url, tmp_path))
    await store.start()
    store_call(store, "CA5", finals=3)
    await eventually(lambda: store.counters.failures >= 1)
    await store.stop(0.1)
    kinds = [decode(line + b"\n").kind for line in store.journal.path.read_bytes().splitlines()]
    assert kinds == ["call_started", "utterance", "utterance", "utterance", "call_ended"]
    assert store.counters.written == 0
    store.transcript(result("CA5", "inbound", 9.0, "After stop."))  # journaled straight away: nothing else would
    assert len(store.journal.path.read_bytes().splitlines()) == 6


async def add_deliveries(url: str, call_sids: list[str], now: datetime.datetime) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            for call_sid in call_sids:
                await connection.execute(
                    insert(WebhookDelivery).values(
                        event_id=f"{call_sid}/call.completed", event_type="call.completed", call_sid=call_sid,
                        payload={}, next_attempt_at=now, created_at=now,
                    )
                )  # fmt: skip
    finally:
        await engine.dispose()


async def delivery_calls(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(WebhookDelivery.call_sid).order_by(WebhookDelivery.call_sid))
            return [str(row[0]) for row in result]
    finally:
        await engine.dispose()


def test_every_kind_of_write_survives_a_journal_line_unchanged() -> None:
    """encode then decode gives back each kind of write exactly (datetimes, words, summary), on one line each."""
    writes = [
        call_started_write(started()),
        utterance_write(result("CA1", "outbound", 1.5, "Line\nbreak “quoted”."), speaker="agent", created_at=T0),
        call_ended_write(ended()),
    ]
    assert [decode(encode(write)) for write in writes] == writes
    assert all(encode(write).count(b"\n") == 1 for write in writes)


class _PostgresError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("secret text")
        self.sqlstate = sqlstate


def test_only_a_faulty_row_is_permanent_and_errors_are_described_by_type_alone() -> None:
    """Connection failures and the database's state wait for it; a row's own faults (SQLSTATE 22, 23) do not."""
    locked = OperationalError("INSERT secret", {"text": "secret"}, sqlite3.OperationalError("database is locked"))
    shut_down = DBAPIError("INSERT", {}, _PostgresError("57P01"))
    no_table = DBAPIError("INSERT", {}, _PostgresError("42P01"))
    too_long = DBAPIError("INSERT", {}, _PostgresError("22001"))
    duplicate = IntegrityError("INSERT", {}, sqlite3.IntegrityError("NOT NULL constraint failed"))
    outages = [locked, shut_down, no_table, ConnectionRefusedError(), TimeoutError()]
    assert [is_permanent(error) for error in outages] == [False] * len(outages)
    assert [is_permanent(error) for error in (too_long, duplicate, TypeError("not JSON"))] == [True] * 3
    assert describe(locked) == "OperationalError"
    locked.__cause__ = ConnectionResetError("secret")
    assert describe(locked) == "OperationalError <- ConnectionResetError"
    assert "secret" not in describe(shut_down)
