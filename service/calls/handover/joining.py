"""Orchestration: the new stream's side of a hand-over (`passing.py` is the old stream's).

A stream started with a hand-over token is placed on the call's timeline where the database says it started,
keeps the words from the cut on (`stitching.py`), and lets them out once the streams it took over from have
ended, so the call's words stay in order in every log, table and webhook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.calls.handover.passing import OVERLAP_S, RELEASE_AFTER_S, StreamRecords, wait_until_others_ended
from service.calls.handover.stitching import StreamShare
from service.calls.transcript import Transcript


async def take_over(records: StreamRecords | None, call_sid: str, stream_sid: str, log: Any) -> StreamShare | None:
    """The new stream's share of the call, from its start on the call's timeline; None when the database cannot
    place it (it is then timed from its own start, and the overlap with the old stream is not cut)."""
    offset = None
    if records is not None:
        try:
            offset = await records.offset_s(call_sid, stream_sid)
        except Exception as exc:  # noqa: BLE001 - without the database the stream still transcribes
            log.warning("handover.lookup_failed", error=type(exc).__name__)
    if offset is None:
        log.warning(
            "handover.unplaced", why="the database has no record of the call's streams: timed from this stream's "
            "start, and the overlap with the old stream is not cut",
        )  # fmt: skip
        return None
    log.info("handover.taking_over", offset_s=round(offset, 3), cut_s=round(offset + OVERLAP_S, 3))
    return StreamShare.taking_over(offset, offset + OVERLAP_S)


async def release_after_old(
    records: StreamRecords,
    share: StreamShare,
    *,
    call_sid: str,
    stream_sid: str,
    emit: Callable[[list[Transcript]], None],
    log: Any,
) -> None:
    """Once the streams this one took over from have ended (or RELEASE_AFTER_S passed), its held words go out."""
    ended = await wait_until_others_ended(records, call_sid, stream_sid, RELEASE_AFTER_S)
    if not ended:
        log.warning("handover.old_stream_silent", why=f"not ended after {RELEASE_AFTER_S:g} s: words let out")
    emit(share.release())
