"""Both tracks on one Deepgram connection: frames placed by Twilio's timestamps, interleaved, gaps and lag padded."""

from __future__ import annotations

import pytest

from service.calls.pipeline.interleave import Interleaver, interleave, track_of

IN = b"\x11" * 160  # one 20 ms frame of the inbound track
OUT = b"\x22" * 160
SILENT = b"\xff" * 160


def channels(mixed: bytes) -> tuple[bytes, bytes]:
    return mixed[0::2], mixed[1::2]


def test_interleave_is_sample_by_sample() -> None:
    """Channel 0 takes the even bytes, channel 1 the odd ones; unequal channels are refused."""
    assert interleave(b"ab", b"xy") == b"axby"
    with pytest.raises(ValueError, match="cannot be interleaved"):
        interleave(b"ab", b"x")


@pytest.mark.parametrize(("index", "track"), [(0, "inbound"), (1, "outbound")])
def test_results_map_back_to_their_track(index: int, track: str) -> None:
    assert track_of(index) == track


@pytest.mark.parametrize(
    ("frames", "inbound", "outbound", "padded", "late"),
    [
        # Both tracks frame by frame, in Twilio's order: they line up exactly.
        ([("inbound", 0, IN), ("outbound", 0, OUT), ("inbound", 20, IN), ("outbound", 20, OUT)], IN * 2, OUT * 2, 0, 0),
        # The outbound's frames come a little late: nothing is lost or moved, it waits for them.
        ([("inbound", 0, IN), ("inbound", 20, IN), ("outbound", 0, OUT), ("outbound", 20, OUT)], IN * 2, OUT * 2, 0, 0),
        # A frame Twilio never sent (inbound 20 ms): its 20 ms are silence.
        (
            [
                ("inbound", 0, IN),
                ("outbound", 0, OUT),
                ("outbound", 20, OUT),
                ("inbound", 40, IN),
                ("outbound", 40, OUT),
            ],
            IN + SILENT + IN,
            OUT * 3,
            160,
            0,
        ),
        # The outbound silent (ringing) for 100 ms with a 40 ms bound: padded to 40 ms behind, then its frame
        # at 20 ms keeps none of itself (padded over) and its frame at 100 ms lands in place.
        (
            [("inbound", ms, IN) for ms in range(0, 120, 20)] + [("outbound", 20, OUT), ("outbound", 100, OUT)],
            IN * 6,
            SILENT * 5 + OUT,
            800,
            160,
        ),
    ],
)
def test_frames_are_placed_by_their_timestamps(
    frames: list[tuple[str, int, bytes]], inbound: bytes, outbound: bytes, padded: int, late: int
) -> None:
    """Whatever the arrival order, each sample lands at its timestamp; gaps and lag are silence, cuts counted."""
    mixer = Interleaver(max_lag_ms=40)
    mixed = b""
    for track, timestamp_ms, payload in frames:
        mixer.add(track, timestamp_ms, payload)
        mixed += mixer.take()
    mixed += mixer.flush()
    assert channels(mixed) == (inbound, outbound)
    assert (mixer.padded_samples, mixer.late) == (padded, [0, late])  # only the outbound comes late here
    assert mixer.position_s == len(inbound) / 8000


def test_samples_cut_are_counted_on_the_track_that_came_late() -> None:
    """The inbound lagging this time: what is cut of it is counted on channel 0, none on channel 1, and taken
    once."""
    mixer = Interleaver(max_lag_ms=40)
    for ms in range(0, 120, 20):
        mixer.add("outbound", ms, OUT)
    mixer.add("inbound", 20, IN)  # padded to 40 ms behind the outbound (80 ms): all of it was padded over
    assert mixer.late == [160, 0]
    assert (mixer.take_late(), mixer.take_late()) == ([160, 0], [0, 0])  # each cut is taken once


def test_a_lagging_track_never_holds_the_other_back() -> None:
    """With no outbound at all, the inbound goes out at most the bound behind its own frames."""
    mixer = Interleaver(max_lag_ms=100)
    sent = 0
    for seq in range(50):  # one second of inbound, nothing on the outbound
        mixer.add("inbound", seq * 20, IN)
        sent += len(mixer.take()) // 2
        assert (seq + 1) * 160 - sent <= 800, "never more than 100 ms held back"
    assert sent == 8000 - 800


def test_take_waits_for_both_channels_and_flush_evens_them() -> None:
    """Nothing goes while one channel is empty; at the end the shorter is padded, not cut."""
    mixer = Interleaver(max_lag_ms=1000)
    mixer.add("inbound", 0, IN * 2)
    assert mixer.take() == b""
    mixer.add("outbound", 0, OUT)
    assert channels(mixer.take()) == (IN, OUT)
    assert channels(mixer.flush()) == (IN, SILENT)
    assert mixer.flush() == b""
