"""Perplexity of held-out essays under a model, on the completion tokens only.

The essays become exactly the conversations SFT trains on: :func:`chatpgt.training.corpus
.build_examples` with the SFT run's system prompt, prompt templates (each essay's the one SFT drew
for it), continuation prompt and ``max_length``, so a long essay is scored in the same parts, with
the same tokens, as the SFT run's ``eval.jsonl`` holds it, and nothing is truncated. Each part
is tokenized the way TRL's completion-only loss sees it: the prompt rendered with the generation
prompt, then the whole conversation; the scored tokens are those after the prompt (the essay and
the end of the assistant turn). Worker only: imports torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from chatpgt.evaluation.stats import Interval, bootstrap
from chatpgt.training import corpus


@dataclass(frozen=True, slots=True)
class ExampleSpec:
    """How essays become conversations: the SFT run's prompts, seed and ``max_length``."""

    templates: Sequence[str]
    continuation_template: str
    context_words: int
    max_length: int
    seed: int
    system_prompt: str | None


@dataclass(frozen=True, slots=True)
class EssayScore:
    title: str
    nll: float  # summed over the essay's completion tokens, nats
    tokens: int
    parts: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else math.nan


def essay_parts(
    essays: Sequence[corpus.Essay],
    spec: ExampleSpec,
    measure: corpus.MeasureFn,
    count: corpus.CountFn,
    template_indices: Sequence[int | None] | None = None,
) -> list[list[dict[str, Any]]]:
    """For each essay, its SFT rows (prompt/completion conversations), as SFT built them.

    ``template_indices`` are the templates SFT drew for these essays (the held-out record stores
    them); ``measure`` must count ``spec.system_prompt`` (:func:`chatpgt.training.recipes
    .token_counters`). Without indices the templates are drawn from one ``Random(seed)`` in essay
    order, which matches SFT only for its whole eval split in order (records from before the
    indices were stored).
    """
    rng = random.Random(spec.seed)
    indices = list(template_indices or [None] * len(essays))
    out = []
    for essay, index in zip(essays, indices, strict=True):
        drawn = rng.randrange(len(spec.templates))
        template = spec.templates[drawn if index is None else index]
        out.append(
            corpus.build_examples(
                [essay],
                measure=measure,
                count=count,
                max_length=spec.max_length,
                templates=[template],
                continuation_template=spec.continuation_template,
                context_words=spec.context_words,
                seed=spec.seed,
                system_prompt=spec.system_prompt,
            )
        )
    return out


def completion_ids(tokenizer: Any, row: dict[str, Any]) -> tuple[list[int], int]:
    """(ids of the whole conversation, index of its first completion token)."""
    prompt: Any = tokenizer.apply_chat_template(
        row["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True
    )
    full: Any = tokenizer.apply_chat_template(
        row["prompt"] + row["completion"], tokenize=True, return_dict=True
    )
    prompt_ids, ids = list(prompt["input_ids"]), list(full["input_ids"])
    start = len(prompt_ids)
    if ids[:start] != prompt_ids:
        # A template that renders the prompt differently once an answer follows: score from the
        # longest common prefix (still only answer tokens).
        start = next((i for i, (a, b) in enumerate(zip(ids, prompt_ids, strict=False)) if a != b))
    return ids, start


@torch.no_grad()
def row_nll(model: Any, ids: list[int], start: int) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of ``ids[start:]`` given what precedes each token."""
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    logits = model(input_ids=input_ids).logits[0].float()
    logprobs = torch.log_softmax(logits[start - 1 : -1], dim=-1)
    targets = input_ids[0, start:]
    nll = -logprobs.gather(1, targets[:, None]).sum()
    return float(nll), len(ids) - start


def score_essays(
    model: Any,
    tokenizer: Any,
    parts: Sequence[Sequence[dict[str, Any]]],
    titles: Sequence[str],
    *,
    on_essay: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[EssayScore]:
    """One :class:`EssayScore` per essay (all its parts); stops early when ``should_stop()``."""
    model.eval()
    scores = []
    for i, (rows, title) in enumerate(zip(parts, titles, strict=True)):
        if should_stop is not None and should_stop():
            break
        nll, tokens = 0.0, 0
        for row in rows:
            ids, start = completion_ids(tokenizer, row)
            row_sum, row_tokens = row_nll(model, ids, start)
            nll += row_sum
            tokens += row_tokens
        scores.append(EssayScore(title=title, nll=nll, tokens=tokens, parts=len(rows)))
        if on_essay is not None:
            on_essay(i + 1)
    return scores


def corpus_perplexity(scores: Sequence[EssayScore]) -> float:
    """exp(total nll / total completion tokens): every token of every essay weighs the same."""
    tokens = sum(s.tokens for s in scores)
    return math.exp(sum(s.nll for s in scores) / tokens) if tokens else math.nan


def perplexity_interval(scores: Sequence[EssayScore], *, samples: int, seed: int) -> Interval:
    """Corpus perplexity with a bootstrap interval over essays (an essay's tokens move together)."""
    return bootstrap(scores, corpus_perplexity, samples=samples, seed=seed)
