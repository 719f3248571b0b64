"""The /api blueprint through ASGI: auth, pagination, filters, formats, errors, deleting, and the OpenAPI document.

Every response a test gets through `ApiClient.get`/`.delete` is validated against service/web/openapi.json with
openapi-core (an httpx response hook), so the document cannot drift from what the API really sends. Only
the tests of undocumented paths and methods use the unvalidated `raw` client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import plain_loads
from openapi_core.exceptions import OpenAPIError
from openapi_core.validation.response.exceptions import MissingData
from openapi_spec_validator import validate as validate_spec
from quart import Quart
from sqlalchemy.ext.asyncio import AsyncEngine
from werkzeug.datastructures import Headers, ImmutableMultiDict, MultiDict

from service.live.format import LiveEvent
from service.live.hub import LiveHub
from service.spool.directory import Spool
from service.storage import queries
from service.storage.schema import AlertRow, CoveragePart, create_engine
from service.web.api import OPENAPI_PATH, BadParameter, api_blueprint, parse_list_query
from service.web.erasing import Eraser
from service.web.live import live_blueprint
from tests.helpers.callsdb import (
    AGENT,
    CALLER,
    T0,
    insert,
    make_call,
    make_database,
    make_delivery,
    make_utterance,
    postgres_database,
    sqlite_file_url,
    two_speaker_utterances,
)
from tests.helpers.logs import LogLines
from tests.helpers.paths import GOLDEN
from tests.helpers.service import make_settings
from tests.helpers.spool import AUDIO, spool_audio

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# openapi-core reads only the media types it knows as text; SubRip and WebVTT are text too.
SPEC = OpenAPI.from_dict(
    json.loads(OPENAPI_PATH.read_text(encoding="utf-8")),
    config=Config(extra_media_type_deserializers={"application/x-subrip": plain_loads, "text/vtt": plain_loads}),
)
MINUTE = datetime.timedelta(minutes=1)


class OpenAPIRequest:
    """An httpx request as openapi-core's Request protocol."""

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(request.url.params.multi_items()), header=Headers(request.headers.multi_items())
        )

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.netloc.decode()}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.request.content or None

    @property
    def content_type(self) -> str:
        return str(self.request.headers.get("content-type", "application/octet-stream")).lower()


class OpenAPIResponse:
    """An httpx response (already read) as openapi-core's Response protocol."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return str(self.response.headers.get("content-type", "")).lower()

    @property
    def headers(self) -> Headers:
        return Headers(self.response.headers.multi_items())

    @property
    def data(self) -> bytes:
        return self.response.content


async def validate_against_spec(response: httpx.Response) -> None:
    """httpx response hook: every response must be one the OpenAPI document describes."""
    await response.aread()
    request = OpenAPIRequest(response.request)
    try:
        SPEC.validate_response(request, OpenAPIResponse(response))
    except MissingData:
        # openapi-core takes an empty body for no body. Only a transcript of nothing said may be empty (text and
        # SRT), and the documented `type: string` allows "".
        if response.content or not response.request.url.path.endswith("/transcript"):
            raise
    if response.is_success:
        SPEC.validate_request(request)  # and a request the API accepted is one the document allows


@dataclass
class ApiClient:
    client: httpx.AsyncClient  # validated against the OpenAPI document
    raw: httpx.AsyncClient  # not validated: for paths and methods the document does not have
    engine: AsyncEngine

    async def get(self, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        headers = {**(AUTH if auth else {}), **kwargs.pop("headers", {})}
        return await self.client.get(path, headers=headers, **kwargs)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(path, headers=AUTH)


def api_app(api_token: str | None, engine: AsyncEngine) -> Quart:
    """A bare Quart app with only the API blueprint, as create_app will register it."""
    app = Quart("api-test")
    app.register_blueprint(api_blueprint(make_settings(None, api_token=api_token), lambda: engine))
    return app


@contextlib.asynccontextmanager
async def serve_api(api_token: str | None, engine: AsyncEngine) -> AsyncIterator[ApiClient]:
    transport = httpx.ASGITransport(app=cast(Any, api_app(api_token, engine)))  # Quart types its ASGI scope closer
    base = "http://callscribe.test"
    async with (
        httpx.AsyncClient(
            transport=transport, base_url=base, event_hooks={"response": [validate_against_spec]}
        ) as client,
        httpx.AsyncClient(transport=transport, base_url=base) as raw,
    ):
        yield ApiClient(client, raw, engine)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = await make_database(tmp_path)
    yield engine
    await engine.dispose()


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[ApiClient]:
    """The API with API_TOKEN set, over a database holding the two-speaker call CA1."""
    await insert(engine, [make_call("CA1"), *two_speaker_utterances("CA1")])
    async with serve_api(TOKEN, engine) as client:
        yield client


def error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


# --- Authentication -------------------------------------------------------------------------------------

ROUTES = [
    "/api/calls",
    "/api/calls/CA1",
    "/api/calls/CA1/transcript",
    "/api/calls/CA1/report",
    "/api/openapi.json",
    "/api/audit",
]


@pytest.mark.parametrize("path", ROUTES)
async def test_without_api_token_every_route_says_the_api_is_off(
    engine: AsyncEngine, log_lines: LogLines, path: str
) -> None:
    """API_TOKEN unset: 503 api_disabled on every route, whatever token is sent, logged as api.refused."""
    async with serve_api(None, engine) as api:
        for response in (await api.get(path), await api.get(path, auth=False), await api.raw.delete(path)):
            assert response.status_code == 503
            assert error(response) == {"error": "api_disabled", "message": "set API_TOKEN to turn the API on"}
    assert len(log_lines.events("api.refused", status=503, error="api_disabled")) == 3


@pytest.mark.parametrize("path", ROUTES)
async def test_a_request_without_a_token_is_refused_with_a_bearer_challenge(
    api: ApiClient, log_lines: LogLines, path: str
) -> None:
    """No Authorization header: 401 unauthorized with `WWW-Authenticate: Bearer`, one api.refused line."""
    response = await api.get(path, auth=False)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert error(response)["error"] == "unauthorized"
    [line] = log_lines.events("api.refused")
    assert (line["status"], line["why"], line["path"]) == (401, "send Authorization: Bearer <API_TOKEN>", path)


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {TOKEN}x", "Bearer t0ke", f"Basic {TOKEN}", "Bearer", TOKEN, "Bearer ünïcode".encode()],
)
async def test_a_wrong_token_or_scheme_is_refused_and_never_logged(
    api: ApiClient, log_lines: LogLines, authorization: str | bytes
) -> None:
    """A wrong token, a prefix of the token, another scheme or no token: 401, and no token in the logs."""
    response = await api.get("/api/calls", auth=False, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert error(response)["error"] == "unauthorized"
    assert len(log_lines.events("api.refused", status=401)) == 1
    assert TOKEN not in log_lines.text()
    assert "t0ke" not in log_lines.text()


async def test_the_right_token_is_let_in_whatever_the_scheme_case(api: ApiClient) -> None:
    """`Bearer <API_TOKEN>` gets 200; the scheme is case-insensitive as RFC 9110 says."""
    assert (await api.get("/api/calls")).status_code == 200
    lower = await api.get("/api/calls", auth=False, headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200


async def test_the_token_is_compared_in_constant_time(api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token check goes through hmac.compare_digest, with the token sent and API_TOKEN as bytes."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert (await api.get("/api/calls", auth=False, headers={"Authorization": "Bearer guess"})).status_code == 401
    assert (await api.get("/api/calls")).status_code == 200
    assert calls == [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


# --- Listing --------------------------------------------------------------------------------------------


async def test_pages_cover_every_call_exactly_once(api: ApiClient) -> None:
    """Following next_cursor 7 at a time through 31 calls (with tied start times) lists each once, newest first."""
    await insert(api.engine, [make_call(f"CB{i:02d}", started_at=T0 + MINUTE * (i // 3)) for i in range(30)])
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 7}
    pages = 0
    while True:
        body = (await api.get("/api/calls", params=params)).json()
        seen += [call["call_sid"] for call in body["calls"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    expected = [f"CB{i:02d}" for i in reversed(range(30))] + ["CA1"]  # CA1 started at T0 and sorts below CB00
    assert seen == expected
    assert pages == 5


async def test_the_default_page_is_fifty_and_two_hundred_is_allowed(api: ApiClient) -> None:
    """Without limit a page holds 50 calls; limit=200 is the largest page."""
    await insert(api.engine, [make_call(f"CB{i:02d}", started_at=T0 + MINUTE * i) for i in range(60)])
    default = (await api.get("/api/calls")).json()
    assert len(default["calls"]) == 50
    assert default["next_cursor"] is not None
    largest = (await api.get("/api/calls", params={"limit": 200})).json()
    assert (len(largest["calls"]), largest["next_cursor"]) == (61, None)


async def test_a_call_is_shown_with_every_field(api: ApiClient) -> None:
    """GET /api/calls/CA1 and its entry in the list are the same object, times in UTC with Z, but for the alerts (the
    list has their count only) and the analysis (all of it in the call's own answer, its summary in the list)."""
    response = await api.get("/api/calls/CA1")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    call = response.json()
    assert call == {
        "call_sid": "CA1", "stream_sid": "MZCA1", "account_sid": "AC0123", "from_number": CALLER,
        "to_number": AGENT, "direction": "inbound", "custom_parameters": {"campaign": "spring"},
        "tracks": ["inbound", "outbound"], "started_at": "2025-01-02T03:04:05Z", "ended_at": "2025-01-02T03:05:40Z",
        "status": "completed", "ended_by": "stop", "deepgram_request_ids": ["req-CA1"],
        "audio_s_inbound": 95.0, "audio_s_outbound": 94.5, "summary": {"finals": 4, "reconnects": 0},
        "handed_over": False, "alert_count": 0, "coverage": None, "alerts": [], "analysis": None,
    }  # fmt: skip
    listed = {name: value for name, value in call.items() if name not in ("alerts", "analysis")}
    listed["analysis_summary"] = None
    assert (await api.get("/api/calls")).json() == {"calls": [listed], "next_cursor": None}


async def test_a_calls_alerts_are_listed_with_it_and_counted_in_the_list(api: ApiClient) -> None:
    """GET /api/calls/CA1 lists its alerts in timeline order (the OpenAPI document's `Alert`s), the list counts
    them, and DELETE takes them with the call."""
    await insert(api.engine, [
        AlertRow(alert_id="b2", call_sid="CA1", rule="cancel", kind="said", speaker="caller", track="inbound",
                 phrase="cancel my account", text="cancel my account.", start=12.5, end=13.75, raised_at=T0),
        AlertRow(alert_id="a1", call_sid="CA1", rule="disclosure", kind="absent", speaker="agent", track="outbound",
                 phrase="", text="", start=0.0, end=30.0, raised_at=T0),
    ])  # fmt: skip
    call = (await api.get("/api/calls/CA1")).json()
    assert call["alert_count"] == 2
    assert call["alerts"] == [
        {"alert_id": "a1", "rule": "disclosure", "kind": "absent", "speaker": "agent", "track": "outbound",
         "phrase": "", "text": "", "start": 0.0, "end": 30.0, "raised_at": "2025-01-02T03:04:05Z"},
        {"alert_id": "b2", "rule": "cancel", "kind": "said", "speaker": "caller", "track": "inbound",
         "phrase": "cancel my account", "text": "cancel my account.", "start": 12.5, "end": 13.75,
         "raised_at": "2025-01-02T03:04:05Z"},
    ]  # fmt: skip
    assert [c["alert_count"] for c in (await api.get("/api/calls")).json()["calls"]] == [2]
    assert (await api.delete("/api/calls/CA1")).status_code == 204
    assert await queries.get_alerts(api.engine, "CA1") == []


async def test_a_calls_report_is_what_call_completed_carries_read_now(api: ApiClient) -> None:
    """GET /api/calls/CA1/report: the call, its transcript in spoken order, its alerts in timeline order, coverage
    and analysis (none stored here: null), valid against `CallCompletedData`; a call that is not there is a 404,
    a parameter a 400."""
    await insert(api.engine, [
        AlertRow(alert_id="a1", call_sid="CA1", rule="cancel", kind="said", speaker="caller", track="inbound",
                 phrase="cancel my account", text="cancel my account.", start=12.5, end=13.75, raised_at=T0),
    ])  # fmt: skip
    report = (await api.get("/api/calls/CA1/report")).json()
    transcript = (await api.get("/api/calls/CA1/transcript")).json()
    assert report["call_sid"] == "CA1"
    assert [(u["speaker"], u["text"]) for u in report["transcript"]] == [(u["speaker"], u["text"]) for u in transcript]
    assert [(a["rule"], a["start"]) for a in report["alerts"]] == [("cancel", 12.5)]
    assert (report["coverage"], report["analysis"], report["redacted"]) == (None, None, {})
    assert (await api.get("/api/calls/CA404/report")).status_code == 404
    assert error(await api.get("/api/calls/CA1/report", params={"format": "json"}))["parameter"] == "format"


async def test_a_calls_coverage_sums_its_streams_in_the_list_and_per_track_on_its_own(api: ApiClient) -> None:
    """Coverage rows of two streams (a hand-over) are one coverage object: its categories, complete or not, the
    missing line; GET /api/calls/CA1 adds each track's, the list leaves them out (both valid against the schema)."""
    now = T0
    await insert(api.engine, [
        CoveragePart(call_sid="CA1", stream_sid=stream, track=track, part=part, category=category, ms=ms,
                     reason=reason, updated_at=now)
        for stream, track, part, category, ms, reason in [
            ("MZ1", "inbound", "live", "live", 4000, ""),
            ("MZ1", "inbound", "lost:chunks_missing", "lost", 400, "chunks_missing"),
            ("MZ2", "inbound", "spool:e1", "waiting", 5100, "DEEPGRAM_API_KEY is not set"),
            ("MZ1", "outbound", "live", "live", 4400, ""),
            ("MZ2", "outbound", "spool:e2", "batch", 5100, ""),
        ]
    ])  # fmt: skip
    detail = (await api.get("/api/calls/CA1")).json()["coverage"]
    assert (detail["complete"], detail["audio_s"], detail["live_s"], detail["batch_s"]) == (False, 19.0, 8.4, 5.1)
    assert detail["missing"] == (
        "5.1 s waiting for batch: DEEPGRAM_API_KEY is not set; 0.4 s lost: gaps in Twilio's chunk numbers"
    )
    assert detail["tracks"]["outbound"]["audio_s"] == 9.5
    assert detail["tracks"]["inbound"]["waiting"] == [{"reason": "DEEPGRAM_API_KEY is not set", "seconds": 5.1}]
    listed_coverage = (await api.get("/api/calls")).json()["calls"][0]["coverage"]
    assert listed_coverage == {name: value for name, value in detail.items() if name != "tracks"}


@pytest.fixture
async def varied(api: ApiClient) -> ApiClient:
    """Four more calls: CB0..CB3 a minute apart, CB3 still active, CB1 and CB2 involving +15550001."""
    await insert(api.engine, [
        make_call("CB0", started_at=T0 + MINUTE),
        make_call("CB1", started_at=T0 + 2 * MINUTE, from_number="+15550001"),
        make_call("CB2", started_at=T0 + 3 * MINUTE, to_number="+15550001"),
        make_call("CB3", started_at=T0 + 4 * MINUTE, status="active", ended_at=None),
    ])  # fmt: skip
    return api


async def listed(api: ApiClient, **params: Any) -> list[str]:
    response = await api.get("/api/calls", params=params)
    assert response.status_code == 200, response.text
    return [call["call_sid"] for call in response.json()["calls"]]


async def test_number_filters_on_either_end_of_the_call(varied: ApiClient) -> None:
    """number=+15550001 lists the call from it and the call to it."""
    assert await listed(varied, number="+15550001") == ["CB2", "CB1"]
    assert await listed(varied, number="+19999999") == []


async def test_since_and_until_take_iso_8601_in_any_offset(varied: ApiClient) -> None:
    """since (inclusive) and until (exclusive) accept Z, offsets, no offset (UTC) and bare dates."""
    assert await listed(varied, since="2025-01-02T03:06:05Z") == ["CB3", "CB2", "CB1"]
    assert await listed(varied, until="2025-01-02T04:06:05+01:00") == ["CB0", "CA1"]
    assert await listed(varied, since="2025-01-02T03:05:05", until="2025-01-02T03:07:05") == ["CB1", "CB0"]
    assert await listed(varied, since="2025-01-02", until="2025-01-03") == ["CB3", "CB2", "CB1", "CB0", "CA1"]
    assert await listed(varied, since="2025-01-03") == []


async def test_active_lists_streaming_or_ended_calls(varied: ApiClient) -> None:
    """active=true: only CB3, still streaming; active=false: every call that ended."""
    assert await listed(varied, active="true") == ["CB3"]
    assert await listed(varied, active="false") == ["CB2", "CB1", "CB0", "CA1"]


async def test_filters_combine_and_hold_across_pages(varied: ApiClient) -> None:
    """number, time and active together, one call per page, still reach every match and no other."""
    params: dict[str, Any] = {"limit": 1, "active": "false", "since": "2025-01-02T03:05:00Z", "number": "+15550001"}
    first = (await varied.get("/api/calls", params=params)).json()
    second = (await varied.get("/api/calls", params={**params, "cursor": first["next_cursor"]})).json()
    assert [c["call_sid"] for c in first["calls"] + second["calls"]] == ["CB2", "CB1"]
    assert second["next_cursor"] is None


# --- Bad parameters -------------------------------------------------------------------------------------

BAD_LIST_QUERIES = [
    ("limit=0", "limit"),
    ("limit=201", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("limit=1.5", "limit"),
    ("limit=%D9%A3", "limit"),  # Arabic-Indic three: a digit to str.isdigit, not to us
    ("limit=5&limit=6", "limit"),
    ("cursor=not-a-cursor", "cursor"),
    ("cursor=eyJzIjogMX0", "cursor"),  # base64 of {"s": 1}
    ("number=", "number"),
    ("number=+14155550100", "number"),  # the + arrived as a space: the client forgot %2B
    ("since=yesterday", "since"),
    ("until=2025-13-01", "until"),
    ("since=2025-01-02&until=2025-01-02", "until"),
    ("since=2025-01-03&until=2025-01-02", "until"),
    ("active=yes", "active"),
    ("active=True", "active"),
    ("activ=true", "activ"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD_LIST_QUERIES)
async def test_every_bad_list_parameter_is_a_400_naming_it(
    api: ApiClient, log_lines: LogLines, query: str, parameter: str
) -> None:
    """Each wrong parameter of GET /api/calls answers 400 bad_request naming it, and logs why."""
    response = await api.get(f"/api/calls?{query}")
    assert response.status_code == 400
    body = error(response)
    assert (body["error"], body["parameter"]) == ("bad_request", parameter)
    assert body["message"]
    [line] = log_lines.events("api.refused", status=400)
    assert (line["parameter"], line["why"]) == (parameter, body["message"])


@pytest.mark.parametrize(
    ("query", "parameter"), [("format=pdf", "format"), ("format=SRT", "format"), ("format=srt&format=vtt", "format"),
                             ("fmt=srt", "fmt")]
)  # fmt: skip
async def test_every_bad_transcript_parameter_is_a_400_naming_it(api: ApiClient, query: str, parameter: str) -> None:
    """An unknown or repeated format, or an unknown parameter, answers 400 naming it."""
    response = await api.get(f"/api/calls/CA1/transcript?{query}")
    assert response.status_code == 400
    assert error(response)["parameter"] == parameter


@pytest.mark.parametrize(
    "path",
    [
        "/api/calls?limit=0",
        "/api/calls?limit=201",
        "/api/calls?limit=ten",
        "/api/calls?number=",
        "/api/calls?active=yes",
        "/api/calls/CA1/transcript?format=pdf",
        f"/api/calls?number=%2B1{'5' * 63}",
        f"/api/calls?since=2025-01-02T03:04:05{'0' * 60}",
        f"/api/calls?cursor={'e' * 161}",
    ],
)
def test_the_document_refuses_what_the_api_refuses(path: str) -> None:
    """Where OpenAPI can say it (ranges, types, enums), openapi-core rejects the requests the API answers 400."""
    request = OpenAPIRequest(httpx.Request("GET", f"http://callscribe.test{path}", headers=AUTH))
    with pytest.raises(OpenAPIError):
        SPEC.validate_request(request)


# --- Transcripts ----------------------------------------------------------------------------------------

FORMATS = [
    ("json", "application/json", "two_speakers.json"),
    ("text", "text/plain; charset=utf-8", "two_speakers.txt"),
    ("srt", "application/x-subrip; charset=utf-8", "two_speakers.srt"),
    ("vtt", "text/vtt; charset=utf-8", "two_speakers.vtt"),
]


@pytest.mark.parametrize(("fmt", "content_type", "golden"), FORMATS)
async def test_each_format_by_query_is_its_golden_file(
    api: ApiClient, fmt: str, content_type: str, golden: str
) -> None:
    """?format= gives the golden file byte for byte, with its content type, Vary: Accept and no-store."""
    response = await api.get("/api/calls/CA1/transcript", params={"format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["vary"] == "Accept"
    assert response.headers["cache-control"] == "no-store"
    assert response.content == (GOLDEN / golden).read_bytes()


@pytest.mark.parametrize(("fmt", "content_type", "golden"), FORMATS)
async def test_each_format_by_accept_header_is_its_golden_file(
    api: ApiClient, fmt: str, content_type: str, golden: str
) -> None:
    """Accept: application/json, text/plain, application/x-subrip or text/vtt picks the format."""
    accept = content_type.split(";", maxsplit=1)[0]
    response = await api.get("/api/calls/CA1/transcript", headers={"Accept": accept})
    assert (response.status_code, response.headers["content-type"]) == (200, content_type), fmt
    assert response.content == (GOLDEN / golden).read_bytes()


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/*", "text/plain; charset=utf-8"),
        ("text/vtt;q=0.5, application/x-subrip", "application/x-subrip; charset=utf-8"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),  # what a browser sends
    ],
)
async def test_accept_negotiation_prefers_quality_then_json(
    api: ApiClient, accept: str | None, content_type: str
) -> None:
    """No Accept or */* gives JSON; wildcards and q-values pick the best format we have."""
    headers = {} if accept is None else {"Accept": accept}
    response = await api.get("/api/calls/CA1/transcript", headers=headers)
    assert response.headers["content-type"] == content_type


async def test_format_parameter_wins_over_accept(api: ApiClient) -> None:
    """?format=srt with Accept: text/vtt gives SRT."""
    response = await api.get("/api/calls/CA1/transcript?format=srt", headers={"Accept": "text/vtt"})
    assert response.headers["content-type"] == "application/x-subrip; charset=utf-8"


async def test_an_accept_header_naming_no_format_is_406(api: ApiClient, log_lines: LogLines) -> None:
    """Accept: application/pdf alone: 406 not_acceptable, in JSON, pointing at ?format=."""
    response = await api.get("/api/calls/CA1/transcript", headers={"Accept": "application/pdf"})
    assert response.status_code == 406
    assert error(response)["error"] == "not_acceptable"
    assert "?format=" in error(response)["message"]
    assert log_lines.events("api.refused", status=406)


async def test_a_call_without_utterances_has_an_empty_transcript(api: ApiClient) -> None:
    """A call that said nothing: 200 with [] / empty text / empty SRT / a bare WEBVTT header."""
    await insert(api.engine, [make_call("CAquiet", started_at=T0 - MINUTE)])
    bodies = {
        fmt: (await api.get(f"/api/calls/CAquiet/transcript?format={fmt}")).text
        for fmt in ("json", "text", "srt", "vtt")
    }
    assert bodies == {"json": "[]\n", "text": "", "srt": "", "vtt": "WEBVTT\n"}


# --- Not found and deleting -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "transcript", "delete"])
async def test_an_unknown_call_is_404_in_json(api: ApiClient, log_lines: LogLines, method: str) -> None:
    """GET, transcript and DELETE of a call that does not exist: 404 not_found naming it."""
    if method == "delete":
        response = await api.delete("/api/calls/CAnope")
    else:
        response = await api.get("/api/calls/CAnope" + ("/transcript" if method == "transcript" else ""))
    assert response.status_code == 404
    assert error(response) == {"error": "not_found", "message": "no call CAnope"}
    assert log_lines.events("api.refused", status=404)


async def test_delete_removes_the_call_and_its_utterances(api: ApiClient, log_lines: LogLines) -> None:
    """DELETE gives 204 with no body; afterwards the call is 404, its utterances and deliveries are gone."""
    await insert(api.engine, [
        make_call("CA2", started_at=T0 - MINUTE), make_utterance("CA2", "inbound", 0.0, 1.0, "stays"),
        make_delivery("CA1", "CA1/final/1"),
    ])  # fmt: skip
    response = await api.delete("/api/calls/CA1")
    assert (response.status_code, response.content) == (204, b"")
    assert "content-type" not in response.headers
    assert (await api.get("/api/calls/CA1")).status_code == 404
    assert (await api.get("/api/calls/CA1/transcript")).status_code == 404
    assert await queries.get_utterances(api.engine, "CA1") == []
    assert len(await queries.get_utterances(api.engine, "CA2")) == 1
    assert (await api.delete("/api/calls/CA1")).status_code == 404
    assert log_lines.events("api.call_deleted", call_sid="CA1")


# --- Erasing on request -----------------------------------------------------------------------------------

ENCODED_CALLER = "%2B" + CALLER.removeprefix("+")


async def test_erasing_a_number_answers_its_counts_and_is_safe_to_repeat(api: ApiClient, log_lines: LogLines) -> None:
    """Every call from or to the number goes, the answer counts each kind (the number masked), a call of another
    number stays; the second time every count is 0, still 200; each request has its audit entry and log line, with
    the number's last two digits only."""
    await insert(api.engine, [
        make_call("CA2", from_number="+14155550111", to_number="+14155550122", started_at=T0 - MINUTE),
        make_utterance("CA2", "inbound", 0.0, 1.0, "stays"), make_delivery("CA1", "CA1/final/1"),
    ])  # fmt: skip
    response = await api.client.delete(f"/api/numbers/{ENCODED_CALLER}", params={"by": "dpo"}, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["subject"] == "+*********00"
    assert body["in_progress"] == []
    assert body["message"] == "erased 1 call to or from +*********00"
    assert {kind: n for kind, n in body["counts"].items() if n} == {
        "calls": 1,
        "utterances": 4,
        "webhook_deliveries": 1,
    }
    assert (await api.get("/api/calls", params={"number": CALLER})).json()["calls"] == []
    assert [call["call_sid"] for call in (await api.get("/api/calls")).json()["calls"]] == ["CA2"]
    again = await api.client.delete(f"/api/numbers/{ENCODED_CALLER}", headers=AUTH)
    assert again.status_code == 200
    assert set(again.json()["counts"].values()) == {0}
    entries = (await api.get("/api/audit")).json()["entries"]
    assert [(e["action"], e["actor"], e["subject"]) for e in entries] == [
        ("erase_number", "api", "+*********00"),
        ("erase_number", "dpo", "+*********00"),
    ]
    assert entries[1]["via"].startswith("api ")
    assert entries[1]["detail"] == {**body["counts"], "in_progress": 0}
    # The service's own lines (the libraries' DEBUG lines, such as the test client's URL, are not production's).
    ours = [line for line in log_lines.all() if str(line.get("logger", "callscribe")).startswith("callscribe")]
    assert ours
    assert CALLER.removeprefix("+")[:-2] not in json.dumps(ours)
    assert len(log_lines.events("audit", action="erase_number")) == 2


async def test_a_call_still_on_is_not_erased_and_the_answer_says_so(api: ApiClient) -> None:
    await insert(api.engine, [make_call("CAon", status="active", ended_at=None, started_at=T0 + MINUTE)])
    body = (await api.client.delete(f"/api/numbers/{ENCODED_CALLER}", headers=AUTH)).json()
    assert (body["counts"]["calls"], body["in_progress"]) == (1, ["CAon"])
    assert "1 still on, not erased" in body["message"]
    assert (await api.get("/api/calls/CAon")).status_code == 200


@pytest.mark.parametrize(
    ("path", "parameter", "message"),
    [
        ("/api/numbers/%2B1%20415%20555%200100", "number", "digits with an optional leading +"),
        ("/api/numbers/%2014155550100", "number", "starts or ends with a space"),
        ("/api/numbers/client:alice", "number", "digits with an optional leading +"),
        ("/api/numbers/%2B12", "number", "has 2 digits"),
        ("/api/numbers/%2B1234567890123456", "number", "has 16 digits"),
        (f"/api/numbers/{ENCODED_CALLER}?who=me", "who", "unknown parameter"),
        (f"/api/numbers/{ENCODED_CALLER}?by=", "by", "printable characters"),
    ],
)
async def test_a_number_that_cannot_be_erased_by_is_a_400_saying_why(
    api: ApiClient, log_lines: LogLines, path: str, parameter: str, message: str
) -> None:
    """Nothing is erased, the answer names what is wrong, and its log line masks the number in the path."""
    response = await api.raw.delete(path, headers=AUTH)
    assert response.status_code == 400
    assert error(response)["parameter"] == parameter
    assert message in error(response)["message"]
    [refused] = log_lines.events("api.refused", status=400)
    assert "4155550" not in refused["path"]
    assert await queries.get_call(api.engine, "CA1") is not None


async def test_erasing_a_number_needs_the_token(api: ApiClient) -> None:
    response = await api.raw.delete(f"/api/numbers/{ENCODED_CALLER}")
    assert response.status_code == 401
    assert await queries.get_call(api.engine, "CA1") is not None


async def test_deleting_a_call_is_audited_with_who_asked(api: ApiClient) -> None:
    assert (await api.client.delete("/api/calls/CA1", params={"by": "agent-7"}, headers=AUTH)).status_code == 204
    [entry] = (await api.get("/api/audit", params={"subject": "CA1"})).json()["entries"]
    assert (entry["action"], entry["actor"], entry["subject"]) == ("delete_call", "agent-7", "CA1")
    assert entry["detail"]["utterances"] == 4
    assert (await api.get("/api/audit", params={"subject": "CAother"})).json()["entries"] == []


@pytest.mark.parametrize(
    ("query", "parameter"), [({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"since": "x"}, "since")]
)
async def test_the_audit_log_refuses_what_it_does_not_take(
    api: ApiClient, query: dict[str, str], parameter: str
) -> None:
    response = await api.raw.get("/api/audit", params=query, headers=AUTH)
    assert response.status_code == 400
    assert error(response)["parameter"] == parameter


async def test_an_erasure_reaches_the_process_feed_and_spool(engine: AsyncEngine, tmp_path: Path) -> None:
    """With the process's parts (as the runtime hands them over), the number's events leave the replay buffer and
    its spool entries the disk, counted in the answer; another call's stay."""
    await insert(engine, [make_call("CA1"), make_call("CA2", from_number="+14155550111")])
    hub = LiveHub(window_s=60, max_events=100, queue_bound=10, max_subscribers=10, floor=(0, 0))
    for n, call_sid in enumerate(["CA1", "CA2", "CA1"]):
        hub.deliver(LiveEvent((10 + n, 0), "call.state", call_sid, 0.0, data=b"{}"))
    spool_audio(tmp_path / "spool", AUDIO, start_s=0.0, call_sid="CA1")
    spool_audio(tmp_path / "spool", AUDIO, start_s=0.0, call_sid="CA2")
    eraser = Eraser(lambda: engine, spool=Spool(tmp_path / "spool"), hub=hub)
    app = Quart("api-test")
    app.register_blueprint(api_blueprint(make_settings(None, api_token=TOKEN), lambda: engine, eraser))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cast(Any, app)), base_url="http://callscribe.test"
    ) as client:
        response = await client.delete(f"/api/numbers/{ENCODED_CALLER}", headers=AUTH)
    counts = response.json()["counts"]
    assert (counts["calls"], counts["live_events"], counts["spool_local"]) == (1, 2, 1)
    assert [event.call_sid for event in hub.buffer.after((0, 0)).events] == ["CA2"]
    assert [entry.call_sid for entry in Spool(tmp_path / "spool").entries()] == ["CA2"]


# --- The document, undocumented paths, failures ---------------------------------------------------------


async def test_the_openapi_document_is_served_and_valid(api: ApiClient) -> None:
    """GET /api/openapi.json returns service/web/openapi.json, a valid OpenAPI 3.1 document."""
    response = await api.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document == json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    assert document["openapi"] == "3.1.0"
    validate_spec(document)


async def test_the_document_covers_every_route_the_blueprint_has(engine: AsyncEngine) -> None:
    """Every route and method the blueprints serve (the API's and the live feed's) is a documented operation, and
    nothing more is documented."""
    app = api_app(TOKEN, engine)
    hub = LiveHub(window_s=10, max_events=10, queue_bound=1, max_subscribers=1, floor=(0, 0))
    app.register_blueprint(live_blueprint(make_settings(None), lambda: hub, lambda: asyncio.sleep(0)))
    served = {
        (rule.rule.replace("<call_sid>", "{call_sid}").replace("<number>", "{number}"), method.lower())
        for rule in app.url_map.iter_rules() if rule.endpoint.startswith(("api.", "live."))
        for method in rule.methods or () if method not in {"HEAD", "OPTIONS"}
    }  # fmt: skip
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    documented = {
        (path, method) for path, item in document["paths"].items() for method in item if method != "parameters"
    }
    assert served == documented


async def test_unknown_paths_and_methods_answer_json_after_authenticating(api: ApiClient) -> None:
    """/api/nope is a JSON 404 and POST /api/calls a JSON 405, but only for a client with the token."""
    missing = await api.raw.get("/api/nope", headers=AUTH)
    assert (missing.status_code, error(missing)["error"]) == (404, "not_found")
    wrong_method = await api.raw.post("/api/calls", headers=AUTH)
    assert (wrong_method.status_code, error(wrong_method)["error"]) == (405, "method_not_allowed")
    assert "GET" in wrong_method.headers["allow"]
    assert (await api.raw.get("/api/nope")).status_code == 401
    assert (await api.raw.post("/api/calls")).status_code == 401


async def test_paths_outside_the_api_keep_their_own_errors(api: ApiClient) -> None:
    """The JSON 404 handler only speaks for /api: /voice-like paths keep Quart's own error page."""
    response = await api.raw.get("/apis")
    assert response.status_code == 404
    assert not response.headers["content-type"].startswith("application/json")


async def test_a_database_that_cannot_be_reached_is_a_json_503(tmp_path: Path, log_lines: LogLines) -> None:
    """When the database fails, routes answer 503 database_unavailable in JSON and log the error."""
    broken = create_engine(sqlite_file_url(tmp_path / "no" / "such" / "dir"))
    try:
        async with serve_api(TOKEN, broken) as api:
            response = await api.get("/api/calls")
    finally:
        await broken.dispose()
    assert response.status_code == 503
    assert error(response)["error"] == "database_unavailable"
    assert log_lines.events("api.database_error")


async def test_a_fault_inside_a_route_is_a_json_500(engine: AsyncEngine) -> None:
    """An unexpected exception (here: no engine yet) answers 500 internal_server_error as JSON, not HTML."""

    def no_engine() -> AsyncEngine:
        raise RuntimeError("the app has not started")

    app = Quart("api-test")
    app.register_blueprint(api_blueprint(make_settings(None, api_token=TOKEN), no_engine))
    transport = httpx.ASGITransport(app=cast(Any, app))
    hooks = {"response": [validate_against_spec]}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", event_hooks=hooks) as client:
        response = await client.get("/api/calls/CA1", headers=AUTH)
    assert response.status_code == 500
    assert error(response)["error"] == "internal_server_error"


async def test_q_finds_the_calls_whose_words_were_said(varied: ApiClient) -> None:
    """q= lists the calls one of whose utterances holds every word, with the other filters, in any case."""
    await insert(varied.engine, [make_utterance("CB1", "inbound", 0.5, 1.5, "My ORDER never came.")])
    assert await listed(varied, q="order") == ["CB1", "CA1"]
    assert await listed(varied, q="Order number") == ["CA1"]  # both words in one utterance
    assert await listed(varied, q="order", number="+15550001") == ["CB1"]
    assert await listed(varied, q="order", limit="1") == ["CB1"]
    assert await listed(varied, q="refund") == []
    assert await listed(varied, q='order" OR "x*') == []  # query syntax is just words: "x" was never said


# --- The calendar's edges and hostile values: each a 400 naming what is wrong, never a 500 or a 503 ---------


def cursor_of(payload: bytes) -> str:
    """A cursor as encode_cursor would spell it, around any payload."""
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


# (parameter, value, what the message says). Each was a 500 (OverflowError, RecursionError, UnicodeEncodeError)
# or, on PostgreSQL, a 503 database_unavailable (a NUL in text) before it was refused here.
EDGE_QUERIES = [
    ("since", "9999-12-31T23:59:59-01:00", "years 1 to 9999"),  # parses, but is in the year 10000 in UTC
    ("until", "9999-12-31T23:59:59-00:01", "years 1 to 9999"),
    ("since", "0001-01-01T00:00:00+01:00", "years 1 to 9999"),  # the year 0 in UTC
    ("until", "0001-01-01T00:59:59+01:00", "years 1 to 9999"),
    ("since", "\u0662\u0660\u0662\u0665-01-02", "in ASCII"),  # Arabic-Indic digits
    ("until", "2025-01-02T03:04:05" + "0" * 60, "at most 64 characters"),
    ("number", "+1415555\x000100", "printable"),  # PostgreSQL refuses a NUL in text
    ("number", "+1" + "5" * 63, "at most 64 characters"),
    ("cursor", cursor_of(b'{"s":"9999-12-31T23:59:59-01:00","c":"CA1"}'), "years 1 to 9999"),
    ("cursor", cursor_of(b'{"s":"0001-01-01T00:00:00+00:01","c":"CA1"}'), "years 1 to 9999"),
    ("cursor", cursor_of(b'{"s":"2025-01-02T03:04:05+00:00","c":"CA\\u0000"}'), "not a cursor this API issued"),
    ("cursor", cursor_of(b'{"s":"2025-01-02T03:04:05+00:00","c":"\\ud800"}'), "not a cursor this API issued"),
    ("cursor", cursor_of(b'{"s":"2025-01-02T03:04:05+00:00","c":"' + b"C" * 65 + b'"}'), "not a cursor"),
    ("cursor", cursor_of(b"[" * 3000), "longer than any cursor"),  # deep enough for a RecursionError
]


@pytest.mark.parametrize(("parameter", "value", "message"), EDGE_QUERIES)
def test_the_parser_refuses_each_edge_naming_the_parameter(parameter: str, value: str, message: str) -> None:
    """parse_list_query (the API's and the page's search form's) raises BadParameter for each, with why."""
    with pytest.raises(BadParameter) as refused:
        parse_list_query(MultiDict([(parameter, value)]))
    assert refused.value.parameter == parameter
    assert message in refused.value.message


def test_the_calendars_first_and_last_moments_are_taken_and_handed_on_in_utc() -> None:
    """Up to the edges a moment is accepted, and handed on already in UTC, so nothing later converts it again."""
    given_and_utc = [
        ("9999-12-31T23:59:59+00:00", datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)),
        ("9999-12-31T23:59:59", datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)),
        ("0001-01-01T00:00:00-01:00", datetime.datetime(1, 1, 1, 1, tzinfo=datetime.UTC)),
        ("2025-01-02T03:04:05+02:00", datetime.datetime(2025, 1, 2, 1, 4, 5, tzinfo=datetime.UTC)),
    ]
    for given, expected in given_and_utc:
        moment = parse_list_query(MultiDict([("since", given)])).since
        assert moment is not None
        assert (moment, moment.tzinfo) == (expected, datetime.UTC), given


@pytest.fixture(params=["sqlite", "postgresql"])
async def either_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    """The API over SQLite and over PostgreSQL, whose time range and text rules are not Python's."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgresql":
            engine = await stack.enter_async_context(postgres_database())
        else:
            engine = await make_database(tmp_path)
            stack.push_async_callback(engine.dispose)
        await insert(engine, [make_call("CA1")])
        yield await stack.enter_async_context(serve_api(TOKEN, engine))


# One request per kind of edge: an offset past either end of the calendar, a cursor whose time does the same,
# a cursor from no JSON we wrote (nested, NUL, surrogate), a NUL in a number, too long, non-ASCII digits.
EDGE_REQUESTS = [EDGE_QUERIES[i] for i in (0, 2, 4, 5, 6, 8, 10, 11, 13)]


@pytest.mark.parametrize(("parameter", "value", "message"), EDGE_REQUESTS)
async def test_each_edge_is_a_400_on_either_database(
    either_api: ApiClient, log_lines: LogLines, parameter: str, value: str, message: str
) -> None:
    """GET /api/calls with the edge answers 400 bad_request naming the parameter, logged with why."""
    response = await either_api.get("/api/calls", params={parameter: value})
    assert response.status_code == 400, response.text
    body = error(response)
    assert (body["error"], body["parameter"]) == ("bad_request", parameter)
    assert message in body["message"]
    [line] = log_lines.events("api.refused", status=400)
    assert (line["parameter"], line["why"]) == (parameter, body["message"])


@pytest.mark.parametrize(("value", "message"), [("?!", "at least one word"), ("w" * 201, "at most 200")])
async def test_a_q_without_words_or_too_long_is_a_400(api: ApiClient, value: str, message: str) -> None:
    """Punctuation alone, or more than 200 characters, is refused naming q."""
    response = await api.get("/api/calls", params={"q": value})
    assert (response.status_code, error(response)["parameter"]) == (400, "q")
    assert message in error(response)["message"]
