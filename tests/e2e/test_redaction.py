"""End to end with REDACT: a caller reads out a card number, in words and in digits, to a Deepgram that does not
redact (the fake ignores `redact`), and the number reaches none of the outputs while the words around it do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.helpers.audio import SILENCE
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.deepgram_server import FakeDeepgram, said
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.sse import FeedReader
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

API_TOKEN = "redact-t0ken"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CARD = "4111111111111111"
CARD_WORDS = ["four", *["one"] * 15]  # the same card, read out digit by digit
# What the caller says: the card in words (the fake ends a final every four words, so it is cut across four), then
# in written groups, then its code. Each word is a window of audio the fake hears as that word.
CALLER = ["my", "card", "number", "is", *CARD_WORDS, "and", "again", "4111", "1111", "1111", "1111",
          "code", "is", "737", "thanks"]  # fmt: skip
AGENT = ["thank", "you", "for", "calling"]
# Anything that could carry the number: its digits, a digit group, the run of spoken digits, the code.
LEAKS = [CARD, "4111", "1111", "one one one", "four one", "737"]
# Log lines not the service's: the libraries' DEBUG lines (SQL with its parameters, which production's INFO does not
# log) and this test's own HTTP client (whose search for "4111" is logged with its URL).
NOT_THE_SERVICES = ("aiosqlite", "httpx", "httpcore")


def spoken(words: list[str]) -> bytes:
    return b"".join(said(word) for word in words) + SILENCE * 4000


def leaks_in(text: str) -> list[str]:
    """The leaks found as words (not inside a longer token: "737" in an object's address is none)."""
    return [leak for leak in LEAKS if re.search(rf"(?<![\w]){re.escape(leak)}(?![\w])", text)]


async def test_a_card_read_out_reaches_no_output(deepgram: FakeDeepgram, log_lines: LogLines, tmp_path: Path) -> None:
    spec = CallSpec(inbound=spoken(CALLER), outbound=spoken(AGENT), speed=0)
    database = tmp_path / "calls.sqlite3"
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url:
        settings = make_settings(
            deepgram, stream_track="both_tracks", redact=("pci", "ssn"), api_token=API_TOKEN,
            database_url=f"sqlite:///{database}", db_journal_path=tmp_path / "journal.jsonl",
            transcript_webhook_url=hook_url, webhook_secret=SECRET,
        )  # fmt: skip
        async with (
            running_service(settings) as service,
            FeedReader(service.url, AUTH) as feed,
            httpx.AsyncClient(base_url=service.url, headers=AUTH) as api,
        ):
            result = await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            assert result.close_code == 1000
            await receiver.wait_for("call.completed")
            [completed] = [event for event in receiver.accepted if event["type"] == "call.completed"]
            await feed.wait_for("call.ended", call_sid=spec.call_sid)
            exports = {
                fmt: (await api.get(f"/api/calls/{spec.call_sid}/transcript", params={"format": fmt})).text
                for fmt in ("json", "text", "srt", "vtt")
            }
            call = (await api.get(f"/api/calls/{spec.call_sid}")).json()
            found_by_card = (await api.get("/api/calls", params={"q": "4111"})).json()
            found_by_words = (await api.get("/api/calls", params={"q": "card number"})).json()
            utterances = len(completed["data"]["transcript"])
            await eventually(lambda: len(receiver.accepted) >= utterances + 1)

    # Deepgram was asked to redact too (it is the fake, which ignores it)
    assert all(connection.query.get("redact") == ["pci", "ssn"] for connection in deepgram.connections)
    caller_text = " ".join(u["text"] for u in completed["data"]["transcript"] if u["speaker"] == "caller")
    # The number ran across several finals (the fake ends one every four words): each final shows its part as one
    # marker, so one card reads as `[card] [card] ...`.
    assert re.sub(r"\[card\]( \[card\])+", "[card]", caller_text) == (
        "my card number is [card] and again [card] code is [cvv] thanks"
    ), "every other word is there, in order, and the number is markers only, each time it was said"
    assert completed["data"]["redacted"] == {"card": 2, "cvv": 1}
    assert " ".join(u["text"] for u in completed["data"]["transcript"] if u["speaker"] == "agent") == " ".join(AGENT)

    outputs: dict[str, str] = {
        "log": "\n".join(str(line) for line in log_lines.all() if line.get("logger") not in NOT_THE_SERVICES),
        "feed": "\n".join(str(event.data) for event in feed.of("transcript")),
        "webhooks": "\n".join(str(event) for event in receiver.accepted),
        "call": str(call),
        **{f"export {fmt}": text for fmt, text in exports.items()},
        "database": _database_files(tmp_path),
    }
    assert {name: leaks_in(text) for name, text in outputs.items() if leaks_in(text)} == {}
    assert [name for name, text in outputs.items() if "[card]" not in text] == ["call"], "the markers are there"
    interims = [e.data["text"] for e in feed.of("transcript") if not e.data["is_final"]]
    assert interims, "interims went through the redactor too"
    assert _ids(found_by_card) == []
    assert _ids(found_by_words) == [spec.call_sid]


def _ids(page: dict[str, Any]) -> list[str]:
    return [call["call_sid"] for call in page["calls"]]


def _database_files(directory: Path) -> str:
    """The SQLite file and its WAL, as bytes read as text: what is stored, however it is stored."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("calls.sqlite3*"))).decode("latin-1")
