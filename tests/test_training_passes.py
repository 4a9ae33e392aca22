"""What a training run spends its time on, counted in real runs of the tiny model (TRL, no worker):
one held-out evaluation pass, not two; tokens/s reported; optimizer state gone once it succeeded.

The recipes are run in this process with an in-memory reporter (the Reporter interface the
worker's database reporter implements) and a TrainerCallback that counts the evaluation passes
the Trainer makes (``on_evaluate`` fires for each one, ``Trainer.evaluate()`` included).
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

from chatpgt.training.repository import RunSnapshot
from chatpgt.training.schemas import DPORequest, SFTRequest
from tests import fixtures_training as ft

tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus


class MemoryReporter:
    """Keeps what a recipe reports, merged per column as the run row would."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.columns: dict[str, dict[str, Any]] = {}
        self.progress_seen: list[dict[str, Any]] = []

    def report(self, *, force: bool = False, **columns: dict[str, Any]) -> None:
        for key, value in columns.items():
            self.columns.setdefault(key, {}).update(value)
            if key == "progress":
                self.progress_seen.append(dict(value))

    @property
    def should_stop(self) -> bool:
        return self.cancelled.is_set() or self.lost.is_set()


def evaluation_counter() -> Any:
    from transformers import TrainerCallback

    class CountEvaluations(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_evaluate(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            self.steps.append(state.global_step)

    return CountEvaluations()


def snapshot(kind: str, request: dict[str, Any], model_dir: Path) -> RunSnapshot:
    return RunSnapshot(
        id=1,
        kind=kind,
        status="running",
        request=request,
        start_model={"ref": str(model_dir), "path": str(model_dir), "model_id": None},
        output_name="tiny",
        attempts=1,
        cancel_requested=False,
        lease_owner="test",
        lease_expired=False,
        artifacts={},
        data_report={},
        progress={},
        metrics={},
    )


def run_sft(tmp_path: Path, model_dir: Path, corpus: Path, **hyperparameters: Any) -> Any:
    from chatpgt.training import recipes

    body = ft.sft_body(model_dir, corpus, **hyperparameters)
    request = SFTRequest.model_validate(body).model_dump(mode="json")
    reporter = MemoryReporter()
    counter = evaluation_counter()
    run_dir = tmp_path / "sft"
    outcome = recipes.run(snapshot("sft", request, model_dir), run_dir, reporter, "", [counter])
    return outcome, counter.steps, reporter, run_dir


def test_sft_with_held_out_essays_evaluates_once(
    tmp_path: Path, tiny_model_dir: Path, essay_corpus: Path
) -> None:
    """Per-epoch evaluation (the default): the pass the Trainer makes at the end of the epoch is
    the final one; the run does not evaluate the same model on the same essays again."""
    outcome, evaluations, reporter, run_dir = run_sft(tmp_path, tiny_model_dir, essay_corpus)
    assert outcome.status == "succeeded"
    final = outcome.final_metrics
    assert len(evaluations) == 1 and evaluations[0] == final["global_step"]
    # The last step's checkpoint is written without optimizer state (a resume from it trains no
    # further step); the earlier one keeps it (a resume from there needs it).
    last = Path(outcome.artifacts["last_checkpoint"])
    assert last.name == f"checkpoint-{final['global_step']}"
    assert (last / "trainer_state.json").is_file() and not (last / "optimizer.pt").exists()
    assert (run_dir / "checkpoint-6" / "optimizer.pt").is_file()
    # The final eval_loss is that pass's, as the run logged it at the last step.
    assert reporter.columns["metrics"]["latest"]["step"] == final["global_step"]
    assert final["eval_loss"] == reporter.columns["metrics"]["latest"]["eval_loss"]
    # TRL's running count of training tokens is not reported as an eval figure.
    assert "eval_num_tokens" not in final
    assert "eval_num_tokens" not in reporter.columns["metrics"]["latest"]

    # Tokens/s: the non-padding tokens of every training example, over the training time.
    rows = [
        json.loads(line) for line in (run_dir / "data" / "train.jsonl").read_text().splitlines()
    ]
    assert final["train_tokens"] == sum(row["tokens"] for row in rows)
    assert final["train_tokens_per_s"] > 0
    # Its time base is the training time less the evaluation pass, not more.
    assert final["train_tokens"] / final["train_tokens_per_s"] <= final["train_runtime_s"] + 0.5
    # ...and while it runs, in the progress the row shows.
    running = [p for p in reporter.progress_seen if p.get("train_tokens_per_s")]
    assert running and all(p["train_tokens_per_s"] > 0 for p in running)


def test_step_evaluations_reuse_the_last_one_when_it_is_at_the_final_step(
    tmp_path: Path, tiny_model_dir: Path, essay_corpus: Path
) -> None:
    """Every 2 steps over 3 steps: the Trainer evaluates at step 2 and at the last step (3); the
    final metrics are the step-3 pass's, with no third pass."""
    outcome, evaluations, _, _ = run_sft(
        tmp_path, tiny_model_dir, essay_corpus, max_steps=3, eval_steps=2
    )
    assert outcome.status == "succeeded"
    assert evaluations == [2, 3]


def test_dpo_reports_tokens_per_s_and_evaluates_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    from chatpgt.pairs.formats import trl_record
    from chatpgt.training import corpus, recipes

    rng = random.Random(5)
    rows = [
        trl_record(
            [{"role": "user", "content": f"Write an essay titled 'Topic {i}'."}],
            ft.essay_text(rng, 2, (6, 10)),
            ft.essay_text(rng, 1, (4, 6)),
        )
        for i in range(10)
    ]
    run_dir = tmp_path / "dpo"
    (run_dir / "data").mkdir(parents=True)
    # Written as the worker's export writes them; the recipe finds them and exports nothing.
    corpus.write_jsonl(rows, run_dir / "data" / "pairs.jsonl")
    body = {
        "model": str(tiny_model_dir),
        "hyperparameters": {
            "max_steps": 3,
            "learning_rate": 1e-4,
            "logging_steps": 1,
            "max_length": 256,
            "eval_fraction": 0.2,
        },
        "samples": {"prompts": ["Write an essay on the topic: DPO"], "max_new_tokens": 4},
    }
    request = DPORequest.model_validate(body).model_dump(mode="json")
    counter = evaluation_counter()
    outcome = recipes.run(
        snapshot("dpo", request, tiny_model_dir), run_dir, MemoryReporter(), "", [counter]
    )
    assert outcome.status == "succeeded"
    final = outcome.final_metrics
    assert counter.steps == [3]
    assert "eval_loss" in final and "eval_num_tokens" not in final
    assert final["train_tokens"] > 0 and final["train_tokens_per_s"] > 0
