"""The model card: a Hugging Face ``README.md`` for every trained model's folder.

YAML metadata as the Hub reads it (``base_model``, ``datasets``, ``library_name``, ``tags``,
``pipeline_tag``, and ``model-index`` with the results of the model's latest succeeded
evaluation), then what a user needs: how to load it, the recipe and hyperparameters, the data
(corpus and essay split, or the pairs' selection), the lineage, the evaluation table and the
default system prompt. ``license`` is left for the user to choose. Pure: the caller
(:mod:`chatpgt.serving.service`) reads the rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from chatpgt.datasets.card import project_version
from chatpgt.evaluation.table import rows as eval_rows
from chatpgt.paths import looks_like_hub_id


@dataclass(frozen=True, slots=True)
class LineageItem:
    id: int
    name: str
    kind: str
    path: str
    run_id: int | None


@dataclass(frozen=True, slots=True)
class CardInputs:
    """Everything a card says, as plain values."""

    model: LineageItem
    lineage: list[LineageItem]  # root first, the model last
    run: dict[str, Any] | None  # the training run's row (request, data_report, metrics, ...)
    sft_corpus: str | None  # the corpus of the lineage's SFT run
    metrics: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None  # what the saved template renders by default
    evaluation: dict[str, Any] | None = None  # {"run_id", "entry", "reference", "heldout"}


KIND_TITLES = {"sft": "supervised fine-tuning (SFT)", "dpo": "direct preference optimization (DPO)"}
TRAINERS = {"sft": "TRL `SFTTrainer`", "dpo": "TRL `DPOTrainer`"}


def base_model_id(lineage: list[LineageItem]) -> str | None:
    """The nearest ancestor that is a Hugging Face id: what the Hub's model tree links to (a
    local ancestor has no page to link to)."""
    for item in reversed(lineage[:-1]):
        if looks_like_hub_id(item.path) and not item.path.startswith(("/", ".", "~")):
            return item.path
    return None


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def model_index(name: str, evaluation: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The ``model-index`` entry with the evaluation's metrics (None when not evaluated)."""
    if not evaluation:
        return None
    entry = evaluation["entry"]
    metrics: list[dict[str, Any]] = []

    def add(kind: str, label: str, interval: dict[str, Any] | None) -> None:
        value = _finite((interval or {}).get("value"))
        if value is not None:
            metrics.append({"type": kind, "value": round(value, 6), "name": label})

    add("perplexity", "Perplexity on the held-out essays", entry.get("perplexity"))
    add("style_p_author", "Style classifier P(author)", entry.get("style"))
    win = entry.get("win_rate") or {}
    reference = (evaluation.get("reference") or {}).get("name") or "the reference"
    add("win_rate", f"Judge win rate vs {reference}", win.get("win_rate"))
    add(
        "length_controlled_win_rate",
        f"Length-controlled win rate vs {reference}",
        win.get("length_controlled_win_rate"),
    )
    if not metrics:
        return None
    heldout = evaluation.get("heldout") or {}
    corpus = heldout.get("corpus") or "essays"
    essays = len(heldout.get("essays") or [])
    return [
        {
            "name": name,
            "results": [
                {
                    "task": {"type": "text-generation", "name": "Essay writing"},
                    "dataset": {
                        "name": f"{corpus} held-out essays ({essays})",
                        # the Hub's dataset id when the corpus is one
                        "type": str(corpus) if _is_hub_dataset(str(corpus)) else "essays",
                        "split": "heldout",
                    },
                    "metrics": metrics,
                }
            ],
        }
    ]


def metadata(inputs: CardInputs, adapter: bool = False) -> dict[str, Any]:
    """The card's YAML header (``adapter``: of the run's LoRA adapter, for peft)."""
    model = inputs.model
    header: dict[str, Any] = {}
    if adapter:
        # An adapter applies to the model its run started from: the base_model only when that
        # one is on the Hub.
        parent = inputs.lineage[-2] if len(inputs.lineage) > 1 else None
        start = parent.path if parent and looks_like_hub_id(parent.path) else None
        base = start if start and not start.startswith(("/", ".", "~")) else None
    else:
        base = base_model_id(inputs.lineage)
    if base:
        header["base_model"] = base
        header["base_model_relation"] = "adapter" if adapter else "finetune"
    datasets = (
        [inputs.sft_corpus] if inputs.sft_corpus and _is_hub_dataset(inputs.sft_corpus) else []
    )
    if datasets:
        header["datasets"] = datasets
    header["library_name"] = "peft" if adapter else "transformers"
    header["pipeline_tag"] = "text-generation"
    header["language"] = ["en"]
    header["tags"] = ["chatpgt", "trl", model.kind, "essays", *(["lora"] if adapter else [])]
    index = model_index(model.name, inputs.evaluation)
    if index:
        header["model-index"] = index
    header["chatpgt"] = {
        "project_version": project_version(),
        "model_id": model.id,
        "run_id": model.run_id,
        "kind": model.kind,
        "lineage": [{"id": i.id, "name": i.name, "kind": i.kind} for i in inputs.lineage],
        "evaluation_run_id": inputs.evaluation["run_id"] if inputs.evaluation else None,
    }
    return header


def _is_hub_dataset(ref: str) -> bool:
    return looks_like_hub_id(ref) and not ref.startswith(("/", ".", "~"))


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return "`" + yaml.safe_dump(value, default_flow_style=True).strip() + "`"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def render(inputs: CardInputs, adapter: bool = False) -> str:
    """The card's text: YAML header, then Markdown (``adapter``: the card of the run's LoRA
    adapter rather than of the merged model)."""
    model = inputs.model
    run = inputs.run or {}
    request = run.get("request") or {}
    parent = inputs.lineage[-2] if len(inputs.lineage) > 1 else None
    header = yaml.safe_dump(metadata(inputs, adapter), sort_keys=False, allow_unicode=True)
    header = header.rstrip()
    out = ["---", header, "---", "", f"# {model.name}", ""]
    what = KIND_TITLES.get(model.kind, model.kind)
    out += [
        f"`{model.name}` was trained by ChatPGT with {what} "
        + (f"from `{parent.name}` (`{parent.path}`)." if parent else "."),
        "",
        "**License:** not set. Choose one (add `license:` to the header above) before you share "
        "this model; it inherits the terms of its base model and of its training data.",
        "",
        "## Use it",
        "",
    ]
    if adapter:
        out += [
            "This repository holds the LoRA adapter only. It applies to "
            + (f"`{parent.name}` (`{parent.path}`)" if parent else "its base model")
            + ", the model named in `adapter_config.json` (`base_model_name_or_path`): peft "
            "loads that model and applies the adapter.",
            "",
            "```python",
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{model.name}-adapter")',
            f'tokenizer = AutoTokenizer.from_pretrained("{model.name}-adapter")',
            "```",
            "",
            "Replace the name with the Hub id once pushed (`chatpgt models push --adapter`).",
        ]
    else:
        out += [
            "```python",
            "from transformers import pipeline",
            "",
            f'generator = pipeline("text-generation", model="{model.path}")',
            'messages = [{"role": "user", "content": \'Write an essay titled "How to Do Great '
            "Work\".'}]",
            'print(generator(messages, max_new_tokens=400)[0]["generated_text"][-1]["content"])',
            "```",
            "",
            "Replace the path with the Hub id once pushed (`chatpgt models push`).",
        ]
    if inputs.system_prompt:
        out += [
            "",
            "The chat template renders the system prompt the model was trained with when a "
            "conversation has none (below); a conversation with its own system message keeps it.",
            "",
            "```text",
            inputs.system_prompt,
            "```",
        ]
    out += ["", "## Training", ""]
    if run:
        hp = request.get("hyperparameters") or {}
        out += [
            f"Run {run.get('id')} ({model.kind}, {TRAINERS.get(model.kind, model.kind)}), "
            f"finished {run.get('finished_at') or '–'}.",
            "",
            *_table(["hyperparameter", "value"], [[k, v] for k, v in hp.items() if v is not None]),
            "",
        ]
        final = (run.get("metrics") or {}).get("final") or inputs.metrics
        if final:
            out += _table(["final metric", "value"], [[k, v] for k, v in sorted(final.items())])
            out.append("")
    else:
        out += ["No training run is recorded for this model.", ""]
    out += ["## Data", ""]
    out += _data_section(model.kind, request, run.get("data_report") or {}, run)
    out += ["", "## Lineage", ""]
    for i, item in enumerate(inputs.lineage):
        run_note = f", run {item.run_id}" if item.run_id else ""
        out.append(f"{i + 1}. `{item.name}` ({item.kind}{run_note}): `{item.path}`")
    out += ["", "## Evaluation", ""]
    out += _evaluation_section(inputs)
    out += ["", f"Card written by chatpgt {project_version()}."]
    return "\n".join(out).rstrip() + "\n"


def _data_section(
    kind: str, request: dict[str, Any], report: dict[str, Any], run: dict[str, Any]
) -> list[str]:
    if kind == "sft":
        split = run.get("essay_split") or {}
        essays = report.get("essays") or {}
        examples = report.get("examples") or {}
        long_essays = report.get("long_essays") or {}
        return [
            f"Corpus `{request.get('corpus')}`: {essays.get('train', '–')} essays for training, "
            f"{essays.get('eval', '–')} held out (split by essay, fraction "
            f"{split.get('eval_fraction', '–')}, seed {split.get('seed', '–')}); "
            f"{examples.get('train', '–')} training and {examples.get('eval', '–')} evaluation "
            "examples. Essays longer than the maximum length were split into parts at paragraph "
            f"boundaries ({long_essays.get('essays_split', 0)} essays split), never truncated "
            f"(truncated: {report.get('truncated', 0)}).",
            "",
            "Prompt templates:",
            "",
            *[f"- `{t}`" for t in (request.get("prompts") or {}).get("templates") or []],
        ]
    if kind == "dpo":
        pairs = request.get("pairs") or {}
        return [
            "Preference pairs from ChatPGT's datagen (essays compared by a blinded judge in both "
            f"orders), selected with `{json.dumps(pairs)}`: "
            f"{report.get('pairs_exported', '–')} pairs exported "
            f"({request.get('pairs_at_submit', '–')} matched at submit), "
            f"{report.get('pairs_excluded_heldout', 0)} on held-out essays left out, "
            f"{report.get('pairs_truncated', 0)} truncated. Reference model: "
            f"{report.get('reference', '–')}. `chatpgt pairs export` with the same selection "
            "writes the dataset and its card.",
        ]
    return ["–"]


def _evaluation_section(inputs: CardInputs) -> list[str]:
    evaluation = inputs.evaluation
    if not evaluation:
        return [
            "Not evaluated yet: `chatpgt eval run` measures perplexity, style and win rate "
            "on the lineage's held-out essays; the card is rewritten when it succeeds."
        ]
    heldout = evaluation.get("heldout") or {}
    reference = (evaluation.get("reference") or {}).get("name") or "–"
    row = eval_rows({"models": [evaluation["entry"]]})[0]
    return [
        f"Evaluation run {evaluation['run_id']} on {len(heldout.get('essays') or [])} held-out "
        f"essays of `{heldout.get('corpus', '–')}` (none of them trained on by this lineage); "
        f"win rates against {reference}; 95% bootstrap intervals.",
        "",
        *_table(list(row.keys()), [list(row.values())]),
    ]
