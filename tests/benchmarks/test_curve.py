"""The dial's curve from bench reports: each variant's medians read, the table in the order given (the peer and the
floors once), and the drawing: a point per variant with a latency, a line per floor, a PNG Chromium renders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks import curve
from tests.helpers.browser import CHROMIUM_VARIABLE, chromium_path


def scenario(variant: str, served: str, cpu: float, p99: float | None, ratio: float | None = None) -> dict[str, Any]:
    median = {curve.CPU: cpu, "forward_whole_p50_ms": p99 and p99 / 2, "forward_whole_p99_ms": p99, "frames_lost": 0}
    entry: dict[str, Any] = {"variant": variant, "served": served, "median": median, "skipped": None}
    if ratio is not None:
        entry["cpu_to_inbound_floor"] = {curve.CPU: {"per_round": [ratio], "median": ratio}}
    return entry


def report(*scenarios: dict[str, Any]) -> dict[str, Any]:
    return {"scenarios": list(scenarios)}


FIRST = report(
    scenario("batch20", "callscribe", 5.5, 40.0, 2.5),
    scenario("peer", "peer", 2.9, 380.0),
    scenario("inbound-floor", "inbound-floor", 2.2, None),
    {"variant": "skipped", "served": "callscribe", "median": None, "skipped": "no room"},
)
SECOND = report(
    scenario("batch400", "callscribe", 3.0, 390.0, 1.3), scenario("inbound-floor", "inbound-floor", 2.3, None)
)


def table_of(tmp_path: Path, capsys: pytest.CaptureFixture[str], *reports: dict[str, Any]) -> list[str]:
    """The lines `python -m benchmarks.curve` prints for these reports, in this order."""
    paths = []
    for index, content in enumerate(reports):
        path = tmp_path / f"{index}.json"
        path.write_text(json.dumps(content))
        paths.append(str(path))
    assert curve.main(paths) == 0
    return capsys.readouterr().out.splitlines()


def test_each_variant_that_ran_is_read_with_its_ratio_to_the_inbound_floor() -> None:
    rows = curve.points(FIRST)
    assert [(row.label, row.cpu, row.p99_ms, row.to_inbound_floor) for row in rows] == [
        ("batch20", 5.5, 40.0, 2.5), ("peer", 2.9, 380.0, None), ("inbound-floor", 2.2, None, None)
    ]  # fmt: skip


def test_the_table_has_every_setting_and_the_references_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = table_of(tmp_path, capsys, FIRST, SECOND)
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == [
        "batch20",
        "peer",
        "inbound-floor",
        "batch400",
    ]
    assert lines[5] == "| batch400 | 3.00 | 1.30x | 195 ms | 390 ms | 0 |"


def test_a_floor_run_at_another_batch_is_a_point_of_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The floor batches as callscribe's run does: the one from a report run with AUDIO_BATCH_MS=400 is kept beside
    the 20 ms one (the default) and named for its setting, not dropped as the same floor seen again."""
    at_20 = report(scenario("batch20", "callscribe", 5.5, 40.0, 2.5), scenario("floor", "floor", 3.4, 12.0))
    at_400 = report(scenario("batch400", "callscribe", 3.0, 390.0, 1.7), scenario("floor", "floor", 1.9, 388.0))
    at_400["env"] = ["DATABASE_URL=sqlite:///x", "AUDIO_BATCH_MS=400"]
    assert curve.batch_of(at_400) == "400"
    assert curve.batch_of(at_20) is None
    assert curve.floor_label("auto") == "floor, auto"
    lines = table_of(tmp_path, capsys, at_20, at_400)
    assert lines[2:] == [
        "| batch20 | 5.50 | 2.50x | 20 ms | 40 ms | 0 |",
        "| floor, 20 ms | 3.40 |  | 6 ms | 12 ms | 0 |",
        "| batch400 | 3.00 | 1.70x | 195 ms | 390 ms | 0 |",
        "| floor, 400 ms | 1.90 |  | 194 ms | 388 ms | 0 |",
    ]


def test_the_drawing_marks_every_latency_and_draws_floors_as_lines() -> None:
    drawing = curve.svg(curve.points(FIRST) + curve.points(SECOND)[:1], "title")
    assert drawing.count("<circle") == 3 + len(curve.LEGEND)  # batch20, peer, batch400, and the legend's
    assert drawing.count('stroke-dasharray="4 3"') == 1 + 1  # the inbound floor, and the legend's
    assert "<polyline" in drawing


def test_with_every_ratio_the_drawing_places_each_run_by_its_ratio_not_its_cpu() -> None:
    """Settings are separate runs: two with the same ratio to their own inbound floor sit at the same CPU across,
    whatever the machine's pace in each, and the inbound floor's line is at 1."""
    slow = report(
        scenario("batch20", "callscribe", 5.0, 40.0, 2.5), scenario("inbound-floor", "inbound-floor", 2.0, None)
    )
    fast = report(
        scenario("batch400", "callscribe", 3.0, 390.0, 2.5), scenario("inbound-floor", "inbound-floor", 1.2, None)
    )
    rows = curve.points(slow) + curve.points(fast)[:1]
    assert curve.relative(rows)
    drawing = curve.svg(rows, "title")
    centres = re.findall(r'<circle cx="([0-9.]+)"[^>]*/><text[^>]*>batch', drawing)
    assert len(centres) == 2, drawing
    assert centres[0] == centres[1], "the same ratio, the same place across"
    floor_at = re.search(r'<line x1="([0-9.]+)" x2="[0-9.]+" y1="[0-9.]+" y2="[0-9.]+" stroke="#888"', drawing)
    assert floor_at is not None
    span = curve.WIDTH - curve.LEFT - curve.RIGHT
    assert float(floor_at[1]) == pytest.approx(curve.LEFT + 1 / (2.5 * 1.15) * span, abs=0.1)
    assert "over the inbound floor" in drawing
    assert not curve.relative(curve.points(FIRST)), "the peer has no ratio there: CPU per track-second instead"


async def test_the_drawing_renders_to_a_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHROMIUM_VARIABLE, chromium_path())
    out = tmp_path / "curve.png"
    await curve.render_png(curve.svg(curve.points(FIRST), "title"), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(out.read_bytes()[16:20], "big") == curve.WIDTH
