"""Audio for tests: distinct mu-law per seed, so the fake Deepgram's words show which bytes it was sent."""

from __future__ import annotations

import random

SILENCE = b"\xff"  # mu-law's zero amplitude


def call_audio(seed: int, seconds: float) -> bytes:
    """Distinct, non-silent mu-law audio per seed (every window hashes to different words)."""
    rng = random.Random(seed)
    return bytes(rng.randrange(0, 0x7F) for _ in range(int(seconds * 8000)))


def turn_audio(seed: int, seconds: float) -> bytes:
    """`call_audio` with every fourth 0.5 s window silent: turns of 1.5 s and a pause, as people speak.

    The fake Deepgram's v1 finals (every four windows) and its Flux turns (a run of voiced windows, ended by a
    silent one) then both end at 2 s, 4 s, ...: a fault test's expectations hold for either API.
    """
    audio = bytearray(call_audio(seed, seconds))
    for start in range(3 * 4000, len(audio), 4 * 4000):
        pause = audio[start : start + 4000]
        audio[start : start + 4000] = SILENCE * len(pause)
    return bytes(audio)


# Two stretches of speech with a silent window between them (two utterances), and a silent partial window at the end.
SPEECH = call_audio(301, 1.5) + SILENCE * 4000 + call_audio(302, 1.0) + SILENCE * 100
