"""Pure layer: the benchmark report as Markdown (a table for docs/benchmarks.md) and as a short console summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"

# (header, metric key, decimals): the table's columns after the scenario's name.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("fwd p50 ms", "forward_p50_ms", 2),
    ("fwd p99 ms", "forward_p99_ms", 2),
    ("fwd max ms", "forward_max_ms", 1),
    ("first-audio p50 ms", "first_audio_p50_ms", 1),
    ("first-audio p99 ms", "first_audio_p99_ms", 1),
    ("first-audio max ms", "first_audio_max_ms", 1),
    ("result p50 ms", "result_p50_ms", 2),
    ("result p99 ms", "result_p99_ms", 2),
    ("CPU ms / track-s", "cpu_ms_per_track_second", 2),
    ("MiB / call", "mib_per_call", 3),
    ("calls / core", "calls_per_core", 0),
    ("frames lost", "frames_lost", 0),
    ("service CPU %", "service_cpu_pct", 0),
    ("send-lag p99 ms", "send_lag_p99_ms", 2),
)


def scenario_name(calls: int, tracks: int, start: str) -> str:
    """ "25 calls x 1 track, together"."""
    return f"{calls} calls x {'1 track' if tracks == 1 else 'both tracks'}, {start}"


def _cell(value: Any, decimals: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{decimals}f}"


def table(scenarios: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown table: one row per scenario, each metric the median over repeats."""
    header = "| scenario | " + " | ".join(title for title, _, _ in COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = [
        f"| {scenario['name']} | " + " | ".join(_cell(scenario["median"].get(key), d) for _, key, d in COLUMNS) + " |"
        for scenario in scenarios
    ]
    return "\n".join([header, rule, *rows])


def markdown_block(report: Mapping[str, Any]) -> str:
    """What goes between the markers: provenance, the table, and how to read it."""
    machine = report["machine"]
    scenarios = report["scenarios"]
    startup = [s["median"].get("startup_ms") for s in scenarios if s["median"].get("startup_ms") is not None]
    idle = [s["median"].get("idle_rss_mib") for s in scenarios if s["median"].get("idle_rss_mib") is not None]
    lines = [
        f"Run {report['date']} at `{report['git_revision']}` ({report['label']}) on {machine['cpu_model']}, "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}; service pinned to its own core: "
        f"{'yes' if report['pinned'] else 'no'}. Audio {report['duration_s']:g} s per call, median of "
        f"{report['repeats']} run(s). Env overrides: {', '.join(report['env']) or 'none'}."
        + (" Served: `benchmarks/floor.py` (the stack alone), not callscribe." if report.get("floor") else ""),
        "",
        table(scenarios),
        "",
        "Forward: Twilio media message sent until its audio reached the Deepgram stand-in (steady state). "
        "First-audio: the first frame of each track, which waits for the Deepgram connection. Result: stand-in "
        "`Results` sent until the service logged the transcript. CPU is per track-second (one track of one call "
        "for one second); calls/core = 1000 / that, for single-track calls.",
    ]
    if startup and idle:
        lines += [
            "",
            f"Start-up (spawn until /healthz answers): {min(startup):.0f}-{max(startup):.0f} ms; idle RSS "
            f"{min(idle):.1f}-{max(idle):.1f} MiB.",
        ]
    first = report.get("first_limit")
    if first:
        lines += ["", f"First to give out: {first['scenario']}: {', '.join(first['limits'])}."]
    return "\n".join(lines)


def replace_block(document: str, block: str) -> str | None:
    """`document` with the text between the bench markers replaced by `block`; None if the markers are absent."""
    start, end = document.find(START_MARKER), document.find(END_MARKER)
    if start < 0 or end < start:
        return None
    return f"{document[: start + len(START_MARKER)]}\n{block}\n{document[end:]}"


def standalone(block: str) -> str:
    """A whole Markdown file around `block`, markers included so later runs can rewrite just the block."""
    intro = "# Benchmarks\n\nWritten by `python -m benchmarks.run` (`make bench`)."
    return f"{intro}\n\n{START_MARKER}\n{block}\n{END_MARKER}\n"


def console_summary(report: Mapping[str, Any]) -> str:
    """A few lines per scenario for the terminal."""
    lines = []
    for scenario in report["scenarios"]:
        m = scenario["median"]
        lines.append(
            f"{scenario['name']}: forward p50/p99/max {_cell(m.get('forward_p50_ms'), 2)}/"
            f"{_cell(m.get('forward_p99_ms'), 2)}/{_cell(m.get('forward_max_ms'), 1)} ms, first-audio p99 "
            f"{_cell(m.get('first_audio_p99_ms'), 1)} ms, result p99 {_cell(m.get('result_p99_ms'), 2)} ms, "
            f"{_cell(m.get('cpu_ms_per_track_second'), 2)} CPU ms/track-s (service CPU "
            f"{_cell(m.get('service_cpu_pct'), 0)}%), {_cell(m.get('mib_per_call'), 3)} MiB/call, lost "
            f"{_cell(m.get('frames_lost'), 0)}, send-lag p99 {_cell(m.get('send_lag_p99_ms'), 2)} ms"
            + (f"  <- {', '.join(scenario['limits'])}" if scenario["limits"] else "")
        )
    first = report.get("first_limit")
    lines.append(
        f"first to give out: {first['scenario']}: {', '.join(first['limits'])}" if first else "nothing gave out"
    )
    return "\n".join(lines)
