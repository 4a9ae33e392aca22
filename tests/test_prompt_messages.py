"""The prompt of a pair is exactly what its essays were asked with, and what SFT trains on.

A real job (API, Celery worker, fake provider) writes the essays; the fake server records the
messages of every writer request, and the export's ``prompt`` of every pair must equal them. SFT's
default conversations use the same system prompt and templates.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT, title_messages
from chatpgt.training import corpus
from chatpgt.training.schemas import PromptSpec, SampleSpec
from tests import procs
from tests.datagen_helpers import job_body, wait_job
from tests.fixtures_training import tiny_model_dir  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def _key(messages: list[dict[str, str]]) -> str:
    return json.dumps(messages, sort_keys=True)


@pytest.mark.parametrize("system_prompt", [None, "Write tersely.", ""])
async def test_exported_prompt_is_what_the_writers_received(
    api: httpx.AsyncClient,
    session: AsyncSession,
    datagen_worker: procs.Proc,
    fake: httpx.AsyncClient,
    system_prompt: str | None,
) -> None:
    titles = ["Why taste matters", "How to start", "The schlep"]
    body = job_body(titles, samples=2, pairing="all_pairs")
    if system_prompt is not None:
        body["system_prompt"] = system_prompt
    created = await api.post("/datagen/jobs", json=body)
    assert created.status_code == 201, created.text
    job = await wait_job(api, created.json()["id"])
    assert job["status"] == "succeeded", job

    received = (await fake.get("/_requests")).json()
    assert len(received) == len(titles) * 3
    sent = {_key(r["messages"]) for r in received}
    assert len(sent) == len(titles)  # every writer of a topic got the same messages
    export = await api.get("/pairs/export", params={"job_id": job["id"]})
    assert export.status_code == 200, export.text
    rows = [json.loads(line) for line in export.text.splitlines()]
    assert rows
    assert {_key(row["prompt"]) for row in rows} == sent
    want_system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    for row in rows:
        roles = [m["role"] for m in row["prompt"]]
        assert roles == (["system", "user"] if want_system else ["user"])
        if want_system:
            assert row["prompt"][0]["content"] == want_system
    # GET /pairs shows the same messages
    page = (await api.get("/pairs", params={"job_id": job["id"], "limit": 500})).json()
    by_id = {row["id"]: row["prompt"] for row in rows}
    assert {item["id"]: item["prompt_messages"] for item in page["items"]} == by_id
    if system_prompt is None:
        # SFT on its defaults trains on the conversations datagen asked with by default.
        spec = PromptSpec()
        assert spec.system_prompt == DEFAULT_SYSTEM_PROMPT
        assert SampleSpec().system_prompt == DEFAULT_SYSTEM_PROMPT
        sft_prompts = {
            _key(title_messages(title, template, spec.system_prompt))
            for title in titles
            for template in spec.templates
        }
        assert sent <= sft_prompts


def test_sft_examples_carry_the_system_prompt() -> None:
    essays = [corpus.Essay(title="Cities", text="One two three.\n\nFour five six seven eight.")]
    spec = PromptSpec()

    def build(system_prompt: str | None) -> list[dict[str, object]]:
        return corpus.build_examples(
            essays,
            measure=lambda prompt, completion: len(completion.split()) + 5,
            count=lambda text: len(text.split()),
            max_length=500,
            templates=spec.templates,
            continuation_template=spec.continuation_template,
            context_words=3,
            seed=1,
            system_prompt=system_prompt,
        )

    rows = build(spec.system_prompt)
    assert len(rows) == 1
    prompt = rows[0]["prompt"]
    assert prompt in [title_messages("Cities", t) for t in spec.templates]
    assert isinstance(prompt, list)
    assert prompt[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    none = build(None)[0]["prompt"]
    assert isinstance(none, list)
    assert [m["role"] for m in none] == ["user"]


def test_sft_lengths_count_the_system_prompt(tiny_model_dir: Path) -> None:  # noqa: F811
    """SFT measures its examples with the system prompt it trains with (no hidden overflow)."""
    from transformers import AutoTokenizer

    from chatpgt.training.recipes import token_counters

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    bare, _ = token_counters(tokenizer)
    measure, _ = token_counters(tokenizer, DEFAULT_SYSTEM_PROMPT)
    messages = [
        *title_messages("Cities", "Write an essay about {title}."),
        {"role": "assistant", "content": "An essay."},
    ]
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert measure("Write an essay about Cities.", "An essay.") == len(encoded["input_ids"])
    assert measure("Write an essay about Cities.", "An essay.") > bare(
        "Write an essay about Cities.", "An essay."
    )
