"""The dataset card written with every export: a Hugging Face ``README.md`` (YAML header with
configs and features, the license left to the user) that says what is in the data and where it
came from: generators, judge and method, prompts (text and hash), counts, confidence histogram,
flip rate, dedup and bias figures, cost, the job ids and the project version.

Every figure comes from ``pair_stats`` of the exported selection (what ``GET /pairs/stats``
answers for the same filters); the YAML key ``chatpgt`` repeats them machine-readably.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.prompts import (
    DEFAULT_PROMPT_TEMPLATES,
    JUDGE_AB_SYSTEM_PROMPT,
    JUDGE_AB_USER_TEMPLATE,
    JUDGE_SYSTEM_PROMPT,
    JUDGE_USER_TEMPLATE,
    text_hash,
)
from chatpgt.datasets import repository as dataset_repo
from chatpgt.datasets.parquet import hf_features
from chatpgt.pairs import repository
from chatpgt.pairs.repository import PairFilters
from chatpgt.pairs.schemas import PairStats
from chatpgt.pairs.stats import pair_stats


def project_version() -> str:
    try:
        return importlib.metadata.version("chatpgt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _prompt_entry(kind: str, text: str) -> dict[str, str]:
    return {"kind": kind, "sha256_16": text_hash(text), "text": text}


def _job_prompts(job: dataset_repo.JobProvenance) -> list[dict[str, str]]:
    request = job.request
    entries = []
    if job.system_prompt:
        entries.append(_prompt_entry("system", job.system_prompt))
    if "import" not in request:
        for template in request.get("prompt_templates") or DEFAULT_PROMPT_TEMPLATES:
            entries.append(_prompt_entry("user_template", template))
        if request.get("judge"):
            method = request["judge"].get("method", "json")
            system, user = (
                (JUDGE_AB_SYSTEM_PROMPT, JUDGE_AB_USER_TEMPLATE)
                if method == "ab_probability"
                else (JUDGE_SYSTEM_PROMPT, JUDGE_USER_TEMPLATE)
            )
            entries += [_prompt_entry("judge_system", system), _prompt_entry("judge_user", user)]
    return entries


def _job_summary(job: dataset_repo.JobProvenance) -> dict[str, Any]:
    request = job.request
    summary: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if "import" in request:
        summary["imported_from"] = request["import"]
    else:
        summary["generators"] = [
            {
                k: g.get(k)
                for k in (
                    "provider",
                    "model",
                    "samples_per_topic",
                    "temperature",
                    "top_p",
                    "max_tokens",
                )
                if k in g
            }
            for g in request.get("generators", [])
        ]
        judge = request.get("judge") or {}
        summary["judge"] = {
            "provider": judge.get("provider"),
            "model": judge.get("model"),
            "method": judge.get("method", "json"),
            "both_orders": judge.get("both_orders", True),
        }
        summary["pairing"] = request.get("pairing", "best_vs_worst")
        summary["include_corpus_pairs"] = request.get("include_corpus_pairs", False)
    summary["prompts"] = [{k: v for k, v in p.items() if k != "text"} for p in _job_prompts(job)]
    return summary


def _filters_dict(filters: PairFilters) -> dict[str, Any]:
    data = asdict(filters)
    data["job_ids"] = list(filters.job_ids)
    return data


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def render_card(
    stats: PairStats,
    jobs: Sequence[dataset_repo.JobProvenance],
    *,
    filters: PairFilters,
    data_files: str,
    balance: dict[str, int] | None = None,
    created_at: datetime | None = None,
) -> str:
    """The card's text. ``data_files`` is the glob of the data files relative to the card (the
    ``configs`` entry); ``balance`` the length balancer's summary when it ran."""
    created = (created_at or datetime.now(UTC)).isoformat(timespec="seconds")
    pairs = balance["pairs_after"] if balance else stats.counts.total
    job_summaries = [_job_summary(job) for job in jobs]
    header = {
        "license": "unknown",
        "pretty_name": "ChatPGT preference pairs",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "chatpgt", "synthetic"],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}
        ],
        "dataset_info": {
            "features": hf_features(),
            "splits": [{"name": "train", "num_examples": pairs}],
        },
        "chatpgt": {
            "project_version": project_version(),
            "created_at": created,
            "job_ids": [job.job_id for job in jobs],
            "filters": _filters_dict(filters),
            "length_balancing": balance,
            "stats": stats.model_dump(mode="json"),
            "jobs": job_summaries,
        },
    }
    prompts: dict[str, dict[str, str]] = {}
    for job in jobs:
        for entry in _job_prompts(job):
            prompts.setdefault(entry["sha256_16"], entry)

    out = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    out += [
        "# ChatPGT preference pairs",
        "",
        "Preference pairs (chosen/rejected essays) made by ChatPGT from "
        "candidate essays of several generators, compared by a blinded LLM judge in both orders. "
        "Rows are TRL's conversational preference format: `prompt` is the exact list of messages "
        "(system, user) the essays were generated with, `chosen` and `rejected` one assistant "
        "message each; `id`, `job_id`, `topic`, `confidence` (1-10), `chosen_model`, "
        "`rejected_model` and `human_label` (the reviewers' verdict, empty when unlabelled) "
        "describe the pair.",
        "",
        "**License:** not set. Choose one (the `license` field above) before you share this "
        "dataset; the essays' licenses follow the providers' terms of use.",
        "",
        f"Exported {created} by chatpgt {project_version()} from datagen job(s) "
        f"{', '.join(str(job.job_id) for job in jobs) or '(none)'}; selection: "
        f"`{_filters_dict(filters)}`.",
        "",
        "## Counts",
        "",
        _table(
            ["pairs", "judged", "corpus (real essay chosen)"],
            [[stats.counts.total, stats.counts.judged, stats.counts.corpus]],
        ),
        "",
    ]
    if balance:
        out += [
            "Length balancing: of "
            f"{balance['pairs_before']} pairs, {balance['dropped']} were dropped so that the "
            "chosen essay is the longer one in half of the pairs; "
            f"{balance['pairs_after']} remain. The other figures describe the selection before "
            "balancing.",
            "",
        ]
    out += [
        "## Confidence histogram",
        "",
        _table(["bucket", "pairs"], [[b.bucket, b.count] for b in stats.confidence_histogram]),
        "",
        "## Judge consistency",
        "",
        f"Matchups judged in both orders: {stats.judge.matchups}; order flips: "
        f"{stats.judge.flips}; flip rate: {_share(stats.judge.flip_rate)}.",
        "",
        "## Generators (win rates)",
        "",
        _table(
            ["model", "wins", "losses", "win rate"],
            [[m.model, m.wins, m.losses, m.win_rate] for m in stats.models],
        ),
        "",
        "## Bias checks",
        "",
        f"Chosen essay longer: {stats.bias.length.chosen_longer}, shorter: "
        f"{stats.bias.length.chosen_shorter}, equal: {stats.bias.length.equal_length} "
        f"(chosen-longer share {_share(stats.bias.length.chosen_longer_share)}). "
        f"Judge verdicts for the essay shown first: {stats.bias.position.a_wins}, second: "
        f"{stats.bias.position.b_wins} (position-A win share "
        f"{_share(stats.bias.position.a_win_share)}).",
        "",
        _table(
            ["job", "pairs", "chosen longer", "position A wins", "best generator"],
            [
                [
                    j.job_id,
                    j.pairs,
                    _share(j.length.chosen_longer_share),
                    _share(j.position.a_win_share),
                    f"{j.models[0].model} ({_share(j.models[0].win_rate)})" if j.models else None,
                ]
                for j in stats.bias.per_job
            ],
        ),
        "",
        "## Near-duplicates",
        "",
        f"Flagged essays (MinHash-LSH): "
        f"{stats.dedup.flagged_essays.get('essay', 0)} near-copies of another candidate, "
        f"{stats.dedup.flagged_essays.get('corpus', 0)} near-copies of the real essay; "
        + (
            f"pairs with one left out at similarity ≥ {stats.dedup.threshold}: "
            f"{stats.dedup.pairs_excluded}."
            if stats.dedup.threshold is not None
            else "no dedup threshold applied."
        ),
        "",
        "## Cost",
        "",
        _table(
            ["work", "count", "cost (USD)", "prompt tokens", "completion tokens"],
            [
                [name, w.count, w.cost_usd, w.prompt_tokens, w.completion_tokens]
                for name, w in (
                    ("generations", stats.cost.generations),
                    ("judgments", stats.cost.judgments),
                )
            ],
        ),
        "",
        f"Total: ${stats.cost.total_cost_usd:.4f}.",
        "",
        "## Jobs",
        "",
    ]
    for summary in job_summaries:
        out.append(f"- job {summary['job_id']} ({summary['status']}): " + _describe_job(summary))
    out += ["", "## Prompts", ""]
    for digest, entry in prompts.items():
        out += [f"### {entry['kind']} `{digest}`", "", "```text", entry["text"], "```", ""]
    return "\n".join(out).rstrip() + "\n"


def _describe_job(job: dict[str, Any]) -> str:
    if "imported_from" in job:
        source = job["imported_from"]
        return (
            f"{source.get('rows')} pairs imported from `{source.get('dataset')}` "
            f"(split {source.get('split')})"
        )
    gens = ", ".join(
        f"{g.get('provider')}:{g.get('model')} ×{g.get('samples_per_topic', 1)} "
        f"(t={g.get('temperature')})"
        for g in job["generators"]
    )
    judge = job["judge"]
    return (
        f"generators {gens}; judge {judge['provider']}:{judge['model']} "
        f"(method {judge['method']}, both orders: {judge['both_orders']}); "
        f"pairing {job['pairing']}"
    )


async def build_card(
    session: AsyncSession,
    filters: PairFilters,
    *,
    data_files: str,
    balance: dict[str, int] | None = None,
) -> str:
    """The card of the pairs matching ``filters`` (statistics and provenance from the
    database). The session's transaction may hold job summaries ``pair_stats`` stored."""
    stats = await pair_stats(session, filters)
    job_ids = await repository.selection_job_ids(session, filters)
    jobs = await dataset_repo.job_provenance(session, job_ids)
    return render_card(stats, jobs, filters=filters, data_files=data_files, balance=balance)
