"""Default prompts: the generation system prompt, the user-prompt templates, the judge prompt.

Every template is configurable per job; these defaults follow the seed's shape (an essay around a
title, and a judge that compares two essays for how much they read like Paul Graham).
"""

from __future__ import annotations

import hashlib

DEFAULT_SYSTEM_PROMPT = (
    "You are an essayist who writes like Paul Graham: plain words, short sentences, concrete "
    "examples, and ideas followed to their surprising conclusions. Write the essay only, with no "
    "preamble and no title line."
)

DEFAULT_PROMPT_TEMPLATES: tuple[str, ...] = (
    'Write an essay titled "{title}".',
    "Write an essay about {title}.",
    "What do you think about {title}? Answer in the form of an essay.",
)

JUDGE_SYSTEM_PROMPT = (
    "You are an expert editor who knows Paul Graham's essays well. You compare two essays written "
    "for the same prompt and decide which one reads more like an essay by Paul Graham: his voice, "
    "clarity, originality of ideas, and structure. Judge the text only; ignore its length "
    "unless it hurts the essay. Answer with a JSON object and nothing else."
)

JUDGE_USER_TEMPLATE = """Prompt given to both writers:
{prompt}

<essay_a>
{essay_a}
</essay_a>

<essay_b>
{essay_b}
</essay_b>

Which essay is better? Answer with exactly this JSON object:
{{"winner": "A" or "B", "reasoning": "<two or three sentences>", "confidence": <integer 1-10>}}"""


JUDGE_AB_SYSTEM_PROMPT = (
    "You are an expert editor who knows Paul Graham's essays well. You compare two essays written "
    "for the same prompt and decide which one reads more like an essay by Paul Graham. Answer "
    "with one letter: A or B."
)

JUDGE_AB_USER_TEMPLATE = """Prompt given to both writers:
{prompt}

<essay_a>
{essay_a}
</essay_a>

<essay_b>
{essay_b}
</essay_b>

Which essay is better, A or B? Answer with the letter only."""


def choose_template(
    job_id: int | None, topic_id: int, templates: tuple[str, ...] | list[str]
) -> int:
    """The template index for a topic in a job: stable across retries and workers. With
    ``job_id`` None it depends on the topic alone (a job using the response cache: submitted
    again, it asks the very same requests)."""
    seed = f"{job_id}:{topic_id}" if job_id is not None else f"topic:{topic_id}"
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % len(templates)


def render_prompt(template: str, title: str) -> str:
    return template.replace("{title}", title)


def generation_messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The chat messages an essay is asked for with: the system prompt (none when empty or
    None), then the user prompt. The one definition shared by datagen's requests, the pairs'
    exported ``prompt``, SFT's training conversations and evaluation's sampling, so that the
    model is trained, sampled and preference-tuned on exactly the same conversation."""
    messages = [{"role": "user", "content": prompt}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def title_messages(
    title: str, template: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> list[dict[str, str]]:
    """:func:`generation_messages` for an essay titled ``title`` asked for with ``template``."""
    return generation_messages(render_prompt(template, title), system_prompt)


def text_hash(text: str) -> str:
    """A short stable digest of a prompt or template (dataset cards, provenance)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def judge_messages(
    prompt: str, essay_a: str, essay_b: str, *, one_letter: bool = False
) -> list[dict[str, str]]:
    """The blinded judge request: the essays are labelled A and B, never by model.

    ``one_letter`` asks for a bare "A" or "B" (the probability method) instead of JSON.
    """
    system, template = (
        (JUDGE_AB_SYSTEM_PROMPT, JUDGE_AB_USER_TEMPLATE)
        if one_letter
        else (JUDGE_SYSTEM_PROMPT, JUDGE_USER_TEMPLATE)
    )
    user = template.format(prompt=prompt, essay_a=essay_a, essay_b=essay_b)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
