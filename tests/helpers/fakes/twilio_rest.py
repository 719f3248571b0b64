"""Test support: a stand-in for Twilio's REST API, for what `python -m service doctor` asks of it.

Layer: test fake. A real HTTP/1.1 server (the standard library's, one thread per request) on 127.0.0.1 and a
port the OS picks; the real `twilio` client talks to it through TWILIO_API_URL, so tests exercise the request the
package builds and the answers it parses. What it serves:

* HTTP Basic auth, as Twilio checks it: the account's SID and auth token, or an API key's SID and secret. Anything
  else, or a path naming another account, is 401 with Twilio's error body (code 20003, "Authenticate").
* `GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json`, with the `PhoneNumber` filter (partial
  numbers, `*` for any digit) and `PageSize`/`Page`, answered in Twilio's paged list shape.
* `POST .../IncomingPhoneNumbers/{Sid}.json` with `VoiceUrl` and `VoiceMethod` (form-encoded): the number updated,
  answered as the resource (`twilio configure` and `restore`); an unknown SID is 404 (code 20404).
* `POST .../Calls/{CallSid}/Streams.json` with `Url`, `Track`, `Name` and `ParameterN.Name`/`ParameterN.Value`: a
  new stream of a call in progress (a `LiveCall` added with `add_call`, `twilio_call.py`), answered 201 as the
  Stream resource, and opened like Twilio opens it: to that URL, from where the call's audio is. `POST
  .../Streams/{StreamSid}.json` with `Status=stopped` stops it. A call not in progress is 404 (code 20404), a
  missing `Url` 400 (21201). `streams_answer` makes the next Streams requests fail with that status, as Twilio's
  rate limit (429, code 20429) or an outage (5xx) would.
* Twilio's limit of FORKS_PER_CALL forked streams per call, one per track a stream carries (a `both_tracks` stream
  is two): a create that would take the call's live streams (`in-progress`, its `LiveCall`'s and the other forks
  `add_fork` registers, such as another application's `<Stream>` or a `<Siprec>`) past it is refused with
  FORK_LIMIT_ANSWER, and opens nothing.

Shapes: https://www.twilio.com/docs/phone-numbers/api/incomingphonenumber-resource (read multiple),
https://www.twilio.com/docs/voice/api/stream-resource and https://www.twilio.com/docs/usage/twilios-response (errors).
The limit: https://www.twilio.com/docs/voice/twiml/stream ("There are a maximum of 4 forked streams allowed per
call. Each track, inbound or outbound, is a forked stream") and /docs/voice/twiml/siprec (two forks by default).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

from service.simulator.messages import TRACKS_BY_SETTING

if TYPE_CHECKING:
    from tests.helpers.fakes.twilio_call import CallStream, LiveCall

API_VERSION = "2010-04-01"
ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "twilio-rest-test-token"
API_KEY_SID = "SK" + "0" * 31 + "2"
API_KEY_SECRET = "twilio-rest-test-key-secret"
DATE = "Tue, 01 Dec 2026 12:00:00 +0000"  # Twilio's dates are RFC 2822
DEFAULT_PAGE_SIZE = 50
FORKS_PER_CALL = 4
# Twilio documents the limit but not the error its Streams resource answers with at it. This is the answer Twilio
# gives a create it refuses on a call in progress (400 and its error body); the code is a stand-in, which is why
# callscribe recognises the refusal by its status and words (stream_api.py), never by this number.
FORK_LIMIT_ANSWER = (400, 31999, f"Maximum of {FORKS_PER_CALL} forked streams per call reached")

Message = dict[str, Any]
_STREAMS_PATH = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Calls/(?P<call>CA[0-9a-f]{{32}})/Streams"
    r"(?:/(?P<sid>MZ[0-9a-f]{32}))?\.json$"
)
_FAILURES = {401: (20003, "Authenticate"), 429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error")}
_NUMBERS_PATH = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/IncomingPhoneNumbers(?:/(?P<sid>PN[0-9a-f]{{32}}))?\.json$"
)


@dataclass(kw_only=True)
class IncomingNumber:
    """One number on the account: what a test sets up, rendered as Twilio's IncomingPhoneNumber resource."""

    phone_number: str
    voice_url: str = ""
    voice_method: str = "POST"
    voice_application_sid: str | None = None
    trunk_sid: str | None = None
    sid: str = field(default_factory=lambda: "PN" + secrets.token_hex(16))

    def resource(self, account_sid: str) -> Message:
        uri = f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers/{self.sid}.json"
        return {
            "account_sid": account_sid,
            "address_requirements": "none",
            "address_sid": None,
            "api_version": API_VERSION,
            "beta": False,
            "bundle_sid": None,
            "capabilities": {"fax": False, "mms": True, "sms": True, "voice": True},
            "date_created": DATE,
            "date_updated": DATE,
            "emergency_address_sid": None,
            "emergency_address_status": "unregistered",
            "emergency_status": "Active",
            "friendly_name": self.phone_number,
            "identity_sid": None,
            "origin": "twilio",
            "phone_number": self.phone_number,
            "sid": self.sid,
            "sms_application_sid": "",
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": "",
            "status": "in-use",
            "status_callback": "",
            "status_callback_method": "POST",
            "subresource_uris": {"assigned_add_ons": uri.replace(".json", "/AssignedAddOns.json")},
            "trunk_sid": self.trunk_sid,
            "type": "local",
            "uri": uri,
            "voice_application_sid": self.voice_application_sid,
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": None,
            "voice_method": self.voice_method,
            "voice_receive_mode": "voice",
            "voice_url": self.voice_url,
        }


@dataclass(kw_only=True)
class OtherFork:
    """A fork of a call that is not one of callscribe's streams (another application's `<Stream>`, a `<Siprec>`):
    nothing is sent to it here, but Twilio counts it against the call's FORKS_PER_CALL while it is in progress."""

    track: str = "inbound_track"
    status: str = "in-progress"
    sid: str = field(default_factory=lambda: "MZ" + secrets.token_hex(16))

    @property
    def forks(self) -> int:
        return len(TRACKS_BY_SETTING[self.track])


@dataclass(kw_only=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    username: str | None  # the Basic auth user, never its password
    form: dict[str, list[str]] = field(default_factory=dict)  # a POST's form-encoded body
    status: int = 0


class FakeTwilioRest:
    """Twilio's REST API for one account, as a context manager: `with FakeTwilioRest() as twilio: twilio.url`."""

    def __init__(
        self,
        *,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        api_key_sid: str = API_KEY_SID,
        api_key_secret: str = API_KEY_SECRET,
    ) -> None:
        self.account_sid = account_sid
        self._credentials = {account_sid: auth_token, api_key_sid: api_key_secret}
        self.numbers: list[IncomingNumber] = []
        self.calls: dict[str, LiveCall] = {}
        self.forks: dict[str, list[OtherFork]] = {}  # a call's forks that are not callscribe's, by CallSid
        self._streams_lock = threading.Lock()  # one create at a time: two must not both fit in the last room
        self.streams_answer: int | None = None  # a status every Streams request gets instead (429, 500, 503)
        self.requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_number(self, phone_number: str, **configuration: Any) -> IncomingNumber:
        number = IncomingNumber(phone_number=phone_number, **configuration)
        self.numbers.append(number)
        return number

    def add_call(self, call: LiveCall) -> LiveCall:
        """A call in progress, whose streams the Streams resource starts and stops."""
        self.calls[call.call_sid] = call
        return call

    def add_fork(self, call: LiveCall, track: str = "inbound_track") -> OtherFork:
        """Another fork of `call` (another application's stream, a `<Siprec>`), counted against Twilio's limit."""
        fork = OtherFork(track=track)
        self.forks.setdefault(call.call_sid, []).append(fork)
        return fork

    def forks_in_use(self, call: LiveCall) -> int:
        """The call's forks Twilio counts now: one per track of each stream in progress."""
        mine = sum(len(stream.tracks) for stream in call.streams if stream.status == "in-progress")
        others = sum(fork.forks for fork in self.forks.get(call.call_sid, []) if fork.status == "in-progress")
        return mine + others

    def stream_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if _STREAMS_PATH.match(request.path)]

    def __enter__(self) -> FakeTwilioRest:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read `requests`, not stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-twilio-rest", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`: what the TWILIO_API_URL setting takes."""
        if self._server is None:
            raise RuntimeError("FakeTwilioRest is not started; use `with FakeTwilioRest() as twilio`")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- Answering --------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        target = urllib.parse.urlsplit(handler.path)
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        request = RecordedRequest(
            method=handler.command,
            path=target.path,
            query=urllib.parse.parse_qs(target.query, keep_blank_values=True),
            username=_basic_user(handler.headers.get("Authorization")),
            form=urllib.parse.parse_qs(body.decode(), keep_blank_values=True),
        )
        self.requests.append(request)
        request.status, body = self._answer(request, handler.headers.get("Authorization"))
        data = json.dumps(body).encode()
        handler.send_response(request.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Twilio-Request-Id", "RQ" + secrets.token_hex(16))
        if request.status == 401:
            handler.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
        handler.end_headers()
        handler.wfile.write(data)

    def _answer(self, request: RecordedRequest, authorization: str | None) -> tuple[int, Message]:  # noqa: PLR0911
        if not self._authenticated(authorization):
            return 401, _error(20003, "Authenticate", 401)
        if (streams := _STREAMS_PATH.match(request.path)) is not None:
            return self._streams_of(request, streams)
        route = _NUMBERS_PATH.match(request.path)
        if route is None:
            return 404, _error(20404, f"The requested resource {request.path} was not found", 404)
        if route["account"] != self.account_sid:
            return 401, _error(20003, "Authenticate", 401)  # credentials of one account, the path of another
        if route["sid"] is not None:
            return self._one_number(request, route["sid"])
        if request.method != "GET":
            return 405, _error(20004, "Method not allowed", 405)
        return 200, self._numbers_page(request)

    def _one_number(self, request: RecordedRequest, sid: str) -> tuple[int, Message]:
        found = [number for number in self.numbers if number.sid == sid]
        if not found:
            return 404, _error(20404, f"The requested resource {request.path} was not found", 404)
        number = found[0]
        if request.method == "POST":
            if "VoiceUrl" in request.form:
                number.voice_url = request.form["VoiceUrl"][0]
            if "VoiceMethod" in request.form:
                number.voice_method = request.form["VoiceMethod"][0]
        return 200, number.resource(self.account_sid)

    def _streams_of(self, request: RecordedRequest, route: re.Match[str]) -> tuple[int, Message]:
        if route["account"] != self.account_sid:
            return 401, _error(20003, "Authenticate", 401)  # credentials of one account, the path of another
        return self._streams(request, route["call"], route["sid"])

    def _streams(self, request: RecordedRequest, call_sid: str, sid: str | None) -> tuple[int, Message]:
        if request.method != "POST":
            return 405, _error(20004, "Method not allowed", 405)
        if self.streams_answer is not None:
            code, message = _FAILURES.get(self.streams_answer, (20500, "Service Unavailable"))
            return self.streams_answer, _error(code, message, self.streams_answer)
        call = self.calls.get(call_sid)
        if call is None or not call.in_progress:
            return 404, _error(20404, f"The requested resource {request.path} was not found", 404)
        form = {name: values[0] for name, values in request.form.items()}
        if sid is not None:
            return self._update_stream(request, call, sid, form)
        return self._create_stream(call, form)

    def _create_stream(self, call: LiveCall, form: dict[str, str]) -> tuple[int, Message]:
        if not form.get("Url", "").startswith("wss://"):
            return 400, _error(21201, "Url must be a wss:// URL", 400)
        parameters = {}
        for number in range(1, 100):
            if f"Parameter{number}.Name" in form:
                parameters[form[f"Parameter{number}.Name"]] = form.get(f"Parameter{number}.Value", "")
        track = form.get("Track", "inbound_track")
        with self._streams_lock:
            if self.forks_in_use(call) + len(TRACKS_BY_SETTING[track]) > FORKS_PER_CALL:
                status, code, message = FORK_LIMIT_ANSWER
                return status, _error(code, message, status)
            stream = call.open_stream_threadsafe(form["Url"], track, parameters)
        return 201, self._stream_resource(call.call_sid, stream, name=form.get("Name"))

    def _update_stream(
        self, request: RecordedRequest, call: LiveCall, sid: str, form: dict[str, str]
    ) -> tuple[int, Message]:
        stream = call.stream(sid)
        other = next((fork for fork in self.forks.get(call.call_sid, []) if fork.sid == sid), None)
        if stream is None and other is None:
            return 404, _error(20404, f"The requested resource {request.path} was not found", 404)
        if form.get("Status") != "stopped":
            return 400, _error(21218, "Status must be stopped", 400)
        if other is not None:
            other.status = "stopped"
            return 200, self._stream_resource(call.call_sid, other, name=None)
        assert stream is not None
        if stream.status == "in-progress":
            call.stop_stream_threadsafe(stream)
        stream.status = "stopped"
        return 200, self._stream_resource(call.call_sid, stream, name=None)

    def _stream_resource(self, call_sid: str, stream: CallStream | OtherFork, *, name: str | None) -> Message:
        return {
            "account_sid": self.account_sid,
            "call_sid": call_sid,
            "sid": stream.sid,
            "name": name,
            "status": stream.status,
            "date_updated": DATE,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call_sid}/Streams/{stream.sid}.json",
        }

    def _authenticated(self, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self._credentials.get(username)
        return expected is not None and secrets.compare_digest(password, expected)

    def _numbers_page(self, request: RecordedRequest) -> Message:
        def first(name: str, default: str) -> str:
            return (request.query.get(name) or [default])[0]

        wanted = first("PhoneNumber", "")
        matching = [number for number in self.numbers if _matches(number.phone_number, wanted)]
        page_size, page = int(first("PageSize", str(DEFAULT_PAGE_SIZE))), int(first("Page", "0"))
        records = matching[page * page_size : (page + 1) * page_size]
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers.json"

        def page_uri(number: int) -> str:
            query = {"PageSize": page_size, "Page": number, **({"PhoneNumber": wanted} if wanted else {})}
            return f"{base}?{urllib.parse.urlencode(query)}"

        has_next = (page + 1) * page_size < len(matching)
        return {
            "end": page * page_size + max(len(records) - 1, 0),
            "first_page_uri": page_uri(0),
            "incoming_phone_numbers": [number.resource(self.account_sid) for number in records],
            "next_page_uri": page_uri(page + 1) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": page * page_size,
            "uri": page_uri(page),
        }


def _matches(phone_number: str, wanted: str) -> bool:
    """Twilio's PhoneNumber filter: the digits given (`*` for any one) anywhere in the number."""
    if not wanted:
        return True
    pattern = "".join(r"\d" if char == "*" else re.escape(char) for char in wanted)
    return re.search(pattern, phone_number) is not None


def _basic_user(authorization: str | None) -> str | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None


def _error(code: int, message: str, status: int) -> Message:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
