"""A search's words (service/storage/search_terms.py): cut from what was typed, never query syntax."""

from __future__ import annotations

from service.storage import search_terms


def test_words_are_case_folded_and_punctuation_is_dropped() -> None:
    """Letters and digits make words; everything else separates them."""
    assert search_terms.terms("Order #4711, please!") == ("order", "4711", "please")
    assert search_terms.terms("  ?! ") == ()
    assert search_terms.terms("Straße ÉTÉ") == ("strasse", "été")


def test_words_are_bounded_in_number_and_length() -> None:
    """At most MAX_TERMS words, each at most MAX_TERM_CHARS long."""
    words = search_terms.terms(" ".join(f"w{n}" for n in range(40)) + " " + "x" * 100)
    assert len(words) == search_terms.MAX_TERMS
    assert search_terms.terms("y" * 100) == ("y" * search_terms.MAX_TERM_CHARS,)


def test_each_database_gets_only_quoted_or_plain_words() -> None:
    """FTS5 gets each word quoted (so OR, NEAR and * are words), PostgreSQL the plain words."""
    words = search_terms.terms('order OR "near" x*')
    assert search_terms.fts5_query(words) == '"order" "or" "near" "x"'
    assert search_terms.plain_query(words) == "order or near x"
