"""AlertWatch: each call's finals through its own matcher, every alert to every sink, a hand-over's end left to
the process that took the call, batch transcripts not matched, one sink's failure kept from the others."""

from __future__ import annotations

import dataclasses
import json

from structlog.testing import capture_logs

from service.alert_rules import parse_rules
from service.alerts.matching import Alert
from service.alerts.watch import AlertWatch
from service.calls.events import CallEnded, CallStarted
from tests.alerts.test_matching import NOW, final, words

RULES = parse_rules(json.dumps([
    {"name": "cancel", "phrases": ["cancel my account"], "speaker": "caller"},
    {"name": "disclosure", "phrases": ["this call is recorded"], "speaker": "agent", "absent_within_s": 30},
]))  # fmt: skip


class Sink:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)


class Broken:
    def alert(self, alert: Alert) -> None:
        raise RuntimeError("a bug in a sink")


def started(call_sid: str = "CA1") -> CallStarted:
    return CallStarted(
        call_sid=call_sid, stream_sid="MZ1", account_sid="AC1", from_number="+1", to_number="+2",
        direction="inbound", tracks=("inbound", "outbound"), custom_parameters={}, started_at=NOW,
    )  # fmt: skip


def ended(ended_by: str = "stop", call_sid: str = "CA1") -> CallEnded:
    return CallEnded(
        call_sid=call_sid, stream_sid="MZ1", ended_at=NOW, ended_by=ended_by, deepgram_request_ids=(),
        audio_s_by_track={},
    )  # fmt: skip


def watch(*sinks: object) -> AlertWatch:
    labels = {"inbound": "customer", "outbound": "rep"}
    return AlertWatch(RULES, sinks, speakers=labels.__getitem__, clock=lambda: NOW)  # type: ignore[arg-type]


def test_every_alert_reaches_every_sink_even_past_a_broken_one() -> None:
    """A sink that raises is logged; the sinks after it still get the alert, and a log line says it fired."""
    sink = Sink()
    alerts = watch(Broken(), sink)
    alerts.call_started(started())
    with capture_logs() as logs:
        alerts.transcript(final(words("please cancel my account", 0.0)))
    [alert] = sink.alerts
    assert (alert.rule, alert.speaker) == ("cancel", "caller")
    assert [line["event"] for line in logs] == ["alerts.sink_failed", "call.alert"]
    assert logs[1]["track"] == "inbound"


def test_a_missing_disclosure_at_the_end_is_labelled_as_the_settings_say() -> None:
    """At the call's end the open disclosure fires, with the outbound track's label from SPEAKER_OUTBOUND."""
    sink = Sink()
    alerts = watch(sink)
    alerts.call_started(started())
    alerts.call_ended(ended())
    assert [(alert.rule, alert.kind, alert.speaker) for alert in sink.alerts] == [("disclosure", "absent", "rep")]
    alerts.call_ended(ended())  # a second end (another stream of the call) raises nothing more
    assert len(sink.alerts) == 1


def test_a_stream_handed_over_ends_no_call_here() -> None:
    """A hand-over's end leaves the call to the process that took it: no absence alert here."""
    sink = Sink()
    alerts = watch(sink)
    alerts.call_started(started())
    alerts.call_ended(ended("handed_over"))
    assert sink.alerts == []


def test_batch_transcripts_and_unknown_calls_raise_nothing() -> None:
    """Audio transcribed later from the spool is not matched, nor a call this process never started."""
    sink = Sink()
    alerts = watch(sink)
    alerts.call_started(started())
    alerts.transcript(dataclasses.replace(final(words("cancel my account", 0.0)), batch=True))
    alerts.transcript(dataclasses.replace(final(words("cancel my account", 0.0)), call_sid="CA9"))
    assert sink.alerts == []


def test_without_rules_no_call_is_watched() -> None:
    """No ALERT_RULES: nothing is kept per call (the runtime leaves the watch out altogether)."""
    sink = Sink()
    alerts = AlertWatch((), [sink], speakers=str)
    alerts.call_started(started())
    alerts.transcript(final(words("cancel my account", 0.0)))
    alerts.call_ended(ended())
    alerts.call_state(None)  # type: ignore[arg-type]
    alerts.turn(None)  # type: ignore[arg-type]
    assert sink.alerts == []
