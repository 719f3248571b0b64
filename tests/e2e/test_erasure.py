"""End to end on PostgreSQL with the spool's audio in S3 (moto's server), as on Heroku: calls to and from one number
through the real service (the simulator, the real SDK against the fake Deepgram), one of them waiting in the shared
spool for batch, and a call of another number; `DELETE /api/numbers/{number}` erases the number's, and nothing of
it is found afterwards by any API (list, search, call, transcript in every format, report), in any table of the
database, in the live feed's buffer or in the bucket; the other call is whole; `calls erase` then answers zeros;
the audit log has both requests with the number's last two digits only. And with two processes on one Redis
Stream, a call deleted through one leaves the stream and both processes' replay buffers."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from service.cli import calls as calls_cli
from service.live.redis_stream import FORGET
from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from service.storage.schema import create_engine
from tests.helpers.audio import call_audio
from tests.helpers.credentials import DEEPGRAM_KEY, TWILIO_TOKEN
from tests.helpers.databases import postgres_url
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.redis import redis_server_url, stream_key
from tests.helpers.s3 import S3Server, s3_server, s3_settings
from tests.helpers.service import make_settings, running_service
from tests.helpers.stored import every_value
from tests.helpers.waiting import eventually

__all__ = ["postgres_url", "s3_server"]  # fixtures

API_TOKEN = "api-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
NUMBER = "+14155550167"
DIGITS = NUMBER.removeprefix("+")
OTHER = "+14155550123"


async def stored(client: httpx.AsyncClient, url: str, call_sid: str) -> dict[str, Any] | None:
    """The call once it has ended and its coverage is counted."""
    response = await client.get(f"{url}/api/calls/{call_sid}", headers=AUTH)
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 and body["coverage"] is not None else None


async def everything_the_api_says(client: httpx.AsyncClient, url: str, calls: list[str], words: list[str]) -> str:
    """Every answer the API gives about the calls, their number and their words, as one text."""
    answers = [
        await client.get(f"{url}/api/calls", headers=AUTH),
        await client.get(f"{url}/api/calls", params={"number": NUMBER}, headers=AUTH),
        *[await client.get(f"{url}/api/calls", params={"q": word}, headers=AUTH) for word in words],
    ]
    for call_sid in calls:
        answers.append(await client.get(f"{url}/api/calls/{call_sid}", headers=AUTH))
        answers.append(await client.get(f"{url}/api/calls/{call_sid}/report", headers=AUTH))
        for fmt in ("json", "text", "srt", "vtt"):
            answers.append(await client.get(f"{url}/api/calls/{call_sid}/transcript?format={fmt}", headers=AUTH))
    return "\n".join(f"{answer.status_code} {answer.text}" for answer in answers)


async def calls_erase(*options: str) -> int:
    """`python -m service calls erase ...` in a thread of its own (its own event loop, as from another shell)."""
    parser = argparse.ArgumentParser()
    calls_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["calls", "erase", *options])
    code: int = await asyncio.to_thread(args.handler, args)
    return code


async def test_erasing_a_number_leaves_nothing_of_it_anywhere(
    deepgram: FakeDeepgram,
    *,
    postgres_url: str,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    log_lines: LogLines,  # reset afterwards: `calls erase` points the logs at the captured stderr
) -> None:
    bucket = s3_server.new_bucket()
    s3 = {name.lower(): value for name, value in s3_settings(s3_server, bucket).items()}
    from_number = CallSpec(inbound=call_audio(601, 2.0), outbound=call_audio(602, 1.0), from_number=NUMBER, speed=0)
    to_number = CallSpec(inbound=call_audio(603, 2.0), to_number=NUMBER, speed=0)  # Deepgram refuses it: spooled
    other = CallSpec(inbound=call_audio(604, 2.0), from_number=OTHER, speed=0)
    erased_words = [*expected_words(call_audio(601, 2.0)), *expected_words(call_audio(602, 1.0))]
    kept_words = expected_words(call_audio(604, 2.0))
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as batch:
        batch.fail_status = 503  # the spooled call waits in S3 for batch
        settings = make_settings(
            deepgram, database_url=postgres_url, api_token=API_TOKEN, spool_dir=tmp_path / "spool",
            db_journal_path=tmp_path / "journal.jsonl", deepgram_batch_url=batch.url, spool_retry_s=0.3,
            stream_track="both_tracks", transcript_webhook_url="http://127.0.0.1:9/hooks",
            webhook_secret="w" * 32, **s3,
        )  # fmt: skip
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            for spec in (from_number, other):
                await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
                await eventually(lambda spec=spec: stored(client, service.url, spec.call_sid), timeout=20)
            deepgram.faults.reject_status = 401
            await simulate_call(service.url, to_number, auth_token=TWILIO_TOKEN)
            await eventually(lambda: stored(client, service.url, to_number.call_sid), timeout=20)
            await eventually(lambda: len(s3_server.keys(bucket)) == 2 and batch.request_count >= 1, timeout=20)
            ours = [from_number.call_sid, to_number.call_sid]
            live_before = [event.call_sid for event in service.service.live.buffer.after((0, 0)).events]
            assert from_number.call_sid in live_before  # the feed's buffer holds the call's events
            before = await everything_the_api_says(client, service.url, ours, erased_words)
            assert erased_words[0] in before  # the positive control: the API finds them while they are there
            engine = create_engine(postgres_url)
            try:
                assert DIGITS in await every_value(engine)

                response = await client.delete(f"{service.url}/api/numbers/%2B{DIGITS}?by=dpo", headers=AUTH)
                assert response.status_code == 200
                answer = response.json()
                after_api = await everything_the_api_says(client, service.url, ours, erased_words)
                live = [event.call_sid for event in service.service.live.buffer.after((0, 0)).events]
                after_db = await every_value(engine)
            finally:
                await engine.dispose()
            other_call = await client.get(f"{service.url}/api/calls/{other.call_sid}", headers=AUTH)
            other_words = (await client.get(f"{service.url}/api/calls/{other.call_sid}/transcript?format=text",
                                            headers=AUTH)).text  # fmt: skip

        counts = answer["counts"]
        assert answer["subject"] == "+*********67"
        assert answer["in_progress"] == []
        assert counts["calls"] == 2
        assert counts["utterances"] >= 2  # the finals of both tracks of the call from the number
        assert counts["spool_segments"] == counts["spool_objects"] == 2  # a segment per track
        assert counts["spool_chunks"] == 0  # the audio was in S3, not in the database
        assert counts["webhook_deliveries"] > 0
        assert counts["coverage"] > 0
        assert counts["streams"] == 2
        assert counts["live_events"] > 0
        for trace in (DIGITS, *erased_words, *(f"{sid}/" for sid in ours)):
            assert trace not in after_api
            assert trace not in after_db
        assert all(call_sid not in live for call_sid in ours)
        assert s3_server.keys(bucket) == []
        assert other_call.status_code == 200
        assert other_call.json()["from_number"] == OTHER
        assert all(word in other_words for word in kept_words)
        assert all(word in after_db for word in kept_words)

        for name, value in {**s3_settings(s3_server, bucket), "DATABASE_URL": postgres_url,
                            "SPOOL_DIR": str(tmp_path / "spool")}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        dry_run = await calls_erase("--number", NUMBER)
        assert dry_run == 1
        assert "would erase 0 calls" in capsys.readouterr().err
        again = await calls_erase("--number", NUMBER, "--yes", "--by", "dpo")
        assert again == 0
        printed = capsys.readouterr()
        repeated = json.loads(printed.out)  # the answer alone on stdout; the audit line on stderr
        assert set(repeated["counts"].values()) == {0}
        assert "audit" in printed.err
        assert "via=cli" in printed.err or '"via": "cli"' in printed.err

    engine = create_engine(postgres_url)
    try:
        after_all = await every_value(engine)
    finally:
        await engine.dispose()
    assert DIGITS not in after_all
    assert after_all.count("+*********67") == 2  # the two audit entries' subjects


@pytest.mark.parametrize(("number", "why"), [("+1 415", "digits with an optional leading +"), ("+12", "has 2 digits")])
async def test_calls_erase_refuses_a_number_it_cannot_go_by(number: str, why: str, capsys: Any) -> None:
    code = await calls_erase("--number", number, "--yes")
    assert code == 2
    assert why in capsys.readouterr().err


async def test_a_call_deleted_on_one_process_leaves_every_process_feed_and_the_stream(
    deepgram: FakeDeepgram, tmp_path: Path
) -> None:
    """Two processes share a Redis Stream (and a database): a call handled by B, deleted through A's API, leaves the
    stream (no entry of it), A's replay buffer at once and B's through the control entry; the audit has it."""
    key = stream_key()
    common = {
        "redis_url": redis_server_url(), "live_redis_stream": key, "api_token": API_TOKEN,
        "database_url": f"sqlite:///{tmp_path / 'shared.sqlite3'}", "db_journal_path": tmp_path / "journal.jsonl",
    }  # fmt: skip
    spec = CallSpec(inbound=call_audio(611, 2.0), from_number=NUMBER, speed=0)
    client = Redis.from_url(redis_server_url())

    def calls_in(service: Any) -> set[str]:
        return {event.call_sid for event in service.service.live.buffer.after((0, 0)).events}

    try:
        async with (
            running_service(make_settings(deepgram, spool_dir=tmp_path / "a", **common)) as a,
            running_service(make_settings(deepgram, spool_dir=tmp_path / "b", **common)) as b,
            httpx.AsyncClient() as http,
        ):
            await simulate_call(b.url, spec, auth_token=TWILIO_TOKEN)
            await eventually(lambda: stored(http, a.url, spec.call_sid), timeout=20)
            await eventually(lambda: spec.call_sid in calls_in(a) and spec.call_sid in calls_in(b))
            deleted = await http.delete(f"{a.url}/api/calls/{spec.call_sid}?by=dpo", headers=AUTH)
            assert deleted.status_code == 204
            assert spec.call_sid not in calls_in(a)  # this process's at once
            await eventually(lambda: spec.call_sid not in calls_in(b), timeout=10)  # the other's through Redis
            entries = [fields for _, fields in await client.xrange(key)]
            assert [fields for fields in entries if fields[b"c"] == spec.call_sid.encode()] == []
            assert [json.loads(fields[b"d"]) for fields in entries if fields[b"k"] == FORGET] == [[spec.call_sid]]
            audit = (await http.get(f"{b.url}/api/audit", headers=AUTH)).json()["entries"]
            assert [(e["action"], e["actor"], e["subject"]) for e in audit] == [("delete_call", "dpo", spec.call_sid)]
            assert audit[0]["detail"]["redis_entries"] > 0
    finally:
        await client.delete(key)
        await client.aclose()
