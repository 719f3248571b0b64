"""The batch worker (layer: spool, policy): spooled audio through Deepgram's pre-recorded API, delivered like
live transcripts.

`transcribe` reads one spool entry's WAV, has a batch engine transcribe it (the seam's `BatchEngine`: Deepgram's
pre-recorded API, built by the wiring and handed in as `BatchEngines`), and `place`s the answer on the call's
timeline as final `Transcript`s, marked `batch`, with the track's speaker. With DEEPGRAM_FALLBACK_URL it asks the
primary's pre-recorded API and then the fallback's, in the order live calls use (the fallback first while the
primary is down). `BatchWorker` owns the
policy: oldest entry first, deliver every transcript, and only then remove the entry; a failure is written into
the entry's sidecar and retried on the next pass (every SPOOL_RETRY_S). Each entry delivered is reported to
`outcomes` (the app's observers: the call's coverage moves the entry's seconds from waiting to batch).

Delivery is at least once. Emitting an entry's transcripts and removing it run with no `await` in between, so
nothing in this process can come between them; only a crash of the process in that window (a few synchronous
log writes and two unlinks) can deliver an entry again after a restart. Each batch transcript has a stable key,
`batch_key(entry, index)`, bound into its own log line (`batch_key`) and listed in the entry's `batch.delivered`
line, so a consumer can drop such a repeat.

With a `SharedSpool` (the database's, `storage/spool_segments.py`, when DATABASE_URL is PostgreSQL), each pass
first puts every complete local entry there and removes it from the disk, then claims shared segments one at a
time, so that exactly one process transcribes each, whichever process spooled it; a claim whose process died is
taken again once its lease runs out. What the shared spool cannot take (its bound, an outage) stays on the disk
and is transcribed here as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from service.calls.coverage import Outcome
from service.calls.transcript import Transcript, TranscriptSink, speaker_for
from service.errors import SttError
from service.settings import Settings
from service.spool.directory import Spool, SpoolEntry
from service.stt.engine import FALLBACK, PRIMARY, BatchEngine, said_by_each
from service.stt.events import BatchAnswer, BatchUtterance, Word

log: Any = structlog.get_logger("callscribe.batch")


class SharedSpool(Protocol):
    """The port to the spool every process shares (`storage/spool_segments.py`)."""

    async def put(self, segment: Mapping[str, Any], wav: bytes) -> bool: ...
    async def claim(self) -> dict[str, Any] | None: ...
    async def wav(self, segment_id: str) -> bytes: ...
    async def remove(self, segment_id: str) -> None: ...
    async def kept(self, segment_id: str) -> bool: ...
    async def failed(self, segment_id: str, error: str, *, retry_s: float) -> int: ...
    async def purge(self) -> int: ...


# The batch engines of the Deepgrams in an order, those that can transcribe (`deepgram/engines.py`'s
# `batch_engines`); SttRejected, saying why, when none can.
BatchEngines = Callable[[Settings, Sequence[str]], list[BatchEngine]]


async def transcribe(
    settings: Settings,
    entry: SpoolEntry,
    wav: bytes | None = None,
    *,
    engines: BatchEngines,
    order: Sequence[str] = (PRIMARY, FALLBACK),
) -> list[Transcript]:
    """The transcripts of one spool entry (its WAV read from disk unless given) from each batch engine in `order`
    in turn (the primary's and the fallback's, whichever of them is configured) until one answers; SttError (each
    one's reason) if none can.

    OSError if the entry's audio cannot be read.
    """
    asked = engines(settings, order)  # SttRejected when none has a key: before any audio is read
    if wav is None:
        wav = await asyncio.to_thread(entry.wav_path.read_bytes)  # may be megabytes: off the event loop
    failures: list[SttError] = []
    for engine in asked:
        try:
            answer = await engine.transcribe(wav)
        except SttError as exc:
            failures.append(exc)
            continue
        if failures:
            log.warning(
                "batch.failover", **_ids(entry), from_engine=asked[0].name, to_engine=engine.name,
                error=failures[-1].reason, spooled_because=entry.spooled_because,
            )  # fmt: skip
        return place(answer, entry, speaker=speaker_for(settings, entry.track))
    raise _all_failed(asked, failures)


def _all_failed(engines: list[BatchEngine], failures: list[SttError]) -> SttError:
    """Every engine failed: the last one's error, saying what each said when there were two."""
    last = failures[-1]
    if len(failures) == 1:
        return last
    reason = said_by_each([(engine.name, failure.reason) for engine, failure in zip(engines, failures, strict=True)])
    return type(last)(reason, status=last.status, close_code=last.close_code, failure=last.failure)


def shared_fields(entry: SpoolEntry) -> dict[str, Any]:
    """What the shared spool keeps of a local entry."""
    return {
        "id": entry.id, "call_sid": entry.call_sid, "stream_sid": entry.stream_sid, "track": entry.track,
        "start_s": entry.start_s, "duration_s": entry.duration_s, "reason": entry.spooled_because,
        "created_at": datetime.datetime.fromisoformat(entry.created_at), "attempts": entry.attempts,
        "last_error": entry.last_error,
    }  # fmt: skip


def shared_entry(row: Mapping[str, Any]) -> SpoolEntry:
    """A claimed shared segment as an entry (its audio is in the database, not at a path)."""
    created = row["created_at"]
    return SpoolEntry(
        id=str(row["id"]), call_sid=str(row["call_sid"]), stream_sid=str(row["stream_sid"]), track=str(row["track"]),
        start_s=float(row["start_s"]), duration_s=float(row["duration_s"]), spooled_because=str(row["reason"]),
        created_at=created.isoformat() if isinstance(created, datetime.datetime) else str(created),
        attempts=int(row["attempts"]), last_error=row["last_error"], wav_path=Path(), meta_path=Path(),
    )  # fmt: skip


def place(answer: BatchAnswer, entry: SpoolEntry, *, speaker: str) -> list[Transcript]:
    """Deepgram's answer for `entry` as final batch transcripts on the call's timeline (shifted by the entry's
    `start_s`), one per utterance that says something: Deepgram's answer for silence is nothing to deliver."""
    return [
        _transcript(entry, utterance, request_id=answer.request_id, speaker=speaker)
        for utterance in answer.utterances
        if utterance.text.strip()
    ]


def _transcript(entry: SpoolEntry, utterance: BatchUtterance, *, request_id: str | None, speaker: str) -> Transcript:
    words = tuple(_shifted(word, entry.start_s) for word in utterance.words)
    # Without an utterance's own span, the words give it; without words, the whole entry.
    start, end = utterance.start, utterance.end
    start_s = start + entry.start_s if start is not None else (words[0].start if words else entry.start_s)
    end_s = end + entry.start_s if end is not None else (words[-1].end if words else entry.start_s + entry.duration_s)
    return Transcript(
        call_sid=entry.call_sid,
        stream_sid=entry.stream_sid,
        track=entry.track,
        is_final=True,
        speech_final=True,
        from_finalize=False,
        text=utterance.text,
        start=round(start_s, 3),
        end=round(end_s, 3),
        confidence=utterance.confidence,
        words=words,
        request_id=request_id,
        batch=True,
        speaker=speaker,
        languages=utterance.languages,
    )


def _shifted(word: Word, offset_s: float) -> Word:
    """A word of the WAV on the call's timeline."""
    return dataclasses.replace(word, start=round(word.start + offset_s, 3), end=round(word.end + offset_s, 3))


def batch_key(entry: SpoolEntry, index: int) -> str:
    """A key that names one batch transcript for good: the same entry yields the same keys on every attempt."""
    return f"{entry.id}#{index}"


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass over the spool did."""

    delivered: int = 0  # entries transcribed, delivered and removed
    failed: int = 0  # entries whose attempt failed; recorded in their sidecars
    skipped: int = 0  # entries another process held (writing or delivering them) or removed meanwhile


class BatchWorker:
    """Transcribes the spool in batch, oldest entry first, and hands the transcripts to the sink."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        sink: TranscriptSink,
        shared: SharedSpool | None = None,
        *,
        engines: BatchEngines,
        order: Callable[[], Sequence[str]] = lambda: (PRIMARY, FALLBACK),
        outcomes: Callable[[Outcome], None] | None = None,
    ) -> None:
        self._settings = settings
        self._outcomes = outcomes
        self._engines = engines
        self._order = order  # which Deepgram's pre-recorded API to ask first: the one live calls use now
        self._spool = spool
        self._sink = sink
        self._shared = shared
        # Entries delivered whose files could not be removed: never delivered twice by this process.
        self._delivered: set[str] = set()
        self._sharing = False  # whether the shared spool took every entry offered this pass

    async def run_once(self) -> int:
        """One pass over the spool; returns how many entries were delivered."""
        return (await self.run_pass()).delivered

    async def run_pass(self) -> PassResult:
        """One pass over the spool: every entry transcribed, delivered and removed, or its failure recorded."""
        delivered = failed = skipped = 0
        if self._shared is not None:
            await self.share_local()
            delivered, failed = await self._shared_pass(self._shared)
        for listed in self._spool.entries():
            if listed.id in self._delivered:
                continue
            with self._spool.claim(listed) as entry:
                if entry is None:
                    skipped += 1
                elif self._shared is not None and self._sharing and await self._share(self._shared, entry):
                    continue  # completed since share_local looked (the shared pass takes time): shared like the rest
                elif await self._process(entry):
                    delivered += 1
                else:
                    failed += 1
        return PassResult(delivered=delivered, failed=failed, skipped=skipped)

    async def run_forever(self) -> None:
        """A pass now, then one every SPOOL_RETRY_S, until cancelled; never raises anything else."""
        while True:
            try:
                await self.run_pass()
            except Exception:  # the worker's top level: a bug costs one pass, not the worker
                log.exception("batch.pass_failed")
            await asyncio.sleep(self._settings.spool_retry_s)

    async def share_local(self) -> int:
        """Every complete local entry into the shared spool, then off this disk; how many went. What the shared
        spool cannot take (its bound, an outage) stays here, and is transcribed here."""
        if self._shared is None:
            return 0
        shared = 0
        self._sharing = True
        for listed in self._spool.entries():
            with self._spool.claim(listed) as entry:
                if entry is None:
                    continue
                if not await self._share(self._shared, entry):
                    return shared
                shared += 1
        return shared

    async def _share(self, shared: SharedSpool, entry: SpoolEntry) -> bool:
        """One claimed local entry into the shared spool and off this disk; False (and no more sharing this pass)
        if it stays here."""
        try:
            wav = await asyncio.to_thread(entry.wav_path.read_bytes)
            if not await shared.put(shared_fields(entry), wav):
                log.warning("spool.shared_full", spool_id=entry.id, why="over SPOOL_SHARED_MAX_MB: kept here")
                self._sharing = False
                return False
        except Exception as exc:  # noqa: BLE001 - the entry stays on the disk, whatever went wrong
            log.warning("spool.not_shared", spool_id=entry.id, error=type(exc).__name__, action="kept here")
            self._sharing = False
            return False
        self._spool.remove(entry)
        return True

    async def _shared_pass(self, shared: SharedSpool) -> tuple[int, int]:
        """Shared segments, claimed one at a time until none is free: (delivered, failed)."""
        delivered = failed = 0
        try:
            await shared.purge()
            while (row := await shared.claim()) is not None:
                entry = shared_entry(row)
                if await self._process_shared(shared, entry):
                    delivered += 1
                else:
                    failed += 1
        except Exception as exc:  # noqa: BLE001 - an outage ends this pass over the shared spool, not the worker
            log.warning("spool.shared_unavailable", error=type(exc).__name__)
        return delivered, failed

    async def _process_shared(self, shared: SharedSpool, entry: SpoolEntry) -> bool:
        try:
            transcripts = await transcribe(
                self._settings, entry, await shared.wav(entry.id), engines=self._engines, order=self._order()
            )
        except SttError as exc:
            await self._failed_shared(shared, entry, exc.reason)
            return False
        if not await shared.kept(entry.id):
            return _erased(entry)
        if (error := self._emit(entry, transcripts)) is not None:
            await self._failed_shared(shared, entry, error)
            return False
        await shared.remove(entry.id)
        self._log_delivered(entry, transcripts)
        return True

    async def _failed_shared(self, shared: SharedSpool, entry: SpoolEntry, error: str) -> None:
        attempts = await shared.failed(entry.id, error, retry_s=self._settings.spool_retry_s)
        log.warning(
            "batch.failed", **_ids(entry), error=error, attempts=attempts, spooled_because=entry.spooled_because
        )

    async def _process(self, entry: SpoolEntry) -> bool:
        try:
            transcripts = await transcribe(self._settings, entry, engines=self._engines, order=self._order())
        except SttError as exc:
            self._failed(entry, exc.reason)
            return False
        except OSError as exc:
            self._failed(entry, f"cannot read the spooled audio: {type(exc).__name__}: {exc.strerror or exc}")
            return False
        except Exception as exc:  # one entry's bug must not stop the others
            log.exception("batch.internal_error", spool_id=entry.id)
            self._failed(entry, f"internal error: {type(exc).__name__}")
            return False
        return self._deliver(entry, transcripts)

    def _emit(self, entry: SpoolEntry, transcripts: list[Transcript]) -> str | None:
        """Every transcript to the sink; what went wrong (also logged) if the sink failed."""
        try:
            for index, transcript in enumerate(transcripts):
                # Bound for the sink's call, so the transcript's own log line carries its key (log_transcript
                # logs through structlog, whose contextvars merge into every line).
                with structlog.contextvars.bound_contextvars(batch_key=batch_key(entry, index)):
                    self._sink(transcript)
        except Exception as exc:  # the sink is not ours; the entry stays and is tried again
            log.exception("batch.sink_failed", spool_id=entry.id)
            return f"transcript sink failed: {type(exc).__name__}"
        return None

    def _deliver(self, entry: SpoolEntry, transcripts: list[Transcript]) -> bool:
        # Synchronous from the first transcript to the removal: see the module docstring on repeats.
        if not entry.meta_path.exists():
            return _erased(entry)
        if (error := self._emit(entry, transcripts)) is not None:
            self._failed(entry, error)
            return False
        try:
            self._spool.remove(entry)
        except OSError as exc:
            self._delivered.add(entry.id)
            log.exception("batch.not_removed", spool_id=entry.id, error=f"{type(exc).__name__}: {exc.strerror or exc}")
        self._log_delivered(entry, transcripts)
        return True

    def _log_delivered(self, entry: SpoolEntry, transcripts: list[Transcript]) -> None:
        """Said, and reported as the entry's outcome: transcribed by batch (both paths end here)."""
        if self._outcomes is not None:
            try:
                self._outcomes(Outcome(entry.call_sid, entry.stream_sid, entry.track, entry.id))
            except Exception:  # the observers are not ours: the entry is delivered all the same
                log.exception("batch.outcome_failed", spool_id=entry.id)
        log.info(
            "batch.delivered",
            **_ids(entry),
            audio_s=round(entry.duration_s, 2),
            attempts=entry.attempts + 1,
            transcripts=len(transcripts),
            keys=[batch_key(entry, index) for index in range(len(transcripts))],
            spooled_because=entry.spooled_because,
        )

    def _failed(self, entry: SpoolEntry, error: str) -> None:
        updated = self._spool.record_failure(entry, error)
        log.warning(
            "batch.failed",
            **_ids(entry),
            error=error,
            attempts=updated.attempts,
            spooled_because=entry.spooled_because,
        )


def _ids(entry: SpoolEntry) -> dict[str, str]:
    """The fields that name a spool entry, first in every log line about it. Why it was spooled is not among them:
    on a failure line it read as the retry's own error (`spooled_because`, after the line's `error`)."""
    return {
        "call_sid": entry.call_sid,
        "stream_sid": entry.stream_sid,
        "track": entry.track,
        "spool_id": entry.id,
    }


def _erased(entry: SpoolEntry) -> bool:
    """The entry was erased while batch transcribed it (its call's erasure): its words must not come back."""
    log.info("batch.erased", spool_id=entry.id, call_sid=entry.call_sid, why="erased while it was transcribed")
    return True  # settled: nothing of it is left to deliver
