"""Batch fallback: spooled audio through the real SDK and a fake pre-recorded API, delivered exactly once.

Every test checks what the sink received against `expected_words` of the spooled audio, and what is left in the
spool: an entry goes only after its transcripts are delivered, and a failure stays, recorded, for the next pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from deepgram.core.unchecked_base_model import construct_type
from deepgram.types.listen_v1response import ListenV1Response

from service.calls.observers import log_transcript
from service.calls.transcript import Transcript
from service.deepgram.prerecorded import parse
from service.deepgram.protocol import batch_options
from service.errors import SttRejected, SttUnavailable
from service.settings import Settings
from service.spool.directory import RECOVERED, Spool, SpoolEntry
from service.spool.worker import batch_key, place
from tests.helpers.audio import SILENCE, SPEECH, call_audio
from tests.helpers.credentials import DEEPGRAM_FALLBACK_KEY, DEEPGRAM_KEY
from tests.helpers.fakes.deepgram_batch import FakeDeepgramBatch, listen_response
from tests.helpers.fakes.deepgram_server import expected_languages, expected_words, languages_of
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings
from tests.helpers.spool import AUDIO, batch_worker, crash_while_spooling, names, spool_audio, transcribe_entry


@pytest.fixture
async def batch_api() -> AsyncIterator[FakeDeepgramBatch]:
    async with FakeDeepgramBatch(api_key=DEEPGRAM_KEY) as fake:
        yield fake


def settings_for(fake: FakeDeepgramBatch, spool_dir: Path, **overrides: Any) -> Settings:
    return make_settings(None, deepgram_batch_url=fake.url, spool_dir=spool_dir, **overrides)


class Sink:
    """Collects delivered transcripts, checking that the entry is still spooled while it is delivered."""

    def __init__(self, *watched: SpoolEntry) -> None:
        self.transcripts: list[Transcript] = []
        self.received = asyncio.Event()
        self._watched = watched

    def __call__(self, transcript: Transcript) -> None:
        assert all(entry.wav_path.exists() and entry.meta_path.exists() for entry in self._watched)
        self.transcripts.append(transcript)
        self.received.set()

    def words(self) -> list[str]:
        return [word for transcript in self.transcripts for word in transcript.text.split()]


async def test_spooled_audio_is_delivered_in_order_on_the_calls_timeline(
    batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    """Every word once, one final batch transcript per utterance, shifted by start_s; then the entry is gone."""
    entry = spool_audio(tmp_path, SPEECH, start_s=7.5)
    sink = Sink(entry)
    worker = batch_worker(settings_for(batch_api, tmp_path), Spool(tmp_path), sink)
    assert await worker.run_once() == 1
    assert sink.words() == expected_words(SPEECH)
    first, second = sink.transcripts
    assert (first.start, first.end, second.start, second.end) == (7.5, 9.0, 9.5, 10.5)
    assert all(t.batch and t.is_final and t.speech_final and t.call_sid == "CAbatch" for t in sink.transcripts)
    assert first.words[0].start == 7.5
    assert first.request_id == second.request_id is not None
    assert Spool(tmp_path).entries() == []
    assert names(tmp_path) == []
    [request] = batch_api.requests
    assert request.headers["authorization"] == f"Token {DEEPGRAM_KEY}"
    assert (request.option("model"), request.option("utterances")) == ("nova-3", "true")
    assert request.option("encoding") is None  # the WAV header says it
    [delivered] = log_lines.events("batch.delivered")
    assert delivered["keys"] == [batch_key(entry, 0), batch_key(entry, 1)]
    assert (delivered["call_sid"], delivered["spooled_because"]) == ("CAbatch", "HTTP 401 at upgrade")


async def test_with_language_multi_batch_transcripts_keep_their_languages(
    batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """language=multi: each delivered word keeps its language, each transcript its languages, most words first."""
    spool_audio(tmp_path, SPEECH, start_s=7.5)
    sink = Sink()
    worker = batch_worker(settings_for(batch_api, tmp_path, deepgram_language="multi"), Spool(tmp_path), sink)
    assert await worker.run_once() == 1
    assert batch_api.requests[0].option("language") == "multi"
    assert [w.language for t in sink.transcripts for w in t.words] == expected_languages(SPEECH)
    assert all(
        list(t.languages) == languages_of([w.language or "" for w in t.words]) and t.languages for t in sink.transcripts
    )


async def test_a_503_is_retried_on_the_next_pass_with_nothing_lost_or_doubled(
    batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    """503 once: the entry stays with the error recorded, no hidden SDK retries; the next pass delivers it once."""
    spool_audio(tmp_path, SPEECH, start_s=0.0)
    batch_api.fail_status, batch_api.fail_count = 503, 1
    sink = Sink()
    worker = batch_worker(settings_for(batch_api, tmp_path), Spool(tmp_path), sink)
    assert await worker.run_once() == 0
    assert batch_api.request_count == 1
    [waiting] = Spool(tmp_path).entries()
    assert waiting.attempts == 1
    assert "HTTP 503" in (waiting.last_error or "")
    assert sink.transcripts == []
    [failed] = log_lines.events("batch.failed")
    assert (failed["error"], failed["attempts"]) == (waiting.last_error, 1)
    assert await worker.run_once() == 1
    assert sink.words() == expected_words(SPEECH)
    assert Spool(tmp_path).entries() == []
    assert await worker.run_once() == 0
    assert batch_api.request_count == 2


async def test_a_failed_retry_says_its_own_error_not_why_the_audio_was_spooled(
    batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    """Spooled while DEEPGRAM_API_KEY was unset, retried with the key set and Deepgram answering 503: the failure
    line's error is the 503, and the key's absence is only `spooled_because`, after it (a `why` read as the
    retry's reason, so the key looked still missing)."""
    spool_audio(tmp_path, SPEECH, start_s=0.0, reason="DEEPGRAM_API_KEY is not set")
    batch_api.fail_status = 503
    worker = batch_worker(settings_for(batch_api, tmp_path), Spool(tmp_path), Sink())
    assert await worker.run_once() == 0
    [failed] = log_lines.events("batch.failed")
    assert "HTTP 503" in failed["error"]
    assert "DEEPGRAM_API_KEY" not in failed["error"]
    assert failed["spooled_because"] == "DEEPGRAM_API_KEY is not set"
    assert "why" not in failed
    fields = list(failed)
    assert fields.index("error") < fields.index("spooled_because")
    [waiting] = Spool(tmp_path).entries()
    assert (waiting.spooled_because, waiting.last_error) == ("DEEPGRAM_API_KEY is not set", failed["error"])


async def test_a_rejected_key_is_recorded_and_the_entry_kept(batch_api: FakeDeepgramBatch, tmp_path: Path) -> None:
    """401 from the pre-recorded API: a recorded failure, the audio still waits, nothing delivered."""
    entry = spool_audio(tmp_path, SPEECH, start_s=0.0)
    sink = Sink()
    worker = batch_worker(settings_for(batch_api, tmp_path, deepgram_api_key="wrong-key"), Spool(tmp_path), sink)
    result = await worker.run_pass()
    assert (result.delivered, result.failed) == (0, 1)
    [waiting] = Spool(tmp_path).entries()
    assert waiting.id == entry.id
    assert waiting.attempts == 1
    assert "rejected the API key (HTTP 401: Invalid credentials.)" in (waiting.last_error or "")
    assert sink.transcripts == []


async def test_a_restart_between_spooling_and_transcription_delivers_once(
    batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """New Spool and BatchWorker objects over the same directory deliver every entry, and only once."""
    first = spool_audio(tmp_path, SPEECH, start_s=3.0, call_sid="CA1")
    second = spool_audio(tmp_path, call_audio(303, 0.7), start_s=0.0, call_sid="CA2")
    sink = Sink()
    settings = settings_for(batch_api, tmp_path)
    assert await batch_worker(settings, Spool(tmp_path), sink).run_once() == 2
    assert await batch_worker(settings, Spool(tmp_path), sink).run_once() == 0
    by_call = {call: [t for t in sink.transcripts if t.call_sid == call] for call in ("CA1", "CA2")}
    assert [w for t in by_call["CA1"] for w in t.text.split()] == expected_words(SPEECH)
    assert [w for t in by_call["CA2"] for w in t.text.split()] == expected_words(call_audio(303, 0.7))
    assert [t.call_sid for t in sink.transcripts] == ["CA1", "CA1", "CA2"]  # oldest entry first
    assert first.id != second.id
    assert batch_api.request_count == 2


async def test_a_process_killed_while_spooling_is_transcribed_after_restart(
    batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """SIGKILL mid-segment, then start-up: recover() makes the entry and the worker delivers it once."""
    crash_while_spooling(tmp_path, "writing-audio")
    spool = Spool(tmp_path)
    [recovered] = spool.recover()
    sink = Sink(recovered)
    worker = batch_worker(settings_for(batch_api, tmp_path), spool, sink)
    assert await worker.run_once() == 1
    assert sink.words() == expected_words(AUDIO)
    assert sink.transcripts[0].start == 1.5
    assert recovered.spooled_because.startswith(RECOVERED)
    assert await batch_worker(settings_for(batch_api, tmp_path), Spool(tmp_path), sink).run_once() == 0


async def test_two_workers_on_one_spool_deliver_each_entry_once(batch_api: FakeDeepgramBatch, tmp_path: Path) -> None:
    """Two processes' workers (or the server and `spool retry`) passing at once never deliver an entry twice."""
    for n in range(3):
        spool_audio(tmp_path, call_audio(310 + n, 0.6), start_s=0.0, call_sid=f"CA{n}")
    sink = Sink()
    settings = settings_for(batch_api, tmp_path)
    results = await asyncio.gather(*(batch_worker(settings, Spool(tmp_path), sink).run_pass() for _ in range(2)))
    assert sum(result.delivered for result in results) == 3
    assert sorted(t.call_sid for t in sink.transcripts) == ["CA0", "CA1", "CA2"]
    assert Spool(tmp_path).entries() == []


async def test_a_failing_sink_keeps_the_entry_for_another_pass(
    batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    """A sink that raises: the entry stays, the failure is recorded and logged, the next pass delivers it."""
    spool_audio(tmp_path, SPEECH, start_s=0.0)
    delivered: list[Transcript] = []

    def flaky(transcript: Transcript) -> None:
        if not log_lines.events("batch.sink_failed"):
            raise RuntimeError("downstream is down")
        delivered.append(transcript)

    worker = batch_worker(settings_for(batch_api, tmp_path), Spool(tmp_path), flaky)
    assert await worker.run_once() == 0
    [waiting] = Spool(tmp_path).entries()
    assert waiting.last_error == "transcript sink failed: RuntimeError"
    assert await worker.run_once() == 1
    assert [w for t in delivered for w in t.text.split()] == expected_words(SPEECH)


async def test_run_forever_retries_until_delivered_and_stops_when_cancelled(
    batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """The background worker passes at once, then every SPOOL_RETRY_S, past failures; only cancellation ends it."""
    spool_audio(tmp_path, SPEECH, start_s=0.0)
    batch_api.fail_status, batch_api.fail_count = 500, 2
    sink = Sink()
    worker = batch_worker(settings_for(batch_api, tmp_path, spool_retry_s=0.05), Spool(tmp_path), sink)
    task = asyncio.create_task(worker.run_forever())
    await asyncio.wait_for(sink.received.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert batch_api.request_count == 3
    assert sink.words() == expected_words(SPEECH)


async def test_errors_are_translated(batch_api: FakeDeepgramBatch, tmp_path: Path) -> None:
    """No key, 400, 403 are SttRejected; 5xx, 429 and an unreachable host are SttUnavailable."""
    entry = spool_audio(tmp_path, SPEECH, start_s=0.0)
    with pytest.raises(SttRejected, match="DEEPGRAM_API_KEY is not set"):
        await transcribe_entry(settings_for(batch_api, tmp_path, deepgram_api_key=None), entry)
    for status, error in [(400, SttRejected), (403, SttRejected), (429, SttUnavailable), (502, SttUnavailable)]:
        batch_api.fail_status, batch_api.fail_count = status, 1
        with pytest.raises(error, match=f"HTTP {status}") as raised:
            await transcribe_entry(settings_for(batch_api, tmp_path), entry)
        assert raised.value.status == status
    with pytest.raises(SttUnavailable, match="cannot reach Deepgram"):
        await transcribe_entry(make_settings(None, deepgram_batch_url="http://127.0.0.1:9", spool_dir=tmp_path), entry)


async def test_the_fallback_is_asked_first_while_the_primary_is_down_and_each_error_is_kept(
    batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    """With DEEPGRAM_FALLBACK_URL: the order live calls use (fallback first while the primary is down) is the
    order batch asks in; when both fail, the entry's error says what each said."""
    entry = spool_audio(tmp_path, SPEECH, start_s=0.0)
    async with FakeDeepgramBatch(api_key=DEEPGRAM_FALLBACK_KEY) as fallback_api:
        settings = settings_for(
            batch_api, tmp_path, deepgram_fallback_url=fallback_api.url, deepgram_fallback_api_key=DEEPGRAM_FALLBACK_KEY
        )
        transcripts = await transcribe_entry(settings, entry, order=("fallback", "primary"))
        assert (batch_api.request_count, fallback_api.request_count) == (0, 1)  # the primary never asked
        assert [word for t in transcripts for word in t.text.split()] == expected_words(SPEECH)
        assert not log_lines.events("batch.failover")

        batch_api.fail_status = fallback_api.fail_status = 503
        with pytest.raises(SttUnavailable) as raised:
            await transcribe_entry(settings, entry)
        assert raised.value.reason == (
            "primary: Deepgram could not transcribe now (HTTP 503: Failed by FakeDeepgramBatch.fail_status.); "
            "fallback: Deepgram could not transcribe now (HTTP 503: Failed by FakeDeepgramBatch.fail_status.)"
        )
        assert raised.value.status == 503
    with pytest.raises(SttRejected, match=r"^primary: DEEPGRAM_API_KEY is not set; fallback: DEEPGRAM_FALLBACK"):
        await transcribe_entry(
            settings.model_copy(update={"deepgram_api_key": None, "deepgram_fallback_api_key": None}), entry
        )


async def test_audio_that_is_not_a_wav_is_refused_as_a_bad_request(
    batch_api: FakeDeepgramBatch, tmp_path: Path
) -> None:
    """A damaged spool file: Deepgram's 400 is recorded as the entry's error, and the entry kept."""
    entry = spool_audio(tmp_path, SPEECH, start_s=0.0)
    entry.wav_path.write_bytes(b"not a wav")
    worker = batch_worker(settings_for(batch_api, tmp_path), Spool(tmp_path), Sink())
    assert await worker.run_once() == 0
    [waiting] = Spool(tmp_path).entries()
    assert "HTTP 400" in (waiting.last_error or "")


async def test_each_transcript_line_carries_its_key(
    batch_api: FakeDeepgramBatch, tmp_path: Path, log_lines: LogLines
) -> None:
    """With the service's own log sink, every batch transcript line names its idempotency key."""
    entry = spool_audio(tmp_path, SPEECH, start_s=0.0)
    assert await batch_worker(settings_for(batch_api, tmp_path), Spool(tmp_path), log_transcript).run_once() == 1
    lines = log_lines.events("transcript", batch=True)
    assert [line["batch_key"] for line in lines] == [batch_key(entry, 0), batch_key(entry, 1)]
    assert [w for line in lines for w in line["text"].split()] == expected_words(SPEECH)
    assert "batch_key" not in log_lines.events("batch.delivered")[0]  # bound only around the sink


def test_without_utterances_each_channel_is_one_transcript(tmp_path: Path) -> None:
    """An answer with no utterances maps to one transcript per channel, spanning its words, shifted by start_s."""
    entry = spool_audio(tmp_path, SPEECH, start_s=2.0)
    body = listen_response(SPEECH, sample_rate=8000, channels=1, query={}, request_id="req-1")
    response = construct_type(type_=ListenV1Response, object_=body)
    [transcript] = place(parse(response), entry, speaker="")
    assert transcript.text.split() == expected_words(SPEECH)
    assert (transcript.start, transcript.end, transcript.request_id) == (2.0, 5.0, "req-1")
    assert transcript.batch


def test_an_answer_for_silence_is_no_transcript(tmp_path: Path) -> None:
    """Silence: Deepgram's empty transcript is not delivered (as live skips empty results)."""
    entry = spool_audio(tmp_path, SILENCE * 8000, start_s=0.0)
    body = listen_response(SILENCE * 8000, sample_rate=8000, channels=1, query={"utterances": ["true"]}, request_id="r")
    assert place(parse(construct_type(type_=ListenV1Response, object_=body)), entry, speaker="") == []


def test_batch_options_drop_live_only_settings() -> None:
    """DEEPGRAM_OPTIONS pass through to batch, except live-only ones that would make every request a 400."""
    settings = make_settings(None, deepgram_options="diarize=true&endpointing=500&redact=pci", deepgram_keyterms="acme")
    options = batch_options(settings)
    assert options["request_options"] == {"additional_query_parameters": {"diarize": "true", "redact": "pci"}}
    assert options["keyterm"] == ["acme"]
    assert "encoding" not in options
