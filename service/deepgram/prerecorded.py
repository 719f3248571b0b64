"""I/O adapter (layer: deepgram): deepgram-sdk's pre-recorded client. One WAV in, a `BatchAnswer` out.

`PrerecordedClient.transcribe` posts one WAV to `POST /v1/listen`
(https://developers.deepgram.com/reference/speech-to-text-api/listen) with `protocol.batch_options`, and
`parse` maps the SDK's answer onto our `BatchAnswer`, its times relative to the WAV's start. SDK and httpx
errors become `SttRejected` / `SttUnavailable` here and nowhere else (HTTP statuses through
`protocol.status_error`, shared with the live client). What the answer means for a call (its place on the
call's timeline, its speaker) and when to try again are the spool worker's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepgram.types.listen_v1response import ListenV1Response

from service.deepgram.protocol import batch_options
from service.deepgram.requests import RestRequests, translated
from service.errors import SttUnavailable
from service.stt.events import BatchAnswer, BatchUtterance, Word, languages_of

# Deepgram answers an hour of audio in well under a minute; this bounds a stuck request, not a slow one.
REQUEST_TIMEOUT_S = 300.0


class PrerecordedClient(RestRequests):
    """Deepgram's pre-recorded API with our settings; one request per `transcribe`, never retried here.

    Raises SttRejected when built without DEEPGRAM_API_KEY, so a caller learns it before reading any audio.
    """

    async def transcribe(self, wav: bytes) -> BatchAnswer:
        """Deepgram's answer for one WAV file's bytes; SttError if Deepgram cannot give one."""
        async with self.sdk(REQUEST_TIMEOUT_S) as sdk:
            with translated("a transcript"):
                response = await sdk.listen.v1.media.transcribe_file(request=wav, **batch_options(self._settings))
        if not isinstance(response, ListenV1Response):
            raise SttUnavailable("Deepgram accepted the audio but answered with no transcript")
        return parse(response)


def parse(response: ListenV1Response) -> BatchAnswer:
    """The SDK's answer as ours: one `BatchUtterance` per utterance if Deepgram sent utterances, else one per
    channel's best alternative (with no span of its own). Silence stays in, as an empty text."""
    # The SDK builds answers unvalidated: a field its types call required may still be None.
    metadata: Any = response.metadata
    results: Any = response.results
    request_id = str(metadata.request_id) if metadata is not None and metadata.request_id else None
    if results is None:
        return BatchAnswer(utterances=(), request_id=request_id)
    if results.utterances:
        utterances = tuple(_utterance(utterance) for utterance in results.utterances)
    else:
        utterances = tuple(
            _best_alternative(channel.alternatives[0]) for channel in results.channels or () if channel.alternatives
        )
    return BatchAnswer(utterances=utterances, request_id=request_id)


def _utterance(utterance: Any) -> BatchUtterance:
    return BatchUtterance(
        text=str(utterance.transcript or ""),
        confidence=float(utterance.confidence or 0.0),
        words=(words := _words(utterance.words)),
        start=float(utterance.start) if utterance.start is not None else None,
        end=float(utterance.end) if utterance.end is not None else None,
        languages=_languages(utterance.languages, words),
    )


def _best_alternative(alternative: Any) -> BatchUtterance:
    return BatchUtterance(
        text=str(alternative.transcript or ""),
        confidence=float(alternative.confidence or 0.0),
        words=(words := _words(alternative.words)),
        start=None,
        end=None,
        languages=_languages(alternative.languages, words),
    )


def _languages(said: Sequence[str] | None, words: tuple[Word, ...]) -> tuple[str, ...]:
    # language=multi: Deepgram's list, most words first; when it is absent (it may be, on audio that switches
    # languages), the words' own.
    return tuple(said) if said else languages_of(words)


def _words(words: Sequence[Any] | None) -> tuple[Word, ...]:
    return tuple(
        Word(
            word=str(word.word or ""),
            start=float(word.start or 0.0),
            end=float(word.end or 0.0),
            confidence=float(word.confidence or 0.0),
            # Not in the SDK's model of a channel's words (only of an utterance's): an extra field, if sent at all.
            punctuated_word=getattr(word, "punctuated_word", None),
            speaker=int(word.speaker) if word.speaker is not None else None,
            language=word.language or None,
        )
        for word in words or ()
    )
