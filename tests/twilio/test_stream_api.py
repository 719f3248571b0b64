"""Streams on a live call through the real `twilio` client's async half, against the REST stand-in, which opens
the new stream like Twilio: to the URL it was given, from where the call's audio is."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from service.simulator.messages import CallSpec
from service.twilio.credentials import RestCredentials, rest_credentials
from service.twilio.stream_api import (
    MAX_PARAMETERS,
    StreamApi,
    StreamApiError,
    fork_limit_refusal,
    parameter_fields,
)
from service.twilio.twiml import FORKS_PER_CALL, forks
from tests.helpers.audio import call_audio
from tests.helpers.credentials import TWILIO_TOKEN
from tests.helpers.fakes.twilio_call import LiveCall
from tests.helpers.fakes.twilio_rest import ACCOUNT_SID, API_KEY_SECRET, API_KEY_SID, AUTH_TOKEN, FakeTwilioRest
from tests.helpers.service import make_settings
from tests.helpers.waiting import eventually

KEY = RestCredentials(ACCOUNT_SID, API_KEY_SID, API_KEY_SECRET)
URL = "wss://callscribe.test/media"


class MediaServer:
    """A WebSocket server that records every message each stream sends it."""

    def __init__(self) -> None:
        self.streams: list[list[dict[str, Any]]] = []

    async def handle(self, socket: ServerConnection) -> None:
        messages: list[dict[str, Any]] = []
        self.streams.append(messages)
        async for message in socket:
            messages.append(json.loads(message))


@pytest.fixture
async def media() -> AsyncIterator[tuple[MediaServer, str]]:
    server = MediaServer()
    async with serve(server.handle, "127.0.0.1", 0) as running:
        port = next(iter(running.sockets)).getsockname()[1]
        yield server, f"ws://127.0.0.1:{port}/media"


async def test_a_stream_started_on_a_live_call_opens_with_its_parameters_from_where_the_call_is(
    media: tuple[MediaServer, str],
) -> None:
    """create: Url, Track and the parameters reach Twilio as Parameter1.Name...; the new stream's `start` carries
    them, its media counts from chunk 1 and timestamp 0 with the call's audio from the moment it opened; stop ends
    it with `stop`."""
    server, target = media
    spec = CallSpec(inbound=call_audio(150, 3.0), account_sid=ACCOUNT_SID)
    with FakeTwilioRest() as rest:
        call = rest.add_call(LiveCall(spec, auth_token=TWILIO_TOKEN, route=lambda _: target))
        call.play()
        try:
            await eventually(lambda: call.slot >= 25)  # half a second into the call
            api = StreamApi(KEY, api_url=rest.url)
            sid = await api.start_stream(
                spec.call_sid, url=URL, track="inbound_track", parameters={"from": "+1555", "callscribe_token": "t"}
            )
            await eventually(lambda: server.streams and any(m["event"] == "media" for m in server.streams[0]))
            [opened] = server.streams
            await api.stop_stream(spec.call_sid, sid)
            await eventually(lambda: opened[-1]["event"] == "stop")
        finally:
            await call.hang_up()
    [create, stop] = rest.stream_requests()
    assert create.username == API_KEY_SID
    assert create.form == {
        "Url": [URL], "Track": ["inbound_track"], "Parameter1.Name": ["from"], "Parameter1.Value": ["+1555"],
        "Parameter2.Name": ["callscribe_token"], "Parameter2.Value": ["t"],
    }  # fmt: skip
    assert (create.status, stop.status, stop.form) == (201, 200, {"Status": ["stopped"]})
    start, first_media = opened[1], opened[2]
    assert (opened[0]["event"], start["event"], start["start"]["streamSid"]) == ("connected", "start", sid)
    assert start["start"]["customParameters"] == {"from": "+1555", "callscribe_token": "t"}
    assert (first_media["media"]["chunk"], first_media["media"]["timestamp"]) == ("1", "0")
    stream = call.stream(sid)
    assert stream is not None
    assert stream.first_slot is not None
    assert stream.first_slot >= 25
    audio = b"".join(base64.b64decode(m["media"]["payload"]) for m in opened if m["event"] == "media")
    assert audio == spec.inbound[stream.first_slot * 160 : stream.first_slot * 160 + len(audio)]


@pytest.mark.parametrize(
    ("credentials", "answer", "status", "message"),
    [
        (RestCredentials(ACCOUNT_SID, API_KEY_SID, "wrong"), None, 401, "HTTP 401, error 20003"),
        (RestCredentials(ACCOUNT_SID, ACCOUNT_SID, "wrong"), None, 401, "HTTP 401, error 20003"),
        (RestCredentials("AC" + "9" * 32, API_KEY_SID, API_KEY_SECRET), None, 401, "HTTP 401, error 20003"),
        (KEY, 429, 429, "HTTP 429, error 20429"),
        (KEY, 500, 500, "HTTP 500, error 20500"),
        (KEY, 503, 503, "HTTP 503"),
        (RestCredentials(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN), None, 404, "HTTP 404, error 20404"),  # no such call
    ],
)
async def test_twilio_refusing_becomes_one_error_with_its_status_and_code_and_no_secret(
    credentials: RestCredentials, answer: int | None, status: int, message: str
) -> None:
    """Bad credentials, another account, the rate limit, an outage, an unknown call: StreamApiError says which,
    with Twilio's status and error code, and never the secret."""
    with FakeTwilioRest() as rest:
        rest.streams_answer = answer
        with pytest.raises(StreamApiError) as refused:
            await StreamApi(credentials, api_url=rest.url).start_stream(
                "CA" + "0" * 32, url=URL, track="inbound_track", parameters={}
            )
    assert refused.value.status == status
    assert message in str(refused.value)
    assert "wrong" not in str(refused.value)
    assert API_KEY_SECRET not in str(refused.value)


async def test_a_stream_past_twilios_four_forks_is_refused_with_what_the_call_has_in_use(
    media: tuple[MediaServer, str],
) -> None:
    """A both_tracks stream (2 forks) and another application's inbound fork (1): a second both_tracks stream would
    make 5 of Twilio's 4, so the create is refused and opens nothing, and StreamApiError says so and why; once the
    other fork stops, the same create fits (4 of 4)."""
    _, target = media
    spec = CallSpec(inbound=call_audio(151, 3.0), account_sid=ACCOUNT_SID)
    with FakeTwilioRest() as rest:
        call = rest.add_call(LiveCall(spec, auth_token=TWILIO_TOKEN, route=lambda _: target))
        call.play()
        api = StreamApi(KEY, api_url=rest.url)
        try:
            await api.start_stream(spec.call_sid, url=URL, track="both_tracks", parameters={})
            other = rest.add_fork(call, track="inbound_track")
            assert rest.forks_in_use(call) == 3
            with pytest.raises(StreamApiError) as refused:
                await api.start_stream(spec.call_sid, url=URL, track="both_tracks", parameters={})
            assert len(call.streams) == 1  # nothing was opened
            await api.stop_stream(spec.call_sid, other.sid)
            await api.start_stream(spec.call_sid, url=URL, track="both_tracks", parameters={})
            assert rest.forks_in_use(call) == FORKS_PER_CALL
        finally:
            await call.hang_up()
    assert refused.value.status == 400
    assert str(refused.value) == (
        "Twilio refused a second stream of the call (HTTP 400, error 31999): a call may have 4 forked streams, one "
        "per track (a both_tracks stream counts 2), and the new both_tracks stream needs 2 while the call already "
        "has at least 3 in use (its callscribe stream and other forks, such as a <Stream> or <Siprec> of your own)"
    )
    assert "\n" not in str(refused.value)
    assert [request.status for request in rest.stream_requests()] == [201, 400, 200, 201]


@pytest.mark.parametrize(
    ("status", "message", "track", "meant"),
    [
        (400, "Unable to create record: Maximum of 4 forked streams per call reached", "inbound_track", "at least 4"),
        (400, "Unable to create record: Stream limit exceeded", "both_tracks", "at least 3"),
        (400, "Unable to create record: Url must be a wss:// URL", "both_tracks", None),  # another 400
        (429, "Unable to create record: Too Many Requests", "both_tracks", None),  # the rate limit, not the forks
    ],
)
def test_only_a_400_about_a_limit_is_read_as_the_fork_limit(
    status: int, message: str, track: str, meant: str | None
) -> None:
    """Twilio documents the limit, not its code: a 400 whose words name a limit is the forks, told as a lower
    bound on what the call has in use; any other refusal keeps its plain status-and-code text."""
    text = fork_limit_refusal(status, 21999, message, track=track)
    if meant is None:
        assert text is None
    else:
        assert text is not None
        assert f"needs {forks(track)} while the call already has {meant} in use" in text


def test_a_both_tracks_stream_takes_two_of_a_calls_forks_and_any_other_one() -> None:
    """Twilio counts each track a stream carries as one fork."""
    assert (forks("both_tracks"), forks("inbound_track"), forks("outbound_track")) == (2, 1, 1)


async def test_an_api_that_does_not_answer_is_an_error_with_no_status() -> None:
    """Nothing listening at TWILIO_API_URL: status 0 and "did not answer", for start and stop alike."""
    api = StreamApi(KEY, api_url="http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(StreamApiError, match="did not answer") as refused:
        await api.start_stream("CA" + "0" * 32, url=URL, track="inbound_track", parameters={})
    assert refused.value.status == 0
    with pytest.raises(StreamApiError, match="did not answer"):
        await api.stop_stream("CA" + "0" * 32, "MZ" + "0" * 32)


def test_parameters_become_numbered_fields_and_too_many_are_refused() -> None:
    """Twilio takes Parameter1 to Parameter99; more is an error before any request."""
    assert parameter_fields({"a": "1", "b": "2"}) == {
        "parameter1_name": "a", "parameter1_value": "1", "parameter2_name": "b", "parameter2_value": "2",
    }  # fmt: skip
    with pytest.raises(StreamApiError, match="at most 99"):
        parameter_fields({str(n): "" for n in range(MAX_PARAMETERS + 1)})


def test_rest_credentials_prefer_the_api_key_and_need_an_account() -> None:
    """The API key pair when set, else the account SID and auth token; nothing without an account SID."""
    account = {"twilio_account_sid": ACCOUNT_SID}
    with_key = make_settings(None, **account, twilio_api_key_sid=API_KEY_SID, twilio_api_key_secret=API_KEY_SECRET)
    assert rest_credentials(with_key) == KEY
    token = rest_credentials(make_settings(None, **account, twilio_auth_token=AUTH_TOKEN))
    assert token == RestCredentials(ACCOUNT_SID, ACCOUNT_SID, AUTH_TOKEN)
    assert rest_credentials(make_settings(None, twilio_auth_token=AUTH_TOKEN)) is None
    assert rest_credentials(make_settings(None, **account, twilio_auth_token=None)) is None
