"""Command line (wiring): `python -m service spool list | retry`, for audio waiting for batch transcription.

`list` only reads the spool directory. `retry` is one pass of the batch worker the server runs in the
background, run now: it finishes what a crashed process left (`Spool.recover`), transcribes every entry, and
exits 0 only if every entry was delivered. It is safe next to a running server: the spool's file locks keep
the two from delivering the same entry.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from service.cli.tables import table
from service.settings import load_settings
from service.spool.directory import Spool, SpoolEntry


def add_commands(commands: Any) -> None:
    """Register `spool list` and `spool retry` on the `python -m service` sub-command parser."""
    spool_parser = commands.add_parser("spool", help="audio that live transcription could not cover")
    actions = spool_parser.add_subparsers(dest="spool_command", required=True)
    list_parser = actions.add_parser("list", help="what waits in SPOOL_DIR for batch transcription, and why")
    list_parser.set_defaults(handler=list_spool)
    retry_parser = actions.add_parser("retry", help="transcribe everything in SPOOL_DIR now (pre-recorded API)")
    retry_parser.set_defaults(handler=retry_spool)


def list_spool(_args: argparse.Namespace) -> int:
    settings = load_settings()
    spool = Spool(settings.spool_dir)
    sys.stdout.write(spool_table(spool.entries()) + "\n")
    open_segments = spool.open_segments()
    if open_segments:
        sys.stdout.write(f"{open_segments} segment(s) still being written, or left by a crash until the next start\n")
    return 0


def retry_spool(_args: argparse.Namespace) -> int:
    # Imported here: `spool list` needs neither the SDK nor the app.
    from service import logs  # noqa: PLC0415
    from service.calls.observers import log_transcript  # noqa: PLC0415 - the transcript sink the server uses
    from service.deepgram.engines import batch_engines  # noqa: PLC0415 - loads deepgram-sdk only for this command
    from service.spool.worker import BatchWorker  # noqa: PLC0415

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    spool = Spool(settings.spool_dir)
    recovered = spool.recover()
    result = asyncio.run(BatchWorker(settings, spool, log_transcript, engines=batch_engines).run_pass())
    summary = f"delivered {result.delivered}, failed {result.failed}"
    if result.skipped:
        summary += f", skipped {result.skipped} (held by another process)"
    if recovered:
        summary += f"; {len(recovered)} recovered after a crash"
    sys.stdout.write(summary + "\n")
    return 0 if result.failed == 0 and result.skipped == 0 else 1


def spool_table(entries: Sequence[SpoolEntry]) -> str:
    """The entries as an aligned table, oldest first; "spool is empty" when there are none."""
    if not entries:
        return "spool is empty"
    header = ("ID", "CALL", "TRACK", "START", "DURATION", "SPOOLED BECAUSE", "ATTEMPTS", "LAST ERROR")
    rows = [
        (
            entry.id, entry.call_sid, entry.track, f"{entry.start_s:.2f}s", f"{entry.duration_s:.2f}s",
            entry.spooled_because, str(entry.attempts), entry.last_error or "-",
        )
        for entry in entries
    ]  # fmt: skip
    return table(header, rows)
