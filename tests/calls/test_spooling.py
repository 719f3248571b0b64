"""A track's spooler: which audio becomes which spool entry, and disk errors that lose audio but not the call."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import structlog

from service.calls.counters import CallInfo, TrackCounters
from service.calls.pipeline.spooling import ChannelSpooler, TrackSpooler

CALL = CallInfo(call_sid="CA1", stream_sid="MZ1", account_sid="AC1", tracks=("inbound",), custom_parameters={})


@dataclass
class MemorySegment:
    id: str
    start_s: float
    reason: str
    audio: bytearray = field(default_factory=bytearray)
    closed: bool = False
    fail_writes: bool = False

    def write(self, mulaw: bytes) -> None:
        if self.fail_writes:
            raise OSError(28, "No space left on device")
        self.audio += mulaw

    def close(self) -> MemorySegment | None:
        self.closed = True
        return self if self.audio else None  # like the directory: no audio, no entry


@dataclass
class MemorySpool:
    segments: list[MemorySegment] = field(default_factory=list)
    fail_writes: bool = False
    fail_open: bool = False

    def open_segment(self, *, call_sid: str, stream_sid: str, track: str, start_s: float, reason: str) -> MemorySegment:
        if self.fail_open:
            raise OSError(13, "Permission denied")
        segment = MemorySegment(
            f"{call_sid}-{track}-{len(self.segments) + 1}", start_s, reason, fail_writes=self.fail_writes
        )
        self.segments.append(segment)
        return segment


def spooler(spool: MemorySpool, counters: TrackCounters) -> TrackSpooler:
    return TrackSpooler(spool, call=CALL, track="inbound", counters=counters, log=structlog.get_logger("test"))


@pytest.mark.parametrize(
    ("audio", "stream_open", "opens_segment"),
    [
        (b"\x01" * 800, True, True),  # what was not final, then all that comes, in one open segment
        (b"\x01" * 800, False, True),  # the stream already ended: a segment for what was not final
        (b"", True, True),  # nothing held, the stream goes on: a segment for what comes
        (b"", False, False),  # nothing held and nothing to come: no entry at all
    ],
)
def test_taking_over_a_track(audio: bytes, stream_open: bool, opens_segment: bool) -> None:
    spool, counters = MemorySpool(), TrackCounters()
    track = spooler(spool, counters)
    track.take_over(2.0, audio, "Deepgram rejected the API key", stream_open=stream_open)
    assert counters.spool_entries == [], "the open segment becomes an entry only when it closes"
    assert (track.segment is not None) is opens_segment
    assert counters.bytes_spooled == len(audio)
    if opens_segment:
        [segment] = spool.segments
        assert (segment.start_s, bytes(segment.audio), segment.reason) == (2.0, audio, "Deepgram rejected the API key")


def test_taking_over_while_already_spooling_keeps_the_older_stretch_apart() -> None:
    """The buffer overflowed first (newer audio spooling from 30 s); the older stretch gets its own entry."""
    spool, counters = MemorySpool(), TrackCounters()
    track = spooler(spool, counters)
    track.start(30.0, "more than AUDIO_BUFFER_S").write(b"\x02" * 160)
    track.take_over(4.0, b"\x01" * 800, "Deepgram unavailable", stream_open=True)
    track.close()
    assert [(s.start_s, bytes(s.audio)) for s in spool.segments] == [(30.0, b"\x02" * 160), (4.0, b"\x01" * 800)]
    assert counters.spool_entries == ["CA1-inbound-2", "CA1-inbound-1"]  # the stretch closed first
    assert track.segment is None


def test_a_stretch_of_no_audio_makes_no_entry() -> None:
    spool, counters = MemorySpool(), TrackCounters()
    spooler(spool, counters).stretch(1.0, b"", "callscribe stopped")
    assert (spool.segments, counters.spool_entries) == ([], [])


@pytest.mark.parametrize(
    ("spool", "spooled", "lost"),
    [
        (MemorySpool(), 320, 0),
        (MemorySpool(fail_writes=True), 0, 320),  # disk full: counted as lost, the call goes on
        (MemorySpool(fail_open=True), 0, 320),  # spool not writable: the same
    ],
)
def test_disk_errors_lose_audio_not_the_call(spool: MemorySpool, spooled: int, lost: int) -> None:
    counters = TrackCounters()
    track = spooler(spool, counters)
    segment = track.start(0.0, "more than AUDIO_BUFFER_S")
    segment.write(b"\x01" * 160)
    segment.write(b"\x01" * 160)
    track.close()
    assert (counters.bytes_spooled, counters.bytes_lost) == (spooled, lost)
    assert counters.spool_entries == (["CA1-inbound-1"] if spooled else [])


def test_a_hand_over_streams_audio_is_spooled_where_it_is_on_the_call_timeline() -> None:
    """A stream that started 12.5 s into the call (a hand-over's new one): its spooled stretch starts at its own
    time plus that, so batch transcripts land where the live ones would have."""
    spool = MemorySpool()
    later = CallInfo(call_sid="CA1", stream_sid="MZ2", account_sid="AC1", tracks=("inbound",), custom_parameters={},
                     offset_s=12.5)  # fmt: skip
    track = TrackSpooler(spool, call=later, track="inbound", counters=TrackCounters(), log=structlog.get_logger("t"))
    track.stretch(1.0, b"\x01" * 800, "deepgram rejected the stream")
    assert [(segment.start_s, segment.closed) for segment in spool.segments] == [(13.5, True)]


def test_both_tracks_on_one_connection_spool_each_channel_to_its_track_and_close_like_one() -> None:
    """Interleaved audio is split into one entry per track; once closed, new audio no longer goes to the spool."""
    spool, log = MemorySpool(), structlog.get_logger("test")
    tracks = [
        TrackSpooler(spool, call=CALL, track=name, counters=TrackCounters(), log=log)
        for name in ("inbound", "outbound")
    ]
    both = ChannelSpooler(tracks)
    both.take_over(1.0, b"\x01\x02" * 80, "Deepgram unavailable", stream_open=True)
    assert both.segment is not None
    both.close()
    assert both.segment is None
    assert [(s.id, bytes(s.audio), s.closed) for s in spool.segments] == [
        ("CA1-inbound-1", b"\x01" * 80, True),
        ("CA1-outbound-2", b"\x02" * 80, True),
    ]
