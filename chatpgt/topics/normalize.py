"""Topic title normalisation: the key that makes "Hello, World!" and "  hello world" one topic."""

from __future__ import annotations

import unicodedata

# Stripped from both ends: Unicode punctuation (quotes, brackets, dashes, "?!.*"), separators and
# control characters. Symbols ("+", "$") are kept, and so are the punctuation marks that carry
# meaning at the end of a title ("C#", "5%"), so "C++" and "C#" do not collapse into "c".
_STRIPPED_CATEGORIES = ("P", "Z", "C")
_KEPT = frozenset("#%&@")


def _strippable(char: str) -> bool:
    return char not in _KEPT and unicodedata.category(char)[0] in _STRIPPED_CATEGORIES


def display_title(title: str) -> str:
    """The title as stored and shown: whitespace collapsed to single spaces, ends trimmed."""
    return " ".join(title.split())


def normalize_title(title: str) -> str:
    """The uniqueness key of a topic.

    NFKC (full-width and compatibility forms fold to plain letters), casefold, whitespace runs
    collapsed to one space, then punctuation and quotes stripped from both ends (inner
    punctuation is kept: "rock, paper" stays distinct from "rock paper"; "C++" and "C#" keep
    their endings). A title made only of
    punctuation normalises to "" and must be rejected by the caller.
    """
    text = unicodedata.normalize("NFKC", title).casefold()
    text = " ".join(text.split())
    start, end = 0, len(text)
    while start < end and _strippable(text[start]):
        start += 1
    while end > start and _strippable(text[end - 1]):
        end -= 1
    return text[start:end]
