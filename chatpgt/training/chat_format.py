"""The saved model renders the conversation it was trained on: its chat template puts the system
prompt training used in front of a conversation that has none.

Without this, ``pipeline("text-generation", model=<dir>)`` with a plain user message renders the
base model's own default (SmolLM2: "You are a helpful AI assistant named SmolLM...") while SFT
trained every essay under ChatPGT's essayist system prompt. The template is edited on disk, after
the model is saved, with no torch or tokenizer loaded: a few lines of Jinja in front of the
saved template replace ``messages`` by ``[system] + messages`` when the first message is not a
system message. A conversation that brings its own system message renders as before.

What "the system prompt training used" is: an SFT run's ``prompts.system_prompt``; a DPO run's,
the system message most of its pairs' prompts carry (they are the exact messages the essays were
generated with). None or empty leaves the template alone: the conversations were rendered by
that template as it is, default system prompt included, so that is the format to keep.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

# The saved template starts with this block (and only this block changes it), so applying it
# twice, or on a model whose parent already had one (DPO from SFT), replaces it.
_BEGIN = "{#- chatpgt: default system prompt -#}"
_END = "{#- /chatpgt -#}\n"
TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG = "tokenizer_config.json"


def with_default_system(template: str, system_prompt: str | None) -> str:
    """``template`` rendering ``system_prompt`` as the system message of any conversation that
    has none (``None`` or empty: the template without a ChatPGT block)."""
    base = strip_default_system(template)
    if not system_prompt:
        return base
    # A JSON string with non-ASCII kept as is is a valid Jinja string literal (Jinja unescapes
    # backslash sequences the way JSON writes them), whatever quotes or braces the prompt has.
    literal = json.dumps(system_prompt, ensure_ascii=False)
    return (
        f"{_BEGIN}{{%- if not messages or messages[0]['role'] != 'system' -%}}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}"
        f"{{%- endif -%}}{_END}{base}"
    )


def strip_default_system(template: str) -> str:
    """``template`` without the block :func:`with_default_system` put in front of it."""
    if template.startswith(_BEGIN) and _END in template:
        return template.split(_END, 1)[1]
    return template


def default_system_prompt(template: str) -> str | None:
    """The system prompt a template's ChatPGT block renders, or None when it has none."""
    if not template.startswith(_BEGIN) or _END not in template:
        return None
    block = template.split(_END, 1)[0]
    start = block.index("'content': ") + len("'content': ")
    decoder = json.JSONDecoder()
    value, _ = decoder.raw_decode(block[start:])
    return str(value)


def write_default_system(model_dir: Path, system_prompt: str | None) -> bool:
    """Rewrite the chat template saved in ``model_dir`` (``chat_template.jinja``, or the
    ``chat_template`` of ``tokenizer_config.json`` as older tokenizers save it) so that it
    renders ``system_prompt`` by default. False when the folder holds no chat template."""
    template_file = model_dir / TEMPLATE_FILE
    if template_file.is_file():
        text = template_file.read_text(encoding="utf-8")
        template_file.write_text(with_default_system(text, system_prompt), encoding="utf-8")
        return True
    config_file = model_dir / TOKENIZER_CONFIG
    if not config_file.is_file():
        return False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    template: Any = config.get("chat_template")
    if isinstance(template, str):
        config["chat_template"] = with_default_system(template, system_prompt)
    elif isinstance(template, list):  # named templates: the default one is what renders
        for entry in template:
            if isinstance(entry, dict) and entry.get("name") == "default":
                entry["template"] = with_default_system(str(entry["template"]), system_prompt)
    else:
        return False
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return True


def trained_system_prompt(kind: str, request: dict[str, Any], run_dir: Path) -> str | None:
    """The system prompt a run trained under (see the module's docstring)."""
    if kind == "sft":
        prompts = request.get("prompts") or {}
        value = prompts.get("system_prompt")
        return value or None
    pairs = run_dir / "data" / "pairs.jsonl"
    if not pairs.is_file():
        return None
    seen: Counter[str] = Counter()
    with pairs.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            prompt = json.loads(line).get("prompt") or []
            first = prompt[0] if prompt else {}
            if isinstance(first, dict) and first.get("role") == "system" and first.get("content"):
                seen[str(first["content"])] += 1
    return seen.most_common(1)[0][0] if seen else None


def apply_trained_format(
    kind: str, request: dict[str, Any], run_dir: Path, model_dir: Path
) -> None:
    """After a run saved ``model_dir``: make its template render the run's system prompt by
    default. A run that trained with none keeps the template it trained with (for DPO that is the
    starting model's, ChatPGT block included)."""
    system_prompt = trained_system_prompt(kind, request, run_dir)
    if system_prompt:
        write_default_system(model_dir, system_prompt)
