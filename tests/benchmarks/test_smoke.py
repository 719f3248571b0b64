"""`python -m benchmarks.run --quick` end to end: real service, stand-in and load generator, well-formed report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import floor
from benchmarks.floor import frames_per_send
from service.deepgram.protocol import live_options
from tests.helpers.paths import ROOT
from tests.helpers.service import make_settings

REPO = ROOT
LATENCIES = ("forward", "first_audio", "result")


def run_benchmark(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str, Path]:
    """`python -m benchmarks.run ARGS` into tmp_path: its JSON report, its output and the Markdown file."""
    out_json, out_md = tmp_path / "x.json", tmp_path / "x.md"
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "benchmarks.run", *args, "--out-json", str(out_json), "--out-md", str(out_md)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    text = out_json.read_text()
    # The report is committed: it names no path of the machine that made it (the checkout, the interpreter).
    assert str(REPO) not in text
    assert sys.executable not in text
    return json.loads(text), completed.stdout + completed.stderr, out_md


@pytest.mark.parametrize("served", ["callscribe", "floor", "peer"])
def test_quick_benchmark_writes_a_well_formed_report(tmp_path: Path, served: str) -> None:
    """Two scenarios run, every frame arrives, and each latency, CPU and memory figure is a sane number; for
    callscribe (on v1 and on Flux), for the stack's floor (benchmarks/floor.py), and for callscribe and the peer
    in turn."""
    flags = {"callscribe": [], "floor": ["--floor"], "peer": ["--peer"]}[served]
    result, output, out_md = run_benchmark(tmp_path, "--quick", *flags)
    assert result["floor"] is (served == "floor")
    assert result["pinned"] is False, "unpinned by default: the harness shares the cores with the server"
    assert result["machine"]["cpu_count"] >= 1
    assert {"cpu_model", "platform", "python"} <= set(result["machine"])
    # callscribe on Deepgram Flux runs beside it in the same rounds (the stand-in speaks /v2/listen too).
    variants = {
        "callscribe": ["callscribe", "callscribe-flux"],
        "floor": ["floor"],
        "peer": ["callscribe", "callscribe-flux", "peer"],
    }[served]
    assert [v["label"] for v in result["variants"]] == variants
    shapes = [(s["calls"], s["tracks"], s["start"], s["variant"]) for s in result["scenarios"]]
    assert shapes == [(3, 1, "together", v) for v in variants] + [(2, 2, "together", v) for v in variants]
    for scenario in result["scenarios"]:
        if scenario["variant"] == "peer" and scenario["tracks"] == 1:
            assert scenario["skipped"], "the peer's design needs both tracks"
            continue
        check_scenario(scenario, output)
    lines = [line for line in out_md.read_text().splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| scenario |")
    assert any(line.startswith("| second of call |") for line in lines), "forward p99 by second of call"


def test_subscribers_read_the_live_feed_through_the_run(tmp_path: Path) -> None:
    """--subscribers-ab N serves the checkout twice a round, the second time with N feed clients open, each of which
    reads every call's events; the first run has none."""
    result, _, _ = run_benchmark(
        tmp_path, "--scenario", "2:1:together", "--duration-s", "2", "--repeats", "1", "--subscribers-ab", "3",
        "--no-flux",
    )  # fmt: skip
    assert result["subscribers_ab"] == 3
    assert [v["label"] for v in result["variants"]] == ["callscribe", "callscribe-3pages"]
    none, pages = result["scenarios"]
    assert "subscribers" not in none["details"][0]
    [detail] = pages["details"]
    events = detail["subscribers"]["events"]
    assert detail["subscribers"]["count"] == 3
    assert len(events) == 3
    # Two calls: call.started, a call.state and call.ended each, and their transcripts, on every feed alike.
    assert len(set(events)) == 1
    assert events[0] > 6
    assert pages["median"]["frames_lost"] == 0


def test_attackers_post_huge_forms_through_the_run_and_every_frame_still_arrives(tmp_path: Path) -> None:
    """--attackers N posts unsigned 15 MB forms to /voice and /login during each run: each is refused, and the
    calls lose no frame to them."""
    result, _, _ = run_benchmark(
        tmp_path, "--scenario", "2:1:together", "--duration-s", "2", "--repeats", "1", "--attackers", "2", "--no-flux"
    )
    assert result["attackers"] == 2
    [scenario] = result["scenarios"]
    [detail] = scenario["details"]
    statuses = detail["attackers"]["statuses"]
    # 0: the connection was reset before the answer was read (the server closes on the body it did not read).
    assert set(statuses) <= {"/voice 403", "/login 413", "/voice 0", "/login 0"}, statuses
    assert statuses.get("/voice 403", 0) >= 1
    assert statuses.get("/login 413", 0) >= 1
    assert scenario["median"]["frames_lost"] == 0
    assert scenario["median"]["frames_received"] == 2 * 100  # 2 s of 20 ms frames, two calls


def test_both_floors_run_in_the_same_rounds_and_callscribe_is_a_ratio_of_the_inbound_one(tmp_path: Path) -> None:
    """--floors serves benchmarks/floor.py and benchmarks/inbound_floor.py in each round after callscribe: the
    inbound floor's calls all end normally with nothing forwarded (not "lost"), the floor forwards every frame,
    and callscribe's CPU is divided by the inbound floor's round by round."""
    result, output, out_md = run_benchmark(
        tmp_path, "--scenario", "2:2:together", "--duration-s", "2", "--repeats", "2", "--no-flux", "--floors"
    )
    assert result["inbound_floor"] is True
    assert [v["label"] for v in result["variants"]] == ["callscribe", "floor", "inbound-floor"]
    callscribe, floor, inbound = result["scenarios"]
    assert floor["median"]["frames_lost"] == 0, output
    assert inbound["served"] == "inbound-floor"
    assert inbound["median"]["calls_failed"] == inbound["median"]["abnormal_closes"] == 0, output
    assert inbound["median"]["frames_sent"] == 2 * 2 * 100
    assert inbound["median"]["frames_lost"] is None, "it forwards nothing by design"
    assert inbound["median"]["deepgram_connections"] == 0
    assert "frames lost" not in inbound["limits"]
    assert inbound["median"]["cpu_ms_per_track_second_whole"] > 0
    assert inbound["cpu_to_inbound_floor"] == {}, "the inbound floor is the unit, not a ratio of itself"
    for served in (callscribe, floor):  # the floor's ratio says what the stack costs on its own, in the same rounds
        ratio = served["cpu_to_inbound_floor"]["cpu_ms_per_track_second_whole"]
        per_round = [
            run["cpu_ms_per_track_second_whole"] / other["cpu_ms_per_track_second_whole"]
            for run, other in zip(served["runs"], inbound["runs"], strict=True)
        ]
        assert ratio["per_round"] == pytest.approx(per_round)
        assert ratio["median"] == pytest.approx(sum(per_round) / 2)
    assert "CPU against the inbound floor" in out_md.read_text()
    assert "vs the inbound floor: CPU whole" in output


def test_the_floor_batches_as_callscribe_is_told_to(tmp_path: Path) -> None:
    """With AUDIO_BATCH_MS=300 the floor (Hypercorn + the SDK) joins 0.3 s of a track's frames per send, so its
    cost at that setting is the stack's: every frame still arrives (2 s is 6 whole batches and 10 frames, which go
    before CloseStream), each having waited for its batch to fill (a frame sent as it came waits a few ms)."""
    result, output, _ = run_benchmark(
        tmp_path, "--scenario", "2:1:together", "--duration-s", "2", "--repeats", "1", "--no-flux", "--floor",
        "--env", "AUDIO_BATCH_MS=300",
    )  # fmt: skip
    (floor,) = result["scenarios"]
    assert floor["median"]["frames_lost"] == 0, output
    assert floor["median"]["frames_received"] == 2 * 100
    assert floor["median"]["forward_p50_ms"] > 80, "a frame waits for its batch: 140 ms on average at 300 ms"


def test_floor_frames_per_send() -> None:
    assert [frames_per_send(ms) for ms in ("20", "40", "100", "400", "auto", "30")] == [1, 2, 5, 20, 1, 1]


def test_the_floor_asks_deepgram_what_callscribe_asks() -> None:
    """The floor's connection options are callscribe's with its default settings, one track a connection: with
    fewer (no interim results, say) the floor's SDK would parse fewer messages than callscribe's, and its cost
    would read as callscribe's own."""
    assert live_options(make_settings(deepgram_mip_opt_out=True), channels=1) == floor.OPTIONS


def check_scenario(scenario: dict[str, Any], output: str, *, workers: int = 1) -> None:
    median = scenario["median"]
    context = f"{scenario['name']}: {median} {scenario['details']}\n{output}"
    for name in LATENCIES:
        p50, p99, top = (median[f"{name}_{key}_ms"] for key in ("p50", "p99", "max"))
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in (p50, p99, top)), context
        assert p50 <= p99 <= top, context
    frames = scenario["calls"] * scenario["tracks"] * 150  # 3 s of 20 ms frames per track
    assert median["frames_sent"] == frames, context
    if scenario["variant"] == "peer":  # the sample's design leaves the last part-filled 0.4 s unsent
        assert frames - median["frames_received"] < scenario["calls"] * scenario["tracks"] * 20, context
    else:
        assert median["frames_lost"] == 0, context
        assert median["frames_received"] == frames, context
    assert median["cpu_ms_per_track_second"] > 0, context
    assert median["cpu_ms_per_track_second_whole"] > 0, context
    assert len(scenario["per_second"]["p99"]) == 3, context
    assert median["startup_cpu_s"] > 0, context
    if scenario["variant"] != "floor" and workers == 1:  # the floor is `hypercorn --workers 1`: a supervisor, a worker
        assert median["processes"] == 1, "one worker is served in-process"
    assert math.isfinite(median["mib_per_call"]), context
    assert median["calls_failed"] == 0, context
    if scenario["variant"].startswith("callscribe") and workers == 1:  # each caller final says the alert phrase
        assert median["alert_n"] > 0, context
        assert 0 <= median["alert_p50_ms"] <= median["alert_p99_ms"] < 50, context


def test_startup_mode_reports_time_cpu_and_memory(tmp_path: Path) -> None:
    """`--startup` starts and stops the server only, and reports its start-up and idle memory."""
    result, _, out_md = run_benchmark(tmp_path, "--startup", "--repeats", "1")
    assert [row["variant"] for row in result["startup"]] == ["callscribe", "callscribe-flux"]
    for row in result["startup"]:
        median = row["median"]
        assert median["startup_ms"] > 0
        assert 0 < median["startup_cpu_s"] < 30
        assert 10 < median["idle_rss_mib"] < 1000
        assert median["processes"] == 1
    assert report_markers_in(out_md.read_text())


def report_markers_in(text: str) -> bool:
    return "<!-- bench-startup:start -->" in text and "| server |" in text


def test_two_workers_carry_the_calls_and_the_report_says_where_p99_would_cross(tmp_path: Path) -> None:
    """`--workers 2` serves callscribe under Hypercorn's supervisor (WEB_CONCURRENCY=2 on a dyno): every frame of
    calls at two sizes arrives, and the report sizes a dyno by them (`p99_crossing`)."""
    result, output, out_md = run_benchmark(
        tmp_path, "--calls", "2,4", "--tracks", "1", "--start", "staggered", "--duration-s", "3", "--repeats", "1",
        "--no-flux", "--workers", "2",
    )  # fmt: skip
    assert result["workers"] == 2
    for scenario in result["scenarios"]:
        check_scenario(scenario, output, workers=2)
        # Hypercorn's supervisor, its two workers, and multiprocessing's resource tracker
        assert scenario["median"]["processes"] == 4, scenario["median"]
    [crossing] = result["p99_crossing"]
    assert (crossing["variant"], crossing["tracks"], crossing["start"]) == ("callscribe", 1, "staggered")
    assert crossing["most_within"] == 4  # a few calls stay far within 100 ms
    assert crossing["fewest_past"] is None
    assert "forward p99 within 100 ms up to 4 calls" in out_md.read_text()
