"""Format layer (pure, no I/O): a call's utterances as plain text, SRT, WebVTT or JSON.

The API and `python -m service calls show` both render through here, so a transcript reads the same
whichever way it is fetched. Utterances come in spoken order (`queries.get_utterances`: by start, then
track); each becomes one line or one cue, overlapping ones included, since both parties may talk at once.

- SRT through `srt` (https://github.com/cdown/srt), the maintained SubRip library.
- WebVTT through `webvtt-py` (https://github.com/glut23/webvtt-py), which renders to a string
  (`WebVTT.content`) without touching a file. Cue text is escaped here, because webvtt-py writes it as
  given: `&`, `<` and `>` are markup in WebVTT (https://www.w3.org/TR/webvtt1/#cue-text). The speaker
  is a voice span, `<v caller>` (https://www.w3.org/TR/webvtt1/#webvtt-cue-voice-span), and a cue whose
  language differs from the call's is a language span inside it, `<v caller><lang es>hola</lang>`
  (https://www.w3.org/TR/webvtt1/#webvtt-cue-language-span).

The call's language (`call_language`) is the one most of its words were spoken in, as the engine told each
word's (DEEPGRAM_LANGUAGE=multi); a cue's is its utterance's first language, the one most of its words are in.
A call whose engine named no language (a single DEEPGRAM_LANGUAGE: Deepgram reports none) has none, and no cue
is marked: every cue is in the language the call was configured for.
"""

from __future__ import annotations

import collections
import datetime
import json
from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol

import srt  # type: ignore[import-untyped]  # srt ships no type information; we call two functions
import webvtt

Format = Literal["json", "text", "srt", "vtt"]
FORMATS: Final[tuple[Format, ...]] = ("json", "text", "srt", "vtt")
CONTENT_TYPES: Final[dict[Format, str]] = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


class Utterance(Protocol):
    """What a caption needs of a stored utterance (`storage.queries.UtteranceRecord` is one): this module sits
    below storage, so it names the fields rather than importing the record."""

    @property
    def track(self) -> str: ...
    @property
    def speaker(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def words(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def source(self) -> str: ...
    @property
    def languages(self) -> tuple[str, ...]: ...


def render(utterances: Sequence[Utterance], fmt: Format) -> str:
    """The transcript in `fmt`."""
    return _RENDERERS[fmt](utterances)


def to_text(utterances: Sequence[Utterance]) -> str:
    """One line per utterance, `[00:01.50] caller: words`; hours appear once the call passes one."""
    return "".join(
        f"[{clock(utterance.start)}] {utterance.speaker}: {_one_line(utterance.text)}\n" for utterance in utterances
    )


def to_srt(utterances: Sequence[Utterance]) -> str:
    """SubRip: one numbered cue per utterance, `caller: words`, in spoken order."""
    subtitles = [
        srt.Subtitle(
            index=index,
            start=datetime.timedelta(milliseconds=_ms(utterance.start)),
            end=datetime.timedelta(milliseconds=_end_ms(utterance)),
            content=f"{utterance.speaker}: {_one_line(utterance.text)}",
        )
        for index, utterance in enumerate(utterances, start=1)
    ]
    # reindex=False: srt would re-sort by (start, end) and drop empty cues; our order (start, track) stands.
    result: str = srt.compose(subtitles, reindex=False)
    return result


def to_vtt(utterances: Sequence[Utterance]) -> str:
    """WebVTT: one cue per utterance with the speaker as a voice span, `<v caller>words`, and its language as a
    language span where it differs from the call's, `<v caller><lang es>palabras</lang>`."""
    language = call_language(utterances)
    captions = [
        webvtt.Caption(
            start=_vtt_time(_ms(utterance.start)),
            end=_vtt_time(_end_ms(utterance)),
            text=f"<v {_escape(utterance.speaker)}>{_in_language(utterance, language)}",
        )
        for utterance in utterances
    ]
    return webvtt.WebVTT(captions=captions).content


def call_language(utterances: Sequence[Utterance]) -> str | None:
    """The language most of the call's words were spoken in; None when the engine named none.

    Each word that says its language counts once; an utterance whose words do not say (stored before words
    kept theirs) counts all its words for its first language. A tie goes to the language heard first.
    """
    counts: collections.Counter[str] = collections.Counter()
    for utterance in utterances:
        said = [word["language"] for word in utterance.words if word.get("language")]
        if said:
            counts.update(said)
        elif utterance.languages:
            counts[utterance.languages[0]] += max(len(utterance.words), 1)
    return counts.most_common(1)[0][0] if counts else None


def differs(utterance: Utterance, language: str | None) -> str | None:
    """The utterance's language if it is not the call's `language` (what the page tags, what a cue marks)."""
    own = utterance.languages[0] if utterance.languages else None
    return own if own is not None and own != language else None


def _in_language(utterance: Utterance, language: str | None) -> str:
    text = _escape(_one_line(utterance.text))
    own = differs(utterance, language)
    # A language tag is letters, digits and hyphens (BCP-47); anything else would break out of the span's tag.
    if own is None or not (own.isascii() and own.replace("-", "").isalnum()):
        return text
    return f"<lang {own}>{text}</lang>"


def to_json(utterances: Sequence[Utterance]) -> str:
    """A JSON array of utterances: speaker, track, start, end, text, confidence, words, source, languages."""
    return json.dumps([utterance_json(utterance) for utterance in utterances], ensure_ascii=False, indent=2) + "\n"


def utterance_json(utterance: Utterance) -> dict[str, Any]:
    """One utterance as the JSON object the API and the CLI give."""
    return {
        "speaker": utterance.speaker,
        "track": utterance.track,
        "start": utterance.start,
        "end": utterance.end,
        "text": utterance.text,
        "confidence": utterance.confidence,
        "words": list(utterance.words),
        "source": utterance.source,
        "languages": list(utterance.languages),
    }


def clock(seconds: float) -> str:
    """A time on the call's timeline as the text transcript gives it: mm:ss.cc, hh:mm:ss.cc past an hour."""
    # Whole centiseconds first, so 59.999 s reads 01:00.00 rather than 00:60.00.
    centiseconds = round(max(seconds, 0.0) * 100)
    minutes, centiseconds = divmod(centiseconds, 6000)
    hours, minutes = divmod(minutes, 60)
    shown = f"{minutes:02d}:{centiseconds // 100:02d}.{centiseconds % 100:02d}"
    return f"{hours:02d}:{shown}" if hours else shown


def _ms(seconds: float) -> int:
    return round(max(seconds, 0.0) * 1000)


def _end_ms(utterance: Utterance) -> int:
    # A cue may not end before it starts (both formats' players reject it); clamp rather than drop words.
    return max(_ms(utterance.end), _ms(utterance.start))


def _vtt_time(milliseconds: int) -> str:
    minutes, milliseconds = divmod(milliseconds, 60_000)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{milliseconds // 1000:02d}.{milliseconds % 1000:03d}"


def _one_line(text: str) -> str:
    # A line break or a blank line inside a cue ends it in SRT and WebVTT; a transcript line is one line.
    return " ".join(text.split())


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_RENDERERS: Final = {"json": to_json, "text": to_text, "srt": to_srt, "vtt": to_vtt}
