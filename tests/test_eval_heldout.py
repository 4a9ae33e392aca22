"""Held-out essays stay held out: the SFT data step records its essay split, no held-out essay
reaches the SFT training examples, and DPO drops pairs on held-out topics."""

from __future__ import annotations

import json
from pathlib import Path

from chatpgt.training import corpus
from tests import fixtures_training as ft

tiny_model_dir = ft.tiny_model_dir
essay_corpus = ft.essay_corpus


def test_a_held_out_essay_is_never_in_the_sft_training_examples(
    tiny_model_dir: Path, essay_corpus: Path, tmp_path: Path
) -> None:
    from chatpgt.training.recipes import _prepare_sft_data, load_tokenizer
    from chatpgt.training.schemas import SFTRequest

    body = ft.sft_body(tiny_model_dir, essay_corpus, eval_fraction=0.34)
    request = SFTRequest.model_validate(body)
    tokenizer, _ = load_tokenizer(str(tiny_model_dir))
    report = _prepare_sft_data(request, tokenizer, tmp_path, tmp_path)
    split = report["split"]
    essays = corpus.load_essays(str(essay_corpus))
    assert split["essays"] == len(essays) == 6
    held = [essays[e["index"]] for e in split["eval"]]
    assert [e.title for e in held] == [e["title"] for e in split["eval"]]
    assert len(held) == 2 and len(split["train"]) == 4
    assert {e["index"] for e in split["train"]}.isdisjoint(e["index"] for e in split["eval"])

    train_rows = [json.loads(line) for line in (tmp_path / "train.jsonl").open()]
    train_text = "\n".join(
        # every message: the system prompt, the user's title prompt, the essay
        "\n".join(m["content"] for m in r["prompt"] + r["completion"])
        for r in train_rows
    )
    for essay in held:
        assert essay.title not in train_text
        # No paragraph of a held-out essay appears in any training completion.
        for paragraph in corpus.normalize_essay(essay.text).split("\n\n"):
            assert paragraph not in train_text
    # ... and every training essay is there.
    for e in split["train"]:
        assert essays[e["index"]].title in train_text


def test_dpo_export_drops_pairs_on_held_out_topics(tmp_path: Path) -> None:
    from chatpgt.training.recipes import exclude_topics

    path = tmp_path / "pairs.jsonl"
    rows = [{"topic": t, "prompt": [], "chosen": [], "rejected": []} for t in ("A", "B", "A", "C")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert exclude_topics(path, []) == 0
    assert exclude_topics(path, ["A", "Z"]) == 2
    assert [json.loads(line)["topic"] for line in path.open()] == ["B", "C"]


def test_the_api_process_imports_no_torch_sklearn_or_matplotlib() -> None:
    import subprocess
    import sys

    code = (
        "import sys, api.main, api.routers.eval, chatpgt.evaluation.service; "
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
