"""`python -m benchmarks.run --quick` end to end: real service, stand-in and load generator, well-formed report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

REPO = ROOT
LATENCIES = ("forward", "first_audio", "result")


@pytest.mark.parametrize("served", ["callscribe", "floor"])
def test_quick_benchmark_writes_a_well_formed_report(tmp_path: Path, served: str) -> None:
    """Two scenarios run, every frame arrives, and each latency, CPU and memory figure is a sane number; for
    callscribe and for the stack's floor (benchmarks/floor.py) that docs/benchmarks.md compares it with."""
    out_json, out_md = tmp_path / "x.json", tmp_path / "x.md"
    outputs = ["--out-json", str(out_json), "--out-md", str(out_md)]
    floor = ["--floor"] if served == "floor" else []
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "benchmarks.run", "--quick", *floor, *outputs],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads(out_json.read_text())
    output = completed.stdout + completed.stderr  # shown with any failure below
    assert result["floor"] is (served == "floor")
    assert result["machine"]["cpu_count"] >= 1
    # The report is committed: it names no path of the machine that made it (the checkout, the interpreter).
    assert str(REPO) not in out_json.read_text()
    assert sys.executable not in out_json.read_text()
    assert {"cpu_model", "platform", "python"} <= set(result["machine"])
    assert [(s["calls"], s["tracks"], s["start"]) for s in result["scenarios"]] == [
        (3, 1, "together"),
        (2, 2, "together"),
    ]
    for scenario in result["scenarios"]:
        median = scenario["median"]
        context = f"{scenario['name']}: {median} {scenario['details']}\n{output}"
        for name in LATENCIES:
            p50, p99, top = (median[f"{name}_{key}_ms"] for key in ("p50", "p99", "max"))
            assert all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in (p50, p99, top)), context
            assert p50 <= p99 <= top, context
        assert median["frames_lost"] == 0, context
        frames = scenario["calls"] * scenario["tracks"] * 150  # 3 s of 20 ms frames per track
        assert median["frames_sent"] == median["frames_received"] == frames, context
        assert median["cpu_ms_per_track_second"] > 0, context
        assert math.isfinite(median["mib_per_call"]), context
        assert median["calls_failed"] == 0, context
    lines = [line for line in out_md.read_text().splitlines() if line.startswith("|")]
    assert lines[0].startswith("| scenario |")
    assert len(lines) == 2 + len(result["scenarios"])  # header, rule, one row per scenario


def test_subscribers_read_the_live_feed_through_the_run(tmp_path: Path) -> None:
    """--subscribers N keeps N feed clients open during each run; each of them reads every call's events."""
    out_json, out_md = tmp_path / "x.json", tmp_path / "x.md"
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "benchmarks.run", "--scenario", "2:1:together", "--duration-s", "2", "--repeats", "1",
         "--subscribers", "3", "--out-json", str(out_json), "--out-md", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads(out_json.read_text())
    assert result["subscribers"] == 3
    [detail] = result["scenarios"][0]["details"]
    events = detail["subscribers"]["events"]
    assert len(events) == 3
    # Two calls: call.started, a call.state and call.ended each, and their transcripts, on every feed alike.
    assert len(set(events)) == 1
    assert events[0] > 6
