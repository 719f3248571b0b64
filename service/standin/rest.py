"""The stand-in's HTTP side: a fake of Deepgram's pre-recorded API (`POST /v1/listen` with a WAV body), of its text
intelligence (`POST /v1/read`, `read_response`), and of the one management request a key check makes
(`GET /v1/projects`).

Layer: the Deepgram stand-in (tests/helpers/fakes/deepgram_batch.py re-exports it for the tests). A small
HTTP/1.1 server on plain asyncio streams, on 127.0.0.1 and a port the OS picks; the real deepgram-sdk (through
httpx) talks to it, so tests exercise the same request, auth and error shapes as production. One request per
connection (`Connection: close`), which httpx handles like any server's.

"Transcription" is the live fake's (`live.word_for`, or the `words` it is given): each 4000-byte window of the
WAV's μ-law samples is one word, silent windows none, so the words of an answer equal `expected_words(audio)`. With
`utterances=true`, voiced windows in a row form one utterance; a silent window ends it. With `language=multi`,
each word has the live fake's language for its window (`language_for`), and each utterance and alternative the
languages of its words, most words first.
Response shape: https://developers.deepgram.com/reference/speech-to-text-api/listen (200 response).

`/v1/read` answers `{"text": ...}` with what the query asks for (`summarize`, `topics`, `intents`,
`sentiment`), English only, each derived from the text so tests can assert it: the summary is `summary_for`,
the topics the text's longest words, the intent whether it asks a question, each line a sentiment segment
scored by `POSITIVE_WORDS` and `NEGATIVE_WORDS`. Shape: https://developers.deepgram.com/reference/text-intelligence-api/text-read
(the SDK's `ReadV1Response`; Deepgram sends `summary.text` and `metadata.request_id`, one level shallower than
the SDK's types say, which read both).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import http
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from service.spool.wav import WavFormatError, parse_mulaw_wav
from service.standin.live import (
    MODEL_UUID,
    MODEL_VERSION,
    MULTI,
    WORD_CONFIDENCE,
    is_silence,
    language_for,
    languages_of,
    word_for,
)
from service.standin.words import WordChooser

LISTEN_PATH = "/v1/listen"
READ_PATH = "/v1/read"
POSITIVE_WORDS = frozenset({"good", "great", "thanks", "thank", "happy", "love", "perfect", "wonderful"})
NEGATIVE_WORDS = frozenset({"bad", "angry", "cancel", "problem", "terrible", "broken", "wrong", "late"})
PROJECTS_PATH = "/v1/projects"  # the key's projects: what `python -m service doctor` asks to check a key
PROJECT_ID = "3f1e6f0c-2a4b-4c8d-9e0f-1a2b3c4d5e6f"
MAX_HEADER_LINES = 100

Message = dict[str, Any]


@dataclass(kw_only=True)
class RecordedRequest:
    """One HTTP request the fake answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = field(repr=False)
    status: int = 0  # what the fake answered

    def option(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def transcription(
    audio: bytes,
    *,
    bytes_per_second: int,
    window_bytes: int = 4000,
    multi: bool = False,
    words: WordChooser = word_for,
) -> list[list[Message]]:
    """The words Deepgram would hear in `audio`, as runs of voiced windows (each run one utterance); `multi`
    (language=multi) gives each its language."""
    runs: list[list[Message]] = [[]]
    for offset in range(0, len(audio), window_bytes):
        window = audio[offset : offset + window_bytes]
        if is_silence(window):
            runs.append([])
            continue
        word = words(window)
        runs[-1].append(
            {
                "word": word,
                "start": offset / bytes_per_second,
                "end": (offset + len(window)) / bytes_per_second,
                "confidence": WORD_CONFIDENCE,
                "punctuated_word": word,
                **({"language": language_for(window)} if multi else {}),
            }
        )
    return [run for run in runs if run]


def listen_response(
    audio: bytes,
    *,
    sample_rate: int,
    channels: int,
    query: dict[str, list[str]],
    request_id: str,
    words: WordChooser = word_for,
) -> Message:
    """The 200 body Deepgram's pre-recorded API answers for a WAV holding `audio`."""
    multi = (query.get("language") or [""])[0] == MULTI
    runs = transcription(audio, bytes_per_second=sample_rate * channels, multi=multi, words=words)
    heard = [word for run in runs for word in run]
    model = (query.get("model") or ["nova-3"])[0]
    alternative: Message = {
        "transcript": " ".join(word["word"] for word in heard),
        "confidence": WORD_CONFIDENCE if heard else 0.0,
        "words": heard,
    }
    if multi:
        alternative["languages"] = languages_of([word["language"] for word in heard])
    results: Message = {"channels": [{"alternatives": [alternative]}]}
    if (query.get("utterances") or ["false"])[0].lower() == "true":
        results["utterances"] = [_utterance(run, multi=multi) for run in runs]
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": hashlib.sha256(audio).hexdigest(),
            "created": created,
            "duration": len(audio) / (sample_rate * channels),
            "channels": channels,
            "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: {"name": f"general-{model}", "version": MODEL_VERSION, "arch": model}},
        },
        "results": results,
    }


def _utterance(run: list[Message], *, multi: bool) -> Message:
    utterance: Message = {
        "start": run[0]["start"],
        "end": run[-1]["end"],
        "confidence": WORD_CONFIDENCE,
        "channel": 0,
        "transcript": " ".join(word["word"] for word in run),
        "words": [{**word, "speaker": 0} for word in run],
        "speaker": 0,
        "id": str(uuid.uuid4()),
    }
    if multi:
        utterance["languages"] = languages_of([word["language"] for word in run])
    return utterance


def summary_for(text: str) -> str:
    """The fake's summary of `text`: its first eight words and its length, so a test can assert it."""
    words = text.split()
    return f"Summary of {len(words)} words: {' '.join(words[:8])}"


def _score(words: list[str]) -> float:
    plain = [word.strip(".,!?;:").lower() for word in words]
    found = sum(word in POSITIVE_WORDS for word in plain) - sum(word in NEGATIVE_WORDS for word in plain)
    return max(-1.0, min(1.0, found / 3))


def _label(score: float) -> str:
    return "positive" if score >= 0.333 else "negative" if score <= -0.333 else "neutral"


def _text_of(body: bytes) -> str | None:
    try:
        text = json.loads(body)["text"]
    except (ValueError, KeyError, TypeError):
        return None
    return text if isinstance(text, str) and text.strip() else None


def read_response(text: str, query: dict[str, list[str]], request_id: str) -> Message:
    """`/v1/read`'s 200 answer for `text`, with the parts `query` asks for."""
    asked = {name for name, values in query.items() if values and values[0] not in {"", "false"}}
    lines, first, segments = [], 0, []
    for line in text.split("\n"):
        words = line.split()
        if words:
            lines.append(words)
            segments.append((line, first, first + len(words) - 1, _score(words)))
            first += len(words)
    results: Message = {}
    if "summarize" in asked:
        results["summary"] = {"text": summary_for(text)}
    if "topics" in asked:
        longest = sorted({w.strip(".,!?;:").lower() for w in text.split()}, key=lambda w: (-len(w), w))[:3]
        results["topics"] = {"segments": [{"text": text, "start_word": 0, "end_word": max(first - 1, 0),
                             "topics": [{"topic": word, "confidence_score": 0.9 - 0.1 * rank}
                                        for rank, word in enumerate(longest)]}]}  # fmt: skip
    if "intents" in asked:
        intent = "Ask a question" if "?" in text else "Make a statement"
        results["intents"] = {"segments": [{"text": text, "start_word": 0, "end_word": max(first - 1, 0),
                              "intents": [{"intent": intent, "confidence_score": 0.8}]}]}  # fmt: skip
    if "sentiment" in asked:
        total = sum(end - start + 1 for _, start, end, _ in segments)
        average = sum(score * (end - start + 1) for _, start, end, score in segments) / total if total else 0.0
        results["sentiments"] = {
            "segments": [{"text": line, "start_word": start, "end_word": end, "sentiment": _label(score),
                          "sentiment_score": score} for line, start, end, score in segments],
            "average": {"sentiment": _label(average), "sentiment_score": average},
        }  # fmt: skip
    created = datetime.datetime.now(datetime.UTC).isoformat()
    return {"metadata": {"request_id": request_id, "created": created, "language": "en"}, "results": results}


class _BadRequest(Exception):
    """The request could not be parsed as HTTP/1.1."""


class FakeDeepgramBatch:
    """A fake pre-recorded API on 127.0.0.1 (OS-chosen port), used as an async context manager."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        words: WordChooser = word_for,
        project_name: str = "callscribe tests",
        headers: dict[str, str] | None = None,
        record: bool = True,
    ) -> None:
        self.api_key = api_key  # None: any key is taken (the stand-in command, which has no account to check)
        self.words = words
        self.project_name = project_name  # what GET /v1/projects names the key's one project
        self.headers = dict(headers or {})  # added to every answer
        self.record = record  # False: `requests` stays empty (a long-running stand-in would keep every body)
        self.fail_status: int | None = None  # answer this status instead of transcribing...
        self.fail_count: int | None = None  # ...this many times, then transcribe (None = always); counts down
        self.requests: list[RecordedRequest] = []  # every request, in order
        # /v1/read's own failures (the pre-recorded ones above leave it be): this status, this many times.
        self.read_fail_status: int | None = None
        self.read_fail_count: int | None = None
        self.read_hold: asyncio.Event | None = None  # when set: each /v1/read waits for it before answering
        self.read_arrived = asyncio.Event()  # set by the first /v1/read, before any hold
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def request_count(self) -> int:
        return len(self.requests)

    async def __aenter__(self) -> FakeDeepgramBatch:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeDeepgramBatch is not started; use `async with FakeDeepgramBatch() as fake`")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`: what the DEEPGRAM_BATCH_URL setting takes."""
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            try:
                request = await _read_request(reader)
            except (_BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                await _respond(
                    writer, 400, _error("Bad Request", "Malformed HTTP request."), str(uuid.uuid4()), self.headers
                )
                return
            if self.record:
                self.requests.append(request)
            request_id = str(uuid.uuid4())
            if request.path == READ_PATH:
                self.read_arrived.set()
                if self.read_hold is not None:
                    await self.read_hold.wait()
            request.status, body = self._answer(request, request_id)
            await _respond(writer, request.status, body, request_id, self.headers)
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, request: RecordedRequest, request_id: str) -> tuple[int, Message]:
        failure = self._take_failure()
        if failure is not None:
            return failure, _error("INJECTED_FAULT", "Failed by FakeDeepgramBatch.fail_status.")
        if request.path == PROJECTS_PATH:
            return self._projects(request)
        if request.path == READ_PATH:
            return self._read(request, request_id)
        return self._listen(request, request_id)

    def _listen(self, request: RecordedRequest, request_id: str) -> tuple[int, Message]:
        if request.path != LISTEN_PATH:
            return 404, _error("NOT_FOUND", f"No such endpoint: {request.path}")
        if request.method != "POST":
            return 405, _error("METHOD_NOT_ALLOWED", f"{request.method} is not allowed here.")
        if not self._authorized(request.headers.get("authorization")):
            return 401, _error("INVALID_AUTH", "Invalid credentials.")
        try:
            wav = parse_mulaw_wav(request.body)
        except WavFormatError as exc:
            return 400, _error("Bad Request", f"failed to process audio: corrupt or unsupported data ({exc})")
        return 200, listen_response(
            wav.samples,
            sample_rate=wav.sample_rate,
            channels=wav.channels,
            query=request.query,
            request_id=request_id,
            words=self.words,
        )

    def _read(self, request: RecordedRequest, request_id: str) -> tuple[int, Message]:
        if request.method != "POST":
            return 405, _error("METHOD_NOT_ALLOWED", f"{request.method} is not allowed here.")
        if not self._authorized(request.headers.get("authorization")):
            return 401, _error("INVALID_AUTH", "Invalid credentials.")
        if self.read_fail_status is not None and self.read_fail_count != 0:
            if self.read_fail_count is not None:
                self.read_fail_count -= 1
            return self.read_fail_status, _error("INJECTED_FAULT", "Failed by FakeDeepgramBatch.read_fail_status.")
        text = _text_of(request.body)
        if text is None:
            return 400, _error("Bad Request", 'the body must be JSON with some text: {"text": ...}')
        if request.option("language") not in {"en", None}:
            return 400, _error("Bad Request", "text intelligence supports English only")
        return 200, read_response(text, request.query, request_id)

    def _projects(self, request: RecordedRequest) -> tuple[int, Message]:
        # https://developers.deepgram.com/reference/manage/projects/list: 200 with the key's projects, or 401.
        if request.method != "GET":
            return 405, _error("METHOD_NOT_ALLOWED", f"{request.method} is not allowed here.")
        if not self._authorized(request.headers.get("authorization")):
            return 401, _error("INVALID_AUTH", "Invalid credentials.")
        return 200, {"projects": [{"project_id": PROJECT_ID, "name": self.project_name}]}

    def _take_failure(self) -> int | None:
        if self.fail_status is None or self.fail_count == 0:
            return None
        if self.fail_count is not None:
            self.fail_count -= 1
        return self.fail_status

    def _authorized(self, authorization: str | None) -> bool:
        if authorization is None or "\n" in authorization:  # none, or ambiguous repeats (joined below)
            return False
        scheme, _, credential = authorization.partition(" ")
        return scheme.lower() in {"token", "bearer"} and bool(credential) and self.api_key in {None, credential}


def _error(code: str, message: str) -> Message:
    # The shape of Deepgram's REST errors (request_id is added when answering).
    return {"err_code": code, "err_msg": message}


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest:
    line = (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n")
    method, target, version = [*line.split(" "), "", ""][:3]
    if not version.startswith("HTTP/1."):
        raise _BadRequest(line)
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        header = (await reader.readuntil(b"\r\n")).decode("latin-1").rstrip("\r\n")
        if not header:
            break
        name, _, value = header.partition(":")
        key = name.strip().lower()
        # A repeated header is kept with its values on separate lines, so an auth check can refuse it.
        headers[key] = f"{headers[key]}\n{value.strip()}" if key in headers else value.strip()
    else:
        raise _BadRequest("too many header lines")
    if "chunked" in headers.get("transfer-encoding", ""):
        raise _BadRequest("chunked bodies are not supported by the fake")
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    return RecordedRequest(method=method, path=url.path, query=query, headers=headers, body=body)


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: Message, request_id: str, headers: dict[str, str]
) -> None:
    if status != 200:
        body = {**body, "request_id": request_id}
    data = json.dumps(body).encode()
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"dg-request-id: {request_id}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + data)
    await writer.drain()


@contextlib.asynccontextmanager
async def silent_api() -> AsyncIterator[str]:
    """A pre-recorded API that takes the request and never answers: the first process stays mid-claim."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes (it is killed)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
