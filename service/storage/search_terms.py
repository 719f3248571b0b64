"""Protocol layer (pure, no I/O): the words a transcript search asks for, and how each database is asked.

A search is its words, case-folded, each matched whole (no stemming, no prefixes): a call matches when one of its
utterances holds every word. What the user typed is never handed to a query language: it is cut into words here
and each FTS5 term is a quoted string, so `"`, `*`, `NEAR` or `OR` are just text (PostgreSQL's
`plainto_tsquery` reads plain words the same way).
"""

from __future__ import annotations

import re
from typing import Final

MAX_TERMS: Final = 16
MAX_TERM_CHARS: Final = 64
_WORD: Final = re.compile(r"\w+")


def terms(text: str) -> tuple[str, ...]:
    """The first MAX_TERMS words of `text`, case-folded, each cut at MAX_TERM_CHARS; () for no word at all."""
    return tuple(word[:MAX_TERM_CHARS] for word in _WORD.findall(text.casefold())[:MAX_TERMS])


def fts5_query(words: tuple[str, ...]) -> str:
    """SQLite FTS5's MATCH string: every word, each a quoted string (words hold no quotes: they are \\w+)."""
    return " ".join(f'"{word}"' for word in words)


def plain_query(words: tuple[str, ...]) -> str:
    """PostgreSQL's `plainto_tsquery` text: the words, space-separated (every one must match)."""
    return " ".join(words)
