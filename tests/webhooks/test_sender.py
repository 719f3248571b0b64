"""Webhook delivery: signed, retried with backoff from the database outbox, each event accepted exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.settings import Settings
from service.storage.schema import Base, WebhookDelivery, create_engine
from service.storage.webhook_events import call_completed_event, utterance_event
from service.webhooks.sender import MAX_ATTEMPTS, WebhookSender
from service.webhooks.signing import sign, verify
from tests.helpers.service import make_settings
from tests.helpers.webhooks import SECRET, T0, Clock, Receiver, serving


async def outbox(path: Path, events: list[dict[str, Any]], clock: Clock) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
        for event in events:
            await connection.execute(
                WebhookDelivery.__table__.insert().values(
                    event_id=event["id"], event_type=event["type"], call_sid=event["data"]["call_sid"],
                    payload=event, status="pending", attempts=0, next_attempt_at=clock(), created_at=clock(),
                )
            )  # fmt: skip
    return engine


def events(count: int) -> list[dict[str, Any]]:
    """`count` utterances and the call's end, from rows shaped as stored (the receiver checks their schemas)."""
    utterances = [
        {"key": f"CA1/MZ1/inbound/{n * 1000}", "call_sid": "CA1", "stream_sid": "MZ1", "track": "inbound",
         "speaker": "caller", "start": float(n), "end": n + 0.9, "text": f"word {n}", "confidence": 0.9,
         "source": "live", "languages": []}
        for n in range(count)
    ]  # fmt: skip
    call = {"call_sid": "CA1", "from_number": "+15005550006", "started_at": T0, "ended_at": T0, "ended_by": "stop"}
    return [*(utterance_event(u, T0) for u in utterances), call_completed_event(call, utterances, T0)]


def test_signatures_verify_and_refuse_tampering_and_replays() -> None:
    """A receiver accepts the genuine signature and refuses a changed body, another secret, or an old timestamp."""
    body = b'{"id":"e1"}'
    now = 1_800_000_000
    good = sign(SECRET, now, body)
    assert verify(SECRET, timestamp=str(now), body=body, signature=good, now=now) is None
    assert verify(SECRET, timestamp=str(now), body=body + b" ", signature=good, now=now) == "signature does not match"
    assert verify("other", timestamp=str(now), body=body, signature=good, now=now) == "signature does not match"
    assert "replay" in (verify(SECRET, timestamp=str(now), body=body, signature=good, now=now + 301) or "")
    assert verify(SECRET, timestamp=str(now), body=body, signature=f"v1=00, {good}", now=now) is None


async def test_every_event_is_accepted_once_despite_failures(tmp_path: Path) -> None:
    """A receiver that fails the first five requests still gets each event exactly once, signed, after retries."""
    clock = Clock()
    receiver = Receiver(clock, failures=5)
    sent = events(4)
    engine = await outbox(tmp_path / "db.sqlite3", sent, clock)
    async with serving(receiver) as url, httpx.AsyncClient() as client:
        settings = make_settings(None, transcript_webhook_url=url, webhook_secret=SECRET)
        sender = WebhookSender(settings, lambda: engine, clock=clock, rng=random.Random(1))
        for _ in range(10):
            await sender.run_once(client)
            clock.now += datetime.timedelta(minutes=15)  # past any backoff
    assert receiver.refused == []
    assert sorted(e["id"] for e in receiver.accepted) == sorted(e["id"] for e in sent)
    assert receiver.requests == len(sent) + 5
    async with engine.connect() as connection:
        rows = (await connection.execute(WebhookDelivery.__table__.select())).mappings().all()
    assert {row["status"] for row in rows} == {"delivered"}
    assert sum(row["attempts"] for row in rows) == len(sent) + 5
    await engine.dispose()


async def test_a_failed_attempt_waits_its_backoff_and_survives_a_restart(tmp_path: Path) -> None:
    """After a failure the event is not retried before its time; a new sender (a restart) delivers it then."""
    clock = Clock()
    receiver = Receiver(clock, failures=1)
    engine = await outbox(tmp_path / "db.sqlite3", events(0), clock)
    async with serving(receiver) as url, httpx.AsyncClient() as client:
        settings = make_settings(None, transcript_webhook_url=url, webhook_secret=SECRET)
        assert await WebhookSender(settings, lambda: engine, clock=clock).run_once(client) == 0
        assert await WebhookSender(settings, lambda: engine, clock=clock).run_once(client) == 0
        assert receiver.requests == 1  # not due yet
        clock.now += datetime.timedelta(minutes=15)
        assert await WebhookSender(settings, lambda: engine, clock=clock).run_once(client) == 1
    assert [e["type"] for e in receiver.accepted] == ["call.completed"]
    assert receiver.accepted[0]["data"]["transcript"] == []
    await engine.dispose()


async def test_two_senders_never_deliver_the_same_event_twice(tmp_path: Path) -> None:
    """Two processes' senders on one outbox: each event is claimed by one of them only."""
    clock = Clock()
    receiver = Receiver(clock)
    sent = events(20)
    engine = await outbox(tmp_path / "db.sqlite3", sent, clock)
    async with serving(receiver) as url, httpx.AsyncClient() as client:
        settings = make_settings(None, transcript_webhook_url=url, webhook_secret=SECRET)
        first, second = (WebhookSender(settings, lambda: engine, clock=clock) for _ in range(2))
        counts = await asyncio.gather(first.run_once(client), second.run_once(client))
    assert sum(counts) == len(sent)
    assert sorted(e["id"] for e in receiver.accepted) == sorted(e["id"] for e in sent)
    await engine.dispose()


async def pending_rows(engine: Any) -> dict[str, datetime.datetime]:
    """Each pending event's next attempt (SQLite gives the times back without their zone)."""
    async with engine.connect() as connection:
        rows = (await connection.execute(WebhookDelivery.__table__.select())).mappings().all()
    pending = (row for row in rows if row["status"] == "pending")
    return {row["event_id"]: row["next_attempt_at"].replace(tzinfo=datetime.UTC) for row in pending}


@dataclass
class MidDelivery:
    """A sender running on two due events, the receiver holding its first request until `answer` is set."""

    clock: Clock
    answer: asyncio.Event
    receiver: Receiver
    sent: list[dict[str, Any]]
    engine: Any
    settings: Settings
    sender: WebhookSender
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def mid_delivery(tmp_path: Path) -> AsyncIterator[MidDelivery]:
    clock, answer = Clock(), asyncio.Event()
    receiver = Receiver(clock, answer_when=answer)
    sent = events(2)
    engine = await outbox(tmp_path / "db.sqlite3", sent, clock)
    try:
        async with serving(receiver) as url:
            settings = make_settings(None, transcript_webhook_url=url, webhook_secret=SECRET)
            sender = WebhookSender(settings, lambda: engine, clock=clock)
            task = asyncio.create_task(sender.run_forever())
            await receiver.holding.wait()
            yield MidDelivery(clock, answer, receiver, sent, engine, settings, sender, task)
            answer.set()  # a request still held is answered before the server stops
    finally:
        await engine.dispose()


async def test_a_sender_stopped_mid_delivery_gives_its_claim_back(tmp_path: Path) -> None:
    """Cancelled while the receiver has not answered (a shutdown's last word): the event is due again at once, so
    another process delivers it now, not after the claim's lease and after the events that followed it."""
    async with mid_delivery(tmp_path) as held:
        held.task.cancel()
        await asyncio.gather(held.task, return_exceptions=True)
        assert await pending_rows(held.engine) == {event["id"]: T0 for event in held.sent}  # the first one's too
        held.answer.set()
        async with httpx.AsyncClient() as client:
            other = WebhookSender(held.settings, lambda: held.engine, clock=held.clock)
            assert await other.run_once(client) == len(held.sent)
    assert sorted(event["id"] for event in held.receiver.accepted) == sorted(event["id"] for event in held.sent)


async def test_a_stopping_sender_finishes_the_delivery_in_flight_and_claims_no_more(tmp_path: Path) -> None:
    """stop(): the event being sent is delivered and recorded; the rest stay due for the next process."""
    async with mid_delivery(tmp_path) as held:
        stopped = asyncio.create_task(held.sender.stop(timeout_s=10.0))
        await asyncio.sleep(0)  # stop() has begun: from now on no row is claimed
        held.answer.set()
        assert await stopped
        assert held.task.done()
        await held.task
        assert held.receiver.requests == 1
        [delivered] = held.receiver.accepted
        remaining = {event["id"]: T0 for event in held.sent if event["id"] != delivered["id"]}
        assert await pending_rows(held.engine) == remaining


async def test_a_receiver_that_never_accepts_is_given_up_on(tmp_path: Path) -> None:
    """After MAX_ATTEMPTS failures the event is marked failed, with the receiver's last answer."""
    clock = Clock()
    receiver = Receiver(clock, failures=10_000)
    engine = await outbox(tmp_path / "db.sqlite3", events(0), clock)
    async with serving(receiver) as url, httpx.AsyncClient() as client:
        settings = make_settings(None, transcript_webhook_url=url, webhook_secret=SECRET)
        sender = WebhookSender(settings, lambda: engine, clock=clock)
        for _ in range(MAX_ATTEMPTS + 3):
            await sender.run_once(client)
            clock.now += datetime.timedelta(hours=1)
    assert receiver.requests == MAX_ATTEMPTS
    async with engine.connect() as connection:
        [row] = (await connection.execute(WebhookDelivery.__table__.select())).mappings().all()
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", MAX_ATTEMPTS, "HTTP 503")
    await engine.dispose()


async def test_stopping_a_sender_that_never_ran_does_not_wait() -> None:
    """A start-up that failed before the workers started: shutdown's stop returns at once, not after its timeout."""
    settings = make_settings(None, transcript_webhook_url="http://127.0.0.1:9/hook", webhook_secret=SECRET)
    sender = WebhookSender(settings, lambda: create_engine("sqlite+aiosqlite://"))
    async with asyncio.timeout(1.0):
        assert await sender.stop(timeout_s=30.0)
