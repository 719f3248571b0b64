"""Deepgram's protocol layer without a socket: the live options asked for and the pass-through query parameters."""

from __future__ import annotations

from typing import Any

import pytest

from service.deepgram.flux_protocol import flux_options
from service.deepgram.protocol import batch_options, ignored_options, live_options, pass_through_options
from service.settings import Settings
from service.stt.events import SttResult
from tests.helpers.service import make_settings


def settings(**values: Any) -> Settings:
    return make_settings(None, **values)


@pytest.mark.parametrize(
    ("values", "kwargs", "asked"),
    [
        ({"deepgram_vad_events": True}, {}, {"vad_events": True}),
        ({}, {"diarize": True}, {"diarize": True}),
        ({}, {"channels": 2}, {"channels": 2, "multichannel": True}),
        ({"deepgram_endpointing_ms": 500}, {}, {"endpointing": 500}),
        ({"deepgram_utterance_end_ms": 0}, {}, {"utterance_end_ms": None}),
        ({"deepgram_interim_results": False}, {}, {"interim_results": False, "utterance_end_ms": None}),
        ({"deepgram_punctuate": False}, {}, {"punctuate": False}),
        ({"deepgram_smart_format": False}, {}, {"smart_format": False}),
        ({"deepgram_keyterms": "Acme, Zed"}, {}, {"keyterm": ["Acme", "Zed"]}),
        ({"deepgram_options": "tag=a"}, {}, {"request_options": {"additional_query_parameters": {"tag": "a"}}}),
        ({"redact": "pci, SSN"}, {}, {"request_options": {"additional_query_parameters": {"redact": ["pci", "ssn"]}}}),
        (
            {"redact": "pci,ssn", "deepgram_options": "redact=pci&tag=a"},
            {},
            {"request_options": {"additional_query_parameters": {"redact": ["pci", "ssn"], "tag": "a"}}},
        ),
        ({"deepgram_model": "nova-2", "deepgram_language": "de"}, {}, {"model": "nova-2", "language": "de"}),
    ],
)
def test_each_setting_changes_only_its_own_option(
    values: dict[str, Any], kwargs: dict[str, Any], asked: dict[str, Any]
) -> None:
    """Against the defaults, a setting adds, changes or (None here) removes exactly the options it names."""
    default = live_options(settings())
    options = live_options(settings(**values), **kwargs)
    expected = {**default, **asked}
    assert options == {name: value for name, value in expected.items() if value is not None}


def test_the_defaults_ask_for_twilios_audio_as_it_is() -> None:
    """mu-law 8 kHz mono with nothing optional: no VAD events, no diarization, no keyterms, no extra query."""
    assert live_options(settings()) == {
        "model": "nova-3", "language": "en-US", "encoding": "mulaw", "sample_rate": 8000, "channels": 1,
        "interim_results": True, "punctuate": True, "smart_format": True, "endpointing": 300,
        "utterance_end_ms": 1000,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], {}),
        ([("tag", "a")], {"tag": "a"}),
        ([("tag", "a"), ("tag", "b")], {"tag": ["a", "b"]}),
        ([("tag", "a"), ("tag", "b"), ("tag", "c")], {"tag": ["a", "b", "c"]}),
        ([("tag", "a"), ("redact", "pci"), ("tag", "b")], {"tag": ["a", "b"], "redact": "pci"}),
        ([("tag", "")], {"tag": ""}),
        ([("model", "x"), ("encoding", "linear16"), ("sample_rate", "16000"), ("channels", "2")], {}),
        ([("multichannel", "true"), ("multichannel", "false")], {}),
    ],
)
def test_pass_through_options_repeat_names_and_never_override_ours(
    pairs: list[tuple[str, str]], expected: dict[str, Any]
) -> None:
    """A repeated name becomes a list in order; names we set (here model), or that describe the audio, are dropped."""
    assert pass_through_options(pairs, reserved={"model"}) == expected


@pytest.mark.parametrize("connections", ["per_track", "per_call"])
def test_channels_in_deepgram_options_never_override_deepgram_connections(connections: str) -> None:
    """`multichannel` and `channels` in DEEPGRAM_OPTIONS are dropped, live and batch, and the start-up warning
    says that DEEPGRAM_CONNECTIONS decides them; the other options still go."""
    configured = settings(
        deepgram_options="multichannel=false&channels=4&tag=a", deepgram_connections=connections,
        stream_track="both_tracks",
    )  # fmt: skip
    channels = 2 if connections == "per_call" else 1
    options = live_options(configured, channels=channels)
    assert options["channels"] == channels
    assert options.get("multichannel") is (True if channels == 2 else None)
    assert options["request_options"] == {"additional_query_parameters": {"tag": "a"}}
    assert batch_options(configured)["request_options"] == {"additional_query_parameters": {"tag": "a"}}
    assert [name for name, _ in ignored_options(configured)] == ["channels", "multichannel"]
    for _, why in ignored_options(configured):
        assert "DEEPGRAM_CONNECTIONS" in why
        assert "multichannel=true&channels=2" in why


def test_a_results_end_is_its_start_plus_its_duration() -> None:
    result = SttResult(
        is_final=True, speech_final=False, from_finalize=False, start=1.25, duration=0.5, text="hi",
        confidence=0.9, words=(), request_id=None,
    )  # fmt: skip
    assert result.end == 1.75


def test_redact_is_asked_of_batch_too() -> None:
    assert batch_options(settings(redact="pci,numbers"))["request_options"] == {
        "additional_query_parameters": {"redact": ["pci", "numbers"]}
    }


@pytest.mark.parametrize("value", ["pci;drop", "pci,1x", "p c i", "pci,redact=ssn"])
def test_a_redact_name_that_is_no_name_stops_start_up(value: str) -> None:
    with pytest.raises(ValueError, match="is not a redaction name"):
        settings(redact=value)


def test_deepgram_is_asked_not_to_keep_the_audio_by_default() -> None:
    """DEEPGRAM_MIP_OPT_OUT is on unless turned off: mip_opt_out=true live, on Flux and in batch, and DEEPGRAM_OPTIONS'
    own mip_opt_out wins."""
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert default.deepgram_mip_opt_out is True
    on = settings(deepgram_mip_opt_out=True)
    assert live_options(on)["request_options"] == {"additional_query_parameters": {"mip_opt_out": "true"}}
    assert batch_options(on)["request_options"] == {"additional_query_parameters": {"mip_opt_out": "true"}}
    flux = settings(deepgram_mip_opt_out=True, deepgram_model="flux-general-en")
    assert flux_options(flux)["request_options"] == {"additional_query_parameters": {"mip_opt_out": "true"}}
    theirs = settings(deepgram_mip_opt_out=True, deepgram_options="mip_opt_out=false")
    assert live_options(theirs)["request_options"] == {"additional_query_parameters": {"mip_opt_out": "false"}}
    assert "request_options" not in live_options(settings(deepgram_mip_opt_out=False))
