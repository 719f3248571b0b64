"""Which live engine DEEPGRAM_MODEL picks, and what start-up is told about it."""

from __future__ import annotations

from service.deepgram.engines import ignored_options, live_engine, setting_problems
from service.deepgram.environment import fallback_address
from service.deepgram.flux import DeepgramFlux
from service.deepgram.live import DeepgramLive
from tests.helpers.service import make_settings


def test_a_flux_model_picks_flux_and_any_other_deepgrams_v1_api() -> None:
    """flux-* streams to Flux (one channel a connection); nova-3 and the rest to v1 (multichannel)."""
    for model in ("flux-general-en", "flux-general-multi"):
        settings = make_settings(None, deepgram_model=model, deepgram_fallback_url="https://eu.example.com")
        engine = live_engine(settings, fallback_address(settings))
        assert isinstance(engine, DeepgramFlux)
        assert (engine.name, engine.max_channels) == ("fallback", 1)
    for model in ("nova-3", "nova-2-phonecall"):
        engine = live_engine(make_settings(None, deepgram_model=model))
        assert isinstance(engine, DeepgramLive)
        assert (engine.name, engine.max_channels) == ("primary", 2)


def test_start_up_problems_name_the_variable_and_the_option() -> None:
    """What load_settings prints: each refused setting as (VARIABLE, option: why)."""
    settings = make_settings(None, deepgram_model="flux-general-en", deepgram_options="diarize=true")
    [(variable, message)] = setting_problems(settings)
    assert variable == "DEEPGRAM_OPTIONS"
    assert message.startswith("diarize: Flux (flux-general-en) does not take it: Flux does not separate voices")
    assert setting_problems(make_settings(None)) == []


def test_ignored_options_are_each_apis_own() -> None:
    """v1 ignores multichannel because DEEPGRAM_CONNECTIONS decides it; Flux ignores what it sets itself."""
    v1 = ignored_options(make_settings(None, deepgram_options="multichannel=true&tag=a"))
    assert [name for name, _ in v1] == ["multichannel"]
    assert "DEEPGRAM_CONNECTIONS" in v1[0][1]
    flux = ignored_options(make_settings(None, deepgram_model="flux-general-en", deepgram_options="sample_rate=16000"))
    assert [name for name, _ in flux] == ["sample_rate"]
