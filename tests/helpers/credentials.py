"""The secrets the tests' service, fakes and callers share: Twilio's auth token and the Deepgram key."""

from __future__ import annotations

TWILIO_TOKEN = "twilio-test-token"
DEEPGRAM_KEY = "test-key"
DEEPGRAM_FALLBACK_KEY = "fallback-test-key"  # the second Deepgram's own key (DEEPGRAM_FALLBACK_API_KEY)
