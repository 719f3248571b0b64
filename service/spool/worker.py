"""I/O adapter and worker: spooled audio through Deepgram's pre-recorded API, delivered like live transcripts.

With `stt.py`, the only module that imports deepgram-sdk: `transcribe` posts one spool entry's WAV to
`POST /v1/listen` (https://developers.deepgram.com/reference/speech-to-text-api/listen) and maps the answer onto
our `Transcript`, marked `batch`, on the call's timeline; SDK and HTTP errors become `SttRejected` /
`SttUnavailable` here and nowhere else. `BatchWorker` owns the policy: oldest entry first, deliver every
transcript, and only then remove the entry; a failure is written into the entry's sidecar and retried on the
next pass (every SPOOL_RETRY_S).

Delivery is at least once. Emitting an entry's transcripts and removing it run with no `await` in between, so
nothing in this process can come between them; only a crash of the process in that window (a few synchronous
log writes and two unlinks) can deliver an entry again after a restart. Each batch transcript has a stable key,
`batch_key(entry, index)`, bound into its own log line (`batch_key`) and listed in the entry's `batch.delivered`
line, so a consumer can drop such a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.core.parse_error import ParsingError
from deepgram.types.listen_v1response import ListenV1Response

from service.calls.transcript import Transcript, TranscriptSink, speaker_for
from service.deepgram.live import environment_for
from service.deepgram.protocol import Word, is_fatal_status, pass_through_options
from service.errors import SttError, SttRejected, SttUnavailable
from service.settings import Settings
from service.spool.directory import Spool, SpoolEntry

log: Any = structlog.get_logger("callscribe.batch")

# Deepgram answers an hour of audio in well under a minute; this bounds a stuck request, not a slow one.
REQUEST_TIMEOUT_S = 300.0
# Options of the live API that the pre-recorded one does not take, or that a WAV's header already says: dropped
# from DEEPGRAM_OPTIONS so a live-only setting cannot make every batch request fail with HTTP 400.
LIVE_ONLY_OPTIONS = frozenset(
    {
        "encoding", "sample_rate", "channels", "interim_results", "endpointing", "utterance_end_ms", "vad_events",
        "no_delay", "callback", "callback_method",
    }
)  # fmt: skip


def batch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for the SDK's `listen.v1.media.transcribe_file`: the live options that apply to batch.

    No encoding or sample rate: Deepgram reads them from the WAV header. `utterances` splits a long stretch
    into one transcript per utterance, as live results would have been.
    """
    options: dict[str, Any] = {
        "model": settings.deepgram_model,
        "language": settings.deepgram_language,
        "punctuate": settings.deepgram_punctuate,
        "smart_format": settings.deepgram_smart_format,
        "utterances": True,
    }
    if settings.deepgram_keyterms:
        options["keyterm"] = list(settings.deepgram_keyterms)
    extra = pass_through_options(settings.deepgram_extra_options, reserved=options.keys() | LIVE_ONLY_OPTIONS)
    if extra:
        options["request_options"] = {"additional_query_parameters": extra}
    return options


async def transcribe(settings: Settings, entry: SpoolEntry) -> list[Transcript]:
    """The transcripts of one spool entry from the pre-recorded API; SttError if Deepgram cannot give them.

    OSError if the entry's audio cannot be read.
    """
    key = settings.deepgram_api_key
    if key is None:
        raise SttRejected("DEEPGRAM_API_KEY is not set")
    wav = await asyncio.to_thread(entry.wav_path.read_bytes)  # may be megabytes: off the event loop
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=settings.deepgram_connect_timeout_s)
    # Our own httpx client, so its connections are closed when this returns rather than when it is collected.
    async with httpx.AsyncClient(timeout=timeout) as http:
        # max_retries=0: the worker retries on its own schedule, and counts and records every attempt.
        client = AsyncDeepgramClient(
            api_key=key.get_secret_value(), environment=environment_for(settings), httpx_client=http, max_retries=0
        )
        with _translated():
            response = await client.listen.v1.media.transcribe_file(request=wav, **batch_options(settings))
    if not isinstance(response, ListenV1Response):
        raise SttUnavailable("Deepgram accepted the audio but answered with no transcript")
    return to_transcripts(response, entry)


def to_transcripts(response: ListenV1Response, entry: SpoolEntry) -> list[Transcript]:
    """Deepgram's answer as final batch transcripts on the call's timeline: one per utterance if it sent
    utterances, else one per channel's best alternative. Deepgram's models are unvalidated: guard every field."""
    # The SDK builds answers unvalidated: a field its types call required may still be None.
    metadata: Any = response.metadata
    results: Any = response.results
    request_id = str(metadata.request_id) if metadata is not None and metadata.request_id else None
    if results is None:
        return []
    pieces: list[tuple[str, float, Sequence[Any]]] = []  # (text, confidence, SDK words)
    spans: list[tuple[float | None, float | None]] = []
    if results.utterances:
        for utterance in results.utterances:
            pieces.append((utterance.transcript or "", utterance.confidence or 0.0, utterance.words or ()))
            spans.append((utterance.start, utterance.end))
    else:
        for channel in results.channels or ():
            if channel.alternatives:
                best = channel.alternatives[0]
                pieces.append((best.transcript or "", best.confidence or 0.0, best.words or ()))
                spans.append((None, None))
    transcripts = []
    for (text, confidence, sdk_words), (start, end) in zip(pieces, spans, strict=True):
        if text.strip():  # Deepgram's answer for silence: nothing to deliver
            words = tuple(_word(w, entry.start_s) for w in sdk_words)
            transcripts.append(
                _transcript(
                    entry, text=text, confidence=confidence, words=words, span=(start, end), request_id=request_id
                )
            )
    return transcripts


def _word(word: Any, offset_s: float) -> Word:
    return Word(
        word=str(word.word or ""),
        start=round(float(word.start or 0.0) + offset_s, 3),
        end=round(float(word.end or 0.0) + offset_s, 3),
        confidence=float(word.confidence or 0.0),
        punctuated_word=word.punctuated_word,
        speaker=int(word.speaker) if word.speaker is not None else None,
    )


def _transcript(
    entry: SpoolEntry,
    *,
    text: str,
    confidence: float,
    words: tuple[Word, ...],
    span: tuple[float | None, float | None],
    request_id: str | None,
) -> Transcript:
    # Without an utterance's own span, the words give it; without words, the whole entry.
    start, end = span
    start_s = start + entry.start_s if start is not None else (words[0].start if words else entry.start_s)
    end_s = end + entry.start_s if end is not None else (words[-1].end if words else entry.start_s + entry.duration_s)
    return Transcript(
        call_sid=entry.call_sid,
        stream_sid=entry.stream_sid,
        track=entry.track,
        is_final=True,
        speech_final=True,
        from_finalize=False,
        text=text,
        start=round(start_s, 3),
        end=round(end_s, 3),
        confidence=float(confidence),
        words=words,
        request_id=request_id,
        batch=True,
    )


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """SDK and HTTP errors of one pre-recorded request as SttRejected / SttUnavailable."""
    try:
        yield
    except ApiError as exc:
        raise _from_status(exc.status_code, exc.body) from exc
    except ParsingError as exc:
        raise SttUnavailable("Deepgram's answer was not a transcript the SDK could read") from exc
    except httpx.TimeoutException as exc:
        raise SttUnavailable(f"Deepgram did not answer in time ({type(exc).__name__})") from exc
    except (httpx.TransportError, OSError) as exc:
        raise SttUnavailable(f"cannot reach Deepgram: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:  # a broken answer (bad encoding, redirects): may pass, like a 5xx
        raise SttUnavailable(f"Deepgram's answer could not be read: {type(exc).__name__}") from exc


def _from_status(status: int | None, body: object) -> SttError:
    said = _error_message(body)
    detail = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if status == 401:
        return SttRejected(f"Deepgram rejected the API key ({detail})", status=401)
    if status == 403:
        return SttRejected(f"Deepgram refused access for this API key ({detail})", status=403)
    if status is not None and is_fatal_status(status):
        return SttRejected(f"Deepgram refused the request ({detail}); check the DEEPGRAM_* options", status=status)
    if status is not None and status < 400:
        return SttUnavailable(f"Deepgram's answer was not a transcript ({detail})", status=status)
    return SttUnavailable(f"Deepgram could not transcribe now ({detail})", status=status)


def _error_message(body: object) -> str:
    """Deepgram's own words from an error body ({"err_code", "err_msg"} or {"error", "reason"}), kept short."""
    if isinstance(body, dict):
        said = body.get("err_msg") or body.get("reason") or body.get("error") or body.get("err_code")
        return str(said)[:200] if said else ""
    return ""


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

    def __init__(self, settings: Settings, spool: Spool, sink: TranscriptSink) -> None:
        self._settings = settings
        self._spool = spool
        self._sink = sink
        # Entries delivered whose files could not be removed: never delivered twice by this process.
        self._delivered: set[str] = set()

    async def run_once(self) -> int:
        """One pass over the spool; returns how many entries were delivered."""
        return (await self.run_pass()).delivered

    async def run_pass(self) -> PassResult:
        """One pass over the spool: every entry transcribed, delivered and removed, or its failure recorded."""
        delivered = failed = skipped = 0
        for listed in self._spool.entries():
            if listed.id in self._delivered:
                continue
            with self._spool.claim(listed) as entry:
                if entry is None:
                    skipped += 1
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

    async def _process(self, entry: SpoolEntry) -> bool:
        try:
            transcripts = await transcribe(self._settings, entry)
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

    def _deliver(self, entry: SpoolEntry, transcripts: list[Transcript]) -> bool:
        # Synchronous from the first transcript to the removal: see the module docstring on repeats.
        try:
            for index, transcript in enumerate(transcripts):
                # Bound for the sink's call, so the transcript's own log line carries its key (log_transcript
                # logs through structlog, whose contextvars merge into every line).
                with structlog.contextvars.bound_contextvars(batch_key=batch_key(entry, index)):
                    self._sink(dataclasses.replace(transcript, speaker=speaker_for(self._settings, transcript.track)))
        except Exception as exc:  # the sink is not ours; the entry stays and is tried again
            log.exception("batch.sink_failed", spool_id=entry.id)
            self._failed(entry, f"transcript sink failed: {type(exc).__name__}")
            return False
        try:
            self._spool.remove(entry)
        except OSError as exc:
            self._delivered.add(entry.id)
            log.exception("batch.not_removed", spool_id=entry.id, error=f"{type(exc).__name__}: {exc.strerror or exc}")
        log.info(
            "batch.delivered",
            **_about(entry),
            audio_s=round(entry.duration_s, 2),
            attempts=entry.attempts + 1,
            transcripts=len(transcripts),
            keys=[batch_key(entry, index) for index in range(len(transcripts))],
        )
        return True

    def _failed(self, entry: SpoolEntry, error: str) -> None:
        updated = self._spool.record_failure(entry, error)
        log.warning(
            "batch.failed",
            **_about(entry),
            error=error,
            attempts=updated.attempts,
        )


def _about(entry: SpoolEntry) -> dict[str, str]:
    """The fields every log line about a spool entry carries."""
    return {
        "call_sid": entry.call_sid,
        "stream_sid": entry.stream_sid,
        "track": entry.track,
        "spool_id": entry.id,
        "why": entry.reason,
    }
