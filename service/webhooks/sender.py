"""I/O adapter: deliver transcript events to TRANSCRIPT_WEBHOOK_URL from the database's outbox.

Events are rows of `webhook_deliveries`, written in the same transaction as the utterance or call they
describe (see `storage/writer.py`), so an event exists exactly when its data does, and survives restarts. This
sender POSTs each due row, signed (`signing.py`), and records the outcome: delivered, or retried
later with full-jitter backoff, or given up after MAX_ATTEMPTS. It runs beside the calls and never slows
them: a slow or failing receiver only delays its own deliveries.

Several processes may run a sender against one database: a row is claimed by moving its
`next_attempt_at` forward in a conditional UPDATE, which only one of them can win. A process that stops
finishes the delivery in flight, or gives its claim back: otherwise the event would wait out the lease, and
reach the receiver after the events that followed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.metrics import WEBHOOK_DELIVERIES, WEBHOOK_FAILURES
from service.retry import backoff
from service.settings import Settings
from service.storage.schema import WebhookDelivery
from service.storage.statuses import DeliveryStatus
from service.times import Clock, utc_now
from service.webhooks.signing import EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

log = structlog.get_logger("callscribe.webhooks")

MAX_ATTEMPTS = 15  # with the 10-minute cap, about two hours of trying
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 600.0
CLAIM_LEASE_S = 60.0  # a claimed row stays out of other senders' way this long, even if this one dies
REQUEST_TIMEOUT_S = 10.0
BATCH = 50


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery whose time has come, as read for one attempt."""

    event_id: str
    call_sid: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime.datetime


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        engine: Callable[[], AsyncEngine],
        *,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        poll_s: float = 1.0,
    ) -> None:
        assert settings.transcript_webhook_url is not None
        self._url = settings.transcript_webhook_url
        self._secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self._engine = engine
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._poll_s = poll_s
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False

    async def run_forever(self) -> None:
        self._started = True
        try:
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as client:
                while not self._stopping.is_set():
                    try:
                        await self.run_once(client)
                    except Exception:
                        log.exception("webhooks.pass_failed")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_s):
                            await self._stopping.wait()
        finally:
            self._stopped.set()

    async def stop(self, timeout_s: float) -> bool:
        """Claim nothing more and wait up to `timeout_s` for the delivery in flight; False if it is still going.

        A sender still going is then cancelled (shutdown cancels its task), and gives its claim back.
        """
        self._stopping.set()
        if not self._started:  # a start-up that failed before the workers started: nothing to wait for
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._stopped.wait()
        return self._stopped.is_set()

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """Deliver every due event once; returns how many the receiver accepted."""
        accepted = 0
        for row in await self._due():
            if self._stopping.is_set():
                break
            lease_until = self._clock() + datetime.timedelta(seconds=CLAIM_LEASE_S)
            try:
                if await self._claim(row, lease_until) and await self._deliver(client, row):
                    accepted += 1
            except asyncio.CancelledError:
                # Cut short anywhere from the claim on; giving back a claim never made changes nothing.
                await asyncio.shield(self._give_back(row, lease_until))
                raise
        return accepted

    async def _due(self) -> list[Due]:
        table = WebhookDelivery.__table__
        query = (
            select(table.c.event_id, table.c.call_sid, table.c.payload, table.c.attempts, table.c.next_attempt_at)
            .where(table.c.status == DeliveryStatus.PENDING, table.c.next_attempt_at <= self._clock())
            .order_by(table.c.created_at, table.c.event_id)
            .limit(BATCH)
        )
        async with self._engine().connect() as connection:
            return [Due(*row) for row in await connection.execute(query)]

    async def _claim(self, row: Due, lease_until: datetime.datetime) -> bool:
        """True if this sender won the row (until `lease_until`), False if another one did."""
        return await self._update(row, {"next_attempt_at": lease_until}, expected_next=row.next_attempt_at)

    async def _give_back(self, row: Due, lease_until: datetime.datetime) -> None:
        """A delivery cut short: the row is due again at once, for whichever sender looks next.

        If the receiver did accept it, it gets it again: the event id lets it drop the repeat.
        """
        try:
            given_back = await self._update(row, {"next_attempt_at": row.next_attempt_at}, expected_next=lease_until)
        except Exception as exc:  # noqa: BLE001 - the lease then runs out as if this process had died
            log.warning(
                "webhooks.claim_kept", event_id=row.event_id, call_sid=row.call_sid, error=type(exc).__name__,
                why="stopping mid-delivery and the database did not answer", retry_in_s=CLAIM_LEASE_S,
            )  # fmt: skip
            return
        if given_back:
            log.info("webhooks.claim_given_back", event_id=row.event_id, call_sid=row.call_sid, why="stopping")

    async def _deliver(self, client: httpx.AsyncClient, row: Due) -> bool:
        body = encode(row.payload)
        timestamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            EVENT_HEADER: row.event_id,
        }
        try:
            response = await client.post(self._url, content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}"
        attempts = row.attempts + 1
        if error is None:
            WEBHOOK_DELIVERIES.inc()
            await self._update(
                row, {"status": DeliveryStatus.DELIVERED, "attempts": attempts, "delivered_at": self._clock()}
            )
            log.debug("webhooks.delivered", event_id=row.event_id, call_sid=row.call_sid, attempts=attempts)
            return True
        gave_up = attempts >= MAX_ATTEMPTS
        WEBHOOK_FAILURES.labels(outcome="gave_up" if gave_up else "retrying").inc()
        delay = backoff(attempts, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S, rng=self._rng)
        await self._update(
            row,
            {
                "status": DeliveryStatus.FAILED if gave_up else DeliveryStatus.PENDING,
                "attempts": attempts,
                "last_error": error,
                "next_attempt_at": self._clock() + datetime.timedelta(seconds=delay),
            },
        )
        log.warning(
            "webhooks.failed" if gave_up else "webhooks.retrying",
            event_id=row.event_id,
            call_sid=row.call_sid,
            error=error,
            attempts=attempts,
            retry_in_s=None if gave_up else round(delay, 1),
        )
        return False

    async def _update(
        self, row: Due, values: dict[str, Any], *, expected_next: datetime.datetime | None = None
    ) -> bool:
        statement = update(WebhookDelivery).where(WebhookDelivery.event_id == row.event_id).values(**values)
        if expected_next is not None:
            statement = statement.where(
                WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at == expected_next
            )
        async with self._engine().begin() as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount)
