"""The spool directory: segments become complete entries, listed oldest first, and a crash loses no audio."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.spool.directory import RECOVERED, Spool, SpoolEntry
from service.spool.wav import read_mulaw_wav
from tests.helpers.spool import AUDIO, crash_while_spooling, names


def ticking_clock(start: str = "2025-01-02T03:04:05+00:00") -> Iterator[datetime.datetime]:
    moment = datetime.datetime.fromisoformat(start)
    while True:
        yield moment
        moment += datetime.timedelta(seconds=1)


def spool_with_clock(directory: Path) -> Spool:
    ticks = ticking_clock()
    return Spool(directory, clock=lambda: next(ticks))


def spool_one(spool: Spool, *, call_sid: str = "CA1", track: str = "inbound", start_s: float = 0.0) -> SpoolEntry:
    segment = spool.open_segment(
        call_sid=call_sid, stream_sid=f"MZ{call_sid}", track=track, start_s=start_s, reason="r"
    )
    segment.write(AUDIO[:4000])
    segment.write(AUDIO[4000:])
    entry = segment.close()
    assert entry is not None
    return entry


def test_a_closed_segment_is_a_wav_and_its_sidecar(tmp_path: Path) -> None:
    """close(): the μ-law WAV holds every byte written; the sidecar says what it is; nothing else is left."""
    spool = spool_with_clock(tmp_path / "spool")  # created on demand
    segment = spool.open_segment(
        call_sid="CAabc", stream_sid="MZabc", track="inbound", start_s=12.5, reason="Deepgram unavailable for 20 s"
    )
    segment.write(AUDIO)
    assert segment.bytes_written == len(AUDIO)
    entry = segment.close()
    assert entry is not None
    assert entry.id == "20250102T030405000000Z-CAabc-inbound-1"
    assert names(tmp_path / "spool") == [f"{entry.id}.json", f"{entry.id}.wav"]
    assert read_mulaw_wav(entry.wav_path.read_bytes()) == AUDIO
    assert json.loads(entry.meta_path.read_text()) == {
        "version": 1, "call_sid": "CAabc", "stream_sid": "MZabc", "track": "inbound", "start_s": 12.5,
        "duration_s": len(AUDIO) / 8000, "reason": "Deepgram unavailable for 20 s",
        "created_at": "2025-01-02T03:04:05.000000+00:00", "attempts": 0, "last_error": None,
    }  # fmt: skip
    assert spool.entries() == [entry]


def test_a_segment_with_no_audio_leaves_nothing(tmp_path: Path) -> None:
    """close() with nothing written returns None and removes its temporary files."""
    spool = Spool(tmp_path)
    segment = spool.open_segment(call_sid="CA1", stream_sid="MZ1", track="inbound", start_s=0.0, reason="r")
    assert segment.close() is None
    assert names(tmp_path) == []


def test_closing_twice_is_the_same_entry_and_writing_after_is_refused(tmp_path: Path) -> None:
    """A second close() returns the first answer; write() after close() raises instead of losing audio."""
    spool = Spool(tmp_path)
    segment = spool.open_segment(call_sid="CA1", stream_sid="MZ1", track="inbound", start_s=0.0, reason="r")
    segment.write(b"\x01\x02")
    first = segment.close()
    assert segment.close() == first
    with pytest.raises(ValueError, match="closed"):
        segment.write(b"\x03")


def test_an_open_segment_is_not_an_entry(tmp_path: Path) -> None:
    """Until close(), a segment's audio is in temporary files that entries() does not list."""
    spool = Spool(tmp_path)
    segment = spool.open_segment(call_sid="CA1", stream_sid="MZ1", track="inbound", start_s=0.0, reason="r")
    segment.write(AUDIO)
    assert spool.entries() == []
    assert spool.open_segments() == 1
    segment.close()
    assert spool.open_segments() == 0
    assert len(spool.entries()) == 1


def test_entries_are_oldest_first_with_each_track_in_timeline_order(tmp_path: Path) -> None:
    """Oldest first; a track's older stretch spooled after a newer one still comes first for that track."""
    spool = spool_with_clock(tmp_path)
    newer = spool.open_segment(call_sid="CA1", stream_sid="MZCA1", track="inbound", start_s=5.0, reason="buffer full")
    other_call = spool_one(spool, call_sid="CA2")
    older = spool_one(spool, call_sid="CA1", start_s=2.0)  # live gave up on what it held
    newer.write(AUDIO)
    newer_entry = newer.close()
    assert newer_entry is not None
    third_call = spool_one(spool, call_sid="CA3")
    assert [entry.id for entry in spool.entries()] == [older.id, newer_entry.id, other_call.id, third_call.id]


def test_file_names_cannot_leave_the_directory(tmp_path: Path) -> None:
    """A call SID or track with path characters is made safe in the file name, and kept as is in the sidecar."""
    spool = Spool(tmp_path / "spool")
    entry = spool_one(spool, call_sid="../../etc/passwd", track="in/bound")
    assert entry.wav_path.parent == tmp_path / "spool"
    assert "-______etc_passwd-in_bound-1" in entry.id
    assert entry.call_sid == "../../etc/passwd"


def test_record_failure_rewrites_the_sidecar(tmp_path: Path) -> None:
    """record_failure counts the attempt and keeps the last error, in the sidecar, with no temporary left."""
    spool = Spool(tmp_path)
    entry = spool_one(spool)
    once = spool.record_failure(entry, "HTTP 503")
    twice = spool.record_failure(once, "HTTP 401")
    assert (twice.attempts, twice.last_error) == (2, "HTTP 401")
    assert spool.entries() == [twice]
    assert json.loads(entry.meta_path.read_text())["attempts"] == 2
    assert names(tmp_path) == [f"{entry.id}.json", f"{entry.id}.wav"]


def test_remove_deletes_the_entry(tmp_path: Path) -> None:
    """remove() takes the sidecar and the audio; a failure recorded afterwards does not bring it back."""
    spool = Spool(tmp_path)
    entry = spool_one(spool)
    spool.remove(entry)
    spool.record_failure(entry, "late")
    assert names(tmp_path) == []
    assert spool.entries() == []


def test_a_missing_directory_has_no_entries(tmp_path: Path) -> None:
    """entries() and recover() on a spool directory that does not exist yet find nothing and create nothing."""
    spool = Spool(tmp_path / "absent")
    assert spool.entries() == []
    assert spool.recover() == []
    assert not (tmp_path / "absent").exists()


def test_an_entry_being_delivered_cannot_be_claimed_twice(tmp_path: Path) -> None:
    """claim(): a second claimant (another worker) gets None while the first holds it, and after removal."""
    spool = Spool(tmp_path)
    entry = spool_one(spool)
    with spool.claim(entry) as held:
        assert held == entry
        with spool.claim(entry) as again:
            assert again is None
        spool.remove(entry)
    with spool.claim(entry) as after:
        assert after is None


def test_recover_leaves_a_live_segment_alone(tmp_path: Path) -> None:
    """A segment still being written (its lock held) is not recovered; it closes normally afterwards."""
    spool = Spool(tmp_path)
    segment = spool.open_segment(call_sid="CA1", stream_sid="MZ1", track="inbound", start_s=0.0, reason="r")
    segment.write(AUDIO)
    assert Spool(tmp_path).recover() == []
    entry = segment.close()
    assert entry is not None
    assert entry.spooled_because == "r"
    assert Spool(tmp_path).entries() == [entry]


@pytest.mark.parametrize("crash_at", ["writing-audio", "renaming-the-wav", "writing-the-sidecar"])
def test_a_crash_before_the_entry_is_complete_is_recovered_with_every_byte(tmp_path: Path, crash_at: str) -> None:
    """Killed before the sidecar exists: no entry is listed; recover() makes one, with all the audio, once."""
    crash_while_spooling(tmp_path, crash_at)
    spool = Spool(tmp_path)
    assert spool.entries() == []  # temporaries and a half-written sidecar are not entries
    [entry] = spool.recover()
    assert read_mulaw_wav(entry.wav_path.read_bytes()) == AUDIO
    assert (entry.call_sid, entry.stream_sid, entry.track, entry.start_s) == ("CAcrash", "MZcrash", "inbound", 1.5)
    assert entry.spooled_because == f"{RECOVERED}: Deepgram unavailable for 20 s"
    assert entry.duration_s == len(AUDIO) / 8000
    assert spool.entries() == [entry]
    assert names(tmp_path) == [f"{entry.id}.json", f"{entry.id}.wav"]
    assert Spool(tmp_path).recover() == []  # a second start-up finds nothing more


def test_a_crash_after_the_sidecar_leaves_one_complete_entry(tmp_path: Path) -> None:
    """Killed after the sidecar was written: the entry is already listed; recover() only tidies up."""
    crash_while_spooling(tmp_path, "tidying-up")
    spool = Spool(tmp_path)
    [entry] = spool.entries()
    assert entry.spooled_because == "Deepgram unavailable for 20 s"
    assert spool.recover() == []
    assert spool.entries() == [entry]
    assert read_mulaw_wav(entry.wav_path.read_bytes()) == AUDIO
    assert names(tmp_path) == [f"{entry.id}.json", f"{entry.id}.wav"]


def test_a_crash_halfway_through_remove_leaves_no_entry(tmp_path: Path) -> None:
    """The sidecar goes first: audio left without one was delivered, and recover() deletes it."""
    spool = Spool(tmp_path)
    entry = spool_one(spool)
    entry.meta_path.unlink()  # remove() killed between its two unlinks
    assert spool.entries() == []
    assert spool.recover() == []
    assert names(tmp_path) == []


def test_a_half_written_sidecar_rewrite_is_ignored(tmp_path: Path) -> None:
    """A crash inside record_failure leaves the old sidecar in force; its temporary is ignored, then tidied."""
    spool = Spool(tmp_path)
    entry = spool_one(spool)
    entry.meta_path.with_name(entry.meta_path.name + ".tmp").write_text('{"version": 1, "attem')
    assert spool.entries() == [entry]
    assert spool.recover() == []
    assert names(tmp_path) == [f"{entry.id}.json", f"{entry.id}.wav"]
