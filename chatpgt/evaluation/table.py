"""The results of an evaluation report (report.json) as rows, as plain text and as a verdict.

The text form is built for a terminal of 80 columns and for a log file: short labels (M1, M2 …
for the models, R for the real essays, C1 … for the controls) with a legend of full names, three
narrow tables instead of one wide one, and a verdict in words. No heavy imports: the CLI and the
demo print it from the report the API serves.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

WIDTH = 80

# The HTML report's one wide table: (key, header).
COLUMNS = (
    ("label", ""),
    ("model", "model"),
    ("perplexity", "perplexity (95% CI)"),
    ("ppl_ratio", "perplexity ratio vs previous (paired 95% CI)"),
    ("style", "style P(author) (95% CI)"),
    ("style_diff", "style difference vs previous (paired 95% CI)"),
    ("fluency", "fluency (perplexity under M1)"),
    ("win_rate", "win rate vs ref"),
    ("lc_win_rate", "LC win rate"),
    ("ties_flips", "ties/flips"),
    ("words", "mean words"),
    ("distinct_2", "distinct-2"),
    ("repetition", "repetition"),
)


def _finite(d: dict[str, Any] | None) -> bool:
    value = (d or {}).get("value")
    return isinstance(value, int | float) and math.isfinite(value)


def _g(x: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, never in exponent form."""
    if not math.isfinite(x):
        return "-"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x)))) if x else digits - 1
    return f"{x:.{decimals}f}"


def interval(d: dict[str, Any] | None, fmt: Any = _g, sign: bool = False) -> str:
    """``value [low, high]``; "-" when there is none; "n/m" when it was not measured."""
    if d and "not_measured" in d:
        return "n/m"
    if not _finite(d):
        return "-"
    assert d is not None

    def f(x: float) -> str:
        text = fmt(x)
        return ("+" + text) if sign and x > 0 else text

    return f"{f(d['value'])} [{f(d['low'])}, {f(d['high'])}]"


def _two(x: float) -> str:
    return f"{x:.2f}"


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def labelled(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, entry) for the models (M1 …), the real held-out essays (R), the controls (C1 …)."""
    out = [(f"M{i}", m) for i, m in enumerate(report.get("models") or [], 1)]
    if report.get("real_essays"):
        out.append(("R", report["real_essays"]))
    out += [(f"C{i}", c) for i, c in enumerate(report.get("controls") or [], 1)]
    return out


def _short_path(path: str) -> str:
    parts = path.rstrip("/").split("/")
    return path if len(parts) <= 3 else "…/" + "/".join(parts[-2:])


def display_name(entry: dict[str, Any]) -> str:
    """An entry's name, a path shortened to its last two parts."""
    name = str(entry.get("name") or ("real held-out essays" if "generations" not in entry else "?"))
    return _short_path(name) if "/" in name else name


def legend(report: dict[str, Any]) -> list[str]:
    lines = []
    for label, entry in labelled(report):
        name = str(entry.get("name") or "?")
        shown = display_name(entry)
        kind = entry.get("kind") if entry.get("kind") != "real" else None
        path = entry.get("path")
        text = f"{label:<3} {shown}" + (f" ({kind})" if kind else "")
        if path and str(path) != name:
            text += f", {_short_path(str(path))}"
        lines.append(text)
    return lines


def _row(label: str, entry: dict[str, Any]) -> dict[str, str]:
    desc = entry.get("descriptive") or {}
    win = entry.get("win_rate") or {}
    paired = entry.get("paired") or {}
    return {
        "label": label,
        "model": display_name(entry) + (f" ({entry['kind']})" if entry.get("kind") else ""),
        "perplexity": interval(entry.get("perplexity")),
        "ppl_ratio": interval(paired.get("perplexity_ratio")),
        "style": interval(entry.get("style"), _two),
        "style_diff": interval(paired.get("style_difference"), _two, sign=True),
        "fluency": interval(entry.get("fluency")),
        "win_rate": interval(win.get("win_rate"), _two),
        "lc_win_rate": interval(win.get("length_controlled_win_rate"), _two),
        "ties_flips": f"{win['ties']}/{win['flips']}" if "ties" in win else "-",
        "words": _num((desc.get("length_words") or {}).get("value"), "{:.0f}"),
        "distinct_2": _num(desc.get("distinct_2")),
        "repetition": _num((desc.get("repetition_rate") or {}).get("value")),
    }


def rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per model, then the real held-out essays, then the controls."""
    labels = {str(e.get("name")): label for label, e in labelled(report)}
    out = []
    for label, entry in labelled(report):
        row = _row(label, entry)
        vs = (entry.get("paired") or {}).get("vs")
        row["vs"] = "-" if vs is None else labels.get(str(vs), str(vs))
        out.append(row)
    return out


def _grid(title: str, headers: list[str], cells: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = [title]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return lines


def _wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    return textwrap.wrap(
        text, width=WIDTH, initial_indent=first or indent, subsequent_indent=indent
    ) or [first]


def format_table(report: dict[str, Any]) -> str:
    """The results as text of at most 80 columns: legend, perplexity, style, generations,
    then the verdict and the notes."""
    table = rows(report)
    lines = ["models:"] + ["  " + line for line in legend(report)]
    ppl = [r for r in table if r["perplexity"] != "-"]
    if ppl:
        lines += [""] + _grid(
            "held-out perplexity (lower = closer to the author; ratio < 1: lower than 'vs')",
            ["", "perplexity [95% CI]", "vs", "ratio [paired 95% CI]"],
            [[r["label"], r["perplexity"], r["vs"], r["ppl_ratio"]] for r in ppl],
        )
    styled = [r for r in table if r["style"] != "-"]
    if styled and all(r["style"] == "n/m" for r in styled):
        reason = _style_reason(report)
        lines += [""] + _wrap(f"style P(author): not measured: {reason}")
    elif styled:
        lines += [""] + _grid(
            "style P(author) of the generations (higher = more like the author)",
            ["", "style [95% CI]", "vs", "difference [paired 95% CI]"],
            [[r["label"], r["style"], r["vs"], r["style_diff"]] for r in styled],
        )
    has_win = any(r["win_rate"] != "-" for r in table)
    headers = ["", "words", "distinct-2", "repetition", "fluency [95% CI]"]
    if has_win:
        headers += ["win rate"]
    cells = []
    for r in table:
        row = [r["label"], r["words"], r["distinct_2"], r["repetition"], r["fluency"]]
        if has_win:
            row.append(r["win_rate"])
        cells.append(row)
    lines += [""] + _grid(
        "generations (fluency: perplexity under M1, lower = more fluent)", headers, cells
    )
    human = human_votes(report)
    if human:
        lines += ["", "human votes (blind playground, ties apart, 95% Wilson interval):"]
        lines += [w for h in human for w in _wrap(h, "    ", "  ")]
    verdicts = verdict(report)
    if verdicts:
        lines += [""] + [w for v in verdicts for w in _wrap(v, "  ", "= ")]
    notes = report.get("notes") or []
    if notes:
        lines += [""] + [w for n in notes for w in _wrap(n, "  ", "* ")]
    return "\n".join(_fit(line) for line in lines)


def human_votes(report: dict[str, Any]) -> list[str]:
    """A line per pair of models with playground votes: wins each way, ties, the win rate."""
    label_of = {e.get("model_id"): label for label, e in labelled(report) if e.get("model_id")}
    out = []
    for r in report.get("human_win_rates") or []:
        a = label_of.get(r["first"]["model_id"], r["first"]["name"])
        b = label_of.get(r["second"]["model_id"], r["second"]["name"])
        rate = r["first_win_rate"]
        text = f"{a} vs {b}: {a} won {r['first_wins']}, {b} won {r['second_wins']}, "
        text += f"{r['ties']} tie{'' if r['ties'] == 1 else 's'}"
        if rate["rate"] is not None:
            text += f"; {a}'s win rate {rate['rate']:.0%} [{rate['low']:.0%}, {rate['high']:.0%}]"
        out.append(text)
    return out


def _fit(line: str) -> str:
    """A title line that is longer than the terminal is folded (tables are built narrow)."""
    if len(line) <= WIDTH or line.startswith(" "):
        return line
    return "\n".join(textwrap.wrap(line, WIDTH, subsequent_indent="  "))


def _style_reason(report: dict[str, Any]) -> str:
    clf = report.get("style_classifier") or {}
    return str(clf.get("not_measured") or "the style classifier is not reliable")


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def verdict(report: dict[str, Any]) -> list[str]:
    """One sentence per comparison that was measured, read off the paired intervals: a change is
    claimed only when its whole 95% interval lies on one side."""
    labels = {str(e.get("name")): label for label, e in labelled(report)}
    out = []
    models = report.get("models") or []
    for label, entry in labelled(report):
        if entry not in models:
            continue
        paired = entry.get("paired") or {}
        vs = paired.get("vs")
        if vs is None:
            continue
        who = f"{label} ({entry.get('kind') or entry.get('name')})"
        other = labels.get(str(vs), str(vs))
        ratio = paired.get("perplexity_ratio")
        parts = []
        if _finite(ratio):
            assert ratio is not None
            span = f"{_pct(ratio['value'])} [{_pct(ratio['low'])}, {_pct(ratio['high'])}]"
            if ratio["high"] < 1:
                parts.append(f"lowered held-out perplexity: {span}")
            elif ratio["low"] > 1:
                parts.append(f"raised held-out perplexity: {span}")
            else:
                parts.append(f"left held-out perplexity unchanged within noise ({span})")
        diff = paired.get("style_difference")
        if _finite(diff):
            assert diff is not None
            span = f"{diff['value']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
            if diff["low"] > 0:
                parts.append(f"raised the style score: {span}")
            elif diff["high"] < 0:
                parts.append(f"lowered the style score: {span}")
            else:
                parts.append(f"left the style score unchanged within noise ({span})")
        if parts:
            n = (ratio or {}).get("n") or (diff or {}).get("n")
            essays = f" on the same {n} held-out essays" if n else ""
            if (entry.get("style") or {}).get("not_measured"):
                parts.append("style not measured")
            out.append(f"{who} vs {other}" + essays + " (paired): " + "; ".join(parts) + ".")
    return out
