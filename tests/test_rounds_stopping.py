"""The evaluation stop rule of rounds runs as pure functions, with fixed scores: improve, no
improvement, patience 2, a lower-is-better metric; the ``evaluation`` field's validation; the
score read out of an eval run's results; the eval request a round submits; the CLI's builder.
No database, no workers (tests/test_rounds.py runs the whole thing)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chatpgt.api_client.requests import InvalidRequest, build_rounds_evaluation
from chatpgt.evaluation.scores import METRICS, model_score
from chatpgt.rounds.models import Round, RoundsRun
from chatpgt.rounds.schemas import RoundsEval, RoundsRequest
from chatpgt.rounds.service import eval_request
from chatpgt.rounds.stopping import Standing, improves, judge_round, standing


def run_rule(
    scores: list[tuple[float, float]],
    *,
    higher_is_better: bool = True,
    min_improvement: float = 0.0,
    patience: int = 1,
) -> tuple[list[bool], Standing, int | None]:
    """Play rounds whose (score, best model's score) are given, as the step does: (improved per
    round, the standing after the last one played, the round after which the run stopped)."""
    now = Standing()
    flags: list[bool] = []
    for number, (score, best) in enumerate(scores, start=1):
        improved, now = judge_round(
            now,
            number,
            score,
            best,
            higher_is_better=higher_is_better,
            min_improvement=min_improvement,
        )
        flags.append(improved)
        if now.stops(patience):
            return flags, now, number
    return flags, now, None


def test_a_round_that_beats_the_best_improves_and_one_that_does_not_stops_the_run() -> None:
    # start 0.50 -> r1 0.60 (improves: best r1) -> r2 0.60 vs r1's 0.60 (no: stop, patience 1)
    flags, now, stopped = run_rule([(0.60, 0.50), (0.60, 0.60), (0.90, 0.60)])
    assert flags == [True, False]
    assert stopped == 2
    assert now == Standing(best_round=1, stale=1)


def test_patience_two_needs_two_rounds_in_a_row_without_improvement() -> None:
    # r1 no, r2 yes (resets), r3 no, r4 no -> stops after r4; best is r2
    scores = [(0.4, 0.5), (0.7, 0.5), (0.69, 0.7), (0.65, 0.7), (0.99, 0.7)]
    flags, now, stopped = run_rule(scores, patience=2)
    assert flags == [False, True, False, False]
    assert stopped == 4
    assert now == Standing(best_round=2, stale=2)
    # the same with patience 1 stops after round 1, the start model the best
    assert run_rule(scores, patience=1)[1:] == (Standing(best_round=0, stale=1), 1)


def test_a_lower_is_better_metric_improves_downwards() -> None:
    # perplexity: start 30 -> r1 25 (improves) -> r2 26 vs r1's 25 (worse: stop)
    flags, now, stopped = run_rule([(25.0, 30.0), (26.0, 25.0)], higher_is_better=False)
    assert (flags, now, stopped) == ([True, False], Standing(best_round=1, stale=1), 2)
    assert not improves(30.0, 25.0, higher_is_better=False, min_improvement=0)
    assert improves(25.0, 30.0, higher_is_better=False, min_improvement=5)
    assert not improves(25.0, 30.0, higher_is_better=False, min_improvement=5.01)


def test_min_improvement_and_ties() -> None:
    assert not improves(0.5, 0.5, higher_is_better=True, min_improvement=0)  # a tie is none
    assert improves(0.51, 0.5, higher_is_better=True, min_improvement=0)
    assert not improves(0.51, 0.5, higher_is_better=True, min_improvement=0.05)
    assert improves(0.56, 0.5, higher_is_better=True, min_improvement=0.05)
    flags, _, stopped = run_rule([(0.9, 0.1)], min_improvement=1e9)
    assert flags == [False] and stopped == 1


def test_standing_replays_the_recorded_rounds() -> None:
    assert standing([]) == Standing(0, 0)
    # a round without evaluation (improved None) counts for nothing
    assert standing([(1, True), (2, None), (3, False)]) == Standing(best_round=1, stale=1)
    assert standing([(1, False), (2, False)]) == Standing(best_round=0, stale=2)
    assert Standing(best_round=0, stale=2).stops(2) and not Standing(0, 1).stops(2)


def eval_body(**overrides: Any) -> dict[str, Any]:
    return {"metric": "style", **overrides}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (eval_body(metric="win_rate"), "needs a judge"),
        (eval_body(metric="length_controlled_win_rate"), "needs a judge"),
        (eval_body(metric="perplexity", perplexity=False), "perplexity is false"),
        (eval_body(style={"enabled": False}), "style.enabled is false"),
        (eval_body(metric="bleu"), "metric"),
        (eval_body(models=[1, 2]), "models"),  # the round's models are the run's to choose
        (eval_body(reference="sft"), "reference"),
        (eval_body(patience=0), "patience"),
        (eval_body(min_improvement=-1), "min_improvement"),
    ],
)
def test_bad_evaluation_fields_are_refused(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RoundsEval.model_validate(body)
    assert needle in str(caught.value)


def test_metrics_and_their_directions() -> None:
    assert {m: METRICS[m].higher_is_better for m in METRICS} == {
        "style": True,
        "perplexity": False,
        "win_rate": True,
        "length_controlled_win_rate": True,
    }
    spec = RoundsEval.model_validate(
        {"metric": "win_rate", "judge": {"provider": "fake", "model": "j"}, "max_essays": 2}
    )
    assert spec.higher_is_better and spec.patience == 1 and spec.min_improvement == 0
    assert not RoundsEval(metric="perplexity").higher_is_better


def test_the_score_is_read_from_the_results_runner_writes() -> None:
    interval = {"low": 0.0, "high": 1.0, "n": 2}
    results = {
        "models": [
            {
                "model_id": 3,
                "perplexity": {**interval, "value": 31.5},
                "style": {**interval, "value": 0.25},
                "win_rate": {
                    "judged": 2,
                    "win_rate": {**interval, "value": 0.5},
                    "length_controlled_win_rate": {**interval, "value": 0.4},
                },
            },
            {"model_id": 4, "perplexity": {**interval, "value": 28.0}, "win_rate": {"judged": 0}},
            {"model_id": 5, "win_rate": {"reference": True}, "perplexity": None},
        ]
    }
    assert model_score(results, 3, "perplexity") == 31.5
    assert model_score(results, 3, "style") == 0.25
    assert model_score(results, 3, "win_rate") == 0.5
    assert model_score(results, 3, "length_controlled_win_rate") == 0.4
    assert model_score(results, 4, "perplexity") == 28.0
    assert model_score(results, 4, "style") is None  # not measured
    assert model_score(results, 4, "win_rate") is None  # no matchup judged
    assert model_score(results, 5, "win_rate") is None
    assert model_score(results, 5, "perplexity") is None  # a non-finite value, cleaned
    assert model_score(results, 99, "style") is None
    assert model_score({}, 3, "style") is None


def test_a_round_evaluates_its_model_next_to_its_start_and_the_best() -> None:
    request = RoundsRequest.model_validate(
        {
            "model": 1,
            "rounds": 3,
            "topics": {"titles": ["t"]},
            "judge": {"provider": "fake", "model": "judge"},
            "evaluation": {
                "metric": "perplexity",
                "max_essays": 2,
                "style": {"enabled": False},
                "generation": {"max_new_tokens": 4},
                "bootstrap_samples": 50,
                "patience": 2,
            },
        }
    )
    run = RoundsRun(id=7, name="smol", start_model={"id": 1, "name": "sft"})
    row = Round(number=2, generator_model={"id": 10, "name": "smol-r1"}, model_id=11)
    plain = eval_request(run, request, row, best_id=10)
    assert plain.models == [10, 11] and plain.name == "smol-r2-eval"
    assert plain.reference == "real"
    assert plain.max_essays == 2 and plain.generation.max_new_tokens == 4
    assert not plain.style.enabled and plain.bootstrap_samples == 50
    assert eval_request(run, request, row, best_id=1).models == [1, 10, 11]


def test_the_cli_builds_the_evaluation() -> None:
    assert build_rounds_evaluation(metric=None) is None
    assert build_rounds_evaluation(
        metric="style", patience=2, min_improvement=0.01, max_essays=3, max_new_tokens=50
    ) == {
        "metric": "style",
        "patience": 2,
        "min_improvement": 0.01,
        "max_essays": 3,
        "generation": {"max_new_tokens": 50},
    }
    judged = build_rounds_evaluation(
        metric="win_rate", judge="fake:judge:ab_probability", style=False, perplexity=False
    )
    assert judged == {
        "metric": "win_rate",
        "judge": {"provider": "fake", "model": "judge", "method": "ab_probability"},
        "style": {"enabled": False},
        "perplexity": False,
    }
    with pytest.raises(InvalidRequest, match="--eval-patience: give --eval-metric"):
        build_rounds_evaluation(metric=None, patience=2)
    with pytest.raises(InvalidRequest, match="provider:model"):
        build_rounds_evaluation(metric="win_rate", judge="nocolon")
