"""Prometheus metrics (`/metrics`): what an operator graphs and alerts on.

The metrics are module-level, as prometheus-client expects. Per-frame work never touches them: a frame
only adds to its call's plain integer counters (`TrackCounters`, `CallSession.messages_in`), and
`CallMeter` adds what changed to these metrics once a second and when a call finishes, so a scrape is at
most a second behind. Rare events (connects, reconnects, failures, results, webhook deliveries) are
counted where they happen.

Several Hypercorn workers: `serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers
start; each worker then keeps its values in files there and `/metrics`, answered by any worker, adds them
up (prometheus-client's multiprocess mode). Gauges are summed over the live workers.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from service.deepgram_protocol import MULAW_BYTES_PER_SECOND

if TYPE_CHECKING:
    from service.session import CallSession
    from service.track import TrackStream

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_INTERVAL_S = 1.0

CALLS_ACTIVE = Gauge("callscribe_calls_active", "Calls being transcribed now", multiprocess_mode="livesum")
CALLS = Counter("callscribe_calls", "Calls finished, by how they ended", ["ended_by"])
TWILIO_MESSAGES = Counter("callscribe_twilio_messages", "Messages received on Twilio Media Streams")
AUDIO_RECEIVED = Counter("callscribe_audio_received_seconds", "Audio received from Twilio, by track", ["track"])
DEEPGRAM_SENT_BYTES = Counter("callscribe_deepgram_sent_bytes", "Audio bytes sent to Deepgram, replays included")
DEEPGRAM_SENT_MESSAGES = Counter("callscribe_deepgram_sent_messages", "Audio messages sent to Deepgram")
DEEPGRAM_CONNECTS = Counter("callscribe_deepgram_connects", "Deepgram live connections opened")
DEEPGRAM_RECONNECTS = Counter(
    "callscribe_deepgram_reconnects", "Reconnects to Deepgram after a failure that may pass, by reason", ["reason"]
)
DEEPGRAM_FAILURES = Counter(
    "callscribe_deepgram_failures", "Tracks whose live transcription gave up (audio spooled), by reason", ["reason"]
)
DEEPGRAM_RESULTS = Counter("callscribe_deepgram_results", "Results received from Deepgram live", ["kind"])
RESULT_LATENCY = Histogram(
    "callscribe_result_latency_seconds",
    "From a Deepgram result handed over by the SDK until its transcript reached every sink",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
AUDIO_BUFFERED = Gauge(
    "callscribe_audio_buffered_seconds", "Audio held in memory waiting for Deepgram", multiprocess_mode="livesum"
)
AUDIO_SPOOLED = Counter("callscribe_audio_spooled_seconds", "Audio written to the spool for batch transcription")
AUDIO_LOST = Counter("callscribe_audio_lost_seconds", "Audio that neither Deepgram nor the spool could take")
WEBHOOK_DELIVERIES = Counter("callscribe_webhook_deliveries", "Webhook events the receiver accepted")
WEBHOOK_FAILURES = Counter(
    "callscribe_webhook_failures", "Webhook attempts that failed, by outcome (retrying, gave_up)", ["outcome"]
)


# What a track's own counters (`TrackCounters`) feed: field, metric, its labels, and the unit divisor (bytes
# of audio are reported as seconds).
_FROM_TRACK_COUNTERS: tuple[tuple[str, Counter, dict[str, str], int], ...] = (
    ("bytes_sent", DEEPGRAM_SENT_BYTES, {}, 1),
    ("messages_sent", DEEPGRAM_SENT_MESSAGES, {}, 1),
    ("bytes_spooled", AUDIO_SPOOLED, {}, MULAW_BYTES_PER_SECOND),
    ("bytes_lost", AUDIO_LOST, {}, MULAW_BYTES_PER_SECOND),
    ("interims", DEEPGRAM_RESULTS, {"kind": "interim"}, 1),
    ("finals", DEEPGRAM_RESULTS, {"kind": "final"}, 1),
)


class CallMeter:
    """Adds the calls' own counters to the metrics: `sample` once a second, `finished` at the end of a call."""

    def __init__(self) -> None:
        # What was already reported, by id() of the track's counters, while its call is active.
        self._tracks: dict[int, dict[str, int]] = {}
        self._messages: dict[int, int] = {}  # by id() of the session

    def started(self) -> None:
        CALLS_ACTIVE.inc()

    def sample(self, sessions: Iterable[CallSession]) -> None:
        buffered = 0
        for session in sessions:
            self._report(session)
            buffered += sum(track.waiting_bytes for track in session.tracks.values())
        AUDIO_BUFFERED.set(buffered / MULAW_BYTES_PER_SECOND)

    def finished(self, session: CallSession) -> None:
        self._report(session)
        self._messages.pop(id(session), None)
        for track in session.tracks.values():
            self._tracks.pop(id(track.counters), None)
        CALLS.labels(ended_by=ended_by_label(session.ended_by)).inc()
        CALLS_ACTIVE.dec()

    def _report(self, session: CallSession) -> None:
        key = id(session)
        messages = session.messages_in - self._messages.get(key, 0)
        if messages:
            TWILIO_MESSAGES.inc(messages)
            self._messages[key] = session.messages_in
        for name, track in session.tracks.items():
            self._report_track(name, track)

    def _report_track(self, name: str, track: TrackStream) -> None:
        counters = track.counters
        now = {field: getattr(counters, field) for field, *_ in _FROM_TRACK_COUNTERS}
        now["bytes_received"] = track.received_bytes
        before = self._tracks.get(id(counters), {})
        received = now["bytes_received"] - before.get("bytes_received", 0)
        _add(AUDIO_RECEIVED.labels(track=name), received / MULAW_BYTES_PER_SECOND)
        for field, metric, labels, divisor in _FROM_TRACK_COUNTERS:
            _add(metric.labels(**labels) if labels else metric, (now[field] - before.get(field, 0)) / divisor)
        self._tracks[id(counters)] = now


def _add(counter: Counter, amount: float) -> None:
    if amount > 0:
        counter.inc(amount)


def ended_by_label(ended_by: str | None) -> str:
    """`rejected: <why>` becomes `rejected`: a label takes a fixed set of values, never free text."""
    return (ended_by or "closed_before_start").split(":", 1)[0]


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format: every worker's, in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def prepare_multiprocess_dir() -> pathlib.Path:
    """Before Hypercorn starts workers: a directory for their values, empty, so counting starts from zero.

    An operator's own PROMETHEUS_MULTIPROC_DIR is kept but emptied of metric files, as prometheus-client
    requires between runs; otherwise a fresh temporary directory is used.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = pathlib.Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="callscribe-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def worker_stopped() -> None:
    """A worker's live gauges stop counting once it exits (prometheus-client's mark_process_dead)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
