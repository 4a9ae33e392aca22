"""The model card's renderer on a lineage that starts from Hub ids (the end-to-end tests in
tests/test_model_usage.py start from a local tiny model): base_model, datasets and model-index
as huggingface_hub's card classes read them."""

from __future__ import annotations

from huggingface_hub import ModelCard

from chatpgt.serving.card import CardInputs, LineageItem, render

LINEAGE = [
    LineageItem(1, "HuggingFaceTB/SmolLM3-3B", "base", "HuggingFaceTB/SmolLM3-3B", None),
    LineageItem(2, "SmolGraham", "sft", "/data/training/sft-1/model", 1),
    LineageItem(3, "SmolGraham-DPO", "dpo", "/data/training/dpo-2/model", 2),
]
EVALUATION = {
    "run_id": 9,
    "reference": {"kind": "model", "index": 1, "name": "SmolGraham"},
    "heldout": {"corpus": "sgoel9/paul_graham_essays", "essays": [{"index": 3}, {"index": 8}]},
    "entry": {
        "name": "SmolGraham-DPO",
        "kind": "dpo",
        "model_id": 3,
        "perplexity": {"value": 12.5, "low": 11.0, "high": 14.2, "n": 2},
        "style": {"value": 0.61, "low": 0.4, "high": 0.8},
        "win_rate": {
            "win_rate": {"value": 0.55, "low": 0.3, "high": 0.78},
            "length_controlled_win_rate": {"value": float("nan"), "low": 0, "high": 1},
            "ties": 1,
            "flips": 0,
        },
        "descriptive": {"length_words": {"value": 640.0}, "distinct_2": 0.8},
    },
}
RUN = {
    "id": 2,
    "kind": "dpo",
    "request": {
        "pairs": {"min_confidence": 6},
        "hyperparameters": {"beta": 0.1, "learning_rate": 5e-7},
        "pairs_at_submit": 120,
    },
    "data_report": {"pairs_exported": 118, "pairs_excluded_heldout": 2, "pairs_truncated": 0},
    "metrics": {"final": {"train_loss": 0.52}},
    "finished_at": "2026-12-07T17:00:00+00:00",
}


def inputs(evaluation: dict[str, object] | None) -> CardInputs:
    return CardInputs(
        model=LINEAGE[-1],
        lineage=LINEAGE,
        run=RUN,
        sft_corpus="sgoel9/paul_graham_essays",
        system_prompt="You are an essayist.",
        evaluation=evaluation,  # type: ignore[arg-type]
    )


def test_card_from_hub_ids_with_an_evaluation() -> None:
    card = ModelCard(render(inputs(EVALUATION)))
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM3-3B"
    assert data.datasets == ["sgoel9/paul_graham_essays"]
    assert data.library_name == "transformers" and "dpo" in data.tags
    assert getattr(data, "license", None) is None  # left to the user
    results = {r.metric_type: r for r in data.eval_results}
    assert results["perplexity"].metric_value == 12.5
    assert results["style_p_author"].metric_value == 0.61
    assert results["win_rate"].metric_value == 0.55
    assert "length_controlled_win_rate" not in results  # not measured: no number
    assert results["perplexity"].dataset_type == "sgoel9/paul_graham_essays"
    assert "Judge win rate vs SmolGraham" in results["win_rate"].metric_name
    assert "| beta | 0.1 |" in card.text and "118 pairs" in card.text
    assert "You are an essayist." in card.text
    assert "Evaluation run 9 on 2 held-out essays" in card.text


def test_card_without_an_evaluation_has_no_model_index() -> None:
    text = render(inputs(None))
    assert "model-index" not in text
    assert ModelCard(text).data.eval_results is None
    assert "Not evaluated yet" in text
