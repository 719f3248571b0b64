"""Alerts in the database, on SQLite and a real PostgreSQL: one row and one `call.alert` webhook per alert, however
often it is raised, read back by the API's queries, and deleted with its call (by the API and by retention)."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.alerts.matching import ABSENT, SAID, Alert, alert_id
from service.storage import queries
from service.storage.retention import purge
from service.storage.schema import AlertRow, WebhookDelivery, create_engine
from service.storage.webhook_events import alert_event
from service.storage.writes import alert_write, decode, encode
from tests.helpers.databases import database_url, migrated_url
from tests.storage.test_writer import T0, ended, idle, new_store, result, settings_for, started

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

RAISED = T0 + datetime.timedelta(seconds=3)
SAID_ALERT = Alert(
    alert_id=alert_id("CA1", "cancel", 1.5), call_sid="CA1", rule="cancel", kind=SAID, speaker="caller",
    track="inbound", phrase="cancel my account", text="cancel my account.", start=1.5, end=2.6, raised_at=RAISED,
)  # fmt: skip
ABSENT_ALERT = Alert(
    alert_id=alert_id("CA1", "disclosure", 0.0), call_sid="CA1", rule="disclosure", kind=ABSENT, speaker="agent",
    track="outbound", phrase="", text="", start=0.0, end=10.0, raised_at=RAISED,
)  # fmt: skip
ALERT_DATA = {
    "alert_id": SAID_ALERT.alert_id, "call_sid": "CA1", "rule": "cancel", "kind": "said", "speaker": "caller",
    "track": "inbound", "phrase": "cancel my account", "text": "cancel my account.", "start": 1.5, "end": 2.6,
    "raised_at": "2025-03-04T10:00:03+00:00",
}  # fmt: skip


async def stored(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The alert rows, and the payloads of the `call.alert` deliveries."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            alerts = (await connection.execute(select(AlertRow.__table__).order_by(AlertRow.start))).mappings().all()
            payloads = (
                await connection.execute(
                    select(WebhookDelivery.payload).where(WebhookDelivery.event_type == "call.alert")
                )
            ).scalars().all()  # fmt: skip
    finally:
        await engine.dispose()
    return [dict(row) for row in alerts], [dict(payload) for payload in payloads]


def webhook_settings(url: str, tmp_path: Path, **overrides: Any) -> Any:
    return settings_for(
        url, tmp_path, transcript_webhook_url="https://example.com/hook", webhook_secret="s" * 32, **overrides
    )


async def test_an_alert_is_one_row_and_one_signed_event_however_often_it_is_raised(
    migrated_url: str, tmp_path: Path
) -> None:
    """Raised twice here and once by another store (a second process): one row, one `call.alert` delivery, its
    data every field of the alert."""
    settings = webhook_settings(migrated_url, tmp_path)
    for _ in range(2):
        store = new_store(settings)
        await store.start()
        store.call_started(started())
        store.alert(SAID_ALERT)
        store.alert(SAID_ALERT)
        await idle(store)
        await store.stop(5)
    alerts, payloads = await stored(migrated_url)
    assert len(alerts) == 1
    row = alerts[0]
    assert {key: row[key] for key in ALERT_DATA if key != "raised_at"} == {
        key: value for key, value in ALERT_DATA.items() if key != "raised_at"
    }
    [payload] = payloads
    assert payload["id"] == f"call.alert:{SAID_ALERT.alert_id}"
    assert payload["type"] == "call.alert"
    assert payload["data"] == ALERT_DATA


async def test_an_alert_before_its_call_row_gets_a_stand_in_call(migrated_url: str, tmp_path: Path) -> None:
    """An alert written before call_started (the journal's order after an outage) still lands, on a call row."""
    store = new_store(settings_for(migrated_url, tmp_path))
    await store.start()
    store.alert(ABSENT_ALERT)
    store.call_started(started())
    await idle(store)
    await store.stop(5)
    engine = create_engine(migrated_url)
    try:
        assert [alert.rule for alert in await queries.get_alerts(engine, "CA1")] == ["disclosure"]
        call = await queries.get_call(engine, "CA1")
        assert call is not None
        assert (call.from_number, call.alert_count) == ("+14155550100", 1)
    finally:
        await engine.dispose()


async def test_the_queries_give_each_calls_alerts_and_their_count(migrated_url: str, tmp_path: Path) -> None:
    """get_alerts in timeline order; the listing's and the call's alert_count; a call without alerts counts 0."""
    store = new_store(settings_for(migrated_url, tmp_path))
    await store.start()
    for call_sid in ("CA1", "CA2"):
        store.call_started(started(call_sid, at=T0 + datetime.timedelta(seconds=int(call_sid[-1]))))
    store.alert(SAID_ALERT)
    store.alert(ABSENT_ALERT)
    await idle(store)
    await store.stop(5)
    engine = create_engine(migrated_url)
    try:
        alerts = await queries.get_alerts(engine, "CA1")
        assert [(alert.rule, alert.kind, alert.start) for alert in alerts] == [
            ("disclosure", "absent", 0.0), ("cancel", "said", 1.5),
        ]  # fmt: skip
        assert alerts[1] == queries.AlertRecord(
            alert_id=SAID_ALERT.alert_id, rule="cancel", kind="said", speaker="caller", track="inbound",
            phrase="cancel my account", text="cancel my account.", start=1.5, end=2.6, raised_at=RAISED,
        )  # fmt: skip
        page = await queries.list_calls(engine)
        assert [(call.call_sid, call.alert_count) for call in page.calls] == [("CA2", 0), ("CA1", 2)]
        assert await queries.get_alerts(engine, "CA2") == []
    finally:
        await engine.dispose()


async def test_deleting_a_call_deletes_its_alerts(migrated_url: str, tmp_path: Path) -> None:
    """DELETE /api/calls/{sid}'s query takes the call's alerts and their deliveries with it."""
    store = new_store(webhook_settings(migrated_url, tmp_path))
    await store.start()
    store.call_started(started())
    store.alert(SAID_ALERT)
    await idle(store)
    await store.stop(5)
    engine = create_engine(migrated_url)
    try:
        assert await queries.delete_call(engine, "CA1")
    finally:
        await engine.dispose()
    assert await stored(migrated_url) == ([], [])


async def test_retention_deletes_old_calls_alerts_only(migrated_url: str, tmp_path: Path) -> None:
    """RETENTION_DAYS takes an old call's alerts with it and leaves a recent call's."""
    now = T0 + datetime.timedelta(days=40)
    settings = settings_for(migrated_url, tmp_path, retention_days=30)
    # The store itself keeps no retention: its own purge, on the real clock, would race the one under test.
    store = new_store(settings_for(migrated_url, tmp_path))
    await store.start()
    store.call_started(started("CA1"))
    store.transcript(result("CA1", "inbound", 1.0, "cancel my account"))
    store.alert(SAID_ALERT)
    store.call_ended(ended("CA1"))
    store.call_started(started("CAnew", at=now - datetime.timedelta(days=1)))
    store.alert(dataclasses.replace(SAID_ALERT, call_sid="CAnew", alert_id=alert_id("CAnew", "cancel", 1.5)))
    await idle(store)
    await store.stop(5)
    assert await purge(settings, now=now) == 1
    alerts, _ = await stored(migrated_url)
    assert [alert["call_sid"] for alert in alerts] == ["CAnew"]


def test_an_alert_survives_a_journal_line_unchanged() -> None:
    """encode then decode gives the alert's write back exactly, its time included."""
    write = alert_write(SAID_ALERT)
    assert decode(encode(write)) == write
    assert write.call_sid == "CA1"


def test_the_webhook_carries_every_column_of_the_row() -> None:
    """`call.alert`'s data is the stored row, the time as ISO 8601: a column added reaches the webhook."""
    event = alert_event(alert_write(SAID_ALERT).row, T0)
    assert event == {"id": f"call.alert:{SAID_ALERT.alert_id}", "type": "call.alert",
                     "created_at": "2025-03-04T10:00:00+00:00", "data": ALERT_DATA}  # fmt: skip
