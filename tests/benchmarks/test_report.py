"""Where forward p99 crosses 100 ms, from a grid of call counts: the most calls within, the fewest past, per core."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import report


def entry(calls: int, p99: float | None, *, variant: str = "cs", tracks: int = 1, skipped: str | None = None) -> Any:
    return {"variant": variant, "tracks": tracks, "start": "staggered", "calls": calls, "skipped": skipped,
            "median": {"forward_whole_p99_ms": p99} if p99 is not None else None}  # fmt: skip


@pytest.mark.parametrize(
    ("grid", "within", "past", "per_core"),
    [
        ([(50, 20.0), (100, 40.0), (150, 160.0), (200, 900.0)], 100, 150, 50.0),
        ([(200, 900.0), (50, 20.0)], 50, 200, 25.0),  # any order
        ([(50, 20.0), (100, 100.0)], 100, None, 50.0),  # at the limit is within it
        ([(50, 120.0), (100, 400.0)], None, 50, None),
    ],
)
def test_the_crossing_of_a_grid(grid: list[tuple[int, float]], within: int | None, past: int | None,
                                per_core: float | None) -> None:  # fmt: skip
    [crossing] = report.p99_crossings([entry(calls, p99) for calls, p99 in grid], cores=2)
    assert (crossing["most_within"], crossing["fewest_past"], crossing["calls_per_core_within"]) == (
        within, past, per_core
    )  # fmt: skip


def test_one_count_skipped_runs_and_other_groups_are_kept_apart() -> None:
    entries = [
        entry(50, 20.0),
        entry(100, None, skipped="no room"),
        entry(50, 20.0, tracks=2),
        entry(80, 300.0, tracks=2),
    ]
    crossings = report.p99_crossings(entries, cores=2)
    assert [(c["tracks"], c["most_within"], c["fewest_past"]) for c in crossings] == [(2, 50, 80)]


def test_each_crossing_reads_as_a_sentence() -> None:
    crossings = report.p99_crossings([entry(50, 20.0), entry(100, 40.0), entry(150, 160.0)], cores=2)
    assert report.crossing_lines(crossings) == [
        "- cs, one track, staggered: forward p99 within 100 ms at 100 calls (50.0 per core on 2 cores), past it at 150."
    ]
    none_within = report.p99_crossings([entry(50, 120.0), entry(100, 400.0)], cores=2)
    assert report.crossing_lines(none_within) == [
        "- cs, one track, staggered: forward p99 past 100 ms from 50 calls, the fewest tried."
    ]
