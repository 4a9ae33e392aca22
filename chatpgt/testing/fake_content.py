"""What the fake OpenAI server says: essays' words, the judge's deterministic verdicts and
logprobs, malformed verdicts, and the request checks OpenAI makes. Pure functions, no server:
:mod:`chatpgt.testing.fake_openai` serves them and injects the faults."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson

# A fixed vocabulary keeps essays cheap to build: choices() over a tuple is one C call.
WORDS = tuple(
    """the of and to in that is was for on with as by it at from this be are an which or have
    not had but were his her they their one all would there been has more when will who its into
    only other than some time could these two may first then do any like my now over such our man
    me even most made after also did many before must through back years where much your way well
    down should because each just those people how too little state good very make world still own
    see men work long get here between both life being under never day same another know while last
    might us great old year off come since against go came right used take three light garden river
    memory quiet harbour winter letter window market evening morning village patience silence
    kindness argument evidence history practice language teacher student journey question answer
    reason story city mountain coast field forest bridge road window table lamp paper ink voice hand
    heart mind thought habit craft season harvest weather music""".split()
)

MALFORMED_KINDS = ("truncated", "prose", "wrong_field", "winner_c", "confidence_range")


def essay_score(text: str) -> int:
    """The fake judge's score of one essay, 0-99, from a hash of its stripped text."""
    return int(hashlib.sha256(text.strip().encode()).hexdigest()[:8], 16) % 100


def judge_verdict(essay_a: str, essay_b: str) -> tuple[str, int]:
    """(winner, confidence) the honest fake judge gives; swapping the essays swaps the winner.

    Equal scores are broken by the full hash so the verdict never depends on the order shown.
    Confidence is 1-10 and grows with the score gap.
    """
    score_a, score_b = essay_score(essay_a), essay_score(essay_b)
    if score_a == score_b:
        hash_a = hashlib.sha256(essay_a.strip().encode()).hexdigest()
        hash_b = hashlib.sha256(essay_b.strip().encode()).hexdigest()
        a_wins = hash_a > hash_b
    else:
        a_wins = score_a > score_b
    confidence = 1 + (abs(score_a - score_b) * 9) // 99
    return ("A" if a_wins else "B"), confidence


# The share of the next-token probability the fake judge puts on the letters, and how it splits
# each letter between its variants "A" and " A" (the rest goes to other words).
_LETTER_MASS = 0.9
_BARE_LETTER_SHARE = 0.8
_OTHER_FIRST_TOKENS = (("The", 0.06), ("Essay", 0.04))


def ab_probabilities(winner: str, confidence: int) -> dict[str, float]:
    """The probabilities (summing to ``_LETTER_MASS``) the fake judge gives "A" and "B" for a
    verdict: the winner's share ``r = 0.5 + (confidence - 1) / 18`` (at least 0.52, at most
    0.995), so that ``confidence_from_ab`` reads the same confidence back."""
    r = min(0.995, max(0.52, 0.5 + (confidence - 1) / 18))
    loser = "B" if winner == "A" else "A"
    return {winner: _LETTER_MASS * r, loser: _LETTER_MASS * (1 - r)}


def judge_first_token_logprobs(winner: str, confidence: int, top: int) -> dict[str, Any]:
    """The logprobs entry of a one-letter verdict, with ``top`` alternatives."""
    alternatives: list[tuple[str, float]] = []
    for letter, p in ab_probabilities(winner, confidence).items():
        alternatives.append((letter, p * _BARE_LETTER_SHARE))
        alternatives.append((" " + letter, p * (1 - _BARE_LETTER_SHARE)))
    alternatives.extend(_OTHER_FIRST_TOKENS)
    alternatives.sort(key=lambda item: -item[1])
    logprobs = {token: math.log(p) for token, p in alternatives}
    return {
        "token": winner,
        "logprob": logprobs[winner],
        "bytes": list(winner.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())}
            for t, lp in list(logprobs.items())[:top]
        ],
    }


def malformed_judge_content(kind: str) -> str:
    if kind == "truncated":
        return '{"winner": "A", "reasoning": "Essay A develops its argument with more'
    if kind == "prose":
        return "Both essays have merit, but on balance I prefer the first one for its clarity."
    if kind == "wrong_field":
        return '{"verdict": "A", "reasoning": "The first essay is clearer.", "confidence": 6}'
    if kind == "winner_c":
        return '{"winner": "C", "reasoning": "Neither essay answers the prompt.", "confidence": 5}'
    return '{"winner": "B", "reasoning": "The second essay is more vivid.", "confidence": 42}'


def verdict_json(winner: str, confidence: int) -> str:
    reasoning = f"Essay {winner} is better organised and argues its point more clearly."
    return orjson.dumps(
        {"winner": winner, "reasoning": reasoning, "confidence": confidence}
    ).decode()


def validate_top_logprobs(body: dict[str, Any]) -> int:
    """``top_logprobs`` as OpenAI checks it: 0-20, and only together with ``logprobs``."""
    top = body.get("top_logprobs")
    if top is None:
        return 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise ValueError(f"Invalid 'top_logprobs': {top!r} is not an integer from 0 to 20")
    if not body.get("logprobs"):
        raise ValueError("'logprobs' must be set to true when 'top_logprobs' is used")
    return top


def validate_request(body: Any) -> tuple[str, list[dict[str, Any]], int | None]:
    """Checks OpenAI would make; a ValueError becomes a 400 like the real API's."""
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("'model' is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise ValueError("each message needs a valid 'role'")
    temperature = body.get("temperature")
    if temperature is not None and not (0 <= temperature <= 2):
        raise ValueError(f"Invalid 'temperature': {temperature} is not between 0 and 2")
    top_p = body.get("top_p")
    if top_p is not None and not (0 <= top_p <= 1):
        raise ValueError(f"Invalid 'top_p': {top_p} is not between 0 and 1")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"Invalid 'max_tokens': {max_tokens}")
    return model, messages, max_tokens


# The Messages API's request fields (it refuses any other, as this fake does).
ANTHROPIC_FIELDS = frozenset(
    {
        *("model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k"),
        *("stop_sequences", "metadata", "stream", "tools", "tool_choice", "thinking"),
    }
)


def validate_anthropic_request(body: Any) -> tuple[str, list[dict[str, Any]], int]:
    """Checks Anthropic's Messages API would make (``max_tokens`` required, no ``system``
    role inside ``messages``, temperature 0..1, no unknown fields); returns the messages with
    ``system`` first as a system message, so the rest of the fake reads them as chat messages."""
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    unknown = sorted(set(body) - ANTHROPIC_FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]}: Extra inputs are not permitted")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError("max_tokens: Field required (a positive integer)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: at least one message is required")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise ValueError(
                "messages: roles must be 'user' or 'assistant' (the system prompt goes in "
                "the top-level 'system' field)"
            )
    temperature = body.get("temperature")
    if temperature is not None and not (0 <= temperature <= 1):
        raise ValueError(f"temperature: {temperature} is not between 0 and 1")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError("system: must be a string")
    head = [{"role": "system", "content": system}] if system else []
    return model, head + messages, max_tokens


def logprobs_for(content: str, top: int = 0) -> list[dict[str, Any]]:
    """One entry per word; with ``top`` > 0 each lists the word itself and ``top - 1`` less
    likely alternatives, as OpenAI's top_logprobs does (without ``top``, an empty list)."""
    entries: list[dict[str, Any]] = []
    for w in content.split():
        logprob = -0.05 * (len(w) % 7)
        alternatives: list[dict[str, Any]] = []
        if top:
            alternatives.append({"token": w, "logprob": logprob, "bytes": None})
            others = (a for a in WORDS if a != w)
            for k, alt in zip(range(top - 1), others, strict=False):
                alternatives.append({"token": alt, "logprob": logprob - 2.0 - k, "bytes": None})
        entries.append(
            {"token": w, "logprob": logprob, "bytes": None, "top_logprobs": alternatives}
        )
    return entries


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens"}


def anthropic_message(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as Anthropic's Messages API answers it."""
    choice = payload["choices"][0]
    usage = payload["usage"]
    return {
        "id": "msg_" + payload["id"].removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": payload["model"],
        "content": [{"type": "text", "text": choice["message"]["content"]}],
        "stop_reason": _ANTHROPIC_STOP.get(choice["finish_reason"], choice["finish_reason"]),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
        },
    }
