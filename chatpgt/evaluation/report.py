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

from chatpgt.evaluation.table import (  # noqa: E402
    COLUMNS,
    display_name,
    human_votes,
    labelled,
    legend,
    rows,
    verdict,
)

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
<ul id="legend">{% for l in legend %}<li><code>{{ l }}</code></li>{% endfor %}</ul>
<ul id="verdict">{% for v in verdict %}<li><b>{{ v }}</b></li>{% endfor %}</ul>
{% if human %}<h3>Human votes (blind playground)</h3>
<ul id="human-votes">{% for h in human %}<li>{{ h }}</li>{% endfor %}</ul>{% endif %}
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
{% for m in report.models + (report.controls or []) %}<details><summary>{{ m.name }}</summary>
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
    names: list[str], intervals: list[dict[str, Any]], title: str, xlabel: str
) -> str:
    """Horizontal bars with their intervals: one label per row, so labels cannot overlap
    whatever their length or number (the figure grows with the rows)."""
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(names)))
    values = [i["value"] for i in intervals]
    errs = [[i["value"] - i["low"] for i in intervals], [i["high"] - i["value"] for i in intervals]]
    y = list(range(len(names)))
    ax.barh(y, values, xerr=errs, capsize=5, color="#4c72b0")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return _uri(fig)


def figures(report: dict[str, Any]) -> list[dict[str, str]]:
    """The report's plots, every entry under its short label (M1, R, C1 …; the legend says
    which is which)."""
    entries = labelled(report)
    out = []
    ppl = [
        (f"{lab} {display_name(e)}", e["perplexity"])
        for lab, e in entries
        if _ok(e.get("perplexity"))
    ]
    if ppl:
        out.append(
            {
                "title": "Perplexity of the held-out essays (lower is closer to the author)",
                "uri": _interval_plot(
                    [n for n, _ in ppl], [i for _, i in ppl], "Held-out perplexity", "perplexity"
                ),
            }
        )
    ratio = [
        (f"{lab} vs {(e.get('paired') or {}).get('vs')}", e["paired"]["perplexity_ratio"])
        for lab, e in entries
        if _ok((e.get("paired") or {}).get("perplexity_ratio"))
    ]
    if ratio:
        out.append(
            {
                "title": "Perplexity ratio to the previous model, paired over the same essays "
                "(below 1: the model is closer to the author)",
                "uri": _interval_plot(
                    [n for n, _ in ratio], [i for _, i in ratio], "Paired perplexity ratio", "ratio"
                ),
            }
        )
    style = [(f"{lab} {display_name(e)}", e["style"]) for lab, e in entries if _ok(e.get("style"))]
    if style:
        out.append(
            {
                "title": "Style score: mean P(author) of the generations "
                "(real essays, cut to the same length: the ceiling)",
                "uri": _interval_plot(
                    [n for n, _ in style], [i for _, i in style], "Style score", "P(author)"
                ),
            }
        )
    wins = [
        (f"{lab} {display_name(e)}", e["win_rate"])
        for lab, e in entries
        if _ok((e.get("win_rate") or {}).get("win_rate"))
    ]
    if wins:
        fig, ax = plt.subplots(figsize=(7, 1.4 + 0.6 * len(wins)))
        y = list(range(len(wins)))
        for offset, key, label in (
            (-0.2, "win_rate", "raw"),
            (0.2, "length_controlled_win_rate", "length-controlled"),
        ):
            vals = [w[key] for _, w in wins]
            ax.barh(
                [i + offset for i in y],
                [v["value"] for v in vals],
                height=0.4,
                label=label,
                xerr=[
                    [v["value"] - v["low"] for v in vals],
                    [v["high"] - v["value"] for v in vals],
                ],
                capsize=4,
            )
        ax.axvline(0.5, color="#999", linestyle="--", linewidth=1)
        ax.set_yticks(y, [n for n, _ in wins])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"Win rate vs {report.get('reference', {}).get('name', 'reference')}")
        # outside the axes: a legend never covers the bars
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        out.append({"title": "Judged win rate (both orders; ties count half)", "uri": _uri(fig)})
    hists = [
        (f"{lab} {display_name(e)}", (e.get("descriptive") or {}).get("lengths") or [])
        for lab, e in entries
    ]
    hists = [(n, lengths) for n, lengths in hists if lengths]
    if hists:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        every = [n for _, lengths in hists for n in lengths]
        bins = [
            float(b) for b in np.histogram_bin_edges(every, bins=min(20, max(5, len(set(every)))))
        ]
        for name, lengths in hists:
            ax.hist(lengths, bins=bins, alpha=0.5, label=name)
        ax.set_xlabel("words")
        ax.set_ylabel("essays")
        ax.set_title("Length distribution")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
        out.append(
            {
                "title": "Lengths of the generations and of the real held-out essays (cut)",
                "uri": _uri(fig),
            }
        )
    return out


def render_html(report: dict[str, Any]) -> str:
    return _TEMPLATE.render(
        report=report,
        table=rows(report),
        columns=COLUMNS,
        legend=legend(report),
        verdict=verdict(report),
        human=human_votes(report),
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
