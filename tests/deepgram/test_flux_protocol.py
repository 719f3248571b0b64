"""Flux's protocol without a socket: the options asked for, the settings refused at start-up, turns as the seam's
events, and the keep-alive silence taken back out of Flux's times."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.deepgram.flux_protocol import (
    KEEPALIVE_SILENCE,
    REACH_BACK_S,
    FluxTurns,
    FluxWord,
    SilenceClock,
    TurnInfo,
    fatal_error_is_final,
    flux_options,
    flux_refusals,
    ignored_flux_options,
    spread_times,
)
from service.deepgram.protocol import batch_model, batch_options
from service.settings import Settings
from service.stt.events import SttMetadata, SttResult, SttSettled, SttTurn, TurnMoment
from tests.helpers.service import make_settings

FLUX = "flux-general-en"
MULTI = "flux-general-multi"


def settings(model: str = FLUX, **values: Any) -> Settings:
    return make_settings(None, deepgram_model=model, **values)


# --- Options ----------------------------------------------------------------------------------------------


def test_the_defaults_ask_for_twilios_audio_and_leave_turn_detection_to_flux() -> None:
    """mu-law 8 kHz, and no eot_* option: Flux's own defaults apply until a setting says otherwise."""
    assert flux_options(settings()) == {"model": FLUX, "encoding": "mulaw", "sample_rate": 8000}


def test_each_flux_setting_is_sent_as_its_option() -> None:
    """Thresholds, timeout, keyterms and (multi only) language hints, each under Flux's own name."""
    options = flux_options(
        settings(
            MULTI, deepgram_eot_threshold=0.8, deepgram_eager_eot_threshold=0.4, deepgram_eot_timeout_ms=3000,
            deepgram_keyterms="Acme, Zed", deepgram_language_hint="en,es",
        )
    )  # fmt: skip
    assert options == {
        "model": MULTI, "encoding": "mulaw", "sample_rate": 8000, "eot_threshold": 0.8, "eager_eot_threshold": 0.4,
        "eot_timeout_ms": 3000, "keyterm": ["Acme", "Zed"], "language_hint": ["en", "es"],
    }  # fmt: skip


def test_deepgram_options_pass_through_only_what_flux_takes() -> None:
    """Flux's options travel as query parameters; the audio's layout, refused names and other redaction do not."""
    options = flux_options(
        settings(
            MULTI,
            deepgram_options="tag=a&tag=b&numerals=true&redact=numbers&redact=pci&smart_format=true&channels=2"
            "&encoding=linear16&language_hint=fr&mystery=1",
        )
    )
    assert options["encoding"] == "mulaw"
    assert options["request_options"] == {
        "additional_query_parameters": {
            "tag": ["a", "b"],
            "numerals": "true",
            "redact": "numbers",
            "language_hint": "fr",
        }
    }


def test_redact_sends_flux_what_it_takes_and_refuses_nothing() -> None:
    """REDACT=pci,numbers on Flux: `numbers` is sent, `pci` left out (callscribe's redactor covers cards), and
    start-up does not refuse it as it refuses DEEPGRAM_OPTIONS=redact=pci."""
    configured = settings(MULTI, redact="pci,numbers")
    assert flux_options(configured)["request_options"] == {"additional_query_parameters": {"redact": "numbers"}}
    assert flux_refusals(configured) == []


def test_a_language_hint_is_not_sent_to_an_english_only_model() -> None:
    """language_hint is flux-general-multi's (start-up refuses it on flux-general-en; here it is simply left out)."""
    options = flux_options(settings(deepgram_options="language_hint=fr&tag=a"))
    assert options["request_options"] == {"additional_query_parameters": {"tag": "a"}}


def test_names_callscribe_sets_itself_are_ignored_with_a_reason() -> None:
    """DEEPGRAM_OPTIONS cannot change the audio's layout or a setting's option: each such name is said once."""
    ignored = ignored_flux_options(settings(deepgram_options="encoding=linear16&channels=2&model=x&tag=a&tag=b"))
    assert [name for name, _ in ignored] == ["channels", "encoding", "model"]
    assert all("sets it itself" in why for _, why in ignored)


# --- Start-up refusals ----------------------------------------------------------------------------------------


def test_v1_defaults_are_not_refused_on_flux() -> None:
    """punctuate, smart_format, endpointing and utterance_end_ms default on for v1: on Flux they are not asked."""
    assert flux_refusals(settings()) == []


@pytest.mark.parametrize(
    ("values", "variable", "option"),
    [
        ({"deepgram_smart_format": True}, "DEEPGRAM_SMART_FORMAT", "smart_format"),
        ({"deepgram_punctuate": True}, "DEEPGRAM_PUNCTUATE", "punctuate"),
        ({"deepgram_diarize": True}, "DEEPGRAM_DIARIZE", "diarize"),
        ({"deepgram_vad_events": True}, "DEEPGRAM_VAD_EVENTS", "vad_events"),
        ({"deepgram_endpointing_ms": 300}, "DEEPGRAM_ENDPOINTING_MS", "endpointing"),
        ({"deepgram_utterance_end_ms": 1000}, "DEEPGRAM_UTTERANCE_END_MS", "utterance_end_ms"),
        ({"deepgram_language": "de"}, "DEEPGRAM_LANGUAGE", "language"),
        ({"deepgram_language_hint": "en"}, "DEEPGRAM_LANGUAGE_HINT", "language_hint"),
        ({"deepgram_options": "diarize=true"}, "DEEPGRAM_OPTIONS", "diarize"),
        ({"deepgram_options": "smart_format=false"}, "DEEPGRAM_OPTIONS", "smart_format"),
        ({"deepgram_options": "mystery=1"}, "DEEPGRAM_OPTIONS", "mystery"),
        ({"deepgram_options": "language_hint=en"}, "DEEPGRAM_OPTIONS", "language_hint"),
        ({"deepgram_options": "redact=pci"}, "DEEPGRAM_OPTIONS", "redact=pci"),
    ],
)
def test_each_option_flux_refuses_is_named(values: dict[str, Any], variable: str, option: str) -> None:
    """A setting asking for what Flux refuses stops start-up, naming the variable, the option and why."""
    [refusal] = flux_refusals(settings(**values))
    assert (refusal.variable, refusal.option) == (variable, option)
    assert refusal.message.startswith(f"{option}: Flux ({FLUX}) does not take it: ")


def test_v1_settings_set_off_are_not_refused() -> None:
    """DEEPGRAM_SMART_FORMAT=false (or endpointing 0) asks for nothing Flux refuses."""
    values = {"deepgram_smart_format": False, "deepgram_endpointing_ms": 0, "deepgram_language": "en-GB"}
    assert flux_refusals(settings(**values)) == []


def test_the_multilingual_model_takes_hints_and_any_language() -> None:
    """flux-general-multi detects the language: DEEPGRAM_LANGUAGE is not sent, hints are."""
    values = {"deepgram_language": "de", "deepgram_language_hint": "de", "deepgram_options": "language_hint=fr"}
    assert flux_refusals(settings(MULTI, **values)) == []


def test_the_audio_layout_in_deepgram_options_is_ignored_not_refused() -> None:
    """channels/encoding are callscribe's to set (a start-up warning says so), and a repeated name is named once."""
    refusals = flux_refusals(settings(deepgram_options="channels=2&encoding=x&keywords=a&keywords=b&redact=numbers"))
    assert [refusal.option for refusal in refusals] == ["keywords"]


def test_flux_settings_on_a_v1_model_are_refused() -> None:
    """v1 would ignore eot_* and hints silently: start-up says they belong to Flux."""
    refusals = flux_refusals(
        settings("nova-3", deepgram_eot_threshold=0.7, deepgram_eot_timeout_ms=900, deepgram_language_hint="en")
    )
    assert [refusal.variable for refusal in refusals] == [
        "DEEPGRAM_EOT_THRESHOLD", "DEEPGRAM_EOT_TIMEOUT_MS", "DEEPGRAM_LANGUAGE_HINT",
    ]  # fmt: skip
    assert refusals[0].message == "eot_threshold: only Flux models take it, not nova-3"
    assert flux_refusals(settings("nova-3")) == []


def test_an_eager_end_above_the_end_is_a_bad_setting() -> None:
    """The eager end of a turn must come no later than its end (0.7, Flux's default, when unset)."""
    with pytest.raises(ValidationError, match="must not be above DEEPGRAM_EOT_THRESHOLD"):
        settings(deepgram_eager_eot_threshold=0.8)
    with pytest.raises(ValidationError, match=r"\(0\.85\) must not be above DEEPGRAM_EOT_THRESHOLD \(0\.8\)"):
        settings(deepgram_eager_eot_threshold=0.85, deepgram_eot_threshold=0.8)
    assert settings(deepgram_eager_eot_threshold=0.8, deepgram_eot_threshold=0.9).deepgram_eager_eot_threshold == 0.8


def test_spooled_audio_of_a_flux_setup_goes_to_a_prerecorded_model() -> None:
    """Flux is live only: batch uses Nova-3 (or DEEPGRAM_BATCH_MODEL), and `multi` on the multilingual model."""
    assert batch_model(settings()) == "nova-3"
    assert batch_model(settings("nova-2")) == "nova-2"
    assert batch_model(settings(deepgram_batch_model="nova-3-medical")) == "nova-3-medical"
    assert batch_options(settings(MULTI))["language"] == "multi"
    en = batch_options(settings(deepgram_options="eot_threshold=0.8&tag=a"))
    assert (en["model"], en["language"]) == ("nova-3", "en-US")
    assert en["request_options"] == {"additional_query_parameters": {"tag": "a"}}


@pytest.mark.parametrize(
    ("code", "final"),
    [("UNPARSABLE_CLIENT_MESSAGE", True), ("INVALID_QUERY", True), ("INTERNAL_SERVER_ERROR", False), ("X", False)],
)
def test_flux_errors_that_retrying_cannot_fix(code: str, final: bool) -> None:
    """A code naming a fault of the request is final; Flux's own failures, and unknown codes, may pass."""
    assert fatal_error_is_final(code) is final


# --- Inserted silence -------------------------------------------------------------------------------------------


def test_times_after_inserted_silence_come_back_to_the_pipelines_audio() -> None:
    """Silence the adapter sent is taken out of Flux's times; a time inside it is where it began."""
    clock = SilenceClock()
    clock.audio(8000)  # 0-1 s of audio
    clock.silence(800)  # 1-1.1 s on Flux's timeline: silence
    clock.silence(800)  # back to back: one stretch, 1-1.2 s
    clock.audio(8000)  # 1.2-2.2 s: the pipeline's 1-2 s
    clock.silence(len(KEEPALIVE_SILENCE))  # 2.2-2.3 s
    clock.audio(4000)  # 2.3-2.8 s: the pipeline's 2-2.5 s
    assert clock.audio_s == 2.5
    assert [clock.to_audio(t) for t in (0.0, 0.5, 1.0, 1.1, 1.2, 1.7, 2.2, 2.25, 2.3, 2.8)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 2.0, 2.0, 2.5]
    )


def test_without_inserted_silence_times_are_unchanged() -> None:
    """Silence inserted later does not move what came before it."""
    clock = SilenceClock()
    assert clock.to_audio(3.25) == 3.25
    clock.audio(800)
    clock.silence(800)
    assert clock.to_audio(0.05) == 0.05


# --- Turns ------------------------------------------------------------------------------------------------------


def turn(event: str, start: float, end: float, *words: str, index: int = 0, **fields: Any) -> TurnInfo:
    flux_words = tuple(
        FluxWord(word=w, confidence=0.9, start=start + i * 0.5, end=start + (i + 1) * 0.5) for i, w in enumerate(words)
    )
    return TurnInfo(
        event=event, turn_index=index, start=start, end=end, transcript=" ".join(words), words=flux_words, **fields
    )


def test_a_turn_is_interims_then_one_final_and_settles_at_its_start_until_it_ends() -> None:
    """StartOfTurn, Update, EndOfTurn: a turn boundary, an interim, a final; settled at the turn's start meanwhile,
    at its end once it has ended, and REACH_BACK_S behind what Flux heard while no turn is open."""
    turns = FluxTurns(SilenceClock())
    turns.request_id = "req"
    assert turns.on_turn(turn("Update", 0.0, 1.25)) == (SttSettled(until_s=1.25 - REACH_BACK_S),)
    started, settled = turns.on_turn(turn("StartOfTurn", 1.0, 1.5, "hi", index=0))
    assert started == SttTurn(moment=TurnMoment.STARTED, turn_index=0, text="hi", start=1.0, end=1.5)
    assert settled == SttSettled(until_s=1.0)
    interim, settled = turns.on_turn(turn("Update", 1.0, 2.0, "hi", "there"))
    assert isinstance(interim, SttResult)
    assert (interim.is_final, interim.text, interim.start, interim.end) == (False, "hi there", 1.0, 2.0)
    assert settled == SttSettled(until_s=1.0)
    final, settled = turns.on_turn(turn("EndOfTurn", 1.0, 2.5, "hi", "there", languages=("en",), request_id="r2"))
    assert isinstance(final, SttResult)
    assert (final.is_final, final.speech_final, final.turn_index, final.languages) == (True, True, 0, ("en",))
    assert (final.request_id, final.confidence, final.from_finalize) == ("r2", pytest.approx(0.9), False)
    assert [(w.word, w.start, w.end) for w in final.words] == [("hi", 1.0, 1.5), ("there", 1.5, 2.0)]
    assert settled == SttSettled(until_s=2.5)
    assert turns.on_turn(turn("Update", 2.5, 3.0, index=1)) == (SttSettled(until_s=2.5),)  # not before the turn
    assert turns.on_turn(turn("Update", 3.0, 4.0, index=1)) == (SttSettled(until_s=4.0 - REACH_BACK_S),)


def test_a_turn_that_reaches_back_before_the_last_window_is_still_unsettled() -> None:
    """Flux opens a turn where the speech began, which may be before the end of the window it reported last:
    that audio was held back (REACH_BACK_S), so a replay after a failure would still carry it."""
    turns = FluxTurns(SilenceClock())
    (settled,) = turns.on_turn(turn("Update", 0.0, 3.0))
    assert settled.until_s == 3.0 - REACH_BACK_S
    _, settled = turns.on_turn(turn("StartOfTurn", 2.5, 3.25, "so"))
    assert settled.until_s == 2.5  # the turn's start, which nothing settled earlier had passed


def test_eager_end_and_resumption_are_turn_events() -> None:
    """EagerEndOfTurn and TurnResumed are SttTurn moments; the turn stays open (settled at its start) through them."""
    turns = FluxTurns(SilenceClock())
    turns.on_turn(turn("StartOfTurn", 0.5, 1.0, "a"))
    eager, settled = turns.on_turn(turn("EagerEndOfTurn", 0.5, 1.5, "a"))
    assert isinstance(eager, SttTurn)
    assert (eager.moment, eager.text, settled.until_s) == (TurnMoment.EAGER_END, "a", 0.5)
    resumed, settled = turns.on_turn(turn("TurnResumed", 0.5, 2.0, "a", "b"))
    assert isinstance(resumed, SttTurn)
    assert (resumed.moment, resumed.text, settled.until_s) == (TurnMoment.RESUMED, "a b", 0.5)


def test_an_update_with_words_opens_a_turn_whose_start_was_missed() -> None:
    """Words with no StartOfTurn before them still hold back what is settled to their turn's start."""
    turns = FluxTurns(SilenceClock())
    interim, settled = turns.on_turn(turn("Update", 2.0, 2.5, "late"))
    assert isinstance(interim, SttResult)
    assert settled == SttSettled(until_s=2.0)


def test_interims_are_not_reported_when_interim_results_is_off() -> None:
    """DEEPGRAM_INTERIM_RESULTS=false: Updates only settle; the final still comes."""
    turns = FluxTurns(SilenceClock(), interim_results=False)
    assert turns.on_turn(turn("Update", 0.0, 0.5, "a")) == (SttSettled(until_s=0.0),)
    final, _ = turns.on_turn(turn("EndOfTurn", 0.0, 1.0, "a"))
    assert isinstance(final, SttResult)
    assert final.is_final


def test_an_event_this_release_does_not_know_only_settles() -> None:
    """Flux's events are an open set: an unknown one changes nothing but how far Flux has heard."""
    turns = FluxTurns(SilenceClock())
    assert turns.on_turn(turn("SomethingNew", 0.0, 1.75)) == (SttSettled(until_s=1.75 - REACH_BACK_S),)


def test_an_empty_end_of_turn_is_a_final_with_no_words() -> None:
    """An EndOfTurn Flux sends with nothing said is still the turn's final (the pipeline shows no empty text)."""
    turns = FluxTurns(SilenceClock())
    final, settled = turns.on_turn(turn("EndOfTurn", 0.0, 1.0))
    assert isinstance(final, SttResult)
    assert (final.text, final.words, final.confidence, settled.until_s) == ("", (), 0.0, 1.0)


def test_times_are_reported_on_the_pipelines_audio_when_silence_was_inserted() -> None:
    """Results, words, turn moments and settled points all leave the keep-alive silence out."""
    clock = SilenceClock()
    clock.audio(8000)
    clock.silence(8000)  # Flux heard 1-2 s of silence the pipeline never sent
    clock.audio(8000)
    turns = FluxTurns(clock)
    started, settled = turns.on_turn(turn("StartOfTurn", 2.0, 2.5, "a"))
    assert isinstance(started, SttTurn)
    assert (started.start, started.end, settled.until_s) == (1.0, 1.5, 1.0)
    final, settled = turns.on_turn(turn("EndOfTurn", 2.0, 3.0, "a"))
    assert isinstance(final, SttResult)
    assert (final.start, final.end, final.words[0].start, final.words[0].end) == (1.0, 2.0, 1.0, 1.5)
    assert settled.until_s == 2.0


def test_a_normal_close_settles_all_audio_sent_and_says_the_request() -> None:
    """After CloseStream every turn has ended: all the pipeline's audio is settled, with Metadata's facts."""
    clock = SilenceClock()
    clock.audio(12_000)
    clock.silence(800)
    turns = FluxTurns(clock)
    assert turns.closed() == (SttMetadata(request_id="", duration=1.5), SttSettled(until_s=1.5))
    turns.request_id = "req"
    assert turns.closed()[0] == SttMetadata(request_id="req", duration=1.5)


def test_an_update_that_says_nothing_new_is_no_interim() -> None:
    """Flux sends an Update every 0.25 s: one with the turn's transcript unchanged only settles."""
    turns = FluxTurns(SilenceClock())
    turns.on_turn(turn("StartOfTurn", 0.0, 0.5, "a"))
    assert turns.on_turn(turn("Update", 0.0, 0.75, "a")) == (SttSettled(until_s=0.0),)
    interim, _ = turns.on_turn(turn("Update", 0.0, 1.0, "a", "b"))
    assert isinstance(interim, SttResult)
    assert turns.on_turn(turn("Update", 0.0, 1.25, "a", "b")) == (SttSettled(until_s=0.0),)
    turns.on_turn(turn("EndOfTurn", 0.0, 1.5, "a", "b"))
    interim, _ = turns.on_turn(turn("Update", 2.0, 2.5, "a", "b", index=1))  # the next turn, the same words
    assert isinstance(interim, SttResult)


def test_a_close_with_a_turn_still_open_leaves_that_turn_unsettled() -> None:
    """Flux closing normally before a turn's EndOfTurn: only the audio before the turn is settled, so the
    pipeline replays the turn instead of losing it."""
    clock = SilenceClock()
    clock.audio(16_000)
    turns = FluxTurns(clock)
    turns.on_turn(turn("StartOfTurn", 1.5, 2.0, "a"))
    assert turns.closed() == (SttMetadata(request_id="", duration=2.0), SttSettled(until_s=1.5))


def test_languages_go_to_the_result_and_to_each_word_that_has_one() -> None:
    """flux-general-multi's languages, most words first, on the result; a word's own language on the word."""
    words = (FluxWord("hola", 0.9, 0.0, 0.5, language="es"), FluxWord("hi", 0.8, 0.5, 1.0))
    info = TurnInfo("EndOfTurn", 3, 0.0, 1.0, "hola hi", words, languages=("es", "en"))
    final, _ = FluxTurns(SilenceClock()).on_turn(info)
    assert isinstance(final, SttResult)
    assert final.languages == ("es", "en")
    assert [w.language for w in final.words] == ["es", None]
    assert final.turn_index == 3


def test_untimed_words_share_the_window_in_order() -> None:
    """Words without times get equal slices of the turn's window; a word with its times keeps them; a word with
    one time takes the other from its slice."""
    words = (
        FluxWord("a", 0.9),
        FluxWord("b", 0.9, start=1.6, end=1.9),
        FluxWord("c", 0.9, start=2.4),
        FluxWord("d", 0.9, end=3.0),
    )
    info = TurnInfo("EndOfTurn", 0, 1.0, 3.0, "a b c d", words)
    assert [t for pair in spread_times(info) for t in pair] == pytest.approx([1.0, 1.5, 1.6, 1.9, 2.4, 2.5, 2.5, 3.0])
    assert spread_times(TurnInfo("Update", 0, 1.0, 3.0, "")) == []
    late = TurnInfo("Update", 0, 1.0, 1.0, "x", (FluxWord("x", 0.9, start=1.0),))
    assert spread_times(late) == [(1.0, 1.0)]  # a zero-length window: no time before the word's start
