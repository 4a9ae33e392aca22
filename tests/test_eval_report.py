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
    assert [m["name"] for m in loaded["models"]] == ["base", "sft", "dpo"]
    text = format_table(loaded)
    assert "real held-out essays" in text and "sft (sft)" in text
    html = html_path.read_text()
    assert "&lt;no model trained on them&gt;" in html  # escaped
    assert "http://" not in html and "https://" not in html  # self-contained
    assert html.count("data:image/png;base64,") == 4


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
    assert len(widths) == 4 and all(w > 0 for w in widths), widths
    assert rows == 1 + 3 + 1  # header, three models, the real essays
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
