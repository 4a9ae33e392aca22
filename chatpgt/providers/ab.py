"""Verdicts from next-token probabilities: how "A"/"B" probabilities become a winner and a 1-10
confidence, and how they are read from an OpenAI-style ``top_logprobs`` answer.

Pure functions with no heavy imports, shared by the local judge and API judges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# The letters a verdict may start with; a token counts for a letter when it is the letter with
# surrounding whitespace ("A", " A", "\nA"). Lower case is not counted: "a" is an English word.
AB_LETTERS = ("A", "B")
# How many alternatives an API judge is asked for (OpenAI allows at most 20).
AB_TOP_LOGPROBS = 20


def confidence_from_ab(p_a: float, p_b: float) -> tuple[str, int]:
    """The winner ("A" or "B") and a confidence from 1 to 10 for two letter probabilities.

    Only the ratio matters: with ``r = max(p_a, p_b) / (p_a + p_b)`` (0.5 to 1.0) the confidence
    is ``1 + round(18 * (r - 0.5))``, linear from 1 at a coin flip to 10 at certainty, each step
    covering 1/18 of r (r = 0.75 gives 5 or 6; 0.9 gives 8). An exact tie returns ("A", 1): the
    lowest confidence, and the position-independent answer a two-order judge turns into a tie
    (the swapped order also says "A", that is, the other essay).

    Raises ValueError for negative, non-finite or all-zero probabilities.
    """
    if not (math.isfinite(p_a) and math.isfinite(p_b)) or p_a < 0 or p_b < 0:
        raise ValueError(f"probabilities must be finite and non-negative, got {p_a!r}, {p_b!r}")
    total = p_a + p_b
    if total <= 0:
        raise ValueError("both probabilities are zero: the model answered neither A nor B")
    winner = "B" if p_b > p_a else "A"
    ratio = max(p_a, p_b) / total
    # floor(x + 0.5): round half up, where Python's round() would round half to even.
    confidence = 1 + math.floor(18 * (ratio - 0.5) + 0.5)
    return winner, max(1, min(10, confidence))


def debiased_first_wins(p_a_shown_first: float, p_a_shown_second: float) -> float:
    """The probability that essay X beats essay Y, from two normalised judgments: ``p_a`` when X
    was shown as A, and ``p_a`` when X was shown as B (so Y was A).

    The mean of X's two probabilities, ``(p_a_shown_first + (1 - p_a_shown_second)) / 2``,
    cancels a constant preference for a position: a small judge that says "A" at 0.74 in both
    orders gives 0.5 here (a coin flip), where two separate verdicts would disagree. Feed
    ``confidence_from_ab(p, 1 - p)`` to get X's winner letter ("A" = X) and confidence.
    """
    for p in (p_a_shown_first, p_a_shown_second):
        if not (math.isfinite(p) and 0 <= p <= 1):
            raise ValueError(f"probabilities must be within [0, 1], got {p!r}")
    return (p_a_shown_first + (1 - p_a_shown_second)) / 2


def letter_of(token: str) -> str | None:
    """ "A" or "B" when ``token`` is that letter with optional surrounding whitespace, else None."""
    stripped = token.strip()
    return stripped if stripped in AB_LETTERS else None


def ab_from_top_logprobs(content: Sequence[dict[str, Any]] | None) -> tuple[float, float, float]:
    """(p_a, p_b, mass) from an OpenAI ``logprobs.content`` list: the first token's
    ``top_logprobs``, each letter summed over its variants ("A", " A"), normalised to sum to 1;
    ``mass`` is the summed probability before normalising. A letter absent from the list counts
    as probability 0 (it is below every listed alternative).

    Raises ValueError when there are no logprobs, no ``top_logprobs`` on the first token, or
    neither letter among them.
    """
    if not content:
        raise ValueError("the provider returned no logprobs")
    first = content[0]
    top = first.get("top_logprobs") if isinstance(first, dict) else None
    if not top:
        raise ValueError("the provider returned no top_logprobs for the first token")
    probs = {"A": 0.0, "B": 0.0}
    for entry in top:
        if not isinstance(entry, dict):
            continue
        token, logprob = entry.get("token"), entry.get("logprob")
        letter = letter_of(token) if isinstance(token, str) else None
        if letter is None or isinstance(logprob, bool) or not isinstance(logprob, int | float):
            continue
        probs[letter] += math.exp(logprob)
    mass = probs["A"] + probs["B"]
    if mass <= 0:
        shown = [e.get("token") for e in top[:5] if isinstance(e, dict)]
        raise ValueError(f"neither 'A' nor 'B' among the first token's top_logprobs {shown!r}")
    return probs["A"] / mass, probs["B"] / mass, mass
