"""The Flux adapter through the real SDK against the fake's `/v2/listen`: turns in, the seam's events out, on the
pipeline's audio timeline; errors become SttRejected/SttUnavailable once, as on v1."""

from __future__ import annotations

import re

import pytest
from deepgram.core.unchecked_base_model import construct_type  # how the SDK builds the messages it reads
from deepgram.listen.v2.socket_client import V2SocketClientResponse

from service.deepgram.flux import DeepgramFlux, FluxConnection, _turn_info
from service.deepgram.flux_protocol import KEEPALIVE_SILENCE
from service.errors import SttRejected, SttUnavailable
from service.stt.events import SttEvent, SttMetadata, SttResult, SttServerError, SttSettled, SttTurn, TurnMoment
from tests.helpers.audio import SILENCE, SPEECH, call_audio
from tests.helpers.fakes.deepgram_server import FLUX_PATH, FakeDeepgram, expected_words
from tests.helpers.service import make_settings

FLUX = "flux-general-en"


def flux(deepgram: FakeDeepgram | None, **values: object) -> DeepgramFlux:
    return DeepgramFlux(make_settings(deepgram, deepgram_model=FLUX, **values))


async def transcribe(engine: DeepgramFlux, *pieces: bytes | None) -> list[SttEvent]:
    """Send each piece (None: a keep-alive), CloseStream, and every event until Flux closes."""
    async with engine.connect(channels=1, diarize=False) as live:
        for piece in pieces:
            await (live.keep_alive() if piece is None else live.send_audio(piece))
        await live.close_stream()
        return [event async for event in live.events()]


def finals(events: list[SttEvent]) -> list[SttResult]:
    return [e for e in events if isinstance(e, SttResult) and e.is_final]


async def test_each_turn_is_one_final_and_a_normal_close_settles_everything(deepgram: FakeDeepgram) -> None:
    """Two turns, two finals (one per turn, with its index), every word once; the close settles all audio sent and
    says the request id, as v1's Metadata does."""
    events = await transcribe(flux(deepgram), SPEECH[:5000], SPEECH[5000:])
    [connection] = deepgram.connections
    assert connection.path == FLUX_PATH
    assert connection.query == {"model": [FLUX], "encoding": ["mulaw"], "sample_rate": ["8000"]}
    turns = finals(events)
    assert [w.word for f in turns for w in f.words] == expected_words(SPEECH)
    assert [(f.turn_index, f.speech_final) for f in turns] == [(0, True), (1, True)]
    assert [f.text for f in turns] == [t["transcript"] for t in connection.turn_events("EndOfTurn")]
    assert any(isinstance(e, SttResult) and not e.is_final for e in events)  # Updates are interims
    assert [e.moment for e in events if isinstance(e, SttTurn)] == [TurnMoment.STARTED, TurnMoment.STARTED]
    metadata, settled = events[-2:]
    assert metadata == SttMetadata(request_id=connection.request_id, duration=len(SPEECH) / 8000)
    assert settled == SttSettled(until_s=len(SPEECH) / 8000)
    assert bytes(connection.audio) == SPEECH
    await connection.closed.wait()
    assert connection.close_code == 1000


async def test_settled_never_passes_the_open_turn(deepgram: FakeDeepgram) -> None:
    """While a turn is open, what is settled stays at its start; after it ends, at what Flux has heard."""
    events = await transcribe(flux(deepgram), SPEECH)
    settled = [e.until_s for e in events if isinstance(e, SttSettled)]
    assert settled == sorted(settled)
    second_turn = finals(events)[1]
    held = [e.until_s for e in events[: events.index(second_turn)] if isinstance(e, SttSettled)]
    assert max(held) == second_turn.start == 2.0  # the second turn opened at 2.0 s and held it until its end


async def test_keep_alive_is_silence_and_taken_out_of_every_time(deepgram: FakeDeepgram) -> None:
    """Flux has no KeepAlive message: 100 ms of mu-law silence goes as audio, and Flux's times come back
    without it, on the pipeline's audio."""
    turn = call_audio(7, 1.0)
    events = await transcribe(flux(deepgram), turn + SILENCE * 4000, None, None, turn)
    [connection] = deepgram.connections
    assert connection.control == [{"type": "CloseStream"}]  # no KeepAlive: Flux would answer it with an Error
    assert bytes(connection.audio) == turn + SILENCE * 4000 + KEEPALIVE_SILENCE * 2 + turn
    first, second = finals(events)
    assert second.start == pytest.approx(1.5)  # 1.7 s on Flux's timeline, less 0.2 s of inserted silence
    assert second.words[0].start == pytest.approx(1.5)
    assert events[-1] == SttSettled(until_s=(2 * len(turn) + 4000) / 8000)
    assert first.end <= second.start


async def test_eager_ends_and_resumed_turns_are_turn_events(deepgram: FakeDeepgram) -> None:
    """With DEEPGRAM_EAGER_EOT_THRESHOLD: EagerEndOfTurn, then TurnResumed when the speaker goes on; the final's
    text is the last eager end's."""
    audio = call_audio(8, 1.0) + SILENCE * 4000 + call_audio(9, 0.5) + SILENCE * 8000
    events = await transcribe(flux(deepgram, deepgram_eager_eot_threshold=0.5), audio)
    moments = [e for e in events if isinstance(e, SttTurn)]
    assert [m.moment for m in moments] == [
        TurnMoment.STARTED, TurnMoment.EAGER_END, TurnMoment.RESUMED, TurnMoment.EAGER_END,
    ]  # fmt: skip
    [final] = finals(events)
    assert final.text == moments[-1].text
    assert deepgram.connections[0].option("eager_eot_threshold") == "0.5"


async def test_the_multilingual_model_says_each_turns_languages(deepgram: FakeDeepgram) -> None:
    """flux-general-multi: the languages Flux detected, most words first, on each final."""
    events = await transcribe(
        DeepgramFlux(make_settings(deepgram, deepgram_model="flux-general-multi", deepgram_language_hint="es")), SPEECH
    )
    sent = deepgram.connections[0].turn_events("EndOfTurn")
    assert [f.languages for f in finals(events)] == [tuple(t["languages"]) for t in sent]
    assert all(f.languages for f in finals(events))
    assert deepgram.connections[0].option("language_hint") == "es"


async def test_a_warning_is_a_server_error_event_and_the_stream_goes_on(deepgram: FakeDeepgram) -> None:
    """Flux's Warning does not close the stream: it is said (SttServerError) and the words still come."""
    deepgram.faults.flux_warning = "SLOW_AUDIO"
    events = await transcribe(flux(deepgram), SPEECH)
    assert SttServerError(description="SLOW_AUDIO: Injected warning.") in events
    assert [w.word for f in finals(events) for w in f.words] == expected_words(SPEECH)


@pytest.mark.parametrize(
    ("code", "error"), [("INTERNAL_SERVER_ERROR", SttUnavailable), ("UNPARSABLE_CLIENT_MESSAGE", SttRejected)]
)
async def test_a_fatal_error_raises_as_it_fits(deepgram: FakeDeepgram, code: str, error: type) -> None:
    """Flux's Error ends the stream: a fault of the request is final, Flux's own may pass."""
    deepgram.faults.flux_error = code
    with pytest.raises(error, match=f"Flux sent Error {code}: Injected."):
        await transcribe(flux(deepgram), SPEECH)


async def test_the_request_id_is_known_from_the_upgrade(deepgram: FakeDeepgram) -> None:
    """Before Flux says Connected, the 101 answer's dg-request-id names the request."""
    async with flux(deepgram).connect(channels=1, diarize=False) as live:
        request_id = live._turns.request_id
        await live.close_stream()
        _ = [event async for event in live.events()]
    assert request_id == deepgram.connections[0].request_id


@pytest.mark.parametrize(
    ("status", "error", "says"),
    [
        (401, SttRejected, "rejected the API key (HTTP 401)"),
        (400, SttRejected, "HTTP 400"),
        (503, SttUnavailable, "HTTP 503"),
    ],
)
async def test_upgrade_statuses_are_classified_as_on_v1(
    deepgram: FakeDeepgram, status: int, error: type, says: str
) -> None:
    """The same translation as v1: 4xx at the upgrade is final, 5xx may pass."""
    deepgram.faults.reject_status = status
    with pytest.raises(error, match=re.escape(says)):
        await transcribe(flux(deepgram), SPEECH)


async def test_an_option_flux_refuses_is_http_400(deepgram: FakeDeepgram) -> None:
    """The fake refuses what Flux refuses: a v1 model on /v2/listen is a 400, final."""
    with pytest.raises(SttRejected, match="HTTP 400") as caught:
        await transcribe(DeepgramFlux(make_settings(deepgram, deepgram_model="nova-3")), SPEECH)
    assert caught.value.status == 400
    assert deepgram.connections == []


@pytest.mark.parametrize(
    ("fault", "error", "says", "code"),
    [
        ("close_after_bytes", SttUnavailable, "close 1011 NET-0000 while reading results", 1011),
        ("drop_after_bytes", SttUnavailable, "no close frame", 1006),
    ],
)
async def test_closes_and_drops_mid_stream_are_translated(
    deepgram: FakeDeepgram, fault: str, error: type, says: str, code: int
) -> None:
    """A close or a TCP drop mid-stream carries its code, like v1's."""
    setattr(deepgram.faults, fault, 4000)
    with pytest.raises(error, match=says) as caught:
        await transcribe(flux(deepgram), SPEECH)
    assert caught.value.close_code == code


async def test_a_handshake_that_never_finishes_times_out(deepgram: FakeDeepgram) -> None:
    """TCP accepted but no HTTP answer: SttUnavailable after DEEPGRAM_CONNECT_TIMEOUT_S."""
    deepgram.faults.hang_handshake = True
    with pytest.raises(SttUnavailable, match=r"did not open the connection within 0\.3 s"):
        await transcribe(flux(deepgram, deepgram_connect_timeout_s=0.3), SPEECH)


async def test_without_a_key_or_with_two_channels_nothing_is_opened(deepgram: FakeDeepgram) -> None:
    """No key: SttRejected before any socket. Two channels or diarization: Flux cannot, said, not attempted."""
    assert flux(deepgram).max_channels == 1
    assert flux(deepgram).name == "primary"
    keyless = flux(deepgram, deepgram_api_key="")
    assert not keyless.configured
    with pytest.raises(SttRejected, match="DEEPGRAM_API_KEY is not set"):
        async with keyless.connect(channels=1, diarize=False):
            pass
    for channels, diarize in ((2, False), (1, True)):
        with pytest.raises(SttRejected, match="Flux takes one channel without diarization"):
            async with flux(deepgram).connect(channels=channels, diarize=diarize):
                pass
    assert deepgram.upgrade_attempts == 0


def test_the_sdks_turn_info_is_read_with_word_languages_and_missing_fields() -> None:
    """A word's `language` (beyond the SDK's model) is kept; fields Flux left out read as empty, not as errors."""
    words = [{"word": "hola", "confidence": 0.9, "language": "es"}, {"word": "hi", "confidence": 0.8, "start": 0.5}]
    full = construct_type(
        type_=V2SocketClientResponse,
        object_={"type": "TurnInfo", "request_id": "r", "sequence_id": 3, "event": "Update", "turn_index": 2,
                 "audio_window_start": 0.0, "audio_window_end": 1.0, "transcript": "hola hi", "words": words,
                 "end_of_turn_confidence": 0.1, "languages": ["es", "en"]},
    )  # fmt: skip
    info = _turn_info(full)
    assert (info.event, info.turn_index, info.languages, info.request_id) == ("Update", 2, ("es", "en"), "r")
    assert [(w.word, w.start, w.language) for w in info.words] == [("hola", None, "es"), ("hi", 0.5, None)]
    bare = construct_type(type_=V2SocketClientResponse, object_={"type": "TurnInfo", "event": "EndOfTurn"})
    assert _turn_info(bare).words == ()
    assert (_turn_info(bare).start, _turn_info(bare).transcript) == (0.0, "")


def test_a_turn_info_that_cannot_be_read_is_skipped_not_the_call() -> None:
    """A field of the wrong type is one SttServerError (logged by the receiver), and the connection reads on; a
    word with no text is no word, never the text "None"."""
    connection = FluxConnection(socket=None, interim_results=True, request_id="r")  # type: ignore[arg-type]
    bad = construct_type(
        type_=V2SocketClientResponse,
        object_={"type": "TurnInfo", "event": "Update", "audio_window_start": "soon", "audio_window_end": 1.0},
    )
    [error] = connection._meaning(bad)
    assert isinstance(error, SttServerError)
    assert "cannot be read" in error.description
    wordless = construct_type(
        type_=V2SocketClientResponse,
        object_={"type": "TurnInfo", "event": "Update", "audio_window_end": 1.0, "transcript": "hi",
                 "words": [{"confidence": 0.5}, {"word": "hi", "confidence": 0.9}]},
    )  # fmt: skip
    assert [w.word for w in _turn_info(wordless).words] == ["hi"]
