"""Pure layer: the benchmark report as Markdown (tables for docs/benchmarks.md) and as a short console summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
MARKERS = (START_MARKER, END_MARKER)
STARTUP_MARKERS = ("<!-- bench-startup:start -->", "<!-- bench-startup:end -->")
PINNED = "yes (server on CPU 0, harness on CPU 1)"
UNPINNED = "no (load generator, stand-in and server share the cores)"
PER_SECOND_COLUMNS = 6  # scenarios shown side by side in the per-second table
PER_SECOND_ROWS = 60
P99_LIMIT_MS = 100.0  # forward p99 a call can take unnoticed (issue 25: where it is crossed is what a dyno carries)

Column = tuple[str, str, int]  # (header, metric key, decimals)

LATENCY_COLUMNS: tuple[Column, ...] = (
    ("fwd p50 ms", "forward_whole_p50_ms", 2),
    ("fwd p99 ms", "forward_whole_p99_ms", 2),
    ("fwd p99 from 3rd s", "forward_later_p99_ms", 2),
    ("fwd p99 steady", "forward_p99_ms", 2),
    ("fwd max ms", "forward_whole_max_ms", 1),
    ("first-audio p99 ms", "first_audio_p99_ms", 1),
    ("result p50 ms", "result_p50_ms", 2),
    ("result p99 ms", "result_p99_ms", 2),
    ("alert p50 ms", "alert_p50_ms", 2),
    ("alert p99 ms", "alert_p99_ms", 2),
    ("frames lost", "frames_lost", 0),
    ("send-lag p99 ms", "send_lag_p99_ms", 2),
)
COST_COLUMNS: tuple[Column, ...] = (
    ("CPU ms / track-s, whole calls", "cpu_ms_per_track_second_whole", 2),
    ("CPU ms / track-s, steady", "cpu_ms_per_track_second", 2),
    ("set-up CPU ms / call", "setup_cpu_ms_per_call", 1),
    ("tear-down CPU ms / call", "teardown_cpu_ms_per_call", 1),
    ("service CPU % (steady)", "service_cpu_pct", 0),
    ("MiB / call", "mib_per_call", 3),
    ("harness CPU %", "harness_cpu_pct", 0),
)
STARTUP_COLUMNS: tuple[Column, ...] = (
    ("start-up ms (to /healthz)", "startup_ms", 0),
    ("start-up CPU s", "startup_cpu_s", 2),
    ("idle RSS MiB", "idle_rss_mib", 1),
    ("processes", "processes", 0),
)
RATIO_COLUMNS: tuple[Column, ...] = (
    ("CPU, whole calls", "cpu_ms_per_track_second_whole", 2),
    ("CPU, steady", "cpu_ms_per_track_second", 2),
    ("fwd p99", "forward_whole_p99_ms", 2),
)


def scenario_name(calls: int, tracks: int, start: str, duration_s: float = 0.0, ringing_s: float = 0.0) -> str:
    """ "25 calls x 1 track, together, 20 s"; a ringing scenario says how long its outbound was silent."""
    if tracks == 1:
        shape = "1 track"
    elif ringing_s:
        shape = f"both tracks (outbound silent {ringing_s:g} s)"
    else:
        shape = "both tracks"
    return f"{calls} calls x {shape}, {start}" + (f", {duration_s:g} s" if duration_s else "")


def _cell(value: Any, decimals: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{decimals}f}"


def _row_name(entry: Mapping[str, Any], many_variants: bool) -> str:
    return f"{entry['name']} [{entry['variant']}]" if many_variants else str(entry["name"])


def table(
    entries: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    key: str = "median",
    first: str = "scenario",
    labelled: bool = False,
) -> str:
    """A Markdown table: one row per entry, each cell that entry's `key` mapping's metric; rows name their
    variant when there are several (or when `labelled`)."""
    many = labelled or len({entry.get("variant") for entry in entries}) > 1
    header = f"| {first} | " + " | ".join(title for title, _, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [
        f"| {_row_name(entry, many)} | " + " | ".join(_cell(entry[key].get(k), d) for _, k, d in columns) + " |"
        for entry in entries
        if not entry.get("skipped")
    ]
    return "\n".join([header, rule, *rows])


def inbound_floor_table(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """Each variant's CPU over the inbound floor's (the floor with the SDK and the peer too), round by round and the
    median (None without one)."""
    chosen = [entry for entry in entries if entry.get("cpu_to_inbound_floor") and not entry.get("skipped")]
    if not chosen:
        return None
    header = "| scenario | CPU, whole calls: per round | median | CPU, steady: per round | median |"
    rows = []
    for entry in chosen:
        cells = []
        for key in ("cpu_ms_per_track_second_whole", "cpu_ms_per_track_second"):
            ratio = entry["cpu_to_inbound_floor"].get(key) or {"per_round": [], "median": None}
            cells += [", ".join(_cell(value, 2) for value in ratio["per_round"]) or "n/a", _cell(ratio["median"], 2)]
        rows.append(f"| {_row_name(entry, True)} | " + " | ".join(cells) + " |")
    return "\n".join([header, "|---|---:|---:|---:|---:|", *rows])


def per_second_table(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """Forward p99 (ms) by second of call, one column per scenario with both tracks that started together."""
    chosen = [
        entry for entry in entries if entry["tracks"] == 2 and entry["start"] == "together" and not entry.get("skipped")
    ][:PER_SECOND_COLUMNS]
    if not chosen:
        return None
    many = len({entry.get("variant") for entry in entries}) > 1
    header = "| second of call | " + " | ".join(_row_name(entry, many) for entry in chosen) + " |"
    rule = "|---|" + "---:|" * len(chosen)
    length = min(PER_SECOND_ROWS, max(len(entry["per_second"]["p99"]) for entry in chosen))
    rows = []
    for second in range(length):
        cells = [entry["per_second"]["p99"] for entry in chosen]
        values = [_cell(values[second] if second < len(values) else None, 1) for values in cells]
        rows.append(f"| {second + 1} | " + " | ".join(values) + " |")
    return "\n".join([header, rule, *rows])


def _provenance(report: Mapping[str, Any]) -> str:
    machine = report["machine"]
    variants = ", ".join(f"{v['label']} (`{v['git_revision']}`)" for v in report.get("variants", []))
    return (
        f"Run {report['date']} at `{report['git_revision']}` on {machine['cpu_model']}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}; pinned: {PINNED if report['pinned'] else UNPINNED}. "
        f"Served, in turn each round: {variants}. Median of {report['repeats']} round(s). "
        f"Env overrides: {', '.join(report['env']) or 'none'}.\n\nCommand: `{report['command']}`"
    )


def markdown_block(report: Mapping[str, Any]) -> str:
    """What goes between the markers: provenance, the tables, and how to read them."""
    entries = report["scenarios"]
    lines = [
        _provenance(report),
        "",
        "Latency (forward: Twilio media message sent until its audio reached the Deepgram stand-in; over whole "
        "calls, from each call's 3rd second on, and in the steady window):",
        "",
        table(entries, LATENCY_COLUMNS),
        "",
        "Cost (CPU of the server's whole process tree; whole calls: from the load generator's start, /voice "
        "included, until its end plus a tail; set-up and tear-down: CPU outside the steady window beyond what "
        "its audio costs at the steady rate, per call):",
        "",
        table(entries, COST_COLUMNS),
        "",
        "Start-up of each run's server (spawn until /healthz answers; idle RSS after a settle):",
        "",
        table(entries, STARTUP_COLUMNS),
    ]
    compared = [entry for entry in entries if entry.get("ratios_to_first") and not entry.get("skipped")]
    if compared:
        first = report["variants"][0]["label"]
        lines += [
            "",
            f"Against {first}, the median of the per-round ratios:",
            "",
            table(compared, RATIO_COLUMNS, key="ratios_to_first", labelled=True),
        ]
    floor = inbound_floor_table(entries)
    if floor:
        lines += [
            "",
            "CPU against the inbound floor (Hypercorn + orjson + base64, nothing sent), in the same rounds:",
            "",
            floor,
        ]
    seconds = per_second_table(entries)
    if seconds:
        lines += ["", "Forward p99 (ms) by second of call:", "", seconds]
    crossings = crossing_lines(report.get("p99_crossing") or [])
    if crossings:
        lines += [
            "",
            "Where forward p99 over whole calls crosses 100 ms (the calls a dyno of these cores carries):",
            "",
        ]
        lines += crossings
    first_limit = report.get("first_limit")
    if first_limit:
        lines += ["", f"First to give out: {first_limit['scenario']}: {', '.join(first_limit['limits'])}."]
    return "\n".join(lines)


def p99_crossings(
    entries: Sequence[Mapping[str, Any]], *, cores: int, limit_ms: float = P99_LIMIT_MS
) -> list[dict[str, Any]]:
    """For each variant, tracks and start whose grid has two call counts or more: the fewest calls at which forward
    p99 (over whole calls) went past `limit_ms`, the most that stayed within, and those per core: the number a user
    sizes dynos by. None where no count crossed it, or every one did."""
    groups: dict[tuple[str, int, str], list[tuple[int, float]]] = {}
    for entry in entries:
        p99 = (entry.get("median") or {}).get("forward_whole_p99_ms")
        if entry.get("skipped") or p99 is None:
            continue
        key = (str(entry["variant"]), int(entry["tracks"]), str(entry["start"]))
        groups.setdefault(key, []).append((int(entry["calls"]), float(p99)))
    crossings = []
    for (variant, tracks, start), points in groups.items():
        if len(points) < 2:
            continue
        points.sort()
        within = [calls for calls, p99 in points if p99 <= limit_ms]
        past = [calls for calls, p99 in points if p99 > limit_ms]
        crossings.append({
            "variant": variant, "tracks": tracks, "start": start, "limit_ms": limit_ms, "cores": cores,
            "most_within": max(within) if within else None, "fewest_past": min(past) if past else None,
            "calls_per_core_within": round(max(within) / cores, 1) if within else None,
        })  # fmt: skip
    return crossings


def crossing_lines(crossings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each crossing as a sentence."""
    lines = []
    for cross in crossings:
        name = f"{cross['variant']}, {'both tracks' if cross['tracks'] == 2 else 'one track'}, {cross['start']}"
        limit = f"{cross['limit_ms']:g} ms"
        if cross["fewest_past"] is None:
            lines.append(f"- {name}: forward p99 within {limit} up to {cross['most_within']} calls, the most tried "
                         f"({cross['calls_per_core_within']} per core).")  # fmt: skip
        elif cross["most_within"] is None:
            lines.append(f"- {name}: forward p99 past {limit} from {cross['fewest_past']} calls, the fewest tried.")
        else:
            lines.append(f"- {name}: forward p99 within {limit} at {cross['most_within']} calls "
                         f"({cross['calls_per_core_within']} per core on {cross['cores']} cores), past it at "
                         f"{cross['fewest_past']}.")  # fmt: skip
    return lines


def startup_block(report: Mapping[str, Any]) -> str:
    """The --startup report: each variant's start-up medians, and their ratios to the first."""
    rows = [dict(row, name=row["variant"]) for row in report["startup"]]
    lines = [_provenance(report), "", table(rows, STARTUP_COLUMNS, first="server")]
    compared = [row for row in rows if row.get("ratios_to_first")]
    if compared:
        ratio_columns = (("start-up CPU", "startup_cpu_s", 2), ("idle RSS", "idle_rss_mib", 2))
        lines += [
            "",
            "Median of the per-round ratios:",
            "",
            table(compared, ratio_columns, key="ratios_to_first", first="server"),
        ]
    return "\n".join(lines)


def replace_block(document: str, block: str, markers: tuple[str, str] = MARKERS) -> str | None:
    """`document` with the text between the markers replaced by `block`; None if the markers are absent."""
    start_marker, end_marker = markers
    start, end = document.find(start_marker), document.find(end_marker)
    if start < 0 or end < start:
        return None
    return f"{document[: start + len(start_marker)]}\n{block}\n{document[end:]}"


def standalone(block: str, markers: tuple[str, str] = MARKERS) -> str:
    """A whole Markdown file around `block`, markers included so later runs can rewrite just the block."""
    intro = "# Benchmarks\n\nWritten by `python -m benchmarks.run` (`make bench`)."
    return f"{intro}\n\n{markers[0]}\n{block}\n{markers[1]}\n"


def console_summary(report: Mapping[str, Any]) -> str:
    """A few lines per scenario for the terminal."""
    lines = []
    for entry in report["scenarios"]:
        if entry.get("skipped"):
            lines.append(f"{entry['name']} [{entry['variant']}]: skipped: {entry['skipped']}")
            continue
        m = entry["median"]
        lines.append(
            f"{entry['name']} [{entry['variant']}]: forward p50/p99/p99-from-3rd-s/max "
            f"{_cell(m.get('forward_whole_p50_ms'), 2)}/{_cell(m.get('forward_whole_p99_ms'), 2)}/"
            f"{_cell(m.get('forward_later_p99_ms'), 2)}/{_cell(m.get('forward_whole_max_ms'), 1)} ms, first-audio p99 "
            f"{_cell(m.get('first_audio_p99_ms'), 1)} ms, result p99 {_cell(m.get('result_p99_ms'), 2)} ms, alert "
            f"p50/p99 {_cell(m.get('alert_p50_ms'), 2)}/{_cell(m.get('alert_p99_ms'), 2)} ms, CPU "
            f"{_cell(m.get('cpu_ms_per_track_second_whole'), 2)} ms/track-s whole calls "
            f"({_cell(m.get('cpu_ms_per_track_second'), 2)} steady, set-up {_cell(m.get('setup_cpu_ms_per_call'), 1)} "
            f"+ tear-down {_cell(m.get('teardown_cpu_ms_per_call'), 1)} ms/call), {_cell(m.get('mib_per_call'), 3)} "
            f"MiB/call, lost {_cell(m.get('frames_lost'), 0)}, send-lag p99 {_cell(m.get('send_lag_p99_ms'), 2)} ms"
            + (f"  <- {', '.join(entry['limits'])}" if entry["limits"] else "")
        )
        ratios = entry.get("ratios_to_first") or {}
        if ratios:
            lines.append(
                f"  vs first: CPU whole {_cell(ratios.get('cpu_ms_per_track_second_whole'), 2)}x, steady "
                f"{_cell(ratios.get('cpu_ms_per_track_second'), 2)}x, "
                f"fwd p99 {_cell(ratios.get('forward_whole_p99_ms'), 2)}x"
            )
        floor = (entry.get("cpu_to_inbound_floor") or {}).get("cpu_ms_per_track_second_whole")
        if floor:
            lines.append(
                f"  vs the inbound floor: CPU whole {_cell(floor['median'], 2)}x (per round: "
                f"{', '.join(_cell(value, 2) for value in floor['per_round'])})"
            )
    first = report.get("first_limit")
    lines.append(
        f"first to give out: {first['scenario']}: {', '.join(first['limits'])}" if first else "nothing gave out"
    )
    return "\n".join(lines)


def startup_summary(report: Mapping[str, Any]) -> str:
    """One line per variant for the terminal."""
    lines = []
    for row in report["startup"]:
        m = row["median"]
        lines.append(
            f"{row['variant']}: start-up {_cell(m.get('startup_ms'), 0)} ms, {_cell(m.get('startup_cpu_s'), 2)} s CPU, "
            f"idle RSS {_cell(m.get('idle_rss_mib'), 1)} MiB, {_cell(m.get('processes'), 0)} process(es)"
        )
    return "\n".join(lines)
