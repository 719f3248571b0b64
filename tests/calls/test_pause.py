"""A stream's side of its call's pause (pure): each newer version applied once and never backwards, frames
replaced by silence of their length and counted per track, the pause ended by the stream's end, and the one
`[paused]` final spanning it; and the paused seconds in the call's coverage."""

from __future__ import annotations

import dataclasses
import datetime

from hypothesis import given
from hypothesis import strategies as st

from service.calls.coverage import Category, TrackTally, track_parts
from service.calls.stream.pause import MARKER, MUTE, PauseControl, Paused, Resumed, StreamPause, is_marker, marker
from service.storage.writes import utterance_write

T0 = datetime.datetime(2026, 12, 7, 18, 0, tzinfo=datetime.UTC)


def control(
    version: int, *, paused: bool, by: str = "agent-7", resume_at: datetime.datetime | None = None
) -> PauseControl:
    return PauseControl("CA1", version, paused=paused, by=by, resume_at=resume_at)


def test_a_pause_then_a_resume_move_once_each_and_span_the_pause() -> None:
    pause = StreamPause()
    assert pause.apply(control(1, paused=True, resume_at=T0), at_s=3.0) == Paused(3.0, "agent-7", T0)
    assert pause.on
    assert pause.apply(control(1, paused=True), at_s=4.0) is None  # the same version read again
    assert pause.apply(control(2, paused=False, by="agent-8"), at_s=9.5) == Resumed(3.0, 9.5, "agent-8")
    assert not pause.on
    assert pause.version == 2


def test_an_older_version_never_undoes_a_newer_one() -> None:
    pause = StreamPause()
    pause.apply(control(3, paused=True), at_s=1.0)
    assert pause.apply(control(2, paused=False), at_s=2.0) is None
    assert pause.on


def test_a_newer_version_of_the_same_state_moves_nothing_but_is_taken() -> None:
    pause = StreamPause()
    assert pause.apply(control(2, paused=False), at_s=1.0) is None
    assert pause.version == 2
    assert pause.apply(control(1, paused=True), at_s=1.0) is None


def test_a_stream_that_ends_paused_ends_its_pause_and_one_that_is_not_has_none() -> None:
    pause = StreamPause()
    assert pause.end(5.0) is None
    pause.apply(control(1, paused=True), at_s=2.0)
    assert pause.end(7.25) == Resumed(2.0, 7.25, "")
    assert pause.end(8.0) is None


def test_a_resume_earlier_than_its_pause_on_the_timeline_spans_nothing_backwards() -> None:
    pause = StreamPause()
    pause.apply(control(1, paused=True), at_s=4.0)
    assert pause.apply(control(2, paused=False), at_s=3.0) == Resumed(4.0, 4.0, "agent-7")


@given(st.lists(st.tuples(st.sampled_from(["inbound", "outbound"]), st.binary(min_size=1, max_size=400)), max_size=30))
def test_silence_has_each_frames_length_and_every_byte_is_counted(frames: list[tuple[str, bytes]]) -> None:
    pause = StreamPause()
    for track, payload in frames:
        silent = pause.silenced(track, payload)
        assert silent == bytes([MUTE]) * len(payload)
    for track in ("inbound", "outbound"):
        assert pause.muted.get(track, 0) == sum(len(payload) for name, payload in frames if name == track)


def test_the_marker_is_one_final_word_spanning_the_pause() -> None:
    transcript = marker("CA1", "MZ1", "inbound", "caller", Resumed(3.0, 9.5, "agent-7"))
    assert transcript.is_final
    assert (transcript.text, transcript.start, transcript.end, transcript.speaker) == (MARKER, 3.0, 9.5, "caller")
    assert [(word.word, word.start, word.end) for word in transcript.words] == [(MARKER, 3.0, 9.5)]


def test_a_pause_expires_only_when_on_and_past_its_time() -> None:
    assert control(1, paused=True, resume_at=T0).expired(T0)
    assert not control(1, paused=True, resume_at=T0).expired(T0 - datetime.timedelta(seconds=1))
    assert not control(1, paused=True).expired(T0)
    assert not control(2, paused=False, resume_at=T0).expired(T0)


def test_paused_seconds_are_their_own_part_and_the_track_still_sums_to_its_audio() -> None:
    tally = TrackTally(received=80_000, paused=24_000, chunks_missing=5)  # 10 s, 3 s of them paused, 0.1 s missing
    parts = {part.key: part for part in track_parts("inbound", tally)}
    assert parts[Category.PAUSED].ms == 3000
    assert parts[Category.LIVE].ms == 10_100 - 3000 - 100
    assert sum(part.ms for part in parts.values()) == tally.total_ms


def test_a_track_never_paused_keeps_a_zero_paused_part() -> None:
    parts = track_parts("inbound", TrackTally(received=8000))
    assert [(part.category, part.ms) for part in parts if part.category is Category.PAUSED] == [(Category.PAUSED, 0)]


def test_a_marker_and_the_final_that_starts_where_the_pause_did_keep_rows_of_their_own_marker_first() -> None:
    pause_marker = marker("CA1", "MZ1", "inbound", "caller", Resumed(2.0, 5.0, "agent-7"))
    final = dataclasses.replace(pause_marker, text="thanks", request_id="req-1", end=6.0)
    assert is_marker(pause_marker)
    assert not is_marker(final)
    assert not is_marker(dataclasses.replace(pause_marker, is_final=False))
    keys = [utterance_write(t, speaker="caller", created_at=T0).row["key"] for t in (pause_marker, final)]
    assert keys[0] != keys[1]
    assert sorted(keys) == keys  # the same start: the marker sorts before the words after the pause
