"""Audio for tests: distinct mu-law per seed, so the fake Deepgram's words show which bytes it was sent."""

from __future__ import annotations

import random

SILENCE = b"\xff"  # mu-law's zero amplitude


def call_audio(seed: int, seconds: float) -> bytes:
    """Distinct, non-silent mu-law audio per seed (every window hashes to different words)."""
    rng = random.Random(seed)
    return bytes(rng.randrange(0, 0x7F) for _ in range(int(seconds * 8000)))


# Two stretches of speech with a silent window between them (two utterances), and a silent partial window at the end.
SPEECH = call_audio(301, 1.5) + SILENCE * 4000 + call_audio(302, 1.0) + SILENCE * 100
