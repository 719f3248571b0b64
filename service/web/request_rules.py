"""Protocol layer (pure, no I/O): what an HTTP request may send before any of its body is read.

Anything on the public internet may be hostile, and every request is served by the event loop that also
forwards calls' audio. So a request is judged on its method, path and headers first (`refusal`), and its body
is then read only up to its route's bound (`body_limit`) and within a deadline (the guard, `guard.py`):

- `/voice` takes Twilio's webhook form, a few KB (about 40 fields of at most a few hundred characters);
  a request without `X-Twilio-Signature` is refused before its body is read, since it cannot be Twilio's.
- `/login` and `/logout` take a form of two or three short fields.
- Nothing else takes more than 1 KiB: the API reads no body but the optional JSON of a pause or resume (a name
  and a number of seconds), the feed and the page are GETs, and a client that sends one anyway still learns
  its method is wrong.
- Nothing takes `multipart/form-data`: Werkzeug's multipart parser is the costliest one to feed.

The bounds are far above what Twilio and a browser send, and far below what parsing could hold the loop with:
Werkzeug parses a 32 KiB form of `a=1&a=1&...` (8192 fields) in 4.7 ms (`python -m timeit -s "from io import
BytesIO; from werkzeug.formparser import parse_form_data; b = b'a=1&' * 8192" "parse_form_data({'REQUEST_METHOD':
'POST', 'CONTENT_TYPE': 'application/x-www-form-urlencoded', 'CONTENT_LENGTH': str(len(b)), 'wsgi.input':
BytesIO(b)})"`, best of 5).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

KIB: Final = 1024
VOICE_PATH: Final = "/voice"
VOICE_BODY_MAX: Final = 32 * KIB  # Twilio's webhook: ~40 fields, a few KB
FORM_BODY_MAX: Final = 4 * KIB  # the login and logout forms: a password and a CSRF token
OTHER_BODY_MAX: Final = 1 * KIB  # no other route reads a body; a little is let by, so a wrong method still gets 405
FORM_PATHS: Final = frozenset({"/login", "/logout"})
SIGNATURE_HEADER: Final = b"x-twilio-signature"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer given instead of reading a request: its status, a short error code and the reason, said once."""

    status: int
    error: str
    why: str


def body_limit(method: str, path: str) -> int:
    """The most bytes of body a request to `path` may send."""
    if path == VOICE_PATH:
        return VOICE_BODY_MAX
    if path in FORM_PATHS and method == "POST":
        return FORM_BODY_MAX
    return OTHER_BODY_MAX


def refusal(
    method: str, path: str, headers: Iterable[tuple[bytes, bytes]], *, signatures_required: bool
) -> Refusal | None:
    """Why a request is answered before its body is read, or None when its body may be read (up to its limit).

    `signatures_required` is False only in insecure development (no TWILIO_AUTH_TOKEN), where /voice is let in
    unsigned.
    """
    content_type = b""
    length: bytes | None = None
    signed = False
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == b"content-type":
            content_type = value.strip().lower()
        elif name == b"content-length":
            if length is not None and length != value.strip():
                return Refusal(400, "bad_request", "two different Content-Length headers")
            length = value.strip()
        elif name == SIGNATURE_HEADER:
            signed = bool(value.strip())
    if path == VOICE_PATH and signatures_required and not signed:
        return Refusal(403, "unsigned", "missing X-Twilio-Signature header: not a request from Twilio")
    if content_type.startswith(b"multipart/"):
        return Refusal(415, "unsupported_media_type", "multipart bodies are not accepted here")
    limit = body_limit(method, path)
    if length is not None:
        if not length.isdigit() or len(length) > 12:
            return Refusal(400, "bad_request", "Content-Length is not a number")
        if int(length) > limit:
            return Refusal(413, "too_large", f"a body of {int(length)} bytes; at most {limit} are read here")
    return None


def too_large(limit: int) -> Refusal:
    """The refusal of a body that grew past `limit` while it was read (chunked, or longer than it said)."""
    return Refusal(413, "too_large", f"the body went past {limit} bytes, the most read here")


def too_slow(deadline_s: float) -> Refusal:
    """The refusal of a body that did not arrive whole within the deadline (one byte every few seconds)."""
    return Refusal(408, "body_timeout", f"the body did not arrive within {deadline_s:g} s")


def too_busy(pool: str, bound: int) -> Refusal:
    """The refusal of a request past the process's bound on requests in progress."""
    return Refusal(503, "busy", f"{bound} {pool} requests are in progress, the most this process serves at once")


NUMBERS_PATH: Final = "/api/numbers/"  # DELETE /api/numbers/{number}: a number in the path


def logged_path(path: str) -> str:
    """A request's path as a log line may hold it: an erasure's number (`/api/numbers/{number}`) masked to its last
    two characters, as the audit log keeps it; every other path unchanged."""
    if not path.startswith(NUMBERS_PATH):
        return path
    number = path.removeprefix(NUMBERS_PATH)
    return NUMBERS_PATH + "*" * max(0, len(number) - 2) + number[-2:]
