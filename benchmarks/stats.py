"""Pure layer: percentiles and the rate accounting of a benchmark run. No I/O, no clocks.

Units are in the names: latencies come in as integer nanoseconds (`time.monotonic_ns()` differences) and
leave as float milliseconds; CPU is in seconds in, milliseconds out; memory in bytes in, MiB out.
A "track-second" is one second of one track of one call: a single-track call streams one per second, a
both_tracks call two. Rates use the audio actually delivered (frames x 20 ms), never calls x wall time, so a
call that connected late or dropped does not inflate the denominator.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

FRAME_S = 0.02  # each Twilio media message carries 20 ms of audio
NS_PER_MS = 1_000_000
MIB = 1024 * 1024

Number = int | float
Summary = dict[str, float | int | None]


def percentile(values: Sequence[Number], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default, "linear").

    Sorted values x[0..n-1]: the rank is h = (n - 1) * q / 100, and the result x[floor h] plus the fraction
    of h times the step to x[ceil h]. So q=0 is the minimum, q=100 the maximum, q=50 the usual median.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(values_ns: Sequence[int]) -> Summary:
    """{"n", "p50", "p99", "max"} of nanosecond latencies, in milliseconds; None percentiles when empty."""
    if not values_ns:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {
        "n": len(values_ns),
        "p50": percentile(values_ns, 50) / NS_PER_MS,
        "p99": percentile(values_ns, 99) / NS_PER_MS,
        "max": max(values_ns) / NS_PER_MS,
    }


def track_seconds(frames: int) -> float:
    """Seconds of audio in `frames` media messages (one track each)."""
    return frames * FRAME_S


def cpu_ms_per_call_second(cpu_seconds: float, call_seconds: float) -> float:
    """Service CPU milliseconds per second of audio of one track (`call_seconds` are track-seconds)."""
    if call_seconds <= 0:
        raise ValueError(f"no audio to account CPU to (call_seconds={call_seconds})")
    return cpu_seconds * 1000 / call_seconds


def memory_per_call_mib(rss_loaded: int, rss_idle: int, calls: int) -> float:
    """Resident memory each call adds above the idle service, in MiB (RSS in bytes)."""
    if calls <= 0:
        raise ValueError(f"calls must be positive, got {calls}")
    return (rss_loaded - rss_idle) / calls / MIB


def calls_per_core(cpu_ms_per_track_second: float) -> float:
    """Single-track calls one core could carry: a core has 1000 CPU ms per second."""
    if cpu_ms_per_track_second <= 0:
        raise ValueError(f"CPU per track-second must be positive, got {cpu_ms_per_track_second}")
    return 1000 / cpu_ms_per_track_second


def median_of_runs(runs: Sequence[Mapping[str, Number | None]]) -> dict[str, Number | None]:
    """Per metric, the median over repeated runs; runs without a value for it are left out (None if none has).

    An even number of runs gives the mean of the middle two, as `statistics.median` does.
    """
    keys = list(dict.fromkeys(key for run in runs for key in run))
    medians: dict[str, Number | None] = {}
    for key in keys:
        present = [value for run in runs if (value := run.get(key)) is not None]
        medians[key] = statistics.median(present) if present else None
    return medians


RATIO_KEYS = (
    "cpu_ms_per_track_second_whole",
    "cpu_ms_per_track_second",
    "forward_whole_p99_ms",
    "startup_cpu_s",
    "idle_rss_mib",
)


def ratios_per_round(
    runs: Sequence[Mapping[str, Number | None] | None], firsts: Sequence[Mapping[str, Number | None] | None]
) -> dict[str, float | None]:
    """For each of RATIO_KEYS, the median over rounds of this variant's value divided by the first variant's in
    the same round (rounds where either failed, or the first's value is 0 or missing, are left out)."""
    ratios: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        per_round = []
        for run, first in zip(runs, firsts, strict=False):
            mine, theirs = (run or {}).get(key), (first or {}).get(key)
            if mine is not None and theirs:
                per_round.append(mine / theirs)
        ratios[key] = statistics.median(per_round) if per_round else None
    return ratios


FLOOR_RATIO_KEYS = ("cpu_ms_per_track_second_whole", "cpu_ms_per_track_second")  # against the inbound floor


def per_round_ratios(
    runs: Sequence[Mapping[str, Number | None] | None], others: Sequence[Mapping[str, Number | None] | None], key: str
) -> list[float | None]:
    """Round by round, this variant's `key` divided by another's in the same round (None where either failed, or
    the other's value is 0 or missing)."""
    ratios: list[float | None] = []
    for run, other in zip(runs, others, strict=False):
        mine, theirs = (run or {}).get(key), (other or {}).get(key)
        ratios.append(mine / theirs if mine is not None and theirs else None)
    return ratios


def median_or_none(values: Sequence[float | None]) -> float | None:
    """The median of the values present, or None when there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def median_per_index(series: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Position by position, the median of the values the series have there (None where none has one)."""
    length = max((len(values) for values in series), default=0)
    medians: list[float | None] = []
    for index in range(length):
        present = [values[index] for values in series if index < len(values) and values[index] is not None]
        medians.append(statistics.median(present) if present else None)  # type: ignore[type-var]
    return medians
