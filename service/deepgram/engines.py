"""Wiring (layer: deepgram): which live engine DEEPGRAM_MODEL asks for, the batch engines the spool asks, and the
settings the live engine cannot honour.

A Flux model (`flux-general-en`, `flux-general-multi`) streams to Deepgram Flux (`flux.py`), any other model to
Deepgram's v1 live API (`live.py`). Start-up (`serve`, and the ASGI entry point) refuses the settings the
chosen API would answer with HTTP 400 on every call (`setting_problems`), the way a bad value is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.deepgram.environment import DeepgramAddress, addresses
from service.deepgram.flux import DeepgramFlux
from service.deepgram.flux_protocol import flux_refusals, ignored_flux_options
from service.deepgram.live import DeepgramLive
from service.deepgram.prerecorded import PrerecordedClient
from service.deepgram.protocol import ignored_options as ignored_v1_options
from service.deepgram.protocol import is_flux
from service.errors import SttRejected
from service.settings import Settings
from service.stt.engine import FALLBACK, PRIMARY, BatchEngine, LiveEngine, said_by_each


def live_engine(settings: Settings, address: DeepgramAddress | None = None) -> LiveEngine:
    """The live engine for DEEPGRAM_MODEL at `address` (the primary unless given): Flux for a `flux-` model, else
    Deepgram's v1 live API. The fallback (DEEPGRAM_FALLBACK_URL) speaks the same API as the primary."""
    if is_flux(settings.deepgram_model):
        return DeepgramFlux(settings, address)
    return DeepgramLive(settings, address)


def batch_engines(settings: Settings, order: Sequence[str] = (PRIMARY, FALLBACK)) -> list[BatchEngine]:
    """The pre-recorded APIs of the Deepgrams in `order` (the primary, and the fallback with DEEPGRAM_FALLBACK_URL)
    that have a key. SttRejected, saying each one's missing key, when none has: known before any audio is read.
    Pre-recorded is Deepgram's v1 API whatever the live model (on Flux, DEEPGRAM_BATCH_MODEL)."""
    known = addresses(settings)
    engines: list[BatchEngine] = []
    refusals: list[tuple[str, str]] = []
    for name in order:
        if name not in known:
            continue
        try:
            engines.append(PrerecordedClient(settings, known[name]))
        except SttRejected as exc:
            refusals.append((name, exc.reason))
    if not engines:
        raise SttRejected(said_by_each(refusals))
    return engines


def setting_problems(settings: Settings) -> list[tuple[str, str]]:
    """(variable, what is wrong) for each setting DEEPGRAM_MODEL's API would refuse: for `load_settings`."""
    return [(refusal.variable, refusal.message) for refusal in flux_refusals(settings)]


def ignored_options(settings: Settings) -> list[tuple[str, str]]:
    """DEEPGRAM_OPTIONS names callscribe drops because it sets them itself, each with why (a start-up warning)."""
    return ignored_flux_options(settings) if is_flux(settings.deepgram_model) else ignored_v1_options(settings)
