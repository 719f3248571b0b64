"""Hand-over at SIGTERM: two real service processes (the Procfile's web line) on one database, Twilio's REST API
and its Media Streams played by the stand-ins, SIGTERM to the first in the middle of a word, as Heroku sends it.

The fake Deepgram hears one word per 0.5 s window of a connection's audio, so the old and the new stream, whose
audio starts at different points of the call, hear different "words" where they overlap. "Every word once" is
then: the words kept are exactly the old stream's before the cut and the new stream's from the cut on, placed on
the call's timeline; they follow each other without a gap or an overlap longer than one window (and the placement's
error); and they cover the call from its first audio to its last.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.storage import migrate, queries
from service.storage.schema import create_engine
from tests.helpers.connections import FLUX, Layout
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.databases import dialect_of, shared_database
from tests.helpers.fakes.deepgram_server import FakeDeepgram, RecordedConnection, expected_words
from tests.helpers.fakes.twilio_call import LiveCall
from tests.helpers.fakes.twilio_rest import ACCOUNT_SID, API_KEY_SECRET, API_KEY_SID, FakeTwilioRest
from tests.helpers.processes import start_web
from tests.helpers.sse import FeedReader
from tests.helpers.twilio_stream import TRACK_SETTINGS
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

PUBLIC_URL = "https://callscribe.test"  # the host Twilio is given; the router below maps it to a process
CALL_S = 8.0
SIGTERM_AT_BYTES = 18_000  # 2.25 s into the call: the middle of the fake's fifth 0.5 s word
WINDOW_S = 0.5  # the fake Deepgram's word length
API_TOKEN = "handover-t0ken"  # for the first process's live feed
PER_TRACK = Layout("per_track")  # the call's inbound track alone, as Twilio's default <Stream> sends it
PLACEMENT_S = 0.25  # how far from the audio's true offset a stream may be placed (the two starts' delays differ)


@dataclass
class Router:
    """Heroku's router: a connection to the public host goes to the process `target` names (a dyno that got
    SIGTERM gets no new connections)."""

    target: str

    def __call__(self, url: str) -> str:
        assert url == f"wss://{PUBLIC_URL.removeprefix('https://')}/media", url
        return self.target.replace("http://", "ws://") + "/media"


@dataclass
class Setup:
    rest: FakeTwilioRest
    receiver: Receiver
    env: dict[str, str]
    database_url: str


@pytest.fixture
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    receiver = Receiver(Clock.real())
    with FakeTwilioRest() as rest:
        async with serving(receiver) as hook, shared_database(getattr(request, "param", "sqlite"), tmp_path) as url:
            if dialect_of(url) == "postgresql":
                await migrate.upgrade(url)  # as the release phase would; a SQLite file, the first process migrates
            env = {
                "TWILIO_ACCOUNT_SID": rest.account_sid, "TWILIO_API_KEY_SID": API_KEY_SID,
                "TWILIO_API_KEY_SECRET": API_KEY_SECRET, "TWILIO_API_URL": rest.url, "PUBLIC_URL": PUBLIC_URL,
                "DATABASE_URL": url, "TRANSCRIPT_WEBHOOK_URL": hook, "WEBHOOK_SECRET": SECRET,
                "HANDOVER_TIMEOUT_S": "4", "API_TOKEN": API_TOKEN,
            }  # fmt: skip
            yield Setup(rest, receiver, env, url)


async def start(deepgram: FakeDeepgram, directory: Path, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    directory.mkdir()  # noqa: ASYNC240 - once, before the process starts
    return await start_web(deepgram, directory, **env, DB_JOURNAL_PATH=str(directory / "journal.jsonl"))


async def stop(process: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    """SIGTERM, as Heroku sends it to every process of the dyno; the process's JSON log lines once it exited 0."""
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=40)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


def events(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == name]


def final_words_logged(lines: list[dict[str, Any]], track: str = "inbound") -> list[str]:
    finals = [line for line in events(lines, "transcript") if line["is_final"] and line["track"] == track]
    return [word for line in finals for word in line["text"].split()]


def words_heard(connection: RecordedConnection, offset_s: float, channel: int = 0) -> list[tuple[str, float, float]]:
    """Every word of the connection's finals on `channel`, on the call's timeline (the connection starts
    `offset_s` into it)."""
    return [
        (word["word"], word["start"] + offset_s, word["end"] + offset_s)
        for final in connection.finals()
        if final.get("channel_index", [0])[0] == channel  # Flux's turns (one channel) name none
        for word in (final["words"] if "words" in final else final["channel"]["alternatives"][0]["words"])
    ]


def mid(word: tuple[str, float, float]) -> float:
    return (word[1] + word[2]) / 2


async def place_call(setup: Setup, a_url: str, router: Router, layout: Layout = PER_TRACK) -> LiveCall:
    spec = layout.spec(140, CALL_S, account_sid=ACCOUNT_SID)
    call = setup.rest.add_call(LiveCall(spec, auth_token=TWILIO_TOKEN, route=router))
    await call.place(a_url, f"{PUBLIC_URL}/voice")
    return call


@pytest.mark.parametrize(
    ("setup", "layout"),
    [("sqlite", PER_TRACK), ("postgresql", PER_TRACK), ("sqlite", Layout("per_call")), ("sqlite", FLUX)],
    ids=["sqlite", "postgresql", "sqlite-per_call", "sqlite-flux"],
    indirect=["setup"],
)
async def test_sigterm_hands_the_call_to_the_other_process_and_every_word_arrives_once(
    deepgram: FakeDeepgram, tmp_path: Path, setup: Setup, layout: Layout
) -> None:
    """SIGTERM to the first of two processes mid-word: the call moves to the second through a REST-started stream,
    and every word of each track is logged, stored and delivered once, in order, with increasing times, as one
    handed-over call (per_call: both tracks over one multichannel connection in each process)."""
    env = {**setup.env, **layout.env()}
    a, a_url = await start(deepgram, tmp_path / "a", env)
    b, b_url = await start(deepgram, tmp_path / "b", env)
    router = Router(a_url)
    feed = FeedReader(a_url, headers={"Authorization": f"Bearer {API_TOKEN}"})
    await feed.__aenter__()
    call = await place_call(setup, a_url, router, layout)
    await deepgram.wait_for_connections(1)
    await eventually(lambda: len(deepgram.connections[0].audio) >= SIGTERM_AT_BYTES * layout.channels)
    router.target = b_url
    a_lines = await stop(a)
    await eventually(lambda: feed.ended)  # the first process's feed ends with it
    await feed.close()
    await call.wait(timeout=CALL_S + 20)
    await setup.receiver.wait_for("call.completed", timeout=20)
    b_lines = await stop(b)

    # Twilio's side: a second stream was asked for with the hand-over token, opened on B from where the call was.
    [create] = [request for request in setup.rest.stream_requests() if "Url" in request.form]
    assert (create.username, create.form["Url"], create.form["Track"]) == (
        API_KEY_SID, ["wss://callscribe.test/media"], [TRACK_SETTINGS[layout.tracks]],
    )  # fmt: skip
    parameters = {create.form[f"Parameter{n}.Name"][0]: create.form[f"Parameter{n}.Value"][0] for n in range(1, 5)}
    assert parameters.pop("callscribe_token").startswith("v2.handover.")  # the purpose /voice never issues
    assert parameters == {"from": call.spec.from_number, "to": call.spec.to_number, "direction": "inbound"}
    old, new = call.streams
    assert old.status == new.status == "stopped"
    assert new.first_slot is not None
    assert 0 < new.first_slot < len(call.heard(old)) // 160
    [done] = events(a_lines, "handover.done")
    [taking] = events(b_lines, "handover.taking_over")
    cut, offset = done["cut_s"], taking["offset_s"]
    # The wall-clock placement is where the audio really is (to a few ms; a loaded machine's delays allowed for).
    assert abs(offset - new.first_slot * 0.02) < PLACEMENT_S
    assert len(call.heard(old)) / 8000 >= cut + 0.9  # the old stream went on past the cut
    assert [line["ended_by"] for line in events(a_lines, "call.ended")] == ["handed_over"]
    # The first process's live feed says each track was handed over, not that the call ended.
    states = [
        (e.data["track"], e.data["state"])
        for e in feed.events
        if e.event == "call.state" and e.data["call_sid"] == call.spec.call_sid
    ]
    for track in layout.tracks:
        assert [state for of, state in states if of == track] == ["streaming", "handed_over"]
    assert [line["ended_by"] for line in events(b_lines, "call.ended")] == ["stop"]

    # Each track's words: the old stream's before the cut, then the new stream's from it, covering the whole call.
    first, second = deepgram.connections
    expected: dict[str, list[str]] = {}
    for channel, track in enumerate(layout.tracks):
        kept = [w for w in words_heard(first, 0.0, channel) if mid(w) < cut] + [
            w for w in words_heard(second, offset, channel) if mid(w) >= cut
        ]
        expected[track] = [word for word, _, _ in kept]
        assert kept[0][1] == 0.0
        assert abs(kept[-1][2] - CALL_S) < WINDOW_S
        seams = [later[1] - earlier[2] for earlier, later in itertools.pairwise(kept)]
        assert all(abs(seam) < WINDOW_S + PLACEMENT_S for seam in seams)
        # A call on Flux pauses between turns (`turn_audio`: a silent window every 2 s), where words are apart.
        pauses = sum(1 for seam in seams if layout.flux and abs(seam - WINDOW_S) < 0.01)
        assert sum(1 for seam in seams if abs(seam) > 0.01) <= 1 + pauses

        # Logged once, in order: all of the old process's words before any of the new one's.
        assert final_words_logged(a_lines, track) + final_words_logged(b_lines, track) == expected[track]
    last_old = [line["timestamp"] for line in events(a_lines, "transcript") if line["is_final"]][-1]
    first_new = next(line["timestamp"] for line in events(b_lines, "transcript") if line["is_final"])
    assert last_old <= first_new

    # Stored once, in order, one call that says it was handed over.
    engine = create_engine(setup.database_url)
    try:
        utterances = await queries.get_utterances(engine, call.call_sid)
        async with engine.connect() as connection:
            by_arrival = {
                track: list(
                    (
                        await connection.execute(
                            text("SELECT start FROM utterances WHERE track = :track ORDER BY created_at, start"),
                            {"track": track},
                        )
                    ).scalars()
                )
                for track in layout.tracks
            }
            calls = (await connection.execute(text("SELECT call_sid, handed_over, status FROM calls"))).all()
    finally:
        await engine.dispose()
    for track in layout.tracks:
        mine = [u for u in utterances if u.track == track]
        assert [word for u in mine for word in u.text.split()] == expected[track]
        assert by_arrival[track] == sorted(by_arrival[track])
        starts = [word["start"] for u in mine for word in u.words]
        assert starts == sorted(starts)
        assert len(set(starts)) == len(starts)
    assert [(sid, bool(handed_over), status) for sid, handed_over, status in calls] == [
        (call.call_sid, True, "completed")
    ]

    # Delivered once, and one call.completed with the whole transcript. Both processes deliver from the one outbox
    # for a while, so two events can arrive out of order: each says where it is on the call's timeline.
    hooks = setup.receiver.accepted
    assert len({event["id"] for event in hooks}) == len(hooks)
    [completed] = [event for event in hooks if event["type"] == "call.completed"]
    assert completed["data"]["call_sid"] == call.call_sid
    for track in layout.tracks:
        finals = sorted(
            (e["data"] for e in hooks if e["type"] == "utterance.final" and e["data"]["track"] == track),
            key=lambda d: d["start"],
        )
        assert [word for data in finals for word in data["text"].split()] == expected[track]
        transcript = [u for u in completed["data"]["transcript"] if u["track"] == track]
        assert [word for utterance in transcript for word in utterance["text"].split()] == expected[track]


REFUSALS = {
    # case: (what the environment changes, what Twilio's stand-in answers, what the log's `why` says)
    "401": (
        {"TWILIO_API_KEY_SECRET": "not-the-secret"},
        None,
        "Twilio refused to start the stream (HTTP 401, error 20003)",
    ),
    "429": ({}, 429, "Twilio refused to start the stream (HTTP 429, error 20429)"),
    "503": ({}, 503, "Twilio refused to start the stream (HTTP 503"),
    "unreachable": ({"TWILIO_API_URL": "http://127.0.0.1:9"}, None, "Twilio's REST API did not answer"),
    "no other process": ({}, None, "no process let the new stream"),
    "no account SID": ({"TWILIO_ACCOUNT_SID": ""}, None, "TWILIO_ACCOUNT_SID is unset"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_when_no_one_can_take_over_the_call_is_drained_as_before_and_the_log_says_why(
    deepgram: FakeDeepgram, tmp_path: Path, setup: Setup, case: str
) -> None:
    """Twilio's API refusing (401, 429, 5xx) or unreachable, no second process, or no account SID: the stream is
    drained and closed 1001 as without hand-over, every word Deepgram heard is logged and stored, nothing but the
    frames that came after CloseStream spooled, and one line says why this call was not handed over."""
    changes, answer, why = REFUSALS[case]
    setup.rest.streams_answer = answer
    a, a_url = await start(deepgram, tmp_path / "a", {**setup.env, **changes})
    call = await place_call(setup, a_url, Router(a_url))  # the router has no other process to send a stream to
    try:
        await deepgram.wait_for_connections(1)
        await eventually(lambda: len(deepgram.connections[0].audio) >= SIGTERM_AT_BYTES)
        started = asyncio.get_running_loop().time()
        lines = await stop(a)
        assert asyncio.get_running_loop().time() - started < 25  # inside Heroku's 30 s
    finally:
        await call.hang_up()
    [skipped] = events(lines, "handover.skipped")
    assert why in skipped["why"]
    if case == "no other process":  # the stream no one let in is stopped, so no one transcribes it later
        new = call.streams[1]
        # A stopping process takes no new stream: refused at the upgrade, closed 1013 at its start, or cut (1006)
        # as the process exits. Twilio may send a frame before it sees the close; none of it reaches Deepgram.
        assert new.connect_error is not None or new.close_code in {1013, 1006}
        assert new.status == "stopped"
        assert len(deepgram.connections) == 1
        assert [r.form for r in setup.rest.stream_requests()][-1] == {"Status": ["stopped"]}
    assert skipped["call_sid"] == call.call_sid
    assert len(events(lines, "service.handover_off")) == (1 if case == "no account SID" else 0)
    old = call.streams[0]
    assert (old.close_code, old.close_reason) == (1001, "callscribe is restarting")
    [summary] = events(lines, "call.ended")
    assert (summary["ended_by"], summary["words_cut_ms"]) == ("shutdown", 0)
    # Only what Twilio sent after CloseStream, while the stream was closing, is spooled (kept, not lost): on a
    # busy machine a frame or two, never the call.
    assert summary["audio_s_spooled"] <= 0.1
    heard = bytes(deepgram.connections[0].audio)
    assert len(heard) > SIGTERM_AT_BYTES
    assert final_words_logged(lines) == expected_words(heard)
    engine = create_engine(setup.database_url)
    try:
        stored = await eventually(lambda: stored_words(engine, call.call_sid), timeout=10)
        record = await queries.get_call(engine, call.call_sid)
    finally:
        await engine.dispose()
    assert stored == expected_words(heard)
    assert record is not None
    assert (record.status, record.handed_over) == ("completed", False)


async def test_a_call_with_another_fork_has_no_room_for_the_second_stream_and_is_drained(
    deepgram: FakeDeepgram, tmp_path: Path, setup: Setup
) -> None:
    """Twilio's limit of 4 forks per call: a both_tracks call (2) that another application also streams (1) has no
    room for the hand-over's second both_tracks stream (2 more). Twilio refuses it and opens nothing; the call is
    drained as without hand-over, every word of both tracks is logged and stored, and one line says why."""
    layout = Layout("per_call")  # both_tracks, as STREAM_TRACK=both_tracks asks of Twilio
    a, a_url = await start(deepgram, tmp_path / "a", {**setup.env, **layout.env()})
    call = await place_call(setup, a_url, Router(a_url), layout)
    other = setup.rest.add_fork(call)  # say, another application's <Stream> of the caller
    try:
        await deepgram.wait_for_connections(1)
        await eventually(lambda: len(deepgram.connections[0].audio) >= SIGTERM_AT_BYTES * layout.channels)
        lines = await stop(a)
    finally:
        await call.hang_up()
    [skipped] = events(lines, "handover.skipped")
    assert (skipped["call_sid"], skipped["action"]) == (call.call_sid, "draining the stream as without hand-over")
    assert skipped["why"] == (
        "Twilio refused a second stream of the call (HTTP 400, error 31999): a call may have 4 forked streams, one "
        "per track (a both_tracks stream counts 2), and the new both_tracks stream needs 2 while the call already "
        "has at least 3 in use (its callscribe stream and other forks, such as a <Stream> or <Siprec> of your own)"
    )
    [create] = setup.rest.stream_requests()
    assert (create.form["Track"], create.status) == (["both_tracks"], 400)
    [old] = call.streams  # nothing was opened, so nothing is transcribed twice
    assert other.status == "in-progress"
    assert (old.close_code, old.close_reason) == (1001, "callscribe is restarting")
    [summary] = events(lines, "call.ended")
    assert (summary["ended_by"], summary["words_cut_ms"]) == ("shutdown", 0)
    assert summary["audio_s_spooled"] <= 0.1  # only what Twilio sent while the stream was closing
    heard = layout.split(bytes(deepgram.connections[0].audio))
    assert len(heard["inbound"]) > SIGTERM_AT_BYTES
    engine = create_engine(setup.database_url)
    try:
        await eventually(lambda: stored_words(engine, call.call_sid), timeout=10)
        utterances = await queries.get_utterances(engine, call.call_sid)
    finally:
        await engine.dispose()
    for track in layout.tracks:
        assert final_words_logged(lines, track) == expected_words(heard[track])
        stored = [word for u in utterances if u.track == track for word in u.text.split()]
        assert stored == expected_words(heard[track])


async def stored_words(engine: Any, call_sid: str) -> list[str] | None:
    utterances = await queries.get_utterances(engine, call_sid)
    return [word for u in utterances for word in u.text.split()] or None
