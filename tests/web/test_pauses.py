"""`POST /api/calls/{sid}/pause` and `/resume` through ASGI, every answer held to the OpenAPI document: the body
checked field by field, the call checked, 200 once the process holding the call applied it (with where), 202 while
none has, idempotent, audited with who asked and from where."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.storage.audit import audit_entries
from service.storage.controls import DatabaseControls
from service.web import pauses
from service.web.pauses import BadBody, PauseBody, parse_body
from tests.helpers.callsdb import insert, make_call
from tests.web.test_api import AUTH, ApiClient, engine, error, serve_api

__all__ = ["engine"]  # fixture: a migrated SQLite database


@pytest.mark.parametrize(
    ("raw", "pausing", "body"),
    [
        (b"", True, PauseBody()),
        (b"  \n", False, PauseBody()),
        (b"{}", True, PauseBody()),
        (b'{"by": "agent-7"}', False, PauseBody(by="agent-7")),
        (b'{"by": "agent-7", "max_s": 90}', True, PauseBody(by="agent-7", max_s=90.0)),
        (b'{"max_s": 1.5}', True, PauseBody(max_s=1.5)),
    ],
)
def test_a_body_is_optional_json_naming_who_and_for_how_long(raw: bytes, pausing: bool, body: PauseBody) -> None:
    assert parse_body(raw, pausing=pausing) == body


@pytest.mark.parametrize(
    ("raw", "pausing", "field"),
    [
        (b"by=agent", True, "body"),
        (b"[1]", True, "body"),
        (b'"agent"', True, "body"),
        (b"\xff\xfe", True, "body"),
        (b'{"who": "x"}', True, "who"),
        (b'{"max_s": 10}', False, "max_s"),  # a resume has no length
        (b'{"by": ""}', True, "by"),
        (b'{"by": 7}', True, "by"),
        (b'{"by": "tab\\there"}', True, "by"),
        (b'{"by": "' + b"x" * 129 + b'"}', True, "by"),
        (b'{"max_s": 0}', True, "max_s"),
        (b'{"max_s": 14401}', True, "max_s"),
        (b'{"max_s": true}', True, "max_s"),
        (b'{"max_s": "60"}', True, "max_s"),
        (b'{"max_s": NaN}', True, "max_s"),
        (b'{"max_s": Infinity}', True, "max_s"),
    ],
)
def test_a_body_we_cannot_use_names_its_field(raw: bytes, pausing: bool, field: str) -> None:
    with pytest.raises(BadBody) as refused:
        parse_body(raw, pausing=pausing)
    assert refused.value.field == field


@pytest.fixture
async def api(engine: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ApiClient]:
    """The API over a database holding CA1 (ended) and CA2 (in progress); a short wait for the holding process."""
    monkeypatch.setattr(pauses, "CONFIRM_S", 0.2)
    await insert(engine, [make_call("CA1"), make_call("CA2", status="active", ended_at=None, ended_by=None)])
    async with serve_api("t0ken", engine) as client:
        yield client


async def post(api: ApiClient, path: str, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    return await api.client.post(path, json=body, headers=AUTH, **kwargs)


async def holding(api: ApiClient, at_s: float) -> None:
    """The process holding CA2's stream: applies each version it reads, at `at_s`."""
    held = DatabaseControls(lambda: api.engine)
    applied = 0
    while True:
        for control in await held.of_calls(["CA2"]):
            if control.version > applied:
                applied = control.version
                await held.applied("CA2", control.version, at_s)
        await asyncio.sleep(0.01)


async def test_a_pause_applied_where_the_call_is_answers_200_with_where(api: ApiClient) -> None:
    holder = asyncio.create_task(holding(api, 12.345))
    try:
        response = await post(api, "/api/calls/CA2/pause", {"by": "agent-7", "max_s": 60})
        again = await post(api, "/api/calls/CA2/pause")
        resumed = await post(api, "/api/calls/CA2/resume", {"by": "agent-8"})
    finally:
        holder.cancel()
    assert response.status_code == 200
    body = response.json()
    assert (body["paused"], body["changed"], body["applied"], body["at_s"], body["version"]) == (
        True,
        True,
        True,
        12.35,
        1,
    )
    assert body["changed_by"] == "agent-7"
    assert body["resume_at"] is not None
    assert (again.status_code, again.json()["changed"], again.json()["version"]) == (200, False, 1)
    assert resumed.status_code == 200
    assert (resumed.json()["paused"], resumed.json()["version"], resumed.json()["resume_at"]) == (False, 2, None)
    entries = await audit_entries(api.engine, subject="CA2")
    assert [(entry.action, entry.actor, entry.via) for entry in entries] == [
        ("resume", "agent-8", "api 127.0.0.1"),
        ("pause", "agent-7", "api 127.0.0.1"),
    ]


async def test_a_pause_no_process_has_applied_yet_answers_202_and_the_default_maximum(api: ApiClient) -> None:
    response = await post(api, "/api/calls/CA2/pause")
    assert response.status_code == 202
    body = response.json()
    assert (body["paused"], body["applied"], body["at_s"], body["changed_by"]) == (True, False, None, "api")
    # TRANSCRIPTION_PAUSE_MAX_S (300 s) when the request names no maximum
    [entry] = await audit_entries(api.engine)
    assert entry.detail == {"version": 1, "max_s": 300.0}


async def test_resuming_a_call_never_paused_is_a_200_that_changes_nothing(api: ApiClient) -> None:
    response = await post(api, "/api/calls/CA2/resume")
    assert response.status_code == 200
    assert (response.json()["changed"], response.json()["version"], response.json()["paused"]) == (False, 0, False)
    assert await audit_entries(api.engine) == []


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/api/calls/CA9/pause", 404, "not_found"),
    ("/api/calls/CA1/pause", 409, "call_ended"),
    ("/api/calls/CA1/resume", 409, "call_ended"),
])  # fmt: skip
async def test_only_a_call_in_progress_can_be_paused(api: ApiClient, path: str, status: int, code: str) -> None:
    response = await post(api, path)
    assert response.status_code == status
    assert error(response)["error"] == code
    assert await audit_entries(api.engine) == []


async def test_a_bad_body_or_parameter_is_a_400_naming_it(api: ApiClient) -> None:
    response = await post(api, "/api/calls/CA2/pause", {"max_s": 0})
    assert (response.status_code, error(response)["parameter"]) == (400, "max_s")
    response = await api.raw.post("/api/calls/CA2/pause", params={"max_s": "60"}, headers=AUTH)
    assert (response.status_code, error(response)["parameter"]) == (400, "max_s")
    assert await audit_entries(api.engine) == []


async def test_without_the_token_nothing_is_paused(api: ApiClient) -> None:
    response = await api.client.post("/api/calls/CA2/pause")
    assert response.status_code == 401
    assert await audit_entries(api.engine) == []
