"""Pure layer: one run's records (load generator, stand-in, /proc samples, service log) -> its metrics.

All times are `time.monotonic_ns()` (one clock for every process on the machine) except result latency, which
compares the stand-in's wall clock with the service log's wall-clock timestamp. `wall_offset_ns` (wall minus
monotonic, read once by the runner) converts the steady-state window to wall clock for that.

The steady-state window is [last call started + 2 s, first call stopping - 1 s], from the plan. When calls
are too short or too staggered for that to last a second, it widens to [last start, first stop], then to the
whole run, and says so (`window_fallback`).

Whole calls: CPU from the first /proc sample (taken as the load generator starts, before any /voice) to the
last (a tail after it ended: the last finals, the summaries, the store), over every track-second sent. What
the calls cost beyond their audio at each end (set-up: /voice, the upgrade, the Deepgram connections; tear-
down: CloseStream, the last finals, the summary, the store) is the CPU outside the steady window minus what
its audio costs at the steady rate, per call. Forward latency is reported over whole calls, from each call's
3rd second on, in the steady window, and per second of call.
"""

from __future__ import annotations

import bisect
import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import stats

NS = 1_000_000_000
SETTLE_NS = 2 * NS  # after the last call started: connections opened, first-frame bursts drained
LEAD_OUT_NS = 1 * NS  # before the first call stops: its stop and CloseStream are not steady state
MIN_WINDOW_NS = 1 * NS
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# What "gives out" means, for the report: thresholds a reader can argue with, all in one place.
FORWARD_P99_LIMIT_MS = 100.0  # five frames behind real time
RESULT_P99_LIMIT_MS = 100.0
SERVICE_CPU_LIMIT_PCT = 90.0  # of the one core the service is pinned to
HARNESS_CPU_LIMIT_PCT = 90.0  # load generator + stand-in, of the one core they share
SEND_LAG_LIMIT_MS = 10.0  # the load generator's p99 lateness; above it the offered load is not real time

Metrics = dict[str, float | int | None]


@dataclass(frozen=True)
class Tick:
    """One /proc sample taken during the run."""

    t_ns: int
    service_cpu_s: float  # summed over the service's process tree
    service_rss_bytes: int
    loadgen_cpu_s: float
    standin_cpu_s: float


@dataclass(frozen=True)
class Window:
    """The stretch of the run the steady-state metrics cover (monotonic ns)."""

    start_ns: int
    end_ns: int
    fallback: bool

    def holds(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns


def steady_window(starts_ns: Sequence[int], stops_ns: Sequence[int]) -> Window:
    """The steady-state window for calls planned to start and stop at these times."""
    last_start, first_stop = max(starts_ns), min(stops_ns)
    if first_stop - LEAD_OUT_NS - (last_start + SETTLE_NS) >= MIN_WINDOW_NS:
        return Window(last_start + SETTLE_NS, first_stop - LEAD_OUT_NS, fallback=False)
    if first_stop > last_start:
        return Window(last_start, first_stop, fallback=True)
    return Window(min(starts_ns), max(stops_ns), fallback=True)


def planned_window(loadgen: Mapping[str, Any]) -> Window:
    """The steady-state window of the load generator's plan."""
    calls, frame_ns = loadgen["calls"], loadgen["frame_ns"]
    starts = [call["start_ns"] for call in calls]
    stops = [call["start_ns"] + call["frames_planned"] * frame_ns for call in calls]
    return steady_window(starts, stops)


FRAMES_PER_SECOND = 50  # 20 ms frames
FROM_SECOND = 2  # "from the 3rd second on": frames at least 2 s into their call


@dataclass
class _Join:
    forward_ns: list[int]  # steady-state frames only
    first_ns: list[int]  # the first frame of each call's track (includes opening the Deepgram connection)
    send_lag_ns: list[int]
    send_times_ns: list[int]  # every frame's send time, sorted: for counting audio within an interval
    sent: int = 0
    received: int = 0
    all_forward_ns: list[int] = field(default_factory=list)  # every frame of every call
    later_forward_ns: list[int] = field(default_factory=list)  # frames from the 3rd second of their call on
    by_second_ns: dict[int, list[int]] = field(default_factory=dict)  # second of call -> its frames' latencies


def join_frames(loadgen: Mapping[str, Any], receipts: Mapping[str, Sequence[int]], window: Window) -> _Join:
    """Match each frame the load generator sent with its receipt at the stand-in."""
    received = {
        (call, track, seq): ns
        for call, track, seq, ns in zip(
            receipts["call"], receipts["track"], receipts["seq"], receipts["ns"], strict=True
        )
    }
    frame_ns = loadgen["frame_ns"]
    join = _Join(forward_ns=[], first_ns=[], send_lag_ns=[], send_times_ns=[])
    for call in loadgen["calls"]:
        for track, sends in enumerate(call["sent_ns"]):
            for seq, sent_ns in enumerate(sends):
                if not sent_ns:
                    continue  # never sent (the call failed or ended early)
                join.sent += 1
                join.send_times_ns.append(sent_ns)
                join.send_lag_ns.append(sent_ns - (call["start_ns"] + seq * frame_ns))
                got = received.get((call["index"], track, seq))
                if got is None:
                    continue
                join.received += 1
                forward = got - sent_ns
                if seq == 0:
                    join.first_ns.append(forward)
                if window.holds(sent_ns):
                    join.forward_ns.append(forward)
                join.all_forward_ns.append(forward)
                second = seq // FRAMES_PER_SECOND
                if second >= FROM_SECOND:
                    join.later_forward_ns.append(forward)
                join.by_second_ns.setdefault(second, []).append(forward)
    join.send_times_ns.sort()
    return join


def iso_to_ns(timestamp: str) -> int:
    """Nanoseconds since the epoch of an ISO 8601 UTC timestamp such as 2025-11-24T10:22:18.466778Z, exactly."""
    delta = datetime.datetime.fromisoformat(timestamp) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


def result_latencies(log_lines: Iterable[str], wall_window: tuple[int, int] | None) -> list[int]:
    """Stand-in send (the `t<ns>` text) to the service's `transcript` log line, in ns, for results sent in the
    wall-clock window (all of them when `wall_window` is None)."""
    latencies = []
    for line in log_lines:
        if '"transcript"' not in line:  # cheap pre-filter: the log has other lines too
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        text = event.get("text") if isinstance(event, dict) else None
        stamp = text.split(" ", 1)[0] if isinstance(text, str) else ""  # a final says the alert's phrase after it
        if event.get("event") != "transcript" or not stamp[1:].isdigit():
            continue
        sent = int(stamp[1:])
        if wall_window is None or wall_window[0] <= sent < wall_window[1]:
            latencies.append(iso_to_ns(event["timestamp"]) - sent)
    return latencies


def alert_latencies(log_lines: Iterable[str], wall_window: tuple[int, int] | None) -> list[int]:
    """The service's `transcript` log line of a final (the first thing the service does with it, in ns of wall
    clock) to its `call.alert` line (logged once the alert is queued for the store and published to the live feed),
    for the alerts whose final the stand-in sent in the wall-clock window (all when `wall_window` is None).

    The alert is matched to the last final of its call and track that holds its words' start: the final that
    completed its phrase, logged just before it.
    """
    last_final: dict[tuple[str, str], tuple[int, float, float, int]] = {}  # (call, track) -> (ts, start, end, sent)
    latencies = []
    for line in log_lines:
        if '"transcript"' not in line and '"call.alert"' not in line:  # cheap pre-filter
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        key = (str(event.get("call_sid")), str(event.get("track")))
        if event.get("event") == "transcript" and event.get("is_final"):
            stamp = str(event.get("text", "")).split(" ", 1)[0]
            sent = int(stamp[1:]) if stamp[1:].isdigit() else 0
            last_final[key] = (iso_to_ns(event["timestamp"]), float(event["start"]), float(event["end"]), sent)
        elif event.get("event") == "call.alert" and event.get("kind") == "said" and key in last_final:
            logged, start, end, sent = last_final[key]
            in_window = wall_window is None or wall_window[0] <= sent < wall_window[1]
            if start <= float(event["start"]) <= end and in_window:
                latencies.append(iso_to_ns(event["timestamp"]) - logged)
    return latencies


def _around(ticks: Sequence[Tick], window: Window) -> tuple[Tick, Tick]:
    """The last tick at or before the window's start and the first at or after its end (or the ends)."""
    times = [tick.t_ns for tick in ticks]
    before = max(bisect.bisect_right(times, window.start_ns) - 1, 0)
    after = min(bisect.bisect_left(times, window.end_ns), len(ticks) - 1)
    if after <= before:
        after = min(before + 1, len(ticks) - 1)
    return ticks[before], ticks[after]


def _frames_between(send_times_ns: Sequence[int], start_ns: int, end_ns: int) -> int:
    return bisect.bisect_left(send_times_ns, end_ns) - bisect.bisect_left(send_times_ns, start_ns)


def resource_metrics(ticks: Sequence[Tick], window: Window, join: _Join, idle_rss: int, calls: int) -> Metrics:
    """Service CPU per track-second, CPU %, memory per call and the harness's CPU %, over the window's ticks."""
    if len(ticks) < 2:
        raise ValueError("need at least two /proc samples")
    first, last = _around(ticks, window)
    interval_s = (last.t_ns - first.t_ns) / NS
    cpu_s = last.service_cpu_s - first.service_cpu_s
    audio_s = stats.track_seconds(_frames_between(join.send_times_ns, first.t_ns, last.t_ns))
    cpu_ms = stats.cpu_ms_per_call_second(cpu_s, audio_s) if audio_s > 0 else None
    inside = [tick.service_rss_bytes for tick in ticks if first.t_ns <= tick.t_ns <= last.t_ns]
    peak = max(inside)
    harness_cpu_s = (last.loadgen_cpu_s - first.loadgen_cpu_s) + (last.standin_cpu_s - first.standin_cpu_s)
    return {
        "window_s": interval_s,
        "window_track_seconds": audio_s,
        "service_cpu_s": cpu_s,
        "service_cpu_pct": 100 * cpu_s / interval_s if interval_s > 0 else None,
        "cpu_ms_per_track_second": cpu_ms,
        "calls_per_core": stats.calls_per_core(cpu_ms) if cpu_ms else None,
        "peak_rss_mib": peak / stats.MIB,
        "mib_per_call": stats.memory_per_call_mib(peak, idle_rss, calls),
        "harness_cpu_pct": 100 * harness_cpu_s / interval_s if interval_s > 0 else None,
    }


def whole_call_metrics(ticks: Sequence[Tick], window: Window, join: _Join, calls: int) -> Metrics:
    """CPU per track-second over whole calls, and each call's set-up and tear-down beyond its audio."""
    if len(ticks) < 2:
        raise ValueError("need at least two /proc samples")
    first, last = ticks[0], ticks[-1]
    cpu_s = last.service_cpu_s - first.service_cpu_s
    audio_s = stats.track_seconds(join.sent)
    before, after = _around(ticks, window)
    steady_s = stats.track_seconds(_frames_between(join.send_times_ns, before.t_ns, after.t_ns))
    steady_rate = (after.service_cpu_s - before.service_cpu_s) / steady_s if steady_s > 0 else 0.0  # CPU s / track-s

    def beyond_audio(start: Tick, end: Tick, end_ns: int) -> float:
        audio = stats.track_seconds(_frames_between(join.send_times_ns, start.t_ns, end_ns))
        return 1000 * (end.service_cpu_s - start.service_cpu_s - steady_rate * audio) / calls

    return {
        "whole_cpu_s": cpu_s,
        "whole_track_seconds": audio_s,
        "cpu_ms_per_track_second_whole": stats.cpu_ms_per_call_second(cpu_s, audio_s) if audio_s > 0 else None,
        "setup_cpu_ms_per_call": beyond_audio(first, before, before.t_ns),
        "teardown_cpu_ms_per_call": beyond_audio(after, last, last.t_ns + 1),
    }


def per_second(join: _Join) -> dict[str, list[float | None]]:
    """Forward latency p50 and p99 (ms) for each second of call, from the first."""
    seconds = range(max(join.by_second_ns, default=-1) + 1)
    summaries = [stats.summary(join.by_second_ns.get(second, [])) for second in seconds]
    return {key: [summary[key] for summary in summaries] for key in ("p50", "p99")}


def _prefixed(prefix: str, values: stats.Summary) -> Metrics:
    return {f"{prefix}_{key}_ms" if key != "n" else f"{prefix}_n": value for key, value in values.items()}


def latency_metrics(join: _Join, results_ns: Sequence[int], alerts_ns: Sequence[int] = ()) -> Metrics:
    """Forward, first-audio, result latency, alert latency and send-lag summaries, flattened (forward_p99_ms, ...)."""
    return {
        **_prefixed("alert", stats.summary(alerts_ns)),
        **_prefixed("forward", stats.summary(join.forward_ns)),
        **_prefixed("forward_whole", stats.summary(join.all_forward_ns)),
        **_prefixed("forward_later", stats.summary(join.later_forward_ns)),
        **_prefixed("first_audio", stats.summary(join.first_ns)),
        **_prefixed("result", stats.summary(results_ns)),
        **_prefixed("send_lag", stats.summary(join.send_lag_ns)),
        "frames_sent": join.sent,
        "frames_received": join.received,
        "frames_lost": join.sent - join.received,
    }


def call_metrics(loadgen: Mapping[str, Any], standin: Mapping[str, Any]) -> Metrics:
    """Calls that failed, closes that were not the service's normal 1000, and the harness's own CPU time."""
    calls = loadgen["calls"]
    play_wall_s = loadgen["wall_s"] - loadgen["prepare_s"]
    return {
        "calls_failed": sum(1 for call in calls if call["error"]),
        "abnormal_closes": sum(1 for call in calls if call["close_code"] not in (1000, None)),
        "deepgram_connections": standin["connections"],
        "untagged_frames": standin["untagged_frames"],
        "loadgen_cpu_s": loadgen["cpu_s"] - loadgen["prepare_cpu_s"],
        "loadgen_cpu_pct": 100 * (loadgen["cpu_s"] - loadgen["prepare_cpu_s"]) / play_wall_s,
        "standin_cpu_s": standin["cpu_s"],
    }


def limits(metrics: Mapping[str, float | int | None]) -> list[str]:
    """What gave out in this run, by the thresholds above; [] when nothing did."""

    def over(key: str, limit: float) -> bool:
        value = metrics.get(key)
        return value is not None and value > limit

    found = []
    if over("calls_failed", 0) or over("abnormal_closes", 0):
        found.append("calls failed or closed abnormally")
    if over("frames_lost", 0):
        found.append("frames lost")
    if over("forward_p99_ms", FORWARD_P99_LIMIT_MS):
        found.append(f"forward p99 > {FORWARD_P99_LIMIT_MS:g} ms")
    if over("result_p99_ms", RESULT_P99_LIMIT_MS):
        found.append(f"result p99 > {RESULT_P99_LIMIT_MS:g} ms")
    if over("service_cpu_pct", SERVICE_CPU_LIMIT_PCT):
        found.append(f"service CPU > {SERVICE_CPU_LIMIT_PCT:g}%")
    if over("harness_cpu_pct", HARNESS_CPU_LIMIT_PCT) or over("send_lag_p99_ms", SEND_LAG_LIMIT_MS):
        found.append("harness saturated (load generator late: offered load below real time)")
    return found
