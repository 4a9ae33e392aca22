"""What the demo prints fits a terminal of 80 columns and a log file: timestamped messages are
folded, pair stats and run figures are short lines with sensible precision, the evaluation
table is the 80-column one, and the demo ends by saying how to open its results."""

from __future__ import annotations

import pytest

from chatpgt import demo
from chatpgt.evaluation.table import format_table
from tests.test_eval_report import sample_report

LONG_PATH = "/home/someone/projects/chatpgt/var/demo/artifacts/evaluation/eval-3-1a2b3c4d"


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def stats() -> dict:
    return {
        "counts": {"total": 14, "judged": 2, "corpus": 12, "imported": 0},
        "judge": {"matchups": 6, "flips": 0, "flip_rate": 0.0},
        "cost": {"total_cost_usd": 0.0},
        "confidence_histogram": [{"bucket": b, "count": (b * 7) % 5} for b in range(1, 11)],
    }


def test_every_line_the_demo_prints_fits_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    job = {
        "id": 2,
        "status": "running",
        "generations": {"done": 5, "total": 12},
        "judgments": {"done": 2, "total": 6},
        "pairs": 4,
        "started_at": "2026-12-07T17:18:25",
    }
    for line in demo.stats_lines(stats(), job, {"method": "style_classifier"}):
        demo.say(line)
    demo.say(demo.job_line(job))
    run = {
        "id": 3,
        "kind": "sft",
        "status": "running",
        "progress": {"step": 7, "total_steps": 25, "eta_s": 123.4567, "stage": "training"},
        "metrics": {
            "latest": {"loss": 2.123456789},
            "final": {
                "train_loss": 2.3456789,
                "eval_loss": 2.1234567,
                "global_step": 25,
                "train_runtime_s": 201.23456,
                "train_tokens_per_s": 117.891,
            },
        },
    }
    demo.say(demo.run_line(run))
    for stage in ("reference log-probs", "evaluating", "saving the model and writing samples"):
        demo.say(demo.run_line({**run, "progress": {"stage": stage, "pairs": 12}}))
    for line in demo.metric_lines("SFT", run):
        demo.say(line)
    demo.say(f"sample essay for 'Why Startups Should Be Small':\n{'word ' * 120}")
    demo.say(f"the report is at {LONG_PATH}/report.html and more words follow it here")
    out = capsys.readouterr().out
    assert widest(out) <= 80 or all(len(line) <= 80 or "/" in line for line in out.splitlines()), (
        out
    )
    assert LONG_PATH in out  # a path is never broken across lines
    assert "pairs: 14 = 12 corpus" in out and "+ 2 judged" in out
    assert "confidence histogram (bucket:pairs): 1:2 2:4 3:1 4:3 6:2" in out
    assert "2.123456789" not in out and "loss 2.123" in out
    assert "steps 25, train loss 2.346, held-out loss 2.123, time 201 s, tokens/s 118" in " ".join(
        out.split()
    )
    assert "computing the reference log-probs of 12 pairs" in out
    assert "ETA" in out


def test_the_evaluation_table_and_the_way_out_fit_80_columns() -> None:
    text = format_table(sample_report())
    assert widest(text) <= 80, text
    lines = demo.open_lines("sqlite+aiosqlite:///var/demo/chatpgt.db")
    assert "make demo-serve" in "\n".join(lines)
    assert all(len(line) <= 80 for line in lines if "/" not in line)
