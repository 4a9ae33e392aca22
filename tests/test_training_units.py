"""Training pieces on their own: corpus sources and splitting (with the real tokenizer and TRL's
own tokenization), the run state table, the DPO export format, the migration, and the API
process staying free of torch."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.orchestration.status import TERMINAL, TRAINING_RUN, RunStatus
from chatpgt.pairs.formats import trl_record
from chatpgt.pairs.models import Pair
from chatpgt.pairs.repository import PairFilters
from chatpgt.training import corpus
from chatpgt.training.errors import CorpusUnreadable, TrainingDataError
from chatpgt.training.export import export_pairs
from chatpgt.training.schemas import DEFAULT_CONTINUATION_TEMPLATE, DEFAULT_PROMPT_TEMPLATES
from tests import fixtures_training as ft
from tests import procs

tiny_model_dir = ft.tiny_model_dir


@pytest.fixture(scope="module")
def counters(tiny_model_dir: Path) -> tuple[corpus.MeasureFn, corpus.CountFn]:
    from transformers import AutoTokenizer

    from chatpgt.training.recipes import token_counters

    return token_counters(AutoTokenizer.from_pretrained(tiny_model_dir))


def build(
    essays: list[corpus.Essay],
    counters: tuple[corpus.MeasureFn, corpus.CountFn],
    max_length: int,
    report: corpus.SplitReport,
) -> list[dict[str, object]]:
    measure, count = counters
    return corpus.build_examples(
        essays,
        measure=measure,
        count=count,
        max_length=max_length,
        templates=DEFAULT_PROMPT_TEMPLATES,
        continuation_template=DEFAULT_CONTINUATION_TEMPLATE,
        context_words=12,
        seed=42,
        report=report,
    )


def completion(row: dict[str, object]) -> str:
    return row["completion"][0]["content"]  # type: ignore[index]


def prompt(row: dict[str, object]) -> str:
    return row["prompt"][0]["content"]  # type: ignore[index]


# ------------------------------------------------------------------------------------------
# Splitting long essays


def test_long_essays_split_into_consecutive_parts_that_fit(
    counters: tuple[corpus.MeasureFn, corpus.CountFn],
) -> None:
    rng = random.Random(1)
    paragraphs = ft.essay_text(rng, 12, (6, 20))
    one_paragraph = ft.essay_text(rng, 1, (300, 300))  # one paragraph, one sentence, too long
    no_spaces = "x" * 2500
    essays = [
        corpus.Essay("Short", "Just a few words."),
        corpus.Essay("Paragraphs", paragraphs),
        corpus.Essay("One paragraph", one_paragraph),
        corpus.Essay("No spaces", no_spaces),
        corpus.Essay("Empty", "  \n\n "),
    ]
    report = corpus.SplitReport()
    rows = build(essays, counters, 160, report)
    measure = counters[0]

    by_essay: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        title = next(e.title for e in essays if e.title in prompt(row))
        by_essay.setdefault(title, []).append(row)
    for row in rows:  # every example fits, measured exactly as TRL renders it
        assert measure(prompt(row), completion(row)) == row["tokens"] <= 160
    # Nothing lost, nothing duplicated: the parts put back together are the essay.
    assert completion(by_essay["Short"][0]) == "Just a few words."
    assert "\n\n".join(completion(r) for r in by_essay["Paragraphs"]) == corpus.normalize_essay(
        paragraphs
    )
    assert " ".join(completion(r) for r in by_essay["One paragraph"]) == one_paragraph
    assert "".join(completion(r) for r in by_essay["No spaces"]) == no_spaces
    # Part 1 is asked for with the essay's prompt, later parts continue it.
    parts = by_essay["Paragraphs"]
    assert prompt(parts[0]) in [t.format(title="Paragraphs") for t in DEFAULT_PROMPT_TEMPLATES]
    assert prompt(parts[1]).startswith('Continue the essay titled "Paragraphs" (part 2).')
    tail = " ".join(completion(parts[0]).split()[-12:])
    assert prompt(parts[1]).endswith(tail)

    assert report.essays == 4 and report.skipped_empty == 1
    assert report.essays_split == 3
    assert report.split_titles == ["Paragraphs", "One paragraph", "No spaces"]
    assert report.parts_from_split_essays == len(rows) - 1
    assert report.max_parts == max(len(v) for v in by_essay.values())
    assert report.as_dict()["truncated"] == 0


def test_max_length_too_small_for_any_text_is_refused(
    counters: tuple[corpus.MeasureFn, corpus.CountFn],
) -> None:
    essay = corpus.Essay("Title", ft.essay_text(random.Random(2), 5, (10, 12)))
    with pytest.raises(TrainingDataError, match="max_length 48"):
        build([essay], counters, 48, corpus.SplitReport())


def test_trl_tokenizes_the_examples_to_the_measured_length_without_truncation(
    tiny_model_dir: Path, tmp_path: Path, counters: tuple[corpus.MeasureFn, corpus.CountFn]
) -> None:
    """The guarantee behind "never truncated": TRL's own tokenization of every example has
    exactly the length the splitter measured, and the loss covers the essay only."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    essays = [
        corpus.Essay(f"Essay {i}", ft.essay_text(random.Random(i), 4, (8, 16))) for i in range(3)
    ]
    rows = build(essays, counters, 128, corpus.SplitReport())
    assert len(rows) > len(essays)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=SFTConfig(
            output_dir=str(tmp_path),
            max_length=128,
            bf16=False,
            use_cpu=True,
            activation_checkpointing=False,
            report_to="none",
            completion_only_loss=True,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    dataset = trainer.train_dataset
    assert dataset is not None and len(dataset) == len(rows)
    for example, row in zip(dataset, rows, strict=True):
        assert len(example["input_ids"]) == row["tokens"]
        essay_ids = tokenizer(completion(row), add_special_tokens=False)["input_ids"]
        trained = [t for t in example["labels"] if t != -100]
        # The loss is on the essay (plus the end-of-turn tokens), never on the prompt.
        assert trained[: len(essay_ids)] == essay_ids
        assert len(trained) - len(essay_ids) <= 3


def test_split_train_eval_holds_out_whole_essays_reproducibly() -> None:
    essays = [corpus.Essay(f"E{i}", "text") for i in range(10)]
    train, held = corpus.split_train_eval(essays, 0.2, seed=42)
    assert len(train) == 8 and len(held) == 2
    assert {e.title for e in train} | {e.title for e in held} == {e.title for e in essays}
    assert corpus.split_train_eval(essays, 0.2, seed=42) == (train, held)
    assert corpus.split_train_eval(essays, 0.2, seed=7) != (train, held)
    two = essays[:2]
    assert [len(p) for p in corpus.split_train_eval(two, 0.2, seed=42)] == [1, 1]
    assert [len(p) for p in corpus.split_train_eval(essays, 0.0, seed=42)] == [10, 0]


# ------------------------------------------------------------------------------------------
# Corpus sources


def test_local_corpus_sources(tmp_path: Path) -> None:
    csv_file = tmp_path / "essays.csv"
    csv_file.write_text('Title,Text\n"Cities","Big, busy places.\n\nWith people."\n')
    jsonl = tmp_path / "essays.jsonl"
    jsonl.write_text(json.dumps({"title": "Taste", "content": "Taste is real."}) + "\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "how_to-start.md").write_text("Start small.\n")
    (folder / "b.txt").write_text("# Do Things That Don't Scale\n\nRecruit users by hand.\n")
    (folder / "notes.pdf").write_bytes(b"%PDF")

    for source in (csv_file, jsonl, folder):
        corpus.check_local_source(str(source))
    corpus.check_local_source("sgoel9/paul_graham_essays")  # a hub id: the worker resolves it

    assert corpus.load_essays(str(csv_file)) == [
        corpus.Essay("Cities", "Big, busy places.\n\nWith people.")
    ]
    assert corpus.load_essays(str(jsonl)) == [corpus.Essay("Taste", "Taste is real.")]
    assert corpus.load_essays(str(folder)) == [
        corpus.Essay("Do Things That Don't Scale", "\nRecruit users by hand.\n"),
        corpus.Essay("how to start", "Start small.\n"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.csv", None, "does not exist"),
        ("essays.parquet", b"PAR1", "not a .csv"),
        ("cols.csv", b"author,words\n", "title column"),
        ("latin1.csv", b"title,text\n\xe9t\xe9,x\n", "cannot be read"),
        ("ok.csv", b"Title,Essay\nA,b\n", None),
        ("bad.csv", b"\xff\xfetitle", "cannot be read"),
        ("bad.jsonl", b"{not json\n", "not JSON lines"),
        ("list.jsonl", b"[1, 2]\n", "not JSON objects"),
    ],
)
def test_unreadable_corpus_is_refused(
    tmp_path: Path, name: str, content: bytes | None, needle: str | None
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    if needle is None:
        corpus.check_local_source(str(path))
        return
    with pytest.raises(CorpusUnreadable, match=needle):
        corpus.check_local_source(str(path))


# ------------------------------------------------------------------------------------------
# Run states


def test_run_state_table() -> None:
    runs, s = TRAINING_RUN, RunStatus
    assert runs.sources_for(s.RUNNING) == {s.QUEUED, s.RUNNING}
    assert runs.sources_for(s.CANCELLED) == {s.QUEUED, s.RUNNING}
    assert runs.sources_for(s.SUCCEEDED) == {s.RUNNING}
    for terminal in TERMINAL:
        assert not any(runs.allows(terminal, t) for t in RunStatus)
    assert not runs.allows(s.QUEUED, s.SUCCEEDED)
    with pytest.raises(ValueError):
        runs.sources_for("paused")


# ------------------------------------------------------------------------------------------
# DPO export


async def test_dpo_export_is_trl_conversational_preference_format(
    session: AsyncSession, database_url: str, tmp_path: Path
) -> None:
    job_id = await ft.insert_pairs(session, [9, 4, 6, 7])
    target = tmp_path / "pairs.jsonl"
    filters = PairFilters(min_confidence=6, job_ids=(job_id,))
    n = await asyncio.to_thread(export_pairs, database_url, filters, target)
    assert n == 3

    rows = [json.loads(line) for line in target.read_text().splitlines()]
    query = select(Pair).where(Pair.confidence >= 6).order_by(Pair.id)
    pairs = (await session.scalars(query)).all()
    assert [row["id"] for row in rows] == [p.id for p in pairs]  # ascending id
    for row, pair in zip(rows, pairs, strict=True):
        want = trl_record([{"role": "user", "content": pair.prompt}], pair.chosen, pair.rejected)
        assert {k: row[k] for k in ("prompt", "chosen", "rejected")} == want
        assert row["prompt"] == [{"role": "user", "content": pair.prompt}]
        assert row["chosen"] == [{"role": "assistant", "content": pair.chosen}]
        assert row["rejected"] == [{"role": "assistant", "content": pair.rejected}]
    assert not await asyncio.to_thread(
        export_pairs, database_url, PairFilters(min_confidence=9.5), tmp_path / "none.jsonl"
    )


# ------------------------------------------------------------------------------------------
# Boundaries


def test_api_process_never_imports_torch() -> None:
    code = (
        "import sys, api.main, workers.app, workers.training_tasks, chatpgt.training.service;"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=procs.ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_resume_skips_checkpoints_cut_off_mid_save(tmp_path: Path) -> None:
    """A worker killed while saving leaves a checkpoint folder without (or with a truncated)
    trainer_state.json, which the Trainer writes last: resume from the newest complete one."""
    from chatpgt.training.checkpoints import last_checkpoint as _last_checkpoint

    assert _last_checkpoint(tmp_path / "missing") is None

    def checkpoint(step: int, state: str | None) -> Path:
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"weights")
        if state is not None:
            (path / "trainer_state.json").write_text(state)
        return path

    assert _last_checkpoint(tmp_path) is None
    checkpoint(3, json.dumps({"global_step": 3}))
    complete = checkpoint(12, json.dumps({"global_step": 12}))
    checkpoint(15, None)  # killed before the trainer state was written
    checkpoint(18, '{"global_step": 18, "log_hist')  # killed while writing it
    checkpoint(21, json.dumps({"global_step": 6}))  # not this folder's state
    (tmp_path / "checkpoint-24-tmp").mkdir()
    assert _last_checkpoint(tmp_path) == str(complete)


def test_finished_run_keeps_the_trainer_state_not_the_optimizer(tmp_path: Path) -> None:
    """A succeeded run: spare checkpoints go; the newest keeps its trainer state (log history,
    RNG) but neither the optimizer and scheduler state nor, at the final step, the weights that
    model/ holds. A checkpoint that is not at the final step keeps its weights."""
    from chatpgt.training.checkpoints import last_checkpoint, prune_finished_run

    def checkpoint(run_dir: Path, step: int) -> Path:
        path = run_dir / f"checkpoint-{step}"
        path.mkdir(parents=True)
        for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (path / name).write_bytes(b"x" * 2**20)
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        return path

    run_dir = tmp_path / "run"
    checkpoint(run_dir, 4)
    last = checkpoint(run_dir, 6)
    (run_dir / "model").mkdir()
    (run_dir / "model" / "model.safetensors").write_bytes(b"final")
    pruned = prune_finished_run(run_dir, 6)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint-6", "model"]
    assert sorted(p.name for p in last.iterdir()) == [
        ".chatpgt-pruned",
        "rng_state.pth",
        "trainer_state.json",
    ]
    assert last_checkpoint(run_dir) is None  # never resumed from: it has no weights
    assert pruned["removed_checkpoints"] == ["checkpoint-4"]
    assert pruned["freed_mb"] == 7.0
    assert (run_dir / "model" / "model.safetensors").read_bytes() == b"final"

    other = tmp_path / "other"
    checkpoint(other, 5)
    prune_finished_run(other, 6)
    names = sorted(p.name for p in (other / "checkpoint-5").iterdir())
    assert names == [".chatpgt-pruned", "model.safetensors", "rng_state.pth", "trainer_state.json"]


def test_hub_model_offline_is_found_in_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, a hub id is usable when its config.json is in the Hugging Face cache (the layout
    huggingface_hub writes: refs/main -> snapshots/<commit>/), and refused otherwise; online,
    the worker downloads it."""
    from huggingface_hub import constants

    from chatpgt.training.hub import offline_unavailable_reason

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--cached-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert offline_unavailable_reason("someone/cached-model", tmp_path) is None
    reason = offline_unavailable_reason("someone/other-model", tmp_path)
    assert reason is not None and "not in the local cache" in reason and str(tmp_path) in reason
    (repo / "snapshots" / commit / "config.json").unlink()  # an incomplete download
    assert offline_unavailable_reason("someone/cached-model", tmp_path) is not None
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert offline_unavailable_reason("someone/other-model", tmp_path) is None
