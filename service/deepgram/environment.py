"""Where the SDK connects (layer: deepgram, adapter): a Deepgram's address and key, as deepgram-sdk's environment.

Shared by the live client (`live.py`) and the pre-recorded one (`prerecorded.py`). A process has one or two
Deepgrams: the primary (DEEPGRAM_URL) and, with DEEPGRAM_FALLBACK_URL, a fallback; each client is built for
one `DeepgramAddress`, so the same code reaches either.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepgram import DeepgramClientEnvironment
from pydantic import SecretStr

from service.settings import Settings, live_base, rest_base
from service.stt.engine import FALLBACK, PRIMARY


@dataclass(frozen=True, slots=True)
class DeepgramAddress:
    """One Deepgram: its name in logs, metrics and the call's record, its live and REST bases, and its key."""

    name: str  # PRIMARY or FALLBACK
    live_url: str  # ws(s)://host[/path]: the SDK appends /v1/listen
    rest_url: str  # http(s)://host[/path]: the pre-recorded API
    api_key: SecretStr | None  # None: no connection can be made (the track spools)

    @property
    def key_setting(self) -> str:
        """The setting to name when the key is missing."""
        return "DEEPGRAM_API_KEY" if self.name == PRIMARY else "DEEPGRAM_FALLBACK_API_KEY (or DEEPGRAM_API_KEY)"

    def environment(self) -> DeepgramClientEnvironment:
        """The SDK's environment: live STT uses `production` (ws/wss), REST uses `base`."""
        live, rest = self.live_url, self.rest_url
        return DeepgramClientEnvironment(base=rest, production=live, agent=live, agent_rest=rest)


def primary_address(settings: Settings) -> DeepgramAddress:
    """DEEPGRAM_URL (DEEPGRAM_BATCH_URL for REST, when set) with DEEPGRAM_API_KEY."""
    return DeepgramAddress(PRIMARY, settings.deepgram_live_url, settings.deepgram_rest_url, settings.deepgram_api_key)


def fallback_address(settings: Settings) -> DeepgramAddress | None:
    """DEEPGRAM_FALLBACK_URL with its key (DEEPGRAM_API_KEY unless DEEPGRAM_FALLBACK_API_KEY); None when unset."""
    url = settings.deepgram_fallback_url
    if url is None:
        return None
    return DeepgramAddress(FALLBACK, live_base(url), rest_base(url), settings.deepgram_fallback_key)


def addresses(settings: Settings) -> dict[str, DeepgramAddress]:
    """Every Deepgram this process may use, by name: the primary, and the fallback when there is one."""
    found = [primary_address(settings), fallback_address(settings)]
    return {address.name: address for address in found if address is not None}
