"""Storage layer: post-call analysis (ANALYSIS), on the job mechanism (`jobs.py`).

When a call is complete, the writer's transaction queues an `analysis` job keyed by the call and the version of
its transcript (`analysis_due`, then `enqueue_version` once per call of the batch): at the end of a call not
handed over (a handed-over stream's end is not the call's: the last stream's is, after stitching), and again when
batch adds utterances to an ended call. The same
version is never queued twice, so a call is analysed once per version of its transcript.

`AnalysisWorker`, a background task of every serving process, claims due jobs (one process per job, under a
lease), reads the call's final transcript, and asks the `TextAnalyst` (`stt/analysis.py`; Deepgram's `/v1/read`)
unless it cannot be analysed (`blocker`: off, not English, under 50 words), which is recorded with its reason.
A 429 or a 5xx is tried again with backoff; a 4xx is recorded. The outcome (the `analyses` row), the
`call.analyzed` event (with TRANSCRIPT_WEBHOOK_URL) and the job's end are one transaction: a process that
stops mid-analysis stores nothing, and the job's lease hands it to another.

Logs name an error's type and Deepgram's reason, never the transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, cast

import structlog
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.errors import SttError, SttRejected
from service.settings import Settings
from service.storage.job_policy import Decision, Done, Fail, Outcome, Policy, Retry, Skip
from service.storage.jobs import Claimed, Jobs, LostClaim, enqueue
from service.storage.outbox import add_event
from service.storage.schema import Analysis, Call, Utterance
from service.storage.statuses import AnalysisStatus, CallStatus, JobStatus
from service.storage.webhook_events import analysis_data, call_analyzed_event
from service.storage.writes import Write
from service.stt.analysis import Line, TextAnalysis, TextAnalyst, analysis_text, blocker, stored_fields, version
from service.times import Clock, as_utc, utc_now

log = structlog.get_logger("callscribe.analysis")

KIND = "analysis"
ALREADY = "this version of the transcript is analysed already"
ANALYSES: Table = cast(Table, Analysis.__table__)
CALLS: Table = cast(Table, Call.__table__)
UTTERANCES: Table = cast(Table, Utterance.__table__)
_FINAL = {JobStatus.DONE: AnalysisStatus.DONE, JobStatus.SKIPPED: AnalysisStatus.SKIPPED,
          JobStatus.FAILED: AnalysisStatus.FAILED}  # fmt: skip


def job_key(call_sid: str, transcript_version: str) -> str:
    return f"{call_sid}:{transcript_version}"


def owner_name() -> str:
    """This process, as its claims name it."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


async def read_lines(connection: AsyncConnection, call_sid: str) -> list[Line]:
    """The call's final transcript, in order."""
    rows = await connection.execute(
        select(UTTERANCES.c.key, UTTERANCES.c.speaker, UTTERANCES.c.track, UTTERANCES.c.start, UTTERANCES.c.text,
               UTTERANCES.c.languages)
        .where(UTTERANCES.c.call_sid == call_sid)
        .order_by(UTTERANCES.c.start, UTTERANCES.c.track, UTTERANCES.c.key)
    )  # fmt: skip
    return [Line(key, speaker, track, float(start), text, tuple(languages or ())) for key, speaker, track, start, text,
            languages in rows]  # fmt: skip


async def analysis_due(connection: AsyncConnection, write: Write) -> bool:
    """`write` makes its call's analysis due: the call is complete, or batch changed its transcript after it was."""
    if write.kind == "call_ended":
        return not write.row.get("handed_over")  # a handed-over stream moved on: the call's end is the last stream's
    if write.kind == "utterance" and write.row.get("source") == "batch":
        status = await connection.scalar(select(CALLS.c.status).where(CALLS.c.call_sid == write.call_sid))
        return status == CallStatus.COMPLETED  # else the call's end queues it
    return False


async def enqueue_version(connection: AsyncConnection, call_sid: str, now: datetime.datetime) -> None:
    """The job for the call's transcript as it stands in this transaction (nothing if that version has one)."""
    lines = await read_lines(connection, call_sid)
    await enqueue(connection, kind=KIND, key=job_key(call_sid, version(lines)), call_sid=call_sid, now=now)


async def stored_analysis(engine: AsyncEngine, call_sid: str) -> dict[str, Any] | None:
    """The call's analysis as data (`analysis_data`), or None when it has none."""
    async with engine.connect() as connection:
        row = (await connection.execute(select(ANALYSES).where(ANALYSES.c.call_sid == call_sid))).mappings().first()
    return analysis_data({**row, "analyzed_at": as_utc(row["analyzed_at"])}) if row is not None else None


async def summaries(engine: AsyncEngine, call_sids: Sequence[str]) -> dict[str, str]:
    """Each of the calls' summaries, where one was made."""
    if not call_sids:
        return {}
    query = select(ANALYSES.c.call_sid, ANALYSES.c.summary).where(
        ANALYSES.c.call_sid.in_(call_sids), ANALYSES.c.summary.is_not(None)
    )
    async with engine.connect() as connection:
        return {str(sid): str(summary) for sid, summary in await connection.execute(query)}


class AnalysisWorker:
    """Claims analysis jobs and runs them, until stopped; `analyze_now` runs one call's by hand."""

    def __init__(
        self,
        settings: Settings,
        engine: Callable[[], AsyncEngine],
        analyst: Callable[[], TextAnalyst],
        *,
        owner: str | None = None,
        policy: Policy | None = None,
        clock: Clock = utc_now,
        poll_s: float = 1.0,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._analyst = analyst
        self._clock = clock
        self._poll_s = poll_s
        self.jobs = Jobs(engine, kind=KIND, owner=owner or owner_name(), policy=policy, clock=clock)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False

    async def run_forever(self) -> None:
        self._started = True
        try:
            while not self._stopping.is_set():
                try:
                    await self.run_once()
                except Exception:
                    log.exception("analysis.pass_failed")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._stopping.wait()
        finally:
            self._stopped.set()

    async def stop(self, timeout_s: float) -> bool:
        """Claim nothing more and wait up to `timeout_s` for the job in flight; False if it is still going (then
        cancelled: it gives its claim back)."""
        self._stopping.set()
        if not self._started:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._stopped.wait()
        return self._stopped.is_set()

    async def run_once(self) -> int:
        """Every due job once; how many finished (done, skipped or failed)."""
        finished = 0
        while not self._stopping.is_set():
            claimed = await self.jobs.claim()
            if claimed is None:
                break
            try:
                decision = await self.run_job(claimed)
            except asyncio.CancelledError:
                await asyncio.shield(self._give_back(claimed))
                raise
            if decision is not None and decision.status != JobStatus.PENDING:
                finished += 1
        return finished

    async def _give_back(self, claimed: Claimed) -> None:
        try:
            await self.jobs.give_back(claimed)
        except Exception as exc:  # noqa: BLE001 - the lease then runs out as if this process had died
            log.warning("analysis.claim_kept", call_sid=claimed.call_sid, error=type(exc).__name__)
        else:
            log.info("analysis.claim_given_back", call_sid=claimed.call_sid, why="stopping")

    async def run_job(self, claimed: Claimed) -> Decision | None:
        """One attempt at a claimed job; its decision, or None when the claim had passed to another process."""
        call_sid = claimed.call_sid
        lines, outcome, answer = await self._attempt(call_sid)
        try:
            async with self._engine().begin() as connection:
                decision = await self.jobs.finish(connection, claimed, outcome)
                if decision.status != JobStatus.PENDING:
                    await self._store(connection, call_sid, lines, decision, answer)
        except LostClaim:
            log.warning("analysis.claim_lost", call_sid=call_sid, why="the lease ran out; another process has the job")
            return None
        self._log(call_sid, claimed.attempts, decision)
        return decision

    async def analyze_now(self, call_sid: str) -> dict[str, Any] | None:
        """By hand (`calls analyze`): the call's transcript analysed now, whatever was done before, stored and
        reported like a job's; the stored analysis, or None when there is no such call. A failure that may pass
        is not stored: its reason is."""
        async with self._engine().connect() as connection:
            if await connection.scalar(select(CALLS.c.call_sid).where(CALLS.c.call_sid == call_sid)) is None:
                return None
        lines, outcome, answer = await self._attempt(call_sid, again=True)
        if isinstance(outcome, Retry):
            return {"status": "retry", "reason": outcome.error}
        status = {Done: JobStatus.DONE, Skip: JobStatus.SKIPPED, Fail: JobStatus.FAILED}[type(outcome)]
        reason = outcome.reason if isinstance(outcome, Skip) else outcome.error if isinstance(outcome, Fail) else None
        async with self._engine().begin() as connection:
            await self._store(connection, call_sid, lines, Decision(status, reason, None), answer)
        return await stored_analysis(self._engine(), call_sid)

    async def _attempt(self, call_sid: str, *, again: bool = False) -> tuple[list[Line], Outcome, TextAnalysis | None]:
        async with self._engine().connect() as connection:
            status = await connection.scalar(select(CALLS.c.status).where(CALLS.c.call_sid == call_sid))
            lines = await read_lines(connection, call_sid)
            done = await connection.scalar(
                select(ANALYSES.c.version).where(
                    ANALYSES.c.call_sid == call_sid, ANALYSES.c.status == AnalysisStatus.DONE
                )
            )
        if status is None:
            return lines, Skip("the call is gone (deleted, or past RETENTION_DAYS)"), None
        if not again and done == version(lines):
            return lines, Skip(ALREADY), None
        why = blocker(lines, self._settings.analysis, default_language=self._settings.deepgram_language)
        if why is not None:
            return lines, Skip(why), None
        outcome, answer = await self._ask(lines)
        return lines, outcome, answer

    async def _ask(self, lines: list[Line]) -> tuple[Outcome, TextAnalysis | None]:
        try:
            answer = await self._analyst().analyze(analysis_text(lines), self._settings.analysis)
        except SttRejected as exc:
            return Fail(exc.reason), None
        except SttError as exc:  # SttUnavailable: it may pass
            return Retry(exc.reason), None
        return Done(), answer

    async def _store(
        self,
        connection: AsyncConnection,
        call_sid: str,
        lines: list[Line],
        decision: Decision,
        answer: TextAnalysis | None,
    ) -> None:
        if decision.reason == ALREADY:
            return  # nothing new: the stored analysis stands, and was reported
        now = as_utc(self._clock())
        row: dict[str, Any] = {
            "call_sid": call_sid, "version": version(lines), "status": _FINAL[decision.status],
            "reason": decision.reason, "features": list(self._settings.analysis),
            "words": sum(line.words for line in lines), "summary": None, "topics": [], "intents": [], "sentiment": {},
            "request_id": None, "analyzed_at": now,
        }  # fmt: skip
        if answer is not None:
            row.update(stored_fields(answer, lines))
        if await connection.scalar(select(CALLS.c.call_sid).where(CALLS.c.call_sid == call_sid)) is None:
            return  # deleted meanwhile: nothing to attach the analysis to
        insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(ANALYSES)
        updated = {name: value for name, value in row.items() if name != "call_sid"}
        await connection.execute(insert.values(**row).on_conflict_do_update(index_elements=["call_sid"], set_=updated))
        if self._settings.transcript_webhook_url is not None:
            await add_event(connection, call_analyzed_event(row, now), now)

    def _log(self, call_sid: str, attempts: int, decision: Decision) -> None:
        if decision.status == JobStatus.DONE:
            log.info("analysis.done", call_sid=call_sid, attempts=attempts)
        elif decision.status == JobStatus.PENDING:
            log.warning("analysis.retrying", call_sid=call_sid, attempts=attempts, error=decision.reason,
                        retry_in_s=round(decision.retry_in_s or 0.0, 1))  # fmt: skip
        elif decision.status == JobStatus.SKIPPED:
            log.info("analysis.skipped", call_sid=call_sid, reason=decision.reason)
        else:
            log.error("analysis.failed", call_sid=call_sid, attempts=attempts, reason=decision.reason)
