"""One self-contained HTML report per evaluation run, plus ``report.json``.

Plots are drawn with matplotlib (Agg) and embedded as PNG data URIs; the page is a Jinja2
template with no external resource, so it opens from a file, an e-mail or the API alike.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from chatpgt.evaluation.table import COLUMNS, rows  # noqa: E402

_TEMPLATE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ChatPGT evaluation {{ report.run_id }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; }
details { margin: 0.5em 0; }
pre { white-space: pre-wrap; background: #fafafa; padding: 0.5em; }
</style></head><body>
<h1>Evaluation {{ report.run_id }}{% if report.name %}: {{ report.name }}{% endif %}</h1>
<p class="note">{{ report.heldout.statement }}</p>
<h2>Results</h2>
<table id="results"><tr>{% for _, h in columns %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in table %}<tr>{% for k, _ in columns %}<td>{{ r[k] }}</td>{% endfor %}</tr>{% endfor %}
</table>
<ul class="note">{% for n in report.notes %}<li>{{ n }}</li>{% endfor %}</ul>
<h2>Plots</h2>
{% for fig in figures %}<figure><img alt="{{ fig.title }}" src="{{ fig.uri }}">
<figcaption>{{ fig.title }}</figcaption></figure>{% endfor %}
<h2>Style classifier</h2>
<pre>{{ style_json }}</pre>
<h2>Judge</h2>
<pre>{{ judge_json }}</pre>
<h2>Held-out essays ({{ report.heldout.titles|length }})</h2>
<ol>{% for t in report.heldout.titles %}<li>{{ t }}</li>{% endfor %}</ol>
<h2>Generations</h2>
{% for m in report.models %}<details><summary>{{ m.name }}</summary>
{% for g in m.generations %}<h4>{{ g.title }}</h4><pre>{{ g.text }}</pre>{% endfor %}
</details>{% endfor %}
</body></html>
""",
    autoescape=True,
)


def _uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _ok(d: dict[str, Any] | None) -> bool:
    value = (d or {}).get("value")
    return isinstance(value, int | float) and math.isfinite(value)


def _interval_plot(
    names: list[str], intervals: list[dict[str, Any]], title: str, ylabel: str
) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    values = [i["value"] for i in intervals]
    errs = [[i["value"] - i["low"] for i in intervals], [i["high"] - i["value"] for i in intervals]]
    ax.bar(names, values, yerr=errs, capsize=6, color="#4c72b0")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=15)
    return _uri(fig)


def figures(report: dict[str, Any]) -> list[dict[str, str]]:
    models = report.get("models", [])
    real = report.get("real_essays") or {}
    out = []
    ppl = [(m["name"], m["perplexity"]) for m in models if _ok(m.get("perplexity"))]
    if ppl:
        out.append(
            {
                "title": "Perplexity of the held-out essays (lower is closer to the author)",
                "uri": _interval_plot(
                    [n for n, _ in ppl], [i for _, i in ppl], "Held-out perplexity", "perplexity"
                ),
            }
        )
    style = [(m["name"], m["style"]) for m in models if _ok(m.get("style"))]
    if _ok(real.get("style")):
        style.append(("real essays", real["style"]))
    if style:
        out.append(
            {
                "title": "Style score: mean P(author) of the generations "
                "(real essays: the ceiling)",
                "uri": _interval_plot(
                    [n for n, _ in style], [i for _, i in style], "Style score", "P(author)"
                ),
            }
        )
    wins = [
        (m["name"], m["win_rate"]) for m in models if _ok((m.get("win_rate") or {}).get("win_rate"))
    ]
    if wins:
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        x = list(range(len(wins)))
        for offset, key, label in (
            (-0.2, "win_rate", "raw"),
            (0.2, "length_controlled_win_rate", "length-controlled"),
        ):
            vals = [w[key] for _, w in wins]
            ax.bar(
                [i + offset for i in x],
                [v["value"] for v in vals],
                width=0.4,
                label=label,
                yerr=[
                    [v["value"] - v["low"] for v in vals],
                    [v["high"] - v["value"] for v in vals],
                ],
                capsize=4,
            )
        ax.axhline(0.5, color="#999", linestyle="--", linewidth=1)
        ax.set_xticks(x, [n for n, _ in wins])
        ax.set_ylim(0, 1)
        ax.set_title(f"Win rate vs {report.get('reference', {}).get('name', 'reference')}")
        ax.legend()
        out.append({"title": "Judged win rate (both orders; ties count half)", "uri": _uri(fig)})
    hists = [(m["name"], (m.get("descriptive") or {}).get("lengths") or []) for m in models]
    if real.get("descriptive"):
        hists.append(("real essays", real["descriptive"].get("lengths") or []))
    hists = [(n, lengths) for n, lengths in hists if lengths]
    if hists:
        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        every = [n for _, lengths in hists for n in lengths]
        bins = [
            float(b) for b in np.histogram_bin_edges(every, bins=min(20, max(5, len(set(every)))))
        ]
        for name, lengths in hists:
            ax.hist(lengths, bins=bins, alpha=0.5, label=name)
        ax.set_xlabel("words")
        ax.set_ylabel("essays")
        ax.set_title("Length distribution")
        ax.legend()
        out.append(
            {
                "title": "Lengths of the generations and of the real held-out essays",
                "uri": _uri(fig),
            }
        )
    return out


def render_html(report: dict[str, Any]) -> str:
    return _TEMPLATE.render(
        report=report,
        table=rows(report),
        columns=COLUMNS,
        figures=figures(report),
        style_json=json.dumps(report.get("style_classifier"), indent=2),
        judge_json=json.dumps(report.get("judge"), indent=2),
    )


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(clean(report), indent=1, allow_nan=False))
    tmp.replace(json_path)
    tmp = html_path.with_suffix(".html.tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(html_path)
    return json_path, html_path


def clean(value: Any) -> Any:
    """``value`` with every non-finite float (a metric with no data) as None: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value
