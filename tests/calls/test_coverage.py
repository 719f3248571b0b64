"""The coverage arithmetic: a track's tally as parts, batch outcomes, streams summed, and what is said."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.calls.coverage import (
    Category,
    Lost,
    Outcome,
    Part,
    SpoolPiece,
    TrackTally,
    apply_outcome,
    missing_text,
    short_text,
    spool_key,
    stored_part,
    stream_parts,
    summarize,
    totals,
    track_parts,
)

SECOND = 8000  # bytes of one track


def by_key(parts: list[Part]) -> dict[str, tuple[str, int, str]]:
    return {part.key: (str(part.category), part.ms, part.reason) for part in parts}


@pytest.mark.parametrize(
    ("tally", "expected"),
    [
        pytest.param(
            TrackTally(received=5 * SECOND),
            {"replayed": ("replayed", 0, ""), "live": ("live", 5000, ""), "paused": ("paused", 0, "")},
            id="all live",
        ),
        pytest.param(
            TrackTally(received=5 * SECOND, spooled=[SpoolPiece("e1", 5 * SECOND, "DEEPGRAM_API_KEY is not set")]),
            {
                "spool:e1": ("waiting", 5000, "DEEPGRAM_API_KEY is not set"),
                "replayed": ("replayed", 0, ""),
                "live": ("live", 0, ""),
                "paused": ("paused", 0, ""),
            },
            id="all spooled: waiting with the spooler's reason",
        ),
        pytest.param(
            TrackTally(received=10 * SECOND, chunks_missing=20, replayed=2 * SECOND),
            {
                "lost:chunks_missing": ("lost", 400, "chunks_missing"),
                "replayed": ("replayed", 2000, ""),
                "live": ("live", 8000, ""),
                "paused": ("paused", 0, ""),
            },
            id="a gap of 20 chunks is 0.4 s lost on top of what came",
        ),
        pytest.param(
            TrackTally(
                received=3 * SECOND, channel_lag=800, spool_failed=SECOND, spooled=[SpoolPiece("e", SECOND, "x")]
            ),
            {
                "lost:channel_lag": ("lost", 100, "channel_lag"),
                "lost:spool_failed": ("lost", 1000, "spool_failed"),
                "spool:e": ("waiting", 1000, "x"),
                "replayed": ("replayed", 0, ""),
                "live": ("live", 900, ""),
                "paused": ("paused", 0, ""),
            },
            id="every lost reason is its own part",
        ),
        pytest.param(
            TrackTally(received=SECOND, spooled=[SpoolPiece("a", SECOND, "r"), SpoolPiece("b", SECOND, "r")]),
            {
                "spool:a": ("waiting", 1000, "r"),
                "replayed": ("replayed", 0, ""),
                "live": ("live", 0, ""),
                "paused": ("paused", 0, ""),
            },
            id="spooled padding beyond what Twilio sent is not counted",
        ),
    ],
)
def test_a_tracks_tally_becomes_its_parts(tally: TrackTally, expected: dict[str, tuple[str, int, str]]) -> None:
    """Each measured stretch is a part with its reason; live is the rest; padding never adds seconds."""
    assert by_key(track_parts("inbound", tally)) == expected


def test_a_waiting_entry_becomes_batch_or_lost_and_nothing_else_moves() -> None:
    """Only the named entry of the named track, and only while it waits, takes batch's outcome."""
    tally = TrackTally(received=4 * SECOND, spooled=[SpoolPiece("e1", SECOND, "r"), SpoolPiece("e2", SECOND, "r")])
    parts = stream_parts({"inbound": tally, "outbound": TrackTally(received=SECOND)})
    done = apply_outcome(parts, Outcome("CA1", "MZ1", "inbound", "e1"))
    assert by_key([p for p in done if p.track == "inbound"])["spool:e1"] == ("batch", 1000, "")
    assert by_key([p for p in done if p.track == "inbound"])["spool:e2"] == ("waiting", 1000, "r")
    lost = apply_outcome(done, Outcome("CA1", "MZ1", "inbound", "e2", lost_reason=Lost.SPOOL_EXPIRED))
    assert by_key([p for p in lost if p.track == "inbound"])["spool:e2"] == ("lost", 1000, "spool_expired")
    # An outcome that comes again changes nothing: batch stays batch.
    assert apply_outcome(lost, Outcome("CA1", "MZ1", "inbound", "e1", lost_reason="late")) == lost
    assert apply_outcome(parts, Outcome("CA1", "MZ1", "outbound", "e1")) == parts


def test_the_missing_line_says_each_reason_largest_first() -> None:
    parts = [
        Part("inbound", "lost:chunks_missing", Category.LOST, 400, Lost.CHUNKS_MISSING),
        Part("inbound", spool_key("e"), Category.WAITING, 5100, "DEEPGRAM_API_KEY is not set"),
        Part("outbound", "live", Category.LIVE, 5500),
    ]
    assert missing_text(totals(parts)) == (
        "5.1 s waiting for batch: DEEPGRAM_API_KEY is not set; 0.4 s lost: gaps in Twilio's chunk numbers"
    )
    shown = summarize(parts, per_track=True)
    assert shown["complete"] is False
    assert shown["audio_s"] == 11.0
    assert shown["waiting"] == [{"reason": "DEEPGRAM_API_KEY is not set", "seconds": 5.1}]
    assert shown["lost"] == [{"reason": "chunks_missing", "why": "gaps in Twilio's chunk numbers", "seconds": 0.4}]
    assert shown["tracks"]["outbound"]["live_s"] == 5.5
    assert "tracks" not in summarize(parts)
    assert short_text(shown) == "5.1 s waiting, 0.4 s lost"


@pytest.mark.parametrize(
    ("coverage", "text"),
    [
        (None, "-"),
        (summarize([Part("inbound", "live", Category.LIVE, 3000)]), "complete"),
        (summarize([Part("inbound", "lost:x", Category.LOST, 300, "x")]), "0.3 s lost"),
    ],
)
def test_the_lists_few_words(coverage: dict[str, object] | None, text: str) -> None:
    assert short_text(coverage) == text


def test_a_lost_reason_without_words_is_said_as_it_is() -> None:
    assert missing_text(totals([Part("inbound", "lost:odd", Category.LOST, 1000, "odd")])) == "1 s lost: odd"


def test_a_batch_transcribed_call_is_complete() -> None:
    parts = track_parts("inbound", TrackTally(received=SECOND, spooled=[SpoolPiece("e", SECOND, "r")]))
    assert summarize(parts)["complete"] is False
    shown = summarize(apply_outcome(parts, Outcome("CA", "MZ", "inbound", "e")))
    assert (shown["complete"], shown["missing"], shown["batch_s"], shown["waiting_s"]) == (True, "", 1.0, 0.0)


# --- Properties ----------------------------------------------------------------------------------------------------

sizes = st.integers(min_value=0, max_value=40 * SECOND)
pieces = st.lists(
    st.builds(SpoolPiece, st.text("abc", min_size=1, max_size=3), sizes, st.sampled_from(["r1", "r2"])),
    max_size=4,
    unique_by=lambda piece: piece.entry_id,
)
tallies = st.builds(
    TrackTally,
    received=sizes,
    chunks_missing=st.integers(min_value=0, max_value=500),
    channel_lag=sizes,
    spool_failed=sizes,
    replayed=sizes,
    spooled=pieces,
)


@given(tallies)
def test_a_tracks_categories_sum_to_the_audio_received_and_the_gaps(tally: TrackTally) -> None:
    parts = track_parts("inbound", tally)
    assert sum(part.ms for part in parts) == tally.total_ms
    assert all(part.ms >= 0 for part in parts)
    assert len({part.key for part in parts}) == len(parts)  # each part stored once


@given(tallies, st.lists(st.tuples(st.text("abc", min_size=1, max_size=3), st.sampled_from(["", "spool_expired"]))))
def test_batch_outcomes_move_seconds_and_never_make_or_lose_any(
    tally: TrackTally, outcomes: list[tuple[str, str]]
) -> None:
    parts = track_parts("inbound", tally)
    before = totals(parts).total_ms
    waiting_before = totals(parts).by_category["waiting"]
    for entry_id, reason in outcomes:
        parts = apply_outcome(parts, Outcome("CA", "MZ", "inbound", entry_id, lost_reason=reason))
    after = totals(parts)
    assert after.total_ms == before
    assert after.by_category["waiting"] <= waiting_before


@given(
    st.lists(st.dictionaries(st.sampled_from(["inbound", "outbound"]), tallies, min_size=1), min_size=1), st.randoms()
)
def test_a_calls_coverage_is_the_same_whatever_the_order_of_its_streams(
    streams: list[dict[str, TrackTally]], random: object
) -> None:
    parts = [stream_parts(stream) for stream in streams]
    shuffled = list(parts)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    flat = [part for stream in parts for part in stream]
    assert summarize(flat, per_track=True) == summarize(
        [part for stream in shuffled for part in stream], per_track=True
    )
    assert totals(flat).total_ms == sum(tally.total_ms for stream in streams for tally in stream.values())


def test_a_stored_row_reads_back_as_the_part_it_stored() -> None:
    part = Part("outbound", spool_key("e"), Category.WAITING, 1200, "r")
    assert stored_part("outbound", "spool:e", "waiting", 1200, "r") == part
