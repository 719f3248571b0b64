"""A live call's streams through Twilio's REST API, with the `twilio` client's async half (the hand-over).

`start_stream` is `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Streams.json` with `Url`, `Track` and the
stream's parameters as `ParameterN.Name`/`ParameterN.Value`; `stop_stream` is `POST .../Streams/{StreamSid}.json`
with `Status=stopped` (https://www.twilio.com/docs/voice/api/stream-resource). The client is pointed at
TWILIO_API_URL through its API domain's `base_url`, as `numbers.py` does, and reads nothing from the environment.
Every failure becomes one `StreamApiError` whose text says what Twilio answered (status and error code) or that it
did not answer, never a credential. One refusal is named for what it means: a create that would take the call past
Twilio's FORKS_PER_CALL forked streams (`twiml.py`), which Twilio documents without the error code it answers with,
so it is recognised by its status (400) and its words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from service.errors import StreamApiError
from service.twilio.credentials import RestCredentials
from service.twilio.twiml import FORKS_PER_CALL, forks

MAX_PARAMETERS = 99  # Twilio's Parameter1 ... Parameter99
REQUEST_TIMEOUT_S = 5.0  # a hand-over has seconds, not minutes: Heroku kills the process 30 s after SIGTERM
_LIMIT_WORDS = re.compile(r"\b(?:limit|maximum|max|too many|exceed(?:s|ed)?)\b", re.IGNORECASE)


__all__ = ["MAX_PARAMETERS", "StreamApi", "StreamApiError", "fork_limit_refusal", "parameter_fields"]


def parameter_fields(parameters: Mapping[str, str]) -> dict[str, str]:
    """The stream's <Parameter>s as the client's `parameterN_name`/`parameterN_value` arguments."""
    if len(parameters) > MAX_PARAMETERS:
        raise StreamApiError(f"{len(parameters)} stream parameters: Twilio takes at most {MAX_PARAMETERS}")
    fields: dict[str, str] = {}
    for number, (name, value) in enumerate(parameters.items(), start=1):
        fields[f"parameter{number}_name"] = name
        fields[f"parameter{number}_value"] = value
    return fields


def fork_limit_refusal(status: int, code: int | None, message: str, *, track: str) -> str | None:
    """What a refused create of a `track` stream means when it is Twilio's limit of forks per call, else None.

    A refusal says only that the new stream would not fit, so what the call has in use is told as a lower bound:
    more than FORKS_PER_CALL less what the new stream needs.
    """
    if status != 400 or _LIMIT_WORDS.search(message) is None:  # 400: Twilio's "cannot do that on this call"
        return None
    needs = forks(track)
    error = f", error {code}" if code else ""
    return (
        f"Twilio refused a second stream of the call (HTTP 400{error}): a call may have {FORKS_PER_CALL} forked "
        f"streams, one per track (a both_tracks stream counts 2), and the new {track} stream needs {needs} while "
        f"the call already has at least {FORKS_PER_CALL - needs + 1} in use (its callscribe stream and other "
        "forks, such as a <Stream> or <Siprec> of your own)"
    )


class _HeaderAuthClient(AsyncTwilioHttpClient):  # type: ignore[misc] # twilio ships no types
    """twilio's aiohttp client, with the credentials sent as an `Authorization` header: the client passes them as
    aiohttp's `auth=BasicAuth(...)`, which aiohttp 3.14 deprecates (and 4.0 removes); the request is the same."""

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        # twilio calls request(method, url, params=, data=, headers=, auth=, timeout=, allow_redirects=).
        auth = kwargs.pop("auth", None)
        if auth is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
        return await super().request(method, url, *args, **kwargs)


class StreamApi:
    """Start and stop streams on a live call, as the account `credentials` name."""

    def __init__(self, credentials: RestCredentials, *, api_url: str, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self._credentials = credentials
        self._api_url = api_url
        self._timeout_s = timeout_s

    async def start_stream(self, call_sid: str, *, url: str, track: str, parameters: Mapping[str, str]) -> str:
        """Ask Twilio for a new stream of `call_sid` to `url`; its StreamSid."""
        fields = parameter_fields(parameters)
        stream = await self._call(
            "start the stream",
            lambda calls: calls(call_sid).streams.create_async(url=url, track=track, **fields),
            track=track,
        )
        return str(stream.sid)

    async def stop_stream(self, call_sid: str, stream_sid: str) -> None:
        """Ask Twilio to stop the stream (it then sends `stop` on the stream's socket)."""
        await self._call("stop the stream", lambda calls: calls(call_sid).streams(stream_sid).update_async("stopped"))

    async def _call(self, what: str, request: Any, *, track: str | None = None) -> Any:
        """Run `request` on the account's Calls list; any failure as one StreamApiError (`track`: a create's)."""
        http = _HeaderAuthClient(timeout=self._timeout_s)
        client = Client(
            self._credentials.username,
            self._credentials.password,
            account_sid=self._credentials.account_sid,
            http_client=http,
            environment={"TWILIO_ACCOUNT_SID": self._credentials.account_sid},
        )
        client.api.base_url = self._api_url
        calls = client.api.v2010.accounts(self._credentials.account_sid).calls
        try:
            return await request(calls)
        except TwilioRestException as exc:
            code = f", error {exc.code}" if exc.code else ""
            full = f"Twilio refused to {what} (HTTP {exc.status}{code})"
            if track is not None:
                full = fork_limit_refusal(exc.status, exc.code, str(exc.msg), track=track) or full
            raise StreamApiError(full, status=exc.status) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StreamApiError(f"Twilio's REST API did not answer ({type(exc).__name__})") from None
        except TwilioException as exc:
            raise StreamApiError(f"Twilio's answer could not be read ({type(exc).__name__})") from None
        finally:
            await http.close()
