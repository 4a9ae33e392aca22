"""The results table of an evaluation report (report.json), as rows and as plain text.

No heavy imports: the CLI and the demo print it from the report the API serves.
"""

from __future__ import annotations

import math
from typing import Any

COLUMNS = (
    ("model", "model"),
    ("perplexity", "perplexity (95% CI)"),
    ("style", "style P(author) (95% CI)"),
    ("win_rate", "win rate vs ref"),
    ("lc_win_rate", "LC win rate"),
    ("ties_flips", "ties/flips"),
    ("words", "mean words"),
    ("distinct_2", "distinct-2"),
    ("repetition", "repetition"),
)


def _interval(d: dict[str, Any] | None, fmt: str = "{:.3g}") -> str:
    if not d or d.get("value") is None or not math.isfinite(d["value"]):
        return "-"
    return f"{fmt.format(d['value'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def _row(name: str, entry: dict[str, Any]) -> dict[str, str]:
    desc = entry.get("descriptive") or {}
    win = entry.get("win_rate") or {}
    return {
        "model": name,
        "perplexity": _interval(entry.get("perplexity")),
        "style": _interval(entry.get("style"), "{:.2f}"),
        "win_rate": _interval(win.get("win_rate"), "{:.2f}"),
        "lc_win_rate": _interval(win.get("length_controlled_win_rate"), "{:.2f}"),
        "ties_flips": f"{win['ties']}/{win['flips']}" if "ties" in win else "-",
        "words": _num((desc.get("length_words") or {}).get("value"), "{:.0f}"),
        "distinct_2": _num(desc.get("distinct_2")),
        "repetition": _num((desc.get("repetition_rate") or {}).get("value")),
    }


def rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per model, then the held-out real essays (the style ceiling)."""
    out = [_row(f"{m['name']} ({m.get('kind') or '?'})", m) for m in report.get("models", [])]
    real = report.get("real_essays")
    if real:
        out.append(_row("real held-out essays", real))
    return out


def format_table(report: dict[str, Any]) -> str:
    """The table as aligned plain text, with the held-out statement and the reference below."""
    table = rows(report)
    headers = [h for _, h in COLUMNS]
    cells = [[r[k] for k, _ in COLUMNS] for r in table]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    notes = report.get("notes") or []
    return "\n".join(lines + [""] + [f"* {n}" for n in notes])
