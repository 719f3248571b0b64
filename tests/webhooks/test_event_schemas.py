"""The webhook events' schemas in openapi.json: every event the builders make matches its type's schema, a field
added without its schema (or of the wrong type) is refused, every event type has a schema, and the tables of
docs/storage-and-api.md list the same fields."""

from __future__ import annotations

import copy
import datetime
import json
import re
from typing import Any

import pytest

from service.alerts.matching import Alert
from service.calls.transcript import Transcript
from service.storage.statuses import EventType, NotStreamed
from service.storage.webhook_events import (
    alert_event,
    call_analyzed_event,
    call_completed_event,
    call_not_streamed_event,
    utterance_event,
)
from service.storage.writes import alert_write, call_not_streamed_write, utterance_write
from service.stt.events import Word
from tests.helpers.paths import ROOT
from tests.helpers.webhooks import OPENAPI, event_problem

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
DOCS = ROOT / "docs" / "storage-and-api.md"


def stored(moment: datetime.datetime) -> datetime.datetime:
    """A time as SQLite hands it back: naive (every stored time is UTC)."""
    return moment.replace(tzinfo=None)


def utterance_row() -> dict[str, Any]:
    words = (Word(word="hello", start=0.5, end=0.8, confidence=0.9, punctuated_word="Hello."),)
    transcript = Transcript(
        call_sid="CA1", stream_sid="MZ1", track="inbound", is_final=True, speech_final=True, from_finalize=False,
        text="Hello.", start=0.5, end=0.8, confidence=0.9, words=words, request_id="req-1", speaker="caller",
    )  # fmt: skip
    return utterance_write(transcript, speaker="caller", created_at=T0).row


def call_row(**changes: Any) -> dict[str, Any]:
    row = {
        "call_sid": "CA1", "stream_sid": "MZ1", "account_sid": "AC1", "from_number": "+14155550100",
        "to_number": "+14155550199", "direction": "inbound", "custom_parameters": {}, "tracks": ["inbound"],
        "started_at": stored(T0), "ended_at": stored(T0 + datetime.timedelta(seconds=30)), "status": "completed",
        "ended_by": "stop", "deepgram_request_ids": ["req-1"], "audio_s_inbound": 30.0, "audio_s_outbound": 0.0,
        "summary": {"finals": 1}, "handed_over": False,
    }  # fmt: skip
    return row | changes


def not_streamed_row(how: NotStreamed) -> dict[str, Any]:
    write = call_not_streamed_write(
        "CA1", how=how, reason="no stream of it started", fix="check the URL", answered_at=T0,
        at=T0 + datetime.timedelta(seconds=10),
    )  # fmt: skip
    return call_row(stream_sid="", **{name: value for name, value in write.row.items() if name != "stream_sid"})


COVERAGE = {
    "audio_s": 30.0, "live_s": 29.0, "replayed_s": 0.0, "batch_s": 0.0, "waiting_s": 1.0, "lost_s": 0.0,
    "paused_s": 0.0, "waiting": [{"reason": "DEEPGRAM_API_KEY is not set", "seconds": 1.0}], "lost": [],
    "complete": False,
    "missing": "1 s waiting for batch: DEEPGRAM_API_KEY is not set",
    "tracks": {"inbound": {
        "audio_s": 30.0, "live_s": 29.0, "replayed_s": 0.0, "batch_s": 0.0, "waiting_s": 1.0, "lost_s": 0.0,
        "paused_s": 0.0, "waiting": [{"reason": "DEEPGRAM_API_KEY is not set", "seconds": 1.0}], "lost": [],
    }},
}  # fmt: skip
ALERTS = [
    Alert(alert_id="a1", call_sid="CA1", rule="cancel", kind="said", speaker="caller", track="inbound",
          phrase="cancel my account", text="Cancel my account.", start=1.5, end=2.5, raised_at=T0),
    Alert(alert_id="a2", call_sid="CA1", rule="disclosure", kind="absent", speaker="agent", track="outbound",
          phrase="", text="", start=0.0, end=30.0, raised_at=T0),
]  # fmt: skip
ANALYSES = [
    {"call_sid": "CA1", "version": "4f13a17b6abe5abe09fb0de75899d264", "status": "done", "reason": None,
     "features": ["summary", "topics", "intents", "sentiment"], "words": 54, "summary": "A refund.",
     "topics": [{"topic": "Refunds", "confidence": 0.9}], "intents": [{"intent": "Get a refund", "confidence": 0.8}],
     "sentiment": {"overall": {"sentiment": "neutral", "score": 0.1}, "speakers": {}, "utterances": []},
     "request_id": "req-2", "analyzed_at": stored(T0)},
    {"call_sid": "CA1", "version": "00", "status": "skipped", "reason": "fewer than 50 words", "features": ["summary"],
     "words": 3, "summary": None, "topics": [], "intents": [], "sentiment": {}, "request_id": None,
     "analyzed_at": stored(T0)},
]  # fmt: skip


def every_event() -> list[dict[str, Any]]:
    return [
        utterance_event(utterance_row(), T0),
        call_completed_event(call_row(), [utterance_row()], T0, COVERAGE),
        call_completed_event(call_row(from_number="", direction="", summary={"redacted": {"card": 2}}), [], T0),
        *(call_not_streamed_event(not_streamed_row(how), T0) for how in NotStreamed),
        *(alert_event(alert_write(alert).row, T0) for alert in ALERTS),
        *(call_analyzed_event(analysis, T0) for analysis in ANALYSES),
    ]


@pytest.mark.parametrize("event", every_event(), ids=lambda event: event["type"])
def test_every_event_the_builders_make_matches_its_schema(event: dict[str, Any]) -> None:
    """Each builder's event, from rows as the database hands them back (naive times included), is valid."""
    assert event_problem(json.loads(json.dumps(event))) is None


def changed(event: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(event)
    target: Any = event
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return event


@pytest.mark.parametrize(
    ("index", "path", "value", "said"),
    [
        (0, ("data", "words"), [], "Additional properties are not allowed ('words' was unexpected)"),
        (1, ("data", "summary"), {}, "Additional properties are not allowed ('summary' was unexpected)"),
        (1, ("data", "coverage"), {}, "is not valid under any of the given schemas"),
        (1, ("data", "redacted"), {"card": "1"}, "'1' is not of type 'integer'"),
        (5, ("data", "kind"), "heard", "'heard' is not one of"),
        (7, ("data", "status"), "maybe", "'maybe' is not one of"),
        (1, ("data", "transcript", 0, "confidence"), 0.9, "'confidence' was unexpected"),
        (3, ("data", "extra"), 1, "'extra' was unexpected"),
        (0, ("extra",), 1, "'extra' was unexpected"),
        (0, ("data", "start"), "0.5", "'0.5' is not of type 'number'"),
        (1, ("data", "handed_over"), "no", "'no' is not of type 'boolean'"),
        (3, ("data", "ended_by"), "stop", "'stop' is not one of ['no_stream', 'busy']"),
        (3, ("created_at",), "2026-11-24T12:00:00", "is not a 'date-time'"),
        (1, ("type",), "call.not_streamed", "data"),  # a call.completed's data is not a call.not_streamed's
        (2, ("type",), "call.ended", "none of openapi.json's webhook events"),
    ],
)
def test_a_field_without_its_schema_or_of_the_wrong_type_is_refused(
    index: int, path: tuple[str | int, ...], value: Any, said: str
) -> None:
    """An unknown field (in the envelope, the data or a transcript entry), a wrong type, a value outside its set,
    a time without its offset or an unknown event type: each is refused, saying where and what."""
    problem = event_problem(changed(every_event()[index], path, value))
    assert problem is not None
    assert said in problem


def test_a_missing_field_is_refused() -> None:
    """Every field the builders write is required: a receiver may count on it."""
    event = every_event()[3]
    del event["data"]["fix"]
    assert "'fix' is a required property" in (event_problem(event) or "")


def test_every_event_type_has_its_schema_and_the_webhooks_section_names_them() -> None:
    """Each EventType is in WebhookEvent's oneOf and discriminator, and `webhooks` posts a WebhookEvent."""
    document = json.loads(OPENAPI.read_text())
    schemas = document["components"]["schemas"]
    mapping = schemas["WebhookEvent"]["discriminator"]["mapping"]
    assert set(mapping) == set(EventType)
    assert sorted(mapping.values()) == sorted(one["$ref"] for one in schemas["WebhookEvent"]["oneOf"])
    for event_type, pointer in mapping.items():
        event_schema = schemas[pointer.rsplit("/", 1)[1]]
        assert event_schema["properties"]["type"] == {"const": event_type}
        assert event_schema["additionalProperties"] is False
    [post] = [hook["post"] for hook in document["webhooks"].values()]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/WebhookEvent"}


def doc_fields(heading: str) -> list[str]:
    """The first column of the table under `heading` in docs/storage-and-api.md."""
    text = DOCS.read_text()
    start = text.index(heading + "\n")
    table = re.search(r"\n(\|.*\|\n)+", text[start:])
    assert table is not None, f"no table under {heading}"
    rows = table.group(0).strip().splitlines()[2:]  # after the header and its rule
    return [re.sub(r"`([^`]*)`.*", r"\1", row.split("|")[1].strip()) for row in rows]


def test_the_docs_tables_list_each_events_fields() -> None:
    """docs/storage-and-api.md has a table per event whose fields are its schema's, in the schema's order."""
    schemas = json.loads(OPENAPI.read_text())["components"]["schemas"]
    envelope = list(schemas["UtteranceFinalEvent"]["properties"])
    assert doc_fields("#### Every event") == envelope
    for name, heading in [
        ("UtteranceFinalData", "#### `utterance.final`"),
        ("CallCompletedData", "#### `call.completed`"),
        ("CallCompletedUtterance", "#### `call.completed` transcript entries"),
        ("CallNotStreamedData", "#### `call.not_streamed`"),
        ("CallAlertData", "### `call.alert`"),
    ]:
        assert doc_fields(heading) == list(schemas[name]["properties"]), heading
    analysis = (
        "The `analysis` object (`GET /api/calls/{call_sid}`, and the `data` of `call.analyzed` with its `call_sid`):"
    )
    assert ["call_sid", *doc_fields(analysis)] == list(schemas["CallAnalyzedData"]["properties"])
