"""Topic title normalisation: the key that makes "Hello, World!" and "  hello world" one topic."""

from __future__ import annotations

import re
import unicodedata

# Stripped from both ends: Unicode punctuation (quotes, brackets, dashes, "?!.*"), separators and
# control characters. Symbols ("+", "$") are kept, and so are the punctuation marks that carry
# meaning at the end of a title ("C#", "5%"), so "C++" and "C#" do not collapse into "c".
_STRIPPED_CATEGORIES = ("P", "Z", "C")
_KEPT = frozenset("#%&@")


# A title names something: it holds a letter or a digit (Unicode ones: Python's ``\w`` without
# the underscore, so the pattern means the same to the API's OpenAPI readers that use Python's
# ``re``, the fuzzer included). "+", "---" or quotes alone are refused at the API (422).
TITLE_PATTERN = r"[^\W_]"
_HAS_TEXT = re.compile(TITLE_PATTERN)
# The same, for the OpenAPI document of a request's title (no NUL either: chatpgt.db.text)
TITLE_DOCUMENTED = r"^[^\x00]*[^\W_][^\x00]*$"


def has_text(title: str) -> bool:
    """Whether ``title`` holds a letter or a digit (then it never normalises to "")."""
    return _HAS_TEXT.search(title) is not None


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
