"""Adapter: one HTTP request to Deepgram through deepgram-sdk (pre-recorded, text intelligence).

`RestRequests` is what both REST clients share: the Deepgram they ask and its key (refused at once without one),
and an SDK client per request on our own httpx client, bounded in time and never retrying (the callers retry on
their own schedule and record every attempt). `translated` turns what can go wrong into the seam's errors: the
statuses Deepgram answers with as `status_error` says (a 4xx rejected, a 429 or 5xx unavailable), and the
transport's and the SDK's own failures as unavailable (worth another try)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.core.parse_error import ParsingError

from service.deepgram.environment import DeepgramAddress, primary_address
from service.deepgram.protocol import error_message, status_error
from service.errors import SttRejected, SttUnavailable
from service.settings import Settings


class RestRequests:
    """A Deepgram's REST API with our settings: at `address` (the primary's, DEEPGRAM_BATCH_URL or DEEPGRAM_URL,
    unless given). Raises SttRejected when built without its key, so a caller learns it before any work."""

    def __init__(self, settings: Settings, address: DeepgramAddress | None = None) -> None:
        self._address = address = address or primary_address(settings)
        if address.api_key is None:
            raise SttRejected(f"{address.key_setting} is not set")
        self._settings = settings
        self._api_key = address.api_key.get_secret_value()

    @property
    def name(self) -> str:
        return self._address.name

    @contextlib.asynccontextmanager
    async def sdk(self, timeout_s: float) -> AsyncIterator[AsyncDeepgramClient]:
        """An SDK client for one request of at most `timeout_s`, on our own httpx client, so its connections are
        closed when the request is done rather than when it is collected; max_retries=0 (see above)."""
        timeout = httpx.Timeout(timeout_s, connect=self._settings.deepgram_connect_timeout_s)
        async with httpx.AsyncClient(timeout=timeout) as http:
            yield AsyncDeepgramClient(
                api_key=self._api_key, environment=self._address.environment(), httpx_client=http, max_retries=0
            )


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
