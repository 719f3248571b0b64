"""Deepgram's protocol (layer: deepgram, pure, no I/O): what we ask Deepgram for, what it answers, and its errors.

`live.py` (live client) and `prerecorded.py` (pre-recorded client) are the only modules that import the SDK;
they map the SDK's models onto the seam's events (`service/stt/events.py`), and its HTTP statuses onto our
errors with `status_error`, so the rest of the service never depends on the SDK's shapes.
Live options: https://developers.deepgram.com/reference/speech-to-text-api/listen-streaming
Pre-recorded options: https://developers.deepgram.com/reference/speech-to-text-api/listen
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from service import mulaw
from service.errors import SttError, SttRejected, SttUnavailable

if TYPE_CHECKING:  # annotations only: settings.py pulls in pydantic-settings, which imports asyncio
    from service.settings import Settings


def live_options(settings: Settings, *, channels: int = 1, diarize: bool = False) -> dict[str, Any]:
    """The keyword arguments for the SDK's `listen.v1.connect`, for Twilio's mu-law 8 kHz audio.

    Audio goes to Deepgram as Twilio sent it (no transcoding), so encoding and rate are fixed. Options the
    SDK does not model, and DEEPGRAM_OPTIONS, travel as additional query parameters.
    """
    options: dict[str, Any] = {
        "model": settings.deepgram_model,
        "language": settings.deepgram_language,
        "encoding": "mulaw",
        "sample_rate": mulaw.SAMPLE_RATE,
        "channels": channels,
        # More than one channel: each transcribed on its own, its results naming it (`channel_index`).
        **({"multichannel": True} if channels > 1 else {}),
        "interim_results": settings.deepgram_interim_results,
        "punctuate": settings.deepgram_punctuate,
        "smart_format": settings.deepgram_smart_format,
        # Deepgram takes false to turn endpointing off, otherwise milliseconds of silence.
        "endpointing": settings.deepgram_endpointing_ms or False,
    }
    # utterance_end_ms needs interim results (https://developers.deepgram.com/docs/utterance-end).
    if settings.deepgram_utterance_end_ms and settings.deepgram_interim_results:
        options["utterance_end_ms"] = settings.deepgram_utterance_end_ms
    if settings.deepgram_vad_events:
        options["vad_events"] = True
    if diarize:
        options["diarize"] = True
    if settings.deepgram_keyterms:
        options["keyterm"] = list(settings.deepgram_keyterms)
    extra = pass_through_options(option_pairs(settings), reserved=options.keys())
    if extra:
        options["request_options"] = {"additional_query_parameters": extra}
    return options


def option_pairs(settings: Settings) -> list[tuple[str, str]]:
    """DEEPGRAM_OPTIONS' names and values, then REDACT's names as `redact` (those DEEPGRAM_OPTIONS does not send),
    and `mip_opt_out=true` with DEEPGRAM_MIP_OPT_OUT (unless DEEPGRAM_OPTIONS says otherwise)."""
    pairs = settings.deepgram_extra_options
    sent = {value for name, value in pairs if name == "redact"}
    extra = [("redact", name) for name in settings.redact if name not in sent]
    if settings.deepgram_mip_opt_out and all(name != "mip_opt_out" for name, _ in pairs):
        extra.append(("mip_opt_out", "true"))
    return [*pairs, *extra]


FLUX_PREFIX: Final = "flux-"  # Deepgram's Flux models (flux-general-en, flux-general-multi): /v2/listen
BATCH_MODEL_FOR_FLUX: Final = "nova-3"  # Flux is live only; spooled audio needs a pre-recorded model


def is_flux(model: str) -> bool:
    """Whether DEEPGRAM_MODEL names a Flux model, which streams to `/v2/listen` (`flux_protocol.py`)."""
    return model.startswith(FLUX_PREFIX)


# The audio's layout, which callscribe always decides: Twilio's format, and the channels DEEPGRAM_CONNECTIONS picks
# (one track a connection, or both interleaved with multichannel=true). Never taken from DEEPGRAM_OPTIONS, live or
# batch (the spool's WAVs are one track each, so batch never asks for multichannel either).
AUDIO_LAYOUT_OPTIONS = frozenset({"encoding", "sample_rate", "channels", "multichannel"})
CHANNEL_OPTIONS = frozenset({"channels", "multichannel"})  # the ones DEEPGRAM_CONNECTIONS decides


def pass_through_options(pairs: list[tuple[str, str]], *, reserved: Any) -> dict[str, str | list[str]]:
    """DEEPGRAM_OPTIONS as query parameters; a repeated name becomes a list (Deepgram's repeated keys).

    Names that callscribe sets itself (`reserved`, and the audio's layout: encoding, sample_rate, channels,
    multichannel) are ignored here so a stray option can never make Deepgram misread Twilio's audio.
    """
    extra: dict[str, str | list[str]] = {}
    for name, value in pairs:
        if name in reserved or name in AUDIO_LAYOUT_OPTIONS:
            continue
        previous = extra.get(name)
        if previous is None:
            extra[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            extra[name] = [previous, value]
    return extra


# Options of the live API that the pre-recorded one does not take, or that a WAV's header already says: dropped
# from DEEPGRAM_OPTIONS so a live-only setting cannot make every batch request fail with HTTP 400.
LIVE_ONLY_OPTIONS = frozenset(
    {
        "encoding", "sample_rate", "channels", "interim_results", "endpointing", "utterance_end_ms", "vad_events",
        "no_delay", "callback", "callback_method",
        # Flux's turn detection: live only (and DEEPGRAM_OPTIONS may carry them on a Flux setup)
        "eot_threshold", "eager_eot_threshold", "eot_timeout_ms", "language_hint",
    }
)  # fmt: skip


def batch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for the SDK's `listen.v1.media.transcribe_file`: the live options that apply to batch.

    No encoding or sample rate: Deepgram reads them from the WAV header. `utterances` splits a long stretch
    into one transcript per utterance, as live results would have been. The model is `batch_model`'s, and on
    flux-general-multi the language is `multi`, so batch detects languages as live did.
    """
    multilingual = is_flux(settings.deepgram_model) and "multi" in settings.deepgram_model
    options: dict[str, Any] = {
        "model": batch_model(settings),
        "language": "multi" if multilingual else settings.deepgram_language,
        "punctuate": settings.deepgram_punctuate,
        "smart_format": settings.deepgram_smart_format,
        "utterances": True,
    }
    if settings.deepgram_keyterms:
        options["keyterm"] = list(settings.deepgram_keyterms)
    extra = pass_through_options(option_pairs(settings), reserved=options.keys() | LIVE_ONLY_OPTIONS)
    if extra:
        options["request_options"] = {"additional_query_parameters": extra}
    return options


def batch_model(settings: Settings) -> str:
    """The pre-recorded model for spooled audio: DEEPGRAM_BATCH_MODEL, else DEEPGRAM_MODEL, else (Flux is live
    only) Nova-3."""
    if settings.deepgram_batch_model:
        return settings.deepgram_batch_model
    return BATCH_MODEL_FOR_FLUX if is_flux(settings.deepgram_model) else settings.deepgram_model


def ignored_options(settings: Settings) -> list[tuple[str, str]]:
    """DEEPGRAM_OPTIONS names that `live_options` drops because callscribe sets them, each with why; for a
    start-up warning."""
    fixed = set(live_options(settings.model_copy(update={"deepgram_options": ""})).keys()) | AUDIO_LAYOUT_OPTIONS
    names = sorted({name for name, _ in settings.deepgram_extra_options if name in fixed})
    return [(name, _why_ignored(name)) for name in names]


def _why_ignored(name: str) -> str:
    if name in CHANNEL_OPTIONS:
        return (
            "callscribe sets it from DEEPGRAM_CONNECTIONS: channels=1 on a connection per track (per_track), "
            "multichannel=true&channels=2 for both tracks of a call on one connection (per_call)"
        )
    return "callscribe sets it itself"


# Deepgram's reference reconnect loop treats these close codes as final; 1006/1011/1012/1013 may pass.
# https://developers.deepgram.com/docs/recovering-from-connection-errors-and-timeouts-when-live-streaming-audio
FATAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008})


def is_fatal_status(status: int) -> bool:
    """An HTTP status (live upgrade or pre-recorded API) that retrying cannot fix: 4xx except 408 and 429."""
    return 400 <= status < 500 and status not in {408, 429}


def is_fatal_close(code: int | None) -> bool:
    """A close code from Deepgram that retrying cannot fix (bad audio format, bad request)."""
    return code in FATAL_CLOSE_CODES


# The refusals people meet, each with its cause and its fix: what the `deepgram.failed` line and the spool say.
CONSOLE: Final = "https://console.deepgram.com"
_REFUSALS: Final = {
    401: "Deepgram rejected the API key ({detail}): DEEPGRAM_API_KEY is wrong, revoked or expired; create a key at "
    f"{CONSOLE} (API Keys), set DEEPGRAM_API_KEY and restart",
    402: "Deepgram refused the request: the Deepgram project is out of credit ({detail}, Payment Required); add "
    f"credit or a payment method at {CONSOLE} (Billing): new calls are transcribed live again at once, and "
    "spooled audio on the spool's next pass",
    403: "Deepgram refused access for this API key ({detail}): the key's project may not use this model or "
    f"feature; check DEEPGRAM_MODEL and DEEPGRAM_OPTIONS, or use a key with more access ({CONSOLE})",
}


def status_error(status: int | None, *, said: str = "", at_upgrade: bool = False) -> SttError:
    """Deepgram's HTTP status as our error: SttRejected if retrying cannot fix it, else SttUnavailable.

    `said` is Deepgram's own words from the error body (`error_message`), quoted after the status. A status at
    the live socket's upgrade (`at_upgrade`) says so; one from the pre-recorded API says whether it was an
    answer that was no transcript (< 400) or a failure that may pass.
    """
    detail = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if status in _REFUSALS:
        return SttRejected(_REFUSALS[status].format(detail=detail), status=status)
    if status is not None and is_fatal_status(status):
        return SttRejected(f"Deepgram refused the request ({detail}); check the DEEPGRAM_* options", status=status)
    return SttUnavailable(_passing_reason(status, detail, at_upgrade=at_upgrade), status=status)


def _passing_reason(status: int | None, detail: str, *, at_upgrade: bool) -> str:
    if at_upgrade:
        return f"Deepgram answered {detail} at the upgrade"
    if status is not None and status < 400:
        return f"Deepgram's answer was not a transcript ({detail})"
    return f"Deepgram could not transcribe now ({detail})"


def error_message(body: object) -> str:
    """Deepgram's own words from an error body ({"err_code", "err_msg"} or {"error", "reason"}), kept short."""
    if isinstance(body, dict):
        said = body.get("err_msg") or body.get("reason") or body.get("error") or body.get("err_code")
        return str(said)[:200] if said else ""
    return ""
