"""The audio ledger: what was received, sent, made final, and what a new connection must replay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.calls.pipeline.ledger import AudioLedger

FRAME = 160


def frames(count: int, start: int = 0) -> list[bytes]:
    return [bytes([(start + n) % 256]) * FRAME for n in range(count)]


def test_a_reconnect_replays_from_the_first_byte_not_yet_final() -> None:
    """After a final at 0.04 s, a new connection starts at byte 320 and its times are shifted by 0.04 s."""
    ledger = AudioLedger()
    for frame in frames(5):
        ledger.receive(frame)
    sent = [ledger.take(FRAME) for _ in range(4)]
    ledger.acknowledge(0.04)  # 320 bytes: the first two frames are final
    assert ledger.unacknowledged_bytes == 2 * FRAME
    ledger.restart()
    assert ledger.connection_base == 320
    assert ledger.call_time(0.5) == 0.54
    replay = [ledger.take(FRAME) for _ in range(3)]
    assert replay == [*sent[2:], frames(5)[4]]


def test_a_final_inside_a_chunk_cuts_the_replay_there() -> None:
    """A final ending mid-chunk replays only the chunk's remainder: nothing twice, nothing skipped."""
    ledger = AudioLedger()
    for frame in frames(5):
        ledger.receive(frame)
    chunk = ledger.take(5 * FRAME)
    ledger.acknowledge(0.05)  # 400 bytes: two and a half frames
    ledger.restart()
    assert ledger.take(5 * FRAME) == chunk[400:]


def test_release_hands_over_everything_not_final_with_its_start() -> None:
    """Giving up live: the unacknowledged and pending audio, in order, starting where finals stopped."""
    ledger = AudioLedger()
    audio = b"".join(frames(10))
    for frame in frames(10):
        ledger.receive(frame)
    ledger.take(3 * FRAME)
    ledger.acknowledge(0.02)
    start_s, rest = ledger.release()
    assert start_s == 0.02
    assert rest == audio[160:]
    assert ledger.waiting_bytes == 0


def test_acknowledgements_never_go_past_what_was_sent() -> None:
    """A final claiming more audio than this connection carried acknowledges only what it carried."""
    ledger = AudioLedger()
    for frame in frames(3):
        ledger.receive(frame)
    ledger.take(FRAME)
    ledger.acknowledge(9.0)
    assert ledger.acknowledged == FRAME
    assert ledger.waiting_bytes == 2 * FRAME


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("receive"), st.integers(1, 400)),
        st.tuples(st.just("take"), st.integers(1, 2000)),
        st.tuples(st.just("ack"), st.floats(0, 1)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=60,
)


@given(OPERATIONS)
def test_final_audio_plus_released_audio_is_exactly_what_was_received(operations: list[tuple[str, float]]) -> None:
    """Whatever happens, audio made final plus what release() returns is the received audio, in order."""
    ledger = AudioLedger()
    received = bytearray()
    for name, value in operations:
        if name == "receive":
            payload = bytes([len(received) % 251]) * int(value)
            received += payload
            ledger.receive(payload)
        elif name == "take" and ledger.pending_chunks:
            ledger.take(int(value))
        elif name == "ack":
            ledger.acknowledge(value * ledger.connection_sent / 8000)
        elif name == "restart":
            ledger.restart()
    final = ledger.acknowledged
    start_s, rest = ledger.release()
    assert start_s == final / 8000
    assert bytes(received[:final]) + rest == bytes(received)


def test_spooled_audio_keeps_its_place_on_the_timeline_but_is_not_held() -> None:
    """skip(): audio that went to the spool moves the next byte's position, yet is never sent or replayed."""
    ledger = AudioLedger()
    [first, second] = frames(2)
    ledger.receive(first)
    ledger.skip(3 * FRAME)
    ledger.receive(second)
    assert ledger.received == 5 * FRAME
    assert ledger.waiting_bytes == 2 * FRAME
    assert ledger.take(5 * FRAME) == first + second
    start_s, rest = ledger.release()
    assert (start_s, rest) == (0.0, first + second)


def test_take_joins_whole_chunks_up_to_the_bound() -> None:
    """A backlog leaves in few messages: whole chunks joined up to the bound, never split; one too big goes alone."""
    ledger = AudioLedger()
    for frame in frames(30):
        ledger.receive(frame)
    ledger.receive(b"\x02" * 3000)
    assert [len(ledger.take(2000)) for _ in range(3)] == [1920, 1920, 960]
    assert ledger.pending_bytes == 3000
    assert len(ledger.take(2000)) == 3000, "a chunk larger than the bound is never cut"
    assert (ledger.pending_chunks, ledger.pending_bytes, ledger.connection_sent) == (0, 0, 30 * FRAME + 3000)


def test_two_interleaved_channels_count_seconds_at_twice_the_bytes_and_cut_on_whole_frames() -> None:
    """A two-channel ledger: a final at 0.04 s covers 640 bytes (320 per channel), times shift by bytes / 16 000,
    and a cut never splits a sample pair."""
    ledger = AudioLedger(channels=2)
    for frame in frames(6):
        ledger.receive(frame)
    for _ in range(6):
        ledger.take(FRAME)
    ledger.acknowledge(0.04)
    assert ledger.acknowledged == 640
    ledger.acknowledge(0.0401875)  # 321.5 samples: whole pairs only, never 643 bytes
    assert ledger.acknowledged == 644
    ledger.restart()
    assert ledger.call_time(0.5) == pytest.approx(0.5 + 644 / 16_000)
    start_s, audio = ledger.release()
    assert (start_s, audio) == (644 / 16_000, b"".join(frames(6))[644:])
