"""The benchmark harness's pure parts: percentiles, rate accounting, medians, frame tags and the run analysis."""

from __future__ import annotations

import json

import pytest

from benchmarks import analysis, report, stats, tagging

MS = 1_000_000
S = 1_000_000_000


def test_percentile_interpolates_between_closest_ranks() -> None:
    """Odd and even lengths give numpy's linear-interpolation percentiles."""
    assert stats.percentile([1, 2, 3, 4, 5], 50) == 3.0
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([1, 2, 3, 4], 25) == pytest.approx(1.75)
    assert stats.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert stats.percentile([10, 20], 99) == pytest.approx(19.9)


def test_percentile_ends_and_single_value() -> None:
    """q=0 is the minimum, q=100 the maximum, and one value is every percentile."""
    values = [7, 3, 9, 1]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 9.0
    assert stats.percentile([42], 0) == stats.percentile([42], 99) == stats.percentile([42], 100) == 42.0


def test_percentile_sorts_its_input() -> None:
    """Unsorted input gives the same answer as sorted input, and the input is left as it was."""
    values = [5, 1, 4, 2, 3]
    assert stats.percentile(values, 50) == 3.0
    assert stats.percentile(values, 75) == 4.0
    assert values == [5, 1, 4, 2, 3]


def test_percentile_refuses_empty_input_and_bad_q() -> None:
    """No values, or q outside 0..100, is a ValueError."""
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        stats.percentile([1], 101)


def test_summary_is_in_milliseconds_from_nanoseconds() -> None:
    """summary() takes ns and reports n, p50, p99 and max in ms; empty input gives None percentiles."""
    result = stats.summary([1 * MS, 2 * MS, 3 * MS, 4 * MS, 100 * MS])
    assert result["n"] == 5
    assert result["p50"] == 3.0
    assert result["p99"] == pytest.approx(4 + 0.96 * 96)
    assert result["max"] == 100.0
    assert stats.summary([]) == {"n": 0, "p50": None, "p99": None, "max": None}


def test_cpu_accounting_uses_delivered_audio() -> None:
    """1.5 CPU s over 1,500 frames (30 track-seconds) is 50 ms per track-second: 20 calls per core."""
    audio_s = stats.track_seconds(1500)
    assert audio_s == pytest.approx(30.0)
    cpu_ms = stats.cpu_ms_per_call_second(1.5, audio_s)
    assert cpu_ms == pytest.approx(50.0)
    assert stats.calls_per_core(cpu_ms) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="no audio"):
        stats.cpu_ms_per_call_second(1.0, 0.0)
    with pytest.raises(ValueError, match="positive"):
        stats.calls_per_core(0.0)


def test_memory_per_call() -> None:
    """RSS growth over idle, shared by the calls, in MiB."""
    idle = 100 * stats.MIB
    assert stats.memory_per_call_mib(idle + 50 * stats.MIB, idle, 25) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        stats.memory_per_call_mib(idle, idle, 0)


def test_median_of_runs_per_metric() -> None:
    """Each metric's median across runs; missing or None values are left out."""
    runs: list[dict[str, float | int | None]] = [
        {"p99": 3.0, "lost": 0, "cpu": None},
        {"p99": 1.0, "lost": 2, "cpu": 5.0},
        {"p99": 2.0, "lost": 1},
    ]
    assert stats.median_of_runs(runs) == {"p99": 2.0, "lost": 1, "cpu": 5.0}
    assert stats.median_of_runs([{"a": 1.0}, {"a": 2.0}]) == {"a": 1.5}
    assert stats.median_of_runs([{"a": None}]) == {"a": None}


def test_tag_round_trip() -> None:
    """A packed frame is 160 bytes of silence behind its tag, and unpacks to the same numbers."""
    frame = tagging.pack_frame(65535, 1, 123_456)
    assert len(frame) == tagging.FRAME_BYTES
    assert frame[tagging.TAG_BYTES :] == b"\xff" * (tagging.FRAME_BYTES - tagging.TAG_BYTES)
    assert tagging.unpack_frame(frame) == (65535, 1, 123_456)
    assert tagging.unpack_frame(b"\xff" * 160) is None


def test_tags_of_concatenated_frames() -> None:
    """A batched send (several whole frames back to back) yields each frame's key in order; untagged ones b""."""
    frames = [tagging.pack_frame(3, 0, seq) for seq in range(5)]
    keys = list(tagging.frame_keys(b"".join(frames) + b"\xff" * 160))
    assert [tagging.key_fields(key) for key in keys[:5]] == [(3, 0, seq) for seq in range(5)]
    assert keys[5] == b""


def test_steady_window_and_its_fallbacks() -> None:
    """[last start + 2 s, first stop - 1 s] when it lasts a second, else wider, flagged."""
    assert analysis.steady_window([0, 1 * S], [10 * S, 11 * S]) == analysis.Window(3 * S, 9 * S, fallback=False)
    assert analysis.steady_window([0], [3 * S]) == analysis.Window(0, 3 * S, fallback=True)
    assert analysis.steady_window([0, 5 * S], [3 * S, 8 * S]) == analysis.Window(0, 8 * S, fallback=True)


def _loadgen(sent_ns: list[list[int]], start_ns: int = 0) -> dict[str, object]:
    call = {"index": 0, "start_ns": start_ns, "frames_planned": len(sent_ns[0]), "sent_ns": sent_ns}
    return {"frame_ns": 20 * MS, "calls": [call]}


def test_join_frames_counts_latency_loss_and_lag() -> None:
    """Forward latency per steady frame, the first frame apart, lost frames counted, lag against the plan."""
    sent = [[0 * MS + 1 * MS, 20 * MS, 40 * MS, 60 * MS]]
    receipts = {"call": [0, 0, 0], "track": [0, 0, 0], "seq": [0, 1, 3], "ns": [31 * MS, 22 * MS, 65 * MS]}
    window = analysis.Window(10 * MS, 100 * MS, fallback=False)
    join = analysis.join_frames(_loadgen(sent), receipts, window)
    assert (join.sent, join.received) == (4, 3)
    assert join.first_ns == [30 * MS]
    assert join.forward_ns == [2 * MS, 5 * MS]
    assert join.send_lag_ns == [1 * MS, 0, 0, 0]


def test_resource_metrics_account_cpu_to_audio_in_the_sampled_interval() -> None:
    """CPU between the ticks around the window, over the audio sent between those ticks."""
    ticks = [
        analysis.Tick(0, 1.0, 100 * stats.MIB, 0.0, 0.0),
        analysis.Tick(1 * S, 1.1, 110 * stats.MIB, 0.1, 0.1),
        analysis.Tick(2 * S, 1.3, 120 * stats.MIB, 0.2, 0.2),
    ]
    sends = [[1 * MS + t * 20 * MS for t in range(100)] for _ in range(2)]  # 2 tracks x 2 s: 200 frames
    join = analysis.join_frames(
        _loadgen(sends), {"call": [], "track": [], "seq": [], "ns": []}, analysis.Window(0, 0, False)
    )
    metrics = analysis.resource_metrics(ticks, analysis.Window(0, 2 * S, False), join, 100 * stats.MIB, calls=2)
    assert metrics["window_track_seconds"] == pytest.approx(4.0)
    assert metrics["cpu_ms_per_track_second"] == pytest.approx(75.0)  # 0.3 CPU s / 4 track-s
    assert metrics["service_cpu_pct"] == pytest.approx(15.0)
    assert metrics["mib_per_call"] == pytest.approx(10.0)
    assert metrics["harness_cpu_pct"] == pytest.approx(20.0)


def test_result_latency_from_log_lines() -> None:
    """The service's transcript timestamp minus the stand-in's embedded send time; other lines are skipped."""
    sent = analysis.iso_to_ns("2025-11-24T10:00:00.000000Z")
    lines = [
        json.dumps({"event": "transcript", "text": f"t{sent}", "timestamp": "2025-11-24T10:00:00.002500Z"}),
        json.dumps({"event": "call.started", "timestamp": "2025-11-24T10:00:00Z"}),
        json.dumps({"event": "transcript", "text": "hello", "timestamp": "2025-11-24T10:00:00Z"}),
        'not json, but mentions "transcript"',
    ]
    assert analysis.result_latencies(lines, None) == [2_500_000]
    assert analysis.result_latencies(lines, (sent + 1, sent + 2)) == []


def test_result_latency_reads_the_stamp_before_the_alert_phrase() -> None:
    """A final says the alert's phrase after its `t<ns>` stamp: the stamp is still what the latency starts from."""
    sent = analysis.iso_to_ns("2025-11-24T10:00:00.000000Z")
    line = json.dumps(
        {"event": "transcript", "text": f"t{sent} cancel my account", "timestamp": "2025-11-24T10:00:00.001Z"}
    )
    assert analysis.result_latencies([line], None) == [1_000_000]


def test_alert_latency_is_from_the_completing_finals_line_to_the_alerts() -> None:
    """Each `call.alert` is timed from the last final of its call and track holding its start; an alert of
    another track, or with no final holding it, or whose final was sent outside the window, is not counted."""
    sent = analysis.iso_to_ns("2025-11-24T10:00:00.000000Z")

    def final(track: str, start: float, end: float, at: str) -> str:
        text = f"t{sent} cancel my account"
        return json.dumps({"event": "transcript", "is_final": True, "call_sid": "CA1", "track": track, "text": text,
                           "start": start, "end": end, "timestamp": at})  # fmt: skip

    def alert(track: str, start: float, at: str, kind: str = "said") -> str:
        return json.dumps({"event": "call.alert", "kind": kind, "call_sid": "CA1", "track": track, "start": start,
                           "timestamp": at})  # fmt: skip

    lines = [
        final("inbound", 0.0, 1.0, "2025-11-24T10:00:01.000000Z"),
        alert("inbound", 0.5, "2025-11-24T10:00:01.000300Z"),  # 0.3 ms after its final
        alert("outbound", 0.5, "2025-11-24T10:00:01.000400Z"),  # no outbound final: not counted
        alert("inbound", 3.0, "2025-11-24T10:00:01.000500Z"),  # not in the last final
        alert("inbound", 0.5, "2025-11-24T10:00:01.000600Z", kind="absent"),  # no words to time
        final("inbound", 1.0, 2.0, "2025-11-24T10:00:02.000000Z"),
        alert("inbound", 1.5, "2025-11-24T10:00:02.002000Z"),
    ]
    assert analysis.alert_latencies(lines, None) == [300_000, 2_000_000]
    assert analysis.alert_latencies(lines, (sent + 1, sent + 2)) == []


def test_limits_name_what_gave_out() -> None:
    """The report names lost frames, a slow p99, a saturated service and a saturated harness."""
    assert analysis.limits({"frames_lost": 0, "forward_p99_ms": 5.0}) == []
    found = analysis.limits(
        {"frames_lost": 3, "forward_p99_ms": 500.0, "service_cpu_pct": 99.0, "send_lag_p99_ms": 50.0}
    )
    assert found[0] == "frames lost"
    assert len(found) == 4


def test_markdown_block_replaces_only_between_markers() -> None:
    """The table goes between the bench markers; text around them is kept; no markers: None."""
    document = f"intro\n{report.START_MARKER}\nold\n{report.END_MARKER}\noutro\n"
    assert report.replace_block(document, "new") == f"intro\n{report.START_MARKER}\nnew\n{report.END_MARKER}\noutro\n"
    assert report.replace_block("no markers", "new") is None
    scenario = {"name": "1 calls x 1 track, together", "median": {"forward_whole_p50_ms": 1.234, "frames_lost": 0}}
    lines = report.table([scenario], report.LATENCY_COLUMNS).splitlines()
    assert lines[0].startswith("| scenario |")
    assert lines[2].startswith("| 1 calls x 1 track, together | 1.23 |")
    startup = f"a\n{report.STARTUP_MARKERS[0]}\nold\n{report.STARTUP_MARKERS[1]}\n{document}"
    replaced = report.replace_block(startup, "new", report.STARTUP_MARKERS)
    assert replaced == f"a\n{report.STARTUP_MARKERS[0]}\nnew\n{report.STARTUP_MARKERS[1]}\n{document}"


def test_join_frames_reports_whole_calls_later_seconds_and_each_second() -> None:
    """Every frame counts over the whole call; from the 3rd second on only frames 2 s or more into their call."""
    sends = [[MS + seq * 20 * MS for seq in range(150)]]  # 3 s of one track (0 would mean "never sent")
    receipts = {
        "call": [0] * 150,
        "track": [0] * 150,
        "seq": list(range(150)),
        "ns": [MS + seq * 20 * MS + (50 if seq < 50 else 2) * MS for seq in range(150)],  # the first second slow
    }
    join = analysis.join_frames(_loadgen(sends), receipts, analysis.Window(0, 0, False))
    assert len(join.all_forward_ns) == 150
    assert join.later_forward_ns == [2 * MS] * 50
    assert sorted(join.by_second_ns) == [0, 1, 2]
    assert analysis.per_second(join) == {"p50": [50.0, 2.0, 2.0], "p99": [50.0, 2.0, 2.0]}
    metrics = analysis.latency_metrics(join, [])
    assert (metrics["forward_whole_max_ms"], metrics["forward_later_p99_ms"]) == (50.0, 2.0)


def test_whole_calls_count_set_up_and_tear_down_beyond_their_audio() -> None:
    """Steady: 0.1 CPU s per track-second. Set-up spends 0.5 s more than its audio, tear-down 0.3 s, for 2 calls."""
    ticks = [
        analysis.Tick(0, 10.0, 0, 0.0, 0.0),  # the load generator starts: /voice, upgrades, connections
        analysis.Tick(2 * S, 10.7, 0, 0.0, 0.0),  # 2 track-s of audio in set-up: 0.2 s of it, 0.5 s beyond
        analysis.Tick(4 * S, 11.1, 0, 0.0, 0.0),  # steady: 4 track-s, 0.4 s
        analysis.Tick(6 * S, 11.5, 0, 0.0, 0.0),  # 0 track-s after the last frame: all of it tear-down
    ]
    sends = [[S + t * 20 * MS for t in range(150)] for _ in range(2)]  # two tracks, 1 s to 4 s
    join = analysis.join_frames(
        _loadgen(sends), {"call": [], "track": [], "seq": [], "ns": []}, analysis.Window(0, 0, False)
    )
    metrics = analysis.whole_call_metrics(ticks, analysis.Window(2 * S, 4 * S, False), join, calls=2)
    assert metrics["whole_track_seconds"] == pytest.approx(6.0)
    assert metrics["cpu_ms_per_track_second_whole"] == pytest.approx(1500 / 6)
    assert metrics["setup_cpu_ms_per_call"] == pytest.approx(250.0)
    assert metrics["teardown_cpu_ms_per_call"] == pytest.approx(200.0)  # 0.4 CPU s, no audio in it, 2 calls


def test_ratios_are_per_round_medians_and_series_per_second() -> None:
    """Each round's ratio to the first variant in that round, then the median; failed rounds left out."""
    firsts = [{"cpu_ms_per_track_second_whole": 10.0}, {"cpu_ms_per_track_second_whole": 20.0}, None]
    mine = [{"cpu_ms_per_track_second_whole": 5.0}, {"cpu_ms_per_track_second_whole": 30.0}, {"x": 1.0}]
    ratios = stats.ratios_per_round(mine, firsts)
    assert ratios["cpu_ms_per_track_second_whole"] == pytest.approx(1.0)  # median of 0.5 and 1.5
    assert ratios["forward_whole_p99_ms"] is None
    assert stats.median_per_index([[1.0, 5.0], [3.0, None, 7.0]]) == [2.0, 5.0, 7.0]


def test_ratios_to_the_inbound_floor_keep_every_round_and_their_median() -> None:
    """Round by round against the inbound floor: a failed round is None in the list and left out of the median;
    the report's table shows the list and the median."""
    floor = [{"cpu_ms_per_track_second_whole": 2.0}, None, {"cpu_ms_per_track_second_whole": 4.0}]
    mine = [{"cpu_ms_per_track_second_whole": 5.0}, {"cpu_ms_per_track_second_whole": 9.0}, {"x": 1.0}]
    per_round = stats.per_round_ratios(mine, floor, "cpu_ms_per_track_second_whole")
    assert per_round == [2.5, None, None]
    assert stats.median_or_none(per_round) == 2.5
    assert stats.median_or_none([None]) is None
    entry = {
        "name": "40 calls x both tracks, together", "variant": "main", "skipped": None,
        "cpu_to_inbound_floor": {"cpu_ms_per_track_second_whole": {"per_round": [2.5, 2.7], "median": 2.6}},
    }  # fmt: skip
    table = report.inbound_floor_table([entry, {**entry, "variant": "floor", "cpu_to_inbound_floor": {}}])
    assert table is not None
    assert table.splitlines()[2] == "| 40 calls x both tracks, together [main] | 2.50, 2.70 | 2.60 | n/a | n/a |"
    assert len(table.splitlines()) == 3, "only variants with a ratio have a row"
    assert report.inbound_floor_table([{**entry, "cpu_to_inbound_floor": {}}]) is None
