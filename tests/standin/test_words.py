"""The stand-in's hearing (`service/standin/words.py`): hashed words for the tests, readable words for people, the
same audio always the same word, and a `said` window the word it spells either way."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.standin.words import SAY, WORDS, hashed_word, readable_word, said, saying

WINDOW = 4000


def window(seed: str) -> bytes:
    """A deterministic, non-silent window of audio."""
    blocks = (hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(WINDOW // 32))
    return b"".join(blocks)


def test_the_word_list_is_a_few_thousand_distinct_lowercase_english_words() -> None:
    """Lowercase letters only (no punctuation to confuse a transcript), no repeats (each as likely as another)."""
    assert len(WORDS) >= 2000
    assert len(set(WORDS)) == len(WORDS)
    assert all(re.fullmatch("[a-z]+", word) for word in WORDS)
    assert list(WORDS) == sorted(WORDS), "sorted, so a change to the list reads as a diff"


@pytest.mark.parametrize(
    ("audio", "hashed", "readable"),
    [
        (window("a"), "w" + hashlib.sha256(window("a")).hexdigest()[:8], None),
        (said("cancel"), "cancel", "cancel"),
        (said("four", 200), "four", "four"),
        (SAY + b"hello", "hello", "hello"),  # no terminator: the rest of the window is the word
    ],
)
def test_each_hearing_of_a_window(audio: bytes, hashed: str, readable: str | None) -> None:
    """A hashed word is `w` and 8 hex digits of the audio's SHA-256; a `said` window is its word in both."""
    assert hashed_word(audio) == hashed
    assert readable_word(audio) == (readable if readable is not None else readable_word(audio))
    if readable is None:
        assert readable_word(audio) in WORDS


@given(st.binary(min_size=1, max_size=64))
def test_the_same_audio_is_always_the_same_readable_word(audio: bytes) -> None:
    """Deterministic: no state, no randomness, so a replayed call reads the same."""
    assert readable_word(audio) == readable_word(bytes(audio))
    assert readable_word(audio) in WORDS or audio.startswith(SAY)


def test_different_audio_gives_different_readable_words() -> None:
    """200 different windows hear close to 200 different words (a hash over 2,756 words: a few collide), so a
    transcript still shows which audio arrived, in order."""
    heard = [readable_word(window(str(i))) for i in range(200)]
    assert len(set(heard)) >= 185
    assert heard == [readable_word(window(str(i))) for i in range(200)]


def test_saying_is_each_word_said_then_a_silent_window() -> None:
    """A sentence as audio: one window per word, heard as the word, and a pause (mu-law silence) after."""
    audio = saying("my card number", 100)
    windows = [audio[i : i + 100] for i in range(0, len(audio), 100)]
    assert [readable_word(w) for w in windows[:3]] == ["my", "card", "number"]
    assert [hashed_word(w) for w in windows[:3]] == ["my", "card", "number"]
    assert windows[3] == b"\xff" * 100
    assert len(windows) == 4
