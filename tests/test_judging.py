"""Strict verdict parsing, combining both orders, and the pairing rules."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from chatpgt.datagen.budget import Budget
from chatpgt.datagen.judging import JudgeParseError, Verdict, combine, parse_verdict
from chatpgt.datagen.pairing import PairingRule, matchups, select_pairs


def test_parse_accepts_the_asked_json_and_a_fenced_block() -> None:
    v = parse_verdict('{"winner": "b", "reasoning": "Clearer.", "confidence": 7}')
    assert (v.winner, v.reasoning, v.confidence) == ("B", "Clearer.", 7)
    fenced = '```json\n{"winner": "A", "reasoning": "x", "confidence": 10.0}\n```'
    assert parse_verdict(fenced).confidence == 10


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Essay A is better.",
        '{"winner": "A", "reasoning": "x", "confidence": 7',  # truncated
        '{"winner": "C", "reasoning": "x", "confidence": 7}',
        '{"winner": "A", "reasoning": "", "confidence": 7}',
        '{"winner": "A", "reasoning": "x", "confidence": 42}',
        '{"winner": "A", "reasoning": "x", "confidence": 6.5}',
        '{"winner": "A", "reasoning": "x", "confidence": true}',
        '{"winner": "A", "reasoning": "x"}',
        '["A", "x", 7]',
        'Sure! {"winner": "A", "reasoning": "x", "confidence": 7}',
    ],
)
def test_parse_rejects_anything_else(answer: str) -> None:
    with pytest.raises(JudgeParseError):
        parse_verdict(answer)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        # valid JSON without a winner: it used to read "winner must be 'A' or 'B', got None"
        (
            '{"verdict": "A", "reasoning": "x", "confidence": 7}',
            'no "winner" key (the object has: "verdict", "reasoning", "confidence")',
        ),
        ("{}", 'no "winner" key (the object has: none)'),
        ('{"winner": null, "reasoning": "x"}', '"winner" must be "A" or "B", got null'),
        ('{"winner": "C", "reasoning": "x", "confidence": 7}', 'got "C"'),
        ('{"winner": "A", "confidence": 7}', 'no "reasoning" key'),
        ('{"winner": "A", "reasoning": " ", "confidence": 7}', '"reasoning" is empty'),
        ('{"winner": "A", "reasoning": "x"}', 'no "confidence" key'),
        ('{"winner": "A", "reasoning": "x", "confidence": "7"}', 'an integer, got "7"'),
        ('{"winner": "A", "reasoning": "x", "confidence": 42}', "from 1 to 10, got 42"),
        ('["A", "x", 7]', "not a JSON object but a list"),
        ('"A"', "not a JSON object but a string"),
        ("Essay A is better.", "not JSON (Expecting value at char 0)"),
        ('{"winner": "A", "reasoning": "x", "confidence": NaN}', "NaN is not a JSON value"),
    ],
)
def test_a_parse_error_says_what_the_answer_lacked_or_held(answer: str, says: str) -> None:
    with pytest.raises(JudgeParseError) as caught:
        parse_verdict(answer)
    message = str(caught.value)
    assert says in message
    assert message.endswith(f"; the answer: {answer}")  # a short answer is quoted whole


def test_a_parse_error_quotes_the_first_200_characters_on_one_line() -> None:
    answer = '{"verdict": "A",\n"reasoning": "' + "x" * 500 + '\u0000"}'
    with pytest.raises(JudgeParseError) as caught:
        parse_verdict(answer)
    message = str(caught.value)
    quoted = message.split("; the answer: ", 1)[1]
    assert quoted.startswith('{"verdict": "A",\\n"reasoning": "xxx')
    assert quoted.endswith("x…") and len(quoted) == 201 + 1  # 200 chars, one escaped newline
    assert "\n" not in message and "\x00" not in message
    # NUL and lone surrogates, which no text column can hold, come out escaped
    with pytest.raises(JudgeParseError) as caught:
        parse_verdict("A\x00\ud800")
    assert str(caught.value).endswith("the answer: A\\x00\\ud800")
    str(caught.value).encode("utf-8")


def v(jid: int, a: int, b: int, winner: int, conf: int) -> Verdict:
    return Verdict(jid, a, b, winner, conf, f"reason {jid}")


def test_combine_agreeing_orders_gives_the_mean_confidence() -> None:
    o = combine(v(1, 10, 20, 20, 8), v(2, 20, 10, 20, 5))
    assert (o.winner_id, o.loser_id, o.confidence, o.is_tie) == (20, 10, 6.5, False)
    assert o.reasoning == "reason 1"


def test_combine_disagreeing_orders_is_a_tie() -> None:
    o = combine(v(1, 10, 20, 10, 9), v(2, 20, 10, 20, 9))
    assert o.is_tie and o.confidence is None


def test_single_order_keeps_its_own_confidence() -> None:
    o = combine(v(1, 10, 20, 10, 4), None)
    assert (o.winner_id, o.confidence) == (10, 4.0)


def test_all_pairs_keeps_every_decisive_matchup() -> None:
    outcomes = {
        (1, 2): combine(v(1, 1, 2, 1, 8), v(2, 2, 1, 1, 8)),
        (1, 3): combine(v(3, 1, 3, 1, 8), v(4, 3, 1, 3, 8)),  # tie
        (2, 3): combine(v(5, 2, 3, 3, 6), v(6, 3, 2, 3, 6)),
    }
    got = select_pairs(PairingRule.ALL_PAIRS, [1, 2, 3], outcomes)
    assert [(o.winner_id, o.loser_id) for o in got] == [(1, 2), (3, 2)]


def test_best_vs_worst_pairs_the_top_and_bottom_candidate() -> None:
    outcomes = {
        (1, 2): combine(v(1, 1, 2, 2, 8), v(2, 2, 1, 2, 8)),
        (1, 3): combine(v(3, 1, 3, 3, 9), v(4, 3, 1, 3, 7)),
        (2, 3): combine(v(5, 2, 3, 3, 6), v(6, 3, 2, 3, 6)),
    }
    got = select_pairs(PairingRule.BEST_VS_WORST, [1, 2, 3], outcomes)
    assert [(o.winner_id, o.loser_id, o.confidence) for o in got] == [(3, 1, 8.0)]


def test_best_vs_worst_makes_no_pair_when_their_matchup_is_undecided() -> None:
    outcomes = {
        (1, 2): combine(v(1, 1, 2, 2, 8), v(2, 2, 1, 2, 8)),
        (2, 3): combine(v(5, 2, 3, 2, 6), v(6, 3, 2, 3, 6)),  # tie
        # (1, 3) failed: missing
    }
    assert select_pairs(PairingRule.BEST_VS_WORST, [1, 2, 3], outcomes) == []
    assert matchups([3, 1, 2]) == [(1, 2), (1, 3), (2, 3)]


async def test_budget_waits_for_in_flight_requests_then_stops() -> None:
    budget = Budget(Decimal("1.0"), Decimal(0))
    assert await budget.reserve(Decimal("0.6"))
    waiter = asyncio.create_task(budget.reserve(Decimal("0.6")))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # 0.6 reserved + 0.6 would exceed 1.0: wait for the first to settle
    await budget.settle(Decimal("0.6"), Decimal("0.1"))  # it cost less than reserved
    assert await waiter
    await budget.settle(Decimal("0.6"), Decimal("0.6"))
    assert not await budget.reserve(Decimal("0.5"))  # 0.7 spent, nothing in flight: exhausted
    assert budget.exhausted


async def test_budget_without_limit_always_allows() -> None:
    budget = Budget(None, Decimal(0))
    assert await budget.reserve(Decimal("1e9"))


def test_probability_verdicts_are_averaged_over_both_orders() -> None:
    from chatpgt.datagen.judging import combine_probabilities

    # The judge prefers position A (0.7 and 0.6), but essay 10 is favoured in both orders once
    # the bias is averaged out: (0.7 + (1 - 0.6)) / 2 = 0.55 for essay 10.
    o = combine_probabilities(v(1, 10, 20, 10, 5), 0.7, v(2, 20, 10, 20, 3), 0.6)
    assert (o.winner_id, o.loser_id) == (10, 20)
    assert o.confidence == 2.0  # 1 + round(18 * 0.05) = 1 + round(0.9) = 2
    tie = combine_probabilities(v(1, 10, 20, 10, 5), 0.7, v(2, 20, 10, 20, 5), 0.7)
    assert tie.is_tie
    strong = combine_probabilities(v(1, 10, 20, 20, 9), 0.02, v(2, 20, 10, 20, 9), 0.98)
    assert (strong.winner_id, strong.confidence) == (20, 10.0)
