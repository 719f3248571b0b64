"""Where the SDK connects (layer: deepgram, adapter): our Deepgram URLs as deepgram-sdk's environment.

Shared by the live client (`live.py`) and the pre-recorded one (`prerecorded.py`).
"""

from __future__ import annotations

from deepgram import DeepgramClientEnvironment

from service.settings import Settings


def environment_for(settings: Settings) -> DeepgramClientEnvironment:
    """DEEPGRAM_URL as the SDK's environment: live STT uses `production` (ws/wss), REST uses `base`."""
    live, rest = settings.deepgram_live_url, settings.deepgram_rest_url
    return DeepgramClientEnvironment(base=rest, production=live, agent=live, agent_rest=rest)
