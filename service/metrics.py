"""Prometheus metrics (`/metrics`): what an operator graphs and alerts on.

The metrics are module-level, as prometheus-client expects. Per-frame work never touches them: a frame
only adds to its call's plain integer counters (`TrackCounters`, `CallSession.messages_in`), and
`calls/meter.py` adds what changed to these metrics once a second and when a call finishes, so a scrape is at
most a second behind. Rare events (connects, reconnects, failures, results, webhook deliveries) are
counted where they happen.

Several Hypercorn workers: `serve` (`cli/serve.py`) points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before the workers start; each worker then keeps its values in files there and `/metrics`, answered by any
worker, adds them up (prometheus-client's multiprocess mode). Gauges are summed over the live workers. One
worker is served in-process, with the plain registry.
"""

from __future__ import annotations

import os

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

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
DEEPGRAM_FAILOVERS = Counter(
    "callscribe_deepgram_failovers",
    "Tracks that moved between the primary Deepgram and DEEPGRAM_FALLBACK_URL mid-call, by engine moved to and why",
    ["to", "why"],
)
DEEPGRAM_PRIMARY_DOWN = Gauge(
    "callscribe_deepgram_primary_down",
    "1 while the primary Deepgram counts as down and new connections go to DEEPGRAM_FALLBACK_URL",
    multiprocess_mode="livemax",
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

LIVE_SUBSCRIBERS = Gauge(
    "callscribe_live_subscribers", "Clients reading the live feed (/api/live, the page)", multiprocess_mode="livesum"
)
LIVE_SUBSCRIBERS_DROPPED = Counter(
    "callscribe_live_subscribers_dropped", "Live feed clients dropped for falling behind, by reason", ["reason"]
)
LIVE_SUBSCRIBERS_REFUSED = Counter(
    "callscribe_live_subscribers_refused", "Live feed clients refused because LIVE_MAX_SUBSCRIBERS already read it"
)
LIVE_EVENTS_UNPUBLISHED = Counter(
    "callscribe_live_events_unpublished",
    "Call events that never reached Redis (its queue full while Redis was slow or down); calls are unaffected",
)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format: every worker's, in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_stopped() -> None:
    """A worker's live gauges stop counting once it exits (prometheus-client's mark_process_dead)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
