"""Essays in, SFT conversations out: load a corpus, split long essays, never truncate.

A corpus is a Hugging Face dataset id, a local CSV or JSONL file with ``title`` and ``text``
columns, or a folder of ``.txt``/``.md`` files (the title is a leading ``# Heading`` line, else
the file name). :func:`check_local_source` is the cheap check the API runs at submit time;
:func:`load_essays` is what the worker runs.

An essay whose conversation (chat template + prompt + essay) does not fit ``max_length`` tokens is
cut into consecutive parts at paragraph boundaries (then sentences, then words when one paragraph
alone is too long). Part 1 is asked for with the essay's prompt; later parts with the continuation
prompt, which quotes the end of the previous part. Every resulting example is measured with the
real tokenizer and chat template, so none is truncated in training. This module imports neither
torch nor transformers: the tokenizer comes in as two functions.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatpgt.datagen.prompts import generation_messages
from chatpgt.paths import looks_like_hub_id
from chatpgt.training.errors import CorpusUnreadable, TrainingDataError

TEXT_SUFFIXES = (".txt", ".md")
TABLE_SUFFIXES = (".csv", ".jsonl")
_TITLE_KEYS = ("title", "name", "topic")
_TEXT_KEYS = ("text", "content", "essay", "body")

# A corpus file is decoded whole at submit time up to this size (UTF-8 errors are 400s).
_CHECK_BYTES = 256 << 20
# Tokens kept free below max_length when packing parts by summed token counts; every part is then
# measured exactly, so this only saves re-packing.
_PACKING_SLACK = 4
# A part needs room for at least this many essay tokens next to its prompt.
MIN_COMPLETION_TOKENS = 16


@dataclass(frozen=True, slots=True)
class Essay:
    title: str
    text: str


@dataclass(slots=True)
class SplitReport:
    """What happened to the essays on their way to examples (stored on the run)."""

    essays: int = 0
    essays_split: int = 0
    parts_from_split_essays: int = 0
    max_parts: int = 1
    examples: int = 0
    longest_example_tokens: int = 0
    max_length: int = 0
    skipped_empty: int = 0
    split_titles: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "essays": self.essays,
            "essays_split": self.essays_split,
            "parts_from_split_essays": self.parts_from_split_essays,
            "max_parts": self.max_parts,
            "examples": self.examples,
            "longest_example_tokens": self.longest_example_tokens,
            "max_length": self.max_length,
            "skipped_empty": self.skipped_empty,
            "truncated": 0,
            "split_titles": self.split_titles[:50],
        }


# --------------------------------------------------------------------------------------------
# Sources


def is_local_ref(ref: str) -> bool:
    """Whether ``ref`` names a local path (absolute, relative with ./ or ~, or existing)."""
    return not looks_like_hub_id(ref)


def check_local_source(ref: str) -> None:
    """Cheap submit-time check of a local corpus; hub ids pass (the worker resolves them).

    Raises :class:`CorpusUnreadable` for a missing path, an unknown file kind, a file that cannot
    be read, a table without title and text columns, or a folder without essays.
    """
    if looks_like_hub_id(ref):
        return
    path = Path(ref).expanduser()
    if not path.exists():
        raise CorpusUnreadable(f"The corpus path {ref!r} does not exist.", corpus=ref)
    if path.is_dir():
        if not any(p.suffix.lower() in TEXT_SUFFIXES for p in path.iterdir() if p.is_file()):
            raise CorpusUnreadable(
                f"The corpus folder {ref!r} holds no .txt or .md essays.", corpus=ref
            )
        return
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES + TEXT_SUFFIXES:
        raise CorpusUnreadable(
            f"The corpus file {ref!r} is not a .csv, .jsonl, .txt or .md file.", corpus=ref
        )
    try:
        with path.open(encoding="utf-8", newline="") as f:
            head = f.readline()
            # Decode the rest too (up to a size that stays cheap), so bad bytes fail here.
            while f.tell() < _CHECK_BYTES and f.read(1 << 20):
                pass
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusUnreadable(
            f"The corpus file {ref!r} cannot be read: {exc}", corpus=ref
        ) from exc
    if suffix == ".csv":
        columns = {c.strip().lower() for c in next(csv.reader([head]), [])}
        _require_columns(columns, ref)
    elif suffix == ".jsonl":
        try:
            first = json.loads(head)
        except json.JSONDecodeError as exc:
            raise CorpusUnreadable(
                f"The corpus file {ref!r} is not JSON lines: {exc}", corpus=ref
            ) from exc
        if not isinstance(first, dict):
            raise CorpusUnreadable(f"The corpus file {ref!r} is not JSON objects.", corpus=ref)
        _require_columns({k.lower() for k in first}, ref)


def _require_columns(columns: set[str], ref: str) -> None:
    if not columns & set(_TITLE_KEYS) or not columns & set(_TEXT_KEYS):
        raise CorpusUnreadable(
            f"The corpus {ref!r} needs a title column ({', '.join(_TITLE_KEYS)}) and a text "
            f"column ({', '.join(_TEXT_KEYS)}); it has {sorted(columns)}.",
            corpus=ref,
        )


def load_essays(ref: str, *, cache_dir: str | None = None) -> list[Essay]:
    """Every essay of a corpus, in the source's order. Worker side: may import ``datasets``."""
    if looks_like_hub_id(ref):
        return _essays_from_rows(_hub_rows(ref, cache_dir), ref)
    check_local_source(ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        return [
            _essay_from_file(p)
            for p in sorted(path.iterdir())
            if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
        ]
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [_essay_from_file(path)]
    with path.open(encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            csv.field_size_limit(1 << 30)
            return _essays_from_rows(csv.DictReader(f), ref)
        return _essays_from_rows((json.loads(line) for line in f if line.strip()), ref)


def _hub_rows(ref: str, cache_dir: str | None) -> Iterable[dict[str, Any]]:
    import datasets  # worker only

    try:
        dataset = datasets.load_dataset(ref, split="train", cache_dir=cache_dir)
    except (OSError, ValueError, ConnectionError) as exc:
        raise TrainingDataError(f"cannot load the corpus dataset {ref!r}: {exc}") from exc
    return iter(dataset)


def _essays_from_rows(rows: Iterable[dict[str, Any]], ref: str) -> list[Essay]:
    essays = []
    for row in rows:
        lowered = {str(k).strip().lower(): v for k, v in row.items()}
        title = next((lowered[k] for k in _TITLE_KEYS if k in lowered), None)
        text = next((lowered[k] for k in _TEXT_KEYS if k in lowered), None)
        if title is None or text is None:
            raise TrainingDataError(
                f"corpus {ref!r}: rows need a title and a text column, got {sorted(lowered)}"
            )
        essays.append(Essay(title=str(title).strip(), text=str(text)))
    return essays


def _essay_from_file(path: Path) -> Essay:
    text = path.read_text(encoding="utf-8")
    first, _, rest = text.lstrip().partition("\n")
    if first.startswith("# "):
        return Essay(title=first[2:].strip(), text=rest)
    return Essay(title=re.sub(r"[_\-]+", " ", path.stem).strip(), text=text)


# --------------------------------------------------------------------------------------------
# Train/eval split and examples


def split_train_eval(
    essays: Sequence[Essay], eval_fraction: float, seed: int
) -> tuple[list[Essay], list[Essay]]:
    """Split at the essay level (parts of one essay never straddle train and eval).

    With two essays or more and a positive fraction, at least one essay is held out.
    """
    order = list(range(len(essays)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(essays) * eval_fraction)
    if eval_fraction > 0 and len(essays) >= 2:
        n_eval = min(max(n_eval, 1), len(essays) - 1)
    held = set(order[:n_eval])
    train = [e for i, e in enumerate(essays) if i not in held]
    evals = [e for i, e in enumerate(essays) if i in held]
    return train, evals


MeasureFn = Callable[[str, str], int]
CountFn = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class _Unit:
    text: str
    sep: str  # joins this unit to the previous one in the same part
    tokens: int


def normalize_essay(text: str) -> str:
    """Paragraphs separated by one blank line, no trailing spaces: the text parts are cut from."""
    paragraphs = [re.sub(r"[ \t]+\n", "\n", p).strip() for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def build_examples(
    essays: Sequence[Essay],
    *,
    measure: MeasureFn,
    count: CountFn,
    max_length: int,
    templates: Sequence[str],
    continuation_template: str,
    context_words: int,
    seed: int,
    report: SplitReport | None = None,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows (TRL's format) that each fit ``max_length``.

    Each row's ``prompt`` is ``generation_messages(user prompt, system_prompt)``: the messages
    datagen asks for essays with, so ``measure`` must count the same system prompt.

    Each row also carries ``tokens``, its measured length, so the worker can prove TRL cut none.

    ``measure(prompt, completion)`` is the token length of the rendered two-turn conversation;
    ``count(text)`` the token count of a bare text. Each essay gets one of ``templates``, drawn
    with ``seed``. Raises :class:`TrainingDataError` when ``max_length`` leaves no room for text.
    """
    report = report if report is not None else SplitReport()
    report.max_length = max_length
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for essay in essays:
        template = templates[rng.randrange(len(templates))]
        text = normalize_essay(essay.text)
        if not text or not essay.title:
            report.skipped_empty += 1
            continue
        report.essays += 1
        parts = split_essay(
            essay.title,
            text,
            first_prompt=template.format(title=essay.title),
            continuation_template=continuation_template,
            context_words=context_words,
            measure=measure,
            count=count,
            max_length=max_length,
        )
        if len(parts) > 1:
            report.essays_split += 1
            report.parts_from_split_essays += len(parts)
            report.max_parts = max(report.max_parts, len(parts))
            report.split_titles.append(essay.title)
        for prompt, completion, length in parts:
            report.longest_example_tokens = max(report.longest_example_tokens, length)
            rows.append(
                {
                    "prompt": generation_messages(prompt, system_prompt),
                    "completion": [{"role": "assistant", "content": completion}],
                    "tokens": length,
                }
            )
    report.examples += len(rows)
    return rows


def split_essay(
    title: str,
    text: str,
    *,
    first_prompt: str,
    continuation_template: str,
    context_words: int,
    measure: MeasureFn,
    count: CountFn,
    max_length: int,
) -> list[tuple[str, str, int]]:
    """(prompt, completion, tokens) for each consecutive part of one normalised essay.

    Joining the completions with the separators they were cut at gives back ``text``.
    """
    whole = measure(first_prompt, text)
    if whole <= max_length:
        return [(first_prompt, text, whole)]
    units = _units(text, count)
    parts: list[tuple[str, str, int]] = []
    prompt = first_prompt
    start = 0
    while start < len(units):
        overhead = measure(prompt, "")
        budget = max_length - overhead - _PACKING_SLACK
        if budget < MIN_COMPLETION_TOKENS:
            raise TrainingDataError(
                f"max_length {max_length} leaves {budget} tokens for essay text next to the "
                f"prompt of {title!r} ({overhead} tokens); raise max_length or shorten the prompts"
            )
        units, end = _fit_units(units, start, budget, count)
        while True:
            completion = _join(units[start:end])
            length = measure(prompt, completion)
            if length <= max_length or end - start == 1:
                break
            end -= 1
        if length > max_length:
            # One unit that measures too long in context (token merges at the edges): halve it.
            units = _halve(units, start, count)
            continue
        parts.append((prompt, completion, length))
        start = end
        previous = _tail(completion, context_words)
        prompt = continuation_template.format(
            title=title, part=len(parts) + 1, previous=f"…{previous}" if previous else ""
        )
    return parts


def _tail(text: str, words: int) -> str:
    """The last ``words`` words of ``text`` (at most ~8 characters a word: no giant "words")."""
    if words <= 0:
        return ""
    tail = " ".join(text.split()[-words:])
    return tail[-8 * words :]


def _join(units: Sequence[_Unit]) -> str:
    return "".join((u.sep if i else "") + u.text for i, u in enumerate(units))


def _units(text: str, count: CountFn) -> list[_Unit]:
    return [_Unit(p, "\n\n", count(p)) for p in text.split("\n\n")]


def _fit_units(
    units: list[_Unit], start: int, budget: int, count: CountFn
) -> tuple[list[_Unit], int]:
    """Pack units from ``start`` by summed token counts; break a unit too big for any part."""
    if units[start].tokens > budget:
        units = units[:start] + _break(units[start], budget, count) + units[start + 1 :]
    total = units[start].tokens
    end = start + 1
    while end < len(units):
        cost = units[end].tokens + 1  # + the separator
        if total + cost > budget:
            break
        total += cost
        end += 1
    return units, end


def _pieces(text: str) -> list[tuple[str, str]]:
    """(separator before, piece): sentences, else words, else two halves of the characters."""
    for pattern in (r"(?<=[.!?])(\s+)", r"(\s+)"):
        tokens = re.split(pattern, text)
        if len(tokens) > 1:
            return [("", tokens[0])] + [
                (tokens[i], tokens[i + 1]) for i in range(1, len(tokens) - 1, 2)
            ]
    mid = len(text) // 2
    return [("", text[:mid]), ("", text[mid:])]


def _text(pieces: Sequence[tuple[str, str]]) -> str:
    return pieces[0][1] + "".join(sep + piece for sep, piece in pieces[1:])


def _break(unit: _Unit, budget: int, count: CountFn) -> list[_Unit]:
    """Units of at most ``budget`` tokens whose join gives back ``unit`` (exact whitespace)."""
    if unit.tokens <= budget or len(unit.text) <= 1:
        return [unit]
    pieces = _pieces(unit.text)
    groups: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for sep, piece in pieces:
        if current and count(_text([*current, (sep, piece)])) > budget:
            groups.append(current)
            current = [(sep, piece)]
        else:
            current.append((sep, piece))
    groups.append(current)
    if len(groups) == 1:  # counts are not additive at the edges: force progress
        half = len(pieces) // 2
        groups = [pieces[:half], pieces[half:]]
    out: list[_Unit] = []
    for i, group in enumerate(groups):
        text = _text(group)
        sep = unit.sep if i == 0 else group[0][0]
        out.extend(_break(_Unit(text, sep, count(text)), budget, count))
    return out


def _halve(units: list[_Unit], index: int, count: CountFn) -> list[_Unit]:
    unit = units[index]
    finer = _break(unit, max(1, unit.tokens // 2), count)
    if len(finer) == 1:
        raise TrainingDataError("a piece of essay text does not fit max_length even alone")
    return units[:index] + finer + units[index + 1 :]


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write rows atomically (a resumed run reuses the file only if it is complete)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n
