"""Protocol layer (no I/O): the events TRANSCRIPT_WEBHOOK_URL receives, built from what the database stores.

Each event has a stable id derived from what it describes (an utterance's key, a call's SID), so the
outbox row, a retry and the receiver's own dedupe all agree on what "the same event" is.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from service.storage.statuses import EventType
from service.times import as_utc

# What an `utterance.final` event leaves out of the stored row: the row's own bookkeeping, and the words (the
# API has them). Every other column goes out as it is, so a field stored for a transcript is delivered too.
UTTERANCE_LEAVES_OUT = frozenset({"key", "created_at", "words"})
# What each entry of `call.completed`'s transcript leaves out besides: what the call itself says once.
ENTRY_LEAVES_OUT = UTTERANCE_LEAVES_OUT | {"call_sid", "stream_sid", "confidence"}


def _iso(value: datetime.datetime | None) -> str | None:
    # With its offset whatever the backend: SQLite hands stored times back naive (all of them UTC).
    return as_utc(value).isoformat() if value is not None else None


def utterance_event(utterance: Mapping[str, Any], created_at: datetime.datetime) -> dict[str, Any]:
    """`utterance.final`: one final result, with its speaker and place on the call's timeline."""
    return {
        "id": f"{EventType.UTTERANCE_FINAL}:{utterance['key']}",
        "type": EventType.UTTERANCE_FINAL,
        "created_at": _iso(created_at),
        "data": {name: value for name, value in utterance.items() if name not in UTTERANCE_LEAVES_OUT},
    }


def call_completed_event(
    call: Mapping[str, Any], utterances: Sequence[Mapping[str, Any]], created_at: datetime.datetime
) -> dict[str, Any]:
    """`call.completed`: the call and its whole transcript as stored when the stream ended."""
    return {
        "id": f"{EventType.CALL_COMPLETED}:{call['call_sid']}",
        "type": EventType.CALL_COMPLETED,
        "created_at": _iso(created_at),
        "data": {
            "call_sid": call["call_sid"],
            "from": call.get("from_number", ""),
            "to": call.get("to_number", ""),
            "direction": call.get("direction", ""),
            "started_at": _iso(call.get("started_at")),
            "ended_at": _iso(call.get("ended_at")),
            "ended_by": call.get("ended_by"),
            "handed_over": bool(call.get("handed_over", False)),
            "transcript": [
                {name: value for name, value in utterance.items() if name not in ENTRY_LEAVES_OUT}
                for utterance in sorted(utterances, key=lambda u: (u["start"], u["track"]))
            ],
        },
    }


def call_not_streamed_event(call: Mapping[str, Any], created_at: datetime.datetime) -> dict[str, Any]:
    """`call.not_streamed`: /voice answered the call and no stream of it ever started: why, and what to check.

    Like `call.completed`, the call's last event: a call has one or the other, never both (`storage/writes.py`).
    """
    summary = call.get("summary") or {}
    return {
        "id": f"{EventType.CALL_NOT_STREAMED}:{call['call_sid']}",
        "type": EventType.CALL_NOT_STREAMED,
        "created_at": _iso(created_at),
        "data": {
            "call_sid": call["call_sid"],
            "from": call.get("from_number", ""),
            "to": call.get("to_number", ""),
            "direction": call.get("direction", ""),
            "answered_at": _iso(call.get("started_at")),
            "ended_at": _iso(call.get("ended_at")),
            "ended_by": call.get("ended_by"),
            "reason": str(summary.get("reason", "")),
            "fix": str(summary.get("fix", "")),
        },
    }
