"""The evaluation report: report.json and a self-contained HTML page whose plots render in
headless Chromium (Debian's /usr/bin/chromium through Playwright); a screenshot is kept."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from chatpgt.evaluation import stats, winrate
from chatpgt.evaluation.report import write_report
from chatpgt.evaluation.table import format_table

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


BASE_PATH = "/a/very/long/path/to/var/demo/models/smollm2-135m-instruct"


def sample_report() -> dict[str, Any]:
    """A report built from the real metric functions on made-up texts."""
    rng = random.Random(0)
    titles = [f"Essay {i}" for i in range(6)]
    real = [" ".join(rng.choice("how to do great work".split()) for _ in range(80)) for _ in titles]
    models = []
    for k, (name, kind) in enumerate((("base", "base"), ("sft", "sft"), ("dpo", "dpo"))):
        texts = [
            " ".join(rng.choice("a b c d e f".split()) for _ in range(20 + 10 * k)) for _ in titles
        ]
        matchups = [
            winrate.Matchup(t, rng.choice("AB"), rng.choice("AB"), 20 + 10 * k, 30) for t in titles
        ]
        models.append(
            {
                "name": name,
                "kind": kind,
                "perplexity": stats.bootstrap(
                    [50.0 - 10 * k + rng.random() for _ in titles], stats.mean, samples=100
                ).as_dict(),
                "style": stats.bootstrap(
                    [0.2 + 0.2 * k + 0.1 * rng.random() for _ in titles], stats.mean, samples=100
                ).as_dict(),
                "win_rate": winrate.summarize(matchups, samples=100, seed=0),
                "descriptive": stats.descriptive(texts, samples=50),
                "generations": [
                    {"title": t, "text": x} for t, x in zip(titles, texts, strict=True)
                ],
            }
        )
    models[0]["name"] = BASE_PATH
    # Each model against the one before it, paired over the essays (as the runner writes it).
    for prev, entry in zip(models, models[1:], strict=False):
        entry["paired"] = {
            "vs": prev["name"],
            "perplexity_ratio": {"value": 0.81, "low": 0.79, "high": 0.83, "n": 6},
            "style_difference": {"value": 0.05, "low": -0.02, "high": 0.11, "n": 6},
        }
    return {
        "run_id": 1,
        "name": "sample",
        "heldout": {"statement": "6 held-out essays <no model trained on them>.", "titles": titles},
        "models": models,
        "real_essays": {
            "style": stats.bootstrap([0.9, 0.8, 0.95], stats.mean, samples=100).as_dict(),
            "descriptive": stats.descriptive(real, samples=50),
        },
        "reference": {"name": "sft"},
        "style_classifier": {"features": "char+word", "cv_accuracy": 0.97},
        "judge": {"provider": "local", "method": "ab_probability"},
        "notes": ["distinct-n is over all generations of a model"],
    }


def test_report_json_and_table(tmp_path: Path) -> None:
    report = sample_report()
    report["models"][0]["descriptive"]["distinct_2"] = float("nan")  # no data: null in JSON
    json_path, html_path = write_report(report, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert loaded["models"][0]["descriptive"]["distinct_2"] is None
    assert [m["name"] for m in loaded["models"]] == [BASE_PATH, "sft", "dpo"]
    text = format_table(loaded)
    assert "real held-out essays" in text and "sft (sft)" in text
    # A terminal of 80 columns and a log file: no line longer, short labels with a legend.
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "M1  …/models/smollm2-135m-instruct (base)" in text
    assert "M1  0.810 [0.790, 0.830]" in text
    flat = " ".join(text.split())  # the verdict is wrapped at 80 columns
    assert (
        "M2 (sft) vs M1 on the same 6 held-out essays (paired): lowered held-out perplexity: "
        "-19.0% [-21.0%, -17.0%]" in flat
    )
    assert "left the style score unchanged within noise (+0.05 [-0.02, +0.11])" in flat
    html = html_path.read_text()
    assert "&lt;no model trained on them&gt;" in html  # escaped
    assert "http://" not in html and "https://" not in html  # self-contained
    assert html.count("data:image/png;base64,") == 5  # with the paired perplexity ratios


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path: Path, log_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    _, html_path = write_report(sample_report(), tmp_path)
    screenshot = log_dir / "eval-report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(html_path.as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
            )
            rows = page.eval_on_selector_all("#results tr", "rows => rows.length")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert len(widths) == 5 and all(w > 0 for w in widths), widths
    assert rows == 1 + 3 + 1  # header, three models, the real essays
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
