"""Adapter: what can go wrong with one HTTP request to Deepgram through deepgram-sdk (pre-recorded, text
intelligence), as the seam's errors: the statuses Deepgram answers with as `status_error` says (a 4xx rejected,
a 429 or 5xx unavailable), and the transport's and the SDK's own failures as unavailable (worth another try)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
from deepgram.core.api_error import ApiError
from deepgram.core.parse_error import ParsingError

from service.deepgram.protocol import error_message, status_error
from service.errors import SttUnavailable


@contextlib.contextmanager
def translated(answer: str) -> Iterator[None]:
    """Errors of one request as SttRejected / SttUnavailable; `answer` names what Deepgram was to send back."""
    try:
        yield
    except ApiError as exc:
        raise status_error(exc.status_code, said=error_message(exc.body)) from exc
    except ParsingError as exc:
        raise SttUnavailable(f"Deepgram's answer was not {answer} the SDK could read") from exc
    except httpx.TimeoutException as exc:
        raise SttUnavailable(f"Deepgram did not answer in time ({type(exc).__name__})") from exc
    except (httpx.TransportError, OSError) as exc:
        raise SttUnavailable(f"cannot reach Deepgram: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:  # a broken answer (bad encoding, redirects): may pass, like a 5xx
        raise SttUnavailable(f"Deepgram's answer could not be read: {type(exc).__name__}") from exc
