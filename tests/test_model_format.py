"""The saved model renders the conversation it was trained on (chatpgt.training.chat_format):
with no system message, the system prompt training used; with one, the caller's. Rendered with
the real SmolLM2 tokenizer and chat template, which otherwise inserts its own default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from chatpgt.datagen.prompts import DEFAULT_SYSTEM_PROMPT
from chatpgt.training import chat_format
from tests import local_model_fixtures as lm

smollm2_tokenizer_dir = lm.smollm2_tokenizer_dir
SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM"
USER = [{"role": "user", "content": 'Write an essay titled "Cities".'}]


def render(model_dir: Path, messages: list[dict[str, str]]) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


@pytest.fixture
def tokenizer_copy(smollm2_tokenizer_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(smollm2_tokenizer_dir, target)
    return target


def test_default_system_prompt_replaces_the_base_models(tokenizer_copy: Path) -> None:
    assert SMOLLM_DEFAULT in render(tokenizer_copy, USER)  # the problem this fixes
    assert chat_format.write_default_system(tokenizer_copy, DEFAULT_SYSTEM_PROMPT)
    text = render(tokenizer_copy, USER)
    assert SMOLLM_DEFAULT not in text
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n")
    assert text.endswith(
        '<|im_start|>user\nWrite an essay titled "Cities".<|im_end|>\n<|im_start|>assistant\n'
    )
    # A conversation with its own system message renders it, and only it.
    own = render(tokenizer_copy, [{"role": "system", "content": "Be brief."}, *USER])
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert DEFAULT_SYSTEM_PROMPT not in own and SMOLLM_DEFAULT not in own


def test_rewriting_replaces_and_odd_characters_survive(tokenizer_copy: Path) -> None:
    chat_format.write_default_system(tokenizer_copy, "first prompt")
    odd = 'Quote "this" \\ and {{ that }} {% raw %} é 😀\nsecond line'
    chat_format.write_default_system(tokenizer_copy, odd)  # DPO from an SFT model: replaced
    text = render(tokenizer_copy, USER)
    assert text.startswith(f"<|im_start|>system\n{odd}<|im_end|>\n")
    assert "first prompt" not in text
    template = (tokenizer_copy / chat_format.TEMPLATE_FILE).read_text()
    assert chat_format.default_system_prompt(template) == odd
    assert chat_format.strip_default_system(template).startswith("{% for message in messages %}")


def test_template_in_tokenizer_config(tokenizer_copy: Path) -> None:
    """Tokenizers saved by older transformers keep the template in tokenizer_config.json."""
    jinja = tokenizer_copy / chat_format.TEMPLATE_FILE
    config_path = tokenizer_copy / chat_format.TOKENIZER_CONFIG
    config = json.loads(config_path.read_text())
    config["chat_template"] = jinja.read_text()
    config_path.write_text(json.dumps(config))
    jinja.unlink()
    assert chat_format.write_default_system(tokenizer_copy, "From the config.")
    assert render(tokenizer_copy, USER).startswith("<|im_start|>system\nFrom the config.<|im_end|>")


def test_trained_system_prompt(tmp_path: Path) -> None:
    request = {"prompts": {"system_prompt": "SFT voice"}}
    assert chat_format.trained_system_prompt("sft", request, tmp_path) == "SFT voice"
    assert (
        chat_format.trained_system_prompt("sft", {"prompts": {"system_prompt": None}}, tmp_path)
        is None
    )
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"prompt": [{"role": "system", "content": "job voice"}, {"role": "user", "content": "a"}]},
        {"prompt": [{"role": "system", "content": "job voice"}, {"role": "user", "content": "b"}]},
        {"prompt": [{"role": "system", "content": "other"}, {"role": "user", "content": "c"}]},
        {"prompt": [{"role": "user", "content": "d"}]},
    ]
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert chat_format.trained_system_prompt("dpo", {}, tmp_path) == "job voice"
    (data / "pairs.jsonl").write_text(json.dumps(rows[3]) + "\n")
    assert chat_format.trained_system_prompt("dpo", {}, tmp_path) is None
