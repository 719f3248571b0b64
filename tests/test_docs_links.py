"""The README's and docs' links within the checkout: every file they name exists, and every `#anchor` is a heading
there, spelled as GitHub makes a heading's anchor (a renamed heading or a typo fails here, not for a reader)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation gone (but `-` and `_`), spaces as `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def prose(path: Path) -> list[str]:
    """The document's lines outside fenced code blocks (a `# comment` in a shell block is no heading)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """Every anchor of the document's headings; a repeated heading's next ones get `-1`, `-2`, … as on GitHub."""
    found: set[str] = set()
    for line in prose(path):
        if match := HEADING.match(line):
            base = name = anchor(match[1])
            count = 0
            while name in found:
                count += 1
                name = f"{base}-{count}"
            found.add(name)
    return found


def local_links(path: Path) -> list[str]:
    """The document's links that stay in the checkout (no scheme: `other.md#part`, `#part`, `images/x.png`)."""
    return [target for line in prose(path) for target in LINK.findall(line) if not re.match(r"[a-z]+:", target)]


def test_anchor_spells_headings_as_github_does() -> None:
    assert anchor("The page's secret and ending every session") == "the-pages-secret-and-ending-every-session"
    assert anchor("`make try`: a call, no account") == "make-try-a-call-no-account"
    assert anchor("Hand-over and LIVE_REPLAY_S") == "hand-over-and-live_replay_s"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_local_link_names_a_file_and_a_heading_that_exist(document: Path) -> None:
    broken = []
    for target in local_links(document):
        file, _, part = target.partition("#")
        linked = (document.parent / file).resolve() if file else document
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT)}")
        elif part and linked.suffix == ".md" and part not in anchors(linked):
            broken.append(f"{target}: no heading #{part} in {linked.relative_to(ROOT)}")
    assert broken == []
