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


def _who(call: Mapping[str, Any]) -> dict[str, Any]:
    """A call's terminal event's first fields: the call, who called whom, and which way ("" when Twilio did not say)."""
    return {
        "call_sid": call["call_sid"],
        "from": call.get("from_number", ""),
        "to": call.get("to_number", ""),
        "direction": call.get("direction", ""),
    }


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
    call: Mapping[str, Any],
    utterances: Sequence[Mapping[str, Any]],
    created_at: datetime.datetime,
    coverage: Mapping[str, Any] | None = None,
    *,
    alerts: Sequence[Mapping[str, Any]] = (),
    analysis: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`call.completed`, the call's one report: the call and its whole transcript as stored when the stream ended,
    with its coverage then (`calls/coverage.py`'s `summarize`, per track; what is waiting for batch then is said
    there), the live alerts it raised (in the order of its timeline) and its analysis if one is stored by then
    (a call's analysis runs after its end: it usually follows as `call.analyzed`)."""
    return {
        "id": f"{EventType.CALL_COMPLETED}:{call['call_sid']}",
        "type": EventType.CALL_COMPLETED,
        "created_at": _iso(created_at),
        "data": {
            **_who(call),
            "started_at": _iso(call.get("started_at")),
            "ended_at": _iso(call.get("ended_at")),
            "ended_by": call.get("ended_by"),
            "handed_over": bool(call.get("handed_over", False)),
            # REDACT: what was redacted, by kind and count (never a value); {} when nothing was, or REDACT is off
            "redacted": dict((call.get("summary") or {}).get("redacted") or {}),
            "coverage": dict(coverage) if coverage is not None else None,
            "alerts": [
                {name: value for name, value in alert_data(alert).items() if name != "call_sid"}
                for alert in sorted(alerts, key=lambda a: (a["start"], a["alert_id"]))
            ],
            "analysis": analysis_data(analysis) if analysis is not None else None,
            "transcript": [
                {name: value for name, value in utterance.items() if name not in ENTRY_LEAVES_OUT}
                for utterance in sorted(utterances, key=lambda u: (u["start"], u["track"]))
            ],
        },
    }


def alert_data(alert: Mapping[str, Any]) -> dict[str, Any]:
    """A stored alert as data: `call.alert`'s `data`, and (without its `call_sid`) an entry of `call.completed`'s
    `alerts`."""
    data = dict(alert)
    data["raised_at"] = _iso(alert.get("raised_at"))
    return data


def alert_event(alert: Mapping[str, Any], created_at: datetime.datetime) -> dict[str, Any]:
    """`call.alert`: an ALERT_RULES rule fired on a call, with the words that fired it and their time in the call
    (or, for a phrase that was missing, the window it was missing from). Its id is the alert's own."""
    data = alert_data(alert)
    return {
        "id": f"{EventType.CALL_ALERT}:{alert['alert_id']}",
        "type": EventType.CALL_ALERT,
        "created_at": _iso(created_at),
        "data": data,
    }


# The `analyses` row's fields that `analysis_data` gives, in order: the API's `analysis` object and the
# `call.analyzed` event's data are both this.
ANALYSIS_FIELDS = ("status", "reason", "version", "features", "words", "summary", "topics", "intents", "sentiment",
                   "request_id", "analyzed_at")  # fmt: skip


def analysis_data(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """A call's stored analysis as data: the API's `analysis` object."""
    data = {name: analysis.get(name) for name in ANALYSIS_FIELDS}
    data["analyzed_at"] = _iso(analysis.get("analyzed_at"))
    return data


def call_analyzed_event(analysis: Mapping[str, Any], created_at: datetime.datetime) -> dict[str, Any]:
    """`call.analyzed`: a call's post-call analysis, once per version of its transcript (done, skipped or failed)."""
    return {
        "id": f"{EventType.CALL_ANALYZED}:{analysis['call_sid']}:{analysis['version']}",
        "type": EventType.CALL_ANALYZED,
        "created_at": _iso(created_at),
        "data": {"call_sid": analysis["call_sid"], **analysis_data(analysis)},
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
            **_who(call),
            "answered_at": _iso(call.get("started_at")),
            "ended_at": _iso(call.get("ended_at")),
            "ended_by": call.get("ended_by"),
            "reason": str(summary.get("reason", "")),
            "fix": str(summary.get("fix", "")),
        },
    }
