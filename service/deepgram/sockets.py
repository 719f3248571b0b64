"""I/O adapter (layer: deepgram): what Deepgram's two live APIs share through deepgram-sdk, v1 (`live.py`) and
Flux (`flux.py`): the engine at an address (`AddressedEngine`), the SDK client, opening a socket, and websockets
errors translated once.

Opening a socket and its failures: a timeout, an HTTP status at the upgrade (through `protocol.status_error`,
shared with the pre-recorded client), a network error or a broken handshake each become `SttRejected` or
`SttUnavailable` here, for both APIs alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TypeVar

import websockets.exceptions
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError

from service.deepgram.environment import DeepgramAddress, primary_address
from service.deepgram.protocol import is_fatal_close, status_error
from service.errors import SttError, SttFailure, SttRejected, SttUnavailable
from service.settings import Settings

_Socket = TypeVar("_Socket")


class AddressedEngine:
    """What a live engine is before its API: the Deepgram it reaches (the primary unless given), its SDK client
    there (reused by every connection; None without a key), and its name in logs and the call's record."""

    def __init__(self, settings: Settings, address: DeepgramAddress | None = None) -> None:
        self._settings = settings
        self._address = address = address or primary_address(settings)
        self._client = client_for(address)

    @property
    def name(self) -> str:
        return self._address.name

    @property
    def configured(self) -> bool:
        return self._client is not None

    def _sdk(self) -> AsyncDeepgramClient:
        """The SDK client, or SttRejected naming the key to set."""
        if self._client is None:
            raise SttRejected(f"{self._address.key_setting} is not set", failure=SttFailure.NO_KEY)
        return self._client


def client_for(address: DeepgramAddress) -> AsyncDeepgramClient | None:
    """The SDK client for one Deepgram's URL and key (None without a key), built once per engine."""
    key = address.api_key
    if key is None:
        return None
    return _with_fixed_headers(AsyncDeepgramClient(api_key=key.get_secret_value(), environment=address.environment()))


def _with_fixed_headers(client: AsyncDeepgramClient) -> AsyncDeepgramClient:
    """The client, with its request headers built once instead of on every connect.

    The SDK's `get_headers` reads its own version from the package metadata (importlib.metadata parses the
    METADATA file) and asks `platform` each time: 0.7-0.9 ms per connection, 55-70 ms of one core when 40
    both-track calls (80 connections) start together. The headers never change for a client, so each connect
    gets a copy of the first (a copy: the SDK adds to the dict it is given).
    """
    wrapper = client._client_wrapper  # deepgram-sdk 7.17 (pinned); tests/deepgram checks the headers it sends
    headers = wrapper.get_headers()
    wrapper.get_headers = lambda: dict(headers)  # type: ignore[method-assign]
    return client


async def opened(stack: AsyncExitStack, connecting: AbstractAsyncContextManager[_Socket], timeout_s: float) -> _Socket:
    """The socket `connecting` opens (entered on `stack`), or its failure as SttRejected/SttUnavailable."""
    try:
        async with asyncio.timeout(timeout_s):
            return await stack.enter_async_context(connecting)
    except TimeoutError as exc:
        raise SttUnavailable(
            f"Deepgram did not open the connection within {timeout_s:g} s", failure=SttFailure.CONNECT_TIMEOUT
        ) from exc
    except ApiError as exc:
        raise status_error(exc.status_code, at_upgrade=True) from exc
    except OSError as exc:
        raise SttUnavailable(
            f"cannot reach Deepgram: {type(exc).__name__}: {exc.strerror or exc}", failure=SttFailure.UNREACHABLE
        ) from exc
    except websockets.exceptions.WebSocketException as exc:
        raise SttUnavailable(f"Deepgram handshake failed: {type(exc).__name__}", failure=SttFailure.HANDSHAKE) from exc


SocketFailure = (websockets.exceptions.ConnectionClosed, OSError)  # what `stt_error` translates


@contextlib.contextmanager
def translated(doing: str) -> Iterator[None]:
    """Turn a websockets close into SttRejected/SttUnavailable with Deepgram's code and reason."""
    try:
        yield
    except SocketFailure as exc:
        raise stt_error(exc, doing) from exc


def stt_error(exc: websockets.exceptions.ConnectionClosed | OSError, doing: str) -> SttError:
    """A websockets close (with Deepgram's code and reason) or a network error, as the seam's SttError.

    `translated` says it for most calls; a send of audio (one per frame) catches `SocketFailure` itself and
    raises this, sparing a context manager's generator per frame.
    """
    if isinstance(exc, websockets.exceptions.ConnectionClosedOK):
        return SttUnavailable(f"Deepgram closed the connection while {doing}", close_code=_code(exc))
    if isinstance(exc, websockets.exceptions.ConnectionClosed):
        code = _code(exc)
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        said = f"close {code} {reason}".strip() if code is not None else "dropped the connection (no close frame)"
        error_type = SttRejected if is_fatal_close(code) else SttUnavailable
        return error_type(f"Deepgram {said} while {doing}", close_code=code or 1006)
    return SttUnavailable(f"network error while {doing}: {type(exc).__name__}", failure=SttFailure.NETWORK)


def _code(exc: websockets.exceptions.ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None
