"""The latency-cost dial drawn: CPU against forward latency for each AUDIO_BATCH_MS, with the peer and both floors.

`python -m benchmarks.curve RUN.json [RUN.json ...] --png docs/images/batching-curve.png` reads `make bench`'s JSON
reports (one per setting: `--env AUDIO_BATCH_MS=N --label batchN`, each with the inbound floor in its rounds), prints
the curve as a Markdown table (the medians of each variant, and its CPU over the inbound floor of the same rounds)
and draws it as a PNG: CPU on one axis (over the inbound floor of the same rounds when every variant has that
ratio, else per track-second of whole calls), forward p99 on the other, one point per setting, the peer and the
floors as their own marks. The floor with the SDK batches as callscribe does, so each report adds its floor at its
setting (`floor, N ms`). The picture is an SVG laid out here and rendered to PNG by headless Chromium
(Playwright, which the page's tests use): no plotting library.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

CPU = "cpu_ms_per_track_second_whole"
INBOUND_FLOOR = "inbound-floor"  # what the runner serves for --inbound-floor: the unit of the ratios
WIDTH, HEIGHT = 940, 460
LEFT, RIGHT, TOP, BOTTOM = 80, 310, 40, 60  # the plot's margins, px: the legend sits on the right
COLOURS = {"callscribe": "#1f5fa8", "peer": "#b5532a", "floor": "#2e7d32"}
LEGEND = (("callscribe", "callscribe, by AUDIO_BATCH_MS"), ("peer", "the peer (Deepgram's sample)"),
          ("floor", "the floor: Hypercorn + the SDK's sends"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Point:
    """One variant of one report: its label, what it serves, and its medians."""

    label: str
    served: str
    cpu: float  # ms of CPU per track-second of whole calls
    p50_ms: float | None
    p99_ms: float | None
    lost: int
    to_inbound_floor: float | None  # its CPU over the inbound floor's, median of the rounds' ratios


def points(report: dict[str, Any]) -> list[Point]:
    """Every variant of a report that ran."""
    found = []
    for scenario in report["scenarios"]:
        median = scenario.get("median") or {}
        if scenario.get("skipped") or CPU not in median:
            continue
        ratio = ((scenario.get("cpu_to_inbound_floor") or {}).get(CPU) or {}).get("median")
        found.append(
            Point(
                label=scenario["variant"], served=scenario["served"], cpu=float(median[CPU]),
                p50_ms=median.get("forward_whole_p50_ms"), p99_ms=median.get("forward_whole_p99_ms"),
                lost=int(median.get("frames_lost") or 0), to_inbound_floor=ratio,
            )
        )  # fmt: skip
    return found


def batch_of(report: dict[str, Any]) -> str | None:
    """The report's AUDIO_BATCH_MS (given with --env), or None for the default (20 ms)."""
    for item in report.get("env") or []:
        key, _, value = str(item).partition("=")
        if key == "AUDIO_BATCH_MS":
            return value
    return None


def floor_label(batch: str | None) -> str:
    """The floor's name on the curve: by the setting it batched as (20 ms when the report set none)."""
    batch = batch or "20"
    return f"floor, {batch} ms" if batch.isdigit() else f"floor, {batch}"


def table(rows: list[Point]) -> str:
    """The curve as Markdown: one row per variant, in the order given."""
    lines = [
        "| variant | CPU, ms per track-second | over the inbound floor | forward p50 | forward p99 | frames lost |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = f"{row.to_inbound_floor:.2f}x" if row.to_inbound_floor is not None else ""
        p50 = f"{row.p50_ms:.0f} ms" if row.p50_ms is not None else "n/a"
        p99 = f"{row.p99_ms:.0f} ms" if row.p99_ms is not None else "n/a"
        lines.append(f"| {row.label} | {row.cpu:.2f} | {ratio} | {p50} | {p99} | {row.lost} |")
    return "\n".join(lines)


def relative(rows: list[Point]) -> bool:
    """Whether the drawing can put every row at its CPU over the inbound floor of its own rounds: an inbound floor
    is among them and every other row has its ratio (reports from before the floor and the peer had one do not)."""
    return any(row.served == INBOUND_FLOOR for row in rows) and all(
        row.to_inbound_floor is not None for row in rows if row.served != INBOUND_FLOOR
    )


def across(row: Point, *, ratios: bool) -> float:
    """Where `row` sits on the CPU axis: its ratio to the inbound floor (the inbound floor at 1), or its CPU."""
    if not ratios:
        return row.cpu
    return 1.0 if row.served == INBOUND_FLOOR else row.to_inbound_floor or 0.0


def svg(rows: list[Point], title: str) -> str:
    """CPU (x) against forward p99 (y, log scale) for every row with a latency; the floors as vertical lines.

    CPU is each row's ratio to the inbound floor of its own rounds when every row has one: the settings are
    separate runs, and a run on a faster moment of a shared machine would otherwise sit left of one on a slower.
    """
    import math  # noqa: PLC0415 - only drawing needs it

    ratios = relative(rows)
    plotted = [row for row in rows if row.p99_ms]
    floors = [row for row in rows if not row.p99_ms]
    x_max = max(across(row, ratios=ratios) for row in rows) * 1.15
    y_low, y_high = 1.0, max(row.p99_ms or 1.0 for row in plotted) * 2
    span_x, span_y = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(value: float) -> float:
        return LEFT + value / x_max * span_x

    def y(value: float) -> float:
        return TOP + span_y - (math.log10(max(value, y_low)) - math.log10(y_low)) / math.log10(y_high / y_low) * span_y

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{html.escape(title)}</text>']  # fmt: skip
    for tick in (1, 10, 100, 1000):
        if tick <= y_high:
            parts.append(f'<line x1="{LEFT}" x2="{LEFT + span_x}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#ddd"/>'
                         f'<text x="{LEFT - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick} ms</text>')  # fmt: skip
    step = 0.5 if ratios else 1.0 if x_max <= 12 else 2.0
    tick_x = 0.0
    while tick_x <= x_max:
        at = x(tick_x)
        parts.append(f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{TOP}" y2="{TOP + span_y}" stroke="#eee"/>'
                     f'<text x="{at:.1f}" y="{TOP + span_y + 16}" text-anchor="middle">{tick_x:g}</text>')  # fmt: skip
        tick_x += step
    x_title = ("CPU of whole calls over the inbound floor's in the same rounds (median of the rounds' ratios)"
               if ratios else "CPU, ms per track-second of whole calls (the service's process tree)")  # fmt: skip
    parts.append(f'<text x="{LEFT + span_x / 2}" y="{HEIGHT - 16}" text-anchor="middle">{x_title}</text>'
                 f'<text transform="translate(18 {TOP + span_y / 2}) rotate(-90)" text-anchor="middle">forward p99 '
                 "(log scale)</text>")  # fmt: skip
    for row in floors:
        at = x(across(row, ratios=ratios))
        parts.append(f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{TOP}" y2="{TOP + span_y}" '
                     f'stroke="#888" stroke-dasharray="4 3"/><text x="{at + 3:.1f}" y="{TOP + 12}" '
                     f'fill="#555">{html.escape(row.label)}</text>')  # fmt: skip
    # The dial's line joins the fixed settings in order; `auto`, and another checkout (`baseline`), stand alone.
    ours = [
        row for row in plotted if row.served == "callscribe" and row.label != "baseline" and "auto" not in row.label
    ]
    path = " ".join(f"{x(across(row, ratios=ratios)):.1f},{y(row.p99_ms or 1):.1f}" for row in ours)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS["callscribe"]}" stroke-width="2"/>')
    for row in plotted:
        colour = "#999" if row.label == "baseline" else COLOURS.get(row.served, "#555")
        at, below = x(across(row, ratios=ratios)), "auto" in row.label  # auto sits by 20 ms: its name goes below
        label_y = y(row.p99_ms or 1) + (16 if below else -6)
        parts.append(f'<circle cx="{at:.1f}" cy="{y(row.p99_ms or 1):.1f}" r="5" fill="{colour}"/>'
                     f'<text x="{at + 8:.1f}" y="{label_y:.1f}">{html.escape(row.label)}</text>')  # fmt: skip
    legend_x = WIDTH - RIGHT + 20
    for index, (served, meaning) in enumerate(LEGEND):
        top = TOP + 20 * index
        parts.append(f'<circle cx="{legend_x}" cy="{top + 10}" r="5" fill="{COLOURS[served]}"/>'
                     f'<text x="{legend_x + 10}" y="{top + 14}">{html.escape(meaning)}</text>')  # fmt: skip
    top = TOP + 20 * len(LEGEND)
    parts.append(f'<line x1="{legend_x - 5}" x2="{legend_x + 5}" y1="{top + 10}" y2="{top + 10}" stroke="#888" '
                 f'stroke-dasharray="4 3"/><text x="{legend_x + 10}" y="{top + 14}">a floor that forwards nothing '
                 "(CPU only)</text></svg>")  # fmt: skip
    return "".join(parts)


async def render_png(drawing: str, out: Path) -> None:
    """The SVG as a PNG, through headless Chromium (CALLSCRIBE_TEST_CHROMIUM, else Playwright's own)."""
    from playwright.async_api import async_playwright  # noqa: PLC0415 - a dev tool, loaded only to draw

    executable = os.environ.get("CALLSCRIBE_TEST_CHROMIUM") or None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            await page.set_content(f"<html><body style='margin:0'>{drawing}</body></html>")
            await page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT})
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="make bench JSON reports, in the curve's order")
    parser.add_argument("--png", type=Path, help="draw the curve to this PNG")
    parser.add_argument("--title", default="40 both-track calls of 20 s at once, two cores shared")
    options = parser.parse_args(argv)
    rows: list[Point] = []
    for path in options.reports:
        report = json.loads(path.read_text(encoding="utf-8"))
        batch = batch_of(report)
        for found in points(report):
            # The floor with the SDK sends as batched as callscribe's run: each setting's floor is a point of its own.
            row = replace(found, label=floor_label(batch)) if found.served == "floor" else found
            if row.served == "callscribe" or all(seen.label != row.label for seen in rows):
                rows.append(row)  # the peer and each floor once: their first report's medians
    print(table(rows))
    if options.png is not None:
        asyncio.run(render_png(svg(rows, options.title), options.png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
