"""A phone number's voice configuration, read from and set on Twilio's REST API through the `twilio` client.

The requests are `GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json?PhoneNumber=...` and, to change
the webhook, `POST .../IncomingPhoneNumbers/{Sid}.json` with `VoiceUrl` and `VoiceMethod`. The client
is pointed at TWILIO_API_URL through its API domain's `base_url` (the attribute every request's URL is built
from), and reads nothing from the environment: `environment` is given, so TWILIO_EDGE or TWILIO_REGION cannot
rewrite the host. Errors become `NumberLookupError` with Twilio's status and error code, never a credential.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from service.twilio.credentials import RestCredentials


@dataclass(frozen=True, slots=True)
class NumberVoice:
    """What Twilio does with a call to the number: fetch `voice_url`, unless an application or a trunk takes it."""

    sid: str
    phone_number: str
    voice_url: str
    voice_method: str
    voice_application_sid: str
    trunk_sid: str


class NumberLookupError(Exception):
    """Twilio could not be asked, or refused: `status` is the HTTP status (0 when nothing answered)."""

    def __init__(self, message: str, *, status: int = 0, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def find_number(
    credentials: RestCredentials, number: str, *, api_url: str, timeout_s: float = 10.0
) -> NumberVoice | None:
    """The number's voice configuration on the account, None when the account has no such number."""
    client = _client(credentials, api_url=api_url, timeout_s=timeout_s)
    numbers = client.api.v2010.accounts(credentials.account_sid).incoming_phone_numbers
    try:
        page = numbers.page(phone_number=number, page_size=50)
        # PhoneNumber also matches partial numbers: only the exact one is this number.
        found = [record for record in page if record.phone_number == number]
    except OSError as exc:  # requests' errors (refused, timed out, TLS) are OSErrors
        raise NumberLookupError(f"Twilio's REST API did not answer ({type(exc).__name__})") from None
    except TwilioException as exc:
        raise _refusal(exc) from None
    return _voice(found[0]) if found else None


def set_voice_url(
    credentials: RestCredentials, number: NumberVoice, url: str, method: str, *, api_url: str, timeout_s: float = 10.0
) -> NumberVoice:
    """Point the number's voice webhook at `url` with `method`; the number as Twilio now has it."""
    client = _client(credentials, api_url=api_url, timeout_s=timeout_s)
    resource = client.api.v2010.accounts(credentials.account_sid).incoming_phone_numbers(number.sid)
    try:
        return _voice(resource.update(voice_url=url, voice_method=method))
    except OSError as exc:  # requests' errors (refused, timed out, TLS) are OSErrors
        raise NumberLookupError(f"Twilio's REST API did not answer ({type(exc).__name__})") from None
    except TwilioRestException as exc:
        code = f", error {exc.code}" if exc.code else ""
        raise NumberLookupError(f"Twilio refused the update (HTTP {exc.status}{code})", status=exc.status) from None


def _client(credentials: RestCredentials, *, api_url: str, timeout_s: float) -> Client:
    client = Client(
        credentials.username,
        credentials.password,
        account_sid=credentials.account_sid,
        http_client=TwilioHttpClient(timeout=timeout_s),
        environment={"TWILIO_ACCOUNT_SID": credentials.account_sid},
    )
    client.api.base_url = api_url
    return client


def _voice(record: Any) -> NumberVoice:
    return NumberVoice(
        sid=record.sid or "",
        phone_number=record.phone_number or "",
        voice_url=record.voice_url or "",
        voice_method=(record.voice_method or "POST").upper(),
        voice_application_sid=record.voice_application_sid or "",
        trunk_sid=record.trunk_sid or "",
    )


def _refusal(exc: TwilioException) -> NumberLookupError:
    # A page that is not 200 raises TwilioException("Unable to fetch page", response): Twilio's JSON error body
    # ({"code", "message", "more_info", "status"}) is in the response.
    response = exc.args[1] if len(exc.args) > 1 else None
    status = int(getattr(response, "status_code", 0) or 0)
    try:
        body = json.loads(getattr(response, "text", "") or "{}")
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    detail = f"HTTP {status}" + (f", error {code}" if code else "") + (f": {message}" if message else "")
    return NumberLookupError(f"Twilio refused the request ({detail})", status=status, code=code)
