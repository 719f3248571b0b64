"""End to end: a simulated two-sided call lands in the database, is served by /api, and reaches a webhook."""

from __future__ import annotations

from typing import Any

import httpx

from service.simulator.client import simulate_call
from service.simulator.messages import CallSpec
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.databases import database_url, migrated_url
from tests.helpers.fakes.deepgram_server import FakeDeepgram, expected_words
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service
from tests.helpers.waiting import eventually
from tests.helpers.webhooks import SECRET, Clock, Receiver, serving

__all__ = ["database_url", "migrated_url"]  # fixtures: SQLite and PostgreSQL

API_TOKEN = "api-t0ken"


async def wait_for_transcript(client: httpx.AsyncClient, url: str, call_sid: str, words: int) -> list[dict[str, Any]]:
    """The stored transcript once it holds `words` words (the writer runs beside the call)."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}

    async def stored() -> list[dict[str, Any]] | None:
        response = await client.get(f"{url}/api/calls/{call_sid}/transcript", headers=headers)
        if response.status_code == 200 and sum(len(u["text"].split()) for u in response.json()) >= words:
            return list(response.json())
        return None

    return await eventually(stored, timeout=10, interval=0.05)


async def test_a_both_sides_call_is_stored_served_and_delivered(
    deepgram: FakeDeepgram, log_lines: LogLines, migrated_url: str, tmp_path: Any
) -> None:
    """Caller and agent, labelled, in order, in the database; /api serves it; the webhook gets every event once."""
    caller, agent = call_audio(301, 2.0), call_audio(302, 1.0)
    spec = CallSpec(inbound=caller, outbound=agent, speed=0)
    receiver = Receiver(Clock.real())
    async with serving(receiver) as hook_url:
        settings = make_settings(
            deepgram, stream_track="both_tracks", database_url=migrated_url, api_token=API_TOKEN,
            transcript_webhook_url=hook_url, webhook_secret=SECRET, db_journal_path=tmp_path / "journal.jsonl",
        )  # fmt: skip
        async with running_service(settings) as service, httpx.AsyncClient() as client:
            await simulate_call(service.url, spec, auth_token=TWILIO_TOKEN)
            total = len(expected_words(caller)) + len(expected_words(agent))
            transcript = await wait_for_transcript(client, service.url, spec.call_sid, total)
            # call.completed is committed with the call's end: after it, the stored call is complete. It may be
            # delivered before the last utterance.final (committed in one batch, they sort by event id): wait for all.
            await receiver.wait_for("call.completed")
            await eventually(lambda: len(receiver.accepted) >= len(transcript) + 1)
            call = (
                await client.get(
                    f"{service.url}/api/calls/{spec.call_sid}", headers={"Authorization": f"Bearer {API_TOKEN}"}
                )
            ).json()

    by_speaker = {
        speaker: [w for u in transcript if u["speaker"] == speaker for w in u["text"].split()]
        for speaker in ("caller", "agent")
    }
    assert by_speaker == {"caller": expected_words(caller), "agent": expected_words(agent)}
    assert [u["start"] for u in transcript] == sorted(u["start"] for u in transcript)
    assert {u["source"] for u in transcript} == {"live"}
    assert (call["status"], call["from_number"], call["tracks"]) == (
        "completed",
        spec.from_number,
        ["inbound", "outbound"],
    )
    ids = [event["id"] for event in receiver.accepted]
    assert len(ids) == len(set(ids)) == len(transcript) + 1
    [completed] = [event for event in receiver.accepted if event["type"] == "call.completed"]
    assert len(completed["data"]["transcript"]) == len(transcript)
