"""The local provider: generation and A/B judging on tiny real-tokenizer llamas, routing through
ProviderPool, logprob judging against the fake OpenAI server, and the SmolLM2 GGUF conversion.

The tiny models are random 2-layer llamas with the SmolLM2 tokenizer (tests/local_model_fixtures);
every expected value is computed independently with plain transformers calls.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatpgt.providers.ab import ab_from_top_logprobs, confidence_from_ab, debiased_first_wins
from chatpgt.providers.client import ProviderPool
from chatpgt.providers.local import LocalProvider
from chatpgt.providers.smollm2 import SMOLLM2_ALIAS, SMOLLM2_DIRNAME, ensure_smollm2
from chatpgt.providers.types import ChatRequest, LocalOptions, ProviderError
from chatpgt.settings import ProviderConfig
from chatpgt.testing.fake_content import judge_verdict
from tests.local_model_fixtures import (
    STOP_AFTER,
    STOP_PROBE,
    prompt_ids,
    smollm2_cache_dir,
    smollm2_tokenizer_dir,
    tiny_chat_model,
    tiny_stopping_model,
)
from tests.procs import ROOT

__all__ = ["smollm2_cache_dir", "smollm2_tokenizer_dir", "tiny_chat_model", "tiny_stopping_model"]


def messages(i: int) -> list[dict[str, str]]:
    # Prompts of different lengths, so batches really are padded.
    return [{"role": "user", "content": "Write about rivers" + " and lakes" * i + "."}]


def chat_request(model: Path | str, msgs: list[dict[str, str]], **kwargs: Any) -> ChatRequest:
    return ChatRequest(provider="local", model=str(model), messages=msgs, **kwargs)


@pytest.fixture
async def local() -> AsyncIterator[LocalProvider]:
    provider = LocalProvider("local", LocalOptions(max_batch_size=4, batch_wait_ms=50))
    yield provider
    await provider.aclose()


def reference_greedy(model_dir: Path, msgs: list[dict[str, str]], n: int) -> tuple[list[int], int]:
    """(new tokens, prompt length) of plain transformers greedy decoding, one prompt alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([prompt_ids(tokenizer, msgs)])
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1] :].tolist(), ids.shape[1]


def reference_ab(
    model_dir: Path, msgs: list[dict[str, str]], prefix: str = ""
) -> tuple[float, float]:
    """Normalised next-token probabilities of "A"/" A" and "B"/" B", one prompt alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    ids = torch.tensor([prompt_ids(tokenizer, msgs) + prefix_ids])
    with torch.inference_mode():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)

    def letter(s: str) -> float:
        ids_ = {tokenizer.convert_tokens_to_ids(t) for t in (s, "Ġ" + s)}
        return float(sum(probs[i] for i in ids_))

    a, b = letter("A"), letter("B")
    return a / (a + b), b / (a + b)


# --- generation ----------------------------------------------------------------------------------


async def test_chat_matches_plain_transformers_and_counts_tokens_exactly(
    local: LocalProvider, tiny_chat_model: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    msgs = messages(2)
    result = await local.chat(chat_request(tiny_chat_model, msgs, temperature=0, max_tokens=9))
    expected, prompt_len = reference_greedy(tiny_chat_model, msgs, 9)

    assert result.prompt_tokens == prompt_len
    assert result.completion_tokens == 9 and result.finish_reason == "length"
    assert result.text == tokenizer.decode(expected, skip_special_tokens=True)
    assert result.text.strip()
    assert result.cost_usd == Decimal(0) and result.attempts == 1 and result.latency_ms >= 0


async def test_chat_stops_at_end_of_text_and_counts_it(
    local: LocalProvider, tiny_stopping_model: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_stopping_model)
    expected, _ = reference_greedy(tiny_stopping_model, STOP_PROBE, 20)
    stop = expected.index(tokenizer.eos_token_id)
    assert stop < STOP_AFTER

    result = await local.chat(
        chat_request(tiny_stopping_model, STOP_PROBE, temperature=0, max_tokens=20)
    )
    assert result.finish_reason == "stop"
    assert result.completion_tokens == stop + 1  # the end-of-text token counts
    assert result.text == tokenizer.decode(expected[:stop], skip_special_tokens=True)


async def test_concurrent_calls_share_batches_and_match_single_calls(
    local: LocalProvider, tiny_chat_model: Path
) -> None:
    reqs = [
        chat_request(tiny_chat_model, messages(i), temperature=0, max_tokens=6) for i in range(6)
    ]
    # A shorter max_tokens in the same batch is honoured per request.
    reqs.append(chat_request(tiny_chat_model, messages(9), temperature=0, max_tokens=2))
    alone = [await local.chat(r) for r in reqs]
    assert local.stats.generate_batches == len(reqs)

    together = await asyncio.gather(*(local.chat(r) for r in reqs))
    batches = local.stats.generate_batches - len(reqs)
    assert batches == 2 and local.stats.largest_batch == 4  # 7 requests, batches of at most 4
    for single, batched in zip(alone, together, strict=True):
        assert batched.text == single.text
        assert batched.prompt_tokens == single.prompt_tokens
        assert batched.completion_tokens == single.completion_tokens
    assert together[-1].completion_tokens == 2 and together[0].completion_tokens == 6


async def test_streamed_text_grows_to_the_answer_per_request_in_a_batch(
    local: LocalProvider, tiny_chat_model: Path, tiny_stopping_model: Path, monkeypatch: Any
) -> None:
    """``on_text`` hears each request's own text as it grows, in a batch with others (one
    streaming, one not, one cut shorter), and last the whole answer; the answers are those
    of requests made without it."""
    from chatpgt.providers import local as local_module

    monkeypatch.setattr(local_module, "STREAM_EVERY_S", 0.0)  # every decoding step
    reqs = [
        chat_request(tiny_chat_model, messages(1), temperature=0, max_tokens=8),
        chat_request(tiny_chat_model, messages(2), temperature=0, max_tokens=8),
        chat_request(tiny_chat_model, messages(3), temperature=0, max_tokens=3),
    ]
    alone = [await local.chat(r) for r in reqs]
    heard: dict[int, list[str]] = {0: [], 2: []}
    together = await asyncio.gather(
        local.chat(reqs[0], on_text=heard[0].append),
        local.chat(reqs[1]),
        local.chat(reqs[2], on_text=heard[2].append),
    )
    for single, batched in zip(alone, together, strict=True):
        assert batched.text == single.text
    for i, texts in heard.items():
        assert len(texts) >= 3, texts  # a text per step, then the end
        assert texts[-1] == alone[i].text
        for shorter, longer in itertools.pairwise(texts):
            assert longer.startswith(shorter.rstrip("\ufffd"))  # grows (a split character aside)
    assert heard[2][-1] == alone[2].text  # cut to its own 3-token limit while batched

    # A model that stops early: the stream stops at its end-of-text token too.
    stopped: list[str] = []
    result = await local.chat(
        chat_request(tiny_stopping_model, STOP_PROBE, temperature=0, max_tokens=20),
        on_text=stopped.append,
    )
    assert result.finish_reason == "stop" and stopped[-1] == result.text


async def test_sampling_settings_do_not_share_a_batch(
    local: LocalProvider, tiny_chat_model: Path
) -> None:
    greedy = [
        chat_request(tiny_chat_model, messages(i), temperature=0, max_tokens=3) for i in (1, 2)
    ]
    sampled = [
        chat_request(tiny_chat_model, messages(i), temperature=0.8, top_p=0.9, max_tokens=3)
        for i in (1, 2)
    ]
    results = await asyncio.gather(*(local.chat(r) for r in [*greedy, *sampled]))
    assert local.stats.generate_batches == 2
    assert all(r.completion_tokens == 3 for r in results)


async def test_a_prompt_too_long_fails_alone_in_its_batch(
    local: LocalProvider, tiny_chat_model: Path
) -> None:
    too_long = [{"role": "user", "content": "river " * 600}]  # the tiny model holds 512
    results = await asyncio.gather(
        local.chat(chat_request(tiny_chat_model, messages(1), temperature=0, max_tokens=3)),
        local.chat(chat_request(tiny_chat_model, too_long, temperature=0, max_tokens=3)),
        local.judge_ab(chat_request(tiny_chat_model, too_long)),
        return_exceptions=True,
    )
    ok, failed, failed_judge = results
    assert not isinstance(ok, BaseException) and ok.completion_tokens == 3
    for error in (failed, failed_judge):
        assert isinstance(error, ProviderError) and not error.retryable
        assert "does not fit the context of 512 tokens" in error.message
    assert local.stats.generate_batches == 1


# --- judging -------------------------------------------------------------------------------------


async def test_judge_ab_is_normalised_deterministic_and_batch_independent(
    local: LocalProvider, tiny_chat_model: Path
) -> None:
    reqs = [chat_request(tiny_chat_model, messages(i)) for i in range(5)]
    first = await local.judge_ab(reqs[0])
    again = await local.judge_ab(reqs[0])
    assert first.p_a + first.p_b == pytest.approx(1.0, abs=1e-12)
    assert (again.p_a, again.p_b) == (first.p_a, first.p_b)
    assert first.completion_tokens == 0 and 0 < first.mass <= 1
    assert (first.p_a, first.p_b) == pytest.approx(reference_ab(tiny_chat_model, reqs[0].messages))

    prefix = '{"winner": "'
    prefixed = await local.judge_ab(
        chat_request(tiny_chat_model, reqs[0].messages, extra={"answer_prefix": prefix})
    )
    assert prefixed.prompt_tokens > first.prompt_tokens and prefixed.p_a != first.p_a
    expected = reference_ab(tiny_chat_model, reqs[0].messages, prefix)
    assert (prefixed.p_a, prefixed.p_b) == pytest.approx(expected)

    # Left-padded in one forward pass, each prompt scores as it does alone.
    alone = [await local.judge_ab(r) for r in reqs]
    together = await asyncio.gather(*(local.judge_ab(r) for r in reqs))
    assert local.stats.score_batches == 3 + len(reqs) + 2  # batches of at most 4
    for single, batched in zip(alone, together, strict=True):
        assert batched.p_a == pytest.approx(single.p_a, abs=1e-5)
        assert batched.prompt_tokens == single.prompt_tokens


def test_confidence_from_ab() -> None:
    assert confidence_from_ab(0.5, 0.5) == ("A", 1)
    assert confidence_from_ab(1.0, 0.0) == ("A", 10)
    assert confidence_from_ab(0.0, 2e-9) == ("B", 10)  # only the ratio matters
    assert confidence_from_ab(0.25, 0.75) == ("B", 6)  # r = 0.75: 1 + 4.5, half up
    assert confidence_from_ab(0.9, 0.1) == ("A", 8)
    assert confidence_from_ab(0.52, 0.48) == ("A", 1)
    assert confidence_from_ab(0.55, 0.45) == ("A", 2)
    levels = [confidence_from_ab(1 - r, r)[1] for r in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    assert levels == sorted(levels) and levels[0] == 1 and levels[-1] == 10
    for bad in ((0.0, 0.0), (-0.1, 0.5), (float("nan"), 0.5)):
        with pytest.raises(ValueError):
            confidence_from_ab(*bad)


def test_debiased_first_wins_cancels_position_bias() -> None:
    assert debiased_first_wins(0.74, 0.74) == pytest.approx(0.5)  # always "A": no preference
    assert debiased_first_wins(0.9, 0.2) == pytest.approx(0.85)
    assert confidence_from_ab(0.85, 0.15) == ("A", 7)
    with pytest.raises(ValueError):
        debiased_first_wins(1.2, 0.5)


def test_ab_from_top_logprobs_sums_variants_and_refuses_missing_letters() -> None:
    import math

    top = [
        {"token": "A", "logprob": math.log(0.4)},
        {"token": " B", "logprob": math.log(0.1)},
        {"token": " A", "logprob": math.log(0.2)},
        {"token": "a", "logprob": math.log(0.2)},  # lower case is not a verdict
    ]
    p_a, p_b, mass = ab_from_top_logprobs([{"token": "A", "logprob": 0.0, "top_logprobs": top}])
    assert (p_a, p_b, mass) == pytest.approx((6 / 7, 1 / 7, 0.7))
    for content in (None, [], [{"token": "A", "top_logprobs": []}], [{"top_logprobs": top[3:]}]):
        with pytest.raises(ValueError):
            ab_from_top_logprobs(content)


# --- through ProviderPool ------------------------------------------------------------------------


def local_config(**overrides: Any) -> dict[str, ProviderConfig]:
    cfg = ProviderConfig.model_validate({"name": "on-box", "kind": "local", **overrides})
    return {cfg.name: cfg}


async def test_pool_routes_local_provider_with_prices(tiny_chat_model: Path) -> None:
    model = str(tiny_chat_model)
    prices = {model: {"input_per_mtok": 1.0, "output_per_mtok": 3.0}}
    async with ProviderPool(local_config(prices=prices)) as pool:
        req = ChatRequest("on-box", model, messages(1), temperature=0, max_tokens=4)
        result = await pool.chat(req)
        assert result.completion_tokens == 4
        expected = (Decimal(result.prompt_tokens) * 1 + Decimal(4) * 3) / 1_000_000
        assert result.cost_usd == expected

        ab = await pool.judge_ab(req)
        assert ab.p_a + ab.p_b == pytest.approx(1.0)
        assert ab.cost_usd == Decimal(ab.prompt_tokens) / 1_000_000
        stats = pool.local_provider("on-box").stats
        assert (stats.requests, stats.generate_batches, stats.score_batches) == (2, 1, 1)


async def test_pool_refuses_unknown_local_model(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    async with ProviderPool(local_config()) as pool:
        for call in (pool.chat, pool.judge_ab):
            with pytest.raises(ProviderError) as info:
                await call(ChatRequest("on-box", str(missing), messages(0)))
            assert not info.value.retryable and str(missing) in info.value.message
        tmp_path.joinpath("empty").mkdir()
        with pytest.raises(ProviderError, match="without config.json") as info:
            await pool.chat(ChatRequest("on-box", str(tmp_path / "empty"), messages(0)))
        assert not info.value.retryable


def test_api_side_imports_do_not_load_torch() -> None:
    code = (
        "import sys, chatpgt.providers.client, chatpgt.providers.local, chatpgt.providers.ab;"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# --- logprob judging against the fake OpenAI server ----------------------------------------------


def judge_prompt(essay_a: str, essay_b: str) -> list[dict[str, str]]:
    text = (
        f"<essay_a>{essay_a}</essay_a>\n<essay_b>{essay_b}</essay_b>\n"
        "Which essay is better? Answer with one letter, A or B."
    )
    return [{"role": "user", "content": text}]


async def test_openai_judge_ab_reads_top_logprobs(
    fake: httpx.AsyncClient, providers_config: list[dict[str, object]]
) -> None:
    configs = {c.name: c for c in map(ProviderConfig.model_validate, providers_config)}
    essays = [f"Essay number {i} about harbours and winter light." for i in range(6)]
    async with ProviderPool(configs) as pool:
        for first, second in zip(essays[::2], essays[1::2], strict=True):
            expected = judge_verdict(first, second)
            forward = await pool.judge_ab(ChatRequest("fake", "judge", judge_prompt(first, second)))
            assert confidence_from_ab(forward.p_a, forward.p_b) == expected
            assert forward.p_a + forward.p_b == pytest.approx(1.0)
            assert forward.mass == pytest.approx(0.9)  # the fake's letter mass, variants summed
            assert forward.completion_tokens == 1 and forward.attempts == 1
            assert forward.cost_usd > 0

            swapped = await pool.judge_ab(ChatRequest("fake", "judge", judge_prompt(second, first)))
            winner, confidence = confidence_from_ab(swapped.p_a, swapped.p_b)
            assert winner != expected[0] and confidence == expected[1]

        # The same retries as chat: a 503 is retried, and the attempt counted.
        (await fake.post("/_control", json={"script": ["503"]})).raise_for_status()
        retried = await pool.judge_ab(ChatRequest("fake", "judge", judge_prompt(*essays[:2])))
        assert retried.attempts == 2

        # A model whose first token offers neither letter is not turned into a verdict.
        with pytest.raises(ProviderError) as info:
            await pool.judge_ab(ChatRequest("fake", "writer-a", judge_prompt(*essays[:2])))
        assert not info.value.retryable and "neither" in info.value.message
        assert info.value.cost_usd > 0 and info.value.completion_tokens == 1


async def test_fake_server_validates_top_logprobs(fake: httpx.AsyncClient) -> None:
    body = {"model": "writer-a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    bad = await fake.post("/v1/chat/completions", json={**body, "top_logprobs": 3})
    assert bad.status_code == 400  # logprobs must be on, as OpenAI requires
    good = await fake.post(
        "/v1/chat/completions", json={**body, "logprobs": True, "top_logprobs": 3}
    )
    data = good.json()
    tokens = data["choices"][0]["logprobs"]["content"]
    assert len(tokens) == data["usage"]["completion_tokens"] == 3
    for t in tokens:
        assert len(t["top_logprobs"]) == 3 and t["top_logprobs"][0]["token"] == t["token"]


# --- the bundled SmolLM2, converted from the GGUF ------------------------------------------------


def subdirectories(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_file())


async def test_smollm2_converts_once_and_serves_as_alias(
    smollm2_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converted once per session by the fixture (~20-40 s); this test reuses it."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = smollm2_cache_dir / SMOLLM2_DIRNAME
    # Nothing but the finished directory: no temporary leftovers.
    assert subdirectories(smollm2_cache_dir) == [SMOLLM2_DIRNAME]
    assert "model.safetensors" in files_in(target)

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GGUF was loaded again")

    with monkeypatch.context() as m:
        m.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
        m.setattr(transformers.AutoTokenizer, "from_pretrained", no_loading)
        assert ensure_smollm2(smollm2_cache_dir) == target

    model = AutoModelForCausalLM.from_pretrained(target)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # 134.5M
    del model
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert tokenizer.chat_template
    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert templated.endswith("<|im_start|>assistant\n")

    provider = LocalProvider("local", LocalOptions(cache_dir=smollm2_cache_dir))
    try:
        question = [{"role": "user", "content": "What is the capital of France? One word."}]
        result = await provider.chat(chat_request(SMOLLM2_ALIAS, question, temperature=0))
        assert "paris" in result.text.lower() and result.finish_reason == "stop"
        verdict = await provider.judge_ab(
            chat_request(
                SMOLLM2_ALIAS,
                [
                    {
                        "role": "user",
                        "content": "Option A: 'Paris is the capital of France.' Option B: "
                        "'Paris is the capital of Japan.' Which option is true? "
                        "Answer with the letter only.",
                    }
                ],
            )
        )
        assert verdict.p_a + verdict.p_b == pytest.approx(1.0) and verdict.mass > 0.05
    finally:
        await provider.aclose()
