"""I/O layer (local files only, no network): audio that live transcription could not cover, waiting for batch.

One entry per stretch of one track, named by a stem `<created>-<call_sid>-<track>-<n>` in SPOOL_DIR:

    <stem>.wav.part       a segment being written: a μ-law WAV header with UNKNOWN_SIZE, then the audio appended
    <stem>.segment.json   what that segment is (call, track, start, reason), written when it opens
    <stem>.wav            the finished WAV (the .wav.part renamed once its header holds the real sizes)
    <stem>.json           the sidecar, written last: its presence is what makes an entry complete
    <stem>.*.tmp          temporaries of atomic writes (write, fsync, os.replace); never read

Crash safety (process death: SIGKILL, OOM, a dyno restart). Audio reaches the kernel on every `write` (`os.write`,
no buffer in the process), so a crash loses none of it; `recover()` finishes any segment no live process holds.
Every step that makes or ends an entry is one `os.replace` or `os.unlink`, ordered so that a crash between two
steps leaves either the old state or the new one, which `entries()` and `recover()` tell apart: a sidecar means
complete; a sidecar without audio never exists (the WAV goes first, and is removed last).

Several processes may share the directory (Hypercorn workers, `python -m service spool retry`). Whoever writes,
recovers, delivers or removes an entry holds an exclusive `flock` on its audio file's inode (the same inode from
`.wav.part` to `.wav`); the kernel drops it when the holder dies, so "locked" means "a live process owns it".
A power loss can still take the last, not yet fsynced, seconds of a segment being written.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import fcntl
import json
import os
import re
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from service import mulaw
from service.files import fsync_directory, write_all
from service.spool.wav import HEADER_BYTES, PAD_BYTE, UNKNOWN_SIZE, WavFormatError, header_data_size, mulaw_wav_header
from service.times import Clock, utc_now

SIDECAR_VERSION = 1
RECOVERED = "recovered after a crash"
ORPHAN_AGE_S = 3600.0  # a .wav.part without metadata this old belongs to no live process

_WAV, _SIDECAR, _PART, _SEGMENT, _TMP = ".wav", ".json", ".wav.part", ".segment.json", ".tmp"
_STAMP = "%Y%m%dT%H%M%S%fZ"  # no dots, so a file's stem is everything before its first dot
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A complete spool entry: a stretch of one track's audio, placed on the call's timeline."""

    id: str  # the file stem; stable for the entry's life, so it keys batch transcripts
    call_sid: str
    stream_sid: str
    track: str
    start_s: float  # seconds from the start of the stream
    duration_s: float
    spooled_because: str  # why live transcription did not cover it (the sidecar's "reason"); never a retry's error
    created_at: str  # ISO 8601, UTC: when the stretch started to be spooled
    attempts: int  # batch transcriptions tried and failed
    last_error: str | None
    wav_path: Path
    meta_path: Path


class Spool:
    """The spool directory: open segments, list complete entries, record failures, remove, recover after a crash."""

    def __init__(self, directory: Path, *, clock: Clock = utc_now) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._numbers: collections.Counter[tuple[str, str]] = collections.Counter()

    # --- Writing ----------------------------------------------------------------------------------------

    def open_segment(self, *, call_sid: str, stream_sid: str, track: str, start_s: float, reason: str) -> SpoolSegment:
        """Start spooling one track's audio from `start_s` on the call's timeline; close() makes it an entry."""
        self.directory.mkdir(parents=True, exist_ok=True)
        created = self._clock().astimezone(datetime.UTC)
        stem, fd = self._create_part(created, call_sid, track)
        try:
            meta = {
                "version": SIDECAR_VERSION, "call_sid": call_sid, "stream_sid": stream_sid, "track": track,
                "start_s": start_s, "reason": reason, "created_at": created.isoformat(timespec="microseconds"),
            }  # fmt: skip
            # Written after the part file exists and is locked, so recover() never sees metadata it could take
            # for a dead segment's, and before any audio, so no audio ever lacks its metadata.
            _write_atomically(self._path(stem, _SEGMENT), meta)
        except BaseException:
            os.close(fd)
            self._path(stem, _PART).unlink(missing_ok=True)
            raise
        return SpoolSegment(self, stem, meta, fd)

    def _create_part(self, created: datetime.datetime, call_sid: str, track: str) -> tuple[str, int]:
        """A new, locked `.wav.part` with a placeholder header; its stem is unique in the directory."""
        key = (_safe(call_sid), _safe(track))
        while True:
            self._numbers[key] += 1
            stem = f"{created.strftime(_STAMP)}-{key[0]}-{key[1]}-{self._numbers[key]}"
            try:
                fd = os.open(self._path(stem, _PART), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue  # another process (or an earlier run) has this stem: take the next number
            fcntl.flock(fd, fcntl.LOCK_EX)  # new file, nobody else holds it: does not block
            write_all(fd, mulaw_wav_header(UNKNOWN_SIZE))
            return stem, fd

    def _finish(self, stem: str, meta: dict[str, Any], fd: int, data_bytes: int) -> SpoolEntry:
        """Give the audio file under `fd` its real header, rename it to .wav, then write the sidecar."""
        os.pwrite(fd, mulaw_wav_header(data_bytes), 0)
        size = os.fstat(fd).st_size
        if size > HEADER_BYTES + data_bytes:  # a pad from a crashed earlier _finish, or a write that failed partway
            os.ftruncate(fd, HEADER_BYTES + data_bytes)
        if data_bytes % 2:
            os.pwrite(fd, PAD_BYTE, HEADER_BYTES + data_bytes)
        os.fsync(fd)
        part, wav = self._path(stem, _PART), self._path(stem, _WAV)
        if part.exists():
            part.replace(wav)
        duration_s = data_bytes / mulaw.BYTES_PER_SECOND
        sidecar = {
            "version": SIDECAR_VERSION, "call_sid": meta["call_sid"], "stream_sid": meta["stream_sid"],
            "track": meta["track"], "start_s": meta["start_s"], "duration_s": duration_s, "reason": meta["reason"],
            "created_at": meta["created_at"], "attempts": 0, "last_error": None,
        }  # fmt: skip
        _write_atomically(self._path(stem, _SIDECAR), sidecar)
        fsync_directory(self.directory)
        # Last: until here a crash leaves the segment to recover(), which finds the sidecar and only tidies up.
        self._path(stem, _SEGMENT).unlink(missing_ok=True)
        entry = self._read_entry(stem)
        assert entry is not None  # just written
        return entry

    def _discard(self, stem: str) -> None:
        self._path(stem, _SEGMENT).unlink(missing_ok=True)
        self._path(stem, _PART).unlink(missing_ok=True)

    # --- Reading and delivering -------------------------------------------------------------------------

    def entries(self) -> list[SpoolEntry]:
        """Complete entries, oldest first; one track's entries together and in timeline order.

        A track can have an older stretch spooled after a newer one opened (live gave up on audio it held while
        the rest of the call was already going to the spool); keeping each track's entries together, in order of
        `start_s`, means its batch transcripts come out in call order.
        """
        stems = [stem for stem, suffixes in self._files().items() if _SIDECAR in suffixes]
        found = [entry for stem in stems if (entry := self._read_entry(stem)) is not None]
        found.sort(key=lambda entry: (entry.created_at, entry.id))
        first: dict[tuple[str, str], int] = {}
        for index, entry in enumerate(found):
            first.setdefault((entry.stream_sid, entry.track), index)
        return sorted(found, key=lambda entry: (first[entry.stream_sid, entry.track], entry.start_s, entry.id))

    def open_segments(self) -> int:
        """Segments being written, or left by a crash for recover(): audio that is not an entry yet."""
        return sum(_SEGMENT in suffixes for suffixes in self._files().values())

    @contextlib.contextmanager
    def claim(self, entry: SpoolEntry) -> Iterator[SpoolEntry | None]:
        """Hold `entry` for delivery: the entry as it is now, or None if another process holds it or it is gone."""
        with _locked(entry.wav_path) as (held, _):
            yield self._read_entry(entry.id) if held else None

    def record_failure(self, entry: SpoolEntry, error: str) -> SpoolEntry:
        """One more failed attempt, with its error, atomically rewritten into the sidecar."""
        updated = replace(entry, attempts=entry.attempts + 1, last_error=error)
        if entry.meta_path.exists():  # never bring back a sidecar that remove() took away
            _write_atomically(entry.meta_path, _sidecar(updated))
        return updated

    def remove(self, entry: SpoolEntry) -> None:
        """Remove a delivered entry: the sidecar first, so a crash halfway leaves audio recover() deletes."""
        entry.meta_path.unlink(missing_ok=True)
        entry.wav_path.unlink(missing_ok=True)
        self._path(entry.id, _SIDECAR + _TMP).unlink(missing_ok=True)

    def erase(self, call_sids: Collection[str]) -> int:
        """Remove every entry of `call_sids`, complete or left by a crash, whoever holds it (an erasure outranks a
        batch attempt in flight, which finds its sidecar gone and delivers nothing); not a segment a live process
        is still writing (its call is on). How many went."""
        wanted = set(call_sids)
        removed = 0
        for stem in sorted(self._files()):
            meta = _read_json(self._path(stem, _SIDECAR)) or _read_json(self._path(stem, _SEGMENT))
            if meta is None or meta.get("call_sid") not in wanted:
                continue
            with _locked(self._path(stem, _PART)) as (free, _):
                if not free:
                    continue  # being written: the call is still on
                for suffix in (_SIDECAR, _SEGMENT, _WAV, _PART):  # the sidecar first, as `remove` does
                    self._path(stem, suffix).unlink(missing_ok=True)
            for temporary in self.directory.glob(f"{stem}.*{_TMP}"):
                temporary.unlink(missing_ok=True)
            removed += 1
        return removed

    # --- After a crash ----------------------------------------------------------------------------------

    def recover(self) -> list[SpoolEntry]:
        """Turn segments no live process holds into entries (reason: RECOVERED), and tidy up what crashes left."""
        files = self._files()
        leftovers = sorted(
            stem for stem, suffixes in files.items()
            if _SEGMENT in suffixes or _PART in suffixes or _TMP in suffixes
            or (_WAV in suffixes and _SIDECAR not in suffixes)
        )  # fmt: skip
        return [entry for stem in leftovers if (entry := self._recover(stem)) is not None]

    def _recover(self, stem: str) -> SpoolEntry | None:
        # The part first: it only ever becomes the .wav, so if it has gone by the time it is opened, the .wav is there.
        with _locked(self._path(stem, _PART), self._path(stem, _WAV)) as (held, audio):
            return self._recover_dead(stem, audio) if held else None  # held by a live process: its own to finish

    def _recover_dead(self, stem: str, audio: Path | None) -> SpoolEntry | None:
        """The files of `stem`, which no live process holds, made an entry or tidied away."""
        if self._path(stem, _SIDECAR).exists():
            self._tidy(stem, keep_audio=True)  # complete: a crash only left temporaries behind
            return None
        meta = _read_json(self._path(stem, _SEGMENT))
        data_bytes = _recorded_bytes(audio) if audio is not None else 0
        if meta is None and audio is not None and audio.suffix == ".part":
            # Its creator is between creating it and locking or describing it, or died there, before any audio
            # (audio is written only after the metadata). Tidied once surely dead; audio is never deleted.
            if data_bytes == 0 and time.time() - audio.stat().st_mtime > ORPHAN_AGE_S:
                self._tidy(stem, keep_audio=False)
            return None
        if data_bytes is None:
            return None  # not a header the spool wrote: left for a person to look at
        if meta is None or data_bytes == 0 or audio is None:
            self._tidy(stem, keep_audio=False)  # an entry half removed, or a segment that never got audio
            return None
        meta["reason"] = f"{RECOVERED}: {meta.get('reason', '')}"
        with _open_for_update(audio) as fd:
            return self._finish(stem, meta, fd, data_bytes)

    def _tidy(self, stem: str, *, keep_audio: bool) -> None:
        for suffix in (_SEGMENT, _PART) if keep_audio else (_SEGMENT, _PART, _WAV):
            self._path(stem, suffix).unlink(missing_ok=True)
        for temporary in self.directory.glob(f"{stem}.*{_TMP}"):
            temporary.unlink(missing_ok=True)

    # --- Files ------------------------------------------------------------------------------------------

    def _path(self, stem: str, suffix: str) -> Path:
        return self.directory / f"{stem}{suffix}"

    def _files(self) -> dict[str, set[str]]:
        """Each stem in the directory and its suffixes (every temporary counted as `.tmp`)."""
        files: dict[str, set[str]] = collections.defaultdict(set)
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                stem, dot, rest = path.name.partition(".")
                if dot:
                    files[stem].add(_TMP if rest.endswith("tmp") else dot + rest)
        return files

    def _read_entry(self, stem: str) -> SpoolEntry | None:
        """The complete entry `stem`, or None if it has no sidecar (or one this version cannot read)."""
        meta_path = self._path(stem, _SIDECAR)
        data = _read_json(meta_path)
        if data is None or data.get("version") != SIDECAR_VERSION:
            return None
        try:
            return SpoolEntry(
                id=stem, call_sid=str(data["call_sid"]), stream_sid=str(data["stream_sid"]), track=str(data["track"]),
                start_s=float(data["start_s"]), duration_s=float(data["duration_s"]),
                spooled_because=str(data["reason"]), created_at=str(data["created_at"]), attempts=int(data["attempts"]),
                last_error=None if data["last_error"] is None else str(data["last_error"]),
                wav_path=self._path(stem, _WAV), meta_path=meta_path,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None  # written by hand or by another program: not ours to guess at


class SpoolSegment:
    """One stretch of one track being spooled. Writes are synchronous: a few KB a second, straight to the kernel."""

    def __init__(self, spool: Spool, stem: str, meta: dict[str, Any], fd: int) -> None:
        self.id = stem
        self._spool = spool
        self._meta = meta
        self._fd: int | None = fd
        self._bytes = 0
        self._entry: SpoolEntry | None = None

    @property
    def bytes_written(self) -> int:
        return self._bytes

    def write(self, mulaw: bytes) -> None:
        """Append μ-law audio; it survives a crash of this process from the moment this returns."""
        if self._fd is None:
            raise ValueError(f"spool segment {self.id} is closed")
        write_all(self._fd, mulaw)
        self._bytes += len(mulaw)

    def close(self) -> SpoolEntry | None:
        """Make the audio a complete entry (None if there was none); closing again returns the same answer."""
        fd, self._fd = self._fd, None
        if fd is None:
            return self._entry
        try:
            if self._bytes:
                self._entry = self._spool._finish(self.id, self._meta, fd, self._bytes)
            else:
                self._spool._discard(self.id)
        finally:
            os.close(fd)  # releases the lock, and only now: the entry is complete or gone
        return self._entry


# --- Helpers --------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    """`name` fit for a file name: Twilio's SIDs and track names pass unchanged; nothing can climb out of the dir."""
    return _UNSAFE.sub("_", name)[:64] or "unknown"


def _sidecar(entry: SpoolEntry) -> dict[str, Any]:
    return {
        "version": SIDECAR_VERSION, "call_sid": entry.call_sid, "stream_sid": entry.stream_sid, "track": entry.track,
        "start_s": entry.start_s, "duration_s": entry.duration_s, "reason": entry.spooled_because,
        "created_at": entry.created_at, "attempts": entry.attempts, "last_error": entry.last_error,
    }  # fmt: skip


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to `path` so that readers see the old file or the whole new one, never a part."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        file.write(json.dumps(data, indent=1).encode())
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recorded_bytes(audio: Path) -> int | None:
    """Audio bytes in a spool WAV: the header's size, or the file's length if the header is still a placeholder."""
    try:
        with audio.open("rb") as file:
            header = file.read(HEADER_BYTES)
            size = os.fstat(file.fileno()).st_size
        declared = header_data_size(header)
    except (OSError, WavFormatError):
        return None if audio.exists() else 0
    available = size - HEADER_BYTES
    return available if declared is None else min(declared, available)


@contextlib.contextmanager
def _locked(*candidates: Path) -> Iterator[tuple[bool, Path | None]]:
    """Lock the first of `candidates` that exists, without waiting: (held, its path) for the block.

    (False, path): a live process holds it. (True, None): none exists, so nobody can own it. A candidate
    renamed or removed between being opened and being locked is looked for again: the holder changed it.
    """
    while True:
        for path in candidates:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False, path
                    return
                if _same_file(fd, path):
                    yield True, path
                    return
            finally:
                os.close(fd)
            break  # locked a file that is no longer at `path`: start again
        else:
            yield True, None
            return


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.stat())
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _open_for_update(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR)
    try:
        yield fd
    finally:
        os.close(fd)
